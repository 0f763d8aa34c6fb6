#include "policy.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "policy_engine.h"
#include "policy_fast.h"
#include "policy_runner.h"

#define RESTART_RETRY_MS 1000 /* a replacement state that failed to build is tried again */

struct policy_set {
    struct policy_sources *src;
    struct lua_host_limits limits;
    int version;
    struct policy_runner *runner;      /* NULL once abandoned, until the next call rebuilds it */
    bool builtin_decide;               /* describe, detect_replay and route are the defaults */
    struct policy_schedule *schedules; /* copied out of the engine */
    size_t nschedules;
    int64_t restart_after_ms;
    char *restart_err;
};

struct policy_schedule *policy_schedules_copy(const struct policy_schedule *s, size_t n)
{
    struct policy_schedule *copy = xcalloc(n + 1, sizeof *copy);
    for (size_t i = 0; i < n; i++) {
        copy[i] = s[i];
        copy[i].name = xstrdup(s[i].name);
        copy[i].cron_text = xstrdup(s[i].cron_text);
        copy[i].action = xstrdup(s[i].action);
        copy[i].params_json = xstrdup(s[i].params_json);
    }
    return copy;
}

static void schedules_copy(struct policy_set *ps)
{
    const struct policy_schedule *s = runner_schedules(ps->runner, &ps->nschedules);
    ps->schedules = policy_schedules_copy(s, ps->nschedules);
}

/* Takes ownership of src. */
static struct policy_set *set_build(struct policy_sources *src, const struct lua_host_limits *lim,
                                    int version, char **err)
{
    struct policy_set *ps = xcalloc(1, sizeof *ps);
    ps->src = src;
    ps->limits = *lim;
    ps->version = version;
    ps->runner = runner_start(src, lim, err);
    if (!ps->runner) {
        policy_set_destroy(ps);
        return NULL;
    }
    ps->builtin_decide = runner_builtin_decide(ps->runner);
    schedules_copy(ps);
    return ps;
}

struct policy_set *policy_set_load(const struct strlist *files,
                                   const struct lua_host_limits *limits, int version, char **err)
{
    struct policy_sources *src = policy_sources_read(files, err);
    return src ? set_build(src, limits, version, err) : NULL;
}

struct policy_set *policy_set_clone(const struct policy_set *ps, char **err)
{
    return set_build(policy_sources_copy(ps->src), &ps->limits, ps->version, err);
}

void policy_set_destroy(struct policy_set *ps)
{
    if (!ps) return;
    runner_stop(ps->runner);
    policy_schedules_free(ps->schedules, ps->nschedules);
    policy_sources_free(ps->src);
    free(ps->restart_err);
    free(ps);
}

void policy_schedules_free(struct policy_schedule *s, size_t n)
{
    for (size_t i = 0; s && i < n; i++) {
        free(s[i].name);
        free(s[i].cron_text);
        free(s[i].action);
        free(s[i].params_json);
    }
    free(s);
}

int policy_set_version(const struct policy_set *ps)
{
    return ps->version;
}

const struct policy_schedule *policy_set_schedules(const struct policy_set *ps, size_t *n)
{
    *n = ps->nschedules;
    return ps->schedules;
}

/* The runner, rebuilt after an abandonment (at most every RESTART_RETRY_MS when that
 * fails). */
static struct policy_runner *runner_of(struct policy_set *ps, char **err)
{
    if (ps->runner) return ps->runner;
    int64_t now = lua_host_now_ms();
    if (now < ps->restart_after_ms) {
        *err = xstrdup(ps->restart_err);
        return NULL;
    }
    char *why = NULL;
    ps->runner = runner_start(ps->src, &ps->limits, &why);
    if (ps->runner) {
        log_info("policy watchdog: a new policy state (version %d) replaces the abandoned one",
                 ps->version);
        return ps->runner;
    }
    struct buf m = {0};
    buf_printf(&m, "the policy state could not be rebuilt after the watchdog fired: %s", why);
    free(why);
    free(ps->restart_err);
    ps->restart_err = m.data;
    ps->restart_after_ms = now + RESTART_RETRY_MS;
    log_error("%s; trying again in %d ms", m.data, RESTART_RETRY_MS);
    *err = xstrdup(m.data);
    return NULL;
}

/* Runs a job; on an abandonment the set forgets the runner (its thread frees it). */
static bool run(struct policy_set *ps, policy_job_fn fn, void *arg, char **err)
{
    struct policy_runner *r = runner_of(ps, err);
    if (!r) return false;
    if (runner_run(r, fn, arg, err)) return true;
    ps->runner = NULL;
    return false;
}

/* ---- decisions ------------------------------------------------------------------------- */

struct decide_job {
    struct policy_input *in;
    const size_t *idx; /* the records that need Lua */
    size_t n, next;
};

static void job_decide(struct policy_engine *e, void *arg)
{
    struct decide_job *j = arg;
    struct lua_host *h = engine_host(e);
    while (j->next < j->n) {
        struct policy_input *in = &j->in[j->idx[j->next]];
        struct decision d;
        engine_decide(e, in->rec, in->bad_reason, in->bad_detail, &d);
        if (lua_host_abandoned(h)) {
            decision_clear(&d); /* in, and the batch, are the caller's again */
            return;
        }
        *in->out = d;
        j->next++;
    }
}

/* A record the policies could not decide: dead-lettered with its own reason when the core
 * had one, else as policy_error. detail: malloc'd, taken. */
static void undecided(struct policy_input *in, char *detail)
{
    struct decision *d = in->out;
    memset(d, 0, sizeof *d);
    d->to_dlq = true;
    d->reason = in->bad_reason ? policy_static_reason(in->bad_reason) : "policy_error";
    d->detail = detail;
}

void policy_decide_batch(struct policy_set *ps, struct policy_input *in, size_t n)
{
    size_t *idx = NULL, need = 0;
    for (size_t i = 0; i < n; i++) {
        memset(in[i].out, 0, sizeof *in[i].out);
        if (ps->builtin_decide && !in[i].bad_reason &&
            policy_fast_decide(in[i].rec, true, in[i].out))
            continue;
        if (!idx) idx = xmalloc(n * sizeof *idx);
        idx[need++] = i;
    }
    struct decide_job j = {.in = in, .idx = idx, .n = need};
    while (j.next < j.n) {
        char *err = NULL;
        struct policy_runner *r = runner_of(ps, &err);
        if (!r) {
            struct policy_input *cur = &in[idx[j.next++]];
            if (cur->bad_reason) { /* its own reason, and its detail (still ours) */
                free(err);
                err = cur->bad_detail;
            }
            undecided(cur, err);
            continue;
        }
        if (runner_run(r, job_decide, &j, &err)) break;
        /* abandoned on the record in flight, in[idx[j.next]] (the job got that far): its
         * bad_detail went with the abandoned call */
        ps->runner = NULL;
        undecided(&in[idx[j.next++]], err);
    }
    free(idx);
}

void policy_decide(struct policy_set *ps, const struct record *r, const char *bad_reason,
                   char *bad_detail, struct decision *out)
{
    struct policy_input in = {
        .rec = r, .bad_reason = bad_reason, .bad_detail = bad_detail, .out = out};
    policy_decide_batch(ps, &in, 1);
}

void decision_clear(struct decision *d)
{
    free(d->tenant_id);
    free(d->event_type);
    free(d->replay_source);
    free(d->detail);
    memset(d, 0, sizeof *d);
}

/* ---- the control-plane hooks ----------------------------------------------------------- */

struct hook_job {
    /* in */
    const char *kind, *requested_by, *reason;
    bool automatic;
    long count;
    const struct dlq_entry_info *entry;
    /* out */
    int rc;
    char *tag, *why, *err;
    double seconds;
};

/* Ends a hook job: its results are the caller's only if the call was not abandoned. */
static void hook_done(struct policy_engine *e, struct hook_job *j, int rc, char *tag, char *why,
                      char *err, double seconds)
{
    if (lua_host_abandoned(engine_host(e))) {
        free(tag);
        free(why);
        free(err);
        return;
    }
    j->rc = rc;
    j->tag = tag;
    j->why = why;
    j->err = err;
    j->seconds = seconds;
}

static void job_replay_source(struct policy_engine *e, void *arg)
{
    struct hook_job *j = arg;
    char *err = NULL;
    char *tag = engine_replay_source(e, j->kind, j->requested_by, j->reason, j->automatic, &err);
    hook_done(e, j, 0, tag, NULL, err, 0);
}

static void job_replay_guard(struct policy_engine *e, void *arg)
{
    struct hook_job *j = arg;
    char *err = NULL, *why = NULL;
    double defer = 0;
    int rc = engine_replay_guard(e, j->kind, j->requested_by, j->reason, j->automatic, j->count,
                                 &defer, &why, &err);
    hook_done(e, j, rc, NULL, why, err, defer);
}

static void job_dlq_retry(struct policy_engine *e, void *arg)
{
    struct hook_job *j = arg;
    char *err = NULL;
    double s = 0;
    int rc = engine_dlq_retry(e, j->entry, &s, &err);
    hook_done(e, j, rc, NULL, NULL, err, s);
}

char *policy_replay_source(struct policy_set *ps, const char *kind, const char *requested_by,
                           const char *reason, bool automatic, char **err)
{
    struct hook_job j = {
        .kind = kind, .requested_by = requested_by, .reason = reason, .automatic = automatic};
    if (!run(ps, job_replay_source, &j, err)) return NULL;
    if (!j.tag) *err = j.err;
    return j.tag;
}

int policy_replay_guard(struct policy_set *ps, const char *kind, const char *requested_by,
                        const char *reason, bool automatic, long count, double *defer_s, char **why,
                        char **err)
{
    struct hook_job j = {.kind = kind,
                         .requested_by = requested_by,
                         .reason = reason,
                         .automatic = automatic,
                         .count = count};
    if (!run(ps, job_replay_guard, &j, err)) return -1;
    if (j.rc < 0) {
        *err = j.err;
        return -1;
    }
    free(j.err);
    if (j.rc == GUARD_REFUSE)
        *why = j.why;
    else
        free(j.why);
    if (j.rc == GUARD_DEFER) *defer_s = j.seconds;
    return j.rc;
}

int policy_dlq_retry(struct policy_set *ps, const struct dlq_entry_info *e, double *seconds,
                     char **err)
{
    struct hook_job j = {.entry = e};
    if (!run(ps, job_dlq_retry, &j, err)) return -1;
    if (j.rc < 0) {
        *err = j.err;
        return -1;
    }
    free(j.err);
    if (j.rc == 1) *seconds = j.seconds;
    return j.rc;
}

/* ---- arbitrary C code, for tests ------------------------------------------------------- */

struct exec_job {
    void (*fn)(struct lua_host *h, void *arg);
    void *arg;
};

static void job_exec(struct policy_engine *e, void *arg)
{
    struct exec_job *j = arg;
    void (*fn)(struct lua_host *, void *) = j->fn;
    void *fn_arg = j->arg;
    fn(engine_host(e), fn_arg);
}

bool policy_set_exec(struct policy_set *ps, void (*fn)(struct lua_host *h, void *arg), void *arg,
                     char **err)
{
    struct exec_job j = {fn, arg};
    return run(ps, job_exec, &j, err);
}
