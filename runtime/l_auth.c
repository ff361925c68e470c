/* The host-only module "exo.auth": the bindings behind the authenticate.* methods that the
 * host declares (sandbox/auth.lua). Method code never sees this module: a login, a token and a
 * logout change the identity of the request or session the call belongs to, which only the
 * host may do.
 *
 *   login(user, password)  -> {username, token, expires} | nil, status[, retry_after_ms]
 *   use_token(token)       -> {username, expires}         | nil, reason
 *   logout()               -> true                        | nil, reason
 *
 * login and logout wait for the monitor. */
#include <errno.h>
#include <lauxlib.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "log.h"
#include "lvm.h"
#include "monclient.h"
#include "privsep.h"

static exo_call_t *check_call(lua_State *L)
{
    exo_call_t *c = exo_call_of(L);
    if (c == NULL) luaL_error(L, "exo.auth can only be used while handling a call");
    if (!lua_isyieldable(L)) luaL_error(L, "exo.auth cannot wait here");
    return c;
}

static void push_login(lua_State *L, const exo_identity_t *id)
{
    lua_createtable(L, 0, 3);
    lua_pushstring(L, id->user);
    lua_setfield(L, -2, "username");
    if (id->token) {
        lua_pushstring(L, id->token);
        lua_setfield(L, -2, "token");
    }
    lua_pushinteger(L, (lua_Integer)id->expires);
    lua_setfield(L, -2, "expires");
}

/* Fills id from a LOGIN answer: ok, user, uid, gid, groups, token, exp. */
static int identity_from_answer(exo_identity_t *id, const exo_priv_msg_t *m)
{
    char num[24];
    exo_identity_clear(id);
    if (m->n != 7 || exo_priv_field_copy(&m->f[1], id->user, sizeof(id->user)) < 0 ||
        exo_priv_field_copy(&m->f[4], id->groups, sizeof(id->groups)) < 0)
        return -EBADMSG;
    if (exo_priv_field_copy(&m->f[2], num, sizeof(num)) < 0) return -EBADMSG;
    id->uid = (uint32_t)strtoul(num, NULL, 10);
    if (exo_priv_field_copy(&m->f[3], num, sizeof(num)) < 0) return -EBADMSG;
    id->gid = (uint32_t)strtoul(num, NULL, 10);
    if (exo_priv_field_copy(&m->f[6], num, sizeof(num)) < 0) return -EBADMSG;
    id->expires = strtoll(num, NULL, 10);
    id->token = strndup(m->f[5].p, m->f[5].len);
    if (id->token == NULL) return -ENOMEM;
    id->set = 1;
    memcpy(id->via, "token", 6);
    return 0;
}

static void on_login(void *data, int status, const exo_priv_msg_t *m)
{
    exo_call_t *call = data;
    if (!exo_call_waiting(call)) {
        exo_call_abandon(call);
        return;
    }
    lua_State *co = exo_call_thread(call);
    exo_identity_t *target = exo_call_identity(call);
    if (status < 0) {
        lua_pushnil(co);
        lua_pushstring(co, "unavailable");
        exo_call_resume(call, 2);
        return;
    }
    if (exo_priv_field_is(&m->f[0], "ok")) {
        exo_identity_t id = {0};
        if (identity_from_answer(&id, m) < 0) {
            exo_identity_clear(&id);
            lua_pushnil(co);
            lua_pushstring(co, "error");
            exo_call_resume(call, 2);
            return;
        }
        push_login(co, &id);
        if (target) {
            exo_identity_clear(target);
            *target = id; /* takes the token */
        } else {
            exo_identity_clear(&id);
        }
        exo_call_resume(call, 1);
        return;
    }
    lua_pushnil(co);
    lua_pushlstring(co, m->f[0].p, m->f[0].len < 32 ? m->f[0].len : 32);
    int n = 2;
    if (m->n > 1) {
        char num[24];
        if (exo_priv_field_copy(&m->f[1], num, sizeof(num)) == 0) {
            lua_pushinteger(co, (lua_Integer)strtoll(num, NULL, 10));
            n = 3;
        }
    }
    exo_call_resume(call, n);
}

static int l_login(lua_State *L)
{
    exo_call_t *c = check_call(L);
    size_t ulen, plen;
    const char *user = luaL_checklstring(L, 1, &ulen);
    const char *password = luaL_checklstring(L, 2, &plen);
    const char *source = exo_call_source(c);
    const char *transport = exo_call_transport(c);
    if (!exo_account_name_ok(user, ulen) || plen == 0 || plen > 512 ||
        memchr(password, '\0', plen) != NULL) {
        /* Never sent to the monitor, which would take it for a broken worker. */
        char quser[80];
        exo_log_quote(quser, sizeof(quser), user, ulen);
        exo_warn("login failed: user=%s source=%s transport=%s reason=bad_credentials "
                 "detail=\"%s\"",
                 quser, source, transport,
                 !exo_account_name_ok(user, ulen) ? "not a valid user name"
                                                  : "the password is empty, too long or holds NUL");
        lua_pushnil(L);
        lua_pushstring(L, "bad_credentials");
        return 2;
    }
    if (!exo_mon_available()) {
        lua_pushnil(L);
        lua_pushstring(L, "unavailable");
        lua_pushnil(L);
        lua_pushstring(L, exo_mon_unavailable_reason());
        return 4;
    }
    exo_priv_field_t f[4] = {
        {user, ulen},
        {password, plen},
        {source, strlen(source)},
        {transport, strlen(transport)},
    };
    /* The answer never comes inside exo_mon_request, so waiting may start after it. */
    int rc = exo_mon_request(EXO_OP_LOGIN, f, 4, on_login, c);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, "unavailable");
        lua_pushnil(L);
        lua_pushstring(L, strerror(-rc));
        return 4;
    }
    exo_call_wait(c);
    return lua_yield(L, 0);
}

static int l_use_token(lua_State *L)
{
    exo_call_t *c = exo_call_of(L);
    size_t len;
    const char *token = luaL_checklstring(L, 1, &len);
    exo_identity_t id = {0};
    exo_identity_from_token(&id, token, len);
    if (!id.set) {
        lua_pushnil(L);
        lua_pushstring(L, id.error ? id.error : "token refused");
        return 2;
    }
    push_login(L, &id);
    lua_pushnil(L);
    lua_setfield(L, -2, "token");
    exo_identity_t *target = c ? exo_call_identity(c) : NULL;
    if (target) {
        exo_identity_clear(target);
        *target = id;
    } else {
        exo_identity_clear(&id);
    }
    return 1;
}

static void on_revoke(void *data, int status, const exo_priv_msg_t *m)
{
    exo_call_t *call = data;
    int ok = status == 0 && exo_priv_field_is(&m->f[0], "ok");
    if (!exo_call_waiting(call)) {
        exo_call_abandon(call);
        return;
    }
    lua_State *co = exo_call_thread(call);
    exo_identity_t *id = exo_call_identity(call);
    if (!ok) {
        lua_pushnil(co);
        lua_pushstring(co, status < 0 ? "unavailable" : "the monitor refused to revoke the token");
        exo_call_resume(call, 2);
        return;
    }
    if (id) exo_identity_clear(id);
    lua_pushboolean(co, 1);
    exo_call_resume(call, 1);
}

static int l_logout(lua_State *L)
{
    exo_call_t *c = check_call(L);
    exo_identity_t *id = exo_call_identity(c);
    if (id == NULL || !id->set || id->token == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, "no_token");
        return 2;
    }
    /* Refused at once in this worker; the monitor keeps it for the next ones. */
    exo_token_claims_t claims;
    exo_revoked_t *rev = exo_auth_revoked();
    if (rev && exo_auth_has_key()) {
        /* Verified again only to learn its id: it was valid when the call started. */
        if (exo_token_verify(exo_auth_key(), id->token, strlen(id->token), (int64_t)time(NULL),
                             NULL, &claims) == EXO_TOKEN_VALID)
            exo_revoked_add(rev, claims.jti, claims.exp);
    }
    if (!exo_mon_available()) {
        lua_pushnil(L);
        lua_pushstring(L, "unavailable");
        return 2;
    }
    exo_priv_field_t f[1] = {{id->token, strlen(id->token)}};
    int rc = exo_mon_request(EXO_OP_REVOKE, f, 1, on_revoke, c);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, "unavailable");
        return 2;
    }
    exo_call_wait(c);
    return lua_yield(L, 0);
}

static int luaopen_exo_auth(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"login", l_login},
        {"use_token", l_use_token},
        {"logout", l_logout},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}

void exo_auth_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_exo_auth);
    lua_setfield(L, -2, "exo.auth");
    lua_pop(L, 1);
}
