#include "http.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "db_pool.h"
#include "db_rows.h"
#include "http_guard.h"
#include "json.h"
#include "listen_addr.h"
#include "log.h"
#include "metrics.h"
#include "pgarray.h"

/* an answer the client does not read, or a connection libmicrohttpd holds after the
 * guard's deadline, is dropped after this long without progress */
#define CONNECTION_TIMEOUT_S 30
#define POOL_SIZE 8
#define POOL_WAIT_MS 3000
#define STATEMENT_TIMEOUT_MS 10000

struct http_server {
    const struct config *cfg;
    struct MHD_Daemon *api;
    struct MHD_Daemon *metrics;
    struct http_guard *api_guard, *metrics_guard;
    struct db_pool *pool;
    struct replay_env *env;
    unsigned char (*token_hashes)[32]; /* sha256 of each configured token */
    char **tenant_scopes;              /* per token: text[] literal or NULL */
};

struct conn_state {
    struct http_req rq;
    int64_t start_us;
    bool started;  /* the access handler has seen the request head */
    bool uri_nul;  /* the raw request target holds a %00 */
    bool rejected; /* a response was queued before the body was read */
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The raw request target, before libmicrohttpd decodes it: a %00 would cut the decoded
 * path or parameter short ("/events/1%00/lineage" read as "/events/1"), so it is noted
 * here and refused (CONTRACT 9.3). libmicrohttpd hands the returned state to the access
 * handler and always to the completion callback, which frees it. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    struct conn_state *st = xcalloc(1, sizeof *st);
    st->start_us = now_us();
    st->uri_nul = strstr(uri, "%00") != NULL;
    return st;
}

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

/* ---- helpers for handlers ---------------------------------------------------------------- */

const char *http_query(struct http_req *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_header(struct http_req *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

void http_error(struct http_resp *rs, int status, const char *code, const char *fmt, ...)
{
    struct buf msg = {0};
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    rs->status = status;
    buf_reset(&rs->body);
    buf_puts(&rs->body, "{\"error\":");
    json_write_cstr(&rs->body, code);
    buf_puts(&rs->body, ",\"message\":");
    json_write_string(&rs->body, msg.data ? msg.data : "", msg.len);
    buf_putc(&rs->body, '}');
    buf_free(&msg);
}

bool http_parse_id(const char *s, int64_t *out)
{
    if (!s || !*s || strlen(s) > 18) return false;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        v = v * 10 + (*p - '0');
    }
    if (v <= 0) return false;
    *out = v;
    return true;
}

const char *http_query_filter(struct http_req *rq, const char *name)
{
    const char *v = http_query(rq, name);
    return v && *v ? v : NULL;
}

bool http_iso8601_like(const char *s)
{
    for (int i = 0; i < 10; i++) {
        bool digit = s[i] >= '0' && s[i] <= '9';
        if ((i == 4 || i == 7) ? s[i] != '-' : !digit) return false;
    }
    return true;
}

bool http_query_id(struct http_req *rq, struct http_resp *rs, const char *name, const char **out)
{
    int64_t id;
    *out = http_query_filter(rq, name);
    if (!*out || http_parse_id(*out, &id)) return true;
    http_error(rs, 400, "bad_request", "%s must be a positive integer (an id), not \"%s\"", name,
               *out);
    return false;
}

bool http_query_time(struct http_req *rq, struct http_resp *rs, const char *name, const char **out)
{
    *out = http_query_filter(rq, name);
    if (!*out || http_iso8601_like(*out)) return true;
    http_error(rs, 400, "bad_request", "%s must be an ISO 8601 time, e.g. 2026-11-27T08:00:00Z",
               name);
    return false;
}

bool http_query_limit(struct http_req *rq, struct http_resp *rs, int def, int max, char out[16])
{
    const char *l = http_query(rq, "limit");
    int64_t v = def;
    if (l && (!http_parse_id(l, &v) || v > max)) {
        http_error(rs, 400, "bad_request", "limit must be an integer from 1 to %d", max);
        return false;
    }
    snprintf(out, 16, "%d", (int)v);
    return true;
}

bool http_query_choice(struct http_req *rq, struct http_resp *rs, const char *name,
                       const char *const *allowed, const char *choices, const char **out)
{
    *out = http_query_filter(rq, name);
    if (!*out) return true;
    for (const char *const *a = allowed; *a; a++)
        if (strcmp(*a, *out) == 0) return true;
    http_error(rs, 400, "bad_request", "%s must be %s", name, choices);
    return false;
}

struct pg_conn *http_db(struct http_req *rq, struct http_resp *rs)
{
    const char *why = NULL;
    struct pg_conn *c = db_pool_get(rq->pool, POOL_WAIT_MS, &why);
    if (!c) http_error(rs, 503, "postgres_unavailable", "%s", why);
    return c;
}

void http_db_done(struct http_req *rq, struct pg_conn *c)
{
    db_pool_put(rq->pool, c);
}

struct db_rows *http_pool_query(struct db_pool *pool, const char *sql)
{
    const char *why;
    struct pg_conn *c = db_pool_get(pool, 1000, &why);
    if (!c) return NULL;
    struct db_rows *r = db_rows_exec(c, sql, 0, NULL, NULL);
    db_pool_put(pool, c);
    return r;
}

struct db_rows *http_exec(struct http_req *rq, struct http_resp *rs, struct pg_conn *c,
                          const char *sql, int nparams, const char *const *params)
{
    struct db_error e;
    struct db_rows *res = db_rows_exec(c, sql, nparams, params, &e);
    if (res) return res;
    if (e.kind == DB_ERR_BAD_VALUE) {
        /* a value the request passed through was refused by PostgreSQL (a bad timestamp) */
        http_error(rs, 400, "bad_request", "%s", e.message);
    } else if (e.kind == DB_ERR_UNAVAILABLE) {
        http_error(rs, 503, "postgres_unavailable", "PostgreSQL: %s", e.message);
    } else {
        log_error("API %s: query failed: %s", rq->route, e.message);
        http_error(rs, 500, "internal", "the query failed; see the service log");
    }
    return NULL;
}

struct jsonv *http_json_body(struct http_req *rq, struct http_resp *rs, bool required)
{
    size_t n = rq->body.len;
    const char *p = rq->body.data ? rq->body.data : "";
    while (n && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
        p++;
        n--;
    }
    if (n == 0) {
        if (required) {
            http_error(rs, 400, "bad_request", "%s needs a JSON object as its body", rq->route);
            return NULL;
        }
        struct jsonv *v = xcalloc(1, sizeof *v);
        v->type = JV_OBJECT;
        return v;
    }
    const char *err = NULL;
    size_t at = 0;
    struct jsonv *v = jsonv_parse(p, n, &err, &at);
    if (!v) {
        http_error(rs, 400, "bad_request", "the body is not valid JSON: %s at byte %zu", err, at);
        return NULL;
    }
    if (v->type != JV_OBJECT) {
        jsonv_free(v);
        http_error(rs, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    if (!http_body_known(rq, rs, v, rq->body_keys)) {
        jsonv_free(v);
        return NULL;
    }
    return v;
}

/* ---- strict input (CONTRACT 9.3) --------------------------------------------------------- */

/* Is `w` (n bytes) one of the space-separated words of `list`? */
static bool word_in(const char *list, const char *w, size_t n)
{
    for (const char *p = list; p && *p;) {
        size_t len = strcspn(p, " ");
        if (len == n && memcmp(p, w, n) == 0) return true;
        p += len;
        while (*p == ' ')
            p++;
    }
    return false;
}

/* Names gathered for one error message: the unknown ones and the repeated ones. */
struct strict_names {
    const char *known;
    struct buf unknown, twice, seen; /* seen: every name so far, each followed by a space */
};

static void strict_note(struct strict_names *sn, const char *name)
{
    size_t n = strlen(name);
    if (word_in(sn->seen.data, name, n)) {
        if (!word_in(sn->twice.data, name, n)) buf_printf(&sn->twice, "%s ", name);
    } else {
        buf_printf(&sn->seen, "%s ", name);
        if (!word_in(sn->known, name, n)) buf_printf(&sn->unknown, "%s ", name);
    }
}

/* A 400 naming the unknown and the repeated names; false when there was none. */
static bool strict_answer(struct strict_names *sn, struct http_resp *rs, const char *where,
                          const char *route)
{
    bool bad = sn->unknown.len || sn->twice.len;
    if (sn->unknown.len) {
        sn->unknown.data[--sn->unknown.len] = '\0';
        http_error(rs, 400, "bad_request", "unknown %s: %s (%s takes %s)", where, sn->unknown.data,
                   route ? route : "this endpoint", sn->known && *sn->known ? sn->known : "none");
    } else if (sn->twice.len) {
        sn->twice.data[--sn->twice.len] = '\0';
        http_error(rs, 400, "bad_request", "%s given more than once: %s", where, sn->twice.data);
    }
    buf_free(&sn->unknown);
    buf_free(&sn->twice);
    buf_free(&sn->seen);
    return bad;
}

bool http_body_known(struct http_req *rq, struct http_resp *rs, const struct jsonv *body,
                     const char *known)
{
    struct strict_names sn = {.known = known};
    for (size_t i = 0; body && body->type == JV_OBJECT && i < body->n; i++)
        strict_note(&sn, body->keys[i]);
    return !strict_answer(&sn, rs, "body field(s)", rq->route);
}

static enum MHD_Result note_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                      size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    (void)key_size;
    (void)value;
    (void)value_size;
    strict_note(cls, key);
    return MHD_YES;
}

/* Every query parameter is one the route takes, once; false with a 400 answer. */
static bool query_known(struct http_req *rq, struct http_resp *rs, const char *known)
{
    struct strict_names sn = {.known = known};
    MHD_get_connection_values_n(rq->conn, MHD_GET_ARGUMENT_KIND, note_query_arg, &sn);
    return !strict_answer(&sn, rs, "query parameter(s)", rq->route);
}

/* A route that takes no body may get none, or an empty JSON object. */
static bool no_body(struct http_req *rq, struct http_resp *rs)
{
    struct jsonv *v = http_json_body(rq, rs, false);
    jsonv_free(v);
    return v != NULL;
}

void http_query_json(struct http_req *rq, struct http_resp *rs, const char *sql, int nparams,
                     const char *const *params, const char *not_found_msg)
{
    struct pg_conn *c = http_db(rq, rs);
    if (!c) return;
    struct db_rows *res = http_exec(rq, rs, c, sql, nparams, params);
    if (!res) {
        /* answered */
    } else if (db_rows_count(res) == 0 || db_rows_null(res, 0, 0)) {
        http_error(rs, 404, "not_found", "%s", not_found_msg ? not_found_msg : "not found");
    } else {
        rs->status = 200;
        buf_reset(&rs->body);
        buf_append(&rs->body, db_rows_text(res, 0, 0), db_rows_len(res, 0, 0));
    }
    db_rows_free(res);
    http_db_done(rq, c);
}

/* ---- routing ----------------------------------------------------------------------------- */

bool http_match_route(const char *pattern, const char *path, char *scratch, size_t scratch_len,
                      const char **args)
{
    int nargs = 0;
    size_t used = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p == '{') {
            const char *end = strchr(p, '}');
            size_t seg = strcspn(s, "/");
            if (seg == 0 || used + seg + 1 > scratch_len || nargs >= 2) return false;
            memcpy(scratch + used, s, seg);
            scratch[used + seg] = '\0';
            args[nargs++] = scratch + used;
            used += seg + 1;
            p = end + 1;
            s += seg;
        } else if (*p == *s) {
            p++;
            s++;
        } else {
            return false;
        }
    }
    return *p == '\0' && *s == '\0';
}

/* ---- authentication ---------------------------------------------------------------------- */

/* Finds the token, comparing SHA-256 digests in constant time so that neither the content
 * nor the length of a configured token leaks through timing. */
static int find_token(struct http_server *s, const char *presented)
{
    unsigned char h[32];
    sha256(presented, strlen(presented), h);
    int found = -1;
    for (size_t i = 0; i < s->cfg->http.ntokens; i++)
        if (CRYPTO_memcmp(h, s->token_hashes[i], 32) == 0) found = (int)i;
    return found;
}

/* ---- the request cycle ------------------------------------------------------------------- */

static enum MHD_Result send_resp(struct MHD_Connection *conn, struct http_resp *rs)
{
    if (rs->body.len == 0) buf_puts(&rs->body, "{}");
    if (!rs->content_type) json_compact(&rs->body);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(rs->body.len, rs->body.data, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type",
                            rs->content_type ? rs->content_type : "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (rs->allow) MHD_add_response_header(r, "Allow", rs->allow);
    if (rs->csp) {
        MHD_add_response_header(r, "Content-Security-Policy", rs->csp);
        MHD_add_response_header(r, "X-Frame-Options", "DENY");
    }
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)rs->status, r);
    MHD_destroy_response(r);
    return ret;
}

static void finish_log(struct conn_state *st, int status)
{
    const char *route = st->rq.route ? st->rq.route : "unknown";
    metrics_http_request(route, status);
    double ms = (double)(now_us() - st->start_us) / 1000.0;
    log_info("http %s %s -> %d in %.1f ms (token %s)", st->rq.method, route, status, ms,
             st->rq.token ? st->rq.token->name : "-");
}

static enum MHD_Result arg_has_nul(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    int *nul = cls;
    if (strlen(key) != key_size || (value && strlen(value) != value_size)) *nul = 1;
    return MHD_YES;
}

static void dispatch(struct http_server *s, struct conn_state *st, struct http_resp *rs)
{
    struct http_req *rq = &st->rq;
    static __thread char scratch[512];
    const struct http_route *hit = NULL;
    const char *allow = NULL;
    const struct http_route *tables[] = {api_routes, api_replay_routes, api_webhook_routes,
                                         api_status_routes};
    for (size_t t = 0; t < sizeof tables / sizeof tables[0] && !hit; t++)
        for (const struct http_route *r = tables[t]; r->pattern; r++) {
            const char *args[2] = {NULL, NULL};
            if (!http_match_route(r->pattern, rq->path, scratch, sizeof scratch, args)) continue;
            if (strcmp(r->method, rq->method) != 0 &&
                !(strcmp(r->method, "GET") == 0 && strcmp(rq->method, "HEAD") == 0)) {
                allow = r->method;
                rq->route = r->pattern;
                continue;
            }
            hit = r;
            rq->route = r->pattern;
            rq->path_args[0] = args[0];
            rq->path_args[1] = args[1];
            break;
        }
    if (!hit) {
        if (allow) {
            rs->allow = allow;
            http_error(rs, 405, "method_not_allowed", "%s is not allowed on %s; use %s", rq->method,
                       rq->route, allow);
        } else {
            rq->route = NULL;
            http_error(rs, 404, "not_found", "no such endpoint: %s", rq->path);
        }
        return;
    }
    if (!hit->open && s->cfg->http.ntokens > 0) {
        const char *auth = http_header(rq, "Authorization");
        if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
            http_error(rs, 401, "unauthorized",
                       "this endpoint needs Authorization: Bearer <token>");
            return;
        }
        int t = find_token(s, auth + 7);
        if (t < 0) {
            http_error(rs, 401, "unauthorized", "the token is not valid");
            return;
        }
        rq->token = &s->cfg->http.tokens[t];
        rq->tenant_scope = s->tenant_scopes[t];
        bool write = strcmp(rq->method, "GET") != 0 && strcmp(rq->method, "HEAD") != 0;
        if (write && strcmp(rq->token->role, "operator") != 0) {
            http_error(rs, 403, "forbidden", "the %s role may only read; %s needs operator",
                       rq->token->role, rq->route);
            return;
        }
    }
    int nul = 0;
    MHD_get_connection_values_n(rq->conn, MHD_GET_ARGUMENT_KIND, arg_has_nul, &nul);
    if (nul) {
        /* libmicrohttpd cuts a value at %00: refuse it rather than act on half of it */
        http_error(rs, 400, "bad_request", "a query parameter holds a NUL (%%00)");
        return;
    }
    if (rq->body_too_large) {
        http_error(rs, 413, "body_too_large", "the body is over http.max_body_bytes (%ld)",
                   s->cfg->http.max_body_bytes);
        return;
    }
    rq->body_keys = hit->body;
    if (!query_known(rq, rs, hit->query)) return;
    if (!hit->body && !no_body(rq, rs)) return;
    hit->fn(rq, rs);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct http_server *s = cls;
    struct conn_state *st = *con_cls;
    if (!st) *con_cls = st = on_uri(NULL, "", conn); /* not reached: on_uri made it */
    if (!st->started) {
        st->started = true;
        st->rq.method = method;
        st->rq.path = url;
        st->rq.conn = conn;
        st->rq.cfg = s->cfg;
        st->rq.pool = s->pool;
        st->rq.env = s->env;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        struct http_resp rs = {0};
        if (st->uri_nul)
            http_error(&rs, 400, "bad_request", "the path or the query holds a NUL (%%00)");
        else if (cl && strtoll(cl, NULL, 10) > s->cfg->http.max_body_bytes)
            http_error(&rs, 413, "body_too_large", "the body is over http.max_body_bytes (%ld)",
                       s->cfg->http.max_body_bytes);
        else
            return MHD_YES;
        /* refuse before reading a byte of the body */
        st->rejected = true;
        enum MHD_Result ret = send_resp(conn, &rs);
        finish_log(st, rs.status);
        buf_free(&rs.body);
        return ret;
    }
    if (st->rejected) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        if (st->rq.body.len + *upload_size > (size_t)s->cfg->http.max_body_bytes)
            st->rq.body_too_large = true; /* keep reading, keep nothing */
        else
            buf_append(&st->rq.body, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    http_guard_request_in(conn);
    struct http_resp rs = {.status = 200};
    dispatch(s, st, &rs);
    enum MHD_Result ret = send_resp(conn, &rs);
    finish_log(st, rs.status);
    buf_free(&rs.body);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)toe;
    http_guard_request_done(conn);
    struct conn_state *st = *con_cls;
    if (!st) return;
    buf_free(&st->rq.body);
    free(st);
    *con_cls = NULL;
}

/* ---- /metrics ---------------------------------------------------------------------------- */

/* The metrics listener keeps no state per request: these mark where a request is. */
static char metrics_uri_ok, metrics_uri_nul, metrics_head_ok, metrics_head_nul;

static void *on_metrics_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    return strstr(uri, "%00") ? &metrics_uri_nul : &metrics_uri_ok;
}

static const char SQL_METRIC_GAUGES[] =
    "SELECT (SELECT count(*) FROM dead_letter_queue WHERE status = 'pending'),"
    " (SELECT count(*) FROM replay_jobs WHERE status = 'running')";

static enum MHD_Result on_metrics(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)upload_size;
    struct http_server *s = cls;
    if (*con_cls == &metrics_uri_ok || *con_cls == &metrics_uri_nul) {
        /* the head: answer once the (ignored) body is in */
        *con_cls = *con_cls == &metrics_uri_ok ? &metrics_head_ok : &metrics_head_nul;
        return MHD_YES;
    }
    http_guard_request_in(conn);
    struct http_resp rs = {.status = 200};
    if (*con_cls != &metrics_head_ok) {
        http_error(&rs, 400, "bad_request", "the path or the query holds a NUL (%%00)");
    } else if (strcmp(url, "/metrics") != 0) {
        http_error(&rs, 404, "not_found", "the metrics are at /metrics");
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        rs.allow = "GET";
        http_error(&rs, 405, "method_not_allowed", "use GET");
    } else {
        struct metrics_db_gauges g = {-1, -1};
        struct db_rows *res = http_pool_query(s->pool, SQL_METRIC_GAUGES);
        if (db_rows_count(res) == 1) {
            g.dlq_pending = db_rows_int(res, 0, 0);
            g.replay_jobs_running = db_rows_int(res, 0, 1);
        }
        db_rows_free(res);
        metrics_render(&rs.body, &g);
        rs.content_type = "text/plain; version=0.0.4; charset=utf-8";
    }
    enum MHD_Result ret = send_resp(conn, &rs);
    buf_free(&rs.body);
    return ret;
}

static void on_metrics_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)con_cls;
    (void)toe;
    http_guard_request_done(conn);
}

/* ---- start and stop ---------------------------------------------------------------------- */

/* A listener: a thread per connection (the handlers block on PostgreSQL and Kafka), poll(2)
 * rather than select(2) (no FD_SETSIZE bound), http.max_connections in all and
 * http.max_connections_per_ip from one address, and a guard that holds every request to
 * http.request_timeout_s and makes room near the limit (http_guard.h). */
static struct MHD_Daemon *start_daemon(struct http_server *s, const char *listen,
                                       MHD_AccessHandlerCallback fn,
                                       MHD_RequestCompletedCallback done,
                                       void *(*uri)(void *, const char *, struct MHD_Connection *),
                                       struct http_guard **guard, char **err)
{
    struct sockaddr_storage ss;
    if (!listen_addr_parse(listen, &ss, err)) return NULL;
    unsigned max = (unsigned)s->cfg->http.max_connections;
    *guard = http_guard_create(listen, s->cfg->http.request_timeout_s * 1000, max, err);
    if (!*guard) return NULL;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, fn, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, http_guard_socket_limit(max),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)s->cfg->http.max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_NOTIFY_COMPLETED, done,
        s, MHD_OPTION_URI_LOG_CALLBACK, uri, NULL, MHD_OPTION_NOTIFY_CONNECTION, http_guard_notify,
        *guard, MHD_OPTION_END);
    if (!d) {
        struct buf m = {0};
        buf_printf(&m, "cannot listen on %s (address in use or not available)", listen);
        *err = m.data;
    }
    return d;
}

struct http_server *http_start(const struct config *cfg, struct replay_env *env, char **err)
{
    struct http_server *s = xcalloc(1, sizeof *s);
    s->cfg = cfg;
    s->env = env;
    s->pool = db_pool_create(cfg->postgres.dsn, POOL_SIZE, STATEMENT_TIMEOUT_MS);
    size_t nt = cfg->http.ntokens;
    s->token_hashes = xcalloc(nt + 1, 32);
    s->tenant_scopes = xcalloc(nt + 1, sizeof(char *));
    for (size_t i = 0; i < nt; i++) {
        const struct api_token *t = &cfg->http.tokens[i];
        sha256(t->token, strlen(t->token), s->token_hashes[i]);
        if (t->tenants.n) {
            struct pgarray a = {0};
            for (size_t j = 0; j < t->tenants.n; j++)
                pgarray_cstr(&a, t->tenants.items[j]);
            s->tenant_scopes[i] = xstrdup(pgarray_text(&a));
            pgarray_free(&a);
        }
    }
    s->api =
        start_daemon(s, cfg->http.listen, on_request, on_completed, on_uri, &s->api_guard, err);
    if (!s->api) goto error;
    s->metrics = start_daemon(s, cfg->metrics.listen, on_metrics, on_metrics_done, on_metrics_uri,
                              &s->metrics_guard, err);
    if (!s->metrics) goto error;
    log_info("HTTP API on %s%s, metrics on %s/metrics", cfg->http.listen,
             nt ? "" : " (no tokens: loopback only, no authentication)", cfg->metrics.listen);
    return s;
error:
    http_stop(s);
    return NULL;
}

void http_stop(struct http_server *s)
{
    if (!s) return;
    if (s->api) MHD_stop_daemon(s->api);
    if (s->metrics) MHD_stop_daemon(s->metrics);
    http_guard_destroy(s->api_guard);
    http_guard_destroy(s->metrics_guard);
    db_pool_destroy(s->pool);
    for (size_t i = 0; i < s->cfg->http.ntokens; i++)
        free(s->tenant_scopes[i]);
    free(s->tenant_scopes);
    free(s->token_hashes);
    free(s);
}
