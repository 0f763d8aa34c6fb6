/* The policy set that answers the control-plane hooks (replay_source, dlq_retry) for the
 * HTTP threads and the replay worker: one policy set behind a mutex, swapped together with
 * the pipeline's set on reload. */
#ifndef EVENTSINK_POLICY_CTL_H
#define EVENTSINK_POLICY_CTL_H

#include <stdbool.h>

#include "policy.h"

struct policy_ctl;

struct policy_ctl *policy_ctl_create(struct policy_set *ps); /* takes ownership */
void policy_ctl_destroy(struct policy_ctl *c);
/* Installs a new set (taking ownership) and destroys the old one. */
void policy_ctl_swap(struct policy_ctl *c, struct policy_set *ps);

/* The replay_source tag for a request (malloc'd), or NULL and *err when the hook failed. */
char *policy_ctl_replay_tag(struct policy_ctl *c, const char *kind, const char *requested_by,
                            const char *reason, bool automatic, char **err);
/* The replay_source tag for a request; falls back to the contract's default (and logs)
 * when the hook fails. Returns a malloc'd string. */
char *policy_ctl_replay_source(struct policy_ctl *c, const char *kind, const char *requested_by,
                               const char *reason, bool automatic);

/* The replay_guard hook (GUARD_* of policy.h); a hook that fails refuses, with *why. */
int policy_ctl_replay_guard(struct policy_ctl *c, const char *kind, const char *requested_by,
                            const char *reason, bool automatic, long count, double *defer_s,
                            char **why);

/* The dlq_retry hook: 1 with *seconds, or 0 (stop; also when the hook failed, logged). */
int policy_ctl_dlq_retry(struct policy_ctl *c, const struct dlq_entry_info *e, double *seconds);

/* A copy of the schedules of the set in use, and its version; free with
 * policy_schedules_free. */
struct policy_schedule *policy_ctl_schedules(struct policy_ctl *c, size_t *n, int *version);

#endif
