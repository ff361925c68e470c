/* The sources of the WebSocket notifications; see events.h.
 *
 * Everything here runs on the loop, outside any call's code: from the load sampler's hooks,
 * the mount watcher's rounds, a timer and the end of an internal call. The host functions it
 * calls (emit, mounts_wanted, mounts_update) run in the VM's main state and bound their own
 * work: one encode and one send per subscriber, one comparison per mount. */
#include "events.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "auth.h"
#include "json.h"
#include "load_sampler.h"
#include "log.h"
#include "lvm.h"
#include "mountwatch.h"
#include "server.h"

#define MOUNTS_METHOD "mounts.list"

static struct {
    exo_server_t *srv;
    int running;
    int hooked;       /* the load sampler's hook, which cannot be removed, is added once */
    uv_timer_t timer; /* exo.events.mounts_snapshot(): a list on the loop's next turn */
    int timer_ready;
    exo_call_t *call;   /* the mounts.list in flight */
    exo_lvm_t *call_vm; /* the VM it runs on: its result is only for that VM's host */
    int again;          /* the mount table changed while it ran */
    exo_identity_t identity;
    unsigned long long seq;
    char last_error[256]; /* the error last logged; "" while all is well */
} ev_;

/* Logs a failure once per distinct message: a broken method stays broken for a while, and a
 * warning at every sample or mount change would bury the log. */
static void failed(const char *what, const char *detail)
{
    char msg[sizeof(ev_.last_error)];
    /* Cut to the buffer on purpose: the message is for the log, and the comparison below only
     * needs to tell one error from the next. */
    size_t wl = strnlen(what, sizeof(msg) - 1);
    size_t dl = strnlen(detail, sizeof(msg) - 1 - wl);
    memcpy(msg, what, wl);
    memcpy(msg + wl, detail, dl);
    msg[wl + dl] = '\0';
    if (strcmp(msg, ev_.last_error) == 0) return;
    snprintf(ev_.last_error, sizeof(ev_.last_error), "%s", msg);
    exo_warn("notifications: %s (logged once until the error changes)", msg);
}

/* ---- notify.system_load ------------------------------------------------------------------ */

static void on_load_sample(const exo_load_sample_t *s, void *data)
{
    (void)data;
    if (!ev_.running) return;
    exo_lvm_t *vm = ev_.srv->vm;
    lua_State *L = exo_lvm_state(vm);
    char err[256];
    lua_pushliteral(L, "notify.system_load");
    exo_load_push_sample(L, s);
    if (exo_lvm_host_call(vm, "emit", 2, 0, err, sizeof(err)) < 0)
        failed("notify.system_load not sent: ", err);
}

/* ---- notify.mounts.* ------------------------------------------------------------------------ */

/* Whether the current VM's host wants a mounts.list (a session listens to notify.mounts.*). */
static int mounts_wanted(void)
{
    exo_lvm_t *vm = ev_.srv->vm;
    lua_State *L = exo_lvm_state(vm);
    char err[256];
    if (exo_lvm_host_call(vm, "mounts_wanted", 0, 1, err, sizeof(err)) < 0) {
        failed("cannot ask the host about notify.mounts.*: ", err);
        return 0;
    }
    int wanted = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return wanted;
}

static void list_mounts(void);

/* The mounts.list result (or failure) of call, to the host that wanted it. */
static void mounts_listed(exo_call_t *call)
{
    lua_State *co;
    const char *why;
    int rc = exo_call_outcome(call, &co, &why);
    exo_lvm_t *vm = ev_.srv->vm;
    if (ev_.call_vm != vm) {
        /* The methods were reloaded meanwhile: the new host has other subscribers and no
         * baseline, and this list is a value of the old VM. */
    } else if (rc < 0) {
        failed(MOUNTS_METHOD " failed: ", why);
    } else if (rc == 0) {
        lua_pushliteral(co, "message");
        lua_rawget(co, -2);
        failed(MOUNTS_METHOD " failed: ", lua_isstring(co, -1) ? lua_tostring(co, -1) : "?");
        lua_pop(co, 1);
    } else {
        char err[256];
        /* Both threads belong to the VM's one Lua state, so the result moves without a copy. */
        lua_xmove(co, exo_lvm_state(vm), 1);
        if (exo_lvm_host_call(vm, "mounts_update", 1, 0, err, sizeof(err)) < 0)
            failed("notify.mounts.* not sent: ", err);
        else
            ev_.last_error[0] = '\0';
    }
    exo_call_release(call);
    ev_.call_vm = NULL;
    if (ev_.again && ev_.running) {
        ev_.again = 0;
        if (mounts_wanted()) list_mounts();
    }
}

static void on_mounts_listed(exo_call_t *call, void *data)
{
    (void)data;
    ev_.call = NULL;
    mounts_listed(call);
}

/* Runs mounts.list as the agent's internal identity, or marks that one more is needed once
 * the one in flight ends. */
static void list_mounts(void)
{
    if (ev_.call || ev_.call_vm) {
        ev_.again = 1;
        return;
    }
    exo_server_t *srv = ev_.srv;
    char rid[40];
    snprintf(rid, sizeof(rid), "mounts-%llu", ++ev_.seq);
    exo_call_t *call;
    ev_.call_vm = srv->vm;
    int rc = exo_call_start_internal(srv->vm, MOUNTS_METHOD, rid, srv->cfg->call_timeout_ms,
                                     &ev_.identity, NULL, on_mounts_listed, NULL, &call);
    if (rc < 0) {
        ev_.call_vm = NULL;
        failed("cannot start " MOUNTS_METHOD ": ", strerror(-rc));
    } else if (rc == 1) {
        mounts_listed(call);
    } else {
        ev_.call = call;
    }
}

static void on_mounts_changed(void *data, uint64_t generation)
{
    (void)data;
    (void)generation;
    if (ev_.running && mounts_wanted()) list_mounts();
}

static void on_snapshot_timer(uv_timer_t *t)
{
    (void)t;
    if (ev_.running) list_mounts();
}

/* exo.events.mounts_snapshot(): the host wants a first list (a session just subscribed to
 * notify.mounts.*). Called from inside that call, where no other call may start, so the list
 * is taken on the loop's next turn. Returns true, or nil and why. */
static int l_mounts_snapshot(lua_State *L)
{
    if (!ev_.running || !ev_.timer_ready) {
        lua_pushnil(L);
        lua_pushliteral(L, "the notification sources are not running");
        return 2;
    }
    uv_timer_start(&ev_.timer, on_snapshot_timer, 0, 0);
    lua_pushboolean(L, 1);
    return 1;
}

static int luaopen_exo_events(lua_State *L)
{
    static const luaL_Reg fns[] = {{"mounts_snapshot", l_mounts_snapshot}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}

void exo_events_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_exo_events);
    lua_setfield(L, -2, "exo.events");
    lua_pop(L, 1);
}

/* ---- start and stop ------------------------------------------------------------------------ */

int exo_events_start(exo_server_t *srv)
{
    if (ev_.running) return -EALREADY;
    int rc = exo_mountwatch_subscribe(on_mounts_changed, NULL);
    if (rc < 0) return rc;
    if (!ev_.hooked) {
        rc = exo_load_on_sample(on_load_sample, NULL);
        if (rc < 0) {
            exo_mountwatch_unsubscribe(on_mounts_changed, NULL);
            return rc;
        }
        ev_.hooked = 1;
    }
    ev_.srv = srv;
    ev_.running = 1;
    ev_.again = 0;
    ev_.last_error[0] = '\0';
    exo_identity_internal(&ev_.identity);
    uv_timer_init(srv->loop, &ev_.timer);
    /* The timer alone must not keep a stopping worker's loop running. */
    uv_unref((uv_handle_t *)&ev_.timer);
    ev_.timer_ready = 1;
    return 0;
}

void exo_events_stop(void)
{
    if (!ev_.running) return;
    ev_.running = 0;
    exo_mountwatch_unsubscribe(on_mounts_changed, NULL);
    if (ev_.timer_ready && !uv_is_closing((uv_handle_t *)&ev_.timer))
        uv_close((uv_handle_t *)&ev_.timer, NULL);
    ev_.timer_ready = 0;
    if (ev_.call) {
        exo_call_cancel(ev_.call);
        exo_call_release(ev_.call);
        ev_.call = NULL;
    }
    ev_.call_vm = NULL;
    exo_identity_clear(&ev_.identity);
}
