/* POST /webhooks/replay: a replay triggered by another system, authenticated by an
 * HMAC-SHA256 signature over "timestamp.body" with webhooks.secret (CONTRACT section 5).
 * A signature is accepted once: it is kept in PostgreSQL (webhook_signatures), so a
 * captured request cannot be replayed, not even against another instance or after a
 * restart. It is recorded in the transaction that creates its job (api_replay.c), so a
 * crash in between cannot leave a used signature without its job; a signed request that
 * creates no job (a dry run, a refusal) records it too, after its answer is known. The job is
 * tagged by the replay_source hook (default "webhook"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_replay.h"
#include "db_rows.h"
#include "http.h"
#include "log.h"
#include "replay_jobs_sql.h"
#include "webhook_sig.h"

#define SQL_WEBHOOK_USED "SELECT 1 FROM webhook_signatures WHERE signature = $1"

/* Verifies the signature; false with a 401 answer. */
static bool verify(struct http_req *rq, struct http_resp *rs, const char *secret, char *sig_hex)
{
    long long skew = 0;
    switch (webhook_sig_verify(
        secret, http_header(rq, "X-Eventsink-Timestamp"), http_header(rq, "X-Eventsink-Signature"),
        rq->body.data, rq->body.len, rq->cfg->webhooks.tolerance_s, time(NULL), &skew, sig_hex)) {
    case WEBHOOK_SIG_OK:
        return true;
    case WEBHOOK_SIG_MISSING:
        http_error(rs, 401, "unauthorized",
                   "X-Eventsink-Timestamp and X-Eventsink-Signature are required");
        return false;
    case WEBHOOK_SIG_BAD_TIME:
        http_error(rs, 401, "unauthorized", "X-Eventsink-Timestamp must be unix seconds");
        return false;
    case WEBHOOK_SIG_STALE:
        http_error(rs, 401, "unauthorized",
                   "the timestamp is %lld s away from now, over webhooks.tolerance_s (%ld)", skew,
                   rq->cfg->webhooks.tolerance_s);
        return false;
    case WEBHOOK_SIG_MISMATCH:
    default:
        http_error(rs, 401, "unauthorized", "the signature does not match");
        return false;
    }
}

/* Records a signature whose request created no job (a dry run, a refusal): every signed
 * request uses its signature up (CONTRACT 9.3). When another request recorded it first,
 * the answer becomes 409; when PostgreSQL cannot record it, 503 (the answer could be had
 * again otherwise). */
static void record_signature(struct http_req *rq, struct http_resp *rs, const char *sig)
{
    struct http_resp tmp = {0};
    struct pg_conn *c = http_db(rq, &tmp);
    if (c) {
        const char *p[] = {sig};
        struct db_rows *res = http_exec(rq, &tmp, c, SQL_WEBHOOK_SEEN, 1, p);
        if (res && db_rows_count(res) == 0) api_webhook_replayed(&tmp);
        db_rows_free(res);
        http_db_done(rq, c);
    }
    if (tmp.status) {
        rs->status = tmp.status;
        buf_reset(&rs->body);
        buf_append(&rs->body, tmp.body.data, tmp.body.len);
    }
    buf_free(&tmp.body);
}

static void run_webhook(struct http_req *rq, struct http_resp *rs, const char *sig)
{
    struct jsonv *body = http_json_body(rq, rs, true);
    if (!body) return;
    bool ids = jsonv_get(body, "ids") != NULL;
    if (!http_body_known(rq, rs, body, ids ? BATCH_FIELDS : RANGE_FIELDS)) {
        jsonv_free(body);
        return;
    }
    struct pg_conn *c = http_db(rq, rs);
    if (!c) {
        jsonv_free(body);
        return;
    }
    const char *p[] = {sig};
    struct db_rows *seen = http_exec(rq, rs, c, SQL_WEBHOOK_USED, 1, p);
    bool used = seen && db_rows_count(seen) > 0;
    db_rows_free(seen);
    http_db_done(rq, c);
    if (seen && used) api_webhook_replayed(rs);
    if (!seen || used) {
        jsonv_free(body);
        return;
    }
    /* a job records the signature in the transaction that creates it (start_bulk_job) */
    rq->webhook_sig = sig;
    if (ids)
        api_batch_job(rq, rs, body, "webhook", "webhook");
    else
        api_range_job(rq, rs, body, "webhook", "webhook");
    rq->webhook_sig = NULL;
    jsonv_free(body);
}

static void h_webhook(struct http_req *rq, struct http_resp *rs)
{
    const char *secret = rq->cfg->webhooks.secret;
    if (!secret || !*secret) {
        http_error(rs, 404, "not_found", "webhooks are off: webhooks.secret is not set");
        return;
    }
    char sig[65];
    if (!verify(rq, rs, secret, sig)) return;
    run_webhook(rq, rs, sig);
    /* whatever else it was (a dry run, a 400, a 422 of replay_guard), the signed request
     * used its signature up; only a job (202) has recorded it already, and a 5xx did
     * nothing and may be sent again */
    if (rs->status != 202 && rs->status != 409 && rs->status < 500) record_signature(rq, rs, sig);
}

const struct http_route api_webhook_routes[] = {
    /* the body is checked against its form (ids or a range) by h_webhook; nothing comes
     * from the query string: it is not signed */
    {"POST", "/webhooks/replay", true, h_webhook, NULL, BATCH_FIELDS " " RANGE_FIELDS},
    {NULL, NULL, false, NULL, NULL, NULL},
};
