/* The method VM on a real libuv loop: calls that end at once, calls that wait on a binding,
 * cancellation, deadlines, limits, preemption and VM reference counting. Each test writes its
 * methods to a temporary directory and loads them through the embedded host. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "log.h"
#include "lvm.h"
#include "test.h"
#include <lauxlib.h>

static char dir_[64];
static exo_config_t cfg_;
static exo_runtime_info_t rt_;

static const char methods_[] =
    "local function m(name, handler, result)\n"
    "  return method { name = name, summary = name, since = '2026-12-01',\n"
    "    stability = 'experimental', permission = 'public', result = result or T.any(),\n"
    "    params = T.object { ms = T.integer():optional() },\n"
    "    examples = { { name = 'e', params = {}, result = 1 } }, handler = handler }\n"
    "end\n"
    "return {\n"
    "  m('t.now', function() return 1 end, T.integer()),\n"
    "  m('t.sleep', function(ctx, p) agent.sleep(p.ms or 10) return 2 end, T.integer()),\n"
    "  m('t.spin', function() local x = 0 for i = 1, 10000000 do x = x + 1 end return x end),\n"
    "  m('t.forever', function() while true do pcall(function() while true do end end) end end),\n"
    "  m('t.bomb', function() local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(64) .. i end end),\n"
    "  m('t.fail', function() error('boom') end),\n"
    "}\n";

static void setup(void)
{
    snprintf(dir_, sizeof(dir_), "/tmp/exo-test-lvm-XXXXXX");
    if (mkdtemp(dir_) == NULL) abort();
    char path[128];
    snprintf(path, sizeof(path), "%s/t.lua", dir_);
    FILE *f = fopen(path, "w");
    fputs(methods_, f);
    fclose(f);
    exo_config_defaults(&cfg_);
    const char *dirs[] = {dir_};
    exo_config_set_list(&cfg_.method_dirs, dirs, 1);
    exo_config_set_string(&cfg_.operator_dir, "");
    cfg_.call_instruction_limit = 50000000;
    cfg_.call_memory_limit = 8 * 1024 * 1024;
    rt_.loop = uv_default_loop();
    rt_.config = &cfg_;
    rt_.started_ms = uv_now(rt_.loop);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir_);
    if (system(cmd) != 0) abort();
    exo_calls_shutdown();
    uv_run(rt_.loop, UV_RUN_DEFAULT);
    exo_config_free(&cfg_);
}

typedef struct result_s {
    int done;
    exo_buf_t out;
} result_t;

static void on_done(exo_call_t *call, void *data)
{
    result_t *r = data;
    r->done++;
    exo_call_write_outcome(call, &r->out);
}

/* Starts name with no params; returns the exo_call_start status. */
static int start(exo_lvm_t *vm, const char *name, const char *params_lua, uint32_t timeout,
                 result_t *r, exo_call_t **call)
{
    lua_State *L = exo_lvm_state(vm);
    if (params_lua) {
        luaL_loadstring(L, params_lua);
        lua_call(L, 0, 1);
    } else {
        lua_pushnil(L);
    }
    exo_call_info_t info = {
        .request_id = "req-1", .transport = "unix", .peer = "test", .timeout_ms = timeout};
    int rc = exo_call_start(vm, name, strlen(name), &info, on_done, r, call);
    if (rc == 1) exo_call_write_outcome(*call, &r->out);
    return rc;
}

static int has(const result_t *r, const char *needle)
{
    return r->out.data && memmem(r->out.data, r->out.len, needle, strlen(needle)) != NULL;
}

static exo_lvm_t *new_vm(void)
{
    char err[512];
    exo_lvm_t *vm = NULL;
    if (exo_lvm_new(&rt_, &vm, err, sizeof(err)) < 0) fprintf(stderr, "exo_lvm_new: %s\n", err);
    return vm;
}

static void test_immediate_call(void)
{
    exo_lvm_t *vm = new_vm();
    REQUIRE(vm != NULL);
    result_t r = {0};
    exo_call_t *call;
    CHECK(start(vm, "t.now", NULL, 30000, &r, &call) == 1);
    CHECK(has(&r, "\"result\":1"));
    CHECK(exo_calls_in_flight() == 0);
    exo_call_release(call);
    exo_buf_free(&r.out);
    exo_lvm_release(vm);
}

static void test_waiting_call_resumes(void)
{
    exo_lvm_t *vm = new_vm();
    REQUIRE(vm != NULL);
    result_t r = {0};
    exo_call_t *call;
    /* Generous deadlines: valgrind runs this ten times slower. */
    CHECK(start(vm, "t.sleep", "return {ms = 20}", 30000, &r, &call) == 0);
    CHECK(exo_calls_in_flight() == 1);
    uv_run(rt_.loop, UV_RUN_DEFAULT);
    CHECK(r.done == 1);
    CHECK(has(&r, "\"result\":2"));
    exo_call_release(call);
    exo_buf_free(&r.out);
    exo_lvm_release(vm);
}

static void test_cancel_never_resumes(void)
{
    exo_lvm_t *vm = new_vm();
    REQUIRE(vm != NULL);
    result_t r = {0};
    exo_call_t *call;
    CHECK(start(vm, "t.sleep", "return {ms = 20}", 30000, &r, &call) == 0);
    exo_call_cancel(call);
    exo_call_release(call);
    /* The VM outlives the server's reference while the cancelled call's timer finishes. */
    exo_lvm_release(vm);
    uv_run(rt_.loop, UV_RUN_DEFAULT);
    CHECK(r.done == 0);
    CHECK(exo_calls_in_flight() == 0);
    exo_buf_free(&r.out);
}

static void test_deadline_while_waiting(void)
{
    exo_lvm_t *vm = new_vm();
    REQUIRE(vm != NULL);
    result_t r = {0};
    exo_call_t *call;
    CHECK(start(vm, "t.sleep", "return {ms = 5000}", 50, &r, &call) == 0);
    uint64_t t0 = uv_hrtime();
    uv_run(rt_.loop, UV_RUN_DEFAULT);
    CHECK(r.done == 1);
    CHECK(has(&r, "-32004"));
    CHECK(uv_hrtime() - t0 < 6000000000ull); /* the sleep's timer still ran; it was ignored */
    exo_call_release(call);
    exo_buf_free(&r.out);
    exo_lvm_release(vm);
}

static void test_limits_stop_runaway_code(void)
{
    exo_lvm_t *vm = new_vm();
    REQUIRE(vm != NULL);
    result_t a = {0}, b = {0}, c = {0};
    exo_call_t *ca, *cb, *cc;
    start(vm, "t.forever", NULL, 0, &a, &ca);
    start(vm, "t.bomb", NULL, 0, &b, &cb);
    start(vm, "t.fail", NULL, 0, &c, &cc);
    uv_run(rt_.loop, UV_RUN_DEFAULT);
    CHECK(has(&a, "\"limit\":\"instructions\""));
    CHECK(has(&b, "\"limit\":\"memory\""));
    CHECK(has(&c, "-32603"));
    exo_call_release(ca);
    exo_call_release(cb);
    exo_call_release(cc);
    exo_buf_free(&a.out);
    exo_buf_free(&b.out);
    exo_buf_free(&c.out);
    /* The VM still serves after every one of them. */
    result_t d = {0};
    exo_call_t *cd;
    CHECK(start(vm, "t.now", NULL, 30000, &d, &cd) == 1);
    CHECK(has(&d, "\"result\":1"));
    exo_call_release(cd);
    exo_buf_free(&d.out);
    exo_lvm_release(vm);
}

static void test_preemption_lets_others_finish_first(void)
{
    exo_lvm_t *vm = new_vm();
    REQUIRE(vm != NULL);
    result_t spin = {0}, quick = {0};
    exo_call_t *cs, *cq;
    /* The CPU-bound call is preempted at once, so the short call started after it ends
     * while it is still running. */
    CHECK(start(vm, "t.spin", NULL, 0, &spin, &cs) == 0);
    CHECK(start(vm, "t.sleep", "return {ms = 1}", 30000, &quick, &cq) == 0);
    while (quick.done == 0)
        uv_run(rt_.loop, UV_RUN_ONCE);
    CHECK(spin.done == 0);
    uv_run(rt_.loop, UV_RUN_DEFAULT);
    CHECK(has(&spin, "\"result\":10000000"));
    exo_call_release(cs);
    exo_call_release(cq);
    exo_buf_free(&spin.out);
    exo_buf_free(&quick.out);
    exo_lvm_release(vm);
}

/* exo_lvm_host_call: the runtime's way into the host outside any call (runtime/events.c). */
static void test_host_call(void)
{
    exo_lvm_t *vm = new_vm();
    REQUIRE(vm != NULL);
    lua_State *L = exo_lvm_state(vm);
    int top = lua_gettop(L);
    char err[256];
    /* No session listens to notify.mounts.*: no mounts.list is wanted. */
    CHECK(exo_lvm_host_call(vm, "mounts_wanted", 0, 1, err, sizeof(err)) == 0);
    CHECK(lua_isboolean(L, -1) && !lua_toboolean(L, -1));
    lua_pop(L, 1);
    /* An undeclared notification is the caller's bug: an error, and the stack as it was. */
    lua_pushliteral(L, "notify.nope");
    lua_newtable(L);
    CHECK(exo_lvm_host_call(vm, "emit", 2, 0, err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "no notification named notify.nope") != NULL);
    CHECK(lua_gettop(L) == top);
    /* A function the host does not have. */
    lua_pushinteger(L, 1);
    CHECK(exo_lvm_host_call(vm, "no_such_function", 1, 0, err, sizeof(err)) == -ENOENT);
    CHECK(strstr(err, "no no_such_function function") != NULL);
    CHECK(lua_gettop(L) == top);
    /* A session the host never heard of closes: nothing to do, no error. */
    lua_pushinteger(L, 42);
    CHECK(exo_lvm_host_call(vm, "session_closed", 1, 0, err, sizeof(err)) == 0);
    CHECK(lua_gettop(L) == top);
    exo_lvm_release(vm);
}

int main(void)
{
    exo_log_init(EXO_LOG_ERROR);
    setup();
    RUN(test_immediate_call);
    RUN(test_waiting_call_resumes);
    RUN(test_cancel_never_resumes);
    RUN(test_deadline_while_waiting);
    RUN(test_limits_stop_runaway_code);
    RUN(test_preemption_lets_others_finish_first);
    RUN(test_host_call);
    teardown();
    uv_loop_close(uv_default_loop());
    TEST_END();
}
