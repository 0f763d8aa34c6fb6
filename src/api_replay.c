/* The write side of the operator API (CONTRACT sections 4 and 5): replays of one event, of
 * a batch, of a time range; DLQ retries and discards; replay jobs. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_replay.h"
#include "db_rows.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "replay_jobs_sql.h"
#include "replay_sql.h"
#include "replay_worker.h"

#define IDEMPOTENCY_KEY_MAX 200

static const char *who(struct http_req *rq)
{
    return rq->token ? rq->token->name : "anonymous";
}

/* Optional string member; false (with a 400 answer) when present with another type. */
static bool opt_str(const struct jsonv *body, const char *key, const char **out,
                    struct http_resp *rs)
{
    const struct jsonv *v = jsonv_get(body, key);
    *out = NULL;
    if (!v || v->type == JV_NULL) return true;
    if (v->type != JV_STRING) {
        http_error(rs, 400, "bad_request", "%s must be a string", key);
        return false;
    }
    *out = v->str;
    return true;
}

/* A boolean from the body, else from the query string ("true"/"false"). */
static bool opt_bool(struct http_req *rq, const struct jsonv *body, const char *key, bool def,
                     bool *out, struct http_resp *rs)
{
    const struct jsonv *v = jsonv_get(body, key);
    const char *q = http_query(rq, key);
    *out = def;
    if (v && v->type != JV_NULL) {
        if (v->type != JV_BOOL) {
            http_error(rs, 400, "bad_request", "%s must be true or false", key);
            return false;
        }
        *out = v->b;
    } else if (q && *q) {
        if (strcmp(q, "true") != 0 && strcmp(q, "false") != 0) {
            http_error(rs, 400, "bad_request", "%s must be true or false", key);
            return false;
        }
        *out = strcmp(q, "true") == 0;
    }
    return true;
}

/* A string from the body, else from the query string. Empty means "not given" in both
 * (an empty ?tenant= is no filter, and so is "tenant": "" in a body). */
static bool param_str(struct http_req *rq, const struct jsonv *body, const char *key,
                      const char **out, struct http_resp *rs)
{
    if (!opt_str(body, key, out, rs)) return false;
    if (!*out || !**out) *out = http_query_filter(rq, key);
    return true;
}

/* The job's params: what was asked, plus the token's tenant scope. */
static void params_begin(struct buf *p, struct http_req *rq)
{
    buf_putc(p, '{');
    if (rq->token && rq->token->tenants.n) {
        buf_puts(p, "\"scope\":[");
        for (size_t i = 0; i < rq->token->tenants.n; i++) {
            if (i) buf_putc(p, ',');
            json_write_cstr(p, rq->token->tenants.items[i]);
        }
        buf_puts(p, "],");
    }
}

/* The replay_guard policy for a bulk replay. False (with a 422 answer) when it refuses;
 * a deferral adds "not_before" to the job's params (the worker waits for it) and sets
 * *deferred to its unix time. */
static bool guard(struct http_req *rq, struct http_resp *rs, const char *kind,
                  const char *requested_by, const char *reason, long count, struct buf *params,
                  double *deferred)
{
    double secs = 0;
    char *why = NULL;
    *deferred = 0;
    int g = policy_ctl_replay_guard(rq->env->ctl, kind, requested_by, reason,
                                    strcmp(kind, "scheduled") == 0, count, &secs, &why);
    if (g == GUARD_REFUSE) {
        http_error(rs, 422, "refused_by_policy", "%s", why ? why : "refused by replay_guard");
        free(why);
        return false;
    }
    if (g == GUARD_DEFER && params->len > 1 && params->data[0] == '{') {
        *deferred = (double)time(NULL) + secs;
        struct buf b = {0};
        buf_printf(&b, "{\"not_before\":%.0f,%s", *deferred, params->data + 1);
        buf_free(params);
        *params = b;
    }
    return true;
}

static void deferred_note(struct http_resp *rs, double deferred)
{
    if (!deferred || rs->body.len < 2) return;
    rs->body.len--; /* drop the closing brace */
    time_t t = (time_t)deferred;
    struct tm tm;
    char iso[32];
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    buf_printf(&rs->body, ",\"deferred_until\":\"%s\"}", iso);
}

static int64_t create_job(struct http_req *rq, struct http_resp *rs, struct pg_conn *c,
                          const char *kind, const char *tag, const char *requested_by,
                          const char *reason, const char *params, const char *status, long total)
{
    char tot[24];
    snprintf(tot, sizeof tot, "%ld", total);
    const char *p[] = {kind, tag, requested_by, reason, params, status, tot};
    struct db_rows *res = http_exec(rq, rs, c, SQL_JOB_CREATE, 7, p);
    if (!res) return 0;
    int64_t id = strtoll(db_rows_text(res, 0, 0), NULL, 10);
    db_rows_free(res);
    return id;
}

/* Runs a statement whose failure changes nothing in the answer (ROLLBACK, an unlock). */
static void run_quietly(struct pg_conn *c, const char *sql, int n, const char *const *params)
{
    db_rows_free(db_rows_exec(c, sql, n, params, NULL));
}

static void finish_job(struct pg_conn *c, int64_t job)
{
    char j[24];
    snprintf(j, sizeof j, "%" PRId64, job);
    const char *p[] = {j};
    struct db_rows *r = db_rows_exec(c, SQL_REPLAY_JOB_FINISH, 1, p, NULL);
    if (db_rows_count(r) == 1) metrics_job_finished(db_rows_text(r, 0, 1), db_rows_text(r, 0, 0));
    db_rows_free(r);
}

/* The replay_source tag of a request (malloc'd), or NULL after answering 422 when the
 * hook failed (raised, or was stopped by a sandbox limit): a replay is never sent with a
 * tag nobody decided. */
static char *replay_tag(struct http_req *rq, struct http_resp *rs, const char *kind,
                        const char *requested_by, const char *reason)
{
    char *err = NULL;
    char *tag = policy_ctl_replay_tag(rq->env->ctl, kind, requested_by, reason, false, &err);
    if (tag) return tag;
    log_warn("the replay_source hook failed (%s); the %s replay request is refused", err, kind);
    http_error(rs, 422, "policy_error", "the replay_source policy failed: %s", err);
    free(err);
    return NULL;
}

/* Produces the one item of a synchronous job and answers: 202 once Kafka acknowledged,
 * 503 when it did not (the job records the failure; nothing counts as done). */
/* Creates a bulk job (batch, range, filtered DLQ retry) and its items in one transaction,
 * then answers 202 {"job_id": J, count_key: N} and wakes the worker. items_sql inserts the
 * items and returns their count; p[job_param] is set to the job id here. */
static void start_bulk_job(struct http_req *rq, struct http_resp *rs, struct pg_conn *c,
                           const char *kind, const char *requested_by, const char *reason,
                           const char *params_json, double deferred, const char *items_sql, int np,
                           const char **p, int job_param, const char *count_key)
{
    char *tag = replay_tag(rq, rs, kind, requested_by, reason);
    if (!tag) return;
    struct db_rows *b = http_exec(rq, rs, c, "BEGIN", 0, NULL);
    if (b && rq->webhook_sig) {
        /* a webhook's signature goes in with its job, or not at all */
        const char *sp[] = {rq->webhook_sig};
        struct db_rows *seen = http_exec(rq, rs, c, SQL_WEBHOOK_SEEN, 1, sp);
        if (seen && db_rows_count(seen) == 0) api_webhook_replayed(rs);
        if (!seen || db_rows_count(seen) == 0) {
            db_rows_free(b);
            b = NULL;
            run_quietly(c, "ROLLBACK", 0, NULL);
        }
        db_rows_free(seen);
    }
    if (b) {
        db_rows_free(b);
        int64_t job =
            create_job(rq, rs, c, kind, tag, requested_by, reason, params_json, "pending", 0);
        char j[24];
        snprintf(j, sizeof j, "%" PRId64, job);
        p[job_param] = j;
        struct db_rows *res = job ? http_exec(rq, rs, c, items_sql, np, p) : NULL;
        if (res) {
            long total = atol(db_rows_text(res, 0, 0));
            db_rows_free(res);
            struct db_rows *cm = http_exec(rq, rs, c, "COMMIT", 0, NULL);
            if (cm) {
                db_rows_free(cm);
                rs->status = 202;
                buf_reset(&rs->body);
                buf_printf(&rs->body, "{\"job_id\":%" PRId64 ",\"%s\":%ld}", job, count_key, total);
                deferred_note(rs, deferred);
                replay_worker_wake();
            }
        }
        if (rs->status != 202) run_quietly(c, "ROLLBACK", 0, NULL);
    }
    free(tag);
}

void api_webhook_replayed(struct http_resp *rs)
{
    log_warn("webhook: a signature was presented a second time; refused");
    http_error(rs, 409, "replayed_signature", "this signature was already used");
}

static void run_single(struct http_req *rq, struct http_resp *rs, struct pg_conn *c, int64_t job,
                       const char *tag, const char *what, const char *id)
{
    struct replay_outcome out;
    char *err = NULL;
    bool ok = replay_run_chunk(c, rq->env, job, tag, 1, NULL, &out, &err);
    finish_job(c, job);
    if (!ok) {
        http_error(rs, 503, "postgres_unavailable", "%s", err);
        free(err);
        return;
    }
    if (out.unknown) {
        http_error(rs, 503, "kafka_unavailable",
                   "job %" PRId64 ": Kafka did not confirm the %s in time: %s; the job settles "
                   "it by itself (GET /replay/jobs/%" PRId64 ")",
                   job, strcmp(what, "dlq_id") == 0 ? "retry" : "replay", out.error, job);
        replay_worker_wake();
        return;
    }
    if (out.sent != 1) {
        http_error(rs, 503, "kafka_unavailable", "job %" PRId64 ": Kafka did not take the %s: %s",
                   job, strcmp(what, "dlq_id") == 0 ? "retry" : "replay", out.error);
        return;
    }
    rs->status = 202;
    buf_reset(&rs->body);
    buf_printf(&rs->body, "{\"job_id\":%" PRId64 ",\"%s\":%s,\"replay_source\":", job, what, id);
    json_write_cstr(&rs->body, tag);
    buf_puts(&rs->body, ",\"kafka\":{\"topic\":");
    json_write_cstr(&rs->body, out.topic);
    buf_printf(&rs->body, ",\"partition\":%d,\"offset\":%" PRId64 "}}", (int)out.partition,
               out.offset);
}

static bool path_id(struct http_req *rq, struct http_resp *rs, int64_t *id)
{
    if (http_parse_id(rq->path_args[0], id)) return true;
    http_error(rs, 400, "bad_request", "the id must be a positive integer, not \"%s\"",
               rq->path_args[0]);
    return false;
}

/* ---- POST /replay/{id} ----------------------------------------------------------------- */

static void replay_one(struct http_req *rq, struct http_resp *rs, struct pg_conn *c,
                       const char *idtext, const char *reason)
{
    const char *p1[] = {idtext, rq->tenant_scope};
    struct db_rows *res = http_exec(rq, rs, c, SQL_REPLAY_TARGET, 2, p1);
    if (!res) return;
    if (db_rows_count(res) == 0 || db_rows_null(res, 0, 0)) {
        http_error(rs, 404, "not_found", "no such event: %s", idtext);
        db_rows_free(res);
        return;
    }
    long depth = atol(db_rows_text(res, 0, 0)) + 1;
    if (depth > rq->cfg->replay.max_depth) {
        http_error(rs, 409, "max_depth",
                   "replaying event %s would make a replay of depth %ld, over replay.max_depth "
                   "(%ld); lineage: %s",
                   idtext, depth, rq->cfg->replay.max_depth, db_rows_text(res, 0, 1));
        db_rows_free(res);
        return;
    }
    db_rows_free(res);
    char *tag = replay_tag(rq, rs, "single", who(rq), reason);
    if (!tag) return;
    struct buf params = {0};
    params_begin(&params, rq);
    buf_printf(&params, "\"event_id\":%s,\"sync\":true}", idtext);
    int64_t job = create_job(rq, rs, c, "single", tag, who(rq), reason, params.data, "running", 1);
    buf_free(&params);
    if (job) {
        char j[24];
        snprintf(j, sizeof j, "%" PRId64, job);
        const char *p2[] = {j, idtext, NULL};
        struct db_rows *r2 = http_exec(rq, rs, c, SQL_JOB_ITEM_ONE, 3, p2);
        if (r2) {
            db_rows_free(r2);
            run_single(rq, rs, c, job, tag, "event_id", idtext);
        }
    }
    free(tag);
}

static void h_replay_one(struct http_req *rq, struct http_resp *rs)
{
    int64_t id;
    if (!path_id(rq, rs, &id)) return;
    struct jsonv *body = http_json_body(rq, rs, false);
    if (!body) return;
    const char *reason = NULL;
    if (!opt_str(body, "reason", &reason, rs)) goto out;
    const char *key = http_header(rq, "Idempotency-Key");
    if (key && (!*key || strlen(key) > IDEMPOTENCY_KEY_MAX)) {
        http_error(rs, 400, "bad_request", "Idempotency-Key must be 1 to %d characters",
                   IDEMPOTENCY_KEY_MAX);
        goto out;
    }
    struct pg_conn *c = http_db(rq, rs);
    if (!c) goto out;
    const char *kp[] = {who(rq), key};
    bool locked = false;
    if (key) {
        /* one request per key at a time; a retry waits for the first answer */
        struct db_rows *l = http_exec(rq, rs, c, SQL_IDEM_LOCK, 2, kp);
        if (!l) goto done;
        db_rows_free(l);
        locked = true;
        struct db_rows *prev = http_exec(rq, rs, c, SQL_IDEM_GET, 2, kp);
        if (!prev) goto done;
        if (db_rows_count(prev) == 1) {
            if (!db_rows_null(prev, 0, 2) && strcmp(db_rows_text(prev, 0, 2), rq->path) != 0) {
                http_error(rs, 422, "idempotency_key_reused",
                           "Idempotency-Key \"%s\" was used for %s; use a new key for %s", key,
                           db_rows_text(prev, 0, 2), rq->path);
            } else {
                rs->status = atoi(db_rows_text(prev, 0, 0));
                buf_reset(&rs->body);
                buf_puts(&rs->body, db_rows_text(prev, 0, 1));
            }
            db_rows_free(prev);
            goto done;
        }
        db_rows_free(prev);
    }
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%" PRId64, id);
    replay_one(rq, rs, c, idtext, reason);
    if (key && rs->status == 202) {
        char st[8];
        snprintf(st, sizeof st, "%d", rs->status);
        const char *pp[] = {who(rq), key, st, rs->body.data, rq->path};
        run_quietly(c, SQL_IDEM_PUT, 5, pp);
    }
done:
    if (locked) run_quietly(c, SQL_IDEM_UNLOCK, 2, kp);
    http_db_done(rq, c);
out:
    jsonv_free(body);
}

/* ---- POST /replay/batch ---------------------------------------------------------------- */

/* A positive integer from the body, else from the query string: 1 with *out, 0 when absent,
 * -1 when it is not one. */
static int positive_param(struct http_req *rq, const struct jsonv *body, const char *key,
                          int64_t *out)
{
    const struct jsonv *v = jsonv_get(body, key);
    const char *q = http_query(rq, key);
    if (v && v->type != JV_NULL) {
        if (v->type != JV_NUMBER || !v->is_int || v->i < 1) return -1;
        *out = v->i;
        return 1;
    }
    if (!q || !*q) return 0;
    return http_parse_id(q, out) ? 1 : -1;
}

static bool rate_param(struct http_req *rq, const struct jsonv *body, struct http_resp *rs,
                       long *rate)
{
    long cap = rq->cfg->replay.rate_per_s;
    int64_t r = 0;
    int got = positive_param(rq, body, "rate_per_s", &r);
    if (got < 0) {
        http_error(rs, 400, "bad_request", "rate_per_s must be a positive integer");
        return false;
    }
    /* a request may go slower than replay.rate_per_s */
    *rate = got && r < cap ? (long)r : cap;
    return true;
}

void api_batch_job(struct http_req *rq, struct http_resp *rs, const struct jsonv *body,
                   const char *kind, const char *requested_by)
{
    const struct jsonv *ids = jsonv_get(body, "ids");
    const char *reason = NULL;
    long rate;
    struct buf arr = {0}, params = {0};
    if (!opt_str(body, "reason", &reason, rs) || !rate_param(rq, body, rs, &rate)) goto out;
    if (!ids || ids->type != JV_ARRAY || ids->n == 0) {
        http_error(rs, 400, "bad_request", "ids must be a non-empty array of event ids");
        goto out;
    }
    if (ids->n > (size_t)rq->cfg->replay.max_batch_ids) {
        http_error(rs, 400, "bad_request", "%zu ids is over replay.max_batch_ids (%ld)", ids->n,
                   rq->cfg->replay.max_batch_ids);
        goto out;
    }
    buf_putc(&arr, '{');
    params_begin(&params, rq);
    buf_printf(&params, "\"rate_per_s\":%ld,\"ids\":[", rate);
    for (size_t i = 0; i < ids->n; i++) {
        const struct jsonv *v = &ids->items[i];
        if (v->type != JV_NUMBER || !v->is_int || v->i < 1) {
            http_error(rs, 400, "bad_request", "ids[%zu] is not a positive integer", i);
            goto out;
        }
        buf_printf(&arr, "%s%" PRId64, i ? "," : "", v->i);
        buf_printf(&params, "%s%" PRId64, i ? "," : "", v->i);
    }
    buf_putc(&arr, '}');
    buf_puts(&params, "]}");
    double deferred;
    if (!guard(rq, rs, kind, requested_by, reason, (long)ids->n, &params, &deferred)) goto out;
    struct pg_conn *c = http_db(rq, rs);
    if (!c) goto out;
    const char *p[] = {NULL, arr.data, rq->tenant_scope};
    start_bulk_job(rq, rs, c, kind, requested_by, reason, params.data, deferred,
                   SQL_JOB_ITEMS_BATCH, 3, p, 0, "total");
    http_db_done(rq, c);
out:
    buf_free(&arr);
    buf_free(&params);
}

static void h_replay_batch(struct http_req *rq, struct http_resp *rs)
{
    struct jsonv *body = http_json_body(rq, rs, true);
    if (!body) return;
    api_batch_job(rq, rs, body, "batch", who(rq));
    jsonv_free(body);
}

/* ---- POST /replay/range ---------------------------------------------------------------- */

/* An optional journal id from the body, else from the query string, as text in out (""
 * when absent). */
static bool id_param(struct http_req *rq, const struct jsonv *body, const char *key, char out[24],
                     struct http_resp *rs)
{
    int64_t id = 0;
    out[0] = 0;
    int got = positive_param(rq, body, key, &id);
    if (got < 0) {
        http_error(rs, 400, "bad_request", "%s must be a positive integer (a journal id)", key);
        return false;
    }
    if (got) snprintf(out, 24, "%" PRId64, id);
    return true;
}

/* start/end (ISO 8601) and from_id/to_id: a range needs both ends of one kind or the
 * other, or both kinds; the ends in order. */
static bool range_bounds(struct http_req *rq, struct http_resp *rs, struct pg_conn *c,
                         const char *start, const char *end, const char *from, const char *to)
{
    bool times = start || end, ids = *from || *to;
    if ((times && (!start || !end)) || (ids && (!*from || !*to)) || (!times && !ids)) {
        http_error(rs, 400, "bad_request",
                   "a range needs start and end (ISO 8601), or from_id and to_id (journal ids, "
                   "inclusive), or both");
        return false;
    }
    if (times && (!http_iso8601_like(start) || !http_iso8601_like(end))) {
        http_error(rs, 400, "bad_request",
                   "start and end must be ISO 8601 timestamps, e.g. 2026-11-27T08:00:00Z");
        return false;
    }
    if (ids && strtoll(from, NULL, 10) > strtoll(to, NULL, 10)) {
        http_error(rs, 400, "bad_request", "from_id must not be above to_id");
        return false;
    }
    if (!times) return true;
    const char *chk[] = {start, end};
    struct db_rows *order =
        http_exec(rq, rs, c, "SELECT $1::timestamptz < $2::timestamptz", 2, chk);
    if (!order) return false;
    bool before = db_rows_text(order, 0, 0)[0] == 't';
    db_rows_free(order);
    if (!before) http_error(rs, 400, "bad_request", "start must be before end");
    return before;
}

static void json_field(struct buf *b, const char *name, const char *value)
{
    buf_printf(b, ",\"%s\":", name);
    json_write_cstr(b, value);
}

void api_range_job(struct http_req *rq, struct http_resp *rs, const struct jsonv *body,
                   const char *kind, const char *requested_by)
{
    const char *start, *end, *topic, *tenant, *reason;
    char from[24], to[24];
    bool only_original, dry_run, confirm;
    long rate;
    struct buf params = {0};
    if (!param_str(rq, body, "start", &start, rs) || !param_str(rq, body, "end", &end, rs) ||
        !id_param(rq, body, "from_id", from, rs) || !id_param(rq, body, "to_id", to, rs) ||
        !param_str(rq, body, "topic", &topic, rs) || !param_str(rq, body, "tenant", &tenant, rs) ||
        !param_str(rq, body, "reason", &reason, rs) ||
        !opt_bool(rq, body, "only_original", true, &only_original, rs) ||
        !opt_bool(rq, body, "dry_run", false, &dry_run, rs) ||
        !opt_bool(rq, body, "confirm", false, &confirm, rs) || !rate_param(rq, body, rs, &rate))
        goto out;
    struct pg_conn *c = http_db(rq, rs);
    if (!c) goto out;
    if (!range_bounds(rq, rs, c, start, end, from, to)) goto done;
    const char *p[] = {start,
                       end,
                       topic,
                       tenant,
                       only_original ? "true" : "false",
                       rq->tenant_scope,
                       *from ? from : NULL,
                       *to ? to : NULL,
                       NULL};
    struct db_rows *cnt = http_exec(rq, rs, c, SQL_RANGE_COUNT, 8, p);
    if (!cnt) goto done;
    long matched = atol(db_rows_text(cnt, 0, 0));
    db_rows_free(cnt);
    if (dry_run) {
        buf_printf(&rs->body, "{\"matched\":%ld,\"dry_run\":true}", matched);
        goto done;
    }
    if (matched > rq->cfg->replay.confirm_above && !confirm) {
        http_error(rs, 422, "confirmation_required",
                   "the range matches %ld events, over replay.confirm_above (%ld): send "
                   "\"confirm\": true to replay them",
                   matched, rq->cfg->replay.confirm_above);
        goto done;
    }
    params_begin(&params, rq);
    buf_puts(&params, "\"start\":");
    json_write_cstr(&params, start);
    json_field(&params, "end", end);
    if (*from) buf_printf(&params, ",\"from_id\":%s,\"to_id\":%s", from, to);
    json_field(&params, "topic", topic);
    json_field(&params, "tenant", tenant);
    buf_printf(&params, ",\"only_original\":%s,\"rate_per_s\":%ld}",
               only_original ? "true" : "false", rate);
    double deferred;
    if (!guard(rq, rs, kind, requested_by, reason, matched, &params, &deferred)) goto done;
    start_bulk_job(rq, rs, c, kind, requested_by, reason, params.data, deferred,
                   SQL_JOB_ITEMS_RANGE, 9, p, 8, "matched");
done:
    http_db_done(rq, c);
out:
    buf_free(&params);
}

static void h_replay_range(struct http_req *rq, struct http_resp *rs)
{
    struct jsonv *body = http_json_body(rq, rs, false);
    if (!body) return;
    api_range_job(rq, rs, body, "range", who(rq));
    jsonv_free(body);
}

/* ---- jobs ------------------------------------------------------------------------------- */

static void h_jobs(struct http_req *rq, struct http_resp *rs)
{
    char lim[16];
    if (!http_query_limit(rq, rs, 50, 1000, lim)) return;
    static const char *const statuses[] = {"pending", "running",   "done",
                                           "failed",  "cancelled", NULL};
    const char *status;
    if (!http_query_choice(rq, rs, "status", statuses,
                           "pending, running, done, failed or cancelled", &status))
        return;
    const char *p[] = {lim, status, rq->tenant_scope};
    http_query_json(rq, rs, SQL_JOBS_LIST, 3, p, NULL);
}

static void h_job(struct http_req *rq, struct http_resp *rs)
{
    int64_t id;
    if (!path_id(rq, rs, &id)) return;
    const char *p[] = {rq->path_args[0], rq->tenant_scope};
    http_query_json(rq, rs, SQL_JOB_ONE, 2, p, "no such replay job");
}

static void h_job_cancel(struct http_req *rq, struct http_resp *rs)
{
    int64_t id;
    if (!path_id(rq, rs, &id)) return;
    struct pg_conn *c = http_db(rq, rs);
    if (!c) return;
    const char *p[] = {rq->path_args[0], rq->tenant_scope};
    struct db_rows *res = http_exec(rq, rs, c, SQL_JOB_CANCEL, 2, p);
    http_db_done(rq, c);
    if (!res) return;
    if (db_rows_count(res) == 0) {
        http_error(rs, 404, "not_found", "no such replay job");
    } else if (atoi(db_rows_text(res, 0, 0)) == 0) {
        http_error(rs, 409, "conflict", "the job has already ended (%s)", db_rows_text(res, 0, 1));
    } else {
        metrics_job_finished(db_rows_text(res, 0, 2), "cancelled");
        db_rows_free(res);
        log_info("replay job %s cancelled by %s", rq->path_args[0], who(rq));
        http_query_json(rq, rs, SQL_JOB_ONE, 2, p, "no such replay job");
        return;
    }
    db_rows_free(res);
}

/* ---- DLQ -------------------------------------------------------------------------------- */

/* The DLQ entry's status, or NULL with 404 (also for entries of other tenants). */
static char *dlq_status(struct http_req *rq, struct http_resp *rs, struct pg_conn *c)
{
    const char *p[] = {rq->path_args[0], rq->tenant_scope};
    struct db_rows *res = http_exec(rq, rs, c, SQL_DLQ_STATUS, 2, p);
    if (!res) return NULL;
    char *st = db_rows_count(res) ? xstrdup(db_rows_text(res, 0, 0)) : NULL;
    if (!st) http_error(rs, 404, "not_found", "no such DLQ entry");
    db_rows_free(res);
    return st;
}

static void h_dlq_retry_one(struct http_req *rq, struct http_resp *rs)
{
    int64_t id;
    if (!path_id(rq, rs, &id)) return;
    struct jsonv *body = http_json_body(rq, rs, false);
    if (!body) return;
    const char *reason = NULL;
    if (!opt_str(body, "reason", &reason, rs)) {
        jsonv_free(body);
        return;
    }
    struct pg_conn *c = http_db(rq, rs);
    if (!c) {
        jsonv_free(body);
        return;
    }
    char *st = dlq_status(rq, rs, c);
    if (st && (strcmp(st, "resolved") == 0 || strcmp(st, "discarded") == 0)) {
        http_error(rs, 409, "conflict", "DLQ entry %s is %s; there is nothing to retry",
                   rq->path_args[0], st);
    } else if (st) {
        char *tag = replay_tag(rq, rs, "dlq_retry", who(rq), reason);
        struct buf params = {0};
        params_begin(&params, rq);
        buf_printf(&params, "\"dlq_id\":%s,\"sync\":true}", rq->path_args[0]);
        int64_t job = tag ? create_job(rq, rs, c, "dlq_retry", tag, who(rq), reason, params.data,
                                       "running", 1)
                          : 0;
        buf_free(&params);
        if (job) {
            char j[24];
            snprintf(j, sizeof j, "%" PRId64, job);
            const char *p2[] = {j, NULL, rq->path_args[0]};
            struct db_rows *r2 = http_exec(rq, rs, c, SQL_JOB_ITEM_ONE, 3, p2);
            if (r2) {
                db_rows_free(r2);
                run_single(rq, rs, c, job, tag, "dlq_id", rq->path_args[0]);
            }
        }
        free(tag);
    }
    free(st);
    http_db_done(rq, c);
    jsonv_free(body);
}

static void h_dlq_retry_filter(struct http_req *rq, struct http_resp *rs)
{
    struct jsonv *body = http_json_body(rq, rs, false);
    if (!body) return;
    const char *reason, *topic, *tenant, *why;
    long rate;
    struct buf params = {0};
    if (!param_str(rq, body, "reason", &reason, rs) || !param_str(rq, body, "topic", &topic, rs) ||
        !param_str(rq, body, "tenant", &tenant, rs) || !opt_str(body, "why", &why, rs) ||
        !rate_param(rq, body, rs, &rate))
        goto out;
    struct pg_conn *c = http_db(rq, rs);
    if (!c) goto out;
    params_begin(&params, rq);
    buf_puts(&params, "\"reason\":");
    json_write_cstr(&params, reason);
    buf_puts(&params, ",\"topic\":");
    json_write_cstr(&params, topic);
    buf_puts(&params, ",\"tenant\":");
    json_write_cstr(&params, tenant);
    buf_printf(&params, ",\"rate_per_s\":%ld}", rate);
    double deferred;
    if (!guard(rq, rs, "dlq_retry", who(rq), why, -1, &params, &deferred)) {
        http_db_done(rq, c);
        goto out;
    }
    const char *p[] = {NULL, reason, topic, tenant, rq->tenant_scope};
    start_bulk_job(rq, rs, c, "dlq_retry", who(rq), why, params.data, deferred, SQL_JOB_ITEMS_DLQ,
                   5, p, 0, "total");
    http_db_done(rq, c);
out:
    buf_free(&params);
    jsonv_free(body);
}

static void h_dlq_discard(struct http_req *rq, struct http_resp *rs)
{
    int64_t id;
    if (!path_id(rq, rs, &id)) return;
    struct pg_conn *c = http_db(rq, rs);
    if (!c) return;
    const char *p[] = {rq->path_args[0], rq->tenant_scope};
    struct db_rows *res = http_exec(rq, rs, c, SQL_DLQ_DISCARD, 2, p);
    if (res && db_rows_count(res) == 1) {
        buf_reset(&rs->body);
        buf_puts(&rs->body, db_rows_text(res, 0, 0));
        log_info("DLQ entry %s discarded by %s", rq->path_args[0], who(rq));
    } else if (res) {
        char *st = dlq_status(rq, rs, c);
        if (st) http_error(rs, 409, "conflict", "DLQ entry %s is already %s", rq->path_args[0], st);
        free(st);
    }
    db_rows_free(res);
    http_db_done(rq, c);
}

const struct http_route api_replay_routes[] = {
    {"POST", "/replay/batch", false, h_replay_batch, "rate_per_s", BATCH_FIELDS},
    {"POST", "/replay/range", false, h_replay_range, RANGE_FIELDS, RANGE_FIELDS},
    {"GET", "/replay/jobs", false, h_jobs, "limit status", NULL},
    {"GET", "/replay/jobs/{id}", false, h_job, NULL, NULL},
    {"POST", "/replay/jobs/{id}/cancel", false, h_job_cancel, NULL, NULL},
    {"POST", "/replay/{id}", false, h_replay_one, NULL, "reason"},
    {"POST", "/dlq/retry", false, h_dlq_retry_filter, "reason topic tenant rate_per_s",
     "reason topic tenant why rate_per_s"},
    {"POST", "/dlq/{id}/retry", false, h_dlq_retry_one, NULL, "reason"},
    {"POST", "/dlq/{id}/discard", false, h_dlq_discard, NULL, NULL},
    {NULL, NULL, false, NULL, NULL, NULL},
};
