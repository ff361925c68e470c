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
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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

/* Writes a line to the log (the tool's stdout), for what went wrong before the tool ran. */
static void log_line(int fd, const char *what, int err)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "exosphere-guest-agent: %s: %s\n", what, strerror(err));
    if (n > 0 && write(fd, line, (size_t)n) < 0) return;
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

void exo_pkgop_waiter(const exo_pkg_run_t *r)
{
    uint64_t deadline = now_ms() + r->timeout_ms;
    pid_t pid = fork();
    if (pid == 0) exec_tool(r);
    char line[EXO_PKG_EXIT_MAX];
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
    close(r->log_fd);
    if (r->status_fd >= 0) close(r->status_fd);
    int rc = exo_pkg_write_exit(r->dir, line);
    if (rc < 0) exo_error("packages: cannot write %s/exit: %s", r->dir, strerror(-rc));
    _exit(rc < 0 ? 1 : 0);
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
                   now - (int64_t)st.st_mtime > orphan_s) {
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
    out->log_len = slice_at(dfd, "log", log_off, out->done, out->log, &out->log_size);
    out->status_len =
        slice_at(dfd, "status", status_off, out->done, out->status, &out->status_size);
    close(dfd);
    return 0;
}
