/* The Kafka side of the pipeline: a consumer in a consumer group with manual offset
 * commits. */
#ifndef EVENTSINK_CONSUMER_H
#define EVENTSINK_CONSUMER_H

#include <stdbool.h>

#include <librdkafka/rdkafka.h>

#include "config.h"

struct consumer;

/* Called from consumer_poll() before partitions are taken away (rebalance or close):
 * the pipeline flushes and commits what it holds for them. */
typedef void (*consumer_revoke_fn)(void *opaque, const rd_kafka_topic_partition_list_t *parts);

/* bootstrap: the brokers to use (cfg->kafka.brokers, or the embedded cluster's address). */
struct consumer *consumer_create(const struct config *cfg, const char *bootstrap,
                                 consumer_revoke_fn on_revoke, void *opaque, char **err);
/* Accepts half-built consumers. Closes the group membership first if still open. */
void consumer_destroy(struct consumer *c);

/* Returns a message (the caller destroys it) or NULL on timeout. Errors that are not
 * about one message are logged here and NULL is returned. */
rd_kafka_message_t *consumer_poll(struct consumer *c, int timeout_ms);

/* Commits the given offsets (next offset to read). Synchronously, or (async) queued in
 * order behind earlier commits. A failure is logged (for an asynchronous commit, from
 * consumer_poll()); it loses nothing, the rows being in PostgreSQL already. */
void consumer_commit(struct consumer *c, rd_kafka_topic_partition_list_t *offsets, bool async);

/* Makes a consumer_poll() blocked in another thread return now (thread-safe). */
void consumer_wake(struct consumer *c);

/* Stops or restarts fetching on every assigned partition (and on partitions assigned later,
 * while paused). */
void consumer_pause(struct consumer *c, bool pause);

/* Moves the fetch position of each listed partition that is still assigned. A partition
 * whose seek fails is paused and sought again (from consumer_poll(), once a second) until
 * it works: fetching never goes on past records that were not written. */
void consumer_seek(struct consumer *c, const rd_kafka_topic_partition_list_t *positions);

/* How seeks are made: rd_kafka_seek_partitions (NULL restores it); unit tests force
 * failures with it. */
typedef rd_kafka_error_t *(*consumer_seek_impl)(rd_kafka_t *rk,
                                                rd_kafka_topic_partition_list_t *partitions,
                                                int timeout_ms);
void consumer_set_seek_impl(struct consumer *c, consumer_seek_impl seek);

/* Reads again from its beginning each listed partition (offset: its first record found at a
 * reused position) whose log was replaced: position_check.h. */
void consumer_reread(struct consumer *c, const rd_kafka_topic_partition_list_t *reused);

/* True when m is the record a partition was started at, one before its committed offset
 * (position_check.h): a redelivery to check, not to decide again. */
bool consumer_take_check(struct consumer *c, const rd_kafka_message_t *m);

/* Leaves the group (revoking, so the pipeline flushes first), waiting at most timeout_ms. */
void consumer_close(struct consumer *c, int timeout_ms);

/* True while at least one broker connection is up (from librdkafka's error events). */
bool consumer_kafka_up(struct consumer *c);

rd_kafka_t *consumer_handle(struct consumer *c);

#endif
