#include "lua_json.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "buf.h"
#include "json.h"

#define MAX_DEPTH 128

/* The output grows in memory from the state's own allocator, so that the memory cap
 * applies. It lives in a userdata whose __gc frees it, so that an error raised halfway
 * (the cap, a bad value) leaks nothing. (A luaL_Buffer cannot be used here: the encoder
 * walks tables with lua_next, and a growing luaL_Buffer moves the top of the stack.) */
struct out {
    lua_State *L;
    char *p;
    size_t len, cap;
};

static void out_gc_now(lua_State *L, struct out *o);

static int out_gc(lua_State *L)
{
    out_gc_now(L, lua_touserdata(L, 1));
    return 0;
}

static void out_add(struct out *o, const char *s, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n)
            cap *= 2;
        void *ud;
        lua_Alloc f = lua_getallocf(o->L, &ud);
        char *p = f(ud, o->p, o->cap, cap);
        if (!p) luaL_error(o->L, "sink.json.encode: not enough memory (%zu bytes)", cap);
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void out_addc(struct out *o, char c)
{
    out_add(o, &c, 1);
}

static void out_adds(struct out *o, const char *s)
{
    out_add(o, s, strlen(s));
}

static void add_string(struct out *b, const char *s, size_t n)
{
    struct buf t = {0};
    json_write_string(&t, s, n);
    out_add(b, t.data, t.len);
    buf_free(&t);
}

/* Stack effect: [.., v] -> [.., v]; v at index idx (absolute). */
static void encode(lua_State *L, struct out *b, int idx, int depth);

static void encode_table(lua_State *L, struct out *b, int idx, int depth)
{
    if (depth > MAX_DEPTH) luaL_error(L, "sink.json.encode: nested deeper than %d", MAX_DEPTH);
    luaL_checkstack(L, 4, "sink.json.encode");
    /* an array when the keys are exactly 1..n */
    lua_Integer n = 0, count = 0;
    bool strings = false, numbers = false;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
            numbers = true;
            if (lua_tointeger(L, -1) > n) n = lua_tointeger(L, -1);
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            strings = true;
        } else {
            luaL_error(L, "sink.json.encode: a table key of type %s", luaL_typename(L, -1));
        }
    }
    if (numbers && strings) luaL_error(L, "sink.json.encode: a table mixes array and object keys");
    if (numbers && n == count) {
        out_addc(b, '[');
        for (lua_Integer i = 1; i <= n; i++) {
            if (i > 1) out_addc(b, ',');
            lua_rawgeti(L, idx, i);
            encode(L, b, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
        }
        out_addc(b, ']');
        return;
    }
    if (numbers) luaL_error(L, "sink.json.encode: a sparse array (keys are not 1..n)");
    out_addc(b, '{');
    bool first = true;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (!first) out_addc(b, ',');
        first = false;
        size_t kl;
        const char *k = lua_tolstring(L, -2, &kl);
        add_string(b, k, kl);
        out_addc(b, ':');
        encode(L, b, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
    }
    out_addc(b, '}');
}

static void encode(lua_State *L, struct out *b, int idx, int depth)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        out_adds(b, "null");
        return;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) { /* cjson.null is a NULL lightuserdata */
            out_adds(b, "null");
            return;
        }
        break;
    case LUA_TBOOLEAN:
        out_adds(b, lua_toboolean(L, idx) ? "true" : "false");
        return;
    case LUA_TNUMBER: {
        char tmp[64];
        if (lua_isinteger(L, idx)) {
            snprintf(tmp, sizeof tmp, LUA_INTEGER_FMT, lua_tointeger(L, idx));
        } else {
            double d = lua_tonumber(L, idx);
            if (!isfinite(d)) luaL_error(L, "sink.json.encode: %f is not a JSON number", d);
            snprintf(tmp, sizeof tmp, "%.17g", d);
        }
        out_adds(b, tmp);
        return;
    }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        add_string(b, s, n);
        return;
    }
    case LUA_TTABLE:
        encode_table(L, b, idx, depth);
        return;
    default:
        break;
    }
    luaL_error(L, "sink.json.encode: cannot encode a %s", luaL_typename(L, idx));
}

static void out_gc_now(lua_State *L, struct out *o)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    if (o->p) f(ud, o->p, o->cap, 0);
    o->p = NULL;
    o->cap = o->len = 0;
}

int lua_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    struct out *o = lua_newuserdatauv(L, sizeof *o, 0); /* index 2 */
    memset(o, 0, sizeof *o);
    o->L = L;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, out_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, 2);
    encode(L, o, 1, 0);
    lua_pushlstring(L, o->p ? o->p : "", o->len);
    out_gc_now(L, o);
    return 1;
}
