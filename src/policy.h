/* A loaded set of policy files: one Lua state with the runtime (lua/runtime.lua) and the
 * operator's hooks, built whole or not at all. A set is used by one thread at a time. */
#ifndef EVENTSINK_POLICY_H
#define EVENTSINK_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "lua_host.h"
#include "record.h"

struct policy_set;

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

/* The replay_source hook for a replay request (CONTRACT section 6). Returns the tag
 * (malloc'd), or NULL and *err when the hook failed. */
char *policy_replay_source(struct policy_set *ps, const char *kind, const char *requested_by,
                           const char *reason, bool automatic, char **err);

#endif
