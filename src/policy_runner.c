#include "policy_runner.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "health.h"
#include "log.h"

static atomic_long abandoned_alive, abandoned_total;

struct policy_runner {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    struct lua_host_limits limits;
    struct policy_sources *src; /* the runner's own copy */
    pid_t tid;
    /* under mu */
    struct lua_host *host; /* while the thread has one: what the watchdog watches */
    struct policy_engine *engine;
    bool built, build_failed;
    char *build_err;
    policy_job_fn fn; /* the job in progress, NULL when none */
    void *arg;
    bool stop;
    bool orphaned; /* abandoned by the watchdog: the thread frees the runner itself */
};

long runner_margin_ms(long max_call_ms)
{
    return 50 + max_call_ms / 10;
}

long runner_abandoned_alive(void)
{
    return atomic_load(&abandoned_alive);
}

long runner_abandoned_total(void)
{
    return atomic_load(&abandoned_total);
}

static void runner_free(struct policy_runner *r)
{
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    policy_sources_free(r->src);
    free(r->build_err);
    free(r);
}

static void *runner_main(void *arg)
{
    struct policy_runner *r = arg;
    char *err = NULL;
    struct lua_host *h = lua_host_create(&r->limits, LUA_HOST_POLICY, &err);
    struct policy_engine *e = NULL;
    pthread_mutex_lock(&r->mu);
    r->tid = (pid_t)syscall(SYS_gettid);
    r->host = h;
    pthread_mutex_unlock(&r->mu);
    if (h) e = engine_load(h, r->src, &err);

    pthread_mutex_lock(&r->mu);
    r->engine = e;
    r->built = true;
    r->build_failed = !e;
    r->build_err = err;
    pthread_cond_broadcast(&r->cv);
    while (e && !r->stop && !r->orphaned) {
        if (!r->fn) {
            pthread_cond_wait(&r->cv, &r->mu);
            continue;
        }
        policy_job_fn fn = r->fn;
        void *job_arg = r->arg;
        pthread_mutex_unlock(&r->mu);
        fn(e, job_arg);
        pthread_mutex_lock(&r->mu);
        r->fn = NULL;
        pthread_cond_broadcast(&r->cv);
    }
    r->host = NULL; /* the watchdog no longer looks at it */
    r->engine = NULL;
    bool orphaned = r->orphaned;
    pthread_mutex_unlock(&r->mu);
    if (e)
        engine_destroy(e); /* and its host */
    else
        lua_host_destroy(h);
    if (orphaned) {
        runner_free(r);
        atomic_fetch_sub(&abandoned_alive, 1);
        log_info("an abandoned policy state got back from its call and was freed");
    }
    return NULL;
}

static struct timespec at_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    return ts;
}

/* The thread is past its limit: it is left behind, at idle priority, and frees itself if
 * it ever gets back. Under mu; returns the error for the waiting caller. */
static char *abandon(struct policy_runner *r, int64_t ran_ms)
{
    r->orphaned = true;
    atomic_fetch_add(&abandoned_alive, 1);
    atomic_fetch_add(&abandoned_total, 1);
    pthread_detach(r->thread);
    struct sched_param sp = {0};
    if (r->tid) sched_setscheduler(r->tid, SCHED_IDLE, &sp); /* this thread only (Linux) */
    struct buf m = {0};
    buf_printf(&m,
               "time limit exceeded (sandbox.max_call_ms = %ld ms): the call had not returned "
               "after %lld ms and was abandoned by the watchdog",
               r->limits.max_call_ms, (long long)ran_ms);
    log_warn("policy watchdog: %s (%ld abandoned call(s) still running)", m.data,
             atomic_load(&abandoned_alive));
    return m.data;
}

/* Waits under mu until done(r) holds, or the call in progress overruns (then abandons the
 * runner and returns false with *err). */
static bool wait_watched(struct policy_runner *r, bool (*done)(const struct policy_runner *),
                         char **err)
{
    long limit =
        r->limits.max_call_ms ? r->limits.max_call_ms + runner_margin_ms(r->limits.max_call_ms) : 0;
    while (!done(r)) {
        if (!limit) {
            pthread_cond_wait(&r->cv, &r->mu);
            continue;
        }
        int64_t now = lua_host_now_ms();
        int64_t started = r->host ? lua_host_call_started(r->host) : 0;
        if (started && now - started >= limit) {
            if (lua_host_abandon(r->host, now - limit + 1)) {
                *err = abandon(r, now - started);
                return false;
            }
            continue; /* the call ended meanwhile */
        }
        struct timespec until = at_ms((started ? started : now) + limit);
        pthread_cond_timedwait(&r->cv, &r->mu, &until);
    }
    return true;
}

static bool is_built(const struct policy_runner *r)
{
    return r->built;
}

static bool job_done(const struct policy_runner *r)
{
    return r->fn == NULL;
}

struct policy_runner *runner_start(const struct policy_sources *src,
                                   const struct lua_host_limits *limits, char **err)
{
    struct policy_runner *r = xcalloc(1, sizeof *r);
    r->limits = *limits;
    r->src = policy_sources_copy(src);
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&r->thread, NULL, runner_main, r) != 0) {
        *err = xstrdup("cannot start a policy runner thread");
        runner_free(r);
        return NULL;
    }
    pthread_mutex_lock(&r->mu);
    if (!wait_watched(r, is_built, err)) {
        pthread_mutex_unlock(&r->mu);
        return NULL; /* orphaned: the thread frees it */
    }
    bool failed = r->build_failed;
    if (failed) {
        *err = r->build_err;
        r->build_err = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    if (failed) {
        pthread_join(r->thread, NULL); /* it ends at once */
        runner_free(r);
        return NULL;
    }
    return r;
}

bool runner_run(struct policy_runner *r, policy_job_fn fn, void *arg, char **err)
{
    health_busy(HEALTH_POLICY);
    pthread_mutex_lock(&r->mu);
    r->fn = fn;
    r->arg = arg;
    pthread_cond_broadcast(&r->cv);
    bool ok = wait_watched(r, job_done, err);
    pthread_mutex_unlock(&r->mu);
    health_idle(HEALTH_POLICY);
    return ok;
}

void runner_stop(struct policy_runner *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    runner_free(r);
}

const struct policy_schedule *runner_schedules(struct policy_runner *r, size_t *n)
{
    return engine_schedules(r->engine, n);
}

bool runner_builtin_decide(struct policy_runner *r)
{
    return engine_builtin_decide(r->engine);
}
