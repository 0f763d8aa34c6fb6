/* Standard 5-field cron expressions, read as Vixie cron / cronie read them: minute hour
 * day-of-month month day-of-week. Each field: *, a number, a range a-b, a list a,b,c, and steps
 * of * or of a range (star-slash-n, a-b/n; not n/m); months and days of week also by name
 * (jan..dec, sun..sat; 0 and 7 are Sunday). A day field starting with '*' (star-slash-n too) is
 * unrestricted: then a day must match the other day field; when both are restricted a day
 * matches if either does. */
#ifndef EVENTSINK_CRON_H
#define EVENTSINK_CRON_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct cron {
    uint64_t minute; /* bit n: minute n */
    uint32_t hour;
    uint32_t mday;             /* bits 1..31 */
    uint16_t month;            /* bits 1..12 */
    uint8_t wday;              /* bits 0..6 */
    bool mday_star, wday_star; /* the field starts with '*' */
    bool wild;                 /* the minute or the hour field starts with '*' */
};

/* False (with *err, static text) when expr is not a valid expression. */
bool cron_parse(const char *expr, struct cron *out, const char **err);

/* Does the minute of tm (local time) match? */
bool cron_matches(const struct cron *c, const struct tm *tm);

/* Is the minute starting at t (unix seconds, a multiple of 60) a tick in local time (TZ)?
 * Where the UTC offset changes (daylight saving time) this follows cronie: a "wild" schedule
 * keeps to real time, ticking at each minute whose local time matches; a fixed-time one
 * (minute and hour without '*') ticks once for the local minutes the clocks skip, at the first
 * minute after them, and does not tick again for local minutes the clocks repeat. */
bool cron_due(const struct cron *c, time_t t);

/* The latest tick (cron_due) at or before t, looking back at most max_days; 0 when there is
 * none. */
time_t cron_latest(const struct cron *c, time_t t, int max_days);

#endif
