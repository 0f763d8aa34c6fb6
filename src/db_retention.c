#include "db_retention.h"

#include "db.h"

struct pg_conn *db_retention_connect(const char *dsn, char **err)
{
    return db_open(dsn, "eventsink-retention", DB_STATEMENT_TIMEOUT_MS, err);
}
