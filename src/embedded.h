/* kafka.brokers = "embedded": librdkafka's mock cluster inside the process, for demos.
 * In memory and not durable: a restart loses every topic, message and offset. */
#ifndef EVENTSINK_EMBEDDED_H
#define EVENTSINK_EMBEDDED_H

#include "config.h"

struct embedded_kafka;

/* Starts the cluster and creates the configured (non-regex) topics with 4 partitions. */
struct embedded_kafka *embedded_kafka_start(const struct config *cfg, char **err);
const char *embedded_kafka_bootstrap(const struct embedded_kafka *k);
/* Accepts NULL. Every client of the cluster must be gone first. */
void embedded_kafka_stop(struct embedded_kafka *k);

#endif
