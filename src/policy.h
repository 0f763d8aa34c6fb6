/* A loaded set of policy files, built whole or not at all: the runtime (lua/runtime.lua) and
 * the operator's hooks in one Lua state (policy_engine.h) that runs on a thread of its own
 * under a watchdog (policy_runner.h). Every call below returns within sandbox.max_call_ms
 * plus a small margin a Lua call, whatever the policy does; a state the watchdog had to
 * abandon is replaced from the same file contents on the next call. A set is used by one
 * thread at a time. */
#ifndef EVENTSINK_POLICY_H
#define EVENTSINK_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "cron.h"
#include "lua_host.h"
#include "record.h"

struct policy_set;

/* One entry of a policy's `schedules`, checked at load. */
struct policy_schedule {
    char *name;
    char *cron_text;
    struct cron cron;
    char *action;      /* "replay_range" or "dlq_retry" */
    char *params_json; /* the params table, as a JSON object */
};

/* What the dlq_retry hook sees of a DLQ entry. */
struct dlq_entry_info {
    int64_t id;
    const char *reason;
    int attempts;
    const char *topic;
    const char *tenant_id; /* may be NULL */
    const char *error;     /* may be NULL */
};

struct decision {
    char *tenant_id; /* NULL when unknown */
    char *event_type;
    char *replay_source;            /* NULL for an original */
    int64_t replayed_from_event_id; /* 0 when none */
    int64_t replayed_from_dlq_id;   /* 0 when none */
    int64_t replay_job_id;          /* 0 when none */
    signed char replay_verified;    /* -1 original, 1 markers signed by eventsink, 0 not
                                       (set by replay_auth_check, after the policies) */
    bool to_dlq;
    const char *reason; /* DLQ reason code (static) when to_dlq */
    char *detail;       /* DLQ detail (malloc'd) or NULL */
};

/* Reads, compiles and installs every file in a fresh state and runs the self-test. On
 * failure returns NULL and sets *err (malloc'd) to the first error, with the file and
 * line. */
struct policy_set *policy_set_load(const struct strlist *files,
                                   const struct lua_host_limits *limits, int version, char **err);
/* A second set of the same version from the same file contents (not read again). */
struct policy_set *policy_set_clone(const struct policy_set *ps, char **err);
void policy_set_destroy(struct policy_set *ps);
int policy_set_version(const struct policy_set *ps);

/* Decides what to do with one record. bad_reason/bad_detail come from record_check();
 * when set, the record goes to the DLQ with that reason whatever the hooks say. Never
 * fails: a hook that raises, runs too long or takes too much memory gives
 * reason "policy_error" with the error as detail. */
void policy_decide(struct policy_set *ps, const struct record *r, const char *bad_reason,
                   char *bad_detail, struct decision *out);
void decision_clear(struct decision *d);

/* One record of policy_decide_batch: in, and where its decision goes. The set takes
 * ownership of bad_detail. */
struct policy_input {
    const struct record *rec;
    const char *bad_reason;
    char *bad_detail;
    struct decision *out;
};
/* policy_decide for n records at once: the pipeline's way, one hand-over to the policy
 * thread a batch. */
void policy_decide_batch(struct policy_set *ps, struct policy_input *in, size_t n);

/* Runs fn(host, arg) on the set's policy thread under the same watchdog as every hook
 * (fn follows the rule of policy_job_fn: arg only outside Lua calls). False with *err when
 * the watchdog abandoned it. For tests that put C code of their own into the sandbox. */
bool policy_set_exec(struct policy_set *ps, void (*fn)(struct lua_host *h, void *arg), void *arg,
                     char **err);

/* The set's schedules (owned by the set). */
const struct policy_schedule *policy_set_schedules(const struct policy_set *ps, size_t *n);
/* A deep copy of n schedules, and its release (accepts NULL). */
struct policy_schedule *policy_schedules_copy(const struct policy_schedule *s, size_t n);
void policy_schedules_free(struct policy_schedule *s, size_t n);

/* The dlq_retry hook: 1 with *seconds until the next automated attempt, 0 when retrying
 * stops, -1 with *err when the hook failed. */
int policy_dlq_retry(struct policy_set *ps, const struct dlq_entry_info *e, double *seconds,
                     char **err);

enum { GUARD_ALLOW = 0, GUARD_REFUSE = 1, GUARD_DEFER = 2 };

/* The replay_guard hook for a bulk replay of `count` events: GUARD_ALLOW, GUARD_REFUSE with
 * *why (malloc'd), GUARD_DEFER with *defer_s, or -1 with *err when the hook failed. */
int policy_replay_guard(struct policy_set *ps, const char *kind, const char *requested_by,
                        const char *reason, bool automatic, long count, double *defer_s, char **why,
                        char **err);

/* The replay_source hook for a replay request (CONTRACT section 6). Returns the tag
 * (malloc'd), or NULL and *err when the hook failed. */
char *policy_replay_source(struct policy_set *ps, const char *kind, const char *requested_by,
                           const char *reason, bool automatic, char **err);

#endif
