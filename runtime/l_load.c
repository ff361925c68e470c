/* The module "exo.load": the worker's load history (load_sampler.c), for agent.load_history
 * (sandbox/agent.lua) and so for system_load.historical.
 *
 *   history(since, until, limit) -> { {epoch, cpuPctUsed, memPctUsed, rootfsPctUsed,
 *                                      gpuPctUsed = json.null | {..}}, ... }
 *
 * The samples with since <= epoch <= until (nil: no bound), the newest `limit` of them (nil:
 * EXO_LOAD_MAX_SAMPLES), oldest first. It reads memory only, so it does not wait. Misuse
 * raises; the capability "system.read" is required. */
#include <lauxlib.h>
#include <stdint.h>

#include "json.h"
#include "load_sampler.h"
#include "lvm.h"

static int64_t opt_epoch(lua_State *L, int arg, int64_t def)
{
    if (lua_isnoneornil(L, arg)) return def;
    if (!lua_isinteger(L, arg)) luaL_argerror(L, arg, "expected an integer number of seconds");
    return (int64_t)lua_tointeger(L, arg);
}

void exo_load_push_sample(lua_State *L, const exo_load_sample_t *s)
{
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)s->epoch);
    lua_setfield(L, -2, "epoch");
    lua_pushinteger(L, s->cpu);
    lua_setfield(L, -2, "cpuPctUsed");
    lua_pushinteger(L, s->mem);
    lua_setfield(L, -2, "memPctUsed");
    lua_pushinteger(L, s->rootfs);
    lua_setfield(L, -2, "rootfsPctUsed");
    /* An empty list without a GPU (API version 2027-01-15; older versions see null through
     * api-versions/2027-01-15.lua). The console line keeps null: runtime/loadhist.c. */
    lua_createtable(L, s->n_gpu, 0);
    for (int i = 0; i < s->n_gpu; i++) {
        lua_pushinteger(L, s->gpu[i]);
        lua_rawseti(L, -2, i + 1);
    }
    exo_json_mark_array(L, -1);
    lua_setfield(L, -2, "gpuPctUsed");
}

static int l_history(lua_State *L)
{
    exo_call_require(L, "system.read");
    int64_t since = opt_epoch(L, 1, INT64_MIN);
    int64_t until = opt_epoch(L, 2, INT64_MAX);
    lua_Integer limit = luaL_optinteger(L, 3, EXO_LOAD_MAX_SAMPLES);
    luaL_argcheck(L, limit >= 1 && limit <= EXO_LOAD_MAX_SAMPLES, 3,
                  "limit must be from 1 to 10080");
    luaL_argcheck(L, until >= since, 2, "until must not be before since");
    const exo_load_ring_t *r = exo_load_history();
    size_t first = 0;
    size_t n = r->n ? exo_load_ring_range(r, since, until, (size_t)limit, &first) : 0;
    lua_createtable(L, (int)n, 0);
    /* stack: since, until, limit, samples */
    for (size_t i = 0; i < n; i++) {
        exo_load_push_sample(L, exo_load_ring_at(r, first + i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    exo_json_mark_array(L, -1);
    return 1;
}

static int luaopen_exo_load(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"history", l_history},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}

void exo_load_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_exo_load);
    lua_setfield(L, -2, "exo.load");
    lua_pop(L, 1);
}
