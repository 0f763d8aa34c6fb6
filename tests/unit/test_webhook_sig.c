/* webhook_sig.c: HMAC-SHA256 over "timestamp.body", tolerance, malformed input. The
 * expected signature is computed here with OpenSSL's one-shot HMAC(), independently of
 * the EVP_MAC code under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "webhook_sig.h"

static void sign(const char *secret, const char *ts, const char *body, char out[72])
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s.%s", ts, body);
    unsigned char mac[32];
    unsigned int len = 32;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, (size_t)n, mac, &len);
    strcpy(out, "sha256=");
    for (int i = 0; i < 32; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", mac[i]);
}

static void test_good_and_bad(void **state)
{
    (void)state;
    const char *body = "{\"ids\":[1,2,3]}";
    char sig[72], hex[65];
    long long skew = -1;
    sign("s3cret", "1800000000", body, sig);
    assert_int_equal(webhook_sig_verify("s3cret", "1800000000", sig, body, strlen(body), 300,
                                        1800000100, &skew, hex),
                     WEBHOOK_SIG_OK);
    assert_int_equal(skew, 100);
    assert_string_equal(hex, sig + 7);
    /* another secret, another body, another timestamp, one flipped digit */
    assert_int_equal(webhook_sig_verify("other", "1800000000", sig, body, strlen(body), 300,
                                        1800000000, &skew, hex),
                     WEBHOOK_SIG_MISMATCH);
    assert_int_equal(
        webhook_sig_verify("s3cret", "1800000000", sig, "{}", 2, 300, 1800000000, &skew, hex),
        WEBHOOK_SIG_MISMATCH);
    assert_int_equal(webhook_sig_verify("s3cret", "1800000001", sig, body, strlen(body), 300,
                                        1800000000, &skew, hex),
                     WEBHOOK_SIG_MISMATCH);
    char flipped[72];
    strcpy(flipped, sig);
    flipped[10] = flipped[10] == 'a' ? 'b' : 'a';
    assert_int_equal(webhook_sig_verify("s3cret", "1800000000", flipped, body, strlen(body), 300,
                                        1800000000, &skew, hex),
                     WEBHOOK_SIG_MISMATCH);
}

static void test_time_and_format(void **state)
{
    (void)state;
    const char *body = "{}";
    char sig[72], hex[65];
    long long skew;
    sign("k", "1800000000", body, sig);
    /* outside the tolerance, both ways */
    assert_int_equal(
        webhook_sig_verify("k", "1800000000", sig, body, 2, 300, 1800000301, &skew, hex),
        WEBHOOK_SIG_STALE);
    assert_int_equal(
        webhook_sig_verify("k", "1800000000", sig, body, 2, 300, 1799999699, &skew, hex),
        WEBHOOK_SIG_STALE);
    assert_int_equal(webhook_sig_verify("k", NULL, sig, body, 2, 300, 1800000000, &skew, hex),
                     WEBHOOK_SIG_MISSING);
    assert_int_equal(
        webhook_sig_verify("k", "1800000000", NULL, body, 2, 300, 1800000000, &skew, hex),
        WEBHOOK_SIG_MISSING);
    const char *bad_ts[] = {"", "abc", "18e8", "-5", "1800000000x", "99999999999999999999", NULL};
    for (const char **t = bad_ts; *t; t++)
        assert_int_equal(webhook_sig_verify("k", *t, sig, body, 2, 300, 1800000000, &skew, hex),
                         WEBHOOK_SIG_BAD_TIME);
    const char *bad_sig[] = {"", "sha256=", "sha1=abcd", sig + 7, "sha256=zz", NULL};
    for (const char **s = bad_sig; *s; s++)
        assert_int_equal(
            webhook_sig_verify("k", "1800000000", *s, body, 2, 300, 1800000000, &skew, hex),
            WEBHOOK_SIG_MISMATCH);
    /* upper-case hex is the same signature */
    char upper[72];
    strcpy(upper, sig);
    for (char *p = upper + 7; *p; p++)
        if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 32);
    assert_int_equal(
        webhook_sig_verify("k", "1800000000", upper, body, 2, 300, 1800000000, &skew, hex),
        WEBHOOK_SIG_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_and_bad),
        cmocka_unit_test(test_time_and_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
