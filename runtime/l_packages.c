/* The module "exo.packages": the worker's side of the monitor's package operations (pkgop.h).
 * Method code reaches it as agent.packages; methods/packages.lua parses the tools' output and
 * decides policy.
 *
 *   config()                                  -> {backend, disabled, allow = {...}, allow_all,
 *                                                 self_upgrade, self_packages = {...},
 *                                                 lock_timeout_s, timeout_s}
 *   start(action, names_or_nil)               -> {id, backend}
 *   poll(id, log_offset, status_offset)       -> {state, exit, log, status, log_size,
 *                                                 status_size}
 *
 * start and poll wait for the monitor (start only until the operation has started, never for
 * the tool). Expected failures return nil, code, message: "invalid" when the arguments break
 * the monitor's rules (checked here first, with the monitor's own check, so that an honest
 * worker never sends what the monitor would take for a compromised one), "busy", "no_backend",
 * "failed", "not_found", "unavailable". Misuse (wrong argument types, a call outside a method
 * call or where it cannot wait, a capability not granted) raises. */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lvm.h"
#include "l_monreq.h"
#include "pkgop.h"
#include "privsep.h"

static const exo_config_t *config_of(lua_State *L)
{
    const exo_runtime_info_t *rt = exo_lvm_runtime(L);
    if (rt == NULL || rt->config == NULL) luaL_error(L, "exo.packages: no configuration");
    return rt->config;
}

static exo_call_t *check_call(lua_State *L, const char *capability)
{
    exo_call_t *c = exo_call_of(L);
    if (c == NULL) luaL_error(L, "exo.packages can only be used while handling a call");
    exo_call_require(L, capability);
    if (!lua_isyieldable(L)) luaL_error(L, "exo.packages cannot wait here");
    return c;
}

static void set_field(lua_State *L, const char *key, const exo_priv_field_t *f)
{
    lua_pushlstring(L, f->p, f->len);
    lua_setfield(L, -2, key);
}

/* A decimal size field; -1 if it is not one. */
static lua_Integer size_of(const exo_priv_field_t *f)
{
    char num[24];
    if (f->len < 1 || exo_priv_field_copy(f, num, sizeof(num)) < 0) return -1;
    char *end;
    long long v = strtoll(num, &end, 10);
    return *end || v < 0 ? -1 : (lua_Integer)v;
}

/* Pushes the results of an "ok" answer; returns how many, or -1 if it is malformed. */
static int push_ok(lua_State *L, uint32_t op, const exo_priv_msg_t *m)
{
    const exo_priv_field_t *f = m->f;
    if (op == EXO_OP_PKG_START) {
        if (m->n != 3 || !exo_pkg_id_ok(f[1].p, f[1].len)) return -1;
        /* stack: */
        lua_createtable(L, 0, 2);
        set_field(L, "id", &f[1]);
        set_field(L, "backend", &f[2]);
        return 1;
    }
    lua_Integer ls, ss;
    if (m->n != 7 || (ls = size_of(&f[5])) < 0 || (ss = size_of(&f[6])) < 0) return -1;
    lua_createtable(L, 0, 6);
    set_field(L, "state", &f[1]);
    set_field(L, "exit", &f[2]);
    set_field(L, "log", &f[3]);
    set_field(L, "status", &f[4]);
    lua_pushinteger(L, ls);
    lua_setfield(L, -2, "log_size");
    lua_pushinteger(L, ss);
    lua_setfield(L, -2, "status_size");
    /* stack: result */
    return 1;
}

/* nil, code, message */
static int push_error(lua_State *L, uint32_t op, const exo_priv_msg_t *m)
{
    (void)op;
    lua_pushnil(L);
    lua_pushlstring(L, m->f[0].p, m->f[0].len < 32 ? m->f[0].len : 32);
    if (m->n > 1)
        lua_pushlstring(L, m->f[1].p, m->f[1].len);
    else
        lua_pushstring(L, "the monitor gave no reason");
    return 3;
}

static int l_config(lua_State *L)
{
    const exo_config_t *cfg = config_of(L);
    exo_call_require(L, "packages.read");
    lua_createtable(L, 0, 8);
    lua_pushstring(L, exo_pkg_backend_name(exo_pkg_backend(cfg)));
    lua_setfield(L, -2, "backend");
    lua_pushboolean(L, cfg->packages_backend == EXO_PKG_CHOICE_NONE);
    lua_setfield(L, -2, "disabled");
    lua_createtable(L, (int)cfg->packages_allow.n, 0);
    for (size_t i = 0; i < cfg->packages_allow.n; i++) {
        lua_pushstring(L, cfg->packages_allow.items[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "allow");
    lua_pushboolean(L, cfg->packages_allow_all);
    lua_setfield(L, -2, "allow_all");
    lua_pushboolean(L, cfg->packages_self_upgrade);
    lua_setfield(L, -2, "self_upgrade");
    static const char *const self[EXO_PKG_SELF_COUNT] = EXO_PKG_SELF_NAMES;
    lua_createtable(L, EXO_PKG_SELF_COUNT, 0);
    for (size_t i = 0; i < EXO_PKG_SELF_COUNT; i++) {
        lua_pushstring(L, self[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "self_packages");
    lua_pushinteger(L, cfg->packages_lock_timeout_ms / 1000);
    lua_setfield(L, -2, "lock_timeout_s");
    lua_pushinteger(L, cfg->packages_timeout_ms / 1000);
    lua_setfield(L, -2, "timeout_s");
    return 1;
}

/* Why a start request breaks the rules, in words for the method's author. */
static const char *invalid_message(const char *why)
{
    if (strstr(why, "bad package name")) return "package names must be " EXO_PKG_NAME_RULE;
    if (strstr(why, "unknown action"))
        return "action must be one of refresh, list, install, upgrade_all";
    if (strstr(why, "more than 64")) return "at most 64 package names";
    if (strstr(why, "more than 4096"))
        return "at most 4096 bytes of package names (with a separator between each two)";
    return why; /* the monitor's own words: they name the rule and the setting */
}

static int l_start(lua_State *L)
{
    size_t al;
    const char *action = luaL_checklstring(L, 1, &al);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    int a = exo_pkg_action_parse(action, al);
    exo_call_t *c =
        check_call(L, a >= 0 && exo_pkg_action_changes((exo_pkg_action_t)a) ? "packages.write"
                                                                            : "packages.read");
    lua_Integer n = lua_isnoneornil(L, 2) ? 0 : (lua_Integer)lua_rawlen(L, 2);
    if (n > EXO_PKG_NAMES_MAX) return exo_monreq_fail(L, "invalid", "at most 64 package names");
    /* The names joined with "\n": one field (pkgop.h). Each is checked first, so that none
     * holds the separator. */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (lua_Integer i = 1; i <= n; i++) {
        size_t nl;
        if (lua_rawgeti(L, 2, i) != LUA_TSTRING)
            return luaL_error(L, "exo.packages.start: names[%d] must be a string", (int)i);
        const char *name = lua_tolstring(L, -1, &nl);
        if (!exo_pkg_name_ok(name, nl))
            return exo_monreq_fail(L, "invalid", "package names must be " EXO_PKG_NAME_RULE);
        if (i > 1) luaL_addchar(&b, '\n');
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    /* stack: action, names?, joined */
    exo_priv_field_t f[2] = {{action, al}, {NULL, 0}};
    f[1].p = lua_tolstring(L, -1, &f[1].len);
    const char *why = exo_pkgop_check_start(config_of(L), f, 2);
    if (why) return exo_monreq_fail(L, "invalid", invalid_message(why));
    return exo_monreq(L, c, EXO_OP_PKG_START, f, 2, push_ok, push_error);
}

static int l_poll(lua_State *L)
{
    size_t il;
    const char *id = luaL_checklstring(L, 1, &il);
    lua_Integer lo = luaL_checkinteger(L, 2);
    lua_Integer so = luaL_checkinteger(L, 3);
    exo_call_t *c = check_call(L, "packages.read");
    if (!exo_pkg_id_ok(id, il))
        return exo_monreq_fail(L, "invalid", "id must be 32 lowercase hex digits (from start)");
    if (lo < 0 || so < 0 || lo > 999999999999999LL || so > 999999999999999LL)
        return exo_monreq_fail(L, "invalid", "offsets must be integers from 0 to 999999999999999");
    char los[24], sos[24];
    snprintf(los, sizeof(los), "%lld", (long long)lo);
    snprintf(sos, sizeof(sos), "%lld", (long long)so);
    exo_priv_field_t f[3] = {{id, il}, {los, strlen(los)}, {sos, strlen(sos)}};
    return exo_monreq(L, c, EXO_OP_PKG_POLL, f, 3, push_ok, push_error);
}

static int luaopen_exo_packages(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"config", l_config},
        {"start", l_start},
        {"poll", l_poll},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}

void exo_packages_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_exo_packages);
    lua_setfield(L, -2, "exo.packages");
    lua_pop(L, 1);
}
