/* Unit tests for src/lua_host.c: the sandbox, the instruction budget and the memory cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <lauxlib.h>
#include <lualib.h>

#include "buf.h"
#include "log.h"
#include "lua_host.h"

#define BUDGET 1000000
#define MEMCAP (8u << 20)

static struct lua_host *host(enum lua_host_env env, size_t mem, long budget)
{
    struct lua_host_limits lim = {.max_memory_bytes = mem, .max_instructions = budget};
    char *err = NULL;
    struct lua_host *h = lua_host_create(&lim, env, &err);
    if (!h) fail_msg("lua_host_create: %s", err ? err : "?");
    assert_null(err);
    return h;
}

/* Runs src; on success leaves nothing on the stack and returns the first result as a
 * malloc'd string (tostring'd; "nil" for none). On failure returns NULL with *err set. */
static char *run(struct lua_host *h, const char *src, char **err)
{
    lua_State *L = lua_host_state(h);
    int top = lua_gettop(L);
    *err = NULL;
    if (!lua_host_load(h, src, strlen(src), "=test", err)) {
        assert_int_equal(lua_gettop(L), top);
        return NULL;
    }
    if (!lua_host_pcall(h, 0, 1, err)) {
        assert_non_null(*err);
        assert_int_equal(lua_gettop(L), top); /* the stack is balanced after an error */
        return NULL;
    }
    char *out = strdup(luaL_tolstring(L, -1, NULL));
    lua_settop(L, top);
    return out;
}

static char failbuf[2048];

static void expect_result(struct lua_host *h, const char *src, const char *want)
{
    char *err = NULL;
    char *got = run(h, src, &err);
    if (!got) {
        snprintf(failbuf, sizeof failbuf, "%s", err);
        free(err);
        fail_msg("%s\n  failed: %s", src, failbuf);
    }
    if (strcmp(got, want) != 0) {
        snprintf(failbuf, sizeof failbuf, "%s", got);
        free(got);
        fail_msg("%s\n  expected %s, got %s", src, want, failbuf);
    }
    free(got);
}

/* Expects src to fail with a message containing `want`; returns the message (malloc'd). */
static char *expect_error(struct lua_host *h, const char *src, const char *want)
{
    char *err = NULL;
    char *got = run(h, src, &err);
    if (got) {
        snprintf(failbuf, sizeof failbuf, "%s", got);
        free(got);
        fail_msg("%s\n  expected an error containing '%s', returned %s", src, want, failbuf);
    }
    if (!strstr(err, want)) {
        snprintf(failbuf, sizeof failbuf, "%s", err);
        free(err);
        fail_msg("%s\n  expected an error containing '%s', got '%s'", src, want, failbuf);
    }
    return err;
}

static void expect_error_free(struct lua_host *h, const char *src, const char *want)
{
    free(expect_error(h, src, want));
}

/* Fixtures: *state is a policy host with the default test limits, destroyed even when the
 * test fails. */
static int setup_policy_host(void **state)
{
    *state = host(LUA_HOST_POLICY, MEMCAP, BUDGET);
    return 0;
}

static int teardown_host(void **state)
{
    lua_host_destroy(*state);
    return 0;
}

static const char ABSENT_CHECK[] =
    "local names = {'io', 'debug', 'package', 'require', 'dofile', 'loadfile',\n"
    "  'collectgarbage', 'loadstring', 'module', 'setfenv', 'getfenv'}\n"
    "local present = {}\n"
    "for _, n in ipairs(names) do if _G[n] ~= nil then present[#present + 1] = n end end\n"
    "if string.dump ~= nil then present[#present + 1] = 'string.dump' end\n"
    "if ('').dump ~= nil then present[#present + 1] = 'str:dump' end\n"
    "return #present == 0 and 'none' or table.concat(present, ',')\n";

static void test_policy_env_absent(void **state)
{
    (void)state;
    struct lua_host *h = host(LUA_HOST_POLICY, MEMCAP, BUDGET);
    expect_result(h, ABSENT_CHECK, "none");
    expect_result(h,
                  "local p = {} for _, n in ipairs({'execute','exit','remove','rename',"
                  "'getenv','tmpname','setlocale'}) do if os[n] ~= nil then p[#p+1] = n end end "
                  "return #p == 0 and 'none' or table.concat(p, ',')",
                  "none");
    expect_error_free(h, "io.open('/etc/passwd')", "io");
    expect_error_free(h, "return require('os')", "require");
    expect_error_free(h, "os.execute('true')", "execute");
    /* what stays */
    expect_result(h, "return type(os.time()) .. type(os.clock()) .. type(os.date('%Y'))",
                  "numbernumberstring");
    expect_result(h,
                  "return type(string.format) .. type(table.concat) .. type(math.floor)"
                  " .. type(utf8.len) .. type(coroutine.create) .. type(pcall)",
                  "functionfunctionfunctionfunctionfunctionfunction");
    lua_host_destroy(h);
}

static void test_config_env(void **state)
{
    (void)state;
    struct lua_host *h = host(LUA_HOST_CONFIG, MEMCAP, BUDGET);
    expect_result(h, ABSENT_CHECK, "none");
    setenv("EVENTSINK_UNIT_VAR", "from-env", 1);
    expect_result(h, "return os.getenv('EVENTSINK_UNIT_VAR')", "from-env");
    expect_result(h, "return os.execute == nil and os.exit == nil and os.remove == nil", "true");
    lua_host_destroy(h);
}

/* A binary chunk made in an ordinary (unsandboxed) state. */
static int writer(lua_State *L, const void *p, size_t sz, void *ud)
{
    (void)L;
    buf_append(ud, p, sz);
    return 0;
}

static void binary_chunk(struct buf *out)
{
    lua_State *L = luaL_newstate();
    assert_int_equal(luaL_loadstring(L, "return 'from bytecode'"), LUA_OK);
    assert_int_equal(lua_dump(L, writer, out, 0), 0);
    assert_true(out->len > 4 && out->data[0] == '\x1b');
    lua_close(L);
}

static void test_load_binary_refused(void **state)
{
    (void)state;
    struct buf bin = {0};
    binary_chunk(&bin);
    struct lua_host *h = host(LUA_HOST_POLICY, MEMCAP, BUDGET);
    lua_State *L = lua_host_state(h);
    lua_pushlstring(L, bin.data, bin.len);
    lua_setglobal(L, "BIN");
    /* text chunks are fine, with or without an environment */
    expect_result(h, "return load('return 1 + 1')()", "2");
    expect_result(h, "return load('return x', 'c', 't', {x = 'env'})()", "env");
    expect_result(h,
                  "local f, e = load('return +') return tostring(f) .. ' ' .. "
                  "(e:match(':1: unexpected symbol') or e)",
                  "nil :1: unexpected symbol");
    /* binary chunks are not */
    expect_result(h, "local f, e = load(BIN) return tostring(f) .. ' ' .. e:match('binary') ",
                  "nil binary");
    expect_error_free(h, "return load(BIN, 'x', 'b')", "binary chunks are not allowed");
    expect_error_free(h, "return load(BIN, 'x', 'bt')", "binary chunks are not allowed");
    expect_result(h, "local f = load(BIN, 'x', 't') return tostring(f)", "nil");
    /* load with a reader function is not a way around it */
    expect_error_free(h,
                      "local done = false return load(function() if done then return nil end "
                      "done = true return BIN end)",
                      "bad argument");
    /* nor is lua_host_load */
    char *err = NULL;
    assert_false(lua_host_load(h, bin.data, bin.len, "=bin", &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "binary"));
    free(err);
    lua_host_destroy(h);
    buf_free(&bin);
}

static void test_syntax_error(void **state)
{
    (void)state;
    struct lua_host *h = host(LUA_HOST_POLICY, MEMCAP, BUDGET);
    char *err = NULL;
    const char *src = "local x = 1\nlocal y = = 2\n";
    assert_false(lua_host_load(h, src, strlen(src), "@policies/p.lua", &err));
    assert_non_null(strstr(err, "policies/p.lua:2:"));
    free(err);
    assert_int_equal(lua_gettop(lua_host_state(h)), 0);
    lua_host_destroy(h);
}

static void test_budget_plain_loop(void **state)
{
    (void)state;
    struct lua_host *h = host(LUA_HOST_POLICY, MEMCAP, BUDGET);
    expect_error_free(h, "while true do end", "instruction budget exceeded");
    expect_error_free(h, "local function f() return f() end return f()",
                      "instruction budget exceeded");
    expect_error_free(h, "local i = 0 repeat i = i + 1 until false", "instruction budget exceeded");
    /* the budget is per call: a normal call afterwards runs */
    expect_result(h, "local s = 0 for i = 1, 1000 do s = s + i end return s", "500500");
    lua_host_destroy(h);
}

static void test_budget_survives_pcall(void **state)
{
    (void)state;
    struct lua_host *h = host(LUA_HOST_POLICY, MEMCAP, BUDGET);
    expect_error_free(h, "while true do pcall(function() while true do end end) end",
                      "instruction budget exceeded");
    expect_error_free(h, "pcall(function() while true do end end) return 'escaped'",
                      "instruction budget exceeded");
    expect_error_free(h,
                      "xpcall(function() while true do end end, function(m) return m end) "
                      "return 'escaped'",
                      "instruction budget exceeded");
    expect_error_free(h, "while true do pcall(error, 'x') end", "instruction budget exceeded");
    /* an error message is a string the script could try to match and ignore */
    expect_error_free(h,
                      "for i = 1, 100 do local ok = pcall(function() while true do end end) end "
                      "return 'escaped'",
                      "instruction budget exceeded");
    expect_result(h, "return 'still usable'", "still usable");
    lua_host_destroy(h);
}

static void test_budget_in_coroutine(void **state)
{
    struct lua_host *h = *state;
    expect_error_free(h, "coroutine.wrap(function() while true do end end)() return 'escaped'",
                      "instruction budget exceeded");
    expect_error_free(h,
                      "while true do coroutine.resume(coroutine.create(function() "
                      "while true do end end)) end",
                      "instruction budget exceeded");
    expect_error_free(
        h,
        "local co = coroutine.wrap(function() while true do coroutine.yield() end end) "
        "while true do co() end",
        "instruction budget exceeded");
    expect_error_free(h,
                      "local co = coroutine.create(function() while true do end end) "
                      "while true do coroutine.resume(co) end",
                      "instruction budget exceeded");
    expect_result(h, "return 'still usable'", "still usable");
}

/* BUG (lua_host.c): when the budget runs out inside a coroutine, only that coroutine's
 * hook is switched to "raise on every instruction"; coroutine.resume returns false and the
 * main function, if it has fewer than HOOK_STEP instructions left, returns normally. The
 * call then succeeds although it ran past its budget (a pcall-wrapped loop, by contrast,
 * is reported). Expected: lua_host_pcall fails with "instruction budget exceeded";
 * actual: it returns true with the result 'escaped'. (lua_host_pcall could check
 * h->tripped after a successful lua_pcall as well.) */
static void test_budget_coroutine_cannot_swallow(void **state)
{
    struct lua_host *h = *state;
    expect_error_free(h,
                      "local co = coroutine.create(function() while true do end end) "
                      "coroutine.resume(co) return 'escaped'",
                      "instruction budget exceeded");
}

/* BUG (lua_host.c): the budget counts Lua instructions only, so a single call to a C
 * function that runs for a long time (here string.find with a backtracking pattern) is
 * never stopped: a hook can stall the consumer thread. Expected: an error within the
 * budget; actual: it runs for minutes. Run in a child with an alarm so it cannot hang. */
static void test_budget_backtracking_pattern(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(3);
        struct lua_host_limits lim = {.max_memory_bytes = MEMCAP, .max_instructions = BUDGET};
        struct lua_host *h = lua_host_create(&lim, LUA_HOST_POLICY, NULL);
        const char *src = "return (string.rep('a', 200000)):find('.-.-b')";
        char *err = NULL;
        if (!h || !lua_host_load(h, src, strlen(src), "=test", &err)) _exit(3);
        bool ok = lua_host_pcall(h, 0, 1, &err);
        _exit(!ok && err && strstr(err, "budget") ? 0 : 4);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fail_msg(
            "a backtracking string.find ran past 3 s without being stopped (killed by signal %d)",
            WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_memory_cap(void **state)
{
    (void)state;
    struct lua_host *h = host(LUA_HOST_POLICY, MEMCAP, 0);
    size_t before = lua_host_memory(h);
    assert_true(before > 0 && before < MEMCAP);
    expect_error_free(h, "return #string.rep('x', 1e9)", "memory limit exceeded");
    expect_error_free(h, "local t = {} for i = 1, 1e9 do t[i] = i end", "memory limit exceeded");
    expect_error_free(h, "local t = {} local i = 0 while true do i = i + 1 t['k' .. i] = {i} end",
                      "memory limit exceeded");
    expect_error_free(h, "local s = 'x' while true do s = s .. s end", "memory limit exceeded");
    expect_error_free(h,
                      "local co = coroutine.wrap(function() return string.rep('x', 1e9) end) "
                      "return co()",
                      "memory");
    /* the host is usable afterwards and has given the memory back */
    assert_true(lua_host_memory(h) < MEMCAP / 2);
    expect_result(h, "return #string.rep('y', 1000)", "1000");
    expect_result(h, "local t = {} for i = 1, 1000 do t[i] = i end return #t", "1000");
    /* a script may catch the failure itself and carry on */
    expect_result(h, "local ok = pcall(string.rep, 'x', 1e9) return tostring(ok)", "false");
    lua_host_destroy(h);
}

static void test_memory_and_budget_together(void **state)
{
    (void)state;
    struct lua_host *h = host(LUA_HOST_POLICY, MEMCAP, BUDGET);
    char *err = expect_error(h, "local t = {} for i = 1, 1e9 do t[i] = {} end", "exceeded");
    assert_true(strstr(err, "memory limit") || strstr(err, "instruction budget"));
    free(err);
    expect_result(h, "return 1 + 1", "2");
    lua_host_destroy(h);
}

/* BUG (lua_host.c): once an allocation has been refused in a call, any later error in the
 * same call is reported as "memory limit exceeded", even when the script caught the
 * memory error and then failed for another reason. Expected: the real error ("real
 * failure"); actual: "memory limit exceeded (8388608 bytes)". */
static void test_memory_error_caught_then_other_error(void **state)
{
    struct lua_host *h = *state;
    expect_error_free(h, "pcall(string.rep, 'x', 1e9) error('real failure')", "real failure");
}

/* BUG (lua_host.c): sink.json.encode builds its output in lua-cjson's own malloc'd buffer,
 * outside the allocator that enforces max_memory_bytes: a hook can make the process grow
 * far past the cap (here ~64 MB, and up to twice that while the buffer doubles, under an
 * 8 MB cap) before the result is refused. Expected: the peak resident size grows by less
 * than 3x the cap; actual: it grows by well over 64 MB. Run in a child to measure it. */
static void test_memory_cap_covers_json_encode(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct lua_host_limits lim = {.max_memory_bytes = MEMCAP, .max_instructions = BUDGET};
        struct lua_host *h = lua_host_create(&lim, LUA_HOST_POLICY, NULL);
        const char *src = "local s = string.rep('x', 1 << 20) local t = {}\n"
                          "for i = 1, 64 do t[i] = s end return #sink.json.encode(t)";
        char *err = NULL;
        if (!h || !lua_host_load(h, src, strlen(src), "=test", &err)) _exit(3);
        struct rusage before, after;
        getrusage(RUSAGE_SELF, &before);
        lua_host_pcall(h, 0, 1, &err);
        getrusage(RUSAGE_SELF, &after);
        long grown_kb = after.ru_maxrss - before.ru_maxrss;
        _exit(grown_kb < 3 * (long)(MEMCAP / 1024) ? 0 : 4);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 4)
        fail_msg("sink.json.encode grew the process by more than 3x the memory cap");
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* The wall-clock limit catches what the instruction budget cannot see: time spent inside
 * C functions, here string.rep of 1 MB in a loop with few Lua instructions. */
static void test_time_limit(void **state)
{
    (void)state;
    struct lua_host_limits lim = {
        .max_memory_bytes = MEMCAP, .max_instructions = 1000000000L, .max_call_ms = 200};
    char *err = NULL;
    struct lua_host *h = lua_host_create(&lim, LUA_HOST_POLICY, &err);
    assert_non_null(h);
    const char *src = "for i = 1, 1e9 do local s = string.rep('abcd', 250000) end\n"
                      "return 'escaped'";
    assert_true(lua_host_load(h, src, strlen(src), "=test", &err));
    assert_false(lua_host_pcall(h, 0, 1, &err));
    assert_non_null(strstr(err, "time limit exceeded"));
    free(err);
    /* usable afterwards, with the time of the next call counted afresh */
    const char *ok = "return 1 + 1";
    assert_true(lua_host_load(h, ok, strlen(ok), "=ok", &err));
    assert_true(lua_host_pcall(h, 0, 1, &err));
    assert_int_equal(lua_tointeger(lua_host_state(h), -1), 2);
    lua_pop(lua_host_state(h), 1);
    lua_host_destroy(h);
}

static void test_error_messages(void **state)
{
    (void)state;
    struct lua_host *h = host(LUA_HOST_POLICY, MEMCAP, BUDGET);
    char *err = expect_error(h, "local x = 1\nerror('boom')", "boom");
    assert_string_equal(err, "test:2: boom"); /* file and line, no traceback */
    free(err);
    err = expect_error(h, "error('plain', 0)", "plain");
    assert_string_equal(err, "plain");
    free(err);
    err = expect_error(h, "local function f() local t = nil return t.x end\nf()", "nil");
    assert_null(strstr(err, "traceback"));
    assert_non_null(strstr(err, "test:1:"));
    free(err);
    err = expect_error(h, "error({code = 1})", "table value");
    assert_null(strstr(err, "traceback"));
    free(err);
    err = expect_error(h, "error(setmetatable({}, {__tostring = function() return 'custom' end}))",
                       "custom");
    free(err);
    expect_error_free(h, "error()", "nil");
    lua_host_destroy(h);
}

static void test_pcall_with_arguments(void **state)
{
    (void)state;
    struct lua_host *h = host(LUA_HOST_POLICY, MEMCAP, BUDGET);
    lua_State *L = lua_host_state(h);
    const char *src = "return function(a, b) return a + b, a * b end";
    char *err = NULL;
    assert_true(lua_host_load(h, src, strlen(src), "=f", &err));
    assert_true(lua_host_pcall(h, 0, 1, &err));
    lua_pushinteger(L, 6);
    lua_pushinteger(L, 7);
    assert_true(lua_host_pcall(h, 2, 2, &err));
    assert_int_equal(lua_gettop(L), 2);
    assert_int_equal(lua_tointeger(L, 1), 13);
    assert_int_equal(lua_tointeger(L, 2), 42);
    lua_settop(L, 0);
    lua_pushstring(L, "below");
    assert_true(lua_host_load(h, "error('x')", 10, "=g", &err));
    lua_pushinteger(L, 1);
    assert_false(lua_host_pcall(h, 1, 1, &err));
    free(err);
    assert_int_equal(lua_gettop(L), 1);
    assert_string_equal(lua_tostring(L, 1), "below");
    lua_host_destroy(h);
}

static void test_sink_api(void **state)
{
    (void)state;
    struct lua_host *h = host(LUA_HOST_POLICY, MEMCAP, BUDGET);
    expect_result(h,
                  "return type(sink.log) .. type(sink.now) .. type(sink.json.encode) .. "
                  "type(sink.json.decode)",
                  "functionfunctionfunctionfunction");
    expect_result(h, "return sink.json.encode({a = 1})", "{\"a\":1}");
    expect_result(h, "return sink.json.encode({1, 'two', true})", "[1,\"two\",true]");
    expect_result(h, "local t = sink.json.decode('{\"a\":[1,2,{\"b\":\"c\"}]}') return t.a[3].b",
                  "c");
    expect_result(h, "return sink.json.decode('{\"n\":null}').n == sink.json.null", "true");
    expect_result(h, "local t = sink.json.decode(sink.json.encode({s = 'q\"\\\\'})) return t.s",
                  "q\"\\");
    expect_error_free(h, "return sink.json.decode('{bad')", "Expected");
    long now = (long)time(NULL);
    char src[200];
    snprintf(src, sizeof src,
             "local t = sink.now() return type(t) == 'number' and "
             "t >= %ld and t <= %ld",
             now - 5, now + 5);
    expect_result(h, src, "true");
    log_configure("error", NULL); /* keep the test output quiet */
    expect_result(h, "sink.log('info', 'hello from a test') sink.log('warn', 'w') return 'ok'",
                  "ok");
    expect_error_free(h, "sink.log('loud', 'x')", "bad argument");
    expect_error_free(h, "sink.log('info')", "bad argument");
    expect_result(h, "print('x', 1, nil, {}) return 'ok'", "ok");
    log_configure("info", NULL);
    lua_host_destroy(h);
}

static void test_create_and_destroy(void **state)
{
    (void)state;
    lua_host_destroy(NULL);
    /* a cap too small to set the state up: an error, not a crash or a leak */
    struct lua_host_limits lim = {.max_memory_bytes = 4096, .max_instructions = BUDGET};
    char *err = NULL;
    struct lua_host *h = lua_host_create(&lim, LUA_HOST_POLICY, &err);
    assert_null(h);
    assert_non_null(err);
    free(err);
    /* no limits at all */
    struct lua_host_limits none = {0};
    h = lua_host_create(&none, LUA_HOST_CONFIG, &err);
    assert_non_null(h);
    expect_result(h, "return #string.rep('z', 1 << 20)", "1048576");
    lua_host_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_env_absent),
        cmocka_unit_test(test_config_env),
        cmocka_unit_test(test_load_binary_refused),
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_budget_plain_loop),
        cmocka_unit_test(test_budget_survives_pcall),
        cmocka_unit_test_setup_teardown(test_budget_in_coroutine, setup_policy_host, teardown_host),
        cmocka_unit_test_setup_teardown(test_budget_coroutine_cannot_swallow, setup_policy_host,
                                        teardown_host),
        cmocka_unit_test(test_budget_backtracking_pattern),
        cmocka_unit_test(test_memory_cap),
        cmocka_unit_test(test_memory_and_budget_together),
        cmocka_unit_test_setup_teardown(test_memory_error_caught_then_other_error,
                                        setup_policy_host, teardown_host),
        cmocka_unit_test(test_memory_cap_covers_json_encode),
        cmocka_unit_test(test_time_limit),
        cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_pcall_with_arguments),
        cmocka_unit_test(test_sink_api),
        cmocka_unit_test(test_create_and_destroy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
