/* PostgreSQL for the replay worker, kept behind the db* files like db_rows.h. */
#ifndef EVENTSINK_DB_REPLAY_H
#define EVENTSINK_DB_REPLAY_H

struct pg_conn; /* db_rows.h */

/* The replay worker's own connection (db_open's options, application_name
 * eventsink-replay); NULL when PostgreSQL cannot be reached. */
struct pg_conn *db_replay_connect(const char *dsn);

#endif
