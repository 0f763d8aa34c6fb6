/* Retention (CONTRACT 9.5): DLQ entries resolved or discarded longer ago than
 * retention.dlq, and replay jobs (with their items) ended longer ago than retention.jobs,
 * are removed; the service does it hourly (scheduler.c), `eventsink retention` on demand.
 * One instance at a time (an advisory lock). The journal is kept forever in this version
 * (config.c refuses a retention.journal). */
#ifndef EVENTSINK_RETENTION_H
#define EVENTSINK_RETENTION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct pg_conn;

struct retention_report {
    bool skipped;             /* another instance holds the retention lock */
    int64_t dlq, jobs, items; /* removed, or with dry_run what would be */
};

/* False with *err (malloc'd) when PostgreSQL failed midway; *out then holds what was
 * removed before (each batch is its own statement, each bounded to 5 s). stop, when set,
 * ends it before the next statement; progress (if given) is called after each one. */
bool retention_apply(struct pg_conn *c, const struct config *cfg, bool dry_run,
                     const atomic_bool *stop, void (*progress)(void), struct retention_report *out,
                     char **err);

#endif
