/* Retention (CONTRACT 9.5): the journal's month partitions wholly older than
 * retention.journal are dropped, DLQ entries resolved or discarded longer ago than
 * retention.dlq and replay jobs (with their items) ended longer ago than retention.jobs
 * are removed: a month of the DLQ or of jobs whose every entry or job goes is dropped
 * whole, the rest row by row. The service does it at start and hourly (scheduler.c),
 * `eventsink retention` on demand. One instance at a time (an advisory lock). The same run
 * keeps the partitions ahead (this month and the next two) and moves rows a backfill left
 * in a default partition into their months. */
#ifndef EVENTSINK_RETENTION_H
#define EVENTSINK_RETENTION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct pg_conn;

struct retention_report {
    bool skipped;                  /* another instance holds the retention lock */
    int64_t dlq, jobs, items;      /* removed, or with dry_run what would be */
    int64_t dlq_parts, jobs_parts; /* of which whole months (partitions dropped) */
    int64_t journal_parts, journal_rows, journal_bytes; /* the same for the journal */
    int64_t settled; /* months whose rows moved out of a default partition */
};

/* False with *err (malloc'd) when PostgreSQL failed midway; *out then holds what was
 * removed before (each batch is its own statement, each bounded to 5 s). stop, when set,
 * ends it before the next statement; progress (if given) is called after each one. */
bool retention_apply(struct pg_conn *c, const struct config *cfg, bool dry_run,
                     const atomic_bool *stop, void (*progress)(void), struct retention_report *out,
                     char **err);

#endif
