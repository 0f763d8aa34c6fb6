#include "retention.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db_rows.h"
#include "metrics.h"
#include "retention_sql.h"

/* The first column of one row, or -1 with *err set. */
static int64_t one(struct pg_conn *c, const char *sql, const char *secs, int col, char **err)
{
    const char *p[] = {secs};
    struct db_error e;
    struct db_rows *r = db_rows_exec(c, sql, secs ? 1 : 0, p, &e);
    if (!r) {
        struct buf m = {0};
        buf_printf(&m, "retention: %s", e.message);
        *err = m.data;
        return -1;
    }
    int64_t v = db_rows_count(r) ? db_rows_int(r, 0, col) : 0;
    db_rows_free(r);
    return v;
}

/* Runs a batch DELETE until it removes less than a batch; adds to *total. */
static bool drain(struct pg_conn *c, const char *sql, const char *secs, const atomic_bool *stop,
                  int64_t *total, char **err)
{
    int64_t batch = atoll(RETENTION_BATCH), n;
    do {
        if ((n = one(c, sql, secs, 0, err)) < 0) return false;
        *total += n;
    } while (n == batch && !(stop && atomic_load(stop)));
    return true;
}

static bool counts(struct pg_conn *c, const struct config *cfg, const char *dlq, const char *jobs,
                   struct retention_report *out, char **err)
{
    if (cfg->retention.dlq_s && (out->dlq = one(c, SQL_RETENTION_DLQ_COUNT, dlq, 0, err)) < 0)
        return false;
    if (cfg->retention.jobs_s) {
        if ((out->jobs = one(c, SQL_RETENTION_JOBS_COUNT, jobs, 0, err)) < 0) return false;
        if ((out->items = one(c, SQL_RETENTION_JOBS_COUNT, jobs, 1, err)) < 0) return false;
    }
    return true;
}

static bool removals(struct pg_conn *c, const struct config *cfg, const char *dlq, const char *jobs,
                     const atomic_bool *stop, struct retention_report *out, char **err)
{
    if (cfg->retention.dlq_s && !drain(c, SQL_RETENTION_DLQ_DELETE, dlq, stop, &out->dlq, err))
        return false;
    if (cfg->retention.jobs_s &&
        (!drain(c, SQL_RETENTION_ITEMS_DELETE, jobs, stop, &out->items, err) ||
         !drain(c, SQL_RETENTION_JOBS_DELETE, jobs, stop, &out->jobs, err)))
        return false;
    metrics_retention_removed(out->dlq, out->jobs, out->items);
    return true;
}

bool retention_apply(struct pg_conn *c, const struct config *cfg, bool dry_run,
                     const atomic_bool *stop, struct retention_report *out, char **err)
{
    memset(out, 0, sizeof *out);
    *err = NULL;
    if (!cfg->retention.dlq_s && !cfg->retention.jobs_s) return true; /* keep everything */
    struct db_error e;
    struct db_rows *l = db_rows_exec(c, SQL_RETENTION_LOCK, 0, NULL, &e);
    if (!l) {
        struct buf m = {0};
        buf_printf(&m, "retention: %s", e.message);
        *err = m.data;
        return false;
    }
    out->skipped = db_rows_text(l, 0, 0)[0] != 't';
    db_rows_free(l);
    if (out->skipped) return true;
    char dlq[24], jobs[24];
    snprintf(dlq, sizeof dlq, "%" PRId64, cfg->retention.dlq_s);
    snprintf(jobs, sizeof jobs, "%" PRId64, cfg->retention.jobs_s);
    bool ok =
        dry_run ? counts(c, cfg, dlq, jobs, out, err) : removals(c, cfg, dlq, jobs, stop, out, err);
    db_rows_free(db_rows_exec(c, SQL_RETENTION_UNLOCK, 0, NULL, NULL));
    return ok;
}
