/* Unit tests for src/utf8.c: RFC 3629 validation and the offset of the first bad byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "utf8.h"

#define SENTINEL ((size_t)0xdeadbeef)

static void expect_valid(const char *s, size_t n)
{
    size_t at = SENTINEL;
    if (!utf8_valid(s, n, &at)) fail_msg("expected valid UTF-8 (%zu bytes), bad at %zu", n, at);
    assert_true(utf8_valid(s, n, NULL));
}

static void expect_bad(const char *s, size_t n, size_t bad_at)
{
    size_t at = SENTINEL;
    if (utf8_valid(s, n, &at)) fail_msg("expected invalid UTF-8 (%zu bytes)", n);
    if (at != bad_at) fail_msg("bad_at: expected %zu, got %zu", bad_at, at);
    assert_false(utf8_valid(s, n, NULL)); /* NULL bad_at is allowed */
}

#define VALID(lit) expect_valid(lit, sizeof(lit) - 1)
#define BAD(lit, at) expect_bad(lit, sizeof(lit) - 1, at)

static void test_empty_and_ascii(void **state)
{
    (void)state;
    expect_valid("", 0);
    VALID("a");
    VALID("hello, world");
    VALID("\x7f");
    /* NUL bytes are valid UTF-8 (callers refuse them separately) */
    VALID("a\0b");
    static const char zeros[16] = {0};
    expect_valid(zeros, sizeof zeros);
}

static void test_valid_multibyte(void **state)
{
    (void)state;
    VALID("\xc2\x80");         /* U+0080, smallest 2-byte */
    VALID("\xc3\xa9");         /* é */
    VALID("\xdf\xbf");         /* U+07FF */
    VALID("\xe0\xa0\x80");     /* U+0800, smallest 3-byte */
    VALID("\xe2\x82\xac");     /* € */
    VALID("\xed\x9f\xbf");     /* U+D7FF, just below the surrogates */
    VALID("\xee\x80\x80");     /* U+E000, just above them */
    VALID("\xef\xbf\xbf");     /* U+FFFF */
    VALID("\xf0\x90\x80\x80"); /* U+10000, smallest 4-byte */
    VALID("\xf0\x9f\x98\x80"); /* 😀 */
    VALID("\xf4\x8f\xbf\xbf"); /* U+10FFFF, the last code point */
    VALID("caf\xc3\xa9 \xe2\x82\xac\xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac");
}

static void test_overlongs(void **state)
{
    (void)state;
    BAD("\xc0\x80", 0); /* overlong NUL */
    BAD("\xc0\xaf", 0); /* overlong '/' */
    BAD("\xc1\xbf", 0);
    BAD("\xe0\x80\x80", 0);
    BAD("\xe0\x9f\xbf", 0); /* overlong U+07FF */
    BAD("\xf0\x80\x80\x80", 0);
    BAD("\xf0\x8f\xbf\xbf", 0); /* overlong U+FFFF */
    BAD("ab\xc0\x80", 2);
}

static void test_surrogates(void **state)
{
    (void)state;
    BAD("\xed\xa0\x80", 0);             /* U+D800 */
    BAD("\xed\xbf\xbf", 0);             /* U+DFFF */
    BAD("\xed\xa0\xbd\xed\xb8\x80", 0); /* CESU-8 style pair */
    BAD("xyz\xed\xb0\x80", 3);
}

static void test_above_max(void **state)
{
    (void)state;
    BAD("\xf4\x90\x80\x80", 0); /* U+110000 */
    BAD("\xf4\xbf\xbf\xbf", 0);
    BAD("\xf5\x80\x80\x80", 0);
    BAD("\xf7\xbf\xbf\xbf", 0);
    BAD("\xf8\x88\x80\x80\x80", 0);     /* old 5-byte form */
    BAD("\xfc\x84\x80\x80\x80\x80", 0); /* old 6-byte form */
    BAD("\xfe", 0);
    BAD("\xff", 0);
}

static void test_bad_continuations(void **state)
{
    (void)state;
    BAD("\x80", 0); /* lone continuation */
    BAD("\xbf", 0);
    BAD("a\x80", 1);
    BAD("\xc3\x28", 0); /* second byte not a continuation */
    BAD("\xc3\xc3\xa9", 0);
    BAD("\xe2\x28\xa1", 0);
    BAD("\xe2\x82\x28", 0);     /* third byte */
    BAD("\xf0\x9f\x98\x28", 0); /* fourth byte */
    BAD("\xf0\x9f\x28\x80", 0);
    BAD("ok \xc3\xa9 then \xe2\x82", 11);
}

static void test_truncated(void **state)
{
    (void)state;
    BAD("\xc3", 0);
    BAD("\xe2\x82", 0);
    BAD("\xe2", 0);
    BAD("\xf0\x9f\x98", 0);
    BAD("\xf0\x9f", 0);
    BAD("\xf0", 0);
    BAD("abc\xf0\x9f\x98", 3);
    /* the length given wins over what follows in memory */
    expect_bad("\xc3\xa9", 1, 0);
    expect_bad("x\xe2\x82\xac", 3, 1);
    expect_valid("\xe2\x82\xac"
                 "\xff",
                 3);
}

/* The 8-byte ASCII fast path must not skip a bad byte at any position, nor read past n. */
static void test_fast_path_boundaries(void **state)
{
    (void)state;
    for (size_t len = 1; len <= 40; len++) {
        char *s = malloc(len); /* exact size: ASan catches reads past the end */
        memset(s, 'a', len);
        expect_valid(s, len);
        for (size_t pos = 0; pos < len; pos++) {
            memset(s, 'a', len);
            s[pos] = (char)0x80;
            expect_bad(s, len, pos);
            s[pos] = (char)0xff;
            expect_bad(s, len, pos);
            if (pos + 1 < len) {
                s[pos] = (char)0xc3;
                s[pos + 1] = (char)0xa9;
                expect_valid(s, len);
            }
            if (pos + 3 < len) {
                memcpy(s + pos, "\xf0\x9f\x98\x80", 4);
                expect_valid(s, len);
                memcpy(s + pos, "\xed\xa0\x80", 3);
                expect_bad(s, len, pos);
            }
        }
        /* a multibyte sequence cut by the end of the buffer */
        memset(s, 'a', len);
        s[len - 1] = (char)0xe2;
        expect_bad(s, len, len - 1);
        if (len >= 2) {
            s[len - 2] = (char)0xf0;
            s[len - 1] = (char)0x9f;
            expect_bad(s, len, len - 2);
        }
        free(s);
    }
}

static void test_fast_path_across_a_sequence(void **state)
{
    (void)state;
    /* a 4-byte sequence straddling every 8-byte boundary, with ASCII around */
    char s[32];
    for (size_t pos = 0; pos + 4 <= sizeof s; pos++) {
        memset(s, 'z', sizeof s);
        memcpy(s + pos, "\xf4\x8f\xbf\xbf", 4);
        expect_valid(s, sizeof s);
        memcpy(s + pos, "\xf4\x90\x80\x80", 4);
        expect_bad(s, sizeof s, pos);
    }
    /* an unaligned start */
    static const char text[] = "xxxxxxxxxxxxxxxxxxxxxxxxx\xc3\xa9yyyyyyyyyyyyyyyy\xc0";
    expect_valid(text + 1, sizeof text - 3);
    expect_bad(text + 3, sizeof text - 4, sizeof text - 5);
}

static void test_large_buffer(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    char *s = malloc(n);
    for (size_t i = 0; i + 3 <= n; i += 3)
        memcpy(s + i, "\xe2\x82\xac", 3);
    size_t tail = n % 3;
    memset(s + n - tail, 'a', tail);
    expect_valid(s, n);
    s[n - tail - 2] = 'a'; /* breaks the last sequence: its lead byte is now bad */
    expect_bad(s, n, n - tail - 3);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_and_ascii),
        cmocka_unit_test(test_valid_multibyte),
        cmocka_unit_test(test_overlongs),
        cmocka_unit_test(test_surrogates),
        cmocka_unit_test(test_above_max),
        cmocka_unit_test(test_bad_continuations),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_fast_path_boundaries),
        cmocka_unit_test(test_fast_path_across_a_sequence),
        cmocka_unit_test(test_large_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
