/* The operator commands' HTTP client: requests to the running service's API through
 * libcurl (Debian's libcurl4-openssl-dev). One handle is kept for a command's requests, so
 * that `jobs watch` reuses its connection. */
#ifndef EVENTSINK_OP_HTTP_H
#define EVENTSINK_OP_HTTP_H

#include <stdbool.h>

#include "buf.h"

struct op_api;

/* base: "http://HOST:PORT" (no trailing slash); token: NULL for none. NULL when libcurl
 * cannot start. */
struct op_api *op_api_new(const char *base, const char *token);
void op_api_free(struct op_api *api);
const char *op_api_base(const struct op_api *api);

struct op_resp {
    long status;     /* the HTTP status, or 0 when the API did not answer */
    struct buf body; /* the answer's body (NUL-terminated when not empty) */
    char error[256]; /* why there is no answer (status 0) */
};

/* method "GET" or "POST"; path with its query ("/dlq?limit=5"); body: JSON text or NULL.
 * Each request ends within 30 s (5 s to connect). Returns out->status. */
long op_request(struct op_api *api, const char *method, const char *path, const char *body,
                struct op_resp *out);
void op_resp_free(struct op_resp *r);

/* Appends "?key=value" or "&key=value", the value percent-encoded; nothing when value is
 * NULL. */
void op_query_add(struct buf *path, const char *key, const char *value);

#endif
