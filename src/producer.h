/* The Kafka producer used by replays, DLQ retries and kafka.dlq_topic: idempotent
 * (enable.idempotence, acks=all), shared by every thread, with delivery reports served by
 * a thread of its own so that callers can wait for "Kafka has acknowledged it". */
#ifndef EVENTSINK_PRODUCER_H
#define EVENTSINK_PRODUCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "record.h"

struct producer;

/* The outcome of one message, filled in by the delivery report. */
struct produce_result {
    bool done;
    int err;                 /* rd_kafka_resp_err_t; 0 = acknowledged */
    bool possibly_persisted; /* err, yet Kafka may have written it (a timeout) */
    int32_t partition;
    int64_t offset;
};

/* One message's delivery, shared by the caller and librdkafka's delivery report: each
 * drops its reference, the last one frees it. So a caller may stop waiting at any time
 * (producer_release) without librdkafka ever writing into freed memory. */
struct delivery;

struct producer *producer_create(const struct config *cfg, const char *bootstrap, char **err);
/* Waits up to 5 s for messages in flight, then destroys. Accepts NULL. */
void producer_destroy(struct producer *p);

/* Queues one message; *d (when d is not NULL) receives its delivery, to read with
 * producer_result and give up with producer_release; NULL: fire and forget (a failure is
 * only logged by librdkafka). False (and *err) when it could not even be queued. */
bool producer_send(struct producer *p, const char *topic, const char *key, size_t key_len,
                   const char *value, size_t value_len, const struct record_header *headers,
                   size_t nheaders, struct delivery **d, char **err);

/* The outcome so far (out->done false while Kafka has not answered). */
void producer_result(struct producer *p, const struct delivery *d, struct produce_result *out);

/* Waits until every d[i] is answered or timeout_ms passes; true when all are. */
bool producer_wait(struct producer *p, struct delivery *const *d, size_t n, int timeout_ms);

/* Drops the caller's reference (accepts NULL). */
void producer_release(struct delivery *d);

/* True when a broker answers a metadata request within timeout_ms (Kafka's state before
 * the consumer exists, e.g. while the service waits for PostgreSQL at start-up). */
bool producer_kafka_reachable(struct producer *p, int timeout_ms);

/* How long librdkafka may take to answer a message: message.timeout.ms, plus a margin. */
int producer_answer_bound_ms(const struct producer *p);

/* The text of a delivery error. */
const char *producer_err_str(int err);

#endif
