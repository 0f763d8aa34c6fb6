#include "scheduler.h"

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "json.h"
#include "jsonv.h"
#include "db_rows.h"
#include "db_scheduler.h"
#include "deadline.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "pgarray.h"
#include "policy_ctl.h"
#include "replay_jobs_sql.h"
#include "replay_worker.h"
#include "retention.h"
#include "scheduler_sql.h"

#define TICK_MS 1000
#define LOOKBACK_DAYS 400

static pthread_t thread;
static bool started;
static atomic_bool stopping;
static struct replay_env *env;

/* The schedules in use, with the latest due tick of each (recomputed each minute). */
static struct policy_schedule *schedules;
static size_t nschedules;
static int schedules_version = -1;
static time_t *latest;
static time_t computed_minute;

static struct db_rows *q(struct pg_conn *c, const char *sql, int n, const char *const *p)
{
    return db_rows_logged(c, "scheduler", sql, n, p);
}

static bool exec(struct pg_conn *c, const char *sql)
{
    return db_rows_run(c, "scheduler", sql, 0, NULL);
}

/* ---- automated DLQ retries ---------------------------------------------------------------- */

static void decide_retries(struct pg_conn *c)
{
    if (!exec(c, "BEGIN")) return;
    struct db_rows *r = q(c, SQL_DLQ_UNDECIDED, 0, NULL);
    if (!r || db_rows_count(r) == 0) {
        db_rows_free(r);
        exec(c, "ROLLBACK");
        return;
    }
    struct pgarray ids = {0}, secs = {0};
    for (int i = 0; i < db_rows_count(r); i++) {
        struct dlq_entry_info e = {
            .id = strtoll(db_rows_text(r, i, 0), NULL, 10),
            .reason = db_rows_text(r, i, 1),
            .attempts = atoi(db_rows_text(r, i, 2)),
            .topic = db_rows_text(r, i, 3),
            .tenant_id = db_rows_text_or_null(r, i, 4),
            .error = db_rows_text_or_null(r, i, 5),
        };
        double s = 0;
        pgarray_int(&ids, e.id);
        if (policy_ctl_dlq_retry(env->ctl, &e, &s) == 1) {
            char t[32];
            snprintf(t, sizeof t, "%.3f", s);
            pgarray_cstr(&secs, t);
        } else {
            pgarray_str(&secs, NULL, 0);
            if (e.attempts > 0)
                log_info("DLQ entry %" PRId64 " (%s): no more automated retries after %d "
                         "attempt(s); it waits for an operator",
                         e.id, e.reason, e.attempts);
        }
    }
    db_rows_free(r);
    const char *p[] = {pgarray_text(&ids), pgarray_text(&secs)};
    struct db_rows *u = q(c, SQL_DLQ_DECIDED, 2, p);
    db_rows_free(u);
    exec(c, u ? "COMMIT" : "ROLLBACK");
    pgarray_free(&ids);
    pgarray_free(&secs);
}

static void start_due_retries(struct pg_conn *c)
{
    if (!exec(c, "BEGIN")) return;
    struct db_rows *r = q(c, SQL_DLQ_DUE, 0, NULL);
    if (!r || db_rows_count(r) == 0) {
        db_rows_free(r);
        exec(c, "ROLLBACK");
        return;
    }
    struct pgarray ids = {0};
    int n = db_rows_count(r);
    for (int i = 0; i < n; i++)
        pgarray_int(&ids, strtoll(db_rows_text(r, i, 0), NULL, 10));
    db_rows_free(r);
    char *tag = policy_ctl_replay_source(env->ctl, "dlq_retry", "automated", NULL, true);
    const char *pj[] = {
        "dlq_retry", tag, "automated", "automated DLQ retry", "{\"automatic\":true}",
        "pending",   "0"};
    struct db_rows *job = q(c, SQL_JOB_CREATE, 7, pj);
    bool ok = false;
    if (job) {
        const char *pi[] = {db_rows_text(job, 0, 0), pgarray_text(&ids)};
        struct db_rows *items = q(c, SQL_DLQ_DUE_ITEMS, 2, pi);
        ok = items != NULL;
        if (ok)
            log_info("automated DLQ retry: job %s for %d entr%s (source %s)",
                     db_rows_text(job, 0, 0), n, n == 1 ? "y" : "ies", tag);
        db_rows_free(items);
        db_rows_free(job);
    }
    exec(c, ok ? "COMMIT" : "ROLLBACK");
    if (ok) replay_worker_wake();
    free(tag);
    pgarray_free(&ids);
}

/* ---- schedules ---------------------------------------------------------------------------- */

/* "24h", "30m", "90s", "7d" or a number of seconds; 0 when absent or invalid. */
static long window_seconds(const struct jsonv *v)
{
    if (!v) return 0;
    if (v->type == JV_NUMBER) return v->num > 0 ? (long)v->num : 0;
    if (v->type != JV_STRING || v->len == 0) return 0;
    char *end;
    long n = strtol(v->str, &end, 10);
    if (n <= 0) return 0;
    switch (tolower((unsigned char)*end)) {
    case '\0':
    case 's':
        return n;
    case 'm':
        return n * 60;
    case 'h':
        return n * 3600;
    case 'd':
        return n * 86400;
    default:
        return 0;
    }
}

static const char *jstr(const struct jsonv *params, const char *key)
{
    const struct jsonv *v = jsonv_get(params, key);
    return v && v->type == JV_STRING ? v->str : NULL;
}

static void iso(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Creates the schedule's job inside the caller's transaction. Returns the job id, 0 on an
 * error, -1 when the replay_guard policy refused the run. */
static int64_t schedule_job(struct pg_conn *c, const struct policy_schedule *s, time_t tick)
{
    const char *perr = NULL;
    size_t at = 0;
    struct jsonv *params = jsonv_parse(s->params_json, strlen(s->params_json), &perr, &at);
    if (!params) return 0;
    long window = window_seconds(jsonv_get(params, "window"));
    const struct jsonv *oo = jsonv_get(params, "only_original");
    bool only_original = !(oo && oo->type == JV_BOOL && !oo->b);
    const struct jsonv *rv = jsonv_get(params, "rate_per_s");
    long rate = env->cfg->replay.rate_per_s;
    if (rv && rv->type == JV_NUMBER && rv->num >= 1 && rv->num < (double)rate) rate = (long)rv->num;
    char start[32], end[32];
    iso(tick - (window ? window : 86400), start);
    iso(tick, end);

    struct buf jp = {0};
    buf_puts(&jp, "{\"schedule\":");
    json_write_cstr(&jp, s->name);
    buf_puts(&jp, ",\"cron\":");
    json_write_cstr(&jp, s->cron_text);
    buf_puts(&jp, ",\"action\":");
    json_write_cstr(&jp, s->action);
    struct buf reason = {0};
    buf_printf(&reason, "schedule %s (%s) at %s", s->name, s->cron_text, end);
    double defer = 0;
    char *why = NULL;
    int g = policy_ctl_replay_guard(env->ctl, "scheduled", s->name, reason.data, true, -1, &defer,
                                    &why);
    if (g == GUARD_REFUSE) {
        log_info("schedule %s: the run at %s was refused by the replay_guard policy: %s", s->name,
                 end, why ? why : "refused");
        free(why);
        buf_free(&reason);
        buf_free(&jp);
        jsonv_free(params);
        return -1;
    }
    if (g == GUARD_DEFER) buf_printf(&jp, ",\"not_before\":%.0f", (double)time(NULL) + defer);
    buf_printf(&jp,
               ",\"tick\":\"%s\",\"start\":\"%s\",\"end\":\"%s\",\"rate_per_s\":%ld,\"params\":%s}",
               end, start, end, rate, s->params_json);
    char *tag = policy_ctl_replay_source(env->ctl, "scheduled", s->name, reason.data, true);
    const char *pj[] = {"scheduled", tag, s->name, reason.data, jp.data, "pending", "0"};
    struct db_rows *job = q(c, SQL_JOB_CREATE, 7, pj);
    int64_t id = 0;
    if (job) {
        const char *jid = db_rows_text(job, 0, 0);
        struct db_rows *items;
        if (strcmp(s->action, "replay_range") == 0) {
            const char *pr[] = {start,
                                end,
                                jstr(params, "topic"),
                                jstr(params, "tenant"),
                                only_original ? "true" : "false",
                                NULL,
                                NULL,
                                NULL,
                                jid};
            items = q(c, SQL_JOB_ITEMS_RANGE, 9, pr);
        } else {
            const char *pd[] = {jid, jstr(params, "reason"), jstr(params, "topic"),
                                jstr(params, "tenant"), window ? start : NULL};
            items = q(c, SQL_SCHEDULE_DLQ_ITEMS, 5, pd);
        }
        if (items) {
            id = strtoll(jid, NULL, 10);
            log_info("schedule %s: job %s (%s) with %s event(s), source %s", s->name, jid,
                     s->action, db_rows_text(items, 0, 0), tag);
        }
        db_rows_free(items);
        db_rows_free(job);
    }
    free(tag);
    buf_free(&reason);
    buf_free(&jp);
    jsonv_free(params);
    return id;
}

/* Runs the latest due tick of a schedule unless it (or a later one) already ran. Ticks
 * missed while no instance was up collapse into this one run. A schedule seen for the
 * first time records its latest tick as a baseline without running it. */
static void run_schedule(struct pg_conn *c, const struct policy_schedule *s, time_t tick)
{
    char tickbuf[24];
    snprintf(tickbuf, sizeof tickbuf, "%lld", (long long)tick);
    if (!exec(c, "BEGIN")) return;
    const char *pl[] = {s->name};
    struct db_rows *last = q(c, SQL_SCHEDULE_LAST, 1, pl);
    if (!last) goto rollback;
    bool first = db_rows_null(last, 0, 0);
    const char *pn[] = {tickbuf, first ? NULL : db_rows_text(last, 0, 0)};
    struct db_rows *isnew = q(c, SQL_TICK_IS_NEW, 2, pn);
    db_rows_free(last);
    if (!isnew) goto rollback;
    bool fresh = db_rows_text(isnew, 0, 0)[0] == 't';
    db_rows_free(isnew);
    if (!fresh) goto rollback;
    const char *pc[] = {s->name, tickbuf, first ? "baseline: first seen, not run" : NULL};
    struct db_rows *claim = q(c, SQL_SCHEDULE_CLAIM, 3, pc);
    if (!claim) goto rollback;
    bool mine = db_rows_count(claim) == 1;
    db_rows_free(claim);
    if (!mine || first) {
        exec(c, "COMMIT"); /* another instance has it, or only the baseline */
        if (first)
            log_info("schedule %s (%s) registered; next run at its next tick", s->name,
                     s->cron_text);
        return;
    }
    int64_t job = schedule_job(c, s, tick);
    if (job == 0) goto rollback;
    if (job < 0) {
        exec(c, "COMMIT"); /* the tick counts as handled: refused, not missed */
        return;
    }
    char jid[24];
    snprintf(jid, sizeof jid, "%" PRId64, job);
    const char *pu[] = {s->name, tickbuf, jid};
    db_rows_free(q(c, SQL_SCHEDULE_JOB, 3, pu));
    if (exec(c, "COMMIT")) replay_worker_wake();
    return;
rollback:
    exec(c, "ROLLBACK");
}

/* The latest tick of c after the minute already looked at and up to minute, else keep: a
 * slow round of the loop loses no tick (the one run after a daylight-saving skip included). */
static time_t latest_tick(const struct cron *c, time_t after, time_t minute, time_t keep)
{
    if (after < minute - LOOKBACK_DAYS * 86400L) after = minute - LOOKBACK_DAYS * 86400L;
    for (time_t t = minute; t > after; t -= 60)
        if (cron_due(c, t)) return t;
    return keep;
}

static void run_schedules(struct pg_conn *c)
{
    size_t n;
    int version;
    struct policy_schedule *s = policy_ctl_schedules(env->ctl, &n, &version);
    if (version != schedules_version) {
        policy_schedules_free(schedules, nschedules);
        free(latest);
        schedules = s;
        nschedules = n;
        schedules_version = version;
        latest = xcalloc(n + 1, sizeof *latest);
        computed_minute = 0;
    } else {
        policy_schedules_free(s, n);
    }
    time_t now = time(NULL);
    time_t minute = now - now % 60;
    if (minute != computed_minute) {
        for (size_t i = 0; i < nschedules; i++)
            latest[i] = computed_minute
                            ? latest_tick(&schedules[i].cron, computed_minute, minute, latest[i])
                            : cron_latest(&schedules[i].cron, now, LOOKBACK_DAYS);
        computed_minute = minute;
    }
    for (size_t i = 0; i < nschedules && !atomic_load(&stopping); i++)
        if (latest[i]) run_schedule(c, &schedules[i], latest[i]);
}

/* ---- the thread --------------------------------------------------------------------------- */

#define RETENTION_EVERY_MS (3600 * 1000)
#define RETENTION_RETRY_MS (300 * 1000)

static void retention_progress(void)
{
    health_progress(HEALTH_SCHEDULER); /* a long retention is work, not a stall */
}

/* Retention at start and hourly (five minutes after a failure), under its advisory lock:
 * one instance does it. */
static void apply_retention(struct pg_conn *c)
{
    static int64_t next_ms = -1;
    int64_t now = mono_now_ms();
    if (next_ms >= 0 && now < next_ms) return;
    struct retention_report r;
    char *err = NULL;
    bool ok = retention_apply(c, env->cfg, false, &stopping, retention_progress, &r, &err);
    next_ms = mono_now_ms() + (ok ? RETENTION_EVERY_MS : RETENTION_RETRY_MS);
    if (r.journal_parts)
        log_info("retention: dropped %" PRId64 " journal partitions older than %s (%" PRId64
                 " rows, %" PRId64 " bytes)",
                 r.journal_parts, env->cfg->retention.journal, r.journal_rows, r.journal_bytes);
    if (r.settled)
        log_info("retention: the rows of %" PRId64
                 " months moved from a default partition to their own",
                 r.settled);
    if (r.dlq || r.jobs || r.items)
        log_info("retention: removed %" PRId64 " DLQ entries resolved or discarded over %s ago, "
                 "%" PRId64 " replay jobs ended over %s ago (%" PRId64 " items); whole month "
                 "partitions dropped: %" PRId64 " of the DLQ, %" PRId64 " of jobs",
                 r.dlq, env->cfg->retention.dlq ? env->cfg->retention.dlq : "forever", r.jobs,
                 env->cfg->retention.jobs ? env->cfg->retention.jobs : "forever", r.items,
                 r.dlq_parts, r.jobs_parts);
    if (!ok) {
        log_warn("%s; retention is tried again in %d minutes", err, RETENTION_RETRY_MS / 60000);
        free(err);
    }
}

static void *loop(void *arg)
{
    (void)arg;
    struct pg_conn *c = NULL;
    while (!atomic_load(&stopping)) {
        if (!db_conn_ok(c)) {
            db_conn_close(c);
            c = db_scheduler_connect(env->cfg->postgres.dsn);
        }
        if (db_conn_ok(c)) {
            health_busy(HEALTH_SCHEDULER); /* one tick's work */
            decide_retries(c);
            start_due_retries(c);
            db_rows_free(q(c, SQL_STALE_SYNC_JOBS, 0, NULL));
            run_schedules(c);
            apply_retention(c);
            health_idle(HEALTH_SCHEDULER);
        }
        for (int i = 0; i < TICK_MS / 100 && !atomic_load(&stopping); i++) {
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    db_conn_close(c);
    policy_schedules_free(schedules, nschedules);
    schedules = NULL;
    nschedules = 0;
    free(latest);
    latest = NULL;
    return NULL;
}

void scheduler_start(struct replay_env *e)
{
    env = e;
    atomic_store(&stopping, false);
    schedules_version = -1;
    if (pthread_create(&thread, NULL, loop, NULL) == 0) started = true;
}

void scheduler_stop(void)
{
    if (!started) return;
    atomic_store(&stopping, true);
    pthread_join(thread, NULL);
    started = false;
}
