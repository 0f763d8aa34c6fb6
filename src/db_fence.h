/* The fence: the sink's own position in each Kafka partition (sink_offsets), written in
 * the transaction of every batch, so that no record is stored twice although the journal
 * and the DLQ, partitioned by time, have no unique index on the Kafka position.
 *
 *   1. fence_read(): each partition's stored position and version, without a lock.
 *      A record below the position may be stored already: it is looked up in the journal
 *      (maybe_stored; the DLQ looks every record up); one at or above it cannot be, unless another
 * writer stores it while this batch is written:
 *   2. fence_advance(), last in the transaction: locks the partitions' rows (one order for
 *      every writer), moves their position and version. When a version moved since step
 *      1, another batch of that partition committed meanwhile;
 *   3. fence_duplicated() then looks for a record of this batch below that batch's
 *      position stored twice (journal and DLQ together). Found: the caller rolls back and writes
 * the batch again, every record looked up. Of two writers of one record (a consumer that lost its
 * partition and the one that got it, or a re-read), the second to take the lock sees the first's
 * commit. */
#ifndef EVENTSINK_DB_FENCE_H
#define EVENTSINK_DB_FENCE_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "db.h"
#include "pgarray.h"

/* "what: PostgreSQL's error" (malloc'd, db.c); remembers its SQLSTATE for
 * db_write_batch's result (a conflict between transactions, or an outage). */
char *db_error_text(PGconn *conn, PGresult *res, const char *what);

struct fence_part;

struct fence {
    struct fence_part *parts;
    size_t n, cap;
    struct pgarray cols[5];
    struct buf scratch;
};

void fence_free(struct fence *f);

/* Step 1 for the batch items[0..n): sets each item's maybe_stored (all of them when
 * lookup_all). False with *err when PostgreSQL failed. */
bool fence_read(struct fence *f, PGconn *conn, struct batch_item *items, size_t n, bool lookup_all,
                char **err);

/* Steps 2 and 3: 1 when a record of the batch was journaled twice (roll back, write
 * again), 0 when not, -1 with *err when PostgreSQL failed. */
int fence_close(struct fence *f, PGconn *conn, const struct batch_item *items, size_t n,
                char **err);

#endif
