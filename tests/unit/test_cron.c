/* cron.c: parsing, matching, and the latest due tick. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cron.h"

static struct tm tm_of(int y, int mon, int d, int h, int mi)
{
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mon - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
    time_t t = timegm(&tm);
    gmtime_r(&t, &tm); /* fills in tm_wday */
    return tm;
}

static bool matches(const char *expr, int y, int mon, int d, int h, int mi)
{
    struct cron c;
    const char *err = NULL;
    assert_true(cron_parse(expr, &c, &err));
    struct tm tm = tm_of(y, mon, d, h, mi);
    return cron_matches(&c, &tm);
}

static void test_parse_errors(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "* * * *",
                         "* * * * * *",
                         "60 * * * *",
                         "* 24 * * *",
                         "* * 0 * *",
                         "* * 32 * *",
                         "* * * 13 *",
                         "* * * * 8",
                         "*/0 * * * *",
                         "5-1 * * * *",
                         "a * * * *",
                         "* * * foo *",
                         "1,,2 * * * *",
                         NULL};
    for (const char **b = bad; *b; b++) {
        struct cron c;
        const char *err = NULL;
        if (cron_parse(*b, &c, &err)) fail_msg("accepted '%s'", *b);
        assert_non_null(err);
    }
}

static void test_matching(void **state)
{
    (void)state;
    assert_true(matches("* * * * *", 2026, 11, 27, 7, 31));
    assert_true(matches("30 2 * * *", 2026, 11, 27, 2, 30));
    assert_false(matches("30 2 * * *", 2026, 11, 27, 2, 31));
    assert_true(matches("*/15 * * * *", 2026, 11, 27, 9, 45));
    assert_false(matches("*/15 * * * *", 2026, 11, 27, 9, 44));
    assert_true(matches("0 9-17/4 * * *", 2026, 11, 27, 13, 0));
    assert_false(matches("0 9-17/4 * * *", 2026, 11, 27, 11, 0));
    assert_true(matches("0 0 1,15 * *", 2026, 11, 15, 0, 0));
    /* 2026-11-29 is a Sunday: 0, 7 and sun all name it */
    assert_true(matches("0 3 * * sun", 2026, 11, 29, 3, 0));
    assert_true(matches("0 3 * * 7", 2026, 11, 29, 3, 0));
    assert_true(matches("0 3 * * 0", 2026, 11, 29, 3, 0));
    assert_false(matches("0 3 * * mon-fri", 2026, 11, 29, 3, 0));
    assert_true(matches("0 3 * jan,nov *", 2026, 11, 29, 3, 0));
    /* both day fields restricted: either matches (the 1st, or any Monday) */
    assert_true(matches("0 0 1 * mon", 2026, 11, 30, 0, 0));
    assert_true(matches("0 0 1 * mon", 2026, 12, 1, 0, 0));
    assert_false(matches("0 0 1 * mon", 2026, 12, 2, 0, 0));
}

static void test_latest(void **state)
{
    (void)state;
    setenv("TZ", "UTC", 1);
    tzset();
    struct cron c;
    const char *err;
    assert_true(cron_parse("30 2 * * *", &c, &err));
    struct tm now = tm_of(2026, 11, 27, 7, 31);
    time_t t = timegm(&now) + 17; /* seconds do not matter */
    struct tm want = tm_of(2026, 11, 27, 2, 30);
    assert_int_equal((long long)cron_latest(&c, t, 2), (long long)timegm(&want));
    assert_true(cron_parse("* * * * *", &c, &err));
    assert_int_equal((long long)cron_latest(&c, t, 1), (long long)(timegm(&now)));
    assert_true(cron_parse("0 0 29 2 *", &c, &err)); /* 29 February: none in 30 days */
    assert_int_equal((long long)cron_latest(&c, t, 30), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_matching),
        cmocka_unit_test(test_latest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
