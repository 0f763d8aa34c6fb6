#include "db.h"

#include <stdio.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "assets.h"
#include "buf.h"
#include "db_fence.h"
#include "db_sql.h"
#include "log.h"
#include "metrics.h"
#include "pgarray.h"
#include "db_watchdog.h"
#include "replay_auth.h"

#define DLQ_NCOLS 14 /* the parameters of SQL_DLQ_INSERT */

struct db {
    PGconn *conn;
    bool prepared;
    /* reused between batches: one array literal per column */
    struct pgarray cols[15];
    struct buf scratch;
    struct buf copybuf; /* COPY data of the plain originals of a batch */
    struct fence fence; /* the sink's position in the batch's partitions */
};

static bool exec_ok(struct db *db, const char *sql, char **err);

/* The SQLSTATE of the last error pg_error() described on this thread: a batch write that
 * failed tells a conflict between transactions from an outage by it. */
static _Thread_local char last_state[6];

/* A conflict with another transaction, not an outage: the same write may succeed at once. */
static bool conflict_state(const char *state)
{
    return strcmp(state, "40P01") == 0     /* deadlock_detected */
           || strcmp(state, "40001") == 0  /* serialization_failure */
           || strcmp(state, "55P03") == 0; /* lock_not_available (lock_timeout) */
}

char *db_error_text(PGconn *conn, PGresult *res, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(last_state, sizeof last_state, "%s", state ? state : "");
    struct buf m = {0};
    const char *e = res ? PQresultErrorMessage(res) : NULL;
    if (!e || !*e) e = PQerrorMessage(conn);
    buf_printf(&m, "%s: %s", what, e && *e ? e : "unknown error");
    while (m.len && (m.data[m.len - 1] == '\n' || m.data[m.len - 1] == ' '))
        m.data[--m.len] = '\0';
    return m.data;
}

static char *pg_error(PGconn *conn, PGresult *res, const char *what)
{
    return db_error_text(conn, res, what);
}

static void notice_quiet(void *arg, const PGresult *res)
{
    (void)arg;
    (void)res; /* NOTICEs (e.g. "relation already exists, skipping") are not operator news */
}

PGconn *db_open(const char *dsn, const char *application_name, int statement_timeout_ms, char **err)
{
    char options[160];
    snprintf(options, sizeof options,
             "-c statement_timeout=%d -c lock_timeout=%d -c idle_in_transaction_session_timeout=%d"
             " -c TimeZone=UTC",
             statement_timeout_ms, DB_LOCK_TIMEOUT_MS, DB_IDLE_IN_TX_TIMEOUT_MS);
    /* the DSN comes last so that what the operator wrote wins over these defaults */
    const char *keys[] = {"application_name",
                          "connect_timeout",
                          "keepalives",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "tcp_user_timeout",
                          "options",
                          "dbname",
                          NULL};
    const char *vals[] = {application_name, "5", "1", "10", "5", "3", "30000", options, dsn, NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        if (err) *err = pg_error(conn, NULL, "cannot connect to PostgreSQL");
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeReceiver(conn, notice_quiet, NULL);
    return conn;
}

bool db_cancel(PGconn *conn)
{
    PGcancel *c = conn ? PQgetCancel(conn) : NULL;
    if (!c) return false;
    char why[256];
    bool ok = PQcancel(c, why, sizeof why) == 1;
    if (!ok) log_warn("PostgreSQL: cannot cancel the statement in progress: %s", why);
    PQfreeCancel(c);
    return ok;
}

struct db *db_connect(const char *dsn, const char *application_name, char **err)
{
    PGconn *conn = db_open(dsn, application_name, DB_STATEMENT_TIMEOUT_MS, err);
    if (!conn) return NULL;
    struct db *db = xcalloc(1, sizeof *db);
    db->conn = conn;
    return db;
}

void db_cancel_write(struct db *db)
{
    if (db) db_cancel(db->conn);
}

void db_close(struct db *db)
{
    if (!db) return;
    PQfinish(db->conn);
    db->conn = NULL;
    for (size_t i = 0; i < sizeof db->cols / sizeof db->cols[0]; i++)
        pgarray_free(&db->cols[i]);
    buf_free(&db->scratch);
    buf_free(&db->copybuf);
    fence_free(&db->fence);
    free(db);
}

bool db_alive(struct db *db)
{
    return db && db->conn && PQstatus(db->conn) == CONNECTION_OK;
}

int db_position_holds(struct db *db, const struct record *r)
{
    if (!db_alive(db) || r->timestamp_ms <= 0) return -1;
    char part[16], off[24], ts[24];
    snprintf(part, sizeof part, "%d", (int)r->partition);
    snprintf(off, sizeof off, "%" PRId64, r->offset);
    snprintf(ts, sizeof ts, "%" PRId64, r->timestamp_ms);
    struct buf key = {0};
    if (r->key) record_text(&key, r->key, r->key_len);
    const char *params[] = {r->topic, part, off, r->key ? (key.data ? key.data : "") : NULL, ts};
    db_watchdog_begin(db->conn, DB_WATCHDOG_BOUND_MS);
    PGresult *res = PQexecParams(db->conn, SQL_POSITION_HOLDS, 5, NULL, params, NULL, NULL, 0);
    db_watchdog_end();
    int rc = PQresultStatus(res) == PGRES_TUPLES_OK ? PQgetvalue(res, 0, 0)[0] == 't' : -1;
    PQclear(res);
    buf_free(&key);
    return rc;
}

bool db_load_replay_keys(struct db *db, char **err)
{
    db_watchdog_begin(db->conn, DB_WATCHDOG_BOUND_MS);
    PGresult *res = PQexec(db->conn, SQL_REPLAY_KEYS);
    db_watchdog_end();
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        *err = pg_error(db->conn, res, "reading replay_keys");
        PQclear(res);
        return false;
    }
    int n = PQntuples(res);
    struct replay_key *keys = xcalloc((size_t)n + 1, sizeof *keys);
    size_t nk = 0;
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        unsigned char *secret = PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, 1), &len);
        if (secret && len > 0 && len <= sizeof keys[nk].secret) { /* else not a usable key */
            keys[nk].id = atoi(PQgetvalue(res, i, 0));
            memcpy(keys[nk].secret, secret, len);
            keys[nk++].len = len;
        }
        if (secret) {
            memset(secret, 0, len);
            PQfreemem(secret);
        }
    }
    PQclear(res);
    replay_auth_set_keys(keys, nk);
    memset(keys, 0, ((size_t)n + 1) * sizeof *keys);
    free(keys);
    if (nk == 0) {
        *err = xstrdup("replay_keys holds no key that is not retired: replays cannot be signed "
                       "(INSERT INTO replay_keys DEFAULT VALUES adds one)");
        return false;
    }
    return true;
}

/* SELECT 1 answers at once from a server that runs: 10 s without an answer is a frozen
 * server (or a network holding its packets), not a slow one */
#define PING_BOUND_MS 10000

bool db_ping(struct db *db)
{
    db_watchdog_begin(db_alive(db) ? db->conn : NULL, PING_BOUND_MS);
    bool ok = exec_ok(db, "SELECT 1", NULL);
    db_watchdog_end();
    return ok && db_alive(db);
}

PGconn *db_conn(struct db *db)
{
    return db->conn;
}

static bool exec_ok(struct db *db, const char *sql, char **err)
{
    db_watchdog_progress();
    PGresult *res = PQexec(db->conn, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok && err) *err = pg_error(db->conn, res, "PostgreSQL");
    PQclear(res);
    return ok;
}

/* ---- migrations --------------------------------------------------------------------------- */

static int migration_version(const char *name)
{
    /* "sql/001_init.sql" -> 1 */
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    return atoi(base);
}

bool db_migrate(struct db *db, int *applied, char **err)
{
    int count = 0;
    bool ok = false;
    /* another instance's migration may take long: wait for it (only here) */
    if (!exec_ok(db, "SET lock_timeout = 0", err)) return false;
    if (!exec_ok(db, SQL_MIGRATION_LOCK, err)) return false;
    if (!exec_ok(db, SQL_MIGRATIONS_TABLE, err)) goto out;

    PGresult *res = PQexec(db->conn, SQL_MIGRATION_APPLIED);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        *err = pg_error(db->conn, res, "reading schema_migrations");
        PQclear(res);
        goto out;
    }
    for (const struct asset *a = assets; a->name; a++) {
        if (strncmp(a->name, "sql/", 4) != 0) continue;
        int version = migration_version(a->name);
        bool done = false;
        for (int i = 0; i < PQntuples(res) && !done; i++)
            done = atoi(PQgetvalue(res, i, 0)) == version;
        if (done) continue;
        log_info("applying migration %s", a->name);
        /* a migration may rewrite or index a large table: no statement limit for it */
        if (!exec_ok(db, "BEGIN", err) || !exec_ok(db, "SET LOCAL statement_timeout = 0", err)) {
            PQclear(res);
            goto out;
        }
        char *e = NULL;
        if (!exec_ok(db, a->data, &e)) {
            *err = xstrdup(e);
            struct buf m = {0};
            buf_printf(&m, "migration %s failed: %s", a->name, e);
            free(*err);
            free(e);
            *err = m.data;
            exec_ok(db, "ROLLBACK", NULL);
            PQclear(res);
            goto out;
        }
        char vbuf[16];
        snprintf(vbuf, sizeof vbuf, "%d", version);
        const char *params[] = {vbuf, a->name, a->data};
        PGresult *r2 = PQexecParams(db->conn, SQL_MIGRATION_RECORD, 3, NULL, params, NULL, NULL, 0);
        bool rec_ok = PQresultStatus(r2) == PGRES_COMMAND_OK;
        if (!rec_ok) *err = pg_error(db->conn, r2, "recording the migration");
        PQclear(r2);
        if (!rec_ok || !exec_ok(db, "COMMIT", err)) {
            exec_ok(db, "ROLLBACK", NULL);
            PQclear(res);
            goto out;
        }
        count++;
    }
    PQclear(res);
    ok = true;
out:
    exec_ok(db, SQL_MIGRATION_UNLOCK, NULL);
    exec_ok(db, "RESET lock_timeout", NULL);
    if (applied) *applied = count;
    return ok;
}

/* ---- the batch write ---------------------------------------------------------------------- */

static bool prepare(struct db *db, char **err)
{
    if (db->prepared) return true;
    static const struct {
        const char *name, *sql;
        int nparams;
    } stmts[] = {
        {"journal_insert", SQL_JOURNAL_INSERT, 15},
        {"journal_insert_resolve", SQL_JOURNAL_INSERT_RESOLVE, 15},
        {"dlq_insert", SQL_DLQ_INSERT, DLQ_NCOLS},
    };
    for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++) {
        PGresult *res = PQprepare(db->conn, stmts[i].name, stmts[i].sql, stmts[i].nparams, NULL);
        bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok) *err = pg_error(db->conn, res, stmts[i].name);
        PQclear(res);
        if (!ok) {
            PQclear(PQexec(db->conn, "DEALLOCATE ALL")); /* the next try prepares them all */
            return false;
        }
    }
    db->prepared = true;
    return true;
}

/* SQLSTATE classes that belong to one row's data, not to the server or the connection:
 * 22 data exception, 23 integrity constraint, 54 program limit (e.g. a jsonb too big),
 * P0 raised by a trigger. */
static bool row_level_error(PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!state) return false;
    return strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
           strncmp(state, "54", 2) == 0 || strncmp(state, "P0", 2) == 0;
}

static void fill_journal_cols(struct db *db, struct batch_item *it, size_t from, size_t to)
{
    for (int c = 0; c < 15; c++)
        pgarray_reset(&db->cols[c]);
    struct buf *tmp = &db->scratch;
    for (size_t i = from; i < to; i++) {
        const struct record *r = it[i].rec;
        const struct decision *d = &it[i].d;
        if (d->to_dlq || it[i].copied) continue;
        pgarray_cstr(&db->cols[0], d->tenant_id);
        pgarray_cstr(&db->cols[1], d->event_type);
        pgarray_cstr(&db->cols[2], r->topic);
        pgarray_int(&db->cols[3], r->partition);
        pgarray_int(&db->cols[4], r->offset);
        if (r->key) {
            buf_reset(tmp);
            record_text(tmp, r->key, r->key_len);
            pgarray_str(&db->cols[5], tmp->data ? tmp->data : "", tmp->len);
        } else {
            pgarray_str(&db->cols[5], NULL, 0);
        }
        buf_reset(tmp);
        record_headers_json(r, tmp);
        if (r->nheaders)
            pgarray_str(&db->cols[6], tmp->data, tmp->len);
        else
            pgarray_str(&db->cols[6], NULL, 0);
        pgarray_str(&db->cols[7], r->value ? r->value : "", r->value_len);
        pgarray_cstr(&db->cols[8], d->replay_source);
        pgarray_int_or_null(&db->cols[9], d->replayed_from_event_id);
        pgarray_int_or_null(&db->cols[10], d->replay_job_id);
        pgarray_int_or_null(&db->cols[11], d->replayed_from_dlq_id);
        pgarray_cstr(&db->cols[12], d->replay_verified < 0 ? NULL : d->replay_verified ? "t" : "f");
        pgarray_int_or_null(&db->cols[13], r->timestamp_ms > 0 ? r->timestamp_ms : 0);
        pgarray_cstr(&db->cols[14], it[i].maybe_stored ? "t" : "f");
    }
}

/* The DLQ error column when the policy gave no detail. */
static const char *reason_text(const char *reason)
{
    if (strcmp(reason, "missing_tenant") == 0) return "the describe hook found no tenant_id";
    if (strcmp(reason, "policy_route") == 0) return "the route hook sent the event to the DLQ";
    return reason;
}

static void fill_dlq_cols(struct db *db, struct batch_item *it, size_t n, int policy_version)
{
    for (int c = 0; c < DLQ_NCOLS; c++)
        pgarray_reset(&db->cols[c]);
    struct buf *tmp = &db->scratch;
    for (size_t i = 0; i < n; i++) {
        const struct record *r = it[i].rec;
        const struct decision *d = &it[i].d;
        if (!d->to_dlq) continue;
        pgarray_cstr(&db->cols[0], r->topic);
        pgarray_int(&db->cols[1], r->partition);
        pgarray_int(&db->cols[2], r->offset);
        if (r->key) {
            buf_reset(tmp);
            record_text(tmp, r->key, r->key_len);
            pgarray_str(&db->cols[3], tmp->data ? tmp->data : "", tmp->len);
        } else {
            pgarray_str(&db->cols[3], NULL, 0);
        }
        buf_reset(tmp);
        record_headers_json(r, tmp);
        if (r->nheaders)
            pgarray_str(&db->cols[4], tmp->data, tmp->len);
        else
            pgarray_str(&db->cols[4], NULL, 0);
        pgarray_bytea(&db->cols[5], r->value ? r->value : "", r->value_len);
        pgarray_cstr(&db->cols[6], d->reason);
        if (d->detail) {
            buf_reset(tmp);
            record_text(tmp, d->detail, strlen(d->detail));
            pgarray_str(&db->cols[7], tmp->data ? tmp->data : "", tmp->len);
        } else {
            pgarray_cstr(&db->cols[7], reason_text(d->reason));
        }
        pgarray_int(&db->cols[8], policy_version);
        pgarray_cstr(&db->cols[9], d->tenant_id);
        pgarray_int_or_null(&db->cols[10], d->replayed_from_dlq_id);
        pgarray_int_or_null(&db->cols[11], r->timestamp_ms > 0 ? r->timestamp_ms : 0);
        pgarray_cstr(&db->cols[12], d->event_type);
        pgarray_int_or_null(&db->cols[13], d->replayed_from_dlq_id ? d->replay_job_id : 0);
    }
}

static PGresult *exec_cols(struct db *db, const char *stmt, int ncols)
{
    const char *params[15];
    for (int c = 0; c < ncols; c++)
        params[c] = pgarray_text(&db->cols[c]);
    db_watchdog_progress();
    return PQexecPrepared(db->conn, stmt, ncols, params, NULL, NULL, 0);
}

static int64_t get_i64(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static const char *get_str(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

static void report_persisted(PGresult *res, struct write_stats *stats, db_persisted_fn on_persisted,
                             db_dlq_fn on_dlq, void *opaque)
{
    int rows = PQntuples(res);
    for (int k = 0; k < rows; k++) {
        if (PQgetvalue(res, k, 8)[0] == 't') {
            /* a second copy of a replay, kept in the DLQ (resolved): see SQL_JOURNAL_ROWS */
            stats->dlq_new++;
            stats->duplicate_replays++;
            struct dlq_row d = {.id = get_i64(res, k, 0),
                                .reason = "duplicate_replay",
                                .topic = get_str(res, k, 3)};
            if (on_dlq) on_dlq(opaque, &d);
            continue;
        }
        stats->journal_new++;
        struct persisted_row row = {
            .id = get_i64(res, k, 0),
            .tenant = get_str(res, k, 1),
            .event_type = get_str(res, k, 2),
            .topic = get_str(res, k, 3),
            .replay_count = (int)get_i64(res, k, 4),
            .from_event = get_i64(res, k, 5),
            .from_dlq = get_i64(res, k, 6),
            .source = get_str(res, k, 7),
            .unlinked = get_i64(res, k, 9),
            .reused = PQgetvalue(res, k, 10)[0] == 't',
            .partition = (int32_t)get_i64(res, k, 11),
            .offset = get_i64(res, k, 12),
        };
        stats->offsets_reused += row.reused;
        if (on_persisted) on_persisted(opaque, &row);
    }
}

/* ---- COPY of the plain originals ------------------------------------------------------------

 * An original that carries no marker needs nothing from the database but its row, so it
 * goes in by COPY, PostgreSQL's fastest way in; replays (which need their parent's depth)
 * and retried DLQ entries (which resolve their entry) take the INSERT statement, in the
 * same transaction, and so do the records that may be stored already (below the sink's
 * position in their partition, db_fence.h), which the INSERT statement looks up. */

static bool plain_original(const struct batch_item *it)
{
    const struct decision *d = &it->d;
    return !d->to_dlq && !it->maybe_stored && !d->replay_source && !d->replayed_from_event_id &&
           !d->replayed_from_dlq_id && !d->replay_job_id;
}

/* COPY ... (FORMAT binary): a field is its length (int32, -1 for NULL) and its bytes in the
 * type's binary form. No text escaping on either side, and the Kafka timestamp goes as an
 * integer instead of timestamptz text that PostgreSQL would have to parse. */
static void bin_u16(struct buf *b, uint16_t v)
{
    unsigned char x[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    buf_append(b, x, 2);
}

static void bin_u32(struct buf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    buf_append(b, x, 4);
}

static void bin_u64(struct buf *b, uint64_t v)
{
    bin_u32(b, (uint32_t)(v >> 32));
    bin_u32(b, (uint32_t)v);
}

/* text (or a NULL when s is NULL) */
static void bin_text(struct buf *b, const char *s, size_t n)
{
    if (!s) {
        bin_u32(b, UINT32_MAX); /* -1 */
        return;
    }
    bin_u32(b, (uint32_t)n);
    buf_append(b, s, n);
}

/* jsonb: format version 1, then the JSON text */
static void bin_jsonb(struct buf *b, const char *s, size_t n)
{
    if (!s) {
        bin_u32(b, UINT32_MAX);
        return;
    }
    bin_u32(b, (uint32_t)n + 1);
    buf_putc(b, 1);
    buf_append(b, s, n);
}

/* 1970-01-01 to 2000-01-01 (PostgreSQL's epoch), in milliseconds */
#define PG_EPOCH_MS INT64_C(946684800000)

/* The record's Kafka timestamp as timestamptz (microseconds since 2000-01-01 UTC), NULL
 * when it has none. */
static void bin_kafka_ts(struct buf *b, int64_t ms)
{
    if (ms <= 0) {
        bin_u32(b, UINT32_MAX);
        return;
    }
    bin_u32(b, 8);
    bin_u64(b, (uint64_t)((ms - PG_EPOCH_MS) * 1000));
}

/* 1: copied (items marked), 0: a row-level problem (a duplicate, a constraint: the caller
 * rolls back and writes the batch by INSERT), -1: the connection failed (*err). */
static int copy_plain(struct db *db, struct batch_item *items, size_t n, size_t *copied, char **err)
{
    struct buf *b = &db->copybuf, *tmp = &db->scratch;
    buf_reset(b);
    *copied = 0;
    static const char signature[11] = "PGCOPY\n\377\r\n";
    buf_append(b, signature, sizeof signature); /* the 11th byte is the NUL */
    bin_u32(b, 0);                              /* flags */
    bin_u32(b, 0);                              /* header extension length */
    for (size_t i = 0; i < n; i++) {
        if (!plain_original(&items[i])) continue;
        const struct record *r = items[i].rec;
        const struct decision *d = &items[i].d;
        bin_u16(b, 9); /* fields, in the order of SQL_JOURNAL_COPY */
        bin_text(b, d->tenant_id, strlen(d->tenant_id));
        bin_text(b, d->event_type, d->event_type ? strlen(d->event_type) : 0);
        bin_text(b, r->topic, strlen(r->topic));
        bin_u32(b, 4);
        bin_u32(b, (uint32_t)r->partition);
        bin_u32(b, 8);
        bin_u64(b, (uint64_t)r->offset);
        if (r->key) {
            buf_reset(tmp);
            record_text(tmp, r->key, r->key_len);
            bin_text(b, tmp->data ? tmp->data : "", tmp->len);
        } else {
            bin_text(b, NULL, 0);
        }
        if (r->nheaders) {
            buf_reset(tmp);
            record_headers_json(r, tmp);
            bin_jsonb(b, tmp->data, tmp->len);
        } else {
            bin_jsonb(b, NULL, 0);
        }
        bin_jsonb(b, r->value ? r->value : "", r->value_len);
        bin_kafka_ts(b, r->timestamp_ms);
        (*copied)++;
    }
    bin_u16(b, UINT16_MAX); /* trailer: -1 */
    if (*copied == 0) return 1;
    PGresult *res = PQexec(db->conn, SQL_JOURNAL_COPY);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        bool row_level = row_level_error(res) && PQstatus(db->conn) == CONNECTION_OK;
        if (!row_level) *err = pg_error(db->conn, res, "starting COPY into the journal");
        PQclear(res);
        return row_level ? 0 : -1;
    }
    PQclear(res);
    if (PQputCopyData(db->conn, b->data, (int)b->len) != 1 || PQputCopyEnd(db->conn, NULL) != 1) {
        *err = pg_error(db->conn, NULL, "sending COPY data");
        return -1;
    }
    int rc = 1;
    while ((res = PQgetResult(db->conn)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            if (row_level_error(res) && PQstatus(db->conn) == CONNECTION_OK) {
                rc = rc == 1 ? 0 : rc;
            } else {
                if (rc != -1) *err = pg_error(db->conn, res, "COPY into the journal");
                rc = -1;
            }
        }
        PQclear(res);
    }
    if (rc == 1)
        for (size_t i = 0; i < n; i++)
            items[i].copied = plain_original(&items[i]);
    return rc;
}

static void report_copied(struct batch_item *items, size_t n, struct write_stats *stats,
                          db_persisted_fn on_persisted, void *opaque)
{
    for (size_t i = 0; i < n; i++) {
        if (!items[i].copied) continue;
        stats->journal_new++;
        struct persisted_row row = {.tenant = items[i].d.tenant_id,
                                    .event_type = items[i].d.event_type,
                                    .topic = items[i].rec->topic};
        if (on_persisted) on_persisted(opaque, &row);
    }
}

/* Inserts the journal rows of items[from..to); the caller clears the result. */
static PGresult *journal_insert(struct db *db, struct batch_item *items, size_t from, size_t to)
{
    fill_journal_cols(db, items, from, to);
    bool resolves = false; /* the statement that resolves DLQ entries only when needed */
    for (size_t i = from; i < to && !resolves; i++)
        resolves = !items[i].d.to_dlq && items[i].d.replayed_from_dlq_id;
    return exec_cols(db, resolves ? "journal_insert_resolve" : "journal_insert", 15);
}

/* db_write_batch() once; *twice set when the fence found a record of the batch journaled
 * by another writer meanwhile (rolled back: write it again, every record looked up). */
static enum db_result write_batch(struct db *db, struct batch_item *items, size_t n,
                                  int policy_version, bool lookup_all, bool *twice,
                                  struct write_stats *stats, db_persisted_fn on_persisted,
                                  db_dlq_fn on_dlq, void *opaque, char **err)
{
    memset(stats, 0, sizeof *stats);
    last_state[0] = '\0';
    if (!db_alive(db)) {
        *err = xstrdup("not connected to PostgreSQL");
        return DB_RETRY;
    }
    if (!prepare(db, err))
        return PQstatus(db->conn) == CONNECTION_OK && conflict_state(last_state) ? DB_CONFLICT
                                                                                 : DB_RETRY;
    PGresult *journal = NULL;
    PGresult **singles = NULL; /* row-by-row results when a row was refused */
    size_t nsingles = 0;
    if (!exec_ok(db, "BEGIN", err)) return DB_RETRY;
    if (!fence_read(&db->fence, db->conn, items, n, lookup_all, err)) {
        exec_ok(db, "ROLLBACK", NULL);
        goto retry;
    }

    size_t njournal = 0, ncopied = 0;
    for (size_t i = 0; i < n; i++) {
        njournal += !items[i].d.to_dlq;
        items[i].copied = false;
    }

    if (njournal) {
        int c = copy_plain(db, items, n, &ncopied, err);
        if (c < 0) {
            exec_ok(db, "ROLLBACK", NULL);
            goto retry;
        }
        if (c == 0) {
            /* a duplicate or a refused row: the INSERT statement sorts them out */
            exec_ok(db, "ROLLBACK", NULL);
            if (!exec_ok(db, "BEGIN", err)) return DB_RETRY;
            ncopied = 0;
        }
    }
    if (njournal > ncopied) {
        journal = journal_insert(db, items, 0, n);
        if (PQresultStatus(journal) != PGRES_TUPLES_OK) {
            if (!row_level_error(journal) || PQstatus(db->conn) != CONNECTION_OK) {
                *err = pg_error(db->conn, journal, "writing the journal");
                exec_ok(db, "ROLLBACK", NULL);
                goto retry;
            }
            /* one or more rows refused: find them one at a time, each under a savepoint
             * (the COPY above is rolled back too: every row goes one at a time) */
            PQclear(journal);
            journal = NULL;
            exec_ok(db, "ROLLBACK", NULL);
            for (size_t i = 0; i < n; i++)
                items[i].copied = false;
            ncopied = 0;
            if (!exec_ok(db, "BEGIN", err)) return DB_RETRY;
            for (size_t i = 0; i < n; i++) {
                if (items[i].d.to_dlq) continue;
                exec_ok(db, "SAVEPOINT row", NULL);
                PGresult *one = journal_insert(db, items, i, i + 1);
                if (PQresultStatus(one) == PGRES_TUPLES_OK) {
                    exec_ok(db, "RELEASE SAVEPOINT row", NULL);
                    singles = xrealloc(singles, (nsingles + 1) * sizeof *singles);
                    singles[nsingles++] = one;
                    continue;
                }
                if (!row_level_error(one) || PQstatus(db->conn) != CONNECTION_OK) {
                    *err = pg_error(db->conn, one, "writing the journal");
                    PQclear(one);
                    exec_ok(db, "ROLLBACK", NULL);
                    goto retry;
                }
                char *why = pg_error(db->conn, one, "PostgreSQL refused the row");
                PQclear(one);
                exec_ok(db, "ROLLBACK TO SAVEPOINT row", NULL);
                log_warn("%s[%d]@%lld: %s; dead-lettering it as db_reject", items[i].rec->topic,
                         (int)items[i].rec->partition, (long long)items[i].rec->offset, why);
                items[i].d.to_dlq = true;
                items[i].d.reason = "db_reject";
                free(items[i].d.detail);
                items[i].d.detail = why;
                stats->db_rejects++;
            }
        }
    }

    size_t ndlq = 0;
    for (size_t i = 0; i < n; i++)
        ndlq += items[i].d.to_dlq;
    PGresult *dlq = NULL;
    if (ndlq) {
        fill_dlq_cols(db, items, n, policy_version);
        dlq = exec_cols(db, "dlq_insert", DLQ_NCOLS);
        if (PQresultStatus(dlq) != PGRES_TUPLES_OK) {
            *err = pg_error(db->conn, dlq, "writing the dead-letter queue");
            PQclear(dlq);
            exec_ok(db, "ROLLBACK", NULL);
            goto retry;
        }
    }
    int fenced = fence_close(&db->fence, db->conn, items, n, err);
    if (fenced != 0) {
        PQclear(dlq);
        exec_ok(db, "ROLLBACK", NULL);
        if (fenced > 0) {
            *twice = true;
            *err = xstrdup("another writer journaled records of this batch meanwhile (a "
                           "partition read twice at once); written again");
        }
        goto retry;
    }
    if (!exec_ok(db, "COMMIT", err)) {
        PQclear(dlq);
        goto retry;
    }
    report_copied(items, n, stats, on_persisted, opaque);
    if (journal) report_persisted(journal, stats, on_persisted, on_dlq, opaque);
    for (size_t k = 0; k < nsingles; k++)
        report_persisted(singles[k], stats, on_persisted, on_dlq, opaque);
    stats->journal_dup =
        njournal - stats->db_rejects - stats->journal_new - stats->duplicate_replays;
    if (dlq) {
        for (int k = 0; k < PQntuples(dlq); k++) {
            struct dlq_row d = {.id = get_i64(dlq, k, 0),
                                .reason = get_str(dlq, k, 1),
                                .retry = PQgetvalue(dlq, k, 2)[0] == 't',
                                .reused = PQgetvalue(dlq, k, 3)[0] == 't',
                                .topic = get_str(dlq, k, 4),
                                .partition = (int32_t)get_i64(dlq, k, 5),
                                .offset = get_i64(dlq, k, 6),
                                .tenant = get_str(dlq, k, 7),
                                .detail = get_str(dlq, k, 8)};
            if (d.retry)
                stats->dlq_retried++;
            else
                stats->dlq_new++;
            stats->offsets_reused += d.reused;
            if (on_dlq) on_dlq(opaque, &d);
        }
    }
    PQclear(dlq);
    PQclear(journal);
    for (size_t k = 0; k < nsingles; k++)
        PQclear(singles[k]);
    free(singles);
    return DB_OK;

retry:
    PQclear(journal);
    for (size_t k = 0; k < nsingles; k++)
        PQclear(singles[k]);
    free(singles);
    return PQstatus(db->conn) == CONNECTION_OK && conflict_state(last_state) ? DB_CONFLICT
                                                                             : DB_RETRY;
}

enum db_result db_write_batch(struct db *db, struct batch_item *items, size_t n, int policy_version,
                              struct write_stats *stats, db_persisted_fn on_persisted,
                              db_dlq_fn on_dlq, void *opaque, char **err)
{
    bool twice = false;
    db_watchdog_begin(db_alive(db) ? db->conn : NULL, DB_WATCHDOG_BOUND_MS);
    enum db_result rc = write_batch(db, items, n, policy_version, false, &twice, stats,
                                    on_persisted, on_dlq, opaque, err);
    if (twice) {
        metrics_write_conflict();
        log_warn("%s", *err);
        free(*err);
        *err = NULL;
        twice = false;
        rc = write_batch(db, items, n, policy_version, true, &twice, stats, on_persisted, on_dlq,
                         opaque, err);
        if (twice) rc = DB_CONFLICT; /* a third writer at once: the pipeline writes it again */
    }
    if (db_watchdog_end() && rc != DB_OK) {
        free(*err);
        *err = xstrdup("PostgreSQL did not answer within its statement_timeout and a margin "
                       "(frozen, or its packets held); the connection was cut");
        rc = DB_RETRY;
    }
    return rc;
}
