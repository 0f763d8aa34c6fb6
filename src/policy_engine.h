/* One Lua state with the runtime (lua/runtime.lua) and the operator's policy files: the
 * part of a policy set that runs Lua. An engine belongs to one thread (its runner's, see
 * policy_runner.h); nothing here has a deadline of its own beyond the sandbox's hook.
 * policy.h is the supervised interface that the rest of the service uses. */
#ifndef EVENTSINK_POLICY_ENGINE_H
#define EVENTSINK_POLICY_ENGINE_H

#include "buf.h"
#include "policy.h"

/* The policy files as read once: every engine of a set is built from the same text, so a
 * replacement engine never sees a file edited since (that takes a reload). */
struct policy_sources {
    size_t n;
    char **paths;
    struct buf *texts;
};

struct policy_sources *policy_sources_read(const struct strlist *files, char **err);
struct policy_sources *policy_sources_copy(const struct policy_sources *s);
void policy_sources_free(struct policy_sources *s); /* accepts NULL */

/* Lua shortens a chunk name to LUA_IDSIZE characters ("...cies/main.lua:4: ..."): puts the
 * full path of the policy file back into a message that names one of them. Takes and
 * returns a malloc'd message. */
char *policy_full_paths(char *msg, const struct policy_sources *files);
/* The static DLQ reason code for s ("policy_route" for anything unknown). */
const char *policy_static_reason(const char *s);

/* Compiles and installs every file in host (a fresh LUA_HOST_POLICY state), then runs the
 * self-test. On success the engine owns host; src must outlive it. On failure returns NULL
 * and *err (malloc'd, with file and line); host stays the caller's. */
struct policy_engine *engine_load(struct lua_host *host, const struct policy_sources *src,
                                  char **err);
void engine_destroy(struct policy_engine *e); /* accepts NULL and half-built engines */
struct lua_host *engine_host(struct policy_engine *e);
bool engine_builtin_decide(const struct policy_engine *e);
const struct policy_schedule *engine_schedules(const struct policy_engine *e, size_t *n);

/* The hooks, as policy.h describes them (without the C fast path of the built-ins). */
void engine_decide(struct policy_engine *e, const struct record *r, const char *bad_reason,
                   char *bad_detail, struct decision *out);
int engine_dlq_retry(struct policy_engine *e, const struct dlq_entry_info *entry, double *seconds,
                     char **err);
int engine_replay_guard(struct policy_engine *e, const char *kind, const char *requested_by,
                        const char *reason, bool automatic, long count, double *defer_s, char **why,
                        char **err);
char *engine_replay_source(struct policy_engine *e, const char *kind, const char *requested_by,
                           const char *reason, bool automatic, char **err);

#endif
