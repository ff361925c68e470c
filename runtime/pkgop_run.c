/* The waiter of a package operation (pkgop.h), in the child the monitor forks per operation.
 * It starts the tool and waits for it, so that the monitor's poll() loop never does; it alone
 * knows the tool's pid, kills the tool's process group at the deadline, and writes the exit
 * line that tells a poll the operation has ended. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pkgop.h"

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
