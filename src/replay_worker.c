#include "replay_worker.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db_replay.h"
#include "db_rows.h"
#include "db_sql.h"
#include "deadline.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "replay_sql.h"

#define CHUNK_MAX 5000
#define IDLE_WAIT_MS 1000

/* jobs the worker may run (single replays are run by their HTTP request, unless Kafka's
 * answer did not come: then the worker settles the item, replay.c resolve_unknown; or a
 * DLQ retry's outcome is still to be counted: then the worker counts it and closes the
 * job). Jobs with something to send come first; `waiting` ones only wait for outcomes. */
/* clang-format off */
#define SQL_WORKER_JOBS \
    "SELECT id, kind, replay_source, coalesce((params->>'rate_per_s')::int, $1::int)," \
    " NOT EXISTS (SELECT 1 FROM replay_job_items WHERE job_id = replay_jobs.id" \
    "  AND status = 'pending') AS waiting" \
    " FROM replay_jobs WHERE status IN ('pending', 'running')" \
    " AND ((kind <> 'single' AND NOT coalesce((params->>'sync')::bool, false))" \
    "  OR EXISTS (SELECT 1 FROM replay_job_items WHERE job_id = replay_jobs.id" \
    "   AND status = 'pending' AND error IS NOT NULL)" \
    "  OR EXISTS (SELECT 1 FROM replay_job_items WHERE job_id = replay_jobs.id" \
    "   AND " UNSETTLED "))" \
    " AND coalesce((params->>'not_before')::float8, 0) <= extract(epoch FROM now())" \
    " ORDER BY waiting, id LIMIT 20"
/* clang-format on */
#define SQL_WORKER_CLAIM                                                                           \
    "SELECT pg_try_advisory_lock(" SQL_LOCK_CLASS_REPLAY_JOB ", " SQL_LOCK_ID("$1::bigint") ")"
#define SQL_WORKER_UNCLAIM                                                                         \
    "SELECT pg_advisory_unlock(" SQL_LOCK_CLASS_REPLAY_JOB ", " SQL_LOCK_ID("$1::bigint") ")"
#define SQL_WORKER_START                                                                           \
    "UPDATE replay_jobs SET status = 'running', started_at = coalesce(started_at, now()),"         \
    " claimed_by = $2, heartbeat_at = now() WHERE id = $1::bigint"                                 \
    " AND status IN ('pending', 'running') RETURNING succeeded, failed, total"
#define SQL_WORKER_STATUS "SELECT status FROM replay_jobs WHERE id = $1::bigint"

#define UNKNOWN_BACKOFF_MS 1000

static pthread_t thread;
static bool started;
static atomic_bool stopping;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static bool woken;
static struct replay_env *env;

void replay_worker_wake(void)
{
    pthread_mutex_lock(&lock);
    woken = true;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
}

static void wait_ms(int ms)
{
    struct timespec until = deadline_after_ms(ms);
    pthread_mutex_lock(&lock);
    while (!woken && !atomic_load(&stopping))
        if (pthread_cond_timedwait(&wake, &lock, &until) != 0) break;
    woken = false;
    pthread_mutex_unlock(&lock);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct db_rows *q(struct pg_conn *c, const char *sql, int n, const char *const *p)
{
    return db_rows_logged(c, "replay worker", sql, n, p);
}

/* Counts the DLQ retries' outcomes that came back (or did not within
 * REPLAY_OUTCOME_WAIT_S), then closes the job if nothing is left to send or to count. True
 * while some outcome is still to come (the worker looks again later). */
static bool settle(struct pg_conn *c, const char *const *p)
{
    db_rows_free(q(c, SQL_REPLAY_OUTCOMES_FOLD, 1, p));
    struct db_rows *f = q(c, SQL_REPLAY_JOB_FINISH, 1, p);
    bool closed = f && db_rows_count(f);
    if (closed) {
        log_info("replay job %s finished: %s", p[0], db_rows_text(f, 0, 0));
        metrics_job_finished(db_rows_text(f, 0, 1), db_rows_text(f, 0, 0));
    }
    db_rows_free(f);
    return f && !closed;
}

/* Runs one claimed job until it is done, cancelled or the service stops. True when all is
 * sent but the outcome of some DLQ retries is still to come. */
static bool run_job(struct pg_conn *c, const char *id, const char *kind, const char *tag, long rate)
{
    char me[128];
    char host[64] = "?";
    gethostname(host, sizeof host - 1);
    snprintf(me, sizeof me, "%s:%d", host, (int)getpid());
    const char *p[] = {id, me};
    struct db_rows *r = q(c, SQL_WORKER_START, 2, p);
    if (!r) return false;
    if (db_rows_count(r) == 0) {
        db_rows_free(r);
        return false;
    }
    log_info("replay job %s (%s, source %s) running: %s of %s done so far, %ld events/s", id, kind,
             tag, db_rows_text(r, 0, 0), db_rows_text(r, 0, 2), rate);
    db_rows_free(r);
    int64_t job = strtoll(id, NULL, 10);
    double t_start = now_s();
    long sent_total = 0;
    int chunk = rate < CHUNK_MAX ? (int)(rate < 1 ? 1 : rate) : CHUNK_MAX;
    while (!atomic_load(&stopping)) {
        struct db_rows *st = q(c, SQL_WORKER_STATUS, 1, p);
        if (!st) return false;
        bool live = db_rows_count(st) && (strcmp(db_rows_text(st, 0, 0), "running") == 0);
        db_rows_free(st);
        if (!live) {
            log_info("replay job %s stopped: it was cancelled", id);
            return false;
        }
        struct replay_outcome out;
        char *err = NULL;
        if (!replay_run_chunk(c, env, job, tag, chunk, &stopping, &out, &err)) {
            log_warn("replay job %s: %s; it resumes later", id, err);
            free(err);
            return false;
        }
        sent_total += out.sent;
        health_progress(HEALTH_REPLAY_WORKER);
        if (out.failed)
            log_warn("replay job %s: %d event(s) failed: %s", id, out.failed, out.error);
        if (out.unknown) {
            log_warn("replay job %s: %d event(s) without a definite answer from Kafka (%s)", id,
                     out.unknown, out.error);
            if (!out.sent) wait_ms(UNKNOWN_BACKOFF_MS); /* Kafka is in trouble: not a busy loop */
        }
        if (out.nothing_pending) return settle(c, p);
        db_rows_free(q(c, SQL_REPLAY_OUTCOMES_FOLD, 1, p)); /* counts keep up with outcomes */
        /* keep to the rate: sent_total events should take sent_total / rate seconds */
        double ahead = (double)sent_total / (double)rate - (now_s() - t_start);
        while (ahead > 0 && !atomic_load(&stopping)) {
            double step = ahead > 0.2 ? 0.2 : ahead;
            struct timespec ts = {(time_t)step, (long)((step - (double)(time_t)step) * 1e9)};
            nanosleep(&ts, NULL);
            ahead -= step;
            health_progress(HEALTH_REPLAY_WORKER); /* keeping to the rate is not a stall */
        }
    }
    log_info("replay job %s paused by shutdown; it resumes at its next pending event", id);
    return false;
}

static void *loop(void *arg)
{
    (void)arg;
    struct pg_conn *c = NULL;
    char rate[24];
    snprintf(rate, sizeof rate, "%ld", env->cfg->replay.rate_per_s);
    while (!atomic_load(&stopping)) {
        if (!db_conn_ok(c)) {
            db_conn_close(c);
            c = db_replay_connect(env->cfg->postgres.dsn);
            if (!c) {
                wait_ms(2000);
                continue;
            }
        }
        const char *p[] = {rate};
        struct db_rows *jobs = q(c, SQL_WORKER_JOBS, 1, p);
        bool ran = false;
        for (int i = 0; jobs && i < db_rows_count(jobs) && !atomic_load(&stopping); i++) {
            const char *id = db_rows_text(jobs, i, 0);
            const char *pid[] = {id};
            if (db_rows_text(jobs, i, 4)[0] == 't') {
                settle(c, pid); /* no claim needed: counting an outcome is one row update */
                continue;
            }
            struct db_rows *cl = q(c, SQL_WORKER_CLAIM, 1, pid);
            bool mine = cl && db_rows_text(cl, 0, 0)[0] == 't';
            db_rows_free(cl);
            if (!mine) continue; /* another instance runs it */
            long r = atol(db_rows_text(jobs, i, 3));
            health_busy(HEALTH_REPLAY_WORKER);
            bool awaiting =
                run_job(c, id, db_rows_text(jobs, i, 1), db_rows_text(jobs, i, 2), r > 0 ? r : 1);
            health_idle(HEALTH_REPLAY_WORKER);
            db_rows_free(q(c, SQL_WORKER_UNCLAIM, 1, pid));
            if (!awaiting) ran = true; /* else it waits on the consumer: no busy loop */
        }
        db_rows_free(jobs);
        if (!ran) wait_ms(IDLE_WAIT_MS);
    }
    db_conn_close(c);
    return NULL;
}

void replay_worker_start(struct replay_env *e)
{
    env = e;
    atomic_store(&stopping, false);
    if (pthread_create(&thread, NULL, loop, NULL) == 0) started = true;
}

void replay_worker_stop(void)
{
    if (!started) return;
    atomic_store(&stopping, true);
    replay_worker_wake();
    pthread_join(thread, NULL);
    started = false;
}
