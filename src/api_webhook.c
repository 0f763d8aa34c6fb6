/* POST /webhooks/replay: a replay triggered by another system, authenticated by an
 * HMAC-SHA256 signature over "timestamp.body" with webhooks.secret (CONTRACT section 5).
 * A signature is accepted once: it is kept in PostgreSQL (webhook_signatures), so a
 * captured request cannot be replayed, not even against another instance or after a
 * restart. It is recorded in the transaction that creates its job (api_replay.c), so a
 * crash in between cannot leave a used signature without its job. The job is tagged by the
 * replay_source hook (default "webhook"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_replay.h"
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

static void h_webhook(struct http_req *rq, struct http_resp *rs)
{
    const char *secret = rq->cfg->webhooks.secret;
    if (!secret || !*secret) {
        http_error(rs, 404, "not_found", "webhooks are off: webhooks.secret is not set");
        return;
    }
    char sig[65];
    if (!verify(rq, rs, secret, sig)) return;
    struct jsonv *body = http_json_body(rq, rs, true);
    if (!body) return;
    PGconn *c = http_db(rq, rs);
    if (!c) {
        jsonv_free(body);
        return;
    }
    const char *p[] = {sig};
    PGresult *seen = http_exec(rq, rs, c, SQL_WEBHOOK_USED, 1, p);
    bool used = seen && PQntuples(seen) > 0;
    PQclear(seen);
    http_db_done(rq, c);
    if (!seen) {
        jsonv_free(body);
        return;
    }
    if (used) {
        api_webhook_replayed(rs);
        jsonv_free(body);
        return;
    }
    /* recorded with the job (start_bulk_job), or below when replay_guard refused it; a
     * request that did nothing else may be corrected and signed again */
    rq->webhook_sig = sig;
    if (jsonv_get(body, "ids"))
        api_batch_job(rq, rs, body, "webhook", "webhook");
    else
        api_range_job(rq, rs, body, "webhook", "webhook");
    if (rs->status == 422) {
        c = http_db(rq, rs);
        if (c) {
            PQclear(PQexecParams(c, SQL_WEBHOOK_SEEN, 1, NULL, p, NULL, NULL, 0));
            http_db_done(rq, c);
        }
    }
    rq->webhook_sig = NULL;
    jsonv_free(body);
}

const struct http_route api_webhook_routes[] = {
    {"POST", "/webhooks/replay", true, h_webhook},
    {NULL, NULL, false, NULL},
};
