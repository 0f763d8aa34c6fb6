/* Unit tests for src/duration.c (retention in the configuration, --since and --timeout of
 * the operator commands) and for op_clean (what of the API's text reaches a terminal). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "duration.h"
#include "op_out.h"

static int64_t secs(const char *s, bool need_unit)
{
    int64_t v = -1;
    return duration_parse(s, need_unit, &v) ? v : -1;
}

static void test_units(void **state)
{
    (void)state;
    assert_int_equal(secs("90s", true), 90);
    assert_int_equal(secs("30m", true), 1800);
    assert_int_equal(secs("12h", true), 43200);
    assert_int_equal(secs("30d", true), 2592000);
    assert_int_equal(secs("45", false), 45); /* a bare number is seconds where allowed */
    assert_int_equal(secs("36500d", true), 36500LL * 86400);
}

static void test_refused(void **state)
{
    (void)state;
    const char *bad[] = {
        "",  "30", "d", "-5m", "0s", "5 m", "5mm", "1w", "+3h", "36501d", "99999999999999999999s",
        NULL};
    for (int i = 0; bad[i]; i++)
        if (secs(bad[i], true) != -1) fail_msg("\"%s\" was taken as a duration", bad[i]);
    assert_int_equal(secs("", false), -1);
}

static void cleaned(const char *in, size_t n, const char *want)
{
    struct buf b = {0};
    op_clean(&b, in, n);
    assert_string_equal(buf_cstr(&b), want);
    buf_free(&b);
}

static void test_clean(void **state)
{
    (void)state;
    cleaned("plain café", strlen("plain café"), "plain café");
    cleaned("a\x1b[2Jb\x07", 7, "a?[2Jb?");
    cleaned("c1 \xc2\x9b"
            "x",
            6, "c1 ?x"); /* U+009B, the 8-bit CSI */
    cleaned("raw \x9b"
            "x",
            6, "raw ?x");                 /* not UTF-8 at all */
    cleaned("cut \xe2\x82", 6, "cut ??"); /* a sequence cut short */
    cleaned("del\x7f", 4, "del?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
