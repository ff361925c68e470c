/* The module "exo.metadata": the OpenStack metadata document, for the host's agent API
 * (agent.metadata, capability "metadata.read").
 *
 *   fetch() -> body | nil, err
 *
 * It takes no URL: the agent fetches only the [metadata] url of its configuration, so that no
 * method can make it request arbitrary addresses. It yields unless the cache already has the
 * answer. err is one line: "not configured", "metadata service unreachable: <reason>",
 * "timed out after <n> ms", "HTTP <status>", "response over <n> bytes", ... */
#include <errno.h>
#include <lauxlib.h>
#include <string.h>

#include "lvm.h"
#include "metadata.h"

static void on_fetched(void *data, const char *body, size_t len, const char *err)
{
    exo_call_t *call = data;
    if (!exo_call_waiting(call)) {
        exo_call_abandon(call);
        return;
    }
    lua_State *co = exo_call_thread(call);
    if (err != NULL) {
        lua_pushnil(co);
        lua_pushstring(co, err);
        exo_call_resume(call, 2);
        return;
    }
    lua_pushlstring(co, body, len);
    exo_call_resume(call, 1);
}

static int l_fetch(lua_State *L)
{
    if (lua_gettop(L) > 0)
        return luaL_error(L, "exo.metadata.fetch takes no arguments: the URL is [metadata] url");
    exo_call_t *c = exo_call_of(L);
    if (c == NULL) return luaL_error(L, "exo.metadata can only be used while handling a call");
    if (!lua_isyieldable(L)) return luaL_error(L, "exo.metadata cannot wait here");
    exo_call_require(L, "metadata.read");
    const exo_runtime_info_t *rt = exo_lvm_runtime(L);
    const char *body, *err;
    size_t len;
    if (exo_metadata_lookup(rt->config, &body, &len, &err) == 1) {
        if (err != NULL) {
            lua_pushnil(L);
            lua_pushstring(L, err);
            return 2;
        }
        lua_pushlstring(L, body, len);
        return 1;
    }
    /* The answer never comes inside exo_metadata_fetch, so waiting may start after it. */
    int rc = exo_metadata_fetch(rt->loop, rt->config, on_fetched, c);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot fetch metadata: %s", strerror(-rc));
        return 2;
    }
    exo_call_wait(c);
    return lua_yield(L, 0);
}

static int luaopen_exo_metadata(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"fetch", l_fetch},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}

void exo_metadata_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_exo_metadata);
    lua_setfield(L, -2, "exo.metadata");
    lua_pop(L, 1);
}
