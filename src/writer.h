/* A batch writer: one thread that writes one decided batch at a time to PostgreSQL on its
 * lane's connection, while the pipeline's thread polls and decides the next one. The
 * pipeline runs batch.writers of them; it takes their outcomes oldest first, so offsets
 * are still committed in the order the records were consumed (pipeline.c). */
#ifndef EVENTSINK_WRITER_H
#define EVENTSINK_WRITER_H

#include <stdbool.h>

#include "db.h"

struct writer_job {
    /* in: the connection and the batch belong to the writer until the job is done */
    struct db *db;
    struct batch_item *items;
    size_t n;
    int policy_version;
    db_persisted_fn on_persisted;
    db_dlq_fn on_dlq;
    void *opaque;
    void (*done)(void *arg); /* called from the writer thread once the job is done */
    void *done_arg;
    /* out */
    enum db_result rc;
    char *err; /* malloc'd, on DB_RETRY */
    struct write_stats st;
};

struct writer *writer_start(char **err);
/* Waits for the job in progress, then ends the thread. Accepts NULL. */
void writer_stop(struct writer *w);

/* Hands a job over; there must be none in progress. */
void writer_submit(struct writer *w, struct writer_job *job);
/* True when no job is in progress (none submitted, or the last one is done). */
bool writer_idle(struct writer *w);
/* Blocks until no job is in progress. */
void writer_wait(struct writer *w);
/* The same, for at most timeout_ms: true when no job is in progress. */
bool writer_wait_for(struct writer *w, int timeout_ms);

#endif
