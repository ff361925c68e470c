/* The method VM: a Lua state with the embedded host, and one coroutine per call. */
#include "lvm.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedded.h"
#include "json.h"
#include "log.h"

/* How often (in VM instructions) a running call checks its deadline. Small enough that a
 * runaway loop is stopped within about a millisecond past its deadline, large enough that the
 * check costs nothing measurable. */
#define EXO_HOOK_INSTRUCTIONS 10000

struct exo_lvm_s {
    lua_State *L;
    int refs;
    int call_ref;  /* host.call */
    char *openrpc; /* encoded once at load */
    size_t openrpc_len;
    int loaded, skipped;
    const exo_runtime_info_t *rt;
};

enum { CALL_RUNNING, CALL_WAITING, CALL_ENDED, CALL_CANCELLED };

struct exo_call_s {
    exo_lvm_t *vm;
    lua_State *co;
    int co_ref;
    int state;
    int refs; /* the owner, each operation in flight, and the deadline timer until closed */
    int in_start;
    int timed_out;
    int failed; /* the coroutine raised: the outcome is an internal error */
    uint64_t deadline_ns;
    uv_timer_t timer;
    exo_call_cb cb;
    void *data;
    char request_id[64];
    char method[96];
};

static int calls_in_flight_;
static const char registry_rt_key = 'r';

int exo_calls_in_flight(void)
{
    return calls_in_flight_;
}

/* The embedded modules are offered through package.preload, compiled as text only. */
static int l_embedded_loader(lua_State *L)
{
    /* stack: modname, (loader data) */
    const exo_embedded_t *m = lua_touserdata(L, lua_upvalueindex(1));
    char chunk[128];
    snprintf(chunk, sizeof(chunk), "@%s.lua", m->name);
    for (char *p = chunk + 1; *p; p++)
        if (*p == '.' && strcmp(p, ".lua") != 0)
            *p = '/';
    if (luaL_loadbufferx(L, m->source, m->len, chunk, "t") != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, m->name);
    lua_call(L, 1, 1);
    return 1;
}

static void preload_embedded(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    /* stack: preload */
    for (const exo_embedded_t *m = exo_embedded_lua; m->name; m++) {
        lua_pushlightuserdata(L, (void *)(uintptr_t)m);
        lua_pushcclosure(L, l_embedded_loader, 1);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);
}

/* Runs fn with nargs arguments in protected mode; on error copies the message to err. */
static int pcall_msg(lua_State *L, int nargs, int nres, char *err, size_t errlen)
{
    if (lua_pcall(L, nargs, nres, 0) == LUA_OK)
        return 0;
    const char *msg = lua_tostring(L, -1);
    snprintf(err, errlen, "%s", msg ? msg : "(error object is not a string)");
    lua_pop(L, 1);
    return -EINVAL;
}

static void push_string_list(lua_State *L, const exo_strlist_t *l)
{
    lua_createtable(L, (int)l->n, 0);
    for (size_t i = 0; i < l->n; i++) {
        lua_pushstring(L, l->items[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* Loads the host and the methods: host.init, then host.discover encoded once. */
static int load_host(exo_lvm_t *vm, char *err, size_t errlen)
{
    lua_State *L = vm->L;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "sandbox.host");
    if (pcall_msg(L, 1, 1, err, errlen) < 0)
        return -EINVAL;
    /* stack: host */
    lua_getfield(L, -1, "init");
    lua_createtable(L, 0, 2);
    lua_pushboolean(L, vm->rt->dev);
    lua_setfield(L, -2, "dev");
    push_string_list(L, &vm->rt->config->method_dirs);
    lua_setfield(L, -2, "method_dirs");
    if (pcall_msg(L, 1, 1, err, errlen) < 0) {
        lua_pop(L, 1);
        return -EINVAL;
    }
    /* stack: host, summary */
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "methods");
        vm->loaded = (int)lua_tointeger(L, -1);
        lua_getfield(L, -2, "skipped");
        vm->skipped = lua_istable(L, -1) ? (int)lua_rawlen(L, -1) : 0;
        lua_pop(L, 2);
    }
    lua_pop(L, 1);

    lua_getfield(L, -1, "discover");
    if (pcall_msg(L, 0, 1, err, errlen) < 0) {
        lua_pop(L, 1);
        return -EINVAL;
    }
    /* stack: host, document */
    exo_buf_t doc = EXO_BUF_INIT;
    exo_json_err_t jerr;
    if (exo_json_encode(L, -1, &doc, &jerr) < 0) {
        snprintf(err, errlen, "cannot encode the OpenRPC document: %s", jerr.msg);
        exo_buf_free(&doc);
        lua_pop(L, 2);
        return -EINVAL;
    }
    vm->openrpc = exo_buf_steal(&doc, &vm->openrpc_len);
    lua_pop(L, 1);

    lua_getfield(L, -1, "call");
    if (!lua_isfunction(L, -1)) {
        snprintf(err, errlen, "sandbox.host has no call function");
        lua_pop(L, 2);
        return -EINVAL;
    }
    vm->call_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return 0;
}

int exo_lvm_new(const exo_runtime_info_t *rt, exo_lvm_t **out, char *err, size_t errlen)
{
    exo_lvm_t *vm = calloc(1, sizeof(*vm));
    if (vm == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    vm->rt = rt;
    vm->refs = 1;
    vm->call_ref = LUA_NOREF;
    vm->L = luaL_newstate();
    if (vm->L == NULL) {
        free(vm);
        snprintf(err, errlen, "cannot create a Lua state");
        return -ENOMEM;
    }
    lua_State *L = vm->L;
    /* The main thread's extra space stays NULL: it marks code that runs outside any call. */
    memset(lua_getextraspace(L), 0, LUA_EXTRASPACE);
    lua_pushlightuserdata(L, (void *)(uintptr_t)rt);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &registry_rt_key);
    luaL_openlibs(L);
    preload_embedded(L);
    exo_core_preload(L);
    int rc = load_host(vm, err, errlen);
    if (rc < 0) {
        lua_close(L);
        free(vm->openrpc);
        free(vm);
        return rc;
    }
    *out = vm;
    return 0;
}

void exo_lvm_retain(exo_lvm_t *vm)
{
    vm->refs++;
}

void exo_lvm_release(exo_lvm_t *vm)
{
    if (--vm->refs > 0)
        return;
    lua_close(vm->L);
    free(vm->openrpc);
    free(vm);
}

const char *exo_lvm_openrpc(const exo_lvm_t *vm, size_t *len)
{
    *len = vm->openrpc_len;
    return vm->openrpc;
}

lua_State *exo_lvm_state(const exo_lvm_t *vm)
{
    return vm->L;
}

void exo_lvm_counts(const exo_lvm_t *vm, int *loaded, int *skipped)
{
    *loaded = vm->loaded;
    *skipped = vm->skipped;
}

const exo_runtime_info_t *exo_lvm_runtime(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &registry_rt_key);
    const exo_runtime_info_t *rt = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return rt;
}

exo_call_t *exo_call_of(lua_State *L)
{
    exo_call_t *c;
    memcpy(&c, lua_getextraspace(L), sizeof(c));
    return c;
}

lua_State *exo_call_thread(const exo_call_t *call)
{
    return call->co;
}

int exo_call_waiting(const exo_call_t *call)
{
    return call->state == CALL_WAITING;
}

static void call_unref(exo_call_t *c)
{
    if (--c->refs > 0)
        return;
    exo_lvm_release(c->vm);
    free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    call_unref(h->data);
}

/* Ends the call: drops the coroutine anchor unless the outcome is still to be read, stops
 * the deadline timer, and leaves the in-flight count. */
static void call_end(exo_call_t *c, int state)
{
    c->state = state;
    calls_in_flight_--;
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    if (state == CALL_CANCELLED) {
        luaL_unref(c->vm->L, LUA_REGISTRYINDEX, c->co_ref);
        c->co_ref = LUA_NOREF;
    }
}

/* The count hook: past the deadline, every further count raises, so a method that catches
 * the error with pcall is stopped again at its next instructions. */
static void deadline_hook(lua_State *L, lua_Debug *ar)
{
    exo_call_t *c = exo_call_of(L);
    if (c == NULL || c->deadline_ns == 0)
        return;
    if (uv_hrtime() >= c->deadline_ns) {
        c->timed_out = 1;
        luaL_error(L, "deadline exceeded");
    }
}

static void call_step(exo_call_t *c, int nargs)
{
    int nres = 0;
    c->state = CALL_RUNNING;
    int st = lua_resume(c->co, NULL, nargs, &nres);
    if (st == LUA_YIELD && c->state == CALL_WAITING) {
        lua_pop(c->co, nres);
        return;
    }
    if (st == LUA_YIELD) {
        /* A yield that no binding asked for (coroutine.yield at the top of a handler) would
         * leave the call suspended forever; it is a method bug. */
        exo_error("method %s yielded outside a binding (request %s)", c->method, c->request_id);
        c->failed = 1;
    } else if (st != LUA_OK) {
        const char *msg = lua_tostring(c->co, -1);
        if (!c->timed_out)
            exo_error("method %s failed (request %s): %s", c->method, c->request_id,
                      msg ? msg : "(error object)");
        c->failed = 1;
    } else if (nres < 2) {
        c->failed = 1;
    }
    call_end(c, CALL_ENDED);
    if (!c->in_start && c->cb)
        c->cb(c, c->data);
}

static void on_deadline(uv_timer_t *t)
{
    exo_call_t *c = t->data;
    if (c->state != CALL_WAITING)
        return;
    /* The call is waiting on an operation: it ends now with a timeout; the operation's
     * callback will find it cancelled. */
    c->timed_out = 1;
    exo_warn("method %s timed out (request %s)", c->method, c->request_id);
    call_end(c, CALL_ENDED);
    if (c->cb)
        c->cb(c, c->data);
}

int exo_call_start(exo_lvm_t *vm, const char *name, size_t name_len, const exo_call_info_t *info,
                   exo_call_cb cb, void *data, exo_call_t **out)
{
    lua_State *L = vm->L;
    exo_call_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        lua_pop(L, 1);
        return -ENOMEM;
    }
    c->vm = vm;
    exo_lvm_retain(vm);
    c->refs = 2; /* the owner and the timer */
    c->cb = cb;
    c->data = data;
    snprintf(c->request_id, sizeof(c->request_id), "%s", info->request_id);
    snprintf(c->method, sizeof(c->method), "%.*s", (int)(name_len < 90 ? name_len : 90), name);
    uv_timer_init(vm->rt->loop, &c->timer);
    c->timer.data = c;
    calls_in_flight_++;

    /* stack: params */
    c->co = lua_newthread(L);
    c->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    memcpy(lua_getextraspace(c->co), &c, sizeof(c));
    lua_rawgeti(c->co, LUA_REGISTRYINDEX, vm->call_ref);
    lua_pushlstring(c->co, name, name_len);
    lua_xmove(L, c->co, 1);
    /* stack (co): call, name, params */
    lua_createtable(c->co, 0, 6);
    lua_pushstring(c->co, info->request_id);
    lua_setfield(c->co, -2, "request_id");
    lua_pushstring(c->co, info->transport);
    lua_setfield(c->co, -2, "transport");
    lua_pushstring(c->co, info->peer);
    lua_setfield(c->co, -2, "peer");
    lua_pushboolean(c->co, vm->rt->dev);
    lua_setfield(c->co, -2, "dev");
    uint64_t now_ms = uv_now(vm->rt->loop);
    lua_pushinteger(c->co, (lua_Integer)(now_ms + info->timeout_ms));
    lua_setfield(c->co, -2, "deadline_ms");
    if (info->timeout_ms > 0) {
        c->deadline_ns = uv_hrtime() + (uint64_t)info->timeout_ms * 1000000u;
        uv_timer_start(&c->timer, on_deadline, info->timeout_ms, 0);
        lua_sethook(c->co, deadline_hook, LUA_MASKCOUNT, EXO_HOOK_INSTRUCTIONS);
    }
    *out = c;
    c->in_start = 1;
    call_step(c, 3);
    c->in_start = 0;
    return c->state == CALL_ENDED ? 1 : 0;
}

void exo_call_wait(exo_call_t *call)
{
    call->state = CALL_WAITING;
    call->refs++;
}

void exo_call_resume(exo_call_t *call, int nargs)
{
    call_step(call, nargs);
    call_unref(call);
}

void exo_call_abandon(exo_call_t *call)
{
    call_unref(call);
}

void exo_call_cancel(exo_call_t *call)
{
    if (call->state == CALL_WAITING)
        call_end(call, CALL_CANCELLED);
    call->cb = NULL;
}

void exo_call_release(exo_call_t *call)
{
    if (call->co_ref != LUA_NOREF) {
        luaL_unref(call->vm->L, LUA_REGISTRYINDEX, call->co_ref);
        call->co_ref = LUA_NOREF;
    }
    call_unref(call);
}

static int write_error(exo_buf_t *out, int code, const char *message, const char *data_json)
{
    if (data_json)
        return exo_buf_printf(out, "\"error\":{\"code\":%d,\"message\":\"%s\",\"data\":%s}", code,
                              message, data_json);
    return exo_buf_printf(out, "\"error\":{\"code\":%d,\"message\":\"%s\"}", code, message);
}

int exo_call_write_outcome(exo_call_t *c, exo_buf_t *out)
{
    char data[128];
    snprintf(data, sizeof(data), "{\"request_id\":\"%s\"}", c->request_id);
    if (c->timed_out)
        return write_error(out, -32004, "Timeout", data);
    if (c->failed || c->co_ref == LUA_NOREF)
        return write_error(out, -32603, "Internal error", data);

    /* stack (co): ok, value */
    lua_State *co = c->co;
    int ok = lua_toboolean(co, -2);
    size_t mark = out->len;
    exo_json_err_t jerr;
    int rc;
    if (ok) {
        rc = exo_buf_appends(out, "\"result\":");
        if (rc == 0 && (rc = exo_json_encode(co, -1, out, &jerr)) < 0)
            exo_error("method %s returned a result that is not JSON (request %s): %s", c->method,
                      c->request_id, jerr.msg);
    } else {
        rc = exo_buf_appends(out, "\"error\":");
        if (rc == 0 && (rc = exo_json_encode(co, -1, out, &jerr)) < 0)
            exo_error("method %s raised an error that is not JSON (request %s): %s", c->method,
                      c->request_id, jerr.msg);
    }
    if (rc == -EINVAL) {
        out->len = mark;
        return write_error(out, -32603, "Internal error", data);
    }
    if (rc < 0)
        out->len = mark;
    return rc;
}
