/* The method VM: a Lua state with the embedded host, and one coroutine per call. */
#include "lvm.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "embedded.h"
#include "json.h"
#include "log.h"
#include "metadata.h"
#include "mountop.h"
#include "pkgop.h"

/* How often (in VM instructions) the hook of a running call counts its budget and checks
 * the clock: a few microseconds of Lua, so preemption and deadlines are precise, while the
 * check itself stays well under one percent of the work. */
#define EXO_HOOK_INSTRUCTIONS 1000
/* Finished coroutines kept for reuse. */
#define EXO_CORO_POOL 32

struct exo_lvm_s {
    lua_State *L;
    size_t mem;   /* bytes the allocator has handed out */
    size_t limit; /* the VM's memory ceiling */
    int loading;  /* the host and the method files are being loaded */
    int refs;
    int call_ref; /* host.call */
    int host_ref; /* the host table */
    /* The OpenRPC documents, each encoded on first use: [0] for no version named (the current
     * one), then one per API version asked for. The host serves at most 32 versions. */
    struct {
        char version[16];
        char *doc;
        size_t len;
    } openrpc[EXO_OPENRPC_CACHE];
    int n_openrpc;
    int loaded, skipped;
    const exo_runtime_info_t *rt;
    /* Coroutines of calls that returned normally, kept for the next calls (each anchored by
     * its registry reference), so that a call does not create and collect a thread. */
    lua_State *pool[EXO_CORO_POOL];
    int pool_ref[EXO_CORO_POOL];
    int pool_n;
};

enum { CALL_RUNNING, CALL_WAITING, CALL_PREEMPTED, CALL_ENDED, CALL_CANCELLED };

/* Why the runtime stopped a call from outside Lua; the answer is made in C. */
enum { KILL_NONE, KILL_DEADLINE, KILL_MEMORY, KILL_INSTRUCTIONS };

/* Capabilities a method may be granted; bindings check them (see exo_call_require). */
static const char *const cap_names[] = {"system.read",   "process.run",  "metadata.read",
                                        "mounts.read",   "mounts.write", "packages.read",
                                        "packages.write"};

struct exo_call_s {
    exo_lvm_t *vm;
    lua_State *co;
    int co_ref;
    int state;
    int refs; /* the owner, each operation in flight, and the deadline timer until closed */
    int in_start;
    int killed; /* KILL_*: stopped by a limit; never resumed */
    int failed; /* the coroutine raised: the outcome is an internal error */
    int caps_set;
    uint32_t caps; /* bit i: cap_names[i] granted */
    int64_t mem;   /* bytes this call has added to the VM while it ran */
    uint64_t instructions;
    uint64_t deadline_ns;
    uint64_t slice_start;          /* uv_hrtime() when the current resume began */
    exo_call_t *rq_prev, *rq_next; /* the run queue of preempted calls */
    int timer_on; /* the deadline timer exists only once the call waits or is preempted */
    uint64_t deadline_loop_ms; /* the deadline in loop time (uv_now) */
    uv_timer_t timer;
    exo_call_cb cb;
    void *data;
    char request_id[64];
    char method[96];
    char transport[8];
    char source[130];
    exo_identity_t *identity; /* the caller's identity, owned by the request or session */
    int64_t session;          /* the WebSocket session, 0 over HTTP */
};

static int calls_in_flight_;
static const char registry_rt_key = 'r';
/* The call whose coroutine (or a coroutine it resumed) is running now. The loop has one
 * thread, so at most one call runs at a time; bindings find their call here, which also
 * works inside coroutines that method code creates. */
static exo_call_t *current_;
/* Preempted calls wait here for the next loop iteration, oldest first. */
static exo_call_t *rq_head_, *rq_tail_;
static uv_idle_t rq_idle_;
static int rq_idle_ready_;

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
        if (*p == '.' && strcmp(p, ".lua") != 0) *p = '/';
    /* Built-in modules are bytecode made at build time by the same Lua (CMakeLists.txt);
     * nothing else is ever loaded in binary form. */
    if (luaL_loadbufferx(L, m->source, m->len, chunk, "b") != LUA_OK) return lua_error(L);
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
    if (lua_pcall(L, nargs, nres, 0) == LUA_OK) return 0;
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

/* Loads the host and the methods (host.init). The OpenRPC document is built on first use. */
static int load_host(exo_lvm_t *vm, char *err, size_t errlen)
{
    lua_State *L = vm->L;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "sandbox.host");
    if (pcall_msg(L, 1, 1, err, errlen) < 0) return -EINVAL;
    /* stack: host */
    lua_getfield(L, -1, "init");
    lua_createtable(L, 0, 6);
    lua_pushboolean(L, vm->rt->dev);
    lua_setfield(L, -2, "dev");
    const exo_config_t *cfg = vm->rt->config;
    push_string_list(L, &cfg->method_dirs);
    lua_setfield(L, -2, "method_dirs");
    lua_pushstring(L, cfg->api_versions_dir ? cfg->api_versions_dir : "");
    lua_setfield(L, -2, "api_versions_dir");
    lua_createtable(L, 1, 0);
    if (cfg->operator_dir && cfg->operator_dir[0]) {
        lua_pushstring(L, cfg->operator_dir);
        lua_rawseti(L, -2, 1);
    }
    lua_setfield(L, -2, "operator_dirs");
    lua_pushboolean(L, cfg->allow_override);
    lua_setfield(L, -2, "allow_override");
    push_string_list(L, &cfg->operator_capabilities);
    lua_setfield(L, -2, "operator_capabilities");
    push_string_list(L, &cfg->public_methods);
    lua_setfield(L, -2, "public_methods");
    push_string_list(L, &cfg->user_methods);
    lua_setfield(L, -2, "user_methods");
    push_string_list(L, &cfg->admin_methods);
    lua_setfield(L, -2, "admin_methods");
    lua_pushinteger(L, (lua_Integer)(cfg->jobs_keep_ms / 1000));
    lua_setfield(L, -2, "jobs_keep_s");
    lua_pushinteger(L, (lua_Integer)cfg->jobs_max_records);
    lua_setfield(L, -2, "jobs_max_records");
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

    lua_getfield(L, -1, "call");
    if (!lua_isfunction(L, -1)) {
        snprintf(err, errlen, "sandbox.host has no call function");
        lua_pop(L, 2);
        return -EINVAL;
    }
    vm->call_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    vm->host_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* The VM's allocator. While a call runs, growth past the call's budget or the VM's ceiling
 * is refused: Lua raises a memory error in that call, and the call is marked to be stopped
 * at its next instructions even if the method catches the error. Outside calls (loading,
 * decoding requests, pushing results) nothing is refused, so the runtime's own work never
 * meets an error it cannot handle. */
#define EXO_WIPE_MAX 1200

static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    exo_lvm_t *vm = ud;
    size_t old = ptr ? osize : 0;
    exo_call_t *c = current_ && current_->vm == vm ? current_ : NULL;
    if (nsize == 0) {
        /* Small blocks are wiped as they are freed: a password that reached the VM (in a
         * request body decoded here) is a Lua string, which nothing else can wipe. Strings of
         * up to a password's length are small; the cost is a memset per freed object. */
        if (ptr && old <= EXO_WIPE_MAX) explicit_bzero(ptr, old);
        free(ptr);
        vm->mem -= old;
        if (c) c->mem -= (int64_t)old;
        return NULL;
    }
    if (c && nsize > old) {
        size_t grow = nsize - old;
        if (vm->mem + grow > vm->limit ||
            c->mem + (int64_t)grow > (int64_t)vm->rt->config->call_memory_limit) {
            if (!c->killed) c->killed = KILL_MEMORY;
            return NULL;
        }
    } else if (vm->loading && nsize > old && vm->mem + (nsize - old) > vm->limit) {
        /* A method file's top level runs at load: past the ceiling it gets a memory error
         * and is skipped, like any file that fails to load. */
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p == NULL) return NULL;
    vm->mem += nsize - old;
    if (c) c->mem += (int64_t)nsize - (int64_t)old;
    return p;
}

static int vm_panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    exo_error("unprotected Lua error: %s", msg ? msg : "(not a string)");
    abort();
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
    vm->limit = rt->config->memory_limit;
    vm->L = lua_newstate(vm_alloc, vm);
    if (vm->L == NULL) {
        free(vm);
        snprintf(err, errlen, "cannot create a Lua state");
        return -ENOMEM;
    }
    lua_State *L = vm->L;
    lua_atpanic(L, vm_panic);
    lua_pushlightuserdata(L, (void *)(uintptr_t)rt);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &registry_rt_key);
    luaL_openlibs(L);
    preload_embedded(L);
    exo_core_preload(L);
    exo_auth_preload(L);
    exo_load_preload(L);
    exo_events_preload(L);
    exo_jobs_preload(L);
    exo_metadata_preload(L);
    exo_mounts_preload(L);
    exo_packages_preload(L);
    vm->loading = 1;
    int rc = load_host(vm, err, errlen);
    vm->loading = 0;
    if (rc == 0) {
        /* Everything loaded so far (the host, the methods, their schemas) lives as long as
         * the VM, while each call makes a little short-lived garbage. Generational
         * collection visits the young objects only, where incremental collection would
         * re-mark the whole heap again and again: half of the CPU time under load. */
        lua_gc(L, LUA_GCCOLLECT);
        lua_gc(L, LUA_GCGEN, 0, 0);
    }
    if (rc < 0) {
        lua_close(L);
        free(vm);
        return rc;
    }
    *out = vm;
    return 0;
}

int exo_lvm_check_files(const exo_runtime_info_t *rt, char **files, int n, int as_operator,
                        FILE *out)
{
    exo_config_t none;
    char err[1024];
    exo_lvm_t *vm;
    /* The files are checked in a VM that loads nothing else, so that a clash with an
     * installed method does not hide the file's own mistakes. */
    none = *rt->config;
    none.method_dirs.n = 0;
    none.operator_dir = NULL;
    exo_runtime_info_t quiet = *rt;
    quiet.config = &none;
    if (exo_lvm_new(&quiet, &vm, err, sizeof(err)) < 0) {
        fprintf(out, "cannot start the checker: %s\n", err);
        return -EINVAL;
    }
    lua_State *L = vm->L;
    int failed = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->host_ref);
    lua_getfield(L, -1, "check_files");
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, files[i]);
        lua_rawseti(L, -2, i + 1);
    }
    /* As operator files: against the configuration's grants and shipped methods. */
    lua_createtable(L, 0, 3);
    if (as_operator) {
        push_string_list(L, &rt->config->operator_capabilities);
        lua_setfield(L, -2, "operator_capabilities");
        push_string_list(L, &rt->config->method_dirs);
        lua_setfield(L, -2, "method_dirs");
        lua_pushboolean(L, rt->config->allow_override);
        lua_setfield(L, -2, "allow_override");
    }
    if (pcall_msg(L, 2, 1, err, sizeof(err)) < 0) {
        fprintf(out, "check failed: %s\n", err);
        failed = -EINVAL;
        goto out;
    }
    /* stack: host, results */
    for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
        lua_rawgeti(L, -1, i);
        lua_getfield(L, -1, "file");
        lua_getfield(L, -2, "ok");
        const char *file = lua_tostring(L, -2);
        if (lua_toboolean(L, -1)) {
            lua_getfield(L, -3, "methods");
            fprintf(out, "%s: ok", file ? file : "?");
            for (lua_Integer k = 1; lua_istable(L, -1) && k <= (lua_Integer)lua_rawlen(L, -1);
                 k++) {
                lua_rawgeti(L, -1, k);
                fprintf(out, "%s%s", k == 1 ? " (" : ", ", lua_tostring(L, -1));
                lua_pop(L, 1);
            }
            fprintf(out, "%s\n", lua_istable(L, -1) && lua_rawlen(L, -1) ? ")" : "");
            lua_pop(L, 1);
        } else {
            failed++;
            lua_getfield(L, -3, "errors");
            for (lua_Integer k = 1; lua_istable(L, -1) && k <= (lua_Integer)lua_rawlen(L, -1);
                 k++) {
                lua_rawgeti(L, -1, k);
                fprintf(out, "%s\n", lua_tostring(L, -1));
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 3);
    }
out:
    lua_settop(L, 0);
    exo_lvm_release(vm);
    return failed;
}

void exo_lvm_retain(exo_lvm_t *vm)
{
    vm->refs++;
}

void exo_lvm_release(exo_lvm_t *vm)
{
    if (--vm->refs > 0) return;
    lua_close(vm->L);
    for (int i = 0; i < vm->n_openrpc; i++)
        free(vm->openrpc[i].doc);
    free(vm);
}

const char *exo_lvm_openrpc(exo_lvm_t *vm, const char *version, size_t *len, char *err,
                            size_t errlen)
{
    /* Built on first use rather than at load: start-up stays short, and an agent that is
     * never asked for its document does not keep it in memory. No method code runs here
     * (examples were copied into plain tables at load). */
    if (version == NULL) version = "";
    int i;
    for (i = 0; i < vm->n_openrpc; i++)
        if (strcmp(vm->openrpc[i].version, version) == 0) break;
    if (i == vm->n_openrpc) {
        /* An unknown version is refused by host.discover, so only served ones get here. */
        if (strlen(version) >= sizeof(vm->openrpc[0].version)) {
            snprintf(err, errlen, "API version is not a version (YYYY-MM-DD)");
            return NULL;
        }
        lua_State *L = vm->L;
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->host_ref);
        lua_getfield(L, -1, "discover");
        if (version[0])
            lua_pushstring(L, version);
        else
            lua_pushnil(L);
        if (pcall_msg(L, 1, 1, err, errlen) < 0) {
            lua_pop(L, 1);
            return NULL;
        }
        /* stack: host, document */
        exo_buf_t doc = EXO_BUF_INIT;
        exo_json_err_t jerr;
        if (exo_json_encode(L, -1, &doc, &jerr) < 0) {
            snprintf(err, errlen, "cannot encode the OpenRPC document: %s", jerr.msg);
            exo_buf_free(&doc);
            lua_pop(L, 2);
            return NULL;
        }
        lua_pop(L, 2);
        size_t n;
        char *text = exo_buf_steal(&doc, &n);
        if (vm->n_openrpc == EXO_OPENRPC_CACHE) {
            /* Cannot happen with the host's bound on versions; keep the newest ones. */
            free(vm->openrpc[EXO_OPENRPC_CACHE - 1].doc);
            vm->n_openrpc--;
        }
        i = vm->n_openrpc++;
        snprintf(vm->openrpc[i].version, sizeof(vm->openrpc[i].version), "%s", version);
        vm->openrpc[i].doc = text;
        vm->openrpc[i].len = n;
    }
    *len = vm->openrpc[i].len;
    return vm->openrpc[i].doc;
}

lua_State *exo_lvm_state(const exo_lvm_t *vm)
{
    return vm->L;
}

int exo_lvm_host_call(exo_lvm_t *vm, const char *fn, int nargs, int nres, char *err, size_t errlen)
{
    lua_State *L = vm->L;
    /* stack: args... */
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->host_ref);
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) {
        snprintf(err, errlen, "sandbox.host has no %s function", fn);
        lua_pop(L, nargs + 1);
        return -ENOENT;
    }
    /* stack: args..., host[fn] */
    lua_insert(L, -(nargs + 1));
    return pcall_msg(L, nargs, nres, err, errlen);
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
    (void)L;
    return current_;
}

lua_State *exo_call_thread(const exo_call_t *call)
{
    return call->co;
}

int exo_call_waiting(const exo_call_t *call)
{
    return call->state == CALL_WAITING;
}

int exo_call_set_capabilities(lua_State *L, exo_call_t *c)
{
    /* stack: ..., names (at index 1) */
    if (c->caps_set) return luaL_error(L, "capabilities are set once per call");
    luaL_checktype(L, 1, LUA_TTABLE);
    uint32_t caps = 0;
    lua_Integer n = luaL_len(L, 1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        const char *name = lua_tostring(L, -1);
        size_t k = 0;
        while (name && k < sizeof(cap_names) / sizeof(cap_names[0]) && strcmp(name, cap_names[k]))
            k++;
        if (name == NULL || k == sizeof(cap_names) / sizeof(cap_names[0]))
            return luaL_error(L, "unknown capability '%s'", name ? name : "?");
        caps |= 1u << k;
        lua_pop(L, 1);
    }
    c->caps = caps;
    c->caps_set = 1;
    return 0;
}

void exo_call_require(lua_State *L, const char *capability)
{
    exo_call_t *c = current_;
    if (c == NULL) return; /* host code outside any call (loading) is trusted */
    for (size_t k = 0; k < sizeof(cap_names) / sizeof(cap_names[0]); k++)
        if (strcmp(capability, cap_names[k]) == 0 && (c->caps & (1u << k))) return;
    luaL_error(L, "capability '%s' is not granted to this method", capability);
}

static void call_unref(exo_call_t *c)
{
    if (--c->refs > 0) return;
    exo_lvm_release(c->vm);
    free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    call_unref(h->data);
}

/* ---- the run queue of preempted calls ----------------------------------------------------- */

static void rq_remove(exo_call_t *c)
{
    if (c->rq_prev)
        c->rq_prev->rq_next = c->rq_next;
    else
        rq_head_ = c->rq_next;
    if (c->rq_next)
        c->rq_next->rq_prev = c->rq_prev;
    else
        rq_tail_ = c->rq_prev;
    c->rq_prev = c->rq_next = NULL;
    if (rq_head_ == NULL && rq_idle_ready_) uv_idle_stop(&rq_idle_);
}

static void call_step(exo_call_t *c, int nargs);

/* Each loop iteration resumes every call that was preempted before it began, once, so
 * I/O and new requests are served between the slices of CPU-bound calls. */
static void on_rq_idle(uv_idle_t *h)
{
    exo_call_t *last = rq_tail_;
    int done = 0;
    while (rq_head_ && !done) {
        exo_call_t *c = rq_head_;
        done = c == last;
        rq_remove(c);
        call_step(c, 0);
        call_unref(c); /* the queue's reference */
    }
}

static void on_deadline(uv_timer_t *t);

/* A call that runs to its end inside one resume never needs the loop to stop it (the hook
 * does), so its deadline timer is only made when it first waits or is preempted. */
static void call_arm_timer(exo_call_t *c)
{
    if (c->timer_on || c->deadline_ns == 0) return;
    /* Counted from the loop time at the start of the call, as uv_timer_start counts: the
     * loop time has not moved while the call ran, so a timeout computed from the clock now
     * would fire early by the time the call has run. */
    uint64_t now = uv_now(c->vm->rt->loop);
    uint64_t left = c->deadline_loop_ms > now ? c->deadline_loop_ms - now : 0;
    uv_timer_init(c->vm->rt->loop, &c->timer);
    c->timer.data = c;
    c->timer_on = 1;
    c->refs++;
    uv_timer_start(&c->timer, on_deadline, left, 0);
}

static void rq_push(exo_call_t *c)
{
    call_arm_timer(c);
    if (!rq_idle_ready_) {
        uv_idle_init(c->vm->rt->loop, &rq_idle_);
        rq_idle_ready_ = 1;
    }
    c->refs++;
    c->rq_prev = rq_tail_;
    c->rq_next = NULL;
    if (rq_tail_)
        rq_tail_->rq_next = c;
    else
        rq_head_ = c;
    rq_tail_ = c;
    uv_idle_start(&rq_idle_, on_rq_idle);
}

void exo_calls_shutdown(void)
{
    if (rq_idle_ready_ && !uv_is_closing((uv_handle_t *)&rq_idle_))
        uv_close((uv_handle_t *)&rq_idle_, NULL);
    rq_idle_ready_ = 0;
}

/* ---- call lifecycle ---------------------------------------------------------------------- */

/* Ends the call: drops the coroutine anchor if nobody will read the outcome, stops the
 * deadline timer, leaves the run queue and the in-flight count. */
static void call_end(exo_call_t *c, int state)
{
    if (c->state == CALL_PREEMPTED) {
        rq_remove(c);
        call_unref(c);
    }
    c->state = state;
    calls_in_flight_--;
    if (c->timer_on && !uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    if (state == CALL_CANCELLED) {
        luaL_unref(c->vm->L, LUA_REGISTRYINDEX, c->co_ref);
        c->co_ref = LUA_NOREF;
    }
}

static const char *kill_reason(int killed)
{
    return killed == KILL_DEADLINE ? "deadline exceeded"
           : killed == KILL_MEMORY ? "memory limit of the call exceeded"
                                   : "instruction limit of the call exceeded";
}

/* The count hook of every coroutine of a call. It counts the call's instruction budget,
 * checks its deadline, and preempts it when its slice is used up. A yield from a coroutine
 * the method made travels up through the host's coroutine wrapper, which runs a little Lua
 * in the enclosing coroutine: while such a yield (a preemption or a binding's wait) is on its
 * way, the state is no longer CALL_RUNNING and the hook does not preempt a second time, so
 * the runtime sees exactly the yield that was started. A call stopped by a limit
 * yields from here: a yield leaves every pcall of the method behind at once, where an error
 * would be caught by a pcall around a loop over and over, and call_step then ends the call
 * without resuming it. Where a C function that cannot yield is on the stack (a table.sort
 * comparator), the hook raises instead and fires at every instruction from then on, so the
 * method is stopped as soon as it is back in code that can yield. */
static void call_hook(lua_State *L, lua_Debug *ar)
{
    exo_call_t *c = current_;
    if (c == NULL) return;
    if (!c->killed) {
        const exo_config_t *cfg = c->vm->rt->config;
        uint64_t now = uv_hrtime();
        c->instructions += EXO_HOOK_INSTRUCTIONS;
        if (c->instructions > cfg->call_instruction_limit) {
            c->killed = KILL_INSTRUCTIONS;
        } else if (c->deadline_ns && now >= c->deadline_ns) {
            c->killed = KILL_DEADLINE;
        } else if (c->state == CALL_RUNNING &&
                   now - c->slice_start >= (uint64_t)cfg->preempt_slice_ms * 1000000u) {
            if (lua_isyieldable(L)) {
                c->state = CALL_PREEMPTED;
                lua_yield(L, 0); /* in a hook, lua_yield returns; the yield happens on return */
            }
            return;
        } else {
            return;
        }
    }
    if (lua_isyieldable(L)) {
        lua_yield(L, 0);
        return;
    }
    lua_sethook(L, call_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "%s", kill_reason(c->killed));
}

static void call_finished(exo_call_t *c)
{
    call_end(c, CALL_ENDED);
    if (!c->in_start && c->cb) c->cb(c, c->data);
}

static void call_step(exo_call_t *c, int nargs)
{
    int nres = 0;
    exo_call_t *outer = current_;
    c->state = CALL_RUNNING;
    c->slice_start = uv_hrtime();
    current_ = c;
    int st = lua_resume(c->co, NULL, nargs, &nres);
    current_ = outer;
    if (st == LUA_YIELD && !c->killed && c->state == CALL_WAITING) {
        lua_pop(c->co, nres);
        return;
    }
    if (st == LUA_YIELD && !c->killed && c->state == CALL_PREEMPTED) {
        lua_pop(c->co, nres);
        rq_push(c);
        return;
    }
    if (c->killed) {
        exo_warn("method %s stopped (request %s): %s", c->method, c->request_id,
                 kill_reason(c->killed));
    } else if (st == LUA_YIELD) {
        /* A yield that no binding asked for would leave the call suspended forever. */
        exo_error("method %s yielded outside a binding (request %s)", c->method, c->request_id);
        c->failed = 1;
    } else if (st != LUA_OK) {
        const char *msg = lua_tostring(c->co, -1);
        exo_error("method %s failed (request %s): %.500s", c->method, c->request_id,
                  msg ? msg : "(error object)");
        c->failed = 1;
    } else if (nres < 2) {
        c->failed = 1;
    }
    call_finished(c);
}

static void on_deadline(uv_timer_t *t)
{
    exo_call_t *c = t->data;
    if (c->state != CALL_WAITING && c->state != CALL_PREEMPTED) return;
    /* The call waits on an operation or for its next slice: it ends now; an operation's
     * callback will find it no longer waiting. */
    c->killed = KILL_DEADLINE;
    exo_warn("method %s stopped (request %s): %s", c->method, c->request_id,
             kill_reason(c->killed));
    call_finished(c);
}

/* ctx.auth, the caller's identity as the host checks permissions with it, or ctx.auth_error
 * when a credential was presented and refused. Nothing is pushed for an anonymous caller. */
static void push_auth(lua_State *co, const exo_config_t *cfg, const exo_identity_t *id)
{
    if (id == NULL) return;
    if (!id->set) {
        if (id->error == NULL) return;
        lua_pushstring(co, id->error);
        lua_setfield(co, -2, "auth_error");
        return;
    }
    lua_createtable(co, 0, 9);
    lua_pushstring(co, id->user);
    lua_setfield(co, -2, "user");
    lua_pushinteger(co, id->uid);
    lua_setfield(co, -2, "uid");
    lua_pushinteger(co, id->gid);
    lua_setfield(co, -2, "gid");
    lua_newtable(co);
    lua_Integer k = 1;
    for (const char *p = id->groups; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len) {
            lua_pushlstring(co, p, len);
            lua_rawseti(co, -2, k++);
        }
        p += len + (comma ? 1 : 0);
    }
    lua_setfield(co, -2, "groups");
    lua_pushboolean(co, exo_identity_admin(cfg, id));
    lua_setfield(co, -2, "admin");
    lua_pushboolean(co, exo_identity_allowed(cfg, id));
    lua_setfield(co, -2, "allowed");
    lua_pushstring(co, id->via);
    lua_setfield(co, -2, "via");
    if (id->expires) {
        lua_pushinteger(co, (lua_Integer)id->expires);
        lua_setfield(co, -2, "expires");
    }
    lua_setfield(co, -2, "auth");
}

exo_identity_t *exo_call_identity(const exo_call_t *call)
{
    return call->identity;
}

const char *exo_call_source(const exo_call_t *call)
{
    return call->source;
}

const char *exo_call_transport(const exo_call_t *call)
{
    return call->transport;
}

exo_lvm_t *exo_call_vm(const exo_call_t *call)
{
    return call->vm;
}

int64_t exo_call_session(const exo_call_t *call)
{
    return call->session;
}

void exo_lvm_session_closed(exo_lvm_t *vm, int64_t id)
{
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->host_ref);
    lua_getfield(L, -1, "session_closed");
    /* stack: host, session_closed */
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 2);
        return;
    }
    lua_pushinteger(L, (lua_Integer)id);
    char err[512];
    if (pcall_msg(L, 1, 0, err, sizeof(err)) < 0)
        exo_error("host.session_closed(%lld) failed: %s", (long long)id, err);
    lua_pop(L, 1);
}

int exo_call_start_internal(exo_lvm_t *vm, const char *name, const char *request_id,
                            uint32_t timeout_ms, struct exo_identity_s *identity, const char *job,
                            exo_call_cb cb, void *data, exo_call_t **out)
{
    exo_call_info_t info = {
        .request_id = request_id,
        .transport = "agent",
        .peer = "agent",
        .source = "agent",
        .timeout_ms = timeout_ms,
        .identity = identity,
        .job = job,
    };
    lua_pushnil(vm->L); /* no params */
    return exo_call_start(vm, name, strlen(name), &info, cb, data, out);
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
    c->refs = 1; /* the owner; the deadline timer adds one once it exists */
    c->cb = cb;
    c->data = data;
    size_t id_len = strnlen(info->request_id, sizeof(c->request_id) - 1);
    memcpy(c->request_id, info->request_id, id_len); /* calloc left the terminator */
    memcpy(c->method, name, name_len < 90 ? name_len : 90);
    snprintf(c->transport, sizeof(c->transport), "%s", info->transport ? info->transport : "");
    snprintf(c->source, sizeof(c->source), "%s", info->source ? info->source : "");
    c->identity = info->identity;
    c->session = info->session;
    calls_in_flight_++;

    /* stack: params */
    if (vm->pool_n > 0) {
        vm->pool_n--;
        c->co = vm->pool[vm->pool_n];
        c->co_ref = vm->pool_ref[vm->pool_n];
    } else {
        c->co = lua_newthread(L);
        c->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
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
    push_auth(c->co, vm->rt->config, info->identity);
    if (info->session) {
        lua_pushinteger(c->co, (lua_Integer)info->session);
        lua_setfield(c->co, -2, "session");
        lua_pushinteger(c->co, (lua_Integer)info->session_calls);
        lua_setfield(c->co, -2, "session_calls");
    }
    if (info->api_version && info->api_version[0]) {
        lua_pushstring(c->co, info->api_version);
        lua_setfield(c->co, -2, "api_version");
    }
    if (info->job) {
        lua_pushstring(c->co, info->job);
        lua_setfield(c->co, -2, "job");
    }
    if (info->timeout_ms > 0) {
        c->deadline_ns = uv_hrtime() + (uint64_t)info->timeout_ms * 1000000u;
        c->deadline_loop_ms = now_ms + info->timeout_ms;
    }
    lua_sethook(c->co, call_hook, LUA_MASKCOUNT, EXO_HOOK_INSTRUCTIONS);
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
    call_arm_timer(call);
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
    if (call->state == CALL_WAITING || call->state == CALL_PREEMPTED)
        call_end(call, CALL_CANCELLED);
    call->cb = NULL;
}

void exo_call_release(exo_call_t *call)
{
    exo_lvm_t *vm = call->vm;
    if (call->co_ref != LUA_NOREF && call->state == CALL_ENDED && !call->failed && !call->killed &&
        lua_status(call->co) == LUA_OK && vm->pool_n < EXO_CORO_POOL) {
        lua_settop(call->co, 0);
        vm->pool[vm->pool_n] = call->co;
        vm->pool_ref[vm->pool_n] = call->co_ref;
        vm->pool_n++;
        call->co_ref = LUA_NOREF;
    }
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

int exo_call_outcome(exo_call_t *c, lua_State **co, const char **why)
{
    *co = NULL;
    if (c->state != CALL_ENDED || c->killed || c->failed || c->co_ref == LUA_NOREF) {
        *why = c->killed ? kill_reason(c->killed) : "failed (the agent's log says why)";
        return -1;
    }
    *co = c->co;
    *why = NULL;
    return lua_toboolean(c->co, -2) ? 1 : 0;
}

int exo_call_write_outcome(exo_call_t *c, exo_buf_t *out)
{
    char data[160];
    if (c->killed == KILL_DEADLINE) {
        snprintf(data, sizeof(data), "{\"request_id\":\"%s\"}", c->request_id);
        return write_error(out, -32004, "Timeout", data);
    }
    if (c->killed) {
        snprintf(data, sizeof(data), "{\"limit\":\"%s\",\"request_id\":\"%s\"}",
                 c->killed == KILL_MEMORY ? "memory" : "instructions", c->request_id);
        return write_error(out, -32007, "LimitExceeded", data);
    }
    if (c->failed || c->co_ref == LUA_NOREF) {
        snprintf(data, sizeof(data), "{\"request_id\":\"%s\"}", c->request_id);
        return write_error(out, -32603, "Internal error", data);
    }

    /* stack (co): ok, value */
    lua_State *co = c->co;
    int ok = lua_toboolean(co, -2);
    size_t mark = out->len;
    exo_json_err_t jerr;
    int rc = exo_buf_appends(out, ok ? "\"result\":" : "\"error\":");
    if (rc == 0 && (rc = exo_json_encode(co, -1, out, &jerr)) < 0)
        exo_error("method %s returned %s that is not JSON (request %s): %s", c->method,
                  ok ? "a result" : "an error", c->request_id, jerr.msg);
    if (rc == -EINVAL) {
        out->len = mark;
        return write_error(out, -32603, "Internal error", data);
    }
    if (rc < 0) out->len = mark;
    return rc;
}
