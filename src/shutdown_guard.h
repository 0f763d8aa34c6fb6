/* The bound on SIGTERM/SIGINT (CONTRACT 9.1): the service stops in order (finish the batch
 * in flight, commit, close), but if anything it waits for is stuck (a PostgreSQL that does
 * not answer, a broker that does not, a thread that does not come back), the guard ends
 * the process with exit code 1 once the stop has taken SHUTDOWN_GUARD_MS. Nothing is lost
 * by that: offsets are committed only after their rows, so whatever was not committed is
 * delivered again after a restart. */
#ifndef EVENTSINK_SHUTDOWN_GUARD_H
#define EVENTSINK_SHUTDOWN_GUARD_H

#include <signal.h>

#define SHUTDOWN_GUARD_MS 9000

/* Starts the guard; it watches *stop_flag (set by the signal handler). */
void shutdown_guard_start(volatile sig_atomic_t *stop_flag);
/* The stop is over: ends the guard. Accepts a guard never started. */
void shutdown_guard_stop(void);

#endif
