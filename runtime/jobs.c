/* The worker's side of jobs; see jobs.h.
 *
 * A job is run exactly as the load sampler runs system_load.current (load_sampler.c): a call
 * through the host with the agent's internal identity, started from the loop rather than from
 * a request, so no connection owns it. ctx.job tells the host to run the job's function (kept
 * in its job table) instead of a method. The call keeps the VM that started the job alive, so
 * a job outlives a reload; its record then reaches the new VM through the monitor. */
#include "jobs.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "auth.h"
#include "jobstore.h"
#include "log.h"
#include "lvm.h"
#include "monclient.h"
#include "server.h"

/* Jobs the runtime runs at once at most; the host's own bound (sandbox/jobs.lua) is lower,
 * and a reload may leave an old VM's jobs running next to the new VM's. */
#define MAX_JOBS 256
#define RUN_NAME "jobs.run"

typedef struct job_s {
    struct job_s *next;
    char id[EXO_JOB_ID_LEN + 1];
    exo_lvm_t *vm;    /* the VM whose host holds the job's function (retained) */
    exo_call_t *call; /* the call running it, once started */
    int pending;      /* to be started on the loop's next turn */
} job_t;

static struct {
    exo_server_t *srv;
    int running;
    job_t *jobs;
    size_t n;
    uv_timer_t timer; /* starts pending jobs and refetches, outside any call */
    int timer_ready;
    int refetch; /* a VM replaced by a reload put a record: the current VM should see it */
    exo_identity_t identity;
    unsigned fetch_gen; /* answers to an older fetch are ignored */
    int put_failing;
    int restoring; /* inside host.jobs_restore: a resumed job may start outside a call */
} jb_;

/* ---- the job table --------------------------------------------------------------------------- */

static job_t *find_job(const char *id)
{
    for (job_t *j = jb_.jobs; j; j = j->next)
        if (strcmp(j->id, id) == 0) return j;
    return NULL;
}

static void free_job(job_t *j)
{
    job_t **p = &jb_.jobs;
    while (*p && *p != j)
        p = &(*p)->next;
    if (*p) *p = j->next;
    jb_.n--;
    exo_lvm_release(j->vm);
    free(j);
}

static void on_timer(uv_timer_t *t);

static void arm_timer(void)
{
    if (jb_.timer_ready) uv_timer_start(&jb_.timer, on_timer, 0, 0);
}

/* ---- running a job -------------------------------------------------------------------------- */

/* host.job_ended(id, why) in the job's VM: records an end the job's own code did not (the host
 * ignores it for a job that already ended). */
static void tell_host_ended(job_t *j, const char *why)
{
    lua_State *L = exo_lvm_state(j->vm);
    char err[256];
    lua_pushstring(L, j->id);
    lua_pushstring(L, why);
    if (exo_lvm_host_call(j->vm, "job_ended", 2, 0, err, sizeof(err)) < 0)
        exo_error("jobs: host.job_ended for job %s failed: %s", j->id, err);
}

static void job_finished(job_t *j)
{
    lua_State *co;
    const char *why;
    char msg[256];
    int rc = exo_call_outcome(j->call, &co, &why);
    if (rc == 0) {
        lua_pushliteral(co, "message");
        lua_rawget(co, -2);
        snprintf(msg, sizeof(msg), "%s", lua_isstring(co, -1) ? lua_tostring(co, -1) : "failed");
        lua_pop(co, 1);
        why = msg;
    } else if (rc == 1) {
        why = "the job's call ended";
    }
    tell_host_ended(j, why);
    exo_call_release(j->call);
    j->call = NULL;
    free_job(j);
}

static void on_job_done(exo_call_t *call, void *data)
{
    (void)call;
    job_finished(data);
}

static void run_job(job_t *j)
{
    const exo_config_t *cfg = jb_.srv->cfg;
    char rid[48];
    snprintf(rid, sizeof(rid), "job-%s", j->id);
    exo_call_t *call;
    int rc = exo_call_start_internal(j->vm, RUN_NAME, rid, cfg->jobs_max_duration_ms, &jb_.identity,
                                     j->id, on_job_done, j, &call);
    if (rc < 0) {
        char why[128];
        snprintf(why, sizeof(why), "the job could not start: %s", strerror(-rc));
        tell_host_ended(j, why);
        free_job(j);
        return;
    }
    j->call = call;
    if (rc == 1) job_finished(j);
}

static void fetch_page(const char *after, size_t len, unsigned gen);

static void on_timer(uv_timer_t *t)
{
    (void)t;
    if (!jb_.running) return;
    /* run_job may end and free a job at once: the next one is taken first. */
    job_t *next;
    for (job_t *j = jb_.jobs; j; j = next) {
        next = j->next;
        if (j->pending) {
            j->pending = 0;
            run_job(j);
        }
    }
    if (jb_.refetch) {
        jb_.refetch = 0;
        exo_jobs_vm_changed();
    }
}

/* ---- exo.jobs -------------------------------------------------------------------------------- */

/* The job id at index idx, or a raised error. */
static const char *check_id(lua_State *L, int idx)
{
    size_t len;
    const char *id = luaL_checklstring(L, idx, &len);
    const char *why = exo_job_id_check(id, len);
    if (why) luaL_error(L, "exo.jobs: %s", why);
    return id;
}

/* new_id() -> 32 lower-case hex digits: 128 bits from RAND_bytes, unguessable. */
static int l_new_id(lua_State *L)
{
    unsigned char rnd[EXO_JOB_ID_LEN / 2];
    char hex[EXO_JOB_ID_LEN + 1];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) return luaL_error(L, "exo.jobs.new_id: no randomness");
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    lua_pushlstring(L, hex, EXO_JOB_ID_LEN);
    return 1;
}

/* start(id) -> true, or nil and why. */
static int l_start(lua_State *L)
{
    const char *id = check_id(L, 1);
    exo_call_t *call = exo_call_of(L);
    const char *why = NULL;
    if (!jb_.running)
        why = "jobs do not run in this process";
    else if (call == NULL && !jb_.restoring)
        why = "a job is started from inside a call";
    else if (jb_.n >= MAX_JOBS)
        why = "too many jobs are running";
    else if (find_job(id))
        why = "a job with this id runs already";
    job_t *j = why ? NULL : calloc(1, sizeof(*j));
    if (j == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, why ? why : "out of memory");
        return 2;
    }
    memcpy(j->id, id, EXO_JOB_ID_LEN);
    /* A job resumed by host.jobs_restore (sandbox/jobs.lua) belongs to the current VM. */
    j->vm = call ? exo_call_vm(call) : jb_.srv->vm;
    exo_lvm_retain(j->vm);
    j->pending = 1;
    j->next = jb_.jobs;
    jb_.jobs = j;
    jb_.n++;
    arm_timer();
    lua_pushboolean(L, 1);
    return 1;
}

/* cancel(id) -> true, or false when the runtime runs no such job. */
static int l_cancel(lua_State *L)
{
    job_t *j = find_job(check_id(L, 1));
    if (j == NULL || (j->call && exo_call_of(L) == j->call)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (j->call) {
        exo_call_cancel(j->call);
        exo_call_release(j->call);
        j->call = NULL;
    }
    free_job(j);
    lua_pushboolean(L, 1);
    return 1;
}

static void on_put_answer(void *data, int status, const exo_priv_msg_t *m)
{
    (void)data;
    int ok = status == 0 && m->n >= 1 && exo_priv_field_is(&m->f[0], "ok");
    if (!ok && !jb_.put_failing)
        exo_warn("jobs: the monitor did not keep a job record (%s); records are kept in this "
                 "worker only until it does",
                 status < 0 ? strerror(-status) : "refused");
    jb_.put_failing = !ok;
}

/* put(id, expiry, text) -> true, or nil and why. Everything the monitor checks is checked here
 * first: a request it refuses would end this worker. */
static int l_put(lua_State *L)
{
    const char *id = check_id(L, 1);
    lua_Integer expiry = luaL_checkinteger(L, 2);
    size_t len;
    const char *text = luaL_checklstring(L, 3, &len);
    const char *why = exo_job_blob_check(text, len);
    if (why == NULL && !exo_mon_available()) why = "no monitor keeps the records";
    if (why == NULL && expiry < 0) why = "a negative expiry";
    if (why) {
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    /* Never further ahead than the monitor allows ([jobs] keep from now). */
    int64_t max = (int64_t)time(NULL) + (int64_t)(jb_.srv ? jb_.srv->cfg->jobs_keep_ms / 1000 : 0);
    if (expiry > max) expiry = max;
    char num[24];
    int n = snprintf(num, sizeof(num), "%lld", (long long)expiry);
    exo_priv_field_t f[3] = {{id, EXO_JOB_ID_LEN}, {num, (size_t)n}, {text, len}};
    int rc = exo_mon_request(EXO_OP_JOB_PUT, f, 3, on_put_answer, NULL);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(-rc));
        return 2;
    }
    /* A VM that a reload replaced: the current one learns of the record from the monitor. */
    exo_call_t *call = exo_call_of(L);
    if (jb_.running && call && exo_call_vm(call) != jb_.srv->vm) {
        jb_.refetch = 1;
        arm_timer();
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int luaopen_exo_jobs(lua_State *L)
{
    static const luaL_Reg fns[] = {{"new_id", l_new_id},
                                   {"start", l_start},
                                   {"cancel", l_cancel},
                                   {"put", l_put},
                                   {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}

void exo_jobs_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_exo_jobs);
    lua_setfield(L, -2, "exo.jobs");
    lua_pop(L, 1);
}

/* ---- the monitor's records ------------------------------------------------------------------ */

/* host.jobs_restore(texts, live) with the lines of one page; the last id in *last. -1 when a
 * line is malformed. */
static int restore_page(const exo_priv_field_t *lines, char last[EXO_JOB_ID_LEN + 1])
{
    exo_lvm_t *vm = jb_.srv->vm;
    lua_State *L = exo_lvm_state(vm);
    lua_newtable(L);
    lua_Integer k = 1;
    size_t pos = 0;
    while (pos < lines->len) {
        const char *nl = memchr(lines->p + pos, '\n', lines->len - pos);
        int64_t expiry;
        const char *blob;
        size_t blob_len;
        if (nl == NULL || exo_job_line_parse(lines->p + pos, (size_t)(nl - lines->p) + 1 - pos,
                                             last, &expiry, &blob, &blob_len) < 0) {
            lua_pop(L, 1);
            return -1;
        }
        lua_pushlstring(L, blob, blob_len);
        lua_rawseti(L, -2, k++);
        pos = (size_t)(nl - lines->p) + 1;
    }
    /* stack: texts; then the ids this runtime still runs (their records stay running). */
    lua_newtable(L);
    for (job_t *j = jb_.jobs; j; j = j->next) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, j->id);
    }
    char err[256];
    jb_.restoring = 1;
    int rc = exo_lvm_host_call(vm, "jobs_restore", 2, 0, err, sizeof(err));
    jb_.restoring = 0;
    if (rc < 0) exo_warn("jobs: host.jobs_restore failed: %s", err);
    return 0;
}

static void on_page(void *data, int status, const exo_priv_msg_t *m)
{
    unsigned gen = (unsigned)(uintptr_t)data;
    if (!jb_.running || gen != jb_.fetch_gen) return;
    char last[EXO_JOB_ID_LEN + 1] = "";
    const char *why = NULL;
    if (status < 0)
        why = strerror(-status);
    else if (m->n != 3 || !exo_priv_field_is(&m->f[0], "ok"))
        why = "the monitor refused";
    else if (restore_page(&m->f[2], last) < 0)
        why = "the monitor sent a malformed line";
    if (why) {
        exo_warn("jobs: cannot fetch the job records (%s); jobs.get knows only this worker's", why);
        return;
    }
    if (exo_priv_field_is(&m->f[1], "1") && last[0]) fetch_page(last, EXO_JOB_ID_LEN, gen);
}

static void fetch_page(const char *after, size_t len, unsigned gen)
{
    exo_priv_field_t f[1] = {{after, len}};
    int rc = exo_mon_request(EXO_OP_JOB_LIST, f, 1, on_page, (void *)(uintptr_t)gen);
    if (rc < 0) on_page((void *)(uintptr_t)gen, rc, NULL);
}

void exo_jobs_vm_changed(void)
{
    if (!jb_.running || !exo_mon_available()) return;
    fetch_page("", 0, ++jb_.fetch_gen);
}

/* ---- start and stop -------------------------------------------------------------------------- */

int exo_jobs_start(exo_server_t *srv)
{
    if (jb_.running) return -EALREADY;
    jb_.srv = srv;
    jb_.running = 1;
    jb_.refetch = 0;
    jb_.put_failing = 0;
    exo_identity_internal(&jb_.identity);
    uv_timer_init(srv->loop, &jb_.timer);
    /* The timer alone must not keep a stopping worker's loop running. */
    uv_unref((uv_handle_t *)&jb_.timer);
    jb_.timer_ready = 1;
    exo_jobs_vm_changed();
    return 0;
}

void exo_jobs_stop(void)
{
    if (!jb_.running) return;
    jb_.running = 0;
    if (jb_.timer_ready && !uv_is_closing((uv_handle_t *)&jb_.timer))
        uv_close((uv_handle_t *)&jb_.timer, NULL);
    jb_.timer_ready = 0;
    while (jb_.jobs) {
        job_t *j = jb_.jobs;
        if (j->call) {
            exo_call_cancel(j->call);
            exo_call_release(j->call);
        }
        free_job(j);
    }
    exo_identity_clear(&jb_.identity);
}
