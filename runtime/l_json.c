/* The Lua binding of the JSON codec: require("exo.json") gives
 * {encode, decode, null, array, is_array}. Misuse (a wrong argument type) raises; a document
 * that is not JSON is an expected failure, so decode returns nil and a message for it. */
#include <errno.h>

#include <lauxlib.h>

#include "json.h"

/* Frees the encoder's output buffer when its userdata is collected, which also covers the
 * case where pushing the result raises a memory error. */
static int l_buf_gc(lua_State *L)
{
    exo_buf_free(lua_touserdata(L, 1));
    return 0;
}

/* json.encode(v) -> string; raises "json encode: <reason> at <path>". */
static int l_encode(lua_State *L)
{
    exo_json_err_t err;

    luaL_checkany(L, 1);
    /* The buffer lives in a userdata so that no error path can leak it. */
    exo_buf_t *b = lua_newuserdatauv(L, sizeof(*b), 0);
    *b = (exo_buf_t)EXO_BUF_INIT;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_setmetatable(L, -2);
    /* stack: v, buf */
    if (exo_json_encode(L, 1, b, &err) < 0) return luaL_error(L, "json encode: %s", err.msg);
    lua_pushlstring(L, b->data != NULL ? b->data : "", b->len);
    exo_buf_free(b);
    /* stack: v, buf, json */
    return 1;
}

/* json.decode(s) -> value, or nil and "json decode: <reason> at byte <offset>" (0-based). */
static int l_decode(lua_State *L)
{
    size_t len;
    exo_json_err_t err;

    luaL_checktype(L, 1, LUA_TSTRING);
    const char *s = lua_tolstring(L, 1, &len);
    /* stack: s */
    int rc = exo_json_decode(L, s, len, &err);
    if (rc == 0) return 1; /* stack: s, value */
    if (rc == -ENOMEM) return luaL_error(L, "json decode: %s", err.msg);
    lua_pushnil(L);
    lua_pushfstring(L, "json decode: %s at byte %I", err.msg, (lua_Integer)err.offset);
    /* stack: s, nil, message */
    return 2;
}

/* json.array([t]) -> t, marked so that it encodes as an array even when empty; a new table if
 * t is nil. A table that already has another metatable is refused rather than stripped of
 * it, since that metatable may be what protects it. */
static int l_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    /* stack: t */
    if (lua_getmetatable(L, 1)) {
        exo_json_push_array_mt(L);
        /* stack: t, mt, array_mt */
        if (!lua_rawequal(L, -1, -2)) return luaL_argerror(L, 1, "table already has a metatable");
        lua_settop(L, 1);
    }
    exo_json_mark_array(L, 1);
    return 1;
}

/* json.is_array(v) -> whether v is a table marked as an array (decoded arrays are). */
static int l_is_array(lua_State *L)
{
    lua_pushboolean(L, exo_json_is_array(L, 1));
    return 1;
}

int exo_json_open(lua_State *L)
{
    lua_createtable(L, 0, 5);
    /* stack: json */
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_buf_gc);
    lua_setfield(L, -2, "__gc");
    /* stack: json, buf_mt */
    lua_pushcclosure(L, l_encode, 1);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, l_array);
    lua_setfield(L, -2, "array");
    lua_pushcfunction(L, l_is_array);
    lua_setfield(L, -2, "is_array");
    exo_json_push_null(L);
    lua_setfield(L, -2, "null");
    return 1;
}

#if defined(EXO_JSON_MODULE) && EXO_JSON_MODULE
/* The entry point when the codec is built as a loadable module (build/lua/exo/json.so), so
 * that busted specs run against the real codec. */
int luaopen_exo_json(lua_State *L);

int luaopen_exo_json(lua_State *L)
{
    return exo_json_open(L);
}
#endif
