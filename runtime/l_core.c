/* The "exo.core" module: the runtime's primitives for the host Lua. Functions that wait
 * (sleep, read_file, spawn, statfs) start a libuv operation and yield the call's coroutine;
 * the operation's callback resumes it. Expected failures return nil, err; misuse raises. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pkgop.h"
#include "log.h"
#include "lvm.h"
#include "mountwatch.h"
#include "ws.h"

/* Programs are looked up in this fixed list, never in the agent's own PATH. */
static const char *const exo_path[] = {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                                       "/usr/bin",        "/sbin",          "/bin"};
#define EXO_SPAWN_MAX_ARGS 256
#define EXO_SPAWN_DEFAULT_OUTPUT (1024 * 1024)
#define EXO_READ_DEFAULT_MAX (1024 * 1024)

static exo_call_t *check_call(lua_State *L)
{
    exo_call_t *c = exo_call_of(L);
    if (c == NULL) luaL_error(L, "this function waits and can only be used while handling a call");
    /* Checked before any operation starts: a yield refused later would leave the operation
     * running for a call that is not waiting for it. */
    if (!lua_isyieldable(L))
        luaL_error(L, "cannot wait here (inside a sort comparator, a gsub callback or a "
                      "metamethod called from C)");
    return c;
}

static int l_log(lua_State *L)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    int level = luaL_checkoption(L, 1, NULL, levels);
    size_t len;
    const char *msg = luaL_checklstring(L, 2, &len);
    exo_log((exo_log_level_t)level, "%.*s", (int)(len > 1500 ? 1500 : len), msg);
    return 0;
}

static int l_now_ms(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)(uv_hrtime() / 1000000u));
    return 1;
}

static int l_time(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)time(NULL));
    return 1;
}

static int l_hostname(lua_State *L)
{
    char name[256];
    size_t len = sizeof(name);
    if (uv_os_gethostname(name, &len) != 0) snprintf(name, sizeof(name), "localhost");
    lua_pushstring(L, name);
    return 1;
}

static int l_cpu_percent(lua_State *L)
{
    const exo_runtime_info_t *rt = exo_lvm_runtime(L);
    int pct = rt->cpu_percent ? rt->cpu_percent() : -1;
    if (pct < 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, pct);
    return 1;
}

static int l_info(lua_State *L)
{
    const exo_runtime_info_t *rt = exo_lvm_runtime(L);
    lua_createtable(L, 0, 4);
    lua_pushliteral(L, EXO_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, EXO_LUA_API_LEVEL);
    lua_setfield(L, -2, "lua_api_level");
    lua_pushinteger(L, rt->started);
    lua_setfield(L, -2, "started");
    lua_pushinteger(L, (lua_Integer)((uv_now(rt->loop) - rt->started_ms) / 1000u));
    lua_setfield(L, -2, "uptime");
    /* The package manager the monitor drives (pkgop.h): part of what the agent is. */
    if (rt->config) {
        lua_pushstring(L, exo_pkg_backend_name(exo_pkg_backend(rt->config)));
        lua_setfield(L, -2, "packages_backend");
    }
    return 1;
}

/* The mount table's generation (mountwatch.h): it moves whenever a mount is added, removed or
 * changed, so a view of the mounts made at generation g is current while it is still g. The
 * second value says whether the watch runs; when it does not, the generation never moves and
 * nothing may be cached on it. */
static int l_mount_generation(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)exo_mountwatch_generation());
    lua_pushboolean(L, exo_mountwatch_active());
    return 2;
}

/* Lists the entries of a directory, sorted, without "." and "..". It does not wait: it is
 * meant for loading methods, outside any call. Returns nil, err when it cannot read. */
static int l_list_dir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_createtable(L, n, 0);
    int k = 0;
    for (int i = 0; i < n; i++) {
        const char *d = names[i]->d_name;
        if (strcmp(d, ".") != 0 && strcmp(d, "..") != 0) {
            lua_pushstring(L, d);
            lua_rawseti(L, -2, ++k);
        }
        free(names[i]);
    }
    free(names);
    return 1;
}

/* ---- sleep ------------------------------------------------------------------------------ */

typedef struct sleep_op_s {
    uv_timer_t timer;
    exo_call_t *call;
} sleep_op_t;

static void on_sleep_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_sleep(uv_timer_t *t)
{
    sleep_op_t *op = t->data;
    exo_call_t *c = op->call;
    uv_close((uv_handle_t *)&op->timer, on_sleep_closed);
    if (!exo_call_waiting(c)) {
        exo_call_abandon(c);
        return;
    }
    lua_pushboolean(exo_call_thread(c), 1);
    exo_call_resume(c, 1);
}

static int l_sleep(lua_State *L)
{
    exo_call_t *c = check_call(L);
    lua_Integer ms = luaL_checkinteger(L, 1);
    luaL_argcheck(L, ms >= 0 && ms <= 24 * 3600 * 1000, 1, "must be 0 to 86400000 ms");
    sleep_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL) return luaL_error(L, "out of memory");
    op->call = c;
    uv_timer_init(exo_lvm_runtime(L)->loop, &op->timer);
    op->timer.data = op;
    exo_call_wait(c);
    /* The loop's clock was read before this call started running and counts whole
     * milliseconds: from a fresh reading, one more millisecond makes sure a sleep never
     * ends early by the caller's own clock. */
    uv_update_time(exo_lvm_runtime(L)->loop);
    uv_timer_start(&op->timer, on_sleep, ms > 0 ? (uint64_t)ms + 1 : 0, 0);
    /* A sleep whose call timed out or was abandoned must not hold up the exit: the server's
     * own handles keep the loop running while there is anything to wait for. */
    uv_unref((uv_handle_t *)&op->timer);
    return lua_yield(L, 0);
}

/* ---- read_file: open, read until EOF or the cap, close, all in the thread pool ---------- */

typedef struct read_op_s {
    uv_fs_t req;
    exo_call_t *call;
    uv_file fd;
    char *data;
    size_t len, max;
    int err;
} read_op_t;

static void read_finish(read_op_t *op)
{
    exo_call_t *c = op->call;
    if (!exo_call_waiting(c)) {
        exo_call_abandon(c);
    } else {
        lua_State *co = exo_call_thread(c);
        if (op->err) {
            lua_pushnil(co);
            lua_pushstring(co, uv_strerror(op->err));
            exo_call_resume(c, 2);
        } else {
            lua_pushlstring(co, op->data ? op->data : "", op->len);
            exo_call_resume(c, 1);
        }
    }
    free(op->data);
    free(op);
}

static void on_read_closed(uv_fs_t *req)
{
    read_op_t *op = req->data;
    uv_fs_req_cleanup(req);
    read_finish(op);
}

static void read_close(read_op_t *op)
{
    uv_fs_req_cleanup(&op->req);
    if (uv_fs_close(op->req.loop, &op->req, op->fd, on_read_closed) < 0) read_finish(op);
}

static void on_read(uv_fs_t *req);

static void read_more(read_op_t *op)
{
    /* One byte more than the cap tells a file that is too big from one that fits exactly. */
    size_t want = op->max + 1 - op->len;
    if (want > 65536) want = 65536;
    char *p = realloc(op->data, op->len + want);
    if (p == NULL) {
        op->err = UV_ENOMEM;
        read_close(op);
        return;
    }
    op->data = p;
    uv_buf_t buf = uv_buf_init(op->data + op->len, (unsigned)want);
    uv_fs_req_cleanup(&op->req);
    int rc = uv_fs_read(op->req.loop, &op->req, op->fd, &buf, 1, -1, on_read);
    if (rc < 0) {
        op->err = rc;
        read_close(op);
    }
}

static void on_read(uv_fs_t *req)
{
    read_op_t *op = req->data;
    if (req->result < 0) {
        op->err = (int)req->result;
        read_close(op);
        return;
    }
    if (req->result == 0) {
        read_close(op);
        return;
    }
    op->len += (size_t)req->result;
    if (op->len > op->max) {
        op->err = UV_EFBIG;
        read_close(op);
        return;
    }
    read_more(op);
}

static void on_open(uv_fs_t *req)
{
    read_op_t *op = req->data;
    if (req->result < 0) {
        op->err = (int)req->result;
        uv_fs_req_cleanup(req);
        read_finish(op);
        return;
    }
    op->fd = (uv_file)req->result;
    /* Methods read only /proc, /sys, udev's device database and Debian's reboot flag. The
     * check is on where the open actually led, so a magic link such as /proc/1/root cannot
     * carry a read out to the rest of the system. */
    char link[64], target[4096];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", op->fd);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n < 0 ||
        (target[n] = '\0', strncmp(target, "/proc/", 6) != 0 && strncmp(target, "/sys/", 5) != 0 &&
                               strncmp(target, "/run/udev/data/", 15) != 0 &&
                               strcmp(target, "/run/reboot-required") != 0)) {
        op->err = UV_EACCES;
        read_close(op);
        return;
    }
    read_more(op);
}

static int l_read_file(lua_State *L)
{
    exo_call_t *c = check_call(L);
    exo_call_require(L, "system.read");
    const char *path = luaL_checkstring(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, EXO_READ_DEFAULT_MAX);
    luaL_argcheck(L, max > 0 && max <= 64 * 1024 * 1024, 2, "must be 1 to 64 MiB");
    read_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL) return luaL_error(L, "out of memory");
    op->call = c;
    op->max = (size_t)max;
    op->req.data = op;
    int rc = uv_fs_open(exo_lvm_runtime(L)->loop, &op->req, path, O_RDONLY | O_CLOEXEC, 0, on_open);
    if (rc < 0) {
        free(op);
        lua_pushnil(L);
        lua_pushstring(L, uv_strerror(rc));
        return 2;
    }
    exo_call_wait(c);
    return lua_yield(L, 0);
}

/* ---- statfs ----------------------------------------------------------------------------- */

static void on_statfs(uv_fs_t *req)
{
    exo_call_t *c = req->data;
    if (!exo_call_waiting(c)) {
        exo_call_abandon(c);
    } else {
        lua_State *co = exo_call_thread(c);
        if (req->result < 0) {
            lua_pushnil(co);
            lua_pushstring(co, uv_strerror((int)req->result));
            exo_call_resume(c, 2);
        } else {
            const uv_statfs_t *s = req->ptr;
            lua_createtable(co, 0, 7);
            lua_pushinteger(co, (lua_Integer)s->f_bsize);
            lua_setfield(co, -2, "bsize");
            lua_pushinteger(co, (lua_Integer)s->f_bsize);
            lua_setfield(co, -2, "frsize");
            lua_pushinteger(co, (lua_Integer)s->f_blocks);
            lua_setfield(co, -2, "blocks");
            lua_pushinteger(co, (lua_Integer)s->f_bfree);
            lua_setfield(co, -2, "bfree");
            lua_pushinteger(co, (lua_Integer)s->f_bavail);
            lua_setfield(co, -2, "bavail");
            lua_pushinteger(co, (lua_Integer)s->f_files);
            lua_setfield(co, -2, "files");
            lua_pushinteger(co, (lua_Integer)s->f_ffree);
            lua_setfield(co, -2, "ffree");
            exo_call_resume(c, 1);
        }
    }
    uv_fs_req_cleanup(req);
    free(req);
}

static int l_statfs(lua_State *L)
{
    exo_call_t *c = check_call(L);
    exo_call_require(L, "system.read");
    const char *path = luaL_checkstring(L, 1);
    uv_fs_t *req = calloc(1, sizeof(*req));
    if (req == NULL) return luaL_error(L, "out of memory");
    req->data = c;
    int rc = uv_fs_statfs(exo_lvm_runtime(L)->loop, req, path, on_statfs);
    if (rc < 0) {
        free(req);
        lua_pushnil(L);
        lua_pushstring(L, uv_strerror(rc));
        return 2;
    }
    exo_call_wait(c);
    return lua_yield(L, 0);
}

/* ---- spawn: an argument vector, never a shell; output capped; a timeout kills ----------- */

typedef struct spawn_op_s {
    struct spawn_op_s *prev, *next; /* every child still running, for shutdown */
    uv_process_t proc;
    uv_pipe_t out, err, in;
    uv_timer_t timer;
    uv_write_t wreq;
    exo_call_t *call;
    char *stdin_data;
    size_t stdin_len;
    char *bufs[2];
    size_t lens[2];
    size_t max_output;
    int open_handles;
    int exited, timed_out, truncated;
    int64_t exit_status;
    int term_signal;
} spawn_op_t;

static spawn_op_t *children_;

static void child_unlink(spawn_op_t *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else if (children_ == op)
        children_ = op->next;
    if (op->next) op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

void exo_core_shutdown(void)
{
    /* Children must not outlive the agent, nor keep its loop running past the drain. */
    for (spawn_op_t *op = children_; op; op = op->next)
        if (!op->exited) uv_process_kill(&op->proc, SIGKILL);
}

static void spawn_finish(spawn_op_t *op)
{
    exo_call_t *c = op->call;
    if (c == NULL) {
        /* uv_spawn failed: nothing waits for this operation. */
    } else if (!exo_call_waiting(c)) {
        exo_call_abandon(c);
    } else {
        lua_State *co = exo_call_thread(c);
        lua_createtable(co, 0, 6);
        if (op->term_signal) {
            lua_pushinteger(co, op->term_signal);
            lua_setfield(co, -2, "signal");
        } else {
            lua_pushinteger(co, op->exit_status);
            lua_setfield(co, -2, "exit");
        }
        lua_pushlstring(co, op->bufs[0] ? op->bufs[0] : "", op->lens[0]);
        lua_setfield(co, -2, "stdout");
        lua_pushlstring(co, op->bufs[1] ? op->bufs[1] : "", op->lens[1]);
        lua_setfield(co, -2, "stderr");
        lua_pushboolean(co, op->timed_out);
        lua_setfield(co, -2, "timed_out");
        lua_pushboolean(co, op->truncated);
        lua_setfield(co, -2, "truncated");
        exo_call_resume(c, 1);
    }
    free(op->bufs[0]);
    free(op->bufs[1]);
    free(op->stdin_data);
    free(op);
}

static void on_spawn_handle_closed(uv_handle_t *h)
{
    spawn_op_t *op = h->data;
    if (--op->open_handles == 0) spawn_finish(op);
}

static void spawn_close(spawn_op_t *op, uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, on_spawn_handle_closed);
}

static void on_spawn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[65536];
    buf->base = scratch;
    buf->len = sizeof(scratch);
}

static void on_spawn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    spawn_op_t *op = s->data;
    int i = (s == (uv_stream_t *)&op->out) ? 0 : 1;
    if (n < 0) {
        spawn_close(op, (uv_handle_t *)s);
        return;
    }
    /* Past the cap, output is read and dropped so the child never blocks on a full pipe. */
    size_t room = op->max_output > op->lens[i] ? op->max_output - op->lens[i] : 0;
    size_t take = (size_t)n < room ? (size_t)n : room;
    if (take < (size_t)n) op->truncated = 1;
    if (take > 0) {
        char *p = realloc(op->bufs[i], op->lens[i] + take);
        if (p == NULL) {
            op->truncated = 1;
            return;
        }
        memcpy(p + op->lens[i], buf->base, take);
        op->bufs[i] = p;
        op->lens[i] += take;
    }
}

static void on_spawn_exit(uv_process_t *p, int64_t status, int sig)
{
    spawn_op_t *op = p->data;
    op->exited = 1;
    child_unlink(op);
    op->exit_status = status;
    op->term_signal = sig;
    uv_timer_stop(&op->timer);
    spawn_close(op, (uv_handle_t *)&op->timer);
    spawn_close(op, (uv_handle_t *)p);
}

static void on_spawn_timeout(uv_timer_t *t)
{
    spawn_op_t *op = t->data;
    op->timed_out = 1;
    uv_process_kill(&op->proc, SIGKILL);
}

static void on_spawn_written(uv_write_t *w, int status)
{
    spawn_op_t *op = w->data;
    spawn_close(op, (uv_handle_t *)&op->in);
}

static int resolve_program(const char *name, char *out, size_t outlen)
{
    if (strchr(name, '/')) {
        if (access(name, X_OK) != 0) return -errno;
        snprintf(out, outlen, "%s", name);
        return 0;
    }
    for (size_t i = 0; i < sizeof(exo_path) / sizeof(exo_path[0]); i++) {
        snprintf(out, outlen, "%s/%s", exo_path[i], name);
        if (access(out, X_OK) == 0) return 0;
    }
    return -ENOENT;
}

static int l_spawn(lua_State *L)
{
    exo_call_t *c = check_call(L);
    exo_call_require(L, "process.run");
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer argc = luaL_len(L, 1);
    luaL_argcheck(L, argc >= 1 && argc < EXO_SPAWN_MAX_ARGS, 1, "needs 1 to 255 strings");
    const char *argv[EXO_SPAWN_MAX_ARGS + 1];
    for (lua_Integer i = 1; i <= argc; i++) {
        lua_rawgeti(L, 1, i);
        argv[i - 1] = lua_tostring(L, -1);
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_argerror(L, 1, "every argument must be a string");
        lua_pop(L, 1); /* the string stays alive: the table holds it */
    }
    argv[argc] = NULL;
    lua_Integer timeout = 10000, max_output = EXO_SPAWN_DEFAULT_OUTPUT;
    size_t stdin_len = 0;
    const char *stdin_data = NULL;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "timeout_ms");
        timeout = luaL_optinteger(L, -1, timeout);
        lua_getfield(L, 2, "max_output");
        max_output = luaL_optinteger(L, -1, max_output);
        lua_getfield(L, 2, "stdin");
        stdin_data = luaL_optlstring(L, -1, NULL, &stdin_len);
        lua_pop(L, 3);
    }
    luaL_argcheck(L, timeout > 0 && timeout <= 3600000, 2, "timeout_ms must be 1 to 3600000");
    luaL_argcheck(L, max_output > 0 && max_output <= 64 * 1024 * 1024, 2,
                  "max_output must be 1 to 64 MiB");

    char program[4096];
    int rc = resolve_program(argv[0], program, sizeof(program));
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "not found: %s", argv[0]);
        return 2;
    }
    spawn_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL) return luaL_error(L, "out of memory");
    uv_loop_t *loop = exo_lvm_runtime(L)->loop;
    op->call = c;
    op->max_output = (size_t)max_output;
    if (stdin_data && stdin_len > 0) {
        op->stdin_data = malloc(stdin_len);
        if (op->stdin_data == NULL) {
            free(op);
            return luaL_error(L, "out of memory");
        }
        memcpy(op->stdin_data, stdin_data, stdin_len);
        op->stdin_len = stdin_len;
    }
    uv_pipe_init(loop, &op->out, 0);
    uv_pipe_init(loop, &op->err, 0);
    uv_pipe_init(loop, &op->in, 0);
    uv_timer_init(loop, &op->timer);
    op->out.data = op->err.data = op->in.data = op->timer.data = op->proc.data = op;
    op->wreq.data = op;

    char *env[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C",
                   NULL};
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&op->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&op->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&op->err;
    uv_process_options_t opts = {0};
    opts.file = program;
    opts.args = (char **)(uintptr_t)argv;
    opts.env = env;
    opts.cwd = "/";
    opts.stdio_count = 3;
    opts.stdio = stdio;
    opts.exit_cb = on_spawn_exit;
    rc = uv_spawn(loop, &op->proc, &opts);
    if (rc < 0) {
        /* The handles were initialised, so they are closed; with no call attached, the
         * last close frees op without touching any coroutine. */
        op->call = NULL;
        op->open_handles = 4;
        uv_close((uv_handle_t *)&op->out, on_spawn_handle_closed);
        uv_close((uv_handle_t *)&op->err, on_spawn_handle_closed);
        uv_close((uv_handle_t *)&op->in, on_spawn_handle_closed);
        uv_close((uv_handle_t *)&op->timer, on_spawn_handle_closed);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot run %s: %s", argv[0], uv_strerror(rc));
        return 2;
    }
    op->open_handles = 5;
    op->next = children_;
    if (children_) children_->prev = op;
    children_ = op;
    uv_read_start((uv_stream_t *)&op->out, on_spawn_alloc, on_spawn_read);
    uv_read_start((uv_stream_t *)&op->err, on_spawn_alloc, on_spawn_read);
    if (op->stdin_len > 0) {
        uv_buf_t b = uv_buf_init(op->stdin_data, (unsigned)op->stdin_len);
        if (uv_write(&op->wreq, (uv_stream_t *)&op->in, &b, 1, on_spawn_written) < 0)
            spawn_close(op, (uv_handle_t *)&op->in);
    } else {
        spawn_close(op, (uv_handle_t *)&op->in);
    }
    uv_timer_start(&op->timer, on_spawn_timeout, (uint64_t)timeout, 0);
    exo_call_wait(c);
    return lua_yield(L, 0);
}

/* Grants the running call its method's capabilities; the host calls it once per call before
 * the handler runs. Method code cannot reach it: exo.core is not in the sandbox. */
static int l_set_capabilities(lua_State *L)
{
    exo_call_t *c = exo_call_of(L);
    if (c == NULL) return luaL_error(L, "set_capabilities is only for a running call");
    return exo_call_set_capabilities(L, c);
}

/* session_send(id, text) -> true, or false when the session is gone or closing (also when
 * this send would leave more than [websocket] max_queued bytes unsent: the session is then
 * closed with 1008). Frames leave in the order of the calls. Never raises for those. */
static int l_session_send(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    lua_pushboolean(L, exo_ws_send((int64_t)id, text, len));
    return 1;
}

/* session_set_api_version(id, version) -> true, or false when the session is gone. Only the
 * host calls it (rpc.hello, after checking the version); method code never sees exo.core. */
static int l_session_set_api_version(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    size_t len;
    const char *v = luaL_checklstring(L, 2, &len);
    lua_pushboolean(L, exo_ws_set_api_version((int64_t)id, v, len));
    return 1;
}

/* session_close(id, code, reason) -> true, or false when the session is gone or already
 * closing. code is 1000 or 3000-4999; reason at most 123 bytes. */
static int l_session_close(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    lua_Integer code = luaL_checkinteger(L, 2);
    size_t len;
    const char *reason = luaL_optlstring(L, 3, "", &len);
    luaL_argcheck(L, code == 1000 || (code >= 3000 && code <= 4999), 2,
                  "a close code is 1000 or from 3000 to 4999");
    luaL_argcheck(L, len <= 123, 3, "a close reason is at most 123 bytes");
    lua_pushboolean(L, exo_ws_close((int64_t)id, (uint16_t)code, reason, len));
    return 1;
}

/* call_session() -> the running call's WebSocket session id, or nil (HTTP, outside a call). */
static int l_call_session(lua_State *L)
{
    exo_call_t *c = exo_call_of(L);
    int64_t id = c ? exo_call_session(c) : 0;
    if (id == 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, (lua_Integer)id);
    return 1;
}

static int luaopen_exo_core(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"log", l_log},
        {"now_ms", l_now_ms},
        {"time", l_time},
        {"sleep", l_sleep},
        {"read_file", l_read_file},
        {"statfs", l_statfs},
        {"spawn", l_spawn},
        {"cpu_percent", l_cpu_percent},
        {"hostname", l_hostname},
        {"info", l_info},
        {"mount_generation", l_mount_generation},
        {"list_dir", l_list_dir},
        {"set_capabilities", l_set_capabilities},
        {"session_send", l_session_send},
        {"session_close", l_session_close},
        {"session_set_api_version", l_session_set_api_version},
        {"call_session", l_call_session},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}

void exo_core_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_exo_core);
    lua_setfield(L, -2, "exo.core");
    lua_pushcfunction(L, exo_json_open);
    lua_setfield(L, -2, "exo.json");
    lua_pop(L, 1);
}
