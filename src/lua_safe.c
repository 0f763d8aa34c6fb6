#include "lua_safe.h"

#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#define DEFAULT_MAX_COUNT 10000000L

/* string.rep(s, n [, sep]), as lstrlib.c's str_rep, except that an empty result is
 * returned without looping n times. A non-empty result is bounded by the memory cap: its
 * buffer is allocated before the copying starts. */
static int safe_rep(lua_State *L)
{
    size_t l, lsep;
    const char *s = luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *sep = luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0 || (l == 0 && (lsep == 0 || n == 1))) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (l + lsep < l || l + lsep > (size_t)LUA_MAXINTEGER / (size_t)n)
        return luaL_error(L, "resulting string too large");
    size_t total = (size_t)n * l + (size_t)(n - 1) * lsep;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, total);
    while (n-- > 1) {
        memcpy(p, s, l);
        p += l;
        if (lsep > 0) {
            memcpy(p, sep, lsep);
            p += lsep;
        }
    }
    memcpy(p, s, l);
    luaL_pushresultsize(&b, total);
    return 1;
}

/* table.move(a1, f, e, t [, a2]), as ltablib.c's tmove (with metamethods), limited to
 * max_count elements a call (the upvalue). */
static int safe_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int tt = !lua_isnoneornil(L, 5) ? 5 : 1;
    lua_Integer max = lua_tointeger(L, lua_upvalueindex(1));
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, tt, LUA_TTABLE);
    if (e >= f) {
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
        lua_Integer n = e - f; /* one less than the count */
        if (n >= max)
            return luaL_error(L, "table.move of %I elements is over the sandbox's limit of %I",
                              n + 1, max);
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n, 4, "destination wrap around");
        if (t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ))) {
            for (lua_Integer i = 0; i <= n; i++) {
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
            }
        } else {
            for (lua_Integer i = n; i >= 0; i--) {
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
            }
        }
    }
    lua_pushvalue(L, tt);
    return 1;
}

/* setmetatable(t, mt), as lbaselib.c's luaB_setmetatable, without finalizers. Lua marks an
 * object for finalization only when its metatable has __gc at the time of setmetatable, so
 * checking here is enough. */
static int safe_setmetatable(lua_State *L)
{
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (t == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "finalizers (__gc) are not allowed in policies");
        lua_pop(L, 1);
    }
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

void lua_safe_install(lua_State *L, long max_count)
{
    luaL_checkstack(L, 4, "lua_safe_install");
    if (lua_getglobal(L, LUA_STRLIBNAME) == LUA_TTABLE) {
        lua_pushcfunction(L, safe_rep);
        lua_setfield(L, -2, "rep");
    }
    lua_pop(L, 1);
    if (lua_getglobal(L, LUA_TABLIBNAME) == LUA_TTABLE) {
        lua_pushinteger(L, max_count > 0 ? max_count : DEFAULT_MAX_COUNT);
        lua_pushcclosure(L, safe_move, 1);
        lua_setfield(L, -2, "move");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, safe_setmetatable);
    lua_setglobal(L, "setmetatable");
    /* getmetatable("") answers this text instead of the shared metatable */
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1)) {
        lua_pushliteral(L, "the string metatable is locked");
        lua_setfield(L, -2, "__metatable");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}
