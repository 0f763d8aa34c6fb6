#include "lua_host.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#include "buf.h"
#include "log.h"
#include "lua_json.h"
#include "lua_patterns.h"
#include "lua_safe.h"

/* lua-cjson is linked in (liblua5.4-cjson) and opened here, never through require. */
int luaopen_cjson(lua_State *L);

#define HOOK_STEP 1000 /* instructions between two budget checks */
#define PATTERN_MAX_STEPS 1000000L

struct lua_host {
    lua_State *L;
    struct lua_host_limits limits;
    enum lua_host_env env;
    size_t mem_used;
    long instructions;        /* counted in the current call */
    struct timespec deadline; /* of the current call, when limits.max_call_ms is set */
    bool timed_out;
    const char *trip_reason; /* set by lua_host_trip(): points into trip_msg */
    char trip_msg[160];
    bool tripped;     /* the budget ran out in the current call: keep raising */
    bool mem_refused; /* an allocation was refused in the current call */
    /* The watchdog's view (policy_runner.c), the one field another thread touches: the
     * CLOCK_MONOTONIC ms at which the outermost lua_host_pcall started, 0 outside a call,
     * -1 once the watchdog abandoned the host. Only the host's thread moves it from 0 to a
     * start and back (compare-and-swap); only the watchdog moves a start to -1. */
    _Atomic int64_t call_started;
    int depth; /* nesting of lua_host_pcall (the host's thread only) */
};

int64_t lua_host_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t lua_host_call_started(struct lua_host *h)
{
    int64_t v = atomic_load(&h->call_started);
    return v > 0 ? v : 0;
}

bool lua_host_abandoned(struct lua_host *h)
{
    return atomic_load(&h->call_started) < 0;
}

bool lua_host_abandon(struct lua_host *h, int64_t started_before_ms)
{
    int64_t v = atomic_load(&h->call_started);
    if (v <= 0 || v >= started_before_ms) return false;
    return atomic_compare_exchange_strong(&h->call_started, &v, -1);
}

static struct lua_host *host_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

/* The allocator enforces the memory cap. Shrinking never fails (Lua relies on it). */
static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct lua_host *h = ud;
    if (!ptr) osize = 0;
    if (nsize == 0) {
        free(ptr);
        h->mem_used -= osize;
        return NULL;
    }
    if (nsize > osize && h->limits.max_memory_bytes &&
        h->mem_used + (nsize - osize) > h->limits.max_memory_bytes) {
        h->mem_refused = true;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (!p) {
        if (nsize <= osize) return ptr;
        return NULL;
    }
    h->mem_used = h->mem_used - osize + nsize;
    return p;
}

static void budget_hook(lua_State *L, lua_Debug *ar);

static bool past_deadline(struct lua_host *h)
{
    if (!h->limits.max_call_ms) return false;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > h->deadline.tv_sec ||
           (now.tv_sec == h->deadline.tv_sec && now.tv_nsec > h->deadline.tv_nsec);
}

void lua_host_trip(lua_State *L, const char *why)
{
    void *ud = NULL;
    if (lua_getallocf(L, &ud) != host_alloc || !ud) return; /* not one of ours */
    struct lua_host *h = ud;
    if (!h->limits.max_instructions && !h->limits.max_call_ms) return;
    h->tripped = true;
    if (!h->trip_reason) {
        snprintf(h->trip_msg, sizeof h->trip_msg, "%s", why);
        h->trip_reason = h->trip_msg;
    }
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    struct lua_host *h = host_of(L);
    /* count events: HOOK_STEP instructions; call events (with a time limit): the clock is
     * read before every function, C functions included, which are invisible to the count */
    if (ar->event == LUA_HOOKCOUNT) h->instructions += HOOK_STEP;
    if (!h->tripped && past_deadline(h)) {
        h->tripped = true;
        h->timed_out = true;
    }
    if (h->tripped ||
        (h->limits.max_instructions && h->instructions > h->limits.max_instructions)) {
        /* fire on every instruction from now on, so a pcall inside the script cannot
         * swallow the error and carry on */
        h->tripped = true;
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
        luaL_error(L, "instruction budget exceeded (%d instructions)",
                   (int)h->limits.max_instructions);
    }
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

bool lua_host_pcall(struct lua_host *h, int nargs, int nresults, char **err)
{
    lua_State *L = h->L;
    int base = lua_gettop(L) - nargs; /* index of the function */
    if (lua_host_abandoned(h)) {
        /* the watchdog gave up on this host: run nothing more in it */
        lua_settop(L, base - 1);
        if (err) *err = xstrdup("the policy state was abandoned by the watchdog");
        return false;
    }
    int64_t started = 0;
    if (h->depth++ == 0) {
        started = lua_host_now_ms();
        atomic_store(&h->call_started, started > 0 ? started : 1);
        started = started > 0 ? started : 1;
    }
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    h->instructions = 0;
    h->tripped = false;
    h->timed_out = false;
    h->trip_reason = NULL;
    h->mem_refused = false;
    if (h->limits.max_call_ms) {
        clock_gettime(CLOCK_MONOTONIC, &h->deadline);
        h->deadline.tv_sec += h->limits.max_call_ms / 1000;
        h->deadline.tv_nsec += (h->limits.max_call_ms % 1000) * 1000000L;
        if (h->deadline.tv_nsec >= 1000000000L) {
            h->deadline.tv_sec++;
            h->deadline.tv_nsec -= 1000000000L;
        }
    }
    bool hooked = h->limits.max_instructions || h->limits.max_call_ms;
    if (hooked)
        lua_sethook(L, budget_hook, LUA_MASKCOUNT | (h->limits.max_call_ms ? LUA_MASKCALL : 0),
                    HOOK_STEP);
    int rc = lua_pcall(L, nargs, nresults, base);
    if (hooked) lua_sethook(L, NULL, 0, 0);
    lua_remove(L, base);
    bool abandoned = false;
    if (--h->depth == 0) {
        int64_t expect = started;
        abandoned = !atomic_compare_exchange_strong(&h->call_started, &expect, 0);
    }
    if (abandoned) {
        /* the watchdog returned to the caller already: whatever this call produced is
         * nobody's; fail it, and every later call */
        if (rc == LUA_OK)
            lua_pop(L, nresults == LUA_MULTRET ? 0 : nresults);
        else
            lua_pop(L, 1);
        if (err) *err = xstrdup("the policy state was abandoned by the watchdog");
        h->tripped = false;
        return false;
    }
    if (rc == LUA_OK && h->tripped) {
        /* the budget ran out inside a coroutine that the script resumed and abandoned:
         * the call failed all the same */
        lua_pop(L, nresults == LUA_MULTRET ? 0 : nresults);
        lua_pushliteral(L, "instruction budget exceeded");
        rc = LUA_ERRRUN;
    }
    if (rc == LUA_OK) return true;

    struct buf msg = {0};
    if (h->timed_out) {
        buf_printf(&msg, "time limit exceeded (sandbox.max_call_ms = %ld ms)",
                   h->limits.max_call_ms);
    } else if (h->trip_reason) {
        buf_printf(&msg, "%s", h->trip_reason);
    } else if (h->tripped) {
        buf_printf(&msg, "instruction budget exceeded (sandbox.max_instructions = %ld)",
                   h->limits.max_instructions);
    } else if (rc == LUA_ERRMEM) {
        buf_printf(&msg, "memory limit exceeded (sandbox.max_memory_bytes = %zu)",
                   h->limits.max_memory_bytes);
    } else {
        const char *m = lua_tostring(L, -1);
        m = m ? m : "(error without message)";
        /* the message says file and line; the traceback is for debugging */
        const char *tb = strstr(m, "\nstack traceback:");
        buf_append(&msg, m, tb ? (size_t)(tb - m) : strlen(m));
        if (tb) log_debug("lua error: %s", m);
    }
    lua_pop(L, 1);
    if (rc == LUA_ERRMEM || h->mem_refused) lua_gc(L, LUA_GCCOLLECT);
    h->mem_refused = false;
    if (err) *err = xstrdup(buf_cstr(&msg));
    buf_free(&msg);
    h->tripped = false;
    return false;
}

bool lua_host_load(struct lua_host *h, const char *src, size_t len, const char *chunkname,
                   char **err)
{
    int rc = luaL_loadbufferx(h->L, src, len, chunkname, "t");
    if (rc == LUA_OK) return true;
    if (err) {
        const char *m = lua_tostring(h->L, -1);
        *err = xstrdup(m ? m : "load error");
    }
    lua_pop(h->L, 1);
    return false;
}

size_t lua_host_memory(const struct lua_host *h)
{
    return h->mem_used;
}

/* ---- the restricted environment --------------------------------------------------------- */

/* load(chunk [, chunkname [, mode [, env]]]) for text chunks only: binary chunks bypass the
 * verifier and are the classic way out of a Lua sandbox. */
static int safe_load(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "=(load)");
    const char *mode = luaL_optstring(L, 3, "t");
    if (strchr(mode, 'b')) return luaL_argerror(L, 3, "binary chunks are not allowed");
    int env = !lua_isnone(L, 4) ? 4 : 0;
    if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2; /* nil, message */
    }
    if (env) {
        lua_pushvalue(L, env);
        if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
    }
    return 1;
}

static int sink_log(lua_State *L)
{
    const char *level = luaL_checkstring(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    enum log_level lv;
    if (!log_level_parse(level, &lv)) return luaL_argerror(L, 1, "debug, info, warn or error");
    lua_Debug ar;
    const char *where = "?";
    int line = 0;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar)) {
        where = ar.short_src;
        line = ar.currentline;
    }
    log_msg(lv, "policy %s:%d: %s", where, line, msg);
    return 0;
}

static int sink_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    log_msg(LOG_INFO, "policy print: %s", lua_tostring(L, -1));
    return 0;
}

static int sink_now(lua_State *L)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lua_pushnumber(L, (double)tv.tv_sec + (double)tv.tv_usec / 1e6);
    return 1;
}

/* Stack: [] -> [] ; copies the named fields of the table on top into a new table set as
 * global `name`, and pops the source table. */
static void keep_fields(lua_State *L, const char *name, const char *const *fields)
{
    lua_newtable(L);
    for (const char *const *f = fields; *f; f++) {
        lua_getfield(L, -2, *f);
        lua_setfield(L, -2, *f);
    }
    lua_setglobal(L, name);
    lua_pop(L, 1);
}

static int setup_env(lua_State *L)
{
    struct lua_host *h = host_of(L);
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},
        {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table},
        {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},
        {LUA_COLIBNAME, luaopen_coroutine},
        {NULL, NULL},
    };
    for (const luaL_Reg *lib = libs; lib->func; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    /* string.find/match/gmatch/gsub backtrack in C, where the instruction hook never
     * fires: replace them with copies that stop after a number of steps per call. The
     * limit is the instruction budget (default 1,000,000): a step costs a few times what
     * an instruction does (5-10 ns), so one pattern call stops within about 10 ms; a host
     * without an instruction budget has no step limit either. */
    /* pattern steps per call: as many as Lua instructions, at most PATTERN_MAX_STEPS (about
     * 10 ms of matching), so that a budget raised for long Lua code does not let one
     * match run for seconds */
    long steps = h->limits.max_instructions;
    if (steps > PATTERN_MAX_STEPS || (!steps && h->limits.max_call_ms)) steps = PATTERN_MAX_STEPS;
    lua_patterns_install(L, steps);
    /* string.rep, table.move, setmetatable (__gc) and the string metatable: see lua_safe.h */
    lua_safe_install(L, h->limits.max_instructions ? h->limits.max_instructions * 10 : 0);
    /* base: no file access, no binary chunks, no collector control */
    static const char *const removed[] = {"dofile", "loadfile", "collectgarbage", NULL};
    for (const char *const *r = removed; *r; r++) {
        lua_pushnil(L);
        lua_setglobal(L, *r);
    }
    lua_pushcfunction(L, safe_load);
    lua_setglobal(L, "load");
    lua_pushcfunction(L, sink_print);
    lua_setglobal(L, "print");
    /* string.dump makes binary chunks; nothing here can load them, but it has no use */
    lua_getglobal(L, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);

    /* os: time only (plus getenv for the configuration file) */
    luaL_requiref(L, "os", luaopen_os, 0);
    static const char *const os_policy[] = {"time", "clock", "date", "difftime", NULL};
    static const char *const os_config[] = {"time", "clock", "date", "difftime", "getenv", NULL};
    keep_fields(L, "os", h->env == LUA_HOST_CONFIG ? os_config : os_policy);

    /* sink.* */
    lua_newtable(L);
    lua_pushcfunction(L, sink_log);
    lua_setfield(L, -2, "log");
    lua_pushcfunction(L, sink_now);
    lua_setfield(L, -2, "now");
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    /* cjson builds encoded text with its own malloc, outside the memory cap: do not let it
     * keep that buffer between calls */
    lua_getfield(L, -1, "encode_keep_buffer");
    lua_pushboolean(L, 0);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) return lua_error(L); /* setup_env runs protected */
    lua_newtable(L);
    static const char *const json_fields[] = {"decode", "null", NULL};
    for (const char *const *f = json_fields; *f; f++) {
        lua_getfield(L, -2, *f);
        lua_setfield(L, -2, *f);
    }
    lua_pushcfunction(L, lua_json_encode); /* allocates inside the memory cap */
    lua_setfield(L, -2, "encode");
    lua_setfield(L, -3, "json");
    lua_pop(L, 1); /* cjson */
    lua_setglobal(L, "sink");
    return 0;
}

struct lua_host *lua_host_create(const struct lua_host_limits *limits, enum lua_host_env env,
                                 char **err)
{
    struct lua_host *h = xcalloc(1, sizeof *h);
    h->limits = *limits;
    h->env = env;
    h->L = lua_newstate(host_alloc, h);
    if (!h->L) {
        if (err) *err = xstrdup("cannot create a Lua state (memory limit too low?)");
        lua_host_destroy(h);
        return NULL;
    }
    lua_gc(h->L, LUA_GCGEN, 0, 0);
    /* even the set-up runs protected: an allocation failure must not panic */
    lua_pushcfunction(h->L, setup_env);
    if (!lua_host_pcall(h, 0, 0, err)) {
        lua_host_destroy(h);
        return NULL;
    }
    return h;
}

void lua_host_destroy(struct lua_host *h)
{
    if (!h) return;
    if (h->L) lua_close(h->L);
    h->L = NULL;
    free(h);
}

lua_State *lua_host_state(struct lua_host *h)
{
    return h->L;
}
