/* The read side of the operator API (CONTRACT section 5): health, events, lineage, the
 * dead-letter queue and the loaded policies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_sql.h"
#include "db_rows.h"
#include "health.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "reload.h"
#include "status.h"

/* 200 while the process runs; "stalled" names each component that has work and made no
 * progress for health.stall_after_s (CONTRACT 9.1). */
/* {"status", "postgres", "kafka", "policy_version", "stalled"} */
static void health_json(struct buf *out)
{
    struct buf stalled = {0};
    int n = health_stalled_json(&stalled);
    buf_printf(out,
               "{\"status\":\"%s\",\"postgres\":\"%s\",\"kafka\":\"%s\",\"policy_version\":%d,"
               "\"stalled\":%s}",
               n ? "stalled" : "ok", status_postgres_up() ? "up" : "down",
               status_kafka_up() ? "up" : "down", status_policy_version(), stalled.data);
    buf_free(&stalled);
}

static void h_health(struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    health_json(&rs->body);
}

static void h_ready(struct http_req *rq, struct http_resp *rs)
{
    /* PostgreSQL is asked now; Kafka's state comes from the consumer's broker connections */
    struct db_rows *res = http_pool_query(rq->pool, SQL_PING);
    bool pg = res != NULL;
    db_rows_free(res);
    bool kafka = status_kafka_up();
    struct buf stalled = {0};
    bool moving = health_stalled_json(&stalled) == 0;
    bool ready = pg && kafka && moving;
    rs->status = ready ? 200 : 503;
    buf_printf(&rs->body, "{\"ready\":%s,\"postgres\":\"%s\",\"kafka\":\"%s\",\"stalled\":%s}",
               ready ? "true" : "false", pg ? "up" : "down", kafka ? "up" : "down", stalled.data);
    buf_free(&stalled);
}

/* Reads ?limit= (1..max, default def). False (with a 400 answer) when out of range. */
static void h_events_latest(struct http_req *rq, struct http_resp *rs)
{
    char limit[16];
    if (!http_query_limit(rq, rs, 20, 1000, limit)) return;
    const char *replayed = http_query_filter(rq, "replayed");
    if (replayed && strcmp(replayed, "true") != 0 && strcmp(replayed, "false") != 0) {
        http_error(rs, 400, "bad_request", "replayed must be true or false");
        return;
    }
    const char *before, *since, *until;
    if (!http_query_id(rq, rs, "before_id", &before) || !http_query_time(rq, rs, "since", &since) ||
        !http_query_time(rq, rs, "until", &until))
        return;
    const char *params[] = {limit,
                            http_query_filter(rq, "tenant"),
                            http_query_filter(rq, "topic"),
                            replayed,
                            rq->tenant_scope,
                            before,
                            since,
                            until,
                            http_query_filter(rq, "event_type")};
    http_query_json(rq, rs, SQL_EVENTS_LATEST, 9, params, NULL);
}

static bool path_id(struct http_req *rq, struct http_resp *rs, const char *what)
{
    int64_t id;
    if (http_parse_id(rq->path_args[0], &id)) return true;
    http_error(rs, 400, "bad_request", "%s id must be a positive integer, not \"%s\"", what,
               rq->path_args[0]);
    return false;
}

static void h_event(struct http_req *rq, struct http_resp *rs)
{
    if (!path_id(rq, rs, "event")) return;
    const char *params[] = {rq->path_args[0], rq->tenant_scope};
    http_query_json(rq, rs, SQL_EVENT_ONE, 2, params, "no such event");
}

static void h_lineage(struct http_req *rq, struct http_resp *rs)
{
    if (!path_id(rq, rs, "event")) return;
    const char *params[] = {rq->path_args[0], rq->tenant_scope};
    http_query_json(rq, rs, SQL_EVENT_LINEAGE, 2, params, "no such event");
}

static void h_dlq_list(struct http_req *rq, struct http_resp *rs)
{
    char limit[16];
    if (!http_query_limit(rq, rs, 50, 1000, limit)) return;
    static const char *const statuses[] = {"pending", "retrying", "resolved", "discarded", NULL};
    const char *status;
    if (!http_query_choice(rq, rs, "status", statuses, "pending, retrying, resolved or discarded",
                           &status))
        return;
    const char *before;
    if (!http_query_id(rq, rs, "before_id", &before)) return;
    const char *params[] = {limit,
                            status,
                            http_query_filter(rq, "reason"),
                            http_query_filter(rq, "topic"),
                            http_query_filter(rq, "tenant"),
                            rq->tenant_scope,
                            before};
    http_query_json(rq, rs, SQL_DLQ_LIST, 7, params, NULL);
}

static void h_dlq_one(struct http_req *rq, struct http_resp *rs)
{
    if (!path_id(rq, rs, "DLQ entry")) return;
    const char *params[] = {rq->path_args[0], rq->tenant_scope};
    http_query_json(rq, rs, SQL_DLQ_ONE, 2, params, "no such DLQ entry");
}

/* Counts for the status page: events per bin, original vs replayed, and the DLQ by
 * reason and status. window_s 60..3600 (default 600), bin_s 1..300 (default 10), at most
 * 720 bins. */
static void h_stats(struct http_req *rq, struct http_resp *rs)
{
    int64_t window = 600, bin = 10;
    const char *w = http_query(rq, "window_s"), *b = http_query(rq, "bin_s");
    if ((w && (!http_parse_id(w, &window) || window < 60 || window > 3600)) ||
        (b && (!http_parse_id(b, &bin) || bin > 300)) || window / bin > 720) {
        http_error(rs, 400, "bad_request",
                   "window_s must be 60..3600 and bin_s 1..300, with at most 720 bins");
        return;
    }
    char ws[16], bs[16];
    snprintf(ws, sizeof ws, "%d", (int)window);
    snprintf(bs, sizeof bs, "%d", (int)bin);
    const char *params[] = {ws, bs, rq->tenant_scope};
    http_query_json(rq, rs, SQL_STATS, 3, params, NULL);
    if (rs->status != 200 || rs->body.len < 2 || rs->body.data[0] != '{') return;
    /* one request tells everything the status page and `eventsink status` show first */
    struct buf out = {0};
    buf_puts(&out, "{\"health\":");
    health_json(&out);
    buf_puts(&out, ",\"policies\":");
    status_policies_stamp_json(&out);
    buf_putc(&out, ',');
    buf_append(&out, rs->body.data + 1, rs->body.len - 1);
    buf_free(&rs->body);
    rs->body = out;
}

static void h_policies(struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    status_policies_json(&rs->body);
}

/* ,"restart_needed":["kafka.brokers",...] when the file changes options a reload does not
 * take (names separated by ", "); nothing when it does not. */
static void write_restart_needed(struct buf *b, const char *names)
{
    if (!names) return;
    buf_append(b, ",\"restart_needed\":[", 19);
    for (const char *p = names; *p;) {
        const char *end = strstr(p, ", ");
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (p != names) buf_append(b, ",", 1);
        json_write_string(b, p, n);
        p += n + (end ? 2 : 0);
    }
    buf_append(b, "]", 1);
}

static void h_reload(struct http_req *rq, struct http_resp *rs)
{
    int version = 0;
    char *err = NULL, *restart = NULL;
    int rc = reload_request_wait(15000, &version, &err, &restart);
    if (rc == 1) {
        log_info("policies reloaded on request of %s: version %d",
                 rq->token ? rq->token->name : "anonymous", version);
        buf_printf(&rs->body, "{\"policy_version\":%d", version);
        write_restart_needed(&rs->body, restart);
        buf_append(&rs->body, "}", 1);
        free(restart);
    } else if (rc == 0) {
        http_error(rs, 422, "reload_failed", "%s (policy version %d stays in use)", err, version);
        free(err);
    } else {
        http_error(rs, 503, "busy",
                   "the pipeline did not reach a batch boundary in time (PostgreSQL down?); "
                   "the reload happens when it does");
    }
}

/* Order matters where patterns overlap: fixed segments before {id}. */
const struct http_route api_routes[] = {
    {"GET", "/health", true, h_health, NULL, NULL},
    {"GET", "/ready", true, h_ready, NULL, NULL},
    {"GET", "/events/latest", false, h_events_latest,
     "limit tenant topic replayed before_id since until event_type", NULL},
    {"GET", "/events/{id}/lineage", false, h_lineage, NULL, NULL},
    {"GET", "/events/{id}", false, h_event, NULL, NULL},
    {"GET", "/dlq", false, h_dlq_list, "limit status reason topic tenant before_id", NULL},
    {"GET", "/dlq/{id}", false, h_dlq_one, NULL, NULL},
    {"GET", "/admin/policies", false, h_policies, NULL, NULL},
    {"GET", "/stats", false, h_stats, "window_s bin_s", NULL},
    {"POST", "/admin/reload", false, h_reload, NULL, NULL},
    {NULL, NULL, false, NULL, NULL, NULL},
};
