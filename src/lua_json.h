/* sink.json.encode for policies: a JSON encoder that builds its output in a luaL_Buffer, so
 * that every byte it allocates counts against the policy state's memory cap (lua-cjson's
 * encoder allocates with plain malloc, outside the cap). Decoding stays with lua-cjson. */
#ifndef EVENTSINK_LUA_JSON_H
#define EVENTSINK_LUA_JSON_H

#include <lua.h>

/* encode(value) -> string. Tables with keys 1..n are arrays, tables with string keys are
 * objects, the empty table is {}; sink.json.null is null. Raises on functions, NaN,
 * infinities, mixed keys and nesting deeper than 128. */
int lua_json_encode(lua_State *L);

#endif
