/* The Lua VM that runs methods, and the calls that run in it.
 *
 * One VM is a Lua state holding the host (the Lua files of sandbox/, compiled in) and the methods
 * loaded from the configured directories. Each JSON-RPC call runs host.call(name, params, ctx) in
 * its own coroutine. A binding that waits starts a libuv operation and yields; the operation's
 * callback resumes the coroutine. A reload builds a new VM; calls in flight finish on the VM
 * they started on, which is freed when its last call ends. */
#ifndef EXO_LVM_H
#define EXO_LVM_H

#include <lua.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "buf.h"
#include "config.h"

typedef struct exo_lvm_s exo_lvm_t;
typedef struct exo_call_s exo_call_t;

/* Process-wide facts the bindings report; owned by the caller of exo_lvm_new. */
typedef struct exo_runtime_info_s {
    uv_loop_t *loop;
    const exo_config_t *config;
    int dev;
    int64_t started;          /* unix seconds */
    uint64_t started_ms;      /* uv_now() at start */
    int (*cpu_percent)(void); /* CPU busy share over the latest sampling window, or -1 */
} exo_runtime_info_t;

/* Builds a VM and loads the methods. Returns 0, or a negative errno with a message in err. */
int exo_lvm_new(const exo_runtime_info_t *rt, exo_lvm_t **out, char *err, size_t errlen);
/* VMs are reference counted: the server holds one reference to the current VM and each call
 * holds one to the VM it runs on. */
void exo_lvm_retain(exo_lvm_t *vm);
void exo_lvm_release(exo_lvm_t *vm);
/* The OpenRPC document of this VM as API version `version` sees it (NULL or "": the current
 * one), built and encoded once per version, on first use. Returns NULL with a message in err
 * if the document cannot be built, as for a version the agent does not serve. */
#define EXO_OPENRPC_CACHE 40
const char *exo_lvm_openrpc(exo_lvm_t *vm, const char *version, size_t *len, char *err,
                            size_t errlen);
/* The VM's main state: JSON request bodies are decoded here. */
lua_State *exo_lvm_state(const exo_lvm_t *vm);
/* Checks method files (host.check_files) in a VM that loads nothing else, printing one line
 * per file that passes and each error of those that do not. With as_operator, the files are
 * also checked as operator methods against rt->config: capabilities it does not grant, and
 * names that clash with the methods of its method_dirs (unless allow_override). Returns how many
 * failed, or a negative errno if the checker itself could not run. */
int exo_lvm_check_files(const exo_runtime_info_t *rt, char **files, int n, int as_operator,
                        FILE *out);
/* Calls host[fn] (sandbox/host.lua) with the nargs values at the top of the VM's main stack,
 * outside any call: for the runtime's own events (host.emit, host.session_closed, ...), from a
 * libuv callback, never from inside a binding. Returns 0 with nres results left on the stack,
 * or a negative errno with a message in err and nothing left (the arguments are popped either
 * way). The host function runs without a call's budgets; it must bound its own work. */
int exo_lvm_host_call(exo_lvm_t *vm, const char *fn, int nargs, int nres, char *err, size_t errlen);

/* Runs host.session_closed(id), if the host defines it, after WebSocket session id ended.
 * Never called from inside a call; an error in it is logged. */
void exo_lvm_session_closed(exo_lvm_t *vm, int64_t id);
/* Number of method files loaded and skipped, for the start-up log. */
void exo_lvm_counts(const exo_lvm_t *vm, int *loaded, int *skipped);

struct exo_identity_s;

typedef struct exo_call_info_s {
    const char *request_id;
    const char *transport; /* "https", "http" or "unix" */
    const char *peer;
    const char *source; /* the client's address for logs (X-Forwarded-For from a trusted proxy) */
    uint32_t timeout_ms;
    /* Who calls (NULL: anonymous). Owned by the request or session, which outlives the call; a
     * login or logout in the call changes it for the calls after it. */
    struct exo_identity_s *identity;
    int64_t session; /* the WebSocket session's id (ctx.session), 0 over HTTP */
    /* The job this call runs (ctx.job; jobs.c), or NULL for a method call. Only the runtime
     * sets it: the host then runs the job's function instead of a method. */
    const char *job;
    /* The API version the client named (ctx.api_version; the host checks it), or NULL/"". */
    const char *api_version;
    uint64_t session_calls; /* calls the session started before this one (ctx.session_calls) */
} exo_call_info_t;

/* Called once when a call that did not finish inside exo_call_start ends. */
typedef void (*exo_call_cb)(exo_call_t *call, void *data);

/* Starts method `name` with the params value at the top of the VM's main stack (popped; push
 * nil when the request had none). Returns 1 if the call already ended (cb will not be
 * called), 0 if it is waiting (cb will be called once, unless it is cancelled first), or a
 * negative errno (nothing started, cb never called). In every non-negative case *out is a call
 * the caller must hand back with exo_call_release. */
int exo_call_start(exo_lvm_t *vm, const char *name, size_t name_len, const exo_call_info_t *info,
                   exo_call_cb cb, void *data, exo_call_t **out);
/* exo_call_start for the runtime's own calls (the load sampler, the mounts notifications, jobs):
 * `name` with no params, as the agent (transport, peer and source "agent") with `identity`,
 * running job `job` (NULL for a method). Same returns. */
int exo_call_start_internal(exo_lvm_t *vm, const char *name, const char *request_id,
                            uint32_t timeout_ms, struct exo_identity_s *identity, const char *job,
                            exo_call_cb cb, void *data, exo_call_t **out);
/* For an ended call: appends `"result":<json>` or `"error":{...}` to out. Returns 0 or a
 * negative errno (on which out is unchanged). */
int exo_call_write_outcome(exo_call_t *call, exo_buf_t *out);
/* For an ended call, read from C rather than encoded (the load sampler, load_sampler.c):
 * returns 1 when the method returned a result, which is then at the top of *co's stack; 0 when
 * it raised an agent error, whose {code, message, data} table is at the top of *co; -1 when
 * it was stopped by a limit or failed, with *why saying so (static text). The values stay
 * until exo_call_release. */
int exo_call_outcome(exo_call_t *call, lua_State **co, const char **why);
/* Stops a waiting call: its coroutine is never resumed and its callback is not called. */
void exo_call_cancel(exo_call_t *call);
/* Drops the caller's reference; the call is freed once no libuv operation refers to it. */
void exo_call_release(exo_call_t *call);
/* Calls that have started and not ended, across every VM (for draining on shutdown). */
int exo_calls_in_flight(void);

/* Used by bindings (l_core.c): the call running in coroutine L, or NULL outside a call. */
exo_call_t *exo_call_of(lua_State *L);
/* A binding that waits calls exo_call_wait before starting its operation and then yields
 * (return lua_yield(L, 0)). The operation's callback first asks exo_call_waiting: if the call
 * ended meanwhile (cancelled or timed out), it calls exo_call_abandon and cleans up only its
 * own resources, never touching the coroutine; otherwise it pushes its results on
 * exo_call_thread(call) and calls exo_call_resume. Waiting keeps the call alive. */
void exo_call_wait(exo_call_t *call);
int exo_call_waiting(const exo_call_t *call);
lua_State *exo_call_thread(const exo_call_t *call);
void exo_call_resume(exo_call_t *call, int nargs);
void exo_call_abandon(exo_call_t *call);
const exo_runtime_info_t *exo_lvm_runtime(lua_State *L);
/* The identity, source and transport the call was started with (for exo.auth). */
struct exo_identity_s *exo_call_identity(const exo_call_t *call);
const char *exo_call_source(const exo_call_t *call);
const char *exo_call_transport(const exo_call_t *call);
/* The VM the call runs on. */
exo_lvm_t *exo_call_vm(const exo_call_t *call);
/* The WebSocket session the call came from, or 0 over HTTP. */
int64_t exo_call_session(const exo_call_t *call);
/* Raises a Lua error unless the running call was granted `capability` (host code outside
 * any call is trusted). Privileged bindings call it before acting. */
void exo_call_require(lua_State *L, const char *capability);
/* core.set_capabilities: grants the running call the names in the table at index 1, once. */
int exo_call_set_capabilities(lua_State *L, exo_call_t *call);
/* Closes the run queue's handle (at shutdown, after the last call). */
void exo_calls_shutdown(void);

/* Kills the programs that methods started and that still run (at shutdown). */
void exo_core_shutdown(void);

/* Registers the module "exo.events" (events.c): the host's requests to the event sources. */
void exo_events_preload(lua_State *L);
/* Registers the module "exo.jobs" (jobs.c): running, cancelling and keeping jobs. */
void exo_jobs_preload(lua_State *L);
/* Registers the module "exo.load" (l_load.c): the worker's load history. */
void exo_load_preload(lua_State *L);
/* Pushes a load sample as system_load.current returns it (l_load.c): for exo.load's history
 * and for notify.system_load (events.c). */
struct exo_load_sample_s;
void exo_load_push_sample(lua_State *L, const struct exo_load_sample_s *s);
/* Registers the native modules "exo.core" (l_core.c) and "exo.json" (l_json.c). */
void exo_core_preload(lua_State *L);
int exo_json_open(lua_State *L);

#endif
