#include "policy_ctl.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"

struct policy_ctl {
    pthread_mutex_t lock;
    struct policy_set *ps;
};

struct policy_ctl *policy_ctl_create(struct policy_set *ps)
{
    struct policy_ctl *c = xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    c->ps = ps;
    return c;
}

void policy_ctl_destroy(struct policy_ctl *c)
{
    if (!c) return;
    policy_set_destroy(c->ps);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void policy_ctl_swap(struct policy_ctl *c, struct policy_set *ps)
{
    pthread_mutex_lock(&c->lock);
    struct policy_set *old = c->ps;
    c->ps = ps;
    pthread_mutex_unlock(&c->lock);
    policy_set_destroy(old);
}

static const char *default_tag(const char *kind, bool automatic)
{
    if (strcmp(kind, "scheduled") == 0) return "scheduled";
    if (strcmp(kind, "webhook") == 0) return "webhook";
    if (automatic) return "automated";
    return "operator_api";
}

char *policy_ctl_replay_tag(struct policy_ctl *c, const char *kind, const char *requested_by,
                            const char *reason, bool automatic, char **err)
{
    pthread_mutex_lock(&c->lock);
    char *tag = policy_replay_source(c->ps, kind, requested_by, reason, automatic, err);
    pthread_mutex_unlock(&c->lock);
    return tag;
}

char *policy_ctl_replay_source(struct policy_ctl *c, const char *kind, const char *requested_by,
                               const char *reason, bool automatic)
{
    char *err = NULL;
    char *tag = policy_ctl_replay_tag(c, kind, requested_by, reason, automatic, &err);
    if (tag) return tag;
    const char *def = default_tag(kind, automatic);
    log_warn("the replay_source hook failed (%s); tagging the replay \"%s\"", err, def);
    free(err);
    return xstrdup(def);
}

int policy_ctl_dlq_retry(struct policy_ctl *c, const struct dlq_entry_info *e, double *seconds)
{
    char *err = NULL;
    pthread_mutex_lock(&c->lock);
    int rc = policy_dlq_retry(c->ps, e, seconds, &err);
    pthread_mutex_unlock(&c->lock);
    if (rc < 0) {
        log_warn("the dlq_retry hook failed for DLQ entry %lld (%s); no automated retry for it",
                 (long long)e->id, err);
        free(err);
        return 0;
    }
    return rc;
}

struct policy_schedule *policy_ctl_schedules(struct policy_ctl *c, size_t *n, int *version)
{
    pthread_mutex_lock(&c->lock);
    size_t cnt;
    const struct policy_schedule *src = policy_set_schedules(c->ps, &cnt);
    struct policy_schedule *copy = policy_schedules_copy(src, cnt);
    *version = policy_set_version(c->ps);
    pthread_mutex_unlock(&c->lock);
    *n = cnt;
    return copy;
}

int policy_ctl_replay_guard(struct policy_ctl *c, const char *kind, const char *requested_by,
                            const char *reason, bool automatic, long count, double *defer_s,
                            char **why)
{
    char *err = NULL;
    pthread_mutex_lock(&c->lock);
    int rc = policy_replay_guard(c->ps, kind, requested_by, reason, automatic, count, defer_s, why,
                                 &err);
    pthread_mutex_unlock(&c->lock);
    if (rc >= 0) return rc;
    /* a guard that fails refuses: bulk replays are what it exists to hold back */
    struct buf m = {0};
    buf_printf(&m, "the replay_guard policy failed: %s", err);
    *why = m.data;
    log_warn("%s; refusing the %s replay", m.data, kind);
    free(err);
    return GUARD_REFUSE;
}
