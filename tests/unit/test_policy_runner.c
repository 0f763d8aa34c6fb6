/* Unit tests for the last line of defence of the policy sandbox (src/policy_runner.c,
 * src/policy.c) and for what lua_safe.c and lua/runtime.lua close: every policy call ends
 * within sandbox.max_call_ms plus the watchdog's margin, whatever the code does (C code
 * that blocks, library calls that loop in C, finalizers, coroutines, metamethods,
 * patterns), the next call works, and policy files cannot change what another file sees
 * (CONTRACT 9.1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <lauxlib.h>

#include "lua_host.h"
#include "policy.h"
#include "policy_fixture.h"
#include "policy_runner.h"
#include "record.h"

#define CALL_MS 100
/* what a call may take at most, with the watchdog's margin and room for a slow, loaded
 * machine running the sanitizers; the blocking functions below block for far longer */
#define BOUND_MS (CALL_MS + 50 + CALL_MS / 10 + 1500)
#define BLOCK_MS 4000

static const struct lua_host_limits LIMITS = {
    .max_memory_bytes = 64u << 20, .max_instructions = 1000000, .max_call_ms = CALL_MS};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup(void **state)
{
    return fx_setup(state, "/tmp/es-run-XXXXXX");
}

/* Writes the n texts to p1.lua.. and loads them with LIMITS; the set (also kept in fx->ps) or
 * NULL with fx->err set. */
static struct policy_set *load(struct fx *fx, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    struct policy_set *ps = fx_vload(fx, &LIMITS, 1, n, ap);
    va_end(ap);
    return ps;
}

static void decide_json(struct policy_set *ps, const char *json, struct decision *d)
{
    struct record r = {.topic = "t",
                       .partition = 0,
                       .offset = 1,
                       .value = json,
                       .value_len = strlen(json),
                       .timestamp_ms = -1};
    bool obj;
    char *detail = NULL;
    const char *bad = record_check(&r, 1 << 20, &obj, &detail);
    policy_decide(ps, &r, bad, detail, d);
}

/* The set still decides: a plain event is journaled with its tenant. */
static void assert_decides(struct policy_set *ps)
{
    struct decision d;
    decide_json(ps, "{\"tenant_id\":\"acme\",\"event_type\":\"lead.created\"}", &d);
    if (d.to_dlq) fail_msg("a plain event went to the DLQ: %s (%s)", d.reason, d.detail);
    assert_string_equal(d.tenant_id, "acme");
    decision_clear(&d);
}

/* Waits (at most 10 s) until every abandoned thread has come back and freed itself. */
static void wait_abandoned_gone(void)
{
    for (int i = 0; i < 1000 && runner_abandoned_alive() > 0; i++)
        usleep(10000);
    assert_int_equal(runner_abandoned_alive(), 0);
}

/* ---- C code that blocks, put into the sandbox ------------------------------------------ */

static atomic_bool release;

/* A C function that sleeps, in C, until released or BLOCK_MS have passed: the Lua hook
 * never runs meanwhile. */
static int block_sleeping(lua_State *L)
{
    int64_t until = now_ms() + BLOCK_MS;
    while (!atomic_load(&release) && now_ms() < until)
        usleep(5000);
    lua_pushinteger(L, 1);
    return 1;
}

/* The same, spinning on the CPU instead of sleeping. */
static int block_spinning(lua_State *L)
{
    int64_t until = now_ms() + BLOCK_MS;
    volatile unsigned long n = 0;
    while (!atomic_load(&release) && now_ms() < until)
        n++;
    lua_pushinteger(L, (lua_Integer)(n & 1));
    return 1;
}

struct exec_arg {
    lua_CFunction fn;
    bool ok;
    char *err;
};

/* On the policy thread: calls fn from Lua code, through the one protected-call helper.
 * Touches arg only outside the call, and not at all once abandoned. */
static void call_blocking(struct lua_host *h, void *arg)
{
    struct exec_arg *a = arg;
    lua_CFunction fn = a->fn;
    lua_State *L = lua_host_state(h);
    char *err = NULL;
    static const char code[] = "local f = ... return f() + 1";
    bool ok = lua_host_load(h, code, sizeof code - 1, "=blocking", &err);
    if (ok) {
        lua_pushcfunction(L, fn);
        ok = lua_host_pcall(h, 1, 1, &err);
        if (ok) lua_pop(L, 1);
    }
    if (lua_host_abandoned(h)) {
        free(err);
        return;
    }
    a->ok = ok;
    a->err = err;
}

static void expect_blocking_stopped(struct fx *fx, lua_CFunction fn)
{
    struct exec_arg a = {.fn = fn};
    char *err = NULL;
    int64_t t0 = now_ms();
    bool ran = policy_set_exec(fx->ps, call_blocking, &a, &err);
    int64_t took = now_ms() - t0;
    assert_false(ran);
    assert_non_null(err);
    if (!strstr(err, "sandbox.max_call_ms") || !strstr(err, "watchdog"))
        fail_msg("the error should name the limit and the watchdog: %s", err);
    free(err);
    if (took > BOUND_MS) fail_msg("the blocked call returned after %lld ms", (long long)took);
    assert_true(took >= CALL_MS);
    assert_true(runner_abandoned_alive() >= 1);
    /* the next call works, on a new state */
    assert_decides(fx->ps);
    struct exec_arg quick = {.fn = block_sleeping};
    atomic_store(&release, true);
    assert_true(policy_set_exec(fx->ps, call_blocking, &quick, &err));
    assert_true(quick.ok);
    atomic_store(&release, false);
}

static void test_blocking_c_function(void **state)
{
    struct fx *fx = *state;
    assert_non_null(
        load(fx, 1, "return {describe = function(ev) return ev.payload.tenant_id end}"));
    long before = runner_abandoned_total();
    expect_blocking_stopped(fx, block_sleeping);
    expect_blocking_stopped(fx, block_spinning);
    assert_int_equal(runner_abandoned_total() - before, 2);
    atomic_store(&release, true); /* the abandoned threads come back, free their state, end */
    wait_abandoned_gone();
    atomic_store(&release, false);
}

/* ---- escapes written in Lua, as live events --------------------------------------------- */

/* Loads a describe hook whose body is `code` (then returning the payload's tenant), decides
 * one event with it and expects policy_error with each NULL-ended string in the detail, or
 * a plain journal decision when the first string is NULL. Then the next event works. */
static void expect_describe(struct fx *fx, const char *code, ...)
{
    char text[1024];
    snprintf(text, sizeof text,
             "return {describe = function(ev)\n"
             "  if ev.payload.evil then %s end\n"
             "  return ev.payload.tenant_id, ev.payload.event_type\n"
             "end}\n",
             code);
    if (!load(fx, 1, text)) fail_msg("load failed: %s", fx->err);
    struct decision d;
    int64_t t0 = now_ms();
    decide_json(fx->ps, "{\"tenant_id\":\"acme\",\"evil\":true}", &d);
    int64_t took = now_ms() - t0;
    if (took > BOUND_MS) fail_msg("%s: the call took %lld ms", code, (long long)took);
    va_list ap;
    va_start(ap, code);
    const char *want = va_arg(ap, const char *);
    if (!want) {
        if (d.to_dlq) fail_msg("%s: went to the DLQ: %s", code, d.detail);
    } else {
        if (!d.to_dlq || strcmp(d.reason, "policy_error") != 0)
            fail_msg("%s: expected policy_error, got %s", code, d.to_dlq ? d.reason : "journal");
        for (; want; want = va_arg(ap, const char *))
            if (!d.detail || !strstr(d.detail, want))
                fail_msg("%s: the detail should mention '%s': %s", code, want, d.detail);
    }
    va_end(ap);
    decision_clear(&d);
    assert_decides(fx->ps);
}

static void test_escapes(void **state)
{
    struct fx *fx = *state;
    /* the three that ran forever in C: an empty rep is returned at once */
    expect_describe(fx, "local s = string.rep('', math.maxinteger) assert(s == '')", NULL);
    expect_describe(fx, "local s = ('x'):rep(0, ('y'):rep(10)) assert(s == '')", NULL);
    expect_describe(fx, "table.move({}, 1, math.maxinteger - 1, 1, {})", "table.move", "limit",
                    NULL);
    expect_describe(fx, "setmetatable({}, {__gc = function() while true do end end})", "finalizers",
                    NULL);
    /* a protected metatable still refuses, and __gc cannot be added afterwards to run */
    expect_describe(
        fx, "local mt = {} setmetatable({}, mt) mt.__gc = function() while true do end end", NULL);
    /* rep still bounded by the memory cap, and still correct */
    expect_describe(fx, "return #string.rep('ab', 1e9)", "memory limit exceeded", NULL);
    expect_describe(fx, "assert(string.rep('ab', 3, ',') == 'ab,ab,ab')", NULL);
    expect_describe(fx, "assert(#table.move({1, 2, 3}, 1, 3, 2) == 4)", NULL);
    /* one long C call that nobody patched: sorting a big table runs in C without the hook;
     * the hook (after the call) or the watchdog (during it) stops it */
    expect_describe(
        fx,
        "local t = table.pack(string.byte(string.rep('qwertyuiopasdfghjklzx', 45000), 1, -1))"
        " table.sort(t) for i = 1, 5000 do end",
        "sandbox.max_call_ms", NULL);
    /* Lua-level loops, coroutines, metamethods and patterns */
    expect_describe(fx, "while true do end", "instruction budget", NULL);
    expect_describe(fx, "local co = coroutine.wrap(function() while true do end end) co()",
                    "instruction budget", NULL);
    expect_describe(fx,
                    "local t = setmetatable({}, {__index = function(t, k) return t[k + 1] end}) "
                    "return t[1]",
                    "stack overflow", NULL);
    expect_describe(fx,
                    "local t = setmetatable({}, {__eq = function() while true do end end}) "
                    "return t == setmetatable({}, getmetatable(t))",
                    "instruction budget", NULL);
    expect_describe(fx, "pcall(string.find, string.rep('a', 200000), '.-.-.-b')",
                    "pattern matching budget", NULL);
}

/* A reload (policy_set_load) that trips a limit is refused in bounded time. */
static void test_load_bounded(void **state)
{
    struct fx *fx = *state;
    int64_t t0 = now_ms();
    assert_null(load(fx, 1, "table.move({}, 1, math.maxinteger - 1, 1, {}) return {}"));
    assert_non_null(strstr(fx->err, "table.move"));
    assert_null(
        load(fx, 1,
             "local t = table.pack(string.byte(string.rep('qwertyuiopasdfghjklzx', 45000), 1, -1))"
             " table.sort(t) for i = 1, 5000 do end return {}"));
    assert_non_null(strstr(fx->err, "sandbox.max_call_ms"));
    /* the self-test runs every hook: a hook that loops forever refuses the set */
    assert_null(load(fx, 1, "return {route = function(ev, info) while true do end end}"));
    assert_non_null(strstr(fx->err, "instruction budget"));
    assert_true(now_ms() - t0 < 3 * BOUND_MS);
}

/* The control-plane hooks are bounded too, and the next request is served. */
static void test_replay_source_bounded(void **state)
{
    struct fx *fx = *state;
    assert_non_null(load(
        fx, 1,
        "return {replay_source = function(req)\n"
        "  if req.reason == 'evil' then\n"
        "    local t = table.pack(string.byte(string.rep('qwertyuiopasdfghjklzx', 45000), 1, -1))\n"
        "    table.sort(t) for i = 1, 5000 do end\n"
        "  end\n"
        "  return 'tagged'\n"
        "end}\n"));
    char *err = NULL;
    int64_t t0 = now_ms();
    char *tag = policy_replay_source(fx->ps, "single", "ops", "evil", false, &err);
    assert_true(now_ms() - t0 < BOUND_MS);
    assert_null(tag);
    assert_non_null(err);
    assert_non_null(strstr(err, "sandbox.max_call_ms"));
    free(err);
    err = NULL;
    tag = policy_replay_source(fx->ps, "single", "ops", "fine", false, &err);
    assert_non_null(tag);
    assert_string_equal(tag, "tagged");
    free(tag);
}

/* A batch in which calls overrun in the middle: every record gets its own decision (the
 * record in flight when the watchdog fired is the one dead-lettered), and the records
 * after it are decided by the replacement state. */
static void test_batch_with_overruns_in_the_middle(void **state)
{
    struct fx *fx = *state;
    static const struct lua_host_limits tight = {
        .max_memory_bytes = 64u << 20, .max_instructions = 1000000, .max_call_ms = 10};
    char *items[1] = {fx->paths[0]};
    FILE *f = fopen(fx->paths[0], "w");
    assert_non_null(f);
    fputs(
        "return {describe = function(ev)\n"
        "  if ev.payload.evil then\n"
        "    local t = table.pack(string.byte(string.rep('qwertyuiopasdfghjklzx', 47000), 1, -1))\n"
        "    table.sort(t) for i = 1, 5000 do end\n"
        "  end\n"
        "  return ev.payload.tenant_id, 'lead.created'\n"
        "end}\n",
        f);
    fclose(f);
    struct strlist files = {.items = items, .n = 1};
    fx->ps = policy_set_load(&files, &tight, 1, &fx->err);
    if (!fx->ps) fail_msg("load failed: %s", fx->err);
    static const char *const values[] = {"{\"tenant_id\":\"t0\"}",
                                         "{\"tenant_id\":\"t1\"}",
                                         "{\"tenant_id\":\"t2\",\"evil\":true}",
                                         "{\"tenant_id\":\"t3\"}",
                                         "{\"tenant_id\":\"t4\",\"evil\":true}",
                                         "{\"tenant_id\":\"t5\"}"};
    enum { N = sizeof values / sizeof values[0] };
    struct record r[N];
    struct decision d[N];
    struct policy_input in[N];
    for (int i = 0; i < N; i++) {
        r[i] = (struct record){.topic = "t",
                               .partition = 0,
                               .offset = i,
                               .value = values[i],
                               .value_len = strlen(values[i]),
                               .timestamp_ms = -1};
        in[i] = (struct policy_input){.rec = &r[i], .out = &d[i]};
    }
    policy_decide_batch(fx->ps, in, N);
    for (int i = 0; i < N; i++) {
        bool evil = strstr(values[i], "evil") != NULL;
        if (evil) {
            if (!d[i].to_dlq || strcmp(d[i].reason, "policy_error") != 0 || !d[i].detail ||
                !strstr(d[i].detail, "sandbox.max_call_ms"))
                fail_msg("record %d: expected policy_error naming the limit, got %s (%s)", i,
                         d[i].to_dlq ? d[i].reason : "journal", d[i].detail);
        } else {
            char want[16];
            snprintf(want, sizeof want, "t%d", i);
            if (d[i].to_dlq || !d[i].tenant_id || strcmp(d[i].tenant_id, want) != 0)
                fail_msg("record %d: expected journaled for %s, got %s (%s)", i, want,
                         d[i].to_dlq ? d[i].reason : "journal", d[i].tenant_id);
        }
        decision_clear(&d[i]);
    }
}

/* ---- each file its own environment ------------------------------------------------------ */

static void test_files_isolated(void **state)
{
    struct fx *fx = *state;
    const char *a = "string.upper = function() return 'mallory' end\n"
                    "rawset(_G, 'shared', 'from a')\n"
                    "table.insert = nil\n"
                    "sink.json.encode = function() return 'forged' end\n"
                    "local ok = pcall(function() getmetatable('').__index.lower = nil end)\n"
                    "assert(not ok, 'the string metatable must be locked')\n"
                    "assert(getmetatable('') ~= nil and type(getmetatable('')) == 'string')\n"
                    "load('string.len = function() return 99 end shared2 = 1')()\n"
                    "return {}\n";
    const char *b =
        "return {describe = function(ev)\n"
        "  local t = {}\n"
        "  table.insert(t, 'x')\n"
        "  return string.upper(ev.payload.tenant_id or 'x') .. '/' .. tostring(rawget(_G, 'shared'))\n"
        "    .. '/' .. tostring(rawget(_G, 'shared2')) .. '/' .. ('AB'):lower() .. '/'\n"
        "    .. string.len('ab') .. '/' .. sink.json.encode({1}) .. '/' .. #t,\n"
        "    'ok'\n"
        "end}\n";
    if (!load(fx, 2, a, b)) fail_msg("load failed: %s", fx->err);
    struct decision d;
    decide_json(fx->ps, "{\"tenant_id\":\"acme\"}", &d);
    if (d.to_dlq) fail_msg("went to the DLQ: %s", d.detail);
    assert_string_equal(d.tenant_id, "ACME/nil/nil/ab/2/[1]/1");
    decision_clear(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_blocking_c_function, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_source_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_with_overruns_in_the_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_files_isolated, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
