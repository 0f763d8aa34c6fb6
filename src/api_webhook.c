/* POST /webhooks/replay: a replay triggered by another system, authenticated by an
 * HMAC-SHA256 signature over "timestamp.body" with webhooks.secret (CONTRACT section 5).
 * A signature is accepted once: it is kept in PostgreSQL (webhook_signatures), so a
 * captured request cannot be replayed, not even against another instance or after a
 * restart. The job is tagged by the replay_source hook (default "webhook"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "api_replay.h"
#include "http.h"
#include "log.h"

#define SIGNATURE_PREFIX "sha256="

#define SQL_WEBHOOK_SEEN                                                                           \
    "INSERT INTO webhook_signatures (signature) VALUES ($1) ON CONFLICT DO NOTHING"                \
    " RETURNING 1"
#define SQL_WEBHOOK_FORGET "DELETE FROM webhook_signatures WHERE signature = $1"

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Verifies the signature in constant time. False with a 401 answer. */
static bool verify(struct http_req *rq, struct http_resp *rs, const char *secret, char *sig_hex)
{
    const char *ts = http_header(rq, "X-Eventsink-Timestamp");
    const char *sig = http_header(rq, "X-Eventsink-Signature");
    if (!ts || !sig) {
        http_error(rs, 401, "unauthorized",
                   "X-Eventsink-Timestamp and X-Eventsink-Signature are required");
        return false;
    }
    char *end;
    long long t = strtoll(ts, &end, 10);
    if (!*ts || *end || t <= 0) {
        http_error(rs, 401, "unauthorized", "X-Eventsink-Timestamp must be unix seconds");
        return false;
    }
    long long skew = (long long)time(NULL) - t;
    if (skew < 0) skew = -skew;
    if (skew > rq->cfg->webhooks.tolerance_s) {
        http_error(rs, 401, "unauthorized",
                   "the timestamp is %lld s away from now, over webhooks.tolerance_s (%ld)", skew,
                   rq->cfg->webhooks.tolerance_s);
        return false;
    }
    unsigned char given[32];
    size_t plen = strlen(SIGNATURE_PREFIX);
    bool well_formed = strncmp(sig, SIGNATURE_PREFIX, plen) == 0 && strlen(sig) == plen + 64;
    for (size_t i = 0; well_formed && i < 32; i++) {
        int a = hexval(sig[plen + 2 * i]), b = hexval(sig[plen + 2 * i + 1]);
        if (a < 0 || b < 0) well_formed = false;
        given[i] = (unsigned char)(a * 16 + b);
    }
    /* HMAC-SHA256(secret, timestamp + "." + body) */
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (!ctx || !EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params) ||
        !EVP_MAC_update(ctx, (const unsigned char *)ts, strlen(ts)) ||
        !EVP_MAC_update(ctx, (const unsigned char *)".", 1) ||
        !EVP_MAC_update(ctx, (const unsigned char *)(rq->body.data ? rq->body.data : ""),
                        rq->body.len) ||
        !EVP_MAC_final(ctx, mac, &maclen, sizeof mac))
        maclen = 0;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(hmac);
    if (!well_formed || maclen != 32 || CRYPTO_memcmp(mac, given, 32) != 0) {
        http_error(rs, 401, "unauthorized", "the signature does not match");
        return false;
    }
    for (int i = 0; i < 32; i++)
        snprintf(sig_hex + 2 * i, 3, "%02x", mac[i]);
    return true;
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
    PGresult *seen = http_exec(rq, rs, c, SQL_WEBHOOK_SEEN, 1, p);
    bool first = seen && PQntuples(seen) == 1;
    PQclear(seen);
    http_db_done(rq, c);
    if (!seen) {
        jsonv_free(body);
        return;
    }
    if (!first) {
        log_warn("webhook: a signature was presented a second time; refused");
        http_error(rs, 409, "replayed_signature", "this signature was already used");
        jsonv_free(body);
        return;
    }
    if (jsonv_get(body, "ids"))
        api_batch_job(rq, rs, body, "webhook", "webhook");
    else
        api_range_job(rq, rs, body, "webhook", "webhook");
    if (rs->status >= 400 && rs->status != 422) {
        /* a request that did nothing may be corrected and signed again; keep none of it */
        c = http_db(rq, rs);
        if (c) {
            PQclear(PQexecParams(c, SQL_WEBHOOK_FORGET, 1, NULL, p, NULL, NULL, 0));
            http_db_done(rq, c);
        }
    }
    jsonv_free(body);
}

const struct http_route api_webhook_routes[] = {
    {"POST", "/webhooks/replay", true, h_webhook},
    {NULL, NULL, false, NULL},
};
