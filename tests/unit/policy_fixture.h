/* The fixture of the policy unit tests (test_policy.c, test_policy_runner.c): a temporary
 * folder for policy files p1.lua..p4.lua, and the set loaded from them. Header-only: each
 * test program is one file. */
#ifndef EVENTSINK_TEST_POLICY_FIXTURE_H
#define EVENTSINK_TEST_POLICY_FIXTURE_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy.h"

struct fx {
    char dir[64];
    char paths[4][128];
    struct policy_set *ps;
    char *err;
};

static int fx_setup(void **state, const char *dir_template)
{
    struct fx *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "%s", dir_template); /* short: Lua shortens chunk names */
    if (!mkdtemp(fx->dir)) return -1;
    char dir[sizeof fx->dir];
    memcpy(dir, fx->dir, sizeof dir);
    for (int i = 0; i < 4; i++)
        snprintf(fx->paths[i], sizeof fx->paths[i], "%s/p%d.lua", dir, i + 1);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    policy_set_destroy(fx->ps);
    free(fx->err);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
    if (system(cmd) != 0) return -1;
    free(fx);
    return 0;
}

/* Writes the n texts to p1.lua.. and loads them (replacing fx->ps); the set, or NULL with
 * fx->err set. */
static struct policy_set *fx_vload(struct fx *fx, const struct lua_host_limits *limits,
                                   int version, int n, va_list ap)
{
    char *items[4];
    for (int i = 0; i < n; i++) {
        FILE *f = fopen(fx->paths[i], "w");
        assert_non_null(f);
        fputs(va_arg(ap, const char *), f);
        fclose(f);
        items[i] = fx->paths[i];
    }
    struct strlist files = {.items = items, .n = (size_t)n};
    policy_set_destroy(fx->ps);
    free(fx->err);
    fx->err = NULL;
    fx->ps = policy_set_load(&files, limits, version, &fx->err);
    if (fx->ps) assert_null(fx->err);
    return fx->ps;
}

#endif
