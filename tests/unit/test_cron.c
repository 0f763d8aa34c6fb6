/* cron.c: parsing, matching, and the latest due tick. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* ---- local time with daylight saving time (Europe/Berlin) --------------------------------- */

static time_t utc(int y, int mon, int d, int h, int mi)
{
    struct tm tm = tm_of(y, mon, d, h, mi);
    return timegm(&tm);
}

static void use_zone(const char *zone)
{
    char path[128];
    snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", zone);
    if (access(path, R_OK) != 0) fail_msg("%s is missing: install tzdata (make deps)", path);
    setenv("TZ", zone, 1);
    tzset();
}

static int berlin(void **state)
{
    (void)state;
    use_zone("Europe/Berlin");
    return 0;
}

static int back_to_utc(void **state)
{
    (void)state;
    setenv("TZ", "UTC", 1);
    tzset();
    return 0;
}

/* The minutes in [from, to) at which expr is due, as UTC "HH:MM" joined by spaces. */
static const char *runs(const char *expr, time_t from, time_t to)
{
    static char out[512];
    struct cron c;
    const char *err;
    assert_true(cron_parse(expr, &c, &err));
    size_t n = 0;
    out[0] = '\0';
    for (time_t t = from; t < to; t += 60) {
        if (!cron_due(&c, t)) continue;
        struct tm tm;
        gmtime_r(&t, &tm);
        n += (size_t)snprintf(out + n, sizeof out - n, "%s%02d:%02d", n ? " " : "", tm.tm_hour,
                              tm.tm_min);
        assert_true(n < sizeof out);
    }
    return out;
}

static int count(const char *expr, time_t from, time_t to)
{
    struct cron c;
    const char *err;
    assert_true(cron_parse(expr, &c, &err));
    int n = 0;
    for (time_t t = from; t < to; t += 60)
        n += cron_due(&c, t);
    return n;
}

/* 2026-03-29 02:00 CET (01:00 UTC) the clocks go to 03:00 CEST: 02:00-02:59 does not exist.
 * cronie runs a fixed-time job (minute and hour not starting with '*') of the skipped hour
 * once, right after the change; a job with '*' in the minute or hour field keeps to real
 * time, so its skipped minutes are not made up. */
static void test_dst_spring_forward(void **state)
{
    (void)state;
    time_t from = utc(2026, 3, 28, 22, 0), to = utc(2026, 3, 29, 4, 0); /* 23:00 CET - 06:00 CEST */
    assert_string_equal(runs("30 2 * * *", from, to), "01:00");
    assert_string_equal(runs("0 2 * * *", from, to), "01:00");
    assert_string_equal(runs("59 2 * * *", from, to), "01:00");
    assert_string_equal(runs("0,30 2 * * *", from, to), "01:00"); /* once, not twice */
    assert_string_equal(runs("0 3 * * *", from, to), "01:00");
    assert_string_equal(runs("30 1 * * *", from, to), "00:30");   /* 01:30 CET, as usual */
    assert_string_equal(runs("30 3 * * *", from, to), "01:30");   /* 03:30 CEST, as usual */
    assert_string_equal(runs("30 2 * * sun", from, to), "01:00"); /* the day still matches */
    assert_string_equal(runs("30 2 * * sat", from, to), "");
    assert_string_equal(runs("30 * * * *", from, to), "22:30 23:30 00:30 01:30 02:30 03:30");
    assert_string_equal(runs("0 */2 * * *", from, to), "23:00 02:00"); /* 00:00, 04:00 CEST */
    assert_string_equal(runs("*/15 2 * * *", from, to), "");  /* a * minute is wild: not made up */
    assert_int_equal(count("*/15 * * * *", from, to), 6 * 4); /* real time */
    assert_int_equal(count("* * * * *", from, to), 6 * 60);
    /* the day before and the day after: 02:30 local as usual */
    assert_string_equal(runs("30 2 * * *", utc(2026, 3, 28, 0, 0), utc(2026, 3, 28, 12, 0)),
                        "01:30");
    assert_string_equal(runs("30 2 * * *", utc(2026, 3, 30, 0, 0), utc(2026, 3, 30, 12, 0)),
                        "00:30");
    /* the latest tick, as the scheduler asks for it at start-up */
    struct cron c;
    const char *err;
    assert_true(cron_parse("30 2 * * *", &c, &err));
    assert_int_equal((long long)cron_latest(&c, utc(2026, 3, 29, 1, 10) + 7, 2),
                     (long long)utc(2026, 3, 29, 1, 0));
    assert_int_equal((long long)cron_latest(&c, utc(2026, 3, 29, 0, 59), 2),
                     (long long)utc(2026, 3, 28, 1, 30));
}

/* 2026-10-25 03:00 CEST (01:00 UTC) the clocks go back to 02:00 CET: 02:00-02:59 comes twice.
 * cronie runs a fixed-time job of that hour once, the first time; a job with '*' in the
 * minute or hour field keeps to real time and runs in both. */
static void test_dst_fall_back(void **state)
{
    (void)state;
    time_t from = utc(2026, 10, 24, 22, 0),
           to = utc(2026, 10, 25, 4, 0); /* 00:00 CEST - 05:00 CET */
    assert_string_equal(runs("30 2 * * *", from, to), "00:30");
    assert_string_equal(runs("0 2 * * *", from, to), "00:00");
    assert_string_equal(runs("59 2 * * *", from, to), "00:59");
    assert_string_equal(runs("0,30 2 * * *", from, to), "00:00 00:30");
    assert_string_equal(runs("0 3 * * *", from, to), "02:00"); /* 03:00 CET, once */
    assert_string_equal(runs("30 1 * * *", from, to), "23:30");
    assert_string_equal(runs("0 4 * * *", from, to), "03:00");
    assert_string_equal(runs("30 * * * *", from, to), "22:30 23:30 00:30 01:30 02:30 03:30");
    assert_string_equal(runs("0 */2 * * *", from, to), "22:00 00:00 01:00 03:00");
    assert_string_equal(runs("*/15 2 * * *", from, to),
                        "00:00 00:15 00:30 00:45 01:00 01:15 01:30 01:45"); /* both passes */
    assert_int_equal(count("*/15 * * * *", from, to), 6 * 4);
    assert_int_equal(count("* * * * *", from, to), 6 * 60);
    struct cron c;
    const char *err;
    assert_true(cron_parse("30 2 * * *", &c, &err));
    assert_int_equal((long long)cron_latest(&c, utc(2026, 10, 25, 1, 45), 2),
                     (long long)utc(2026, 10, 25, 0, 30));
}

/* Every local day of 2026 in Berlin has exactly one run of a daily job at any hour and minute
 * of the night, the two change days included. */
static void test_dst_daily_once(void **state)
{
    (void)state;
    const char *daily[] = {"0 0 * * *",  "30 1 * * *", "0 2 * * *", "30 2 * * *",
                           "59 2 * * *", "0 3 * * *",  "15 3 * * *"};
    for (size_t i = 0; i < sizeof daily / sizeof *daily; i++) {
        for (int m = 3; m <= 10; m += 7) { /* the weeks around the two changes */
            int d = m == 3 ? 26 : 22;
            for (int k = 0; k < 6; k++) {
                /* 24 h from 22:00 UTC the day before: that local day's night hours */
                time_t day = utc(2026, m, d + k, 0, 0) - 2 * 3600;
                int n = count(daily[i], day, day + 24 * 3600);
                if (n != 1) fail_msg("%s on 2026-%02d-%02d: %d run(s)", daily[i], m, d + k, n);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_matching),
        cmocka_unit_test(test_day_fields_vixie),
        cmocka_unit_test(test_latest),
        cmocka_unit_test_setup_teardown(test_dst_spring_forward, berlin, back_to_utc),
        cmocka_unit_test_setup_teardown(test_dst_fall_back, berlin, back_to_utc),
        cmocka_unit_test_setup_teardown(test_dst_daily_once, berlin, back_to_utc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
