/* The module "exo.mounts": the worker's side of the monitor's mount operations (mountop.h).
 * Method code reaches it as agent.mounts; methods/mounts.lua decides names and policy.
 *
 *   config()                                   -> {volume_prefix, share_prefix, owner}
 *   probe(device)                              -> {KEY = value..., devname, kname, root_disk}
 *   mkfs(device, label, uuid_or_nil)           -> true
 *   mount(device, mountpoint, read_only)       -> {unit}
 *   unmount(mountpoint, lazy)                  -> {stopped = {...}, removed = {...}}
 *   cephfs_mount(mountpoint, export_path, access_user, access_key, read_only)
 *                                              -> {unit, client, secret_file}
 *
 * Every function but config waits for the monitor. Expected failures return
 * nil, code, message[, data[, truncated]]: code is a stable lowercase word ("invalid" when the
 * arguments break the monitor's rules, which are checked here first so that an honest worker
 * never sends what the monitor would take for a compromised one); for "busy" from unmount,
 * data is the array of holders and truncated the number left out. Misuse (wrong argument
 * types, a call outside a method call or where it cannot wait, a capability not granted)
 * raises. */
#include <errno.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "lvm.h"
#include "l_monreq.h"
#include "mountop.h"
#include "privsep.h"

static const exo_config_t *config_of(lua_State *L)
{
    const exo_runtime_info_t *rt = exo_lvm_runtime(L);
    if (rt == NULL || rt->config == NULL) luaL_error(L, "exo.mounts: no configuration");
    return rt->config;
}

static exo_call_t *check_call(lua_State *L, const char *capability)
{
    exo_call_t *c = exo_call_of(L);
    if (c == NULL) luaL_error(L, "exo.mounts can only be used while handling a call");
    exo_call_require(L, capability);
    if (!lua_isyieldable(L)) luaL_error(L, "exo.mounts cannot wait here");
    return c;
}

static void push_field(lua_State *L, const exo_priv_field_t *f)
{
    lua_pushlstring(L, f->p, f->len);
}

/* Splits a "\n"-separated field into an array. */
static void push_lines(lua_State *L, const exo_priv_field_t *f)
{
    lua_newtable(L);
    lua_Integer n = 0;
    size_t i = 0;
    while (i < f->len) {
        const char *nl = memchr(f->p + i, '\n', f->len - i);
        size_t ll = nl ? (size_t)(nl - (f->p + i)) : f->len - i;
        if (ll) {
            lua_pushlstring(L, f->p + i, ll);
            lua_rawseti(L, -2, ++n);
        }
        i += ll + 1;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Pushes text with its \xNN escapes undone (exo_mnt_holders_encode). */
static void push_unescaped(lua_State *L, const char *p, size_t len)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\\' && i + 3 < len + 0 && p[i + 1] == 'x' && hexval(p[i + 2]) >= 0 &&
            hexval(p[i + 3]) >= 0) {
            luaL_addchar(&b, (char)(hexval(p[i + 2]) * 16 + hexval(p[i + 3])));
            i += 3;
        } else {
            luaL_addchar(&b, p[i]);
        }
    }
    luaL_pushresult(&b);
}

/* One holder line: pid, uid, use, fd, user, comm, path (tab-separated). */
static int push_holder(lua_State *L, const char *p, size_t len)
{
    const char *part[7];
    size_t plen[7], k = 0, start = 0;
    for (size_t i = 0; i <= len && k < 7; i++) {
        if (i == len || (p[i] == '\t' && k < 6)) {
            part[k] = p + start;
            plen[k++] = i - start;
            start = i + 1;
        }
    }
    if (k != 7) return 0;
    /* stack: holders */
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, strtoll(part[0], NULL, 10));
    lua_setfield(L, -2, "pid");
    lua_pushinteger(L, strtoll(part[1], NULL, 10));
    lua_setfield(L, -2, "uid");
    lua_pushlstring(L, part[2], plen[2]);
    lua_setfield(L, -2, "use");
    if (plen[2] == 2 && memcmp(part[2], "fd", 2) == 0) {
        lua_pushinteger(L, strtoll(part[3], NULL, 10));
        lua_setfield(L, -2, "fd");
    }
    push_unescaped(L, part[4], plen[4]);
    lua_setfield(L, -2, "user");
    push_unescaped(L, part[5], plen[5]);
    lua_setfield(L, -2, "command");
    push_unescaped(L, part[6], plen[6]);
    lua_setfield(L, -2, "path");
    /* stack: holders, holder */
    return 1;
}

static void push_holders(lua_State *L, const exo_priv_field_t *f)
{
    lua_newtable(L);
    lua_Integer n = 0;
    size_t i = 0;
    while (i < f->len) {
        const char *nl = memchr(f->p + i, '\n', f->len - i);
        size_t ll = nl ? (size_t)(nl - (f->p + i)) : f->len - i;
        if (push_holder(L, f->p + i, ll)) lua_rawseti(L, -2, ++n);
        i += ll + 1;
    }
}

static void on_blkid_pair(void *data, const char *key, size_t kl, const char *val, size_t vl)
{
    lua_State *L = data;
    /* stack: result */
    lua_pushlstring(L, key, kl);
    lua_pushlstring(L, val, vl);
    lua_rawset(L, -3);
}

/* Pushes the results of an "ok" answer; returns how many. */
static int push_ok(lua_State *L, uint32_t op, const exo_priv_msg_t *m)
{
    const exo_priv_field_t *f = m->f;
    switch (op) {
    case EXO_OP_MOUNT_PROBE:
        if (m->n != 5) return -1;
        lua_newtable(L);
        exo_mnt_blkid_parse(f[1].p, f[1].len, on_blkid_pair, L);
        push_field(L, &f[2]);
        lua_setfield(L, -2, "devname");
        push_field(L, &f[3]);
        lua_setfield(L, -2, "kname");
        lua_pushboolean(L, exo_priv_field_is(&f[4], "1"));
        lua_setfield(L, -2, "root_disk");
        return 1;
    case EXO_OP_MOUNT_MKFS:
        lua_pushboolean(L, 1);
        return 1;
    case EXO_OP_MOUNT_MOUNT:
        if (m->n != 2) return -1;
        lua_createtable(L, 0, 1);
        push_field(L, &f[1]);
        lua_setfield(L, -2, "unit");
        return 1;
    case EXO_OP_MOUNT_UNMOUNT:
        if (m->n != 3) return -1;
        lua_createtable(L, 0, 2);
        push_lines(L, &f[1]);
        lua_setfield(L, -2, "stopped");
        push_lines(L, &f[2]);
        lua_setfield(L, -2, "removed");
        return 1;
    case EXO_OP_MOUNT_CEPHFS:
        if (m->n != 4) return -1;
        lua_createtable(L, 0, 3);
        push_field(L, &f[1]);
        lua_setfield(L, -2, "unit");
        push_field(L, &f[2]);
        lua_setfield(L, -2, "client");
        push_field(L, &f[3]);
        lua_setfield(L, -2, "secret_file");
        return 1;
    }
    return -1;
}

/* nil, code, message[, holders, truncated] */
static int push_error(lua_State *L, uint32_t op, const exo_priv_msg_t *m)
{
    (void)op;
    lua_pushnil(L);
    lua_pushlstring(L, m->f[0].p, m->f[0].len < 32 ? m->f[0].len : 32);
    if (m->n > 1)
        push_field(L, &m->f[1]);
    else
        lua_pushstring(L, "the monitor gave no reason");
    if (m->n < 4 || !exo_priv_field_is(&m->f[0], "busy")) return 3;
    push_holders(L, &m->f[2]);
    char num[24];
    lua_Integer truncated = 0;
    if (exo_priv_field_copy(&m->f[3], num, sizeof(num)) == 0) truncated = strtoll(num, NULL, 10);
    lua_pushinteger(L, truncated);
    return 5;
}

static int l_config(lua_State *L)
{
    const exo_config_t *cfg = config_of(L);
    exo_call_require(L, "mounts.read");
    lua_createtable(L, 0, 3);
    lua_pushstring(L, cfg->mounts_volume_prefix);
    lua_setfield(L, -2, "volume_prefix");
    lua_pushstring(L, cfg->mounts_share_prefix);
    lua_setfield(L, -2, "share_prefix");
    lua_pushstring(L, cfg->mounts_owner);
    lua_setfield(L, -2, "owner");
    return 1;
}

static const char *check_device(lua_State *L, int arg, size_t *len)
{
    const char *dev = luaL_checklstring(L, arg, len);
    return dev;
}

#define DEVICE_RULE                                                                                \
    "device must be a normalised path under /dev/ of at most 255 bytes of letters, digits and "    \
    "_.:@+=,-/"

static int l_probe(lua_State *L)
{
    size_t dl;
    const char *dev = check_device(L, 1, &dl);
    exo_call_t *c = check_call(L, "mounts.read");
    if (!exo_mnt_device_ok(dev, dl)) return exo_monreq_fail(L, "invalid", DEVICE_RULE);
    exo_priv_field_t f[1] = {{dev, dl}};
    return exo_monreq(L, c, EXO_OP_MOUNT_PROBE, f, 1, push_ok, push_error);
}

static int l_mkfs(lua_State *L)
{
    size_t dl, ll, ul = 0;
    const char *dev = check_device(L, 1, &dl);
    const char *label = luaL_checklstring(L, 2, &ll);
    const char *uuid = luaL_optlstring(L, 3, "", &ul);
    exo_call_t *c = check_call(L, "mounts.write");
    if (!exo_mnt_device_ok(dev, dl)) return exo_monreq_fail(L, "invalid", DEVICE_RULE);
    if (!exo_mnt_label_ok(label, ll))
        return exo_monreq_fail(L, "invalid",
                               "label must be 1 to 16 letters, digits, '_', '.' or '-'");
    if (ul && !exo_mnt_uuid_ok(uuid, ul))
        return exo_monreq_fail(L, "invalid", "uuid must be a canonical 36-character UUID");
    exo_priv_field_t f[3] = {{dev, dl}, {label, ll}, {uuid, ul}};
    return exo_monreq(L, c, EXO_OP_MOUNT_MKFS, f, 3, push_ok, push_error);
}

static int mountpoint_invalid(lua_State *L, int share_only)
{
    const exo_config_t *cfg = config_of(L);
    char msg[2400];
    snprintf(msg, sizeof(msg),
             "mountpoint must be one directory directly under %s%s%s, named with 1 to 255 "
             "letters, digits, '_', '.', '@', '+' or '-' and not starting with '.' or '-'",
             share_only ? "" : cfg->mounts_volume_prefix, share_only ? "" : " or ",
             cfg->mounts_share_prefix);
    return exo_monreq_fail(L, "invalid", msg);
}

static int l_mount(lua_State *L)
{
    size_t dl, ml;
    const char *dev = check_device(L, 1, &dl);
    const char *where = luaL_checklstring(L, 2, &ml);
    luaL_checktype(L, 3, LUA_TBOOLEAN);
    int ro = lua_toboolean(L, 3);
    exo_call_t *c = check_call(L, "mounts.write");
    if (!exo_mnt_device_ok(dev, dl)) return exo_monreq_fail(L, "invalid", DEVICE_RULE);
    if (!exo_mnt_mountpoint_ok(config_of(L), where, ml, 0)) return mountpoint_invalid(L, 0);
    exo_priv_field_t f[3] = {{dev, dl}, {where, ml}, {ro ? "1" : "0", 1}};
    return exo_monreq(L, c, EXO_OP_MOUNT_MOUNT, f, 3, push_ok, push_error);
}

static int l_unmount(lua_State *L)
{
    size_t ml;
    const char *where = luaL_checklstring(L, 1, &ml);
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    int lazy = lua_toboolean(L, 2);
    exo_call_t *c = check_call(L, "mounts.write");
    if (!exo_mnt_mountpoint_ok(config_of(L), where, ml, 0)) return mountpoint_invalid(L, 0);
    exo_priv_field_t f[2] = {{where, ml}, {lazy ? "1" : "0", 1}};
    return exo_monreq(L, c, EXO_OP_MOUNT_UNMOUNT, f, 2, push_ok, push_error);
}

static int l_cephfs_mount(lua_State *L)
{
    size_t ml, el, ul, kl;
    const char *where = luaL_checklstring(L, 1, &ml);
    const char *export_path = luaL_checklstring(L, 2, &el);
    const char *user = luaL_checklstring(L, 3, &ul);
    const char *key = luaL_checklstring(L, 4, &kl);
    luaL_checktype(L, 5, LUA_TBOOLEAN);
    int ro = lua_toboolean(L, 5);
    exo_call_t *c = check_call(L, "mounts.write");
    if (!exo_mnt_mountpoint_ok(config_of(L), where, ml, 1)) return mountpoint_invalid(L, 1);
    if (!exo_mnt_export_ok(export_path, el))
        return exo_monreq_fail(
            L, "invalid",
            "export_path must be host:port[,host:port...]:/path (hosts: names, IPv4 "
            "or [IPv6]; the path of letters, digits and _./-, at most 1024 bytes)");
    if (!exo_mnt_access_user_ok(user, ul))
        return exo_monreq_fail(L, "invalid",
                               "access_user must be 1 to 64 letters, digits, '_', '.' or '-'");
    /* The message never repeats the key. */
    if (!exo_mnt_key_ok(key, kl))
        return exo_monreq_fail(L, "invalid", "access_key must be 1 to 256 characters of base64");
    exo_priv_field_t f[5] = {
        {where, ml}, {export_path, el}, {user, ul}, {key, kl}, {ro ? "1" : "0", 1}};
    return exo_monreq(L, c, EXO_OP_MOUNT_CEPHFS, f, 5, push_ok, push_error);
}

static int luaopen_exo_mounts(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"config", l_config}, {"probe", l_probe},     {"mkfs", l_mkfs},
        {"mount", l_mount},   {"unmount", l_unmount}, {"cephfs_mount", l_cephfs_mount},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}

void exo_mounts_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_exo_mounts);
    lua_setfield(L, -2, "exo.mounts");
    lua_pop(L, 1);
}
