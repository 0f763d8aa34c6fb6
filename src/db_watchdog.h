/* A bound on every PostgreSQL call the service makes while it runs. PostgreSQL's own
 * statement_timeout ends a slow statement, but not a call to a server that is frozen (a VM
 * or a SIGSTOP pause) or behind a network that holds its packets: the kernel accepts and
 * acknowledges, nothing answers, and libpq waits for ever. A call that gets no answer for
 * longer than its bound has its connection cut (shutdown() of the socket, from the
 * watchdog's thread): the call fails as a lost connection, nothing of an open transaction
 * is committed by us, and the caller retries on a new connection (connect_timeout bounds
 * that one). A COMMIT the server had already read may still commit when it thaws: the
 * retry finds those rows (the sink_offsets fence, db_fence.h), nothing is stored twice. */
#ifndef EVENTSINK_DB_WATCHDOG_H
#define EVENTSINK_DB_WATCHDOG_H

#include <stdbool.h>

#include <libpq-fe.h>

/* the bound of a call: the server's statement_timeout (db.h) and a margin */
#define DB_WATCHDOG_BOUND_MS (60000 + 15000)

/* Watches the calls this thread makes on c until db_watchdog_end(), bound_ms each (0: the
 * thread's bound, db_watchdog_thread_bound). Nested pairs count once. */
void db_watchdog_begin(PGconn *c, int bound_ms);
/* One call answered: the bound starts again for the next one. */
void db_watchdog_progress(void);
/* True when the watchdog cut the connection since db_watchdog_begin(). */
bool db_watchdog_end(void);

/* This thread's bound for db_watchdog_begin(c, 0), for a thread whose statements may run
 * longer (retention's); returns the one before. */
int db_watchdog_thread_bound(int bound_ms);

/* connections cut so far */
unsigned long db_watchdog_cut_total(void);

#endif
