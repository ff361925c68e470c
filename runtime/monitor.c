/* The root monitor; see monitor.h and docs/security.md.
 *
 * One thread, one poll() loop, no libuv: the worker is forked without exec, and a forked child
 * must not share an epoll set with its parent. The loop watches a signalfd (SIGCHLD, SIGTERM,
 * SIGINT, SIGHUP), the worker's socket and the answer pipes of the PAM checks in flight.
 *
 * Every request from the worker is checked against the permit table below: a message that is
 * not well framed, names an operation the table does not have, or carries a field out of its
 * bounds is taken as a sign that the worker is compromised or broken, and the worker is
 * killed (and, like a worker that dies, restarted). The monitor itself carries on.
 *
 * A login runs in a child forked per check (pam.c): PAM modules block (pam_unix sleeps after a
 * failure) and may misbehave, and the monitor must keep serving. The number of checks in flight
 * is capped, each has a deadline, and failed logins slow further attempts for that user name
 * (per name, not per address: behind Exosphere's proxy every client has the same address).
 *
 * A mount operation (mountop.h) runs the same way, in a child forked per request in its own
 * process group: the tools it runs (mkfs.ext4, systemd-mount, ...) may take minutes. The child
 * writes one answer message to its pipe, which the monitor checks and relays to the worker;
 * the number in flight is capped ([mounts] max_in_flight), and at the deadline the child's
 * whole process group is killed.
 *
 * A package operation (pkgop.h) is not a request: it may run for an hour. Its start is
 * answered at once, a waiter process runs the tool and writes its files in
 * state_dir/packages/<id>/, and polls read them; the monitor only tracks the waiters (at most
 * one install or upgrade at a time) and prunes old operations' files. */
#include "monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pwd.h>
#include <shadow.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "jobstore.h"
#include "loadhist.h"
#include "log.h"
#include "mountop.h"
#include "notify.h"
#include "pam.h"
#include "pkgop.h"
#include "privsep.h"
#include "server.h"
#include "token.h"

#define RESTART_MIN_MS 100
#define RESTART_MAX_MS 10000
#define STABLE_MS 1000         /* a worker that lived this long restarts after RESTART_MIN_MS */
#define BACKOFF_SLOTS 1024     /* user names whose failures are remembered */
#define OUT_NOT_ALLOWED 100    /* a child's outcome beyond exo_pam_outcome_t */
#define MOUNTOP_GRACE_MS 10000 /* past a mount operation's own deadline, before it is killed */
#define PKGOP_GRACE_MS 60000   /* past a package operation's deadline, before its waiter is */

typedef struct child_answer_s {
    int outcome;
    exo_pam_result_t r;
} child_answer_t;

typedef struct login_s {
    int used;
    pid_t pid;    /* 0 once reaped */
    int fd;       /* the answer pipe, -1 once read or closed */
    uint32_t seq; /* the request being answered */
    unsigned gen; /* the worker that asked */
    uint64_t deadline;
    size_t got;
    child_answer_t ans;
    char user[33], source[130], transport[8];
} login_t;

/* A mount operation in flight: its child, the pipe of its answer and the answer so far. */
typedef struct mountjob_s {
    int used;
    pid_t pid;   /* 0 once reaped; also the child's process group */
    int fd;      /* the answer pipe, -1 once read or closed */
    uint32_t op; /* the request being answered */
    uint32_t seq;
    unsigned gen; /* the worker that asked */
    uint64_t deadline;
    size_t got;
    uint8_t ans[EXO_PRIV_MAX_MESSAGE + 1];
} mountjob_t;

/* A package operation whose waiter runs (pkgop.h). The waiter enforces the deadline itself;
 * the monitor kills the waiter only if it is still there a grace period later. */
typedef struct pkgop_s {
    int used;
    pid_t pid; /* the waiter, also its process group */
    exo_pkg_action_t action;
    int changes; /* install or upgrade_all: one at a time */
    int killed;  /* the monitor killed the waiter at its deadline */
    uint64_t deadline;
    char id[EXO_PKG_ID_LEN + 1];
} pkgop_t;

typedef struct backoff_s {
    char user[33];
    uint32_t failures;
    uint64_t until, last;
} backoff_t;

static struct {
    exo_config_t *cfg;
    int dev;
    exo_prepared_t prep;
    uid_t wuid;
    gid_t wgid;
    pid_t self;
    unsigned char key[EXO_TOKEN_KEY_LEN];
    exo_revoked_t revoked;
    char revoked_path[4200];
    int sigfd;
    pid_t worker;
    int wfd;
    unsigned gen;
    int ready, ever_ready;
    uint64_t worker_started, restart_at, restart_delay;
    int stopping, done, exit_code;
    uint64_t stop_deadline;
    login_t *logins;
    size_t n_logins;
    mountjob_t *jobs;
    size_t n_jobs;
    backoff_t *backoff;
    char console_dev[4096];    /* where console lines go, chosen once at start */
    exo_load_ring_t load;      /* the load history, as persisted in load_path */
    char load_path[4200];      /* state_dir/load-history */
    size_t load_lines;         /* lines in the file: it is compacted past twice the ring */
    int load_file_failing;     /* a warning was logged; the next one waits for a success */
    int load_console_failing;  /* the same for the console line */
    exo_job_store_t job_store; /* the job records, as saved in jobs_path */
    char jobs_path[4200];      /* state_dir/jobs */
    int jobs_file_failing;     /* a warning was logged; the next one waits for a success */
    pkgop_t pkgops[EXO_PKG_IN_FLIGHT];
    char pkg_dir[4200]; /* state_dir/packages */
    uint8_t buf[EXO_PRIV_MAX_MESSAGE + 1];
} m_;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the worker ------------------------------------------------------------------------- */

/* Leaves root for good: no supplementary groups, no capabilities (not even in the bounding
 * set), the worker user's uid and gid in all three slots, and no_new_privs. Returns 0 or -1
 * with the reason logged. */
static int drop_privileges(void)
{
    if (setgroups(1, &m_.wgid) < 0) {
        exo_error("worker: setgroups: %s", strerror(errno));
        return -1;
    }
    for (int cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) {
            exo_error("worker: dropping capability %d from the bounding set: %s", cap,
                      strerror(errno));
            return -1;
        }
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (setresgid(m_.wgid, m_.wgid, m_.wgid) < 0 || setresuid(m_.wuid, m_.wuid, m_.wuid) < 0) {
        exo_error("worker: cannot change to uid %u gid %u: %s", (unsigned)m_.wuid,
                  (unsigned)m_.wgid, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0 || seteuid(0) == 0 || geteuid() != m_.wuid || getegid() != m_.wgid) {
        exo_error("worker: root could be regained after dropping it; refusing to run");
        return -1;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        exo_error("worker: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
        return -1;
    }
    if (chdir("/") < 0) return -1;
    return 0;
}

/* In a child: the answer pipes of the other children are not its business (and a write end
 * held open would keep the monitor from seeing an answer end). */
static void close_login_fds(void)
{
    for (size_t i = 0; i < m_.n_logins; i++)
        if (m_.logins[i].used && m_.logins[i].fd >= 0) close(m_.logins[i].fd);
    for (size_t i = 0; i < m_.n_jobs; i++)
        if (m_.jobs[i].used && m_.jobs[i].fd >= 0) close(m_.jobs[i].fd);
}

/* In a child that runs a tool or PAM (not the worker): none of the monitor's descriptors, not
 * the worker's socket, the signalfd, the other children's pipes, nor the agent's listening
 * sockets (a helper left running must not hold the agent's ports open). */
static void close_monitor_fds(void)
{
    close(m_.sigfd);
    if (m_.wfd >= 0) close(m_.wfd);
    close_login_fds();
    for (size_t i = 0; i < m_.prep.n_fds; i++)
        if (m_.prep.fds[i].fd >= 0) close(m_.prep.fds[i].fd);
}

static void start_worker(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        exo_error("monitor: socketpair: %s", strerror(errno));
        m_.restart_at = now_ms() + RESTART_MAX_MS;
        return;
    }
    int big = 256 * 1024;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    pid_t pid = fork();
    if (pid < 0) {
        exo_error("monitor: cannot fork the worker: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        m_.restart_at = now_ms() + RESTART_MAX_MS;
        return;
    }
    if (pid == 0) {
        /* The worker: nothing of the monitor's state but what it was given. */
        close(sv[0]);
        close(m_.sigfd);
        close_login_fds();
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
        if (getppid() != m_.self) _exit(1);
        OPENSSL_cleanse(m_.revoked_path, sizeof(m_.revoked_path));
        unsetenv("NOTIFY_SOCKET"); /* only the monitor speaks for the service */
        if (drop_privileges() < 0) _exit(1);
        exo_auth_init(m_.key, &m_.revoked);
        int code = exo_worker_run(m_.cfg, m_.dev, &m_.prep, sv[1]);
        exit(code);
    }
    close(sv[1]);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    m_.wfd = sv[0];
    m_.worker = pid;
    m_.gen++;
    m_.ready = 0;
    m_.worker_started = now_ms();
    m_.restart_at = 0;
    exo_info("monitor: started worker %d as %s (uid %u)", (int)pid, m_.cfg->user,
             (unsigned)m_.wuid);
}

static void kill_worker(const char *why)
{
    if (m_.worker <= 0) return;
    exo_error("monitor: the worker sent %s: stopping it", why);
    kill(m_.worker, SIGKILL);
    if (m_.wfd >= 0) close(m_.wfd);
    m_.wfd = -1;
}

static void worker_exited(int status)
{
    char how[64];
    if (WIFEXITED(status))
        snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(how, sizeof(how), "was killed by signal %d", WTERMSIG(status));
    pid_t pid = m_.worker;
    m_.worker = 0;
    if (m_.wfd >= 0) close(m_.wfd);
    m_.wfd = -1;
    if (m_.stopping) {
        m_.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        m_.done = 1;
        return;
    }
    if (!m_.ever_ready) {
        exo_error("monitor: the worker %s before it was ready; not restarting it", how);
        m_.exit_code = 1;
        m_.done = 1;
        return;
    }
    uint64_t lived = now_ms() - m_.worker_started;
    if (lived >= STABLE_MS || m_.restart_delay == 0)
        m_.restart_delay = RESTART_MIN_MS;
    else
        m_.restart_delay =
            m_.restart_delay * 2 > RESTART_MAX_MS ? RESTART_MAX_MS : m_.restart_delay * 2;
    m_.restart_at = now_ms() + m_.restart_delay;
    exo_error("monitor: worker %d %s after %llu ms; starting a new one in %llu ms", (int)pid, how,
              (unsigned long long)lived, (unsigned long long)m_.restart_delay);
}

static void answer(uint32_t op, uint32_t seq, const exo_priv_field_t *f, size_t n)
{
    uint8_t out[EXO_PRIV_MAX_MESSAGE];
    int len = exo_priv_encode(out, sizeof(out), op | EXO_OP_ANSWER, seq, f, n);
    if (len < 0) {
        exo_error("monitor: an answer does not fit in a message");
        return;
    }
    if (m_.wfd < 0) return;
    if (send(m_.wfd, out, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        kill_worker("no room for its answers (it stopped reading them)");
    OPENSSL_cleanse(out, sizeof(out));
}

static void answer_status(uint32_t op, uint32_t seq, const char *status, const char *extra)
{
    exo_priv_field_t f[2] = {{status, strlen(status)}, {extra, extra ? strlen(extra) : 0}};
    answer(op, seq, f, extra ? 2 : 1);
}

/* ---- the console status line ------------------------------------------------------------- */

/* Where console lines go: the configured device, else /dev/kmsg on the Red Hat family (whose
 * console shows the kernel log, and Exosphere strips the "[ 123.456] " prefix) and
 * /dev/console elsewhere (../shared/EXOSPHERE.md "The console log"). */
static const char *console_device(void)
{
    if (m_.console_dev[0]) return m_.console_dev;
    if (m_.cfg->console_device && m_.cfg->console_device[0]) return m_.cfg->console_device;
    const char *dev = "/dev/console";
    char line[256];
    FILE *f = fopen("/etc/os-release", "re");
    while (f && fgets(line, sizeof(line), f)) {
        if ((strncmp(line, "ID=", 3) == 0 || strncmp(line, "ID_LIKE=", 8) == 0) &&
            (strstr(line, "rhel") || strstr(line, "fedora") || strstr(line, "centos")))
            dev = "/dev/kmsg";
    }
    if (f) fclose(f);
    snprintf(m_.console_dev, sizeof(m_.console_dev), "%s", dev);
    return dev;
}

/* One line when the agent starts serving: what a client needs to reach it (the port, the
 * certificate to pin) and nothing secret; never a top-level "status" key, which Exosphere takes
 * for the instance's setup status. */
static void console_status_line(void)
{
    if (!m_.cfg->console_status_line) return;
    int port = 0;
    for (size_t i = 0; i < m_.prep.n_fds && port == 0; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (m_.prep.fds[i].fd < 0 || m_.prep.fds[i].transport == EXO_TRANSPORT_UNIX ||
            getsockname(m_.prep.fds[i].fd, (struct sockaddr *)&ss, &len) < 0)
            continue;
        if (ss.ss_family == AF_INET) port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        if (ss.ss_family == AF_INET6) port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    char fp[120] = "null";
    if (m_.prep.tls_fingerprint[0]) snprintf(fp, sizeof(fp), "\"%s\"", m_.prep.tls_fingerprint);
    char out[512];
    int n = snprintf(out, sizeof(out),
                     "{\"exoGuestAgent\":{\"v\":1,\"version\":\"%s\",\"port\":%d,"
                     "\"tlsSha256\":%s,\"state\":\"ready\"}}\n",
                     EXO_VERSION, port, fp);
    const char *dev = console_device();
    int fd = open(dev, O_WRONLY | O_NOCTTY | O_APPEND | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 || write(fd, out, (size_t)n) != n) {
        exo_warn("monitor: cannot write the status line to %s: %s", dev, strerror(errno));
    } else {
        exo_info("monitor: wrote the status line to %s", dev);
    }
    if (fd >= 0) close(fd);
}

/* ---- the load history and the console load line ------------------------------------------ */

/* Writes s's console line, Exosphere's chart point (../shared/EXOSPHERE.md "System load"),
 * built from the validated integers alone. A failure is logged once, and again only after a
 * write has succeeded in between: a console that is gone stays gone for a while, and one
 * warning a minute would drown the log. */
static void console_load_line(const exo_load_sample_t *s)
{
    char out[EXO_LOAD_CONSOLE_MAX];
    size_t n = exo_load_console_format(s, out, sizeof(out));
    const char *dev = console_device();
    int fd = open(dev, O_WRONLY | O_NOCTTY | O_APPEND | O_NONBLOCK | O_CLOEXEC);
    int ok = fd >= 0 && write(fd, out, n) == (ssize_t)n;
    int e = errno;
    if (fd >= 0) close(fd);
    if (!ok && !m_.load_console_failing)
        exo_warn("monitor: cannot write the load line to %s: %s (logged once until a write "
                 "succeeds)",
                 dev, strerror(e));
    m_.load_console_failing = !ok;
}

/* Appends s to the history file, and rewrites the file from the ring once it holds twice the
 * ring's samples, so that it stays bounded. Failures are logged like the console's. */
static void load_persist(const exo_load_sample_t *s)
{
    char err[512];
    int rc = exo_load_file_append(m_.load_path, s, err, sizeof(err));
    if (rc == 0 && ++m_.load_lines > 2 * m_.load.cap) {
        rc = exo_load_file_compact(&m_.load, m_.load_path, err, sizeof(err));
        if (rc == 0) m_.load_lines = m_.load.n;
    }
    if (rc < 0 && !m_.load_file_failing)
        exo_warn("monitor: cannot save the load history: %s (logged once until a write "
                 "succeeds)",
                 err);
    m_.load_file_failing = rc < 0;
}

/* Loads the history file into a ring of [system_load] history / interval samples. Returns 0
 * or -1 with the reason logged. */
static int load_history_start(void)
{
    char err[512];
    size_t cap = exo_load_ring_capacity(m_.cfg->load_history_ms, m_.cfg->load_interval_ms);
    if (exo_load_ring_init(&m_.load, cap) < 0) {
        exo_error("cannot start: out of memory for the load history");
        return -1;
    }
    snprintf(m_.load_path, sizeof(m_.load_path), "%s/load-history", m_.cfg->state_dir);
    size_t damaged = 0;
    int rc = exo_load_file_load(&m_.load, m_.load_path, (int64_t)time(NULL), &m_.load_lines,
                                &damaged, err, sizeof(err));
    /* A history that cannot be read is not worth refusing to start for: it starts afresh. */
    if (rc < 0 && rc != -ENOENT) exo_warn("monitor: the load history starts empty: %s", err);
    if (damaged)
        exo_warn("monitor: %s: skipped %zu damaged lines of %zu", m_.load_path, damaged,
                 m_.load_lines);
    exo_info("monitor: %zu load samples in the history (room for %zu)", m_.load.n, m_.load.cap);
    return 0;
}

/* Loads the job records (state_dir/jobs), dropping expired and damaged ones. Returns 0 or -1
 * with the reason logged. */
static int jobs_start(void)
{
    char err[512];
    if (exo_job_store_init(&m_.job_store, m_.cfg->jobs_max_records) < 0) {
        exo_error("cannot start: bad [jobs] max_records");
        return -1;
    }
    snprintf(m_.jobs_path, sizeof(m_.jobs_path), "%s/jobs", m_.cfg->state_dir);
    size_t lines = 0, damaged = 0;
    int rc = exo_job_file_load(&m_.job_store, m_.jobs_path, (int64_t)time(NULL), &lines, &damaged,
                               err, sizeof(err));
    /* Records that cannot be read are not worth refusing to start for. */
    if (rc < 0 && rc != -ENOENT) exo_warn("monitor: the job records start empty: %s", err);
    if (damaged)
        exo_warn("monitor: %s: skipped %zu damaged lines of %zu", m_.jobs_path, damaged, lines);
    return 0;
}

/* Saves the job records; a failure is logged once until a save succeeds. */
static void jobs_persist(void)
{
    char err[512];
    int rc = exo_job_file_save(&m_.job_store, m_.jobs_path, err, sizeof(err));
    if (rc < 0 && !m_.jobs_file_failing)
        exo_warn("monitor: cannot save the job records: %s (logged once until a save succeeds)",
                 err);
    m_.jobs_file_failing = rc < 0;
}

/* ---- backoff ---------------------------------------------------------------------------- */

static backoff_t *backoff_find(const char *user)
{
    for (size_t i = 0; i < BACKOFF_SLOTS; i++)
        if (m_.backoff[i].user[0] && strcmp(m_.backoff[i].user, user) == 0) return &m_.backoff[i];
    return NULL;
}

/* Remembers one more failure for user and returns the delay before its next attempt. */
static uint64_t backoff_fail(const char *user, uint64_t now, uint32_t *failures)
{
    backoff_t *b = backoff_find(user);
    if (b == NULL) {
        /* A free slot, or the one idle longest. */
        b = &m_.backoff[0];
        for (size_t i = 0; i < BACKOFF_SLOTS; i++) {
            if (!m_.backoff[i].user[0]) {
                b = &m_.backoff[i];
                break;
            }
            if (m_.backoff[i].last < b->last) b = &m_.backoff[i];
        }
        memset(b, 0, sizeof(*b));
        snprintf(b->user, sizeof(b->user), "%s", user);
    }
    b->failures++;
    b->last = now;
    uint64_t delay = m_.cfg->login_backoff_ms;
    for (uint32_t i = 1; i < b->failures && delay < m_.cfg->login_backoff_max_ms; i++)
        delay *= 2;
    if (delay > m_.cfg->login_backoff_max_ms) delay = m_.cfg->login_backoff_max_ms;
    b->until = now + delay;
    *failures = b->failures;
    return delay;
}

/* ---- logins ------------------------------------------------------------------------------ */

/* The policy check before PAM runs, so that a user who may not log in never has a password
 * checked (no oracle for it). Unknown users go on to PAM, which fails them as it fails a wrong
 * password. Returns 1 when the user may try. */
static int may_try(const char *user, char *why, size_t whylen)
{
    struct passwd pw, *res = NULL;
    char buf[4096], groups[EXO_PAM_GROUPS_MAX];
    if (getpwnam_r(user, &pw, buf, sizeof(buf), &res) != 0 || res == NULL) return 1;
    if (pw.pw_uid == 0 && !m_.cfg->allow_root_login) {
        snprintf(why, whylen, "root login is off (allow_root_login)");
        return 0;
    }
    int cut;
    exo_user_groups(user, pw.pw_gid, groups, &cut);
    if (exo_policy_allowed(m_.cfg, user, (uint32_t)pw.pw_uid, groups)) return 1;
    snprintf(why, whylen, "not in allow_users or allow_groups");
    return 0;
}

static void login_child(int fd, const char *user, char *password, const char *source)
{
    child_answer_t a;
    memset(&a, 0, sizeof(a));
    if (!may_try(user, a.r.detail, sizeof(a.r.detail))) {
        a.outcome = OUT_NOT_ALLOWED;
    } else {
        a.outcome = (int)exo_pam_check(m_.cfg->pam_service, user, password, source, &a.r);
        /* Stacks like Debian's common-account end in pam_deny, which hides pam_unix's
         * PAM_ACCT_EXPIRED behind PAM_AUTH_ERR: after the password was right, the shadow entry
         * says whether the account has expired. */
        struct spwd *sp = a.outcome == EXO_PAM_ACCOUNT_DENIED ? getspnam(user) : NULL;
        long today = (long)(time(NULL) / 86400);
        if (sp && sp->sp_expire > 0 && today >= sp->sp_expire) a.outcome = EXO_PAM_ACCOUNT_EXPIRED;
        if (a.outcome == EXO_PAM_OK && !exo_policy_allowed(m_.cfg, a.r.user, a.r.uid, a.r.groups)) {
            a.outcome = OUT_NOT_ALLOWED;
            snprintf(a.r.detail, sizeof(a.r.detail), "not allowed by the [auth] settings");
        }
    }
    OPENSSL_cleanse(password, strlen(password));
    ssize_t w = write(fd, &a, sizeof(a));
    _exit(w == (ssize_t)sizeof(a) ? 0 : 1);
}

static const char *outcome_status(int outcome)
{
    if (outcome == OUT_NOT_ALLOWED) return "not_allowed";
    if (outcome < EXO_PAM_OK || outcome > EXO_PAM_ERROR) return "error";
    return exo_pam_outcome_name((exo_pam_outcome_t)outcome);
}

/* The child's answer is in (or the check failed: outcome -1). Logs, updates the backoff and
 * answers the worker that asked, if it is still the current one. */
static void finish_login(login_t *l, int outcome, const char *detail)
{
    char quser[80];
    exo_log_quote(quser, sizeof(quser), l->user, strlen(l->user));
    uint64_t now = now_ms();
    int current = l->gen == m_.gen && m_.wfd >= 0;
    if (outcome == EXO_PAM_OK) {
        exo_pam_result_t *r = &l->ans.r;
        backoff_t *b = backoff_find(l->user);
        if (b) memset(b, 0, sizeof(*b));
        exo_token_claims_t c;
        memset(&c, 0, sizeof(c));
        snprintf(c.user, sizeof(c.user), "%s", r->user);
        c.uid = (uint32_t)r->uid;
        c.gid = (uint32_t)r->gid;
        snprintf(c.groups, sizeof(c.groups), "%s", r->groups);
        c.iat = (int64_t)time(NULL);
        c.exp = c.iat + (int64_t)(m_.cfg->token_lifetime_ms / 1000);
        char token[EXO_TOKEN_MAX + 1];
        int tl = exo_token_issue(m_.key, &c, token, sizeof(token));
        if (tl < 0) {
            exo_error("monitor: login of user=%s succeeded but no token could be made: %s", quser,
                      strerror(-tl));
            if (current) answer_status(EXO_OP_LOGIN, l->seq, "error", NULL);
            return;
        }
        exo_info("login succeeded: user=%s source=%s transport=%s uid=%u", quser, l->source,
                 l->transport, (unsigned)r->uid);
        if (!current) return;
        char uid[16], gid[16], exp[24];
        snprintf(uid, sizeof(uid), "%u", (unsigned)r->uid);
        snprintf(gid, sizeof(gid), "%u", (unsigned)r->gid);
        snprintf(exp, sizeof(exp), "%lld", (long long)c.exp);
        exo_priv_field_t f[7] = {
            {"ok", 2},          {r->user, strlen(r->user)},     {uid, strlen(uid)},
            {gid, strlen(gid)}, {r->groups, strlen(r->groups)}, {token, (size_t)tl},
            {exp, strlen(exp)},
        };
        answer(EXO_OP_LOGIN, l->seq, f, 7);
        OPENSSL_cleanse(token, sizeof(token));
        return;
    }
    const char *status = outcome_status(outcome);
    uint32_t failures = 0;
    uint64_t delay = 0;
    if (outcome == EXO_PAM_BAD_CREDENTIALS || outcome == OUT_NOT_ALLOWED)
        delay = backoff_fail(l->user, now, &failures);
    exo_warn("login failed: user=%s source=%s transport=%s reason=%s failures=%u "
             "retry_after_ms=%llu detail=\"%s\"",
             quser, l->source, l->transport, status, (unsigned)failures, (unsigned long long)delay,
             detail);
    if (!current) return;
    /* A user who may not log in gets the answer a wrong password gets. */
    if (outcome == OUT_NOT_ALLOWED) status = "bad_credentials";
    answer_status(EXO_OP_LOGIN, l->seq, status, NULL);
}

static void login_read(login_t *l)
{
    for (;;) {
        ssize_t n = read(l->fd, (char *)&l->ans + l->got, sizeof(l->ans) - l->got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        if (n > 0) l->got += (size_t)n;
        if (n > 0 && l->got < sizeof(l->ans)) continue;
        close(l->fd);
        l->fd = -1;
        if (l->got == sizeof(l->ans)) {
            l->ans.r.detail[sizeof(l->ans.r.detail) - 1] = '\0';
            l->ans.r.user[sizeof(l->ans.r.user) - 1] = '\0';
            l->ans.r.groups[sizeof(l->ans.r.groups) - 1] = '\0';
            finish_login(l, l->ans.outcome, l->ans.r.detail);
        } else {
            finish_login(l, -1, "the PAM check ended without an answer");
        }
        OPENSSL_cleanse(&l->ans, sizeof(l->ans));
        return;
    }
}

static void login_free_if_done(login_t *l)
{
    if (l->used && l->fd < 0 && l->pid == 0) memset(l, 0, sizeof(*l));
}

static int valid_text(const exo_priv_field_t *f, size_t min, size_t max, int printable)
{
    if (f->len < min || f->len > max || memchr(f->p, '\0', f->len)) return 0;
    for (size_t i = 0; printable && i < f->len; i++)
        if ((unsigned char)f->p[i] < 0x20 || (unsigned char)f->p[i] > 0x7e) return 0;
    return 1;
}

/* LOGIN: user (account name), password (1..1024 bytes), source (printable, for the log),
 * transport ("https", "http" or "unix"). */
static const char *op_login(const exo_priv_msg_t *m)
{
    if (m->n != 4) return "a login request without exactly 4 fields";
    if (!exo_account_name_ok(m->f[0].p, m->f[0].len)) return "a login request with a bad user name";
    if (!valid_text(&m->f[1], 1, 512, 0)) return "a login request with a bad password field";
    if (!valid_text(&m->f[2], 0, 128, 1)) return "a login request with a bad source field";
    if (!exo_priv_field_is(&m->f[3], "https") && !exo_priv_field_is(&m->f[3], "http") &&
        !exo_priv_field_is(&m->f[3], "unix"))
        return "a login request with a bad transport field";
    char user[33], source[130], transport[8], password[513];
    exo_priv_field_copy(&m->f[0], user, sizeof(user));
    exo_priv_field_copy(&m->f[2], source, sizeof(source));
    exo_priv_field_copy(&m->f[3], transport, sizeof(transport));
    uint64_t now = now_ms();
    char quser[80];
    exo_log_quote(quser, sizeof(quser), user, strlen(user));
    backoff_t *b = backoff_find(user);
    if (b && now < b->until) {
        char after[24];
        snprintf(after, sizeof(after), "%llu", (unsigned long long)(b->until - now));
        exo_warn("login failed: user=%s source=%s transport=%s reason=backoff failures=%u "
                 "retry_after_ms=%s",
                 quser, source, transport, (unsigned)b->failures, after);
        answer_status(EXO_OP_LOGIN, m->seq, "backoff", after);
        return NULL;
    }
    login_t *l = NULL;
    for (size_t i = 0; i < m_.n_logins && l == NULL; i++)
        if (!m_.logins[i].used) l = &m_.logins[i];
    if (l == NULL) {
        exo_warn("login failed: user=%s source=%s transport=%s reason=busy (%zu checks in "
                 "flight, max_logins_in_flight)",
                 quser, source, transport, m_.n_logins);
        answer_status(EXO_OP_LOGIN, m->seq, "busy", "1000");
        return NULL;
    }
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        answer_status(EXO_OP_LOGIN, m->seq, "error", NULL);
        return NULL;
    }
    exo_priv_field_copy(&m->f[1], password, sizeof(password));
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        close_monitor_fds();
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        login_child(pfd[1], user, password, source);
    }
    OPENSSL_cleanse(password, sizeof(password));
    close(pfd[1]);
    if (pid < 0) {
        close(pfd[0]);
        exo_error("monitor: cannot fork a PAM check: %s", strerror(errno));
        answer_status(EXO_OP_LOGIN, m->seq, "error", NULL);
        return NULL;
    }
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    memset(l, 0, sizeof(*l));
    l->used = 1;
    l->pid = pid;
    l->fd = pfd[0];
    l->seq = m->seq;
    l->gen = m_.gen;
    l->deadline = now + m_.cfg->pam_timeout_ms;
    snprintf(l->user, sizeof(l->user), "%s", user);
    snprintf(l->source, sizeof(l->source), "%s", source);
    snprintf(l->transport, sizeof(l->transport), "%s", transport);
    return NULL;
}

/* REVOKE: a token. Only a token this monitor signed and that has not expired is revoked; its id
 * is kept (and saved) until it would have expired anyway. */
static const char *op_revoke(const exo_priv_msg_t *m)
{
    if (m->n != 1) return "a revoke request without exactly 1 field";
    if (!valid_text(&m->f[0], 1, EXO_TOKEN_MAX, 1)) return "a revoke request with a bad token";
    exo_token_claims_t c;
    int64_t now = (int64_t)time(NULL);
    exo_token_status_t st = exo_token_verify(m_.key, m->f[0].p, m->f[0].len, now, NULL, &c);
    if (st != EXO_TOKEN_VALID) {
        answer_status(EXO_OP_REVOKE, m->seq, st == EXO_TOKEN_EXPIRED ? "ok" : "invalid", NULL);
        return NULL;
    }
    if (!exo_revoked_contains(&m_.revoked, c.jti)) {
        char err[512];
        int rc = exo_revoked_add(&m_.revoked, c.jti, c.exp);
        if (rc == 0)
            rc = exo_revoked_save(&m_.revoked, m_.revoked_path, err, sizeof(err));
        else
            snprintf(err, sizeof(err), "%s", strerror(-rc));
        if (rc < 0) {
            exo_error("monitor: cannot revoke a token of user=%s: %s", c.user, err);
            answer_status(EXO_OP_REVOKE, m->seq, "error", NULL);
            return NULL;
        }
        exo_info("token revoked: user=%s jti=%s expires=%lld", c.user, c.jti, (long long)c.exp);
    }
    answer_status(EXO_OP_REVOKE, m->seq, "ok", NULL);
    return NULL;
}

static const char *op_ready(const exo_priv_msg_t *m)
{
    if (m->n != 0) return "a ready message with fields";
    if (!m_.ready) {
        char status[96];
        snprintf(status, sizeof(status), "%sSTATUS=serving; worker %d%s",
                 m_.ever_ready ? "" : "READY=1\n", (int)m_.worker,
                 m_.ever_ready ? " (restarted)" : "");
        if (!m_.ever_ready) console_status_line();
        m_.ready = m_.ever_ready = 1;
        exo_debug("monitor: worker %d is ready", (int)m_.worker);
        exo_sd_notify(status);
    }
    answer_status(EXO_OP_READY, m->seq, "ok", NULL);
    return NULL;
}

/* LOAD_SAMPLE: epoch, cpu, mem, rootfs, GPUs (loadhist.h). Every field is checked before
 * anything is kept or written; the console line is made from the parsed integers. */
static const char *op_load_sample(const exo_priv_msg_t *m)
{
    exo_load_sample_t s;
    const char *why = exo_load_sample_from_fields(m->f, m->n, (int64_t)time(NULL), &s);
    if (why) return why;
    exo_load_ring_push(&m_.load, &s);
    load_persist(&s);
    if (m_.cfg->load_console_line) console_load_line(&s);
    answer_status(EXO_OP_LOAD_SAMPLE, m->seq, "ok", NULL);
    return NULL;
}

/* LOAD_HISTORY: "" (from the oldest sample) or an epoch (the samples after it) -> "ok", "1"
 * when more samples follow, and a page of history lines that fits in one message. Paging by
 * epoch rather than by index keeps the pages right even if the ring moves in between. */
#define LOAD_PAGE_BYTES (EXO_PRIV_MAX_MESSAGE - 256)

static const char *op_load_history(const exo_priv_msg_t *m)
{
    if (m->n != 1) return "a load history request without exactly 1 field";
    size_t i = 0;
    if (m->f[0].len > 0) {
        char num[24];
        char *end;
        if (m->f[0].len > 19 || exo_priv_field_copy(&m->f[0], num, sizeof(num)) < 0 ||
            num[0] < '0' || num[0] > '9')
            return "a load history request with a bad epoch";
        errno = 0;
        long long after = strtoll(num, &end, 10);
        if (*end || errno) return "a load history request with a bad epoch";
        i = exo_load_ring_after(&m_.load, (int64_t)after);
    }
    char page[LOAD_PAGE_BYTES];
    size_t used = 0;
    for (; i < m_.load.n && LOAD_PAGE_BYTES - used > EXO_LOAD_LINE_MAX; i++)
        used +=
            exo_load_line_format(exo_load_ring_at(&m_.load, i), page + used, sizeof(page) - used);
    exo_priv_field_t f[3] = {{"ok", 2}, {i < m_.load.n ? "1" : "0", 1}, {page, used}};
    answer(EXO_OP_LOAD_HISTORY, m->seq, f, 3);
    return NULL;
}

/* JOB_PUT: job id, expiry, the record's JSON text (jobstore.h). The id, the expiry (at most
 * [jobs] keep ahead) and the text's size and bytes are checked; the JSON is never parsed, as
 * only the worker reads it back. An expiry that has passed removes the record. */
static const char *op_job_put(const exo_priv_msg_t *m)
{
    int64_t now = (int64_t)time(NULL), expiry;
    /* A minute of slack: the worker computes the expiry from its own reading of the clock. */
    int64_t ahead = (int64_t)(m_.cfg->jobs_keep_ms / 1000) + 60;
    const char *why = exo_job_put_check(m->f, m->n, now, ahead, &expiry);
    if (why) return why;
    exo_job_store_expire(&m_.job_store, now);
    char id[EXO_JOB_ID_LEN + 1];
    memcpy(id, m->f[0].p, EXO_JOB_ID_LEN);
    id[EXO_JOB_ID_LEN] = '\0';
    if (exo_job_store_put(&m_.job_store, id, expiry, m->f[2].p, m->f[2].len, now) < 0) {
        answer_status(EXO_OP_JOB_PUT, m->seq, "error", "out of memory");
        return NULL;
    }
    jobs_persist();
    answer_status(EXO_OP_JOB_PUT, m->seq, "ok", NULL);
    return NULL;
}

/* JOB_LIST: "" (from the first) or the last id of the previous page -> "ok", "1" when more
 * records follow, and a page of record lines that fits in one message. Paging by id keeps the
 * pages right even if records come and go in between. */
static const char *op_job_list(const exo_priv_msg_t *m)
{
    if (m->n != 1) return "a job list request without exactly 1 field";
    if (m->f[0].len > 0 && exo_job_id_check(m->f[0].p, m->f[0].len) != NULL)
        return "a job list request with a bad job id";
    exo_job_store_expire(&m_.job_store, (int64_t)time(NULL));
    static char page[EXO_JOB_PAGE_MAX];
    int more;
    size_t used =
        exo_job_store_page(&m_.job_store, m->f[0].p, m->f[0].len, page, sizeof(page), &more);
    exo_priv_field_t f[3] = {{"ok", 2}, {more ? "1" : "0", 1}, {page, used}};
    answer(EXO_OP_JOB_LIST, m->seq, f, 3);
    return NULL;
}

/* ---- mount operations -------------------------------------------------------------------- */

/* The child's answer is complete (or it ended without one: got is 0 or the bytes are not one
 * answer to the request). Relays it to the worker that asked, if it is still the current one. */
static void finish_mountjob(mountjob_t *j)
{
    exo_priv_msg_t a;
    const char *why = NULL;
    int current = j->gen == m_.gen && m_.wfd >= 0;
    int ok = j->got > 0 && j->got <= EXO_PRIV_MAX_MESSAGE &&
             exo_priv_decode(j->ans, j->got, &a, &why) == 0 && a.op == (j->op | EXO_OP_ANSWER) &&
             a.seq == j->seq && a.n >= 1;
    if (!ok) {
        exo_error("monitor: mount operation %u ended without an answer", (unsigned)j->op);
        if (current)
            answer_status(j->op, j->seq, "failed", "the operation ended without an answer");
        return;
    }
    if (current && send(m_.wfd, j->ans, j->got, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        kill_worker("no room for its answers (it stopped reading them)");
}

static void mountjob_read(mountjob_t *j)
{
    for (;;) {
        size_t room = sizeof(j->ans) - j->got;
        ssize_t n = room ? read(j->fd, j->ans + j->got, room) : 0;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        if (n > 0) {
            j->got += (size_t)n;
            continue;
        }
        close(j->fd);
        j->fd = -1;
        finish_mountjob(j);
        return;
    }
}

static void mountjob_free_if_done(mountjob_t *j)
{
    if (j->used && j->fd < 0 && j->pid == 0) memset(j, 0, sizeof(*j));
}

/* Ops 6..10: the fields are checked here (a request no honest worker sends kills it), the
 * state of the machine in the child (mountop_run.c), which answers with an error code. */
static const char *op_mount(const exo_priv_msg_t *m)
{
    const char *why = exo_mountop_check(m_.cfg, m);
    if (why) return why;
    mountjob_t *j = NULL;
    for (size_t i = 0; i < m_.n_jobs && j == NULL; i++)
        if (!m_.jobs[i].used) j = &m_.jobs[i];
    if (j == NULL) {
        char busy[96];
        snprintf(busy, sizeof(busy), "%zu mount operations are running ([mounts] max_in_flight)",
                 m_.n_jobs);
        exo_warn("mounts: refused an operation: %s", busy);
        answer_status(m->op, m->seq, "busy", busy);
        return NULL;
    }
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        answer_status(m->op, m->seq, "failed", strerror(errno));
        return NULL;
    }
    pid_t pid = fork();
    if (pid == 0) {
        /* Its own process group, so that a deadline kills the tools it started too. */
        setpgid(0, 0);
        close(pfd[0]);
        close_monitor_fds();
        OPENSSL_cleanse(m_.key, sizeof(m_.key));
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        exo_mountop_child(m_.cfg, m, pfd[1]);
    }
    close(pfd[1]);
    if (pid < 0) {
        close(pfd[0]);
        exo_error("monitor: cannot fork a mount operation: %s", strerror(errno));
        answer_status(m->op, m->seq, "failed", strerror(errno));
        return NULL;
    }
    setpgid(pid, pid); /* also here: either call may come first */
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    memset(j, 0, sizeof(*j));
    j->used = 1;
    j->pid = pid;
    j->fd = pfd[0];
    j->op = m->op;
    j->seq = m->seq;
    j->gen = m_.gen;
    j->deadline = now_ms() + exo_mountop_timeout_ms(m_.cfg, m->op) + MOUNTOP_GRACE_MS;
    return NULL;
}

/* ---- package operations ------------------------------------------------------------------ */

/* Prunes the ended operations' files (exo_pkg_prune), sparing the running ones. A directory
 * without an exit line that no waiter of this monitor owns (the agent stopped during its
 * operation) goes once it is older than timeout + keep + an hour: its tool is long dead. */
static void pkg_prune(void)
{
    const char *running[EXO_PKG_IN_FLIGHT];
    size_t n = 0;
    for (size_t i = 0; i < EXO_PKG_IN_FLIGHT; i++)
        if (m_.pkgops[i].used) running[n++] = m_.pkgops[i].id;
    int64_t keep = m_.cfg->packages_keep_ms / 1000;
    int64_t orphan = keep + m_.cfg->packages_timeout_ms / 1000 + 3600;
    size_t removed = exo_pkg_prune(m_.pkg_dir, (int64_t)time(NULL), keep, orphan, running, n);
    if (removed) exo_info("packages: removed the files of %zu ended operations", removed);
}

/* An operation that changes the system and runs without a waiter of this monitor's: one a
 * monitor before this one started, in a scope of its own (exo_pkg_find_running). */
static int pkg_running_elsewhere(char out[EXO_PKG_ID_LEN + 1])
{
    const char *ours[EXO_PKG_IN_FLIGHT];
    size_t n = 0;
    for (size_t i = 0; i < EXO_PKG_IN_FLIGHT; i++)
        if (m_.pkgops[i].used) ours[n++] = m_.pkgops[i].id;
    return exo_pkg_find_running(m_.pkg_dir, ours, n, out);
}

/* The names of a request for the log, bounded: they are of [A-Za-z0-9._+-] only (checked). */
static void pkg_names_text(const exo_priv_field_t *names, int n, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (used + names[i].len + 6 >= cap) {
            snprintf(out + used, cap - used, " ...");
            return;
        }
        used += (size_t)snprintf(out + used, cap - used, " %.*s", (int)names[i].len, names[i].p);
    }
}

/* PKG_START: the fields are checked (a request no honest worker sends kills it); the state of
 * the machine (another change running, no backend) is answered as an error code. The answer
 * comes at once; the operation goes on in a waiter process (pkgop_run.c). */
static const char *op_pkg_start(const exo_priv_msg_t *m)
{
    const char *why = exo_pkgop_check_start(m_.cfg, m->f, m->n);
    if (why) return why;
    exo_pkg_action_t a = (exo_pkg_action_t)exo_pkg_action_parse(m->f[0].p, m->f[0].len);
    exo_pkg_backend_t b = exo_pkg_backend(m_.cfg);
    if (b == EXO_PKG_NONE) {
        answer_status(
            m->op, m->seq, "no_backend",
            m_.cfg->packages_backend == EXO_PKG_CHOICE_NONE
                ? "package operations are disabled ([packages] backend = none)"
                : "no package manager: neither PackageKit nor /usr/bin/apt-get nor /usr/bin/dnf");
        return NULL;
    }
    pkgop_t *slot = NULL;
    for (size_t i = 0; i < EXO_PKG_IN_FLIGHT; i++) {
        pkgop_t *p = &m_.pkgops[i];
        if (p->used && p->changes && exo_pkg_action_changes(a)) {
            char busy[128];
            snprintf(busy, sizeof(busy), "another package %s is running (operation %s)",
                     exo_pkg_action_name(p->action), p->id);
            answer_status(m->op, m->seq, "busy", busy);
            return NULL;
        }
        if (!p->used && slot == NULL) slot = p;
    }
    if (slot == NULL) {
        answer_status(m->op, m->seq, "busy", "too many package operations are running");
        return NULL;
    }
    /* One that an earlier monitor started (before the agent restarted) runs on in its scope. */
    char other[EXO_PKG_ID_LEN + 1];
    if (exo_pkg_action_changes(a) && pkg_running_elsewhere(other)) {
        char busy[128];
        snprintf(busy, sizeof(busy), "another package operation is running (operation %s)", other);
        answer_status(m->op, m->seq, "busy", busy);
        return NULL;
    }
    static exo_pkg_cmd_t cmd;
    exo_priv_field_t names[EXO_PKG_NAMES_MAX];
    int n = exo_pkg_names_split(m->f[1].p, m->f[1].len, names, EXO_PKG_NAMES_MAX);
    const char *err = NULL;
    char id[EXO_PKG_ID_LEN + 1], dir[4300];
    int log_fd = -1, status_fd = -1;
    if (n < 0 || exo_pkg_cmd_build(&cmd, b, a, m_.cfg->packages_lock_timeout_ms / 1000, names,
                                   (size_t)n) < 0) {
        err = "cannot build the command line";
    } else if (exo_pkg_dir_ready(m_.pkg_dir, &err) == 0) {
        pkg_prune();
        if (exo_pkg_new_id(id) < 0)
            err = "no random bytes for an id";
        else if (exo_pkg_create(m_.pkg_dir, id, &log_fd, &status_fd, &err) == 0)
            snprintf(dir, sizeof(dir), "%s/%s", m_.pkg_dir, id);
        /* The run lock, before the fork: no poll can find the operation without it. */
        if (err == NULL && exo_pkg_lock_run(log_fd) < 0) {
            err = "cannot lock the operation's log";
            close(log_fd);
            close(status_fd);
            exo_pkg_remove(m_.pkg_dir, id);
        }
    }
    if (err != NULL) {
        exo_error("packages: cannot start %s: %s", exo_pkg_action_name(a), err);
        answer_status(m->op, m->seq, "failed", err);
        return NULL;
    }
    exo_pkg_run_t run = {.cmd = &cmd,
                         .id = id,
                         .action = exo_pkg_action_name(a),
                         .dir = dir,
                         .log_fd = log_fd,
                         .status_fd = cmd.status_fd ? status_fd : -1,
                         .scope = exo_pkg_scope_wanted(a),
                         .timeout_ms = m_.cfg->packages_timeout_ms};
    pid_t pid = fork();
    if (pid == 0) {
        /* Its own process group; the tool gets another (pkgop_run.c). */
        setpgid(0, 0);
        close_monitor_fds();
        OPENSSL_cleanse(m_.key, sizeof(m_.key));
        if (run.status_fd < 0) close(status_fd);
        exo_pkgop_waiter(&run);
    }
    close(log_fd);
    close(status_fd);
    if (pid < 0) {
        int e = errno;
        exo_error("packages: cannot fork for %s: %s", exo_pkg_action_name(a), strerror(e));
        exo_pkg_remove(m_.pkg_dir, id);
        answer_status(m->op, m->seq, "failed", strerror(e));
        return NULL;
    }
    setpgid(pid, pid);
    memset(slot, 0, sizeof(*slot));
    slot->used = 1;
    slot->pid = pid;
    slot->action = a;
    slot->changes = exo_pkg_action_changes(a);
    slot->deadline = now_ms() + m_.cfg->packages_timeout_ms + PKGOP_GRACE_MS;
    memcpy(slot->id, id, sizeof(slot->id));
    char text[512];
    pkg_names_text(names, n, text, sizeof(text));
    exo_info("packages: started %s%s (operation %s, %s)", exo_pkg_action_name(a), text, id,
             exo_pkg_backend_name(b));
    exo_priv_field_t f[3] = {{"ok", 2}, {id, EXO_PKG_ID_LEN}, {exo_pkg_backend_name(b), 3}};
    answer(m->op, m->seq, f, 3);
    return NULL;
}

/* 1 when a waiter of this monitor's runs operation id. */
static int pkg_ours(const char *id)
{
    for (size_t i = 0; i < EXO_PKG_IN_FLIGHT; i++)
        if (m_.pkgops[i].used && strcmp(m_.pkgops[i].id, id) == 0) return 1;
    return 0;
}

/* PKG_POLL: id, log offset, status offset -> the state and the slices (exo_pkg_poll_read). */
static const char *op_pkg_poll(const exo_priv_msg_t *m)
{
    uint64_t lo = 0, so = 0;
    const char *why = exo_pkgop_check_poll(m->f, m->n, &lo, &so);
    if (why) return why;
    char id[EXO_PKG_ID_LEN + 1];
    memcpy(id, m->f[0].p, EXO_PKG_ID_LEN);
    id[EXO_PKG_ID_LEN] = '\0';
    static exo_pkg_poll_t p;
    if (exo_pkg_poll_read(m_.pkg_dir, id, lo, so, &p) < 0) {
        answer_status(m->op, m->seq, "not_found",
                      "no such package operation (never started, or its files were removed "
                      "after [packages] keep)");
        return NULL;
    }
    if (p.lost && !pkg_ours(id)) {
        /* Nothing runs it and nothing wrote its end (a waiter killed with the agent before
         * scopes, a machine that rebooted): it ends here, for good. A waiter of this monitor's
         * is left to pkg_reaped, which knows more. */
        char dir[4300];
        snprintf(dir, sizeof(dir), "%s/%s", m_.pkg_dir, id);
        int rc = exo_pkg_write_exit(dir, "lost");
        if (rc < 0) exo_error("packages: cannot write %s/exit: %s", dir, strerror(-rc));
        exo_warn("packages: operation %s ended without an exit line; recorded it as lost", id);
        if (exo_pkg_poll_read(m_.pkg_dir, id, lo, so, &p) < 0) {
            answer_status(m->op, m->seq, "not_found", "the package operation's files are gone");
            return NULL;
        }
    }
    char lsz[24], ssz[24];
    snprintf(lsz, sizeof(lsz), "%llu", (unsigned long long)p.log_size);
    snprintf(ssz, sizeof(ssz), "%llu", (unsigned long long)p.status_size);
    exo_priv_field_t f[7] = {{"ok", 2},
                             {p.done ? "done" : "running", p.done ? 4 : 7},
                             {p.exit, strlen(p.exit)},
                             {p.log, p.log_len},
                             {p.status, p.status_len},
                             {lsz, strlen(lsz)},
                             {ssz, strlen(ssz)}};
    answer(m->op, m->seq, f, 7);
    return NULL;
}

/* A waiter ended: it wrote the exit line, or (killed at the deadline, or broken) the monitor
 * writes one so that polls see the operation end. */
static void pkg_reaped(pkgop_t *p, int status)
{
    char dir[4300];
    snprintf(dir, sizeof(dir), "%s/%s", m_.pkg_dir, p->id);
    char line[EXO_PKG_EXIT_MAX] = "";
    if (exo_pkg_read_exit(m_.pkg_dir, p->id, line, sizeof(line)) <= 0) {
        snprintf(line, sizeof(line), "%s", p->killed ? "timeout" : "lost");
        int rc = exo_pkg_write_exit(dir, line);
        if (rc < 0) exo_error("packages: cannot write %s/exit: %s", dir, strerror(-rc));
        if (!p->killed)
            exo_error("packages: the waiter of operation %s ended (status %d) without an exit "
                      "line",
                      p->id, status);
    }
    exo_info("packages: %s (operation %s) ended: %s", exo_pkg_action_name(p->action), p->id, line);
    memset(p, 0, sizeof(*p));
}

/* The permit table: every operation the worker may ask for. */
static const struct {
    uint32_t op;
    const char *(*handle)(const exo_priv_msg_t *m);
} permits[] = {
    {EXO_OP_LOGIN, op_login},
    {EXO_OP_REVOKE, op_revoke},
    {EXO_OP_READY, op_ready},
    {EXO_OP_LOAD_SAMPLE, op_load_sample},
    {EXO_OP_LOAD_HISTORY, op_load_history},
    {EXO_OP_MOUNT_PROBE, op_mount},
    {EXO_OP_MOUNT_MKFS, op_mount},
    {EXO_OP_MOUNT_MOUNT, op_mount},
    {EXO_OP_MOUNT_UNMOUNT, op_mount},
    {EXO_OP_MOUNT_CEPHFS, op_mount},
    {EXO_OP_JOB_PUT, op_job_put},
    {EXO_OP_JOB_LIST, op_job_list},
    {EXO_OP_PKG_START, op_pkg_start},
    {EXO_OP_PKG_POLL, op_pkg_poll},
};

static void worker_readable(void)
{
    for (;;) {
        ssize_t n = recv(m_.wfd, m_.buf, sizeof(m_.buf), MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            /* The worker closed its end; its exit (SIGCHLD) follows. */
            close(m_.wfd);
            m_.wfd = -1;
            return;
        }
        const char *why = NULL;
        exo_priv_msg_t m;
        if ((size_t)n > EXO_PRIV_MAX_MESSAGE) {
            why = "a message over the size limit";
        } else if (exo_priv_decode(m_.buf, (size_t)n, &m, &why) == 0) {
            why = "a request for an operation that is not permitted";
            for (size_t i = 0; i < sizeof(permits) / sizeof(permits[0]); i++)
                if (permits[i].op == m.op) why = permits[i].handle(&m);
        } else {
            static char framing[96];
            snprintf(framing, sizeof(framing), "a malformed message (%s)", why);
            why = framing;
        }
        OPENSSL_cleanse(m_.buf, (size_t)n < sizeof(m_.buf) ? (size_t)n : sizeof(m_.buf));
        if (why) {
            kill_worker(why);
            return;
        }
        if (m_.wfd < 0) return;
    }
}

/* ---- signals and the loop ---------------------------------------------------------------- */

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == m_.worker) {
            worker_exited(status);
            continue;
        }
        for (size_t i = 0; i < m_.n_logins; i++) {
            login_t *l = &m_.logins[i];
            if (!l->used || l->pid != pid) continue;
            l->pid = 0;
            if (l->fd >= 0) login_read(l);
            login_free_if_done(l);
        }
        for (size_t i = 0; i < m_.n_jobs; i++) {
            mountjob_t *j = &m_.jobs[i];
            if (!j->used || j->pid != pid) continue;
            j->pid = 0;
            if (j->fd >= 0) mountjob_read(j);
            mountjob_free_if_done(j);
        }
        for (size_t i = 0; i < EXO_PKG_IN_FLIGHT; i++)
            if (m_.pkgops[i].used && m_.pkgops[i].pid == pid) pkg_reaped(&m_.pkgops[i], status);
    }
}

static void stop(int sig)
{
    const char *why = sig == SIGINT ? "SIGINT" : "SIGTERM";
    if (m_.stopping) return;
    m_.stopping = 1;
    exo_info("monitor: %s: stopping the worker", why);
    exo_sd_notify("STOPPING=1");
    /* New connections are refused from now on, as the draining worker closes its copies. */
    for (size_t i = 0; i < m_.prep.n_fds; i++) {
        if (m_.prep.fds[i].fd >= 0) close(m_.prep.fds[i].fd);
        m_.prep.fds[i].fd = -1;
    }
    if (m_.worker > 0) {
        kill(m_.worker, sig);
        m_.stop_deadline = now_ms() + m_.cfg->drain_timeout_ms + 5000;
    } else {
        m_.done = 1;
    }
}

static void on_signal(void)
{
    struct signalfd_siginfo si;
    while (read(m_.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGCHLD)
            reap();
        else if (si.ssi_signo == SIGHUP && m_.worker > 0)
            kill(m_.worker, SIGHUP);
        else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
            stop((int)si.ssi_signo);
    }
}

static void check_deadlines(uint64_t now)
{
    for (size_t i = 0; i < m_.n_logins; i++) {
        login_t *l = &m_.logins[i];
        if (!l->used || l->fd < 0 || now < l->deadline) continue;
        if (l->pid > 0) kill(l->pid, SIGKILL);
        close(l->fd);
        l->fd = -1;
        finish_login(l, -1, "the PAM check took longer than pam_timeout");
        login_free_if_done(l);
    }
    for (size_t i = 0; i < m_.n_jobs; i++) {
        mountjob_t *j = &m_.jobs[i];
        if (!j->used || j->fd < 0 || now < j->deadline) continue;
        if (j->pid > 0) kill(-j->pid, SIGKILL);
        close(j->fd);
        j->fd = -1;
        exo_warn("mounts: operation %u took too long; killed it", (unsigned)j->op);
        if (j->gen == m_.gen && m_.wfd >= 0)
            answer_status(j->op, j->seq, "timeout", "the operation did not finish in time");
        mountjob_free_if_done(j);
    }
    for (size_t i = 0; i < EXO_PKG_IN_FLIGHT; i++) {
        pkgop_t *p = &m_.pkgops[i];
        if (!p->used || p->killed || now < p->deadline) continue;
        exo_warn("packages: the waiter of operation %s outlived its deadline; killed it", p->id);
        kill(-p->pid, SIGKILL);
        p->killed = 1;
    }
    if (m_.stopping && m_.worker > 0 && now >= m_.stop_deadline) {
        exo_error("monitor: the worker did not stop in time; killing it");
        kill(m_.worker, SIGKILL);
        m_.stop_deadline = now + 60000;
    }
    if (!m_.stopping && m_.worker == 0 && m_.restart_at && now >= m_.restart_at) start_worker();
}

static int next_timeout(uint64_t now)
{
    uint64_t next = now + 60000;
    for (size_t i = 0; i < m_.n_logins; i++)
        if (m_.logins[i].used && m_.logins[i].fd >= 0 && m_.logins[i].deadline < next)
            next = m_.logins[i].deadline;
    for (size_t i = 0; i < m_.n_jobs; i++)
        if (m_.jobs[i].used && m_.jobs[i].fd >= 0 && m_.jobs[i].deadline < next)
            next = m_.jobs[i].deadline;
    for (size_t i = 0; i < EXO_PKG_IN_FLIGHT; i++)
        if (m_.pkgops[i].used && !m_.pkgops[i].killed && m_.pkgops[i].deadline < next)
            next = m_.pkgops[i].deadline;
    if (m_.stopping && m_.worker > 0 && m_.stop_deadline < next) next = m_.stop_deadline;
    if (!m_.stopping && m_.worker == 0 && m_.restart_at && m_.restart_at < next)
        next = m_.restart_at;
    return next <= now ? 0 : (int)(next - now);
}

static void loop(void)
{
    size_t cap = 2 + m_.n_logins + m_.n_jobs;
    struct pollfd *pfds = calloc(cap, sizeof(*pfds));
    login_t **owners = calloc(cap, sizeof(*owners));
    mountjob_t **jobs = calloc(cap, sizeof(*jobs));
    if (pfds == NULL || owners == NULL || jobs == NULL) {
        free(pfds);
        free(owners);
        free(jobs);
        exo_error("monitor: out of memory");
        m_.exit_code = 1;
        return;
    }
    while (!m_.done) {
        size_t n = 0;
        pfds[n++] = (struct pollfd){.fd = m_.sigfd, .events = POLLIN};
        if (m_.wfd >= 0) pfds[n++] = (struct pollfd){.fd = m_.wfd, .events = POLLIN};
        size_t first_login = n;
        for (size_t i = 0; i < m_.n_logins; i++) {
            if (!m_.logins[i].used || m_.logins[i].fd < 0) continue;
            owners[n] = &m_.logins[i];
            pfds[n++] = (struct pollfd){.fd = m_.logins[i].fd, .events = POLLIN};
        }
        size_t first_job = n;
        for (size_t i = 0; i < m_.n_jobs; i++) {
            if (!m_.jobs[i].used || m_.jobs[i].fd < 0) continue;
            jobs[n] = &m_.jobs[i];
            pfds[n++] = (struct pollfd){.fd = m_.jobs[i].fd, .events = POLLIN};
        }
        int rc = poll(pfds, n, next_timeout(now_ms()));
        if (rc < 0 && errno != EINTR) {
            exo_error("monitor: poll: %s", strerror(errno));
            break;
        }
        if (rc > 0) {
            if (pfds[0].revents) on_signal();
            if (first_login == 2 && pfds[1].revents && m_.wfd == pfds[1].fd) worker_readable();
            for (size_t i = first_login; i < first_job; i++) {
                login_t *l = owners[i];
                if (pfds[i].revents && l->used && l->fd == pfds[i].fd) {
                    login_read(l);
                    login_free_if_done(l);
                }
            }
            for (size_t i = first_job; i < n; i++) {
                mountjob_t *j = jobs[i];
                if (pfds[i].revents && j->used && j->fd == pfds[i].fd) {
                    mountjob_read(j);
                    mountjob_free_if_done(j);
                }
            }
        }
        check_deadlines(now_ms());
    }
    free(pfds);
    free(owners);
    free(jobs);
}

int exo_monitor_run(exo_config_t *cfg, int dev)
{
    char err[1024];
    memset(&m_, 0, sizeof(m_));
    m_.cfg = cfg;
    m_.dev = dev;
    m_.self = getpid();
    m_.wfd = -1;
    m_.sigfd = -1;
    exo_revoked_init(&m_.revoked);

    struct passwd *pw = getpwnam(cfg->user);
    if (pw == NULL) {
        exo_error("cannot start: the worker's user '%s' does not exist (the package creates it; "
                  "set [server] user to another unprivileged user)",
                  cfg->user);
        return 1;
    }
    if (pw->pw_uid == 0) {
        exo_error("cannot start: the worker's user '%s' is root; it must be unprivileged",
                  cfg->user);
        return 1;
    }
    m_.wuid = pw->pw_uid;
    m_.wgid = pw->pw_gid;
    if (exo_prepare(cfg, &m_.prep, err, sizeof(err)) < 0) {
        exo_error("cannot start: %s", err);
        return 1;
    }
    int code = 1;
    if (mkdir(cfg->state_dir, 0700) < 0 && errno != EEXIST) {
        exo_error("cannot start: state_dir %s: %s", cfg->state_dir, strerror(errno));
        goto out;
    }
    if (exo_token_key_load_or_create(cfg->state_dir, m_.key, err, sizeof(err)) < 0) {
        exo_error("cannot start: %s", err);
        goto out;
    }
    snprintf(m_.revoked_path, sizeof(m_.revoked_path), "%s/revoked-tokens", cfg->state_dir);
    size_t skipped = 0;
    if (exo_revoked_load(&m_.revoked, m_.revoked_path, (int64_t)time(NULL), &skipped, err,
                         sizeof(err)) < 0) {
        exo_error("cannot start: %s", err);
        goto out;
    }
    if (skipped) exo_warn("monitor: %s: skipped %zu malformed lines", m_.revoked_path, skipped);
    console_device();
    if (load_history_start() < 0) goto out;
    if (jobs_start() < 0) goto out;
    snprintf(m_.pkg_dir, sizeof(m_.pkg_dir), "%s/packages", cfg->state_dir);
    /* Found before the worker is forked, so that both report the same backend. */
    exo_info("monitor: package backend: %s", exo_pkg_backend_name(exo_pkg_backend(cfg)));
    m_.n_logins = cfg->max_logins_in_flight;
    m_.logins = calloc(m_.n_logins, sizeof(*m_.logins));
    m_.backoff = calloc(BACKOFF_SLOTS, sizeof(*m_.backoff));
    m_.n_jobs = cfg->mounts_max_in_flight;
    m_.jobs = calloc(m_.n_jobs, sizeof(*m_.jobs));
    if (m_.logins == NULL || m_.backoff == NULL || m_.jobs == NULL) {
        exo_error("cannot start: out of memory");
        goto out;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    m_.sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (m_.sigfd < 0) {
        exo_error("cannot start: signalfd: %s", strerror(errno));
        goto out;
    }
    exo_info("monitor %d: running as root; the worker runs as %s", (int)m_.self, cfg->user);
    start_worker();
    if (m_.worker > 0) {
        loop();
        code = m_.exit_code;
    }
out:
    for (size_t i = 0; m_.logins && i < m_.n_logins; i++) {
        login_t *l = &m_.logins[i];
        if (!l->used) continue;
        if (l->pid > 0) {
            kill(l->pid, SIGKILL);
            waitpid(l->pid, NULL, 0);
        }
        if (l->fd >= 0) close(l->fd);
    }
    for (size_t i = 0; m_.jobs && i < m_.n_jobs; i++) {
        mountjob_t *j = &m_.jobs[i];
        if (!j->used) continue;
        if (j->pid > 0) {
            kill(-j->pid, SIGKILL);
            waitpid(j->pid, NULL, 0);
        }
        if (j->fd >= 0) close(j->fd);
    }
    /* Package operations are left to end on their own: killing dpkg halfway breaks the system.
     * Under systemd the changing ones run in scopes of their own, which stopping the service
     * does not touch; the others (refresh, list) go with its control group. */
    for (size_t i = 0; i < EXO_PKG_IN_FLIGHT; i++)
        if (m_.pkgops[i].used)
            exo_warn("packages: operation %s is still running; left to finish", m_.pkgops[i].id);
    if (m_.worker > 0) {
        kill(m_.worker, SIGKILL);
        waitpid(m_.worker, NULL, 0);
    }
    if (m_.sigfd >= 0) close(m_.sigfd);
    if (m_.wfd >= 0) close(m_.wfd);
    exo_prepared_close(&m_.prep);
    exo_revoked_free(&m_.revoked);
    exo_load_ring_free(&m_.load);
    exo_job_store_free(&m_.job_store);
    OPENSSL_cleanse(m_.key, sizeof(m_.key));
    free(m_.logins);
    free(m_.jobs);
    free(m_.backoff);
    return code;
}
