/* Library functions of the policy sandbox that stock Lua runs unbounded in C.
 *
 * The instruction hook never fires inside one C call, and Lua 5.4 runs finalizers with
 * hooks turned off, so these would run forever inside a single "instruction":
 *   string.rep("", math.maxinteger)               n empty copies, one at a time
 *   table.move({}, 1, math.maxinteger - 1, 1, {}) n reads and writes of nils
 *   setmetatable(t, {__gc = function() while true do end end})
 * lua_safe_install() replaces them: string.rep returns "" at once when the result is empty
 * (and stays bounded by the memory cap otherwise), table.move refuses to move more than
 * max_count elements, setmetatable refuses a metatable with __gc (finalizers are the only
 * way policy code could run outside a protected call), and the string metatable is locked
 * (getmetatable("") gives no way to the library table that every policy file shares).
 * The watchdog of policy_runner.c stays the last line of defence for causes not listed
 * here. */
#ifndef EVENTSINK_LUA_SAFE_H
#define EVENTSINK_LUA_SAFE_H

#include <lua.h>

/* Installs the replacements in the global string, table and base tables. Allocates: call
 * it in protected mode. max_count <= 0 means the default of 10,000,000. */
void lua_safe_install(lua_State *L, long max_count);

#endif
