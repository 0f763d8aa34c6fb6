/* Lua's pattern-matching functions with a hard step limit.
 *
 * string.find, string.match, string.gmatch and string.gsub run their pattern matcher in C,
 * where the sandbox's instruction-count hook never fires: a backtracking pattern such as
 * ('a'):rep(200000):find('.-.-b') would run for minutes inside one "instruction".
 * lua_patterns.c is a copy of the pattern-matching part of Lua 5.4's lstrlib.c with one
 * change, a step counter: same semantics as stock Lua 5.4.4, but a single call that takes
 * more than max_steps steps raises the Lua error
 *     "pattern matching budget exceeded (N steps)".
 *
 * A step is one round of the matcher's main loop (one pattern item tried at one subject
 * position), one subject character examined by the loops of '*', '+', '-' and '%b', or a
 * block of bytes compared or scanned in bulk (back-references, long character classes,
 * plain finds of long needles); see lua_patterns.c. A step takes roughly 5 to 10 ns
 * (without sanitizers), so 1,000,000 steps stop a call within about 10 ms. */
#ifndef EVENTSINK_LUA_PATTERNS_H
#define EVENTSINK_LUA_PATTERNS_H

#include <lua.h>

/* Replaces find, match, gmatch and gsub in the global `string` table, which is also the
 * __index of the string metatable (so ('x'):find(...) gets them too; if the two are
 * different tables, both are updated). The limit counts per call of find, match or gsub,
 * and per call of a gmatch iterator; max_steps <= 0 means no limit. Allocates: call it
 * in protected mode (a memory error is raised as a Lua error). */
void lua_patterns_install(lua_State *L, long max_steps);

#endif
