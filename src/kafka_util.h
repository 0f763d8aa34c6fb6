/* What the Kafka consumer and producer share: logging and configuration helpers. */
#ifndef EVENTSINK_KAFKA_UTIL_H
#define EVENTSINK_KAFKA_UTIL_H

#include <stdbool.h>

#include <librdkafka/rdkafka.h>

#include "config.h"

/* librdkafka's log callback, into our log (its errors as warnings: they are about
 * connections it retries by itself). */
void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* rd_kafka_conf_set with an error message naming the property. */
bool kafka_conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char **err);

/* True for properties that only a consumer understands (not passed to the producer). */
bool kafka_consumer_only_property(const char *name);

/* The configuration of the consumer and of the replay producer: our settings, then
 * kafka.properties (the consumer refuses enable.auto.commit other than false; the
 * producer skips the consumer's properties and keeps its acks and idempotence). NULL with
 * *err naming the property when librdkafka refuses one. The caller owns the result (and
 * rd_kafka_new takes it). */
rd_kafka_conf_t *kafka_consumer_conf(const struct config *cfg, const char *bootstrap, char **err);
rd_kafka_conf_t *kafka_producer_conf(const struct config *cfg, const char *bootstrap, char **err);
/* Builds both and throws them away: what `eventsink check` and start-up refuse alike,
 * without a connection to Kafka. */
bool kafka_conf_check(const struct config *cfg, char **err);

#define KAFKA_DESTROY_WAIT_MS 2000

/* rd_kafka_destroy_flags() with a bound. librdkafka 2.0.2 can wait for ever for references
 * it holds itself: seen after a subscribed topic was deleted and created again while the
 * consumer ran. Everything is committed by then; the process is about to exit, and exiting
 * releases what the client still holds. Returns false when it did not finish within
 * wait_ms (a thread is left to it). */
bool kafka_destroy_bounded(rd_kafka_t *rk, int flags, int wait_ms);

#endif
