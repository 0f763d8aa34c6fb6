/* A sandboxed Lua 5.4 state with a memory cap and an instruction budget.
 *
 * Every call from C into Lua goes through lua_host_pcall(): it arms the budget, runs the
 * function under lua_pcall with a traceback handler, and turns any error into a message.
 * The state opens only a chosen set of libraries (no io, os beyond time, package, debug,
 * no loading of binary chunks); see lua_host.c for the list. */
#ifndef EVENTSINK_LUA_HOST_H
#define EVENTSINK_LUA_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

struct lua_host_limits {
    size_t max_memory_bytes; /* cap on everything the state allocates; 0 = no cap */
    long max_instructions;   /* per lua_host_pcall(); 0 = no budget */
    long max_call_ms;        /* wall-clock limit per lua_host_pcall(), checked with the
                                budget (so it catches time spent in C functions between
                                two checks); 0 = none */
};

enum lua_host_env {
    LUA_HOST_POLICY, /* policies: the restricted environment of the contract */
    LUA_HOST_CONFIG, /* the configuration file: the same, plus os.getenv */
};

struct lua_host;

struct lua_host *lua_host_create(const struct lua_host_limits *limits, enum lua_host_env env,
                                 char **err);
/* Accepts NULL and half-built hosts. */
void lua_host_destroy(struct lua_host *h);
lua_State *lua_host_state(struct lua_host *h);

/* Calls the function below nargs arguments on the stack, like lua_pcall.
 * Stack: [.., f, a1..an] -> [.., r1..rn] on success (returns true);
 *        [.., f, a1..an] -> [..] on error (returns false, *err = malloc'd message with a
 *        traceback, or a fixed message for the budget and memory limits). */
bool lua_host_pcall(struct lua_host *h, int nargs, int nresults, char **err);

/* Loads Lua source as a text chunk (never binary), leaving the function on the stack.
 * Returns false and sets *err (malloc'd) on a syntax error. */
bool lua_host_load(struct lua_host *h, const char *src, size_t len, const char *chunkname,
                   char **err);

/* Called by C functions of the sandbox (pattern matching) that stopped on a limit of
 * their own: the rest of the current call fails too, with `why` as its error, even if the
 * script catches the first error. No effect on a host without limits. */
void lua_host_trip(lua_State *L, const char *why);

/* ---- for the watchdog (policy_runner.c) -----------------------------------------------
 * The budget and the time limit are checked by a Lua hook, which cannot fire inside one
 * long C call. The watchdog runs in another thread: it reads when the host's current call
 * started and, once that is too long ago, abandons the host. From then on the host's
 * thread owns nothing its caller gave it: the call in progress and every later one fail
 * with "the policy state was abandoned by the watchdog", and the state is only fit to be
 * destroyed (by its own thread, once it gets back). */
int64_t lua_host_now_ms(void); /* CLOCK_MONOTONIC, ms */
/* When the outermost lua_host_pcall in progress started (lua_host_now_ms), 0 outside a
 * call. Any thread. */
int64_t lua_host_call_started(struct lua_host *h);
/* Abandons the host if a call is in progress that started before started_before_ms; true
 * when it did. Any thread. */
bool lua_host_abandon(struct lua_host *h, int64_t started_before_ms);
bool lua_host_abandoned(struct lua_host *h);

/* Bytes the state holds now, and the number of calls stopped by each limit. */
size_t lua_host_memory(const struct lua_host *h);

#endif
