/* The HTTP servers (libmicrohttpd): the operator API on http.listen and the Prometheus
 * endpoint on metrics.listen. This file owns the plumbing every route shares — listening,
 * bodies and their limit, bearer tokens and roles, JSON errors, the access log and the
 * request metrics. The routes themselves live in api_*.c. */
#ifndef EVENTSINK_HTTP_H
#define EVENTSINK_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "jsonv.h"
#include "replay.h"

struct http_server;
struct db_pool; /* db_pool.h */
struct pg_conn; /* db_rows.h */
struct db_rows; /* db_rows.h */

/* One request, as the route handlers see it. */
struct http_req {
    const char *method;
    const char *path;
    const char *route;             /* the matched pattern, e.g. "/events/{id}" */
    const char *path_args[2];      /* the {id}-like parts of the path, in order */
    const struct api_token *token; /* NULL when the API runs without tokens */
    const char *tenant_scope;      /* a PostgreSQL text[] literal, or NULL: every tenant */
    struct buf body;
    bool body_too_large;
    void *conn; /* struct MHD_Connection */
    const struct config *cfg;
    struct db_pool *pool;
    struct replay_env *env;
    const char *webhook_sig; /* a webhook's signature: recorded with the job it creates */
    const char *body_keys;   /* the body members the route takes (http_route.body) */
};

struct http_resp {
    int status;
    struct buf body;
    const char *content_type; /* default application/json */
    const char *allow;        /* for 405 */
    const char *csp;          /* Content-Security-Policy, for pages */
};

typedef void (*http_handler)(struct http_req *rq, struct http_resp *rs);

struct http_route {
    const char *method;
    const char *pattern; /* "/events/{id}" : each {x} matches one path segment */
    bool open;           /* served without a token (/health, /ready) */
    http_handler fn;
    /* Strict input (CONTRACT 9.3): the query parameters and the JSON body members the
     * route takes, space-separated; NULL takes none. Anything else is a 400 naming it,
     * before the handler runs (the query) or when it reads the body (http_json_body). */
    const char *query;
    const char *body;
};

/* Starts the API and the metrics listener. NULL and *err on failure (e.g. address in use). */
struct http_server *http_start(const struct config *cfg, struct replay_env *env, char **err);
void http_stop(struct http_server *s);

/* Matches a path against a route pattern; on success the {x} parts are copied into
 * scratch and args points at them (at most 2). */
bool http_match_route(const char *pattern, const char *path, char *scratch, size_t scratch_len,
                      const char **args);

/* Helpers for handlers. */
const char *http_query(struct http_req *rq, const char *name); /* NULL when absent */
const char *http_header(struct http_req *rq, const char *name);
void http_error(struct http_resp *rs, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Parses a positive 64-bit id; false when it is not one. */
bool http_parse_id(const char *s, int64_t *out);
/* An optional text filter of the query string: absent or empty is no filter (NULL). */
const char *http_query_filter(struct http_req *rq, const char *name);
/* YYYY-MM-DD first: PostgreSQL would also take words like "now" or "epoch". */
bool http_iso8601_like(const char *s);
/* An optional query parameter that must be a positive id (*out NULL when absent), or an
 * ISO 8601 time (PostgreSQL parses the rest; a bad one is a 400 from http_exec); false
 * with a 400 answer naming it otherwise. */
bool http_query_id(struct http_req *rq, struct http_resp *rs, const char *name, const char **out);
bool http_query_time(struct http_req *rq, struct http_resp *rs, const char *name, const char **out);
/* ?limit=: def when absent, else an integer from 1 to max, written to out as text; false
 * with a 400 answer otherwise. */
bool http_query_limit(struct http_req *rq, struct http_resp *rs, int def, int max, char out[16]);
/* An optional filter that must be one of `allowed` (NULL-ended): *out is it or NULL; false
 * with a 400 answer saying "<name> must be <choices>" otherwise. */
bool http_query_choice(struct http_req *rq, struct http_resp *rs, const char *name,
                       const char *const *allowed, const char *choices, const char **out);

/* Runs a query whose single row and column is a JSON text, into rs->body (200).
 * Maps failures to 503 (PostgreSQL down or timed out) or 500, and "no row" to 404 with
 * not_found_msg. */
void http_query_json(struct http_req *rq, struct http_resp *rs, const char *sql, int nparams,
                     const char *const *params, const char *not_found_msg);

/* The body as a JSON object. An empty body gives an empty object unless required. NULL
 * (with a 400 answer in rs) when it is not a JSON object, or when it has a member the
 * route does not take (http_route.body) or one member twice. The caller frees. */
struct jsonv *http_json_body(struct http_req *rq, struct http_resp *rs, bool required);
/* True when every member of the object is one of `known` (space-separated); false with
 * a 400 answer naming the others. */
bool http_body_known(struct http_req *rq, struct http_resp *rs, const struct jsonv *body,
                     const char *known);

/* Borrows a pooled connection; NULL with a 503 answer in rs. */
struct pg_conn *http_db(struct http_req *rq, struct http_resp *rs);
void http_db_done(struct http_req *rq, struct pg_conn *c);
/* Runs a query without parameters on a connection of the pool borrowed for at most 1 s,
 * and gives it back (/ready, /metrics). NULL when none was free or the query failed. */
struct db_rows *http_pool_query(struct db_pool *pool, const char *sql);

/* Runs a query; NULL with the matching answer in rs (400 for values PostgreSQL refuses,
 * 503 when it is down or too slow, 500 otherwise). The caller frees the rows. */
struct db_rows *http_exec(struct http_req *rq, struct http_resp *rs, struct pg_conn *c,
                          const char *sql, int nparams, const char *const *params);

/* The route tables (api_routes.c, api_replay.c). */
extern const struct http_route api_replay_routes[];
extern const struct http_route api_webhook_routes[];
extern const struct http_route api_status_routes[];
extern const struct http_route api_routes[];

#endif
