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
                         "5/15 * * * *", /* cronie: a step needs * or a range before it */
                         "* * 1/2 * *",
                         "* * * * monday",
                         "* * * * sat-sun",
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

/* Vixie cron: a day field is unrestricted ("star") when it starts with '*', so a step of a
 * star (star-slash-n) keeps the other day field's rule alone (AND); only two restricted fields are
 * ORed. */
static void test_day_fields_vixie(void **state)
{
    (void)state;
    /* 2026-11-23 and 2026-11-30 are Mondays; 2026-12-01 is a Tuesday */
    assert_true(matches("0 0 */2 * mon", 2026, 11, 23, 0, 0));  /* odd day and Monday */
    assert_false(matches("0 0 */2 * mon", 2026, 11, 30, 0, 0)); /* Monday, even day */
    assert_false(matches("0 0 */2 * mon", 2026, 12, 1, 0, 0));  /* odd day, Tuesday */
    assert_false(matches("0 0 */2 * mon", 2026, 12, 3, 0, 0));
    /* a day-of-week step of a star is 0,2,4,6 and still a star: only the 1st of the month counts */
    assert_true(matches("0 0 1 * */2", 2026, 12, 1, 0, 0));   /* Tuesday (2) */
    assert_true(matches("0 0 1 * */2", 2026, 11, 1, 0, 0));   /* Sunday (0) */
    assert_false(matches("0 0 1 * */2", 2027, 1, 1, 0, 0));   /* Friday (5) */
    assert_false(matches("0 0 1 * */2", 2026, 12, 3, 0, 0));  /* Thursday (4), the 3rd */
    assert_false(matches("0 0 1 * */2", 2026, 12, 13, 0, 0)); /* Sunday, the 13th */
    /* both restricted (a range and a list are restrictions): either */
    assert_true(matches("0 0 1-7 * mon", 2026, 12, 2, 0, 0));
    assert_true(matches("0 0 1-7 * mon", 2026, 12, 14, 0, 0));
    assert_false(matches("0 0 1-7 * mon", 2026, 12, 15, 0, 0));
    assert_true(matches("0 0 13 * 5", 2026, 11, 13, 0, 0)); /* the 13th (a Friday) */
    assert_true(matches("0 0 13 * 5", 2026, 11, 20, 0, 0)); /* any Friday */
    assert_true(matches("0 0 13 * 5", 2026, 12, 13, 0, 0)); /* any 13th */
    /* day-of-month 1-31 written out is a restriction, unlike * */
    assert_true(matches("0 0 1-31 * mon", 2026, 12, 2, 0, 0));
    assert_false(matches("0 0 * * mon", 2026, 12, 2, 0, 0));
    /* 7 is Sunday also inside ranges and steps; names ignore case */
    assert_true(matches("0 0 * * 5-7", 2026, 11, 29, 0, 0));
    assert_true(matches("0 0 * * 1-7/2", 2026, 11, 29, 0, 0));
    assert_false(matches("0 0 * * 1-7/2", 2026, 12, 1, 0, 0));
    assert_true(matches("0 0 * * MON-Fri", 2026, 11, 30, 0, 0));
    assert_true(matches("0 0 * Nov-dec/1 *", 2026, 11, 30, 0, 0));
    /* an oversized step leaves the start of its range, as cronie does */
    assert_true(matches("*/90 * * * *", 2026, 11, 30, 5, 0));
    assert_false(matches("*/90 * * * *", 2026, 11, 30, 5, 30));
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
        cmocka_unit_test(test_day_fields_vixie),
        cmocka_unit_test(test_latest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
