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
    int err; /* rd_kafka_resp_err_t; 0 = acknowledged */
    int32_t partition;
    int64_t offset;
};

struct producer *producer_create(const struct config *cfg, const char *bootstrap, char **err);
/* Waits up to 5 s for messages in flight, then destroys. Accepts NULL. */
void producer_destroy(struct producer *p);

/* Queues one message; res is filled in when Kafka answers (res must live until then;
 * NULL: fire and forget, a failure is only logged by librdkafka).
 * False (and *err) when it could not even be queued. */
bool producer_send(struct producer *p, const char *topic, const char *key, size_t key_len,
                   const char *value, size_t value_len, const struct record_header *headers,
                   size_t nheaders, struct produce_result *res, char **err);

/* Waits until every res[i] is done or timeout_ms passes; true when all are done. */
bool producer_wait(struct producer *p, struct produce_result *res, size_t n, int timeout_ms);

/* The text of a delivery error. */
const char *producer_err_str(int err);

#endif
