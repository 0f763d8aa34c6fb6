/* PostgreSQL for the automation thread (scheduler.c), kept behind the db* files like db_rows.h. */
#ifndef EVENTSINK_DB_SCHEDULER_H
#define EVENTSINK_DB_SCHEDULER_H

struct pg_conn; /* db_rows.h */

/* The scheduler's own connection (db_open's options, application_name
 * eventsink-scheduler); NULL when PostgreSQL cannot be reached. */
struct pg_conn *db_scheduler_connect(const char *dsn);

#endif
