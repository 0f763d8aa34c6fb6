/* The background replay worker: runs batch, range and DLQ-retry jobs at their rate, one at
 * a time, claiming each with an advisory lock so that two instances never run the same job,
 * and resuming interrupted jobs at their first pending item. */
#ifndef EVENTSINK_REPLAY_WORKER_H
#define EVENTSINK_REPLAY_WORKER_H

#include "replay.h"

/* Starts the worker thread (it connects to PostgreSQL by itself). */
void replay_worker_start(struct replay_env *env);
/* Stops between two chunks, leaving what is unfinished pending; joins the thread. */
void replay_worker_stop(void);
/* A job was created: look now rather than at the next tick. */
void replay_worker_wake(void);

#endif
