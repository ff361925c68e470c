/* The package operations' work (pkgop.h): their files in state_dir/packages, which the monitor
 * creates, reads for polls and prunes; and the waiter, in the child the monitor forks per
 * operation. The waiter starts the tool and waits for it, so that the monitor's poll() loop
 * never does; it alone knows the tool's pid, kills the tool's process group at the deadline,
 * and writes the exit line that tells a poll the operation has ended. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "log.h"
#include "pkgop.h"
#include "statefile.h"

#define TOOL_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Writes a line to the log (the tool's stdout), for what went wrong before the tool ran; with
 * strerror(err) unless err is 0. */
static void log_line(int fd, const char *what, int err)
{
    char line[512];
    int n =
        err ? snprintf(line, sizeof(line), "exosphere-guest-agent: %s: %s\n", what, strerror(err))
            : snprintf(line, sizeof(line), "exosphere-guest-agent: %s\n", what);
    if (n > 0 && write(fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1) < 0)
        return;
}

/* In the tool's process: its own process group, the fixed environment and descriptors, exec. */
static void exec_tool(const exo_pkg_run_t *r) __attribute__((noreturn));
static void exec_tool(const exo_pkg_run_t *r)
{
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    /* Everything lands on 0..3 from descriptors above 3 or on their own slot; dup2 clears
     * O_CLOEXEC on the copies, and every other descriptor is close-on-exec or closed below. */
    int log_fd = fcntl(r->log_fd, F_DUPFD_CLOEXEC, 10);
    int status_fd = r->status_fd >= 0 ? fcntl(r->status_fd, F_DUPFD_CLOEXEC, 10) : -1;
    if (devnull < 0 || log_fd < 0 || (r->status_fd >= 0 && status_fd < 0) || dup2(devnull, 0) < 0 ||
        dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) {
        log_line(r->log_fd, "cannot set up the tool's descriptors", errno);
        _exit(127);
    }
    if (status_fd >= 0) {
        if (dup2(status_fd, 3) < 0) _exit(127);
    } else {
        close(3);
    }
    /* PackageKit: this process is the client, with the same descriptors. */
    if (r->cmd->packagekit) _exit(exo_pk_run(r->cmd, 1, status_fd >= 0 ? 3 : -1));
    char *const envp[] = {"PATH=" TOOL_PATH, "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive",
                          NULL};
    /* execve takes char *const[]; the strings are never written. */
    union {
        const char *const *c;
        char *const *v;
    } argv = {.c = r->cmd->argv};
    execve(r->cmd->path, argv.v, envp);
    char what[96];
    snprintf(what, sizeof(what), "cannot run %s", r->cmd->path);
    log_line(1, what, errno);
    _exit(127);
}

/* Waits for pid until deadline (monotonic ms). Returns 1 with *status set when it ended, 0 at
 * the deadline. SIGCHLD is blocked (the monitor blocks it for its signalfd), so it is taken
 * with sigtimedwait. */
static int wait_until(pid_t pid, uint64_t deadline, int *status)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    for (;;) {
        pid_t w = waitpid(pid, status, WNOHANG);
        if (w == pid) return 1;
        if (w < 0 && errno != EINTR) {
            *status = 0;
            return 1;
        }
        uint64_t now = now_ms();
        if (now >= deadline) return 0;
        uint64_t left = deadline - now;
        /* At most a minute per wait: a SIGCHLD lost to a race is then only a short delay. */
        if (left > 60000) left = 60000;
        struct timespec ts = {.tv_sec = (time_t)(left / 1000),
                              .tv_nsec = (long)(left % 1000) * 1000000};
        sigtimedwait(&chld, NULL, &ts);
    }
}

/* ---- leaving the agent's control group ------------------------------------------------- */

#define SCOPE_WAIT_MS 10000

int exo_pkg_scope_wanted(exo_pkg_action_t a)
{
    return exo_pkg_action_changes(a) && access("/run/systemd/system", F_OK) == 0;
}

/* 1 when /proc/self/cgroup names unit. */
static int in_unit(const char *unit)
{
    char buf[4096];
    int fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    return strstr(buf, unit) != NULL;
}

/* StartTransientUnit(unit, "fail", properties, no auxiliary units): a scope holding this
 * process. Returns an sd-bus error code (negative) or 0, with a message in err. */
static int start_scope(const char *unit, const char *desc, char *err, size_t errlen)
{
    sd_bus *bus = NULL;
    sd_bus_message *m = NULL, *reply = NULL;
    sd_bus_error e = SD_BUS_ERROR_NULL;
    const char *step = "connect to systemd (/run/systemd/private)";
    int r = sd_bus_new(&bus);
    if (r >= 0) r = sd_bus_set_address(bus, "unix:path=/run/systemd/private");
    if (r >= 0) r = sd_bus_start(bus);
    if (r >= 0) {
        step = "build the StartTransientUnit call";
        r = sd_bus_message_new_method_call(
            bus, &m, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager", "StartTransientUnit");
    }
    if (r >= 0) r = sd_bus_message_append(m, "ss", unit, "fail");
    if (r >= 0) r = sd_bus_message_open_container(m, 'a', "(sv)");
    if (r >= 0) r = sd_bus_message_append(m, "(sv)", "Description", "s", desc);
    if (r >= 0) r = sd_bus_message_append(m, "(sv)", "Slice", "s", "system.slice");
    if (r >= 0) r = sd_bus_message_append(m, "(sv)", "PIDs", "au", 1, (uint32_t)getpid());
    if (r >= 0) r = sd_bus_message_append(m, "(sv)", "CollectMode", "s", "inactive-or-failed");
    if (r >= 0) r = sd_bus_message_close_container(m);
    if (r >= 0) r = sd_bus_message_append(m, "a(sa(sv))", 0);
    if (r >= 0) {
        step = "StartTransientUnit";
        r = sd_bus_call(bus, m, (uint64_t)SCOPE_WAIT_MS * 1000, &e, &reply);
    }
    if (r < 0)
        snprintf(err, errlen, "%s: %s", step,
                 sd_bus_error_is_set(&e) && e.message ? e.message : strerror(-r));
    sd_bus_error_free(&e);
    sd_bus_message_unref(reply);
    sd_bus_message_unref(m);
    sd_bus_flush_close_unref(bus);
    return r < 0 ? r : 0;
}

int exo_pkg_enter_scope(const char *id, const char *action, char *err, size_t errlen)
{
    char unit[96], desc[160];
    snprintf(unit, sizeof(unit), "exosphere-guest-agent-pkg-%.32s.scope", id);
    snprintf(desc, sizeof(desc), "Exosphere Guest Agent: package %s (operation %.32s)", action, id);
    if (start_scope(unit, desc, err, errlen) < 0) return -1;
    /* The unit's start job moves the process; it is queued, so wait for it to have run. */
    uint64_t until = now_ms() + SCOPE_WAIT_MS;
    while (!in_unit(unit)) {
        if (now_ms() >= until) {
            snprintf(err, errlen, "systemd did not move the process into %s in time", unit);
            return -1;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* ---- the waiter -------------------------------------------------------------------------- */

/* Writes the exit line; then lets go of the files (and so of the run lock: a poll that finds
 * the lock free finds the line). Never returns. */
static void waiter_end(const exo_pkg_run_t *r, const char *line) __attribute__((noreturn));
static void waiter_end(const exo_pkg_run_t *r, const char *line)
{
    int rc = exo_pkg_write_exit(r->dir, line);
    if (rc < 0) exo_error("packages: cannot write %s/exit: %s", r->dir, strerror(-rc));
    close(r->log_fd);
    if (r->status_fd >= 0) close(r->status_fd);
    _exit(rc < 0 ? 1 : 0);
}

void exo_pkgop_waiter(const exo_pkg_run_t *r)
{
    char line[EXO_PKG_EXIT_MAX];
    if (r->scope) {
        char err[384], what[448];
        if (exo_pkg_enter_scope(r->id, r->action, err, sizeof(err)) < 0) {
            snprintf(what, sizeof(what), "cannot leave the agent's control group (%s)", err);
            log_line(r->log_fd, what, 0);
            waiter_end(r, "exit 127");
        }
    }
    uint64_t deadline = now_ms() + r->timeout_ms;
    pid_t pid = fork();
    if (pid == 0) exec_tool(r);
    if (pid < 0) {
        log_line(r->log_fd, "cannot start the tool", errno);
        snprintf(line, sizeof(line), "exit 127");
    } else {
        setpgid(pid, pid); /* also here: either call may come first */
        int status = 0;
        if (!wait_until(pid, deadline, &status)) {
            /* The whole group: apt-get's dpkg and the maintainer scripts it runs. */
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            snprintf(line, sizeof(line), "timeout");
        } else if (WIFSIGNALED(status)) {
            snprintf(line, sizeof(line), "signal %d", WTERMSIG(status));
        } else {
            snprintf(line, sizeof(line), "exit %d", WIFEXITED(status) ? WEXITSTATUS(status) : 255);
        }
    }
    waiter_end(r, line);
}

/* ---- the operations' files ------------------------------------------------------------ */

#define FILE_FLAGS (O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_NOFOLLOW | O_CLOEXEC)
#define READ_FLAGS (O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
#define SCAN_MAX 1024 /* directories looked at per prune */

int exo_pkg_dir_ready(const char *pkg_dir, const char **err)
{
    struct stat st;
    if (mkdir(pkg_dir, 0700) < 0 && errno != EEXIST) {
        *err = strerror(errno);
        return -1;
    }
    if (lstat(pkg_dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        *err = "state_dir/packages is not a directory of the agent's (root's)";
        return -1;
    }
    if ((st.st_mode & 07777) != 0700 && chmod(pkg_dir, 0700) < 0) {
        *err = strerror(errno);
        return -1;
    }
    return 0;
}

int exo_pkg_new_id(char out[EXO_PKG_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[EXO_PKG_ID_LEN / 2];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) return -1;
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[EXO_PKG_ID_LEN] = '\0';
    return 0;
}

/* Removes name (an operation's directory) under the open directory dfd. */
static int remove_at(int dfd, const char *name)
{
    static const char *const files[] = {"log", "status", "exit", "exit.tmp"};
    int fd = openat(dfd, name, DIR_FLAGS);
    if (fd >= 0) {
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
            unlinkat(fd, files[i], 0);
        close(fd);
    }
    return unlinkat(dfd, name, AT_REMOVEDIR);
}

int exo_pkg_remove(const char *pkg_dir, const char *id)
{
    int dfd = open(pkg_dir, DIR_FLAGS);
    if (dfd < 0) return -1;
    int rc = remove_at(dfd, id);
    close(dfd);
    return rc;
}

int exo_pkg_create(const char *pkg_dir, const char *id, int *log_fd, int *status_fd,
                   const char **err)
{
    *log_fd = *status_fd = -1;
    int dfd = open(pkg_dir, DIR_FLAGS);
    if (dfd < 0 || mkdirat(dfd, id, 0700) < 0) {
        *err = strerror(errno);
        if (dfd >= 0) close(dfd);
        return -1;
    }
    int fd = openat(dfd, id, DIR_FLAGS);
    if (fd >= 0) {
        *log_fd = openat(fd, "log", FILE_FLAGS, 0600);
        if (*log_fd >= 0) *status_fd = openat(fd, "status", FILE_FLAGS, 0600);
        close(fd);
    }
    if (*status_fd < 0) {
        *err = strerror(errno);
        if (*log_fd >= 0) close(*log_fd);
        *log_fd = -1;
        remove_at(dfd, id); /* no operation ran: nothing to keep */
        close(dfd);
        return -1;
    }
    close(dfd);
    return 0;
}

int exo_pkg_lock_run(int log_fd)
{
    return flock(log_fd, LOCK_EX | LOCK_NB) < 0 ? -errno : 0;
}

/* 1 while the run lock of the log at `path` under dfd is held. */
static int locked_at(int dfd, const char *path)
{
    int fd = openat(dfd, path, READ_FLAGS);
    if (fd < 0) return 0;
    int held = flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
    close(fd); /* also lets go of the shared lock taken when it was free */
    return held;
}

/* 1 while the run lock of the operation directory `name` (an id) under dfd is held. */
static int running_at(int dfd, const char *name)
{
    char path[EXO_PKG_ID_LEN + 8];
    snprintf(path, sizeof(path), "%.*s/log", EXO_PKG_ID_LEN, name);
    return locked_at(dfd, path);
}

int exo_pkg_running(const char *pkg_dir, const char *id)
{
    if (!exo_pkg_id_ok(id, strlen(id))) return 0;
    int dfd = open(pkg_dir, DIR_FLAGS);
    if (dfd < 0) return 0;
    int held = running_at(dfd, id);
    close(dfd);
    return held;
}

static int is_running(const char *id, const char *const *running, size_t n);

int exo_pkg_find_running(const char *pkg_dir, const char *const *skip, size_t n, char *out)
{
    DIR *d = opendir(pkg_dir);
    if (d == NULL) return 0;
    int dfd = dirfd(d), found = 0;
    size_t seen = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL && seen < SCAN_MAX) {
        if (!exo_pkg_id_ok(e->d_name, strlen(e->d_name)) || is_running(e->d_name, skip, n))
            continue;
        seen++;
        char exitp[EXO_PKG_ID_LEN + 8];
        snprintf(exitp, sizeof(exitp), "%.*s/exit", EXO_PKG_ID_LEN, e->d_name);
        struct stat st;
        if (fstatat(dfd, exitp, &st, AT_SYMLINK_NOFOLLOW) == 0 || !running_at(dfd, e->d_name))
            continue;
        memcpy(out, e->d_name, EXO_PKG_ID_LEN);
        out[EXO_PKG_ID_LEN] = '\0';
        found = 1;
    }
    closedir(d);
    return found;
}

typedef struct ended_s {
    int64_t at;
    char id[EXO_PKG_ID_LEN + 1];
} ended_t;

static int ended_cmp(const void *a, const void *b)
{
    int64_t x = ((const ended_t *)a)->at, y = ((const ended_t *)b)->at;
    return x < y ? -1 : x > y;
}

static int is_running(const char *id, const char *const *running, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(running[i], id) == 0) return 1;
    return 0;
}

size_t exo_pkg_prune(const char *pkg_dir, int64_t now, int64_t keep_s, int64_t orphan_s,
                     const char *const *running, size_t n_running)
{
    ended_t *ended = calloc(SCAN_MAX, sizeof(*ended));
    DIR *d = ended ? opendir(pkg_dir) : NULL;
    if (d == NULL) {
        free(ended);
        return 0;
    }
    size_t n = 0, seen = 0, removed = 0;
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL && seen < SCAN_MAX) {
        if (!exo_pkg_id_ok(e->d_name, strlen(e->d_name)) ||
            is_running(e->d_name, running, n_running))
            continue;
        seen++;
        char exitp[EXO_PKG_ID_LEN + 8];
        /* The name is an id (checked above): its 32 characters, which the compiler cannot know. */
        snprintf(exitp, sizeof(exitp), "%.*s/exit", EXO_PKG_ID_LEN, e->d_name);
        struct stat st;
        if (fstatat(dfd, exitp, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            ended[n].at = (int64_t)st.st_mtime;
            memcpy(ended[n].id, e->d_name, sizeof(ended[n].id));
            n++;
        } else if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                   now - (int64_t)st.st_mtime > orphan_s && !running_at(dfd, e->d_name)) {
            removed += remove_at(dfd, e->d_name) == 0;
        }
    }
    /* Oldest first: those past keep, and the oldest while too many remain. */
    qsort(ended, n, sizeof(ended[0]), ended_cmp);
    for (size_t i = 0; i < n; i++) {
        if (now - ended[i].at <= keep_s && n - i < EXO_PKG_ENDED_MAX) break;
        removed += remove_at(dfd, ended[i].id) == 0;
    }
    closedir(d);
    free(ended);
    return removed;
}

/* Reads at most cap - 1 bytes of name under dfd into line, without a trailing newline.
 * Returns 1, or 0 when there is no such file. */
static int read_line_at(int dfd, const char *name, char *line, size_t cap)
{
    line[0] = '\0';
    int fd = openat(dfd, name, READ_FLAGS);
    if (fd < 0) return 0;
    ssize_t r = read(fd, line, cap - 1);
    close(fd);
    size_t n = r > 0 ? (size_t)r : 0;
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\0'))
        n--;
    line[n] = '\0';
    line[strcspn(line, "\n")] = '\0';
    return 1;
}

int exo_pkg_read_exit(const char *pkg_dir, const char *id, char *line, size_t cap)
{
    char path[EXO_STATEFILE_PATH_MAX];
    line[0] = '\0';
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", pkg_dir, id) >= sizeof(path)) return 0;
    int dfd = open(path, DIR_FLAGS);
    if (dfd < 0) return 0;
    int rc = read_line_at(dfd, "exit", line, cap);
    close(dfd);
    return rc;
}

/* Reads at most EXO_PKG_POLL_MAX bytes of name under dfd from off into buf; sets *size to the
 * file's size and returns the bytes to hand out (exo_pkg_poll_cut). A missing file is empty. */
static size_t slice_at(int dfd, const char *name, uint64_t off, int done, char *buf, uint64_t *size)
{
    struct stat st;
    *size = 0;
    int fd = openat(dfd, name, READ_FLAGS);
    if (fd < 0) return 0;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return 0;
    }
    *size = (uint64_t)st.st_size;
    size_t got = 0;
    if (off < *size) {
        size_t want = *size - off < EXO_PKG_POLL_MAX ? (size_t)(*size - off) : EXO_PKG_POLL_MAX;
        while (got < want) {
            ssize_t r = pread(fd, buf + got, want - got, (off_t)(off + got));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            got += (size_t)r;
        }
    }
    close(fd);
    return exo_pkg_poll_cut(buf, got, done && off + got >= *size);
}

int exo_pkg_poll_read(const char *pkg_dir, const char *id, uint64_t log_off, uint64_t status_off,
                      exo_pkg_poll_t *out)
{
    char path[EXO_STATEFILE_PATH_MAX];
    memset(out, 0, sizeof(*out));
    if (!exo_pkg_id_ok(id, strlen(id)) ||
        (size_t)snprintf(path, sizeof(path), "%s/%s", pkg_dir, id) >= sizeof(path))
        return -ENOENT;
    int dfd = open(path, DIR_FLAGS);
    if (dfd < 0) return -ENOENT;
    out->done = read_line_at(dfd, "exit", out->exit, sizeof(out->exit));
    if (!out->done && !locked_at(dfd, "log")) {
        /* The waiter writes the line before it lets go of the lock: read it again. */
        out->done = read_line_at(dfd, "exit", out->exit, sizeof(out->exit));
        out->lost = !out->done;
    }
    out->log_len = slice_at(dfd, "log", log_off, out->done, out->log, &out->log_size);
    out->status_len =
        slice_at(dfd, "status", status_off, out->done, out->status, &out->status_size);
    close(dfd);
    return 0;
}
