/* The replay engine: produces the items of a replay job back into Kafka with the markers of
 * CONTRACT section 4, and records each item's outcome. Used by the synchronous endpoints
 * (POST /replay/{id}, POST /dlq/{id}/retry) and by the background worker. */
#ifndef EVENTSINK_REPLAY_H
#define EVENTSINK_REPLAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "policy_ctl.h"
#include "producer.h"

struct pg_conn; /* db_rows.h */

struct replay_env {
    const struct config *cfg;
    struct producer *producer;
    struct policy_ctl *ctl;
};

struct replay_outcome {
    int sent, failed;     /* in this chunk */
    int unknown;          /* Kafka may have written them: left pending, checked later */
    bool nothing_pending; /* the job has no pending item left */
    /* the last item sent, for the synchronous answers */
    char topic[256];
    int32_t partition;
    int64_t offset;
    char error[256]; /* the last failure */
};

/* Produces up to `limit` pending items of job_id (in seq order), waits for Kafka's
 * acknowledgements, and records each outcome as it arrives. False (and *err) when
 * PostgreSQL failed. An item Kafka did not write is failed (not retried); one it may have
 * written (no definite answer) stays pending and is checked against the journal at the
 * next chunk before it is produced again: an item counted sent has one journal row, one
 * counted failed has none. */
bool replay_run_chunk(struct pg_conn *c, struct replay_env *env, int64_t job_id, const char *tag,
                      int limit, const atomic_bool *abort, struct replay_outcome *out, char **err);

/* Adds the DLQ markers to a raw JSON object (before its closing brace, so they win over
 * older markers): appends the result to out. False when raw is not a JSON object. */
bool replay_mark_dlq_payload(const char *raw, size_t len, int64_t dlq_id, const char *tag,
                             int64_t job_id, struct buf *out);

#endif
