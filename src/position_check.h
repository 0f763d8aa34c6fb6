/* Kafka positions that can be trusted after a topic is created again (CONTRACT 9.2).
 *
 * A topic deleted and created again hands out its offsets again, for other records; the
 * journal keeps those at a new generation of the position (db_sql.h, `reused`). What is
 * left is the consumer's position: it may still point into the old log (a commit of the old
 * topic that raced its deletion, or a fetch position carried over), and the records of the
 * new log before it would never be read. Two things make sure they are:
 *  - on assignment, each partition starts one record before its committed offset
 *    (position_check_assign): that record is a redelivery, unless the log was replaced;
 *  - a partition where a record turned out to sit at a reused position, or whose log no
 *    longer holds a record read earlier (position_probe.h), is read again from its
 *    beginning (position_check_reread, position_check_reread_replaced): what is stored is
 *    skipped, what was never read lands. */
#ifndef EVENTSINK_POSITION_CHECK_H
#define EVENTSINK_POSITION_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

struct position_check;

struct position_check *position_check_new(void);
void position_check_free(struct position_check *pc);

/* From the rebalance callback, before the assign: sets the start offsets in parts. Bounded
 * (10 s in all); what cannot be read in time starts at its committed offset. */
void position_check_assign(struct position_check *pc, rd_kafka_t *rk,
                           rd_kafka_topic_partition_list_t *parts);

/* True when the record at (topic, partition, offset) is the one a partition was started
 * at by position_check_assign (each partition's first record after it decides, once). The
 * pipeline then drops it when the journal or the DLQ holds it already, whatever the
 * policies would decide now: a redelivery is a no-op even after a policy change. */
bool position_check_take(struct position_check *pc, const char *topic, int32_t partition,
                         int64_t offset);

/* The consumer handed out this record (for every record, from the consumer thread): a
 * re-read that has come past the offset it began at is over. */
void position_check_consumed(struct position_check *pc, const char *topic, int32_t partition,
                             int64_t offset);

/* reused: per partition, the lowest offset of a batch whose record was kept at a new
 * generation. Seeks each partition to its beginning, unless that offset is its first one
 * or the record was fetched before the last re-read of the partition began (in flight
 * then: the re-read covers it). From the consumer thread. */
void position_check_reread(struct position_check *pc, rd_kafka_t *rk,
                           const rd_kafka_topic_partition_list_t *reused);

/* replaced: partitions whose log no longer holds a record this consumer read (offset: that
 * record's; position_probe.h). Seeks each to its beginning, unless a re-read of it began
 * after that record was read. From the consumer thread. */
void position_check_reread_replaced(struct position_check *pc, rd_kafka_t *rk,
                                    const rd_kafka_topic_partition_list_t *replaced);

/* Partitions were revoked: the re-read marks are stale. */
void position_check_forget(struct position_check *pc);

#endif
