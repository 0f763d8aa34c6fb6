/* replay_auth.c: the signature is HMAC-SHA256 exactly as OpenSSL's HMAC() computes it,
 * for keys shorter and longer than SHA-256's block, across a key rotation. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "replay_auth.h"

static void expected(const struct replay_key *k, int64_t job, bool dlq, int64_t id, char *out)
{
    char msg[96];
    int len = snprintf(msg, sizeof msg, "eventsink-replay-v1|job=%" PRId64 "|%s=%" PRId64, job,
                       dlq ? "dlq" : "event", id);
    unsigned char mac[32];
    unsigned int n = 0;
    HMAC(EVP_sha256(), k->secret, (int)k->len, (const unsigned char *)msg, (size_t)len, mac, &n);
    int at = snprintf(out, REPLAY_SIG_MAX, "v1.%d.", k->id);
    for (unsigned int i = 0; i < n; i++)
        at += snprintf(out + at, (size_t)(REPLAY_SIG_MAX - at), "%02x", mac[i]);
}

static void test_signatures_are_openssl_hmac_sha256(void **state)
{
    (void)state;
    struct replay_key keys[2] = {{.id = 1, .len = 32}, {.id = 2, .len = 64}};
    for (size_t i = 0; i < 64; i++) {
        keys[0].secret[i] = (unsigned char)(i * 7 + 1);
        keys[1].secret[i] = (unsigned char)(255 - i);
    }
    for (size_t ring = 1; ring <= 2; ring++) { /* the newest key signs */
        replay_auth_set_keys(keys, ring);
        for (int64_t job = 1; job < 2000; job += 37)
            for (int dlq = 0; dlq < 2; dlq++) {
                char got[REPLAY_SIG_MAX], want[REPLAY_SIG_MAX];
                assert_true(replay_auth_sign(job, dlq, job * 1000 + 3, got));
                expected(&keys[ring - 1], job, dlq, job * 1000 + 3, want);
                assert_string_equal(got, want);
            }
    }
    replay_auth_set_keys(NULL, 0);
    char none[REPLAY_SIG_MAX];
    assert_false(replay_auth_sign(1, false, 1, none));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signatures_are_openssl_hmac_sha256),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
