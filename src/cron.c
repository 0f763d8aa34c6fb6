#include "cron.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const months[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                     "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const days[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

/* A number or (for months and days) a name; advances *p. -1 when there is none. */
static int value(const char **p, const char *const *names, int nnames, int name_base)
{
    if (isdigit((unsigned char)**p)) {
        int v = 0;
        while (isdigit((unsigned char)**p) && v < 1000)
            v = v * 10 + (*(*p)++ - '0');
        return v;
    }
    if (names && isalpha((unsigned char)**p)) {
        for (int i = 0; i < nnames; i++) {
            if (strncasecmp(*p, names[i], 3) == 0 && !isalpha((unsigned char)(*p)[3])) {
                *p += 3;
                return i + name_base;
            }
        }
    }
    return -1;
}

/* One field into a bit set; lo..hi is the allowed range. As in Vixie cron (entry.c), the field
 * counts as a star (unrestricted, for the day-of-month/day-of-week rule) when its first
 * character is '*', steps included; a step follows only '*' or a range ("5/15" is refused). */
static bool field(const char *s, int lo, int hi, const char *const *names, int nnames,
                  int name_base, uint64_t *bits, bool *star, const char **err)
{
    *bits = 0;
    *star = s[0] == '*';
    const char *p = s;
    for (;;) {
        int a, b, step = 1;
        bool range = true;
        if (*p == '*') {
            p++;
            a = lo;
            b = hi;
        } else {
            a = value(&p, names, nnames, name_base);
            if (a < 0) goto bad;
            b = a;
            range = *p == '-';
            if (range) {
                p++;
                b = value(&p, names, nnames, name_base);
                if (b < 0) goto bad;
            }
        }
        if (*p == '/') {
            p++;
            step = value(&p, NULL, 0, 0);
            if (step <= 0 || !range) goto bad;
        }
        if (a < lo || b > hi || a > b) {
            *err = "a value is out of range";
            return false;
        }
        for (int v = a; v <= b; v += step)
            *bits |= 1ULL << v;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '\0') return true;
        goto bad;
    }
bad:
    *err = "a field is not a number, name, range, list or step (a step follows * or a range: "
           "5-59/15, not 5/15)";
    return false;
}

bool cron_parse(const char *expr, struct cron *out, const char **err)
{
    char copy[256];
    if (!expr || strlen(expr) >= sizeof copy) {
        *err = "the expression is missing or too long";
        return false;
    }
    strcpy(copy, expr);
    char *f[6];
    int n = 0;
    for (char *tok = strtok(copy, " \t"); tok; tok = strtok(NULL, " \t")) {
        if (n == 5) {
            *err = "more than 5 fields (minute hour day-of-month month day-of-week)";
            return false;
        }
        f[n++] = tok;
    }
    if (n != 5) {
        *err = "fewer than 5 fields (minute hour day-of-month month day-of-week)";
        return false;
    }
    memset(out, 0, sizeof *out);
    uint64_t b;
    bool star;
    if (!field(f[0], 0, 59, NULL, 0, 0, &b, &out->wild, err)) return false;
    out->minute = b;
    if (!field(f[1], 0, 23, NULL, 0, 0, &b, &star, err)) return false;
    out->hour = (uint32_t)b;
    out->wild = out->wild || star;
    if (!field(f[2], 1, 31, NULL, 0, 0, &b, &out->mday_star, err)) return false;
    out->mday = (uint32_t)b;
    if (!field(f[3], 1, 12, months, 12, 1, &b, &star, err)) return false;
    out->month = (uint16_t)b;
    if (!field(f[4], 0, 7, days, 7, 0, &b, &out->wday_star, err)) return false;
    if (b & (1ULL << 7)) b |= 1; /* 7 is Sunday too */
    out->wday = (uint8_t)(b & 0x7F);
    return true;
}

bool cron_matches(const struct cron *c, const struct tm *tm)
{
    if (!(c->minute & (1ULL << tm->tm_min))) return false;
    if (!(c->hour & (1U << tm->tm_hour))) return false;
    if (!(c->month & (1U << (tm->tm_mon + 1)))) return false;
    bool md = c->mday & (1U << tm->tm_mday);
    bool wd = c->wday & (1U << tm->tm_wday);
    if (c->mday_star || c->wday_star) return md && wd;
    return md || wd;
}

/* The longest stretch of repeated local time when the clocks go back, and the assumption that
 * a zone changes its offset at most once within it. */
#define REPEAT_MAX (3 * 3600)

static long utc_offset(time_t t)
{
    struct tm tm;
    localtime_r(&t, &tm);
    return tm.tm_gmtoff;
}

/* Does local wall-clock time wall (seconds, as if the zone were UTC) match? */
static bool wall_matches(const struct cron *c, time_t wall)
{
    struct tm tm;
    gmtime_r(&wall, &tm);
    return cron_matches(c, &tm);
}

/* Was the local time of t (offset off) shown before, by the hour the clocks went back? That
 * is: an earlier t - back had the offset off + back. */
static bool repeated(time_t t, long off)
{
    long back = utc_offset(t - REPEAT_MAX) - off;
    return back > 0 && utc_offset(t - back) == off + back;
}

/* Does a local minute the clocks skipped just before t match? off_before is the offset of the
 * minute before t; the skipped local minutes lie between its local time and t's. */
static bool skipped_matches(const struct cron *c, time_t t, long off, long off_before)
{
    for (long s = 60; s <= off - off_before; s += 60)
        if (wall_matches(c, t + off - s)) return true;
    return false;
}

/* cron_due, given the local time of t and the offset of the minute before. */
static bool due(const struct cron *c, time_t t, const struct tm *tm, long off_before)
{
    if (cron_matches(c, tm)) return c->wild || !repeated(t, tm->tm_gmtoff);
    return !c->wild && skipped_matches(c, t, tm->tm_gmtoff, off_before);
}

bool cron_due(const struct cron *c, time_t t)
{
    struct tm tm;
    localtime_r(&t, &tm);
    return due(c, t, &tm, utc_offset(t - 60));
}

time_t cron_latest(const struct cron *c, time_t t, int max_days)
{
    t -= t % 60;
    struct tm tm, before;
    localtime_r(&t, &tm);
    for (long i = 0; i <= (long)max_days * 24 * 60; i++, tm = before) {
        time_t m = t - i * 60;
        localtime_r(&(time_t){m - 60}, &before);
        if (due(c, m, &tm, before.tm_gmtoff)) return m;
    }
    return 0;
}
