/* A loaded set of policy files: one Lua state with the runtime (lua/runtime.lua) and the
 * operator's hooks, built whole or not at all. A set is used by one thread at a time. */
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
    bool to_dlq;
    const char *reason; /* DLQ reason code (static) when to_dlq */
    char *detail;       /* DLQ detail (malloc'd) or NULL */
};

/* Compiles and installs every file in a fresh state. On failure returns NULL and sets
 * *err (malloc'd) to the first error, with the file and line. */
struct policy_set *policy_set_load(const struct strlist *files,
                                   const struct lua_host_limits *limits, int version, char **err);
void policy_set_destroy(struct policy_set *ps);
int policy_set_version(const struct policy_set *ps);

/* Decides what to do with one record. bad_reason/bad_detail come from record_check();
 * when set, the record goes to the DLQ with that reason whatever the hooks say. Never
 * fails: a hook that raises, runs too long or takes too much memory gives
 * reason "policy_error" with the error as detail. */
void policy_decide(struct policy_set *ps, const struct record *r, const char *bad_reason,
                   char *bad_detail, struct decision *out);
void decision_clear(struct decision *d);

/* The set's schedules (owned by the set). */
const struct policy_schedule *policy_set_schedules(const struct policy_set *ps, size_t *n);

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
