/* A small pool of PostgreSQL connections for the HTTP threads, so that a slow query on one
 * request never blocks the pipeline's own connection or the other requests. */
#ifndef EVENTSINK_DB_POOL_H
#define EVENTSINK_DB_POOL_H

struct db_pool;
struct pg_conn; /* libpq's PGconn */

struct db_pool *db_pool_create(const char *dsn, int max_conns, int statement_timeout_ms);
/* Accepts NULL. Every connection must have been released. */
void db_pool_destroy(struct db_pool *p);

/* Borrows a working connection, waiting up to wait_ms for one to be free. NULL when
 * PostgreSQL is unreachable or the pool stays busy; *err (static text) says which. */
struct pg_conn *db_pool_get(struct db_pool *p, int wait_ms, const char **err);
/* Gives it back; a broken connection is closed instead of pooled. */
void db_pool_put(struct db_pool *p, struct pg_conn *c);

#endif
