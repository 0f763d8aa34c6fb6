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

/* A key of the ring, with the SHA-256 states of HMAC's inner and outer hash after the
 * key block (RFC 2104): a MAC then costs two copies of a state and four compressions,
 * not a new HMAC context (and its algorithm fetch) per record. NULL states: computed by
 * HMAC() instead. */
struct ring_key {
    struct replay_key k;
    EVP_MD_CTX *inner, *outer;
};

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static struct ring_key *ring;
static size_t nring;

#define SHA256_BLOCK 64

static void pads_free(struct ring_key *r)
{
    EVP_MD_CTX_free(r->inner);
    EVP_MD_CTX_free(r->outer);
    r->inner = r->outer = NULL;
}

static void pads_init(struct ring_key *r)
{
    if (r->k.len > SHA256_BLOCK) return; /* a longer key is hashed first: HMAC() does it */
    unsigned char ipad[SHA256_BLOCK], opad[SHA256_BLOCK];
    for (size_t i = 0; i < SHA256_BLOCK; i++) {
        unsigned char b = i < r->k.len ? r->k.secret[i] : 0;
        ipad[i] = b ^ 0x36;
        opad[i] = b ^ 0x5c;
    }
    r->inner = EVP_MD_CTX_new();
    r->outer = EVP_MD_CTX_new();
    if (!r->inner || !r->outer || EVP_DigestInit_ex(r->inner, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(r->inner, ipad, sizeof ipad) != 1 ||
        EVP_DigestInit_ex(r->outer, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(r->outer, opad, sizeof opad) != 1)
        pads_free(r);
    OPENSSL_cleanse(ipad, sizeof ipad);
    OPENSSL_cleanse(opad, sizeof opad);
}

void replay_auth_set_keys(const struct replay_key *keys, size_t n)
{
    struct ring_key *copy = n ? xcalloc(n, sizeof *copy) : NULL;
    for (size_t i = 0; i < n; i++) {
        copy[i].k = keys[i];
        pads_init(&copy[i]);
    }
    pthread_rwlock_wrlock(&lock);
    struct ring_key *old = ring;
    size_t nold = nring;
    ring = copy;
    nring = n;
    pthread_rwlock_unlock(&lock);
    for (size_t i = 0; i < nold; i++)
        pads_free(&old[i]);
    if (old) OPENSSL_cleanse(old, nold * sizeof *old);
    free(old);
}

size_t replay_auth_key_count(void)
{
    pthread_rwlock_rdlock(&lock);
    size_t n = nring;
    pthread_rwlock_unlock(&lock);
    return n;
}

/* HMAC-SHA256 from the precomputed states: H(opad-state, H(ipad-state, msg)). */
static bool mac_pads(const struct ring_key *r, const unsigned char *msg, size_t len,
                     unsigned char mac[32])
{
    if (!r->inner || !r->outer) return false;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned char inner[32];
    unsigned int n = 0;
    bool ok = c && EVP_MD_CTX_copy_ex(c, r->inner) == 1 && EVP_DigestUpdate(c, msg, len) == 1 &&
              EVP_DigestFinal_ex(c, inner, &n) == 1 && n == 32 &&
              EVP_MD_CTX_copy_ex(c, r->outer) == 1 && EVP_DigestUpdate(c, inner, 32) == 1 &&
              EVP_DigestFinal_ex(c, mac, &n) == 1 && n == 32;
    EVP_MD_CTX_free(c);
    return ok;
}

/* HMAC-SHA256 of the message naming what the replay is, as lower-case hex (65 bytes). */
static void mac_hex(const struct ring_key *r, int64_t job_id, bool dlq, int64_t id, char hex[65])
{
    char msg[96];
    int len = snprintf(msg, sizeof msg, "eventsink-replay-v1|job=%" PRId64 "|%s=%" PRId64, job_id,
                       dlq ? "dlq" : "event", id);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 32;
    if (!mac_pads(r, (const unsigned char *)msg, (size_t)len, mac))
        HMAC(EVP_sha256(), r->k.secret, (int)r->k.len, (const unsigned char *)msg, (size_t)len, mac,
             &maclen);
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 15];
    }
    hex[64] = '\0';
}

bool replay_auth_sign(int64_t job_id, bool dlq, int64_t id, char out[REPLAY_SIG_MAX])
{
    pthread_rwlock_rdlock(&lock);
    const struct ring_key *newest = NULL;
    for (size_t i = 0; i < nring; i++)
        if (!newest || ring[i].k.id > newest->k.id) newest = &ring[i];
    bool ok = newest != NULL;
    if (ok) {
        char hex[65];
        mac_hex(newest, job_id, dlq, id, hex);
        snprintf(out, REPLAY_SIG_MAX, "v1.%d.%s", newest->k.id, hex);
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
        if (ring[i].k.id != key_id) continue;
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
