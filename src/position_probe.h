/* The position probe: a topic deleted and created again while the consumer runs
 * (CONTRACT 9.2, reused offsets).
 *
 * librdkafka 2.0.2 has no topic ids: when a subscribed topic is deleted and created again
 * between two of the consumer's requests (no fetch error, no metadata without it, so no
 * rebalance), the consumer goes on fetching the new log by name from its old positions,
 * and the new log's records before them are never read. Nothing in the records says so.
 * The probe notices it from the outside: every PROBE_INTERVAL_MS it fetches, with a client
 * of its own, one record the consumer read earlier (a witness per partition: the last one
 * read before the previous round, or the first one since the partition was assigned) and
 * compares it with what the consumer saw there (Kafka timestamp, key, length). When the
 * log no longer holds it (another record at its offset, or the log ends before it), the
 * partition is read again from its beginning (position_check_reread_replaced): what is
 * stored already is skipped, what was never read lands. A recreation is found within two
 * rounds; what the consumer read meanwhile is kept at its positions as any record is. A
 * witness removed by retention or compaction, or a round that cannot reach the broker,
 * proves nothing and is tried again. */
#ifndef EVENTSINK_POSITION_PROBE_H
#define EVENTSINK_POSITION_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "config.h"

struct position_probe;

/* Starts the probe's own client (kafka_consumer_conf, no group membership) and thread. */
struct position_probe *position_probe_start(const struct config *cfg, const char *bootstrap,
                                            int interval_ms, char **err);
/* Stops the thread (within about 2 s: a watermark query in progress) and the client.
 * Accepts NULL. */
void position_probe_stop(struct position_probe *p);

/* The consumer read this record (from the consumer thread, for every record). */
void position_probe_saw(struct position_probe *p, const char *topic, int32_t partition,
                        int64_t offset, int64_t timestamp, const void *key, size_t key_len,
                        size_t len);

/* The partitions found replaced since the last call (offset: the witness's), or NULL. The
 * caller destroys the list. */
rd_kafka_topic_partition_list_t *position_probe_replaced(struct position_probe *p);

/* The partitions were revoked: what was seen of them, and a round in progress, no longer
 * count. */
void position_probe_forget(struct position_probe *p);

/* For tests: runs one round now, in the caller's thread; returns how many witnesses were
 * found replaced. */
int position_probe_round(struct position_probe *p);

#endif
