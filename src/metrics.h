/* Prometheus metrics (CONTRACT section 7): counters and gauges updated by the pipeline,
 * the HTTP API and the replay engine, rendered in the text exposition format.
 * Thread-safe; the pipeline updates them once per batch, not once per event. */
#ifndef EVENTSINK_METRICS_H
#define EVENTSINK_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Distinct topic label values kept before new topics fold into "other". */
#define METRICS_MAX_TOPICS 64

void metrics_events_consumed(const char *topic, uint64_t n);
void metrics_offset_reuse(const char *topic);
void metrics_partition_reread(const char *topic);
void metrics_write_conflict(void);
/* Rows removed by retention (retention.c). */
void metrics_retention_removed(int64_t dlq, int64_t jobs, int64_t items);
/* Journal rows dropped with their partitions (retention.c). */
void metrics_retention_journal(int64_t rows);
void metrics_events_persisted(const char *topic, bool replayed, uint64_t n);
void metrics_dlq_event(const char *reason, uint64_t n);
void metrics_batch(size_t events, double seconds);
void metrics_replay(const char *source, const char *result, uint64_t n);
void metrics_policy_reload(bool ok);
/* A replay job reached done, failed or cancelled. */
void metrics_job_finished(const char *kind, const char *status);
void metrics_http_request(const char *route, int code);

/* Consumer lag: replaced as a whole at every librdkafka statistics report. */
void metrics_lag_begin(void);
void metrics_lag_set(const char *topic, int32_t partition, int64_t lag);
void metrics_lag_end(void);

/* Gauges read from the database at scrape time, passed in by the scrape handler
 * (negative: unknown, not rendered). */
struct metrics_db_gauges {
    int64_t dlq_pending;
    int64_t replay_jobs_running;
};

void metrics_render(struct buf *out, const struct metrics_db_gauges *g);

/* Appends s as a Prometheus label value (escaping \, " and newline). */
void metrics_label_value(struct buf *out, const char *s);

#endif
