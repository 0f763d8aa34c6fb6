/* PostgreSQL for `eventsink retention` (the service applies retention on the scheduler's
 * connection), kept behind the db* files like db_rows.h. */
#ifndef EVENTSINK_DB_RETENTION_H
#define EVENTSINK_DB_RETENTION_H

struct pg_conn; /* db_rows.h */

/* A connection named eventsink-retention; NULL (with *err, malloc'd) when PostgreSQL
 * cannot be reached. */
struct pg_conn *db_retention_connect(const char *dsn, char **err);

#endif
