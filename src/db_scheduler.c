#include "db_scheduler.h"

#include "db.h"

struct pg_conn *db_scheduler_connect(const char *dsn)
{
    return db_open(dsn, "eventsink-scheduler", DB_STATEMENT_TIMEOUT_MS, NULL);
}
