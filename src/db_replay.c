#include "db_replay.h"

#include "db.h"

struct pg_conn *db_replay_connect(const char *dsn)
{
    return db_open(dsn, "eventsink-replay", DB_STATEMENT_TIMEOUT_MS, NULL);
}
