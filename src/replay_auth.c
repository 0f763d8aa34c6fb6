#include "replay_auth.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "buf.h"

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static struct replay_key *ring;
static size_t nring;

void replay_auth_set_keys(const struct replay_key *keys, size_t n)
{
    struct replay_key *copy = n ? xcalloc(n, sizeof *copy) : NULL;
    if (n) memcpy(copy, keys, n * sizeof *copy);
    pthread_rwlock_wrlock(&lock);
    struct replay_key *old = ring;
    ring = copy;
    nring = n;
    pthread_rwlock_unlock(&lock);
    if (old) OPENSSL_cleanse(old, sizeof *old);
    free(old);
}

size_t replay_auth_key_count(void)
{
    pthread_rwlock_rdlock(&lock);
    size_t n = nring;
    pthread_rwlock_unlock(&lock);
    return n;
}

/* HMAC-SHA256 of the message naming what the replay is, as lower-case hex (65 bytes). */
static void mac_hex(const struct replay_key *k, int64_t job_id, bool dlq, int64_t id, char hex[65])
{
    char msg[96];
    int len = snprintf(msg, sizeof msg, "eventsink-replay-v1|job=%" PRId64 "|%s=%" PRId64, job_id,
                       dlq ? "dlq" : "event", id);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), k->secret, (int)k->len, (const unsigned char *)msg, (size_t)len, mac,
         &maclen);
    for (unsigned i = 0; i < maclen && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    hex[64] = '\0';
}

bool replay_auth_sign(int64_t job_id, bool dlq, int64_t id, char out[REPLAY_SIG_MAX])
{
    pthread_rwlock_rdlock(&lock);
    const struct replay_key *newest = NULL;
    for (size_t i = 0; i < nring; i++)
        if (!newest || ring[i].id > newest->id) newest = &ring[i];
    bool ok = newest != NULL;
    if (ok) {
        char hex[65];
        mac_hex(newest, job_id, dlq, id, hex);
        snprintf(out, REPLAY_SIG_MAX, "v1.%d.%s", newest->id, hex);
    }
    pthread_rwlock_unlock(&lock);
    return ok;
}

/* The last value of header `name` as a positive decimal id, 0 when absent or not one. */
static int64_t header_id(const struct record *r, const char *name)
{
    int64_t v = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct record_header *h = &r->headers[i];
        if (strcmp(h->name, name) != 0 || !h->value) continue;
        char text[24];
        if (h->value_len == 0 || h->value_len >= sizeof text) {
            v = 0;
            continue;
        }
        memcpy(text, h->value, h->value_len);
        text[h->value_len] = '\0';
        char *end;
        long long n = strtoll(text, &end, 10);
        v = *end == '\0' && n > 0 ? n : 0;
    }
    return v;
}

static const struct record_header *last_header(const struct record *r, const char *name)
{
    const struct record_header *found = NULL;
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) == 0) found = &r->headers[i];
    return found;
}

/* Verifies "v1.<key id>.<hex>" for (job, dlq, id). */
static enum replay_auth_result verify(const struct record_header *sig, int64_t job, bool dlq,
                                      int64_t id)
{
    if (!sig || !sig->value || sig->value_len < 8 || sig->value_len >= REPLAY_SIG_MAX)
        return REPLAY_AUTH_UNVERIFIED;
    char text[REPLAY_SIG_MAX];
    memcpy(text, sig->value, sig->value_len);
    text[sig->value_len] = '\0';
    int key_id = 0, used = 0;
    if (sscanf(text, "v1.%d.%n", &key_id, &used) != 1 || used == 0 || strlen(text + used) != 64)
        return REPLAY_AUTH_UNVERIFIED;
    enum replay_auth_result res = REPLAY_AUTH_UNKNOWN_KEY;
    pthread_rwlock_rdlock(&lock);
    for (size_t i = 0; i < nring; i++) {
        if (ring[i].id != key_id) continue;
        char hex[65];
        mac_hex(&ring[i], job, dlq, id, hex);
        res = CRYPTO_memcmp(hex, text + used, 64) == 0 ? REPLAY_AUTH_VERIFIED
                                                       : REPLAY_AUTH_UNVERIFIED;
        break;
    }
    pthread_rwlock_unlock(&lock);
    return res;
}

enum replay_auth_result replay_auth_check(const struct record *r, struct decision *d)
{
    bool marked = d->replay_source || d->replayed_from_event_id || d->replayed_from_dlq_id ||
                  d->replay_job_id;
    if (!marked) {
        d->replay_verified = -1;
        return REPLAY_AUTH_NONE;
    }
    enum replay_auth_result res = REPLAY_AUTH_UNVERIFIED;
    /* the signed values are the headers' (eventsink sets both, the same); the decision
     * must agree with them, whatever the payload or a policy said */
    int64_t job = header_id(r, "x-replay-job-id");
    int64_t dlq = header_id(r, "x-replayed-from-dlq-id");
    int64_t event = header_id(r, "x-replayed-from-event-id");
    bool one_target = (dlq != 0) != (event != 0);
    if (job && one_target && d->replay_job_id == job &&
        (dlq ? d->replayed_from_dlq_id == dlq && !d->replayed_from_event_id
             : d->replayed_from_event_id == event && !d->replayed_from_dlq_id))
        res = verify(last_header(r, REPLAY_SIG_HEADER), job, dlq != 0, dlq ? dlq : event);
    d->replay_verified = res == REPLAY_AUTH_VERIFIED ? 1 : 0;
    if (res != REPLAY_AUTH_VERIFIED) {
        d->replay_job_id = 0;
        d->replayed_from_dlq_id = 0;
    }
    return res;
}
