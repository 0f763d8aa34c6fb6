#include "retention.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db_rows.h"
#include "metrics.h"
#include "db_watchdog.h"
#include "retention_sql.h"

struct run {
    struct pg_conn *c;
    const atomic_bool *stop;
    void (*progress)(void);
    char **err;
};

static bool stopped(const struct run *r)
{
    return r->stop && atomic_load(r->stop);
}

/* Runs one statement; NULL with *err set when it failed. */
static struct db_rows *exec(const struct run *r, const char *sql, int n, const char *const *p)
{
    struct db_error e;
    struct db_rows *res = db_rows_exec(r->c, sql, n, p, &e);
    if (!res) {
        struct buf m = {0};
        buf_printf(&m, "retention: %s", e.message);
        *r->err = m.data;
    }
    if (r->progress) r->progress();
    return res;
}

/* The first row's column col, or -1 with *err set. */
static int64_t one(const struct run *r, const char *sql, int n, const char *const *p, int col)
{
    struct db_rows *res = exec(r, sql, n, p);
    if (!res) return -1;
    int64_t v = db_rows_count(res) ? db_rows_int(res, 0, col) : 0;
    db_rows_free(res);
    return v;
}

/* Runs a setting (a timeout) between statements. */
static bool set(const struct run *r, const char *sql)
{
    struct db_rows *res = exec(r, sql, 0, NULL);
    db_rows_free(res);
    return res != NULL;
}

/* The months of the DLQ (jobs: false) or of the jobs (true) wholly past the retention of
 * secs: each one whose every entry or job goes is dropped (with dry_run: counted), its
 * rows added to *rows (and its items to *items) and itself to *parts. */
static bool drop_months(const struct run *r, bool jobs, const char *secs, bool dry_run,
                        int64_t *parts, int64_t *rows, int64_t *items)
{
    const char *p[] = {secs};
    struct db_rows *months =
        exec(r, jobs ? SQL_RETENTION_JOBS_MONTHS : SQL_RETENTION_DLQ_MONTHS, 1, p);
    if (!months) return false;
    bool ok = set(r, SQL_JOURNAL_COUNT_TIMEOUT) && set(r, SQL_JOURNAL_DROP_LOCK_TIMEOUT);
    for (int i = 0; ok && i < db_rows_count(months) && !stopped(r); i++) {
        const char *q[] = {db_rows_text(months, i, 0), secs, dry_run ? "true" : "false"};
        struct db_rows *res =
            exec(r, jobs ? SQL_RETENTION_JOBS_MONTH_DROP : SQL_RETENTION_DLQ_MONTH_DROP, 3, q);
        if (!(ok = res != NULL)) break;
        if (db_rows_count(res) && !db_rows_null(res, 0, 0)) {
            int64_t n = db_rows_int(res, 0, 0), m = jobs ? db_rows_int(res, 0, 1) : 0;
            (*parts)++;
            *rows += n;
            if (items) *items += m;
            if (!dry_run) metrics_retention_removed(jobs ? 0 : n, jobs ? n : 0, m);
        }
        db_rows_free(res);
    }
    db_rows_free(months);
    return set(r, SQL_LOCK_TIMEOUT_RESET) && set(r, SQL_RETENTION_TIMEOUT) && ok;
}

static bool counts(const struct run *r, const struct config *cfg, const char *dlq, const char *jobs,
                   struct retention_report *out)
{
    const char *pd[] = {dlq}, *pj[] = {jobs};
    int64_t ignored = 0;
    if (cfg->retention.dlq_s &&
        ((out->dlq = one(r, SQL_RETENTION_DLQ_COUNT, 1, pd, 0)) < 0 ||
         !drop_months(r, false, dlq, true, &out->dlq_parts, &ignored, NULL)))
        return false;
    if (!cfg->retention.jobs_s) return true;
    struct db_rows *res = exec(r, SQL_RETENTION_JOBS_COUNT, 1, pj);
    if (!res) return false;
    out->jobs = db_rows_int(res, 0, 0);
    out->items = db_rows_int(res, 0, 1);
    db_rows_free(res);
    return drop_months(r, true, jobs, true, &out->jobs_parts, &ignored, &ignored);
}

/* The DLQ's months wholly past retention, then what is left row by row. */
static bool remove_dlq(const struct run *r, const char *dlq, struct retention_report *out)
{
    if (!drop_months(r, false, dlq, false, &out->dlq_parts, &out->dlq, NULL)) return false;
    const char *p[] = {dlq};
    int64_t n, batch = atoll(RETENTION_BATCH);
    do {
        if (stopped(r)) return true;
        if ((n = one(r, SQL_RETENTION_DLQ_DELETE, 1, p, 0)) < 0) return false;
        out->dlq += n;
        metrics_retention_removed(n, 0, 0);
    } while (n == batch);
    return true;
}

/* One job: its items a range of seq at a time, then the job. */
static bool remove_job(const struct run *r, const char *id, int64_t max_seq,
                       struct retention_report *out)
{
    for (int64_t after = 0; after < max_seq; after += atoll(RETENTION_BATCH)) {
        char a[24];
        snprintf(a, sizeof a, "%" PRId64, after);
        const char *p[] = {id, a};
        int64_t n;
        if (stopped(r) || (n = one(r, SQL_RETENTION_ITEMS_DELETE, 2, p, 0)) < 0) return false;
        out->items += n;
        metrics_retention_removed(0, 0, n);
    }
    const char *p[] = {id};
    int64_t n, batch = atoll(RETENTION_BATCH);
    do {
        if (stopped(r) || (n = one(r, SQL_RETENTION_COPIES_DELETE, 1, p, 0)) < 0) return false;
    } while (n == batch);
    if (stopped(r) || (n = one(r, SQL_RETENTION_JOB_DELETE, 1, p, 0)) < 0) return false;
    out->jobs += n;
    metrics_retention_removed(0, n, 0);
    return true;
}

/* The months of jobs wholly past retention, then the jobs left one by one. */
static bool remove_jobs(const struct run *r, const char *jobs, struct retention_report *out)
{
    if (!drop_months(r, true, jobs, false, &out->jobs_parts, &out->jobs, &out->items)) return false;
    const char *p[] = {jobs};
    for (;;) {
        if (stopped(r)) return true;
        struct db_rows *next = exec(r, SQL_RETENTION_JOBS_NEXT, 1, p);
        if (!next) return false;
        int n = db_rows_count(next);
        bool ok = true;
        for (int i = 0; ok && i < n; i++)
            ok = remove_job(r, db_rows_text(next, i, 0), db_rows_int(next, i, 1), out);
        db_rows_free(next);
        if (!ok) return stopped(r);
        if (n < 100) return true;
    }
}

/* The partitions ahead, and the rows of the default partitions in their months. */
static bool maintain_partitions(const struct run *r, struct retention_report *out)
{
    if (one(r, SQL_PARTITIONS_AHEAD, 0, NULL, 0) < 0) return false;
    struct db_rows *months = exec(r, SQL_DEFAULT_MONTHS, 0, NULL);
    if (!months) return false;
    bool ok = set(r, SQL_JOURNAL_MOVE_TIMEOUT);
    for (int i = 0; ok && i < db_rows_count(months) && !stopped(r); i++) {
        const char *p[] = {db_rows_text(months, i, 0), db_rows_text(months, i, 1),
                           db_rows_text(months, i, 2)};
        struct db_rows *res = exec(r, SQL_PARTITION_SETTLE, 3, p);
        ok = res != NULL;
        db_rows_free(res);
        out->settled += ok;
    }
    db_rows_free(months);
    return set(r, SQL_RETENTION_TIMEOUT) && ok;
}

/* The month partitions wholly older than the retention: counted, and unless dry_run
 * dropped (a DROP TABLE each: no DELETE, nothing left to vacuum). */
static bool expire_journal(const struct run *r, const char *secs, bool dry_run,
                           struct retention_report *out)
{
    const char *p[] = {secs};
    struct db_rows *parts = exec(r, SQL_JOURNAL_EXPIRED, 1, p);
    if (!parts) return false;
    bool ok = set(r, SQL_JOURNAL_COUNT_TIMEOUT) && set(r, SQL_JOURNAL_DROP_LOCK_TIMEOUT);
    for (int i = 0; ok && i < db_rows_count(parts) && !stopped(r); i++) {
        const char *name[] = {db_rows_text(parts, i, 0)};
        int64_t n = one(r, dry_run ? SQL_JOURNAL_PART_ROWS : SQL_JOURNAL_DROP, 1, name, 0);
        if (!(ok = n >= 0)) break;
        out->journal_parts++;
        out->journal_rows += n;
        out->journal_bytes += db_rows_int(parts, i, 1);
        if (!dry_run) metrics_retention_journal(n);
    }
    db_rows_free(parts);
    int64_t waiting = ok && dry_run ? one(r, SQL_JOURNAL_EXPIRED_DEFAULT, 1, p, 0) : 0;
    ok = ok && waiting >= 0;
    out->journal_rows += ok ? waiting : 0;
    return set(r, SQL_LOCK_TIMEOUT_RESET) && set(r, SQL_RETENTION_TIMEOUT) && ok;
}

/* Retention under its lock: the journal, the DLQ, the jobs. */
static bool apply(const struct run *r, const struct config *cfg, bool dry_run,
                  struct retention_report *out)
{
    struct db_rows *l = exec(r, SQL_RETENTION_LOCK, 0, NULL);
    if (!l) return false;
    out->skipped = db_rows_text(l, 0, 0)[0] != 't';
    db_rows_free(l);
    if (out->skipped) return true;
    char journal[24], dlq[24], jobs[24];
    snprintf(journal, sizeof journal, "%" PRId64, cfg->retention.journal_s);
    snprintf(dlq, sizeof dlq, "%" PRId64, cfg->retention.dlq_s);
    snprintf(jobs, sizeof jobs, "%" PRId64, cfg->retention.jobs_s);
    db_rows_free(db_rows_exec(r->c, SQL_RETENTION_TIMEOUT, 0, NULL, NULL));
    bool keep_journal = !cfg->retention.journal_s, ok;
    if (dry_run)
        ok = (keep_journal || expire_journal(r, journal, true, out)) &&
             counts(r, cfg, dlq, jobs, out);
    else
        ok = maintain_partitions(r, out) &&
             (keep_journal || expire_journal(r, journal, false, out)) &&
             (!cfg->retention.dlq_s || remove_dlq(r, dlq, out)) &&
             (!cfg->retention.jobs_s || remove_jobs(r, jobs, out));
    db_rows_free(db_rows_exec(r->c, SQL_RETENTION_TIMEOUT_RESET, 0, NULL, NULL));
    db_rows_free(db_rows_exec(r->c, SQL_RETENTION_UNLOCK, 0, NULL, NULL));
    return ok;
}

bool retention_apply(struct pg_conn *c, const struct config *cfg, bool dry_run,
                     const atomic_bool *stop, void (*progress)(void), struct retention_report *out,
                     char **err)
{
    memset(out, 0, sizeof *out);
    *err = NULL;
    struct run r = {c, stop, progress, err};
    /* its statements may run up to 10 minutes (SQL_JOURNAL_MOVE_TIMEOUT) */
    int bound = db_watchdog_thread_bound(11 * 60 * 1000);
    bool ok = apply(&r, cfg, dry_run, out);
    db_watchdog_thread_bound(bound);
    return ok;
}
