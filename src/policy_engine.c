#include "policy_engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "assets.h"
#include "buf.h"
#include "cron.h"
#include "log.h"

struct policy_engine {
    struct lua_host *host;
    struct policy_schedule *schedules;
    size_t nschedules;
    bool builtin_decide; /* describe, detect_replay and route are the defaults: C decides */
    const struct policy_sources *src; /* the files (they outlive the engine) */
    int runtime_ref;                  /* registry reference to the runtime's table */
    int decide_ref;                   /* registry reference to runtime.decide */
};

/* Lua shortens a chunk name to LUA_IDSIZE characters ("...cies/main.lua:4: ..."): put the
 * full path of the policy file back into a message that names one of them. Takes and
 * returns a malloc'd message. */
char *policy_full_paths(char *msg, const struct policy_sources *files)
{
    if (!msg) return msg;
    for (char *dots = strstr(msg, "..."); dots; dots = strstr(dots + 3, "...")) {
        const char *colon = strchr(dots + 3, ':');
        if (!colon) break;
        size_t shown = (size_t)(colon - (dots + 3));
        for (size_t i = 0; i < files->n; i++) {
            const char *f = files->paths[i];
            size_t fl = strlen(f);
            if (shown && fl >= shown && memcmp(f + fl - shown, dots + 3, shown) == 0) {
                struct buf b = {0};
                buf_printf(&b, "%.*s%s%s", (int)(dots - msg), msg, f, colon);
                free(msg);
                return b.data;
            }
        }
    }
    return msg;
}

static bool read_file(const char *path, struct buf *out, char **err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        struct buf m = {0};
        buf_printf(&m, "%s: cannot open the policy file", path);
        *err = m.data;
        return false;
    }
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(out, chunk, n);
    fclose(f);
    return true;
}

struct policy_sources *policy_sources_read(const struct strlist *files, char **err)
{
    struct policy_sources *s = xcalloc(1, sizeof *s);
    s->paths = xcalloc(files->n + 1, sizeof *s->paths);
    s->texts = xcalloc(files->n + 1, sizeof *s->texts);
    for (size_t i = 0; i < files->n; i++) {
        s->paths[i] = xstrdup(files->items[i]);
        s->texts[i] = (struct buf){0};
        s->n++;
        if (!read_file(files->items[i], &s->texts[i], err)) {
            policy_sources_free(s);
            return NULL;
        }
    }
    return s;
}

struct policy_sources *policy_sources_copy(const struct policy_sources *src)
{
    struct policy_sources *s = xcalloc(1, sizeof *s);
    s->paths = xcalloc(src->n + 1, sizeof *s->paths);
    s->texts = xcalloc(src->n + 1, sizeof *s->texts);
    for (size_t i = 0; i < src->n; i++) {
        s->paths[i] = xstrdup(src->paths[i]);
        buf_append(&s->texts[i], src->texts[i].data ? src->texts[i].data : "", src->texts[i].len);
    }
    s->n = src->n;
    return s;
}

void policy_sources_free(struct policy_sources *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->paths[i]);
        buf_free(&s->texts[i]);
    }
    free(s->paths);
    free(s->texts);
    free(s);
}

/* Stack: [] -> [] ; runtime[name](args...) with nargs pushed after the lookup by caller. */
static void push_runtime_fn(struct policy_engine *ps, const char *name)
{
    lua_State *L = lua_host_state(ps->host);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ps->runtime_ref);
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
}

/* Reads runtime.schedule_list() into C, checking each cron expression. */
static bool load_schedules(struct policy_engine *ps, char **err)
{
    lua_State *L = lua_host_state(ps->host);
    push_runtime_fn(ps, "schedule_list");
    if (!lua_host_pcall(ps->host, 0, 2, err)) return false;
    const char *file = lua_isstring(L, -1) ? lua_tostring(L, -1) : "policies";
    lua_Integer n = (lua_Integer)lua_rawlen(L, -2);
    ps->schedules = xcalloc((size_t)n + 1, sizeof *ps->schedules);
    bool ok = true;
    for (lua_Integer i = 1; i <= n && ok; i++) {
        lua_rawgeti(L, -2, i);
        struct policy_schedule *sc = &ps->schedules[ps->nschedules++];
        const char *fields[4];
        for (int k = 0; k < 4; k++) {
            lua_rawgeti(L, -1 - k, k + 1);
            fields[k] = lua_tostring(L, -1);
        }
        sc->name = xstrdup(fields[0]);
        sc->cron_text = xstrdup(fields[1]);
        sc->action = xstrdup(fields[2]);
        sc->params_json = xstrdup(fields[3]);
        const char *why = NULL;
        if (!cron_parse(sc->cron_text, &sc->cron, &why)) {
            struct buf m = {0};
            buf_printf(&m, "%s: schedule '%s': bad cron expression \"%s\": %s", file, sc->name,
                       sc->cron_text, why);
            *err = m.data;
            ok = false;
        }
        lua_pop(L, 5);
    }
    lua_pop(L, 2);
    return ok;
}

struct policy_engine *engine_load(struct lua_host *host, const struct policy_sources *files,
                                  char **err)
{
    struct policy_engine *ps = xcalloc(1, sizeof *ps);
    ps->runtime_ref = ps->decide_ref = LUA_NOREF;
    ps->src = files;
    ps->host = host;
    lua_State *L = lua_host_state(ps->host);

    const struct asset *rt = asset_find("lua/runtime.lua");
    if (!rt) {
        *err = xstrdup("lua/runtime.lua is missing from the binary");
        goto error;
    }
    if (!lua_host_load(ps->host, rt->data, rt->len, "@lua/runtime.lua", err)) goto error;
    if (!lua_host_pcall(ps->host, 0, 1, err)) goto error;
    ps->runtime_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    for (size_t i = 0; i < files->n; i++) {
        const char *path = files->paths[i];
        const struct buf *src = &files->texts[i];
        struct buf chunkname = {0};
        buf_printf(&chunkname, "@%s", path);
        bool ok =
            lua_host_load(ps->host, src->data ? src->data : "", src->len, chunkname.data, err);
        buf_free(&chunkname);
        if (!ok) goto error;
        /* [chunk] -> give it its own environment, run it, install what it returns */
        push_runtime_fn(ps, "new_env");
        if (!lua_host_pcall(ps->host, 0, 1, err)) {
            lua_pop(L, 1);
            goto error;
        }
        lua_pushvalue(L, -1);                       /* [chunk, env, env] */
        lua_setupvalue(L, -3, 1);                   /* chunk's _ENV = env: [chunk, env] */
        lua_insert(L, -2);                          /* [env, chunk] */
        if (!lua_host_pcall(ps->host, 0, 1, err)) { /* [env, result] */
            lua_pop(L, 1);
            goto error;
        }
        push_runtime_fn(ps, "install"); /* [env, result, install] */
        lua_insert(L, -3);              /* [install, env, result] */
        lua_pushstring(L, path);        /* [install, env, result, path] */
        lua_insert(L, -3);              /* [install, path, env, result] */
        lua_insert(L, -2);              /* [install, path, result, env] */
        if (!lua_host_pcall(ps->host, 3, 0, err)) goto error;
    }
    push_runtime_fn(ps, "finish");
    if (!lua_host_pcall(ps->host, 0, 1, err)) goto error;
    ps->builtin_decide = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!load_schedules(ps, err)) goto error;
    push_runtime_fn(ps, "self_test");
    if (!lua_host_pcall(ps->host, 0, 0, err)) goto error;
    push_runtime_fn(ps, "decide");
    ps->decide_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return ps;

error:
    if (err) *err = policy_full_paths(*err, files);
    ps->host = NULL; /* the caller's again */
    engine_destroy(ps);
    return NULL;
}

void engine_destroy(struct policy_engine *ps)
{
    if (!ps) return;
    for (size_t i = 0; i < ps->nschedules; i++) {
        free(ps->schedules[i].name);
        free(ps->schedules[i].cron_text);
        free(ps->schedules[i].action);
        free(ps->schedules[i].params_json);
    }
    free(ps->schedules);
    lua_host_destroy(ps->host); /* frees the references with the state */
    ps->host = NULL;
    free(ps);
}

struct lua_host *engine_host(struct policy_engine *ps)
{
    return ps->host;
}

bool engine_builtin_decide(const struct policy_engine *ps)
{
    return ps->builtin_decide;
}

const struct policy_schedule *engine_schedules(const struct policy_engine *ps, size_t *n)
{
    *n = ps->nschedules;
    return ps->schedules;
}

int engine_dlq_retry(struct policy_engine *ps, const struct dlq_entry_info *e, double *seconds,
                     char **err)
{
    lua_State *L = lua_host_state(ps->host);
    push_runtime_fn(ps, "dlq_retry");
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, e->id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, e->reason);
    lua_setfield(L, -2, "reason");
    lua_pushinteger(L, e->attempts);
    lua_setfield(L, -2, "attempts");
    lua_pushstring(L, e->topic);
    lua_setfield(L, -2, "topic");
    if (e->tenant_id) {
        lua_pushstring(L, e->tenant_id);
        lua_setfield(L, -2, "tenant_id");
    }
    if (e->error) {
        lua_pushstring(L, e->error);
        lua_setfield(L, -2, "error");
    }
    if (!lua_host_pcall(ps->host, 1, 1, err)) return -1;
    int rc = 0;
    if (lua_isnumber(L, -1)) {
        *seconds = lua_tonumber(L, -1);
        rc = 1;
    }
    lua_pop(L, 1);
    return rc;
}

/* Stack: [] -> [ev] */
static void push_event(lua_State *L, const struct record *r)
{
    lua_createtable(L, 0, 8);
    lua_pushstring(L, r->topic);
    lua_setfield(L, -2, "topic");
    lua_pushinteger(L, r->partition);
    lua_setfield(L, -2, "partition");
    lua_pushinteger(L, r->offset);
    lua_setfield(L, -2, "offset");
    if (r->key) {
        lua_pushlstring(L, r->key, r->key_len);
        lua_setfield(L, -2, "key");
    }
    if (r->timestamp_ms >= 0) {
        lua_pushinteger(L, r->timestamp_ms);
        lua_setfield(L, -2, "timestamp_ms");
    }
    lua_pushlstring(L, r->value ? r->value : "", r->value_len);
    lua_setfield(L, -2, "raw");
    if (r->nheaders) {
        lua_createtable(L, 0, (int)r->nheaders);
        for (size_t i = 0; i < r->nheaders; i++) {
            if (!r->headers[i].value) continue;
            lua_pushlstring(L, r->headers[i].value, r->headers[i].value_len);
            lua_setfield(L, -2, r->headers[i].name);
        }
        lua_setfield(L, -2, "headers");
    }
}

static char *opt_string(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TSTRING) return NULL;
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return xstrndup(s, n);
}

static const char *const reasons[] = {"invalid_json", "invalid_utf8",   "nul_character",
                                      "too_large",    "missing_tenant", "policy_error",
                                      "policy_route", "db_reject",      NULL};

const char *policy_static_reason(const char *s)
{
    for (const char *const *r = reasons; *r; r++)
        if (s && strcmp(s, *r) == 0) return *r;
    return "policy_route";
}

void engine_decide(struct policy_engine *ps, const struct record *r, const char *bad_reason,
                   char *bad_detail, struct decision *out)
{
    memset(out, 0, sizeof *out);
    lua_State *L = lua_host_state(ps->host);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ps->decide_ref);
    push_event(L, r);
    if (bad_reason)
        lua_pushstring(L, bad_reason);
    else
        lua_pushnil(L);
    char *err = NULL;
    if (!lua_host_pcall(ps->host, 2, 9, &err)) {
        out->to_dlq = true;
        if (bad_reason) {
            out->reason = policy_static_reason(bad_reason);
            out->detail = bad_detail;
            free(err);
        } else {
            out->reason = "policy_error";
            out->detail = policy_full_paths(err, ps->src);
        }
        return;
    }
    out->tenant_id = opt_string(L, -9);
    out->event_type = opt_string(L, -8);
    out->replay_source = opt_string(L, -7);
    out->replayed_from_event_id = lua_isinteger(L, -6) ? lua_tointeger(L, -6) : 0;
    out->replayed_from_dlq_id = lua_isinteger(L, -5) ? lua_tointeger(L, -5) : 0;
    out->replay_job_id = lua_isinteger(L, -4) ? lua_tointeger(L, -4) : 0;
    out->to_dlq = lua_type(L, -3) == LUA_TSTRING;
    if (out->to_dlq) {
        out->reason = policy_static_reason(lua_tostring(L, -2));
        if (bad_reason) {
            out->detail = bad_detail;
            bad_detail = NULL;
        } else {
            out->detail = opt_string(L, -1);
            /* a hook after describe raised: its error names the file as the state knows it */
            if (out->detail && strcmp(out->reason, "policy_error") == 0)
                out->detail = policy_full_paths(out->detail, ps->src);
        }
    }
    lua_pop(L, 9);
    free(bad_detail);
}

/* Stack: [] -> [req] ; the request table of the replay_source and replay_guard hooks. */
static void push_request(lua_State *L, const char *kind, const char *requested_by,
                         const char *reason, bool automatic)
{
    lua_createtable(L, 0, 5);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    if (requested_by) {
        lua_pushstring(L, requested_by);
        lua_setfield(L, -2, "requested_by");
    }
    if (reason) {
        lua_pushstring(L, reason);
        lua_setfield(L, -2, "reason");
    }
    lua_pushboolean(L, automatic);
    lua_setfield(L, -2, "automatic");
}

char *engine_replay_source(struct policy_engine *ps, const char *kind, const char *requested_by,
                           const char *reason, bool automatic, char **err)
{
    lua_State *L = lua_host_state(ps->host);
    push_runtime_fn(ps, "replay_source");
    push_request(L, kind, requested_by, reason, automatic);
    if (!lua_host_pcall(ps->host, 1, 1, err)) return NULL;
    char *tag = opt_string(L, -1);
    lua_pop(L, 1);
    if (!tag) *err = xstrdup("replay_source returned no tag");
    return tag;
}

int engine_replay_guard(struct policy_engine *ps, const char *kind, const char *requested_by,
                        const char *reason, bool automatic, long count, double *defer_s, char **why,
                        char **err)
{
    lua_State *L = lua_host_state(ps->host);
    push_runtime_fn(ps, "replay_guard");
    push_request(L, kind, requested_by, reason, automatic);
    lua_pushinteger(L, count);
    lua_setfield(L, -2, "count");
    if (!lua_host_pcall(ps->host, 1, 2, err)) return -1;
    const char *verdict = lua_tostring(L, -2);
    int rc = GUARD_ALLOW;
    if (verdict && strcmp(verdict, "refuse") == 0) {
        rc = GUARD_REFUSE;
        *why = opt_string(L, -1);
    } else if (verdict && strcmp(verdict, "defer") == 0) {
        rc = GUARD_DEFER;
        *defer_s = lua_tonumber(L, -1);
    }
    lua_pop(L, 2);
    return rc;
}
