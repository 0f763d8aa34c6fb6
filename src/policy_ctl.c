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

char *policy_ctl_replay_source(struct policy_ctl *c, const char *kind, const char *requested_by,
                               const char *reason, bool automatic)
{
    char *err = NULL;
    pthread_mutex_lock(&c->lock);
    char *tag = policy_replay_source(c->ps, kind, requested_by, reason, automatic, &err);
    pthread_mutex_unlock(&c->lock);
    if (tag) return tag;
    const char *def = default_tag(kind, automatic);
    log_warn("the replay_source hook failed (%s); tagging the replay \"%s\"", err, def);
    free(err);
    return xstrdup(def);
}
