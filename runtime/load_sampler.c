/* The worker's load sampler; see load_sampler.h.
 *
 * A sample is system_load.current itself, run through the host (sandbox/host.lua's call) in a
 * call of its own, as the agent's internal identity: the same method file, the same
 * capability checks, deadline and instruction budget as a client's call, and no second
 * implementation of the formulas in C. An operator who replaces the method (allow_override)
 * replaces the samples too. The result is read from the call's coroutine as Lua values
 * (exo_call_outcome), never through JSON text. */
#include "load_sampler.h"

#include <errno.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "auth.h"
#include "json.h"
#include "log.h"
#include "lvm.h"
#include "monclient.h"
#include "server.h"

#define METHOD "system_load.current"
/* The timer is armed this long after the boundary, so that a loop time a little behind the
 * wall clock never fires it just before the boundary (the sample's epoch would then be the
 * second before). */
#define BOUNDARY_SLACK_MS 5

static struct {
    exo_server_t *srv;
    exo_load_ring_t ring;
    uv_timer_t timer;
    int timer_ready, running;
    exo_call_t *call; /* the sample in flight */
    exo_identity_t identity;
    unsigned long long seq;
    int64_t last_epoch;
    char last_error[256]; /* the error last logged; "" while sampling works */
    int send_failing;
    struct {
        exo_load_hook_fn fn;
        void *data;
    } hooks[EXO_LOAD_MAX_HOOKS];
    size_t n_hooks;
} ls_ = {.last_epoch = -1};

const exo_load_ring_t *exo_load_history(void)
{
    return &ls_.ring;
}

int exo_load_on_sample(exo_load_hook_fn fn, void *data)
{
    if (ls_.n_hooks == EXO_LOAD_MAX_HOOKS) return -ENOSPC;
    ls_.hooks[ls_.n_hooks].fn = fn;
    ls_.hooks[ls_.n_hooks].data = data;
    ls_.n_hooks++;
    return 0;
}

/* Logs a failure once per distinct message: a method that is missing or broken stays so
 * for a while, and one warning a minute would bury everything else in the log. */
static void sample_failed(const char *what, const char *detail)
{
    char msg[sizeof(ls_.last_error)];
    snprintf(msg, sizeof(msg), METHOD " %s%s", what, detail);
    if (strcmp(msg, ls_.last_error) == 0) return;
    snprintf(ls_.last_error, sizeof(ls_.last_error), "%s", msg);
    exo_warn("load sampler: %s; the sample is skipped (logged once until the error changes)", msg);
}

/* ---- reading the method's result ----------------------------------------------------------- */

/* The integer field key of the table at idx, in min..max. */
static int get_int(lua_State *co, int idx, const char *key, int64_t min, int64_t max, int64_t *out)
{
    lua_pushstring(co, key);
    lua_rawget(co, idx);
    int ok = lua_isinteger(co, -1);
    lua_Integer v = ok ? lua_tointeger(co, -1) : 0;
    lua_pop(co, 1);
    if (!ok || v < min || v > max) return -1;
    *out = (int64_t)v;
    return 0;
}

static int get_gpus(lua_State *co, int idx, exo_load_sample_t *s)
{
    lua_pushliteral(co, "gpuPctUsed");
    lua_rawget(co, idx);
    /* stack (co): ..., gpus */
    int rc = 0;
    if (lua_istable(co, -1)) {
        size_t n = lua_rawlen(co, -1);
        /* An empty list says what null says: no GPU. */
        if (n > EXO_LOAD_MAX_GPUS) rc = -1;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            lua_rawgeti(co, -1, (lua_Integer)i + 1);
            lua_Integer v = lua_isinteger(co, -1) ? lua_tointeger(co, -1) : -1;
            lua_pop(co, 1);
            if (v < 0 || v > 100) rc = -1;
            s->gpu[s->n_gpu++] = (uint8_t)v;
        }
    } else if (!lua_isnil(co, -1) &&
               !(lua_islightuserdata(co, -1) && lua_touserdata(co, -1) == NULL)) {
        rc = -1;
    }
    lua_pop(co, 1);
    return rc;
}

/* The sample in the result at the top of co. NULL, or what is wrong with the result. */
static const char *sample_from_result(lua_State *co, exo_load_sample_t *s)
{
    int64_t v[4];
    int idx = lua_gettop(co);
    memset(s, 0, sizeof(*s));
    if (!lua_istable(co, idx)) return "its result is not an object";
    if (get_int(co, idx, "epoch", 0, INT64_MAX, &v[0]) < 0 ||
        get_int(co, idx, "cpuPctUsed", 0, 100, &v[1]) < 0 ||
        get_int(co, idx, "memPctUsed", 0, 100, &v[2]) < 0 ||
        get_int(co, idx, "rootfsPctUsed", 0, 100, &v[3]) < 0)
        return "its result lacks an integer epoch, cpuPctUsed, memPctUsed or rootfsPctUsed in "
               "range";
    if (get_gpus(co, idx, s) < 0)
        return "its gpuPctUsed is not null or a list of at most 16 integers from 0 to 100";
    s->epoch = v[0];
    s->cpu = (uint8_t)v[1];
    s->mem = (uint8_t)v[2];
    s->rootfs = (uint8_t)v[3];
    if (exo_load_sample_check(s, (int64_t)time(NULL)) != NULL)
        return "its epoch is more than a day in the future";
    return NULL;
}

/* ---- one sample ------------------------------------------------------------------------------ */

static void on_sample_answer(void *data, int status, const exo_priv_msg_t *m)
{
    int ok = status == 0 && exo_priv_field_is(&m->f[0], "ok");
    if (!ok && !ls_.send_failing)
        exo_warn("load sampler: the monitor did not take a sample (%s); it is kept in this "
                 "worker only",
                 status < 0 ? strerror(-status) : "refused");
    ls_.send_failing = !ok;
}

static void keep(const exo_load_sample_t *s)
{
    if (ls_.last_error[0]) exo_info("load sampler: samples are taken again");
    ls_.last_error[0] = '\0';
    ls_.last_epoch = s->epoch;
    exo_load_ring_push(&ls_.ring, s);
    if (exo_mon_available()) {
        char text[EXO_LOAD_LINE_MAX];
        exo_priv_field_t f[5];
        exo_load_sample_fields(s, text, f);
        int rc = exo_mon_request(EXO_OP_LOAD_SAMPLE, f, 5, on_sample_answer, NULL);
        if (rc < 0) on_sample_answer(NULL, rc, NULL);
    }
    for (size_t i = 0; i < ls_.n_hooks; i++)
        ls_.hooks[i].fn(s, ls_.hooks[i].data);
}

static void finish(exo_call_t *call)
{
    lua_State *co;
    const char *why;
    exo_load_sample_t s;
    int rc = exo_call_outcome(call, &co, &why);
    if (rc < 0) {
        sample_failed("", why);
    } else if (rc == 0) {
        char msg[200];
        lua_pushliteral(co, "message");
        lua_rawget(co, -2);
        snprintf(msg, sizeof(msg), "%s", lua_isstring(co, -1) ? lua_tostring(co, -1) : "?");
        lua_pop(co, 1);
        sample_failed("failed: ", msg);
    } else if ((why = sample_from_result(co, &s)) != NULL) {
        sample_failed("gave a result that is not a load sample: ", why);
    } else {
        keep(&s);
    }
    exo_call_release(call);
}

static void on_call_done(exo_call_t *call, void *data)
{
    ls_.call = NULL;
    finish(call);
}

static void take_sample(void)
{
    if (ls_.call) {
        exo_debug("load sampler: the previous sample is still being taken; skipping this one");
        return;
    }
    exo_server_t *srv = ls_.srv;
    char rid[40];
    snprintf(rid, sizeof(rid), "load-%llu", ++ls_.seq);
    exo_call_t *call;
    int rc = exo_call_start_internal(srv->vm, METHOD, rid, srv->cfg->call_timeout_ms, &ls_.identity,
                                     NULL, on_call_done, NULL, &call);
    if (rc < 0)
        sample_failed("could not start: ", strerror(-rc));
    else if (rc == 1)
        finish(call);
    else
        ls_.call = call;
}

/* ---- the clock --------------------------------------------------------------------------------
 */

static void on_tick(uv_timer_t *t);

/* Arms the timer for the next wall-clock multiple of the interval, like cron. */
static void schedule(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    uint64_t interval = ls_.srv->cfg->load_interval_ms;
    uv_update_time(ls_.srv->loop);
    uv_timer_start(&ls_.timer, on_tick, interval - now % interval + BOUNDARY_SLACK_MS, 0);
}

static void on_tick(uv_timer_t *t)
{
    schedule();
    /* The first sample, taken at start, may have fallen in this very second. */
    if ((int64_t)time(NULL) == ls_.last_epoch) return;
    take_sample();
}

static void begin_sampling(void)
{
    if (!ls_.running) return;
    take_sample();
    schedule();
}

/* ---- the monitor's history, fetched at start --------------------------------------------------
 */

static void fetch_page(const char *after);

/* Adds the history lines of one LOAD_HISTORY answer. Returns -1 if one is malformed. */
static int add_page(const exo_priv_field_t *lines)
{
    size_t pos = 0;
    while (pos < lines->len) {
        const char *nl = memchr(lines->p + pos, '\n', lines->len - pos);
        size_t end = nl ? (size_t)(nl - lines->p) + 1 : lines->len;
        exo_load_sample_t s;
        if (nl == NULL || exo_load_line_parse(lines->p + pos, end - pos, &s) < 0) return -1;
        exo_load_ring_push(&ls_.ring, &s);
        pos = end;
    }
    return 0;
}

static void on_history_page(void *data, int status, const exo_priv_msg_t *m)
{
    if (!ls_.running) return;
    const char *why = NULL;
    int64_t before = ls_.ring.n ? exo_load_ring_at(&ls_.ring, ls_.ring.n - 1)->epoch : -1;
    if (status < 0)
        why = strerror(-status);
    else if (m->n != 3 || !exo_priv_field_is(&m->f[0], "ok"))
        why = "the monitor refused";
    else if (add_page(&m->f[2]) < 0)
        why = "the monitor sent a malformed line";
    if (why) {
        exo_warn("load sampler: cannot fetch the load history (%s); it starts with %zu samples",
                 why, ls_.ring.n);
        begin_sampling();
        return;
    }
    int64_t last = ls_.ring.n ? exo_load_ring_at(&ls_.ring, ls_.ring.n - 1)->epoch : -1;
    if (exo_priv_field_is(&m->f[1], "1") && last > before) {
        char after[24];
        snprintf(after, sizeof(after), "%lld", (long long)last);
        fetch_page(after);
        return;
    }
    exo_info("load sampler: %zu samples of history from the monitor", ls_.ring.n);
    begin_sampling();
}

static void fetch_page(const char *after)
{
    exo_priv_field_t f[1] = {{after, strlen(after)}};
    int rc = exo_mon_request(EXO_OP_LOAD_HISTORY, f, 1, on_history_page, NULL);
    if (rc < 0) on_history_page(NULL, rc, NULL);
}

/* ---- start and stop ----------------------------------------------------------------------------
 */

int exo_load_sampler_start(exo_server_t *srv)
{
    const exo_config_t *cfg = srv->cfg;
    int rc = exo_load_ring_init(
        &ls_.ring, exo_load_ring_capacity(cfg->load_history_ms, cfg->load_interval_ms));
    if (rc < 0) return rc;
    ls_.srv = srv;
    ls_.running = 1;
    ls_.last_epoch = -1;
    ls_.last_error[0] = '\0';
    exo_identity_internal(&ls_.identity);
    uv_timer_init(srv->loop, &ls_.timer);
    /* The timer alone must not keep a stopping worker's loop running. */
    uv_unref((uv_handle_t *)&ls_.timer);
    ls_.timer_ready = 1;
    if (exo_mon_available())
        fetch_page("");
    else
        begin_sampling();
    return 0;
}

void exo_load_sampler_stop(void)
{
    if (!ls_.running) return;
    ls_.running = 0;
    if (ls_.timer_ready && !uv_is_closing((uv_handle_t *)&ls_.timer))
        uv_close((uv_handle_t *)&ls_.timer, NULL);
    ls_.timer_ready = 0;
    if (ls_.call) {
        exo_call_cancel(ls_.call);
        exo_call_release(ls_.call);
        ls_.call = NULL;
    }
    exo_identity_clear(&ls_.identity);
    exo_load_ring_free(&ls_.ring);
}
