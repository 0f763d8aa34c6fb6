/* The last line of defence of the policy sandbox: every policy engine runs on a thread of
 * its own (a runner), and the thread that asks for a decision waits for it under a
 * watchdog that does not depend on Lua's hook.
 *
 * The sandbox's hook stops Lua code at sandbox.max_call_ms, but it cannot fire inside one
 * long C call (a library function, or C code nobody has listed yet) or a finalizer. When a
 * call has run for max_call_ms plus a margin (runner_margin_ms), the waiting thread stops
 * waiting: it abandons the runner and gets an error that names the limit. The abandoned
 * thread is left to finish its C call at idle priority; when it gets back, every Lua call
 * in its state fails at once, and the thread destroys its state and ends. Whoever owns
 * the runner starts a new one from the same sources (policy.c). */
#ifndef EVENTSINK_POLICY_RUNNER_H
#define EVENTSINK_POLICY_RUNNER_H

#include <stdbool.h>

#include "lua_host.h"
#include "policy_engine.h"

struct policy_runner;

/* Runs on the runner's thread with its engine. It may read and write arg only between two
 * of its engine calls, and must return as soon as lua_host_abandoned(engine_host(e)) is
 * true: from the moment the watchdog fires, arg is the waiting thread's again. */
typedef void (*policy_job_fn)(struct policy_engine *e, void *arg);

/* Starts a runner that builds an engine from its own copy of src, and waits for the build
 * under the watchdog (each Lua call of the load and the self-test is one call). NULL and
 * *err (malloc'd) when the build failed or was abandoned. */
struct policy_runner *runner_start(const struct policy_sources *src,
                                   const struct lua_host_limits *limits, char **err);

/* Runs fn(engine, arg) on the runner's thread and waits until it returns. False when one
 * of its Lua calls overran: the runner is abandoned (it must not be used again, nor
 * stopped) and *err (malloc'd) says so and names the limit. */
bool runner_run(struct policy_runner *r, policy_job_fn fn, void *arg, char **err);

/* Ends the runner's thread and destroys its engine. Accepts NULL. */
void runner_stop(struct policy_runner *r);

/* The schedules of the engine (valid until runner_stop). */
const struct policy_schedule *runner_schedules(struct policy_runner *r, size_t *n);
bool runner_builtin_decide(struct policy_runner *r);

/* How long past sandbox.max_call_ms the watchdog waits before it abandons a call. */
long runner_margin_ms(long max_call_ms);

/* Runners abandoned by the watchdog whose thread has not ended yet, and in all. */
long runner_abandoned_alive(void);
long runner_abandoned_total(void);

#endif
