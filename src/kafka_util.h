/* What the Kafka consumer and producer share: logging and configuration helpers. */
#ifndef EVENTSINK_KAFKA_UTIL_H
#define EVENTSINK_KAFKA_UTIL_H

#include <stdbool.h>

#include <librdkafka/rdkafka.h>

/* librdkafka's log callback, into our log (its errors as warnings: they are about
 * connections it retries by itself). */
void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* rd_kafka_conf_set with an error message naming the property. */
bool kafka_conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char **err);

/* True for properties that only a consumer understands (not passed to the producer). */
bool kafka_consumer_only_property(const char *name);

#endif
