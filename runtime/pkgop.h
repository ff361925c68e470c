/* The monitor's package operations (privsep.h EXO_OP_PKG_START, EXO_OP_PKG_POLL): the checks
 * of what the worker asks for, the fixed command lines of each action and backend, and the
 * slicing of an operation's files for a poll.
 *
 * A start request has two fields: the action, and the package names joined with "\n" ("" for
 * none). An operation runs as a job of its own, outside any request: PKG_START creates
 * state_dir/packages/<id>/ (0700, root) with the files `log` (the tool's stdout and stderr) and
 * `status` (apt's status fd, fd 3), forks a waiter in its own process group and answers at once.
 * The waiter (pkgop_run.c) runs the tool in another process group of its own, kills that group
 * at [packages] timeout, and writes `exit` atomically: one line "exit N", "signal N" or
 * "timeout" ("lost" when the monitor found the waiter gone without one). PKG_POLL reads the
 * three files from the offsets the worker gives. Operations are never cancelled: killing dpkg
 * halfway leaves the system broken.
 *
 * Answers (field 0 "ok" or an error code):
 *   ok START: id (32 lowercase hex), backend ("apt" | "dnf" | "packagekit")
 *   ok POLL:  state ("running" | "done"), exit ("" while running), log, status, log_size,
 *             status_size (the files' current sizes, decimal)
 *   error:    message ("busy", "no_backend", "failed" for START; "not_found" for POLL)
 *
 * The worker's side is runtime/l_packages.c (module "exo.packages"). exo_pkgop_check_start is
 * used by both: the binding answers "invalid" for what the monitor would take for a
 * compromised worker (and kill it for). */
#ifndef EXO_PKGOP_H
#define EXO_PKGOP_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "privsep.h"

#define EXO_PKG_NAMES_MAX 64 /* package names in one request */
#define EXO_PKG_NAME_MAX 128 /* bytes of one package name */
/* Bytes of the names field (the names joined with "\n"): a message holds at most 8192 bytes
 * and 12 fields (privsep.h), so the names travel in one field, and 64 names of 128 bytes would
 * not fit. Real package names are a few dozen bytes. */
#define EXO_PKG_NAMES_BYTES 4096
#define EXO_PKG_ID_LEN 32     /* hex digits of an operation id (16 random bytes) */
#define EXO_PKG_POLL_MAX 3072 /* bytes of each file in one poll answer */
#define EXO_PKG_IN_FLIGHT 8   /* operations running at once (the monitor's table) */
#define EXO_PKG_ENDED_MAX 256 /* ended operations' directories kept, whatever their age */
#define EXO_PKG_EXIT_MAX 32   /* bytes of an exit line */
#define EXO_PKG_ARGV_MAX (12 + EXO_PKG_NAMES_MAX)
/* The agent's own packages (packaging/): what self_upgrade upgrades and self.check_updates
 * lists. The same names in the .deb and .rpm packaging. */
#define EXO_PKG_SELF_NAMES                                                                         \
    {                                                                                              \
        "exosphere-guest-agent", "exosphere-guest-agent-methods"                                   \
    }
#define EXO_PKG_SELF_COUNT 2
#define EXO_PKG_NAME_RULE                                                                          \
    "1 to 128 letters, digits, '.', '_', '+' or '-', not starting with '-' or '.', not ending "    \
    "with '-'"

typedef enum {
    EXO_PKG_NONE = 0,
    EXO_PKG_APT,
    EXO_PKG_DNF,
    EXO_PKG_PACKAGEKIT, /* PackageKit over the system D-Bus (pkgop_pk.c) */
} exo_pkg_backend_t;

typedef enum {
    EXO_PKG_REFRESH = 0,  /* apt-get update | dnf makecache */
    EXO_PKG_LIST,         /* what would be upgraded (a simulation: no lock, no change) */
    EXO_PKG_INSTALL,      /* upgrade the named packages */
    EXO_PKG_UPGRADE_ALL,  /* upgrade everything */
    EXO_PKG_SELF_UPGRADE, /* upgrade the agent's own packages (EXO_PKG_SELF_NAMES) */
    EXO_PKG_ACTIONS
} exo_pkg_action_t;

/* "apt", "dnf", "packagekit" or "none". */
const char *exo_pkg_backend_name(exo_pkg_backend_t b);
/* The backend of this host: as [packages] backend names it, or with "auto" PackageKit when its
 * D-Bus service is installed (EXO_PK_SERVICE_FILE: the bus starts the daemon on the first
 * call), else apt when /usr/bin/apt-get exists, else dnf when /usr/bin/dnf does, else none.
 * Found once and kept: the monitor asks before it forks the worker, so both report the same
 * one. */
exo_pkg_backend_t exo_pkg_backend(const exo_config_t *cfg);
/* The action named by the len bytes at p, or -1. */
int exo_pkg_action_parse(const char *p, size_t len);
const char *exo_pkg_action_name(exo_pkg_action_t a);
/* 1 for the actions that change the system (install, upgrade_all, self_upgrade): one at a
 * time. */
int exo_pkg_action_changes(exo_pkg_action_t a);
/* A package name: 1..128 bytes of [A-Za-z0-9._+-], not starting with '-' or '.', and not
 * ending with '-', which apt-get install reads as "remove this package". */
int exo_pkg_name_ok(const char *p, size_t len);
/* 1 if the name is on [packages] allow. */
int exo_pkg_allowed(const exo_config_t *cfg, const char *p, size_t len);
/* An operation id: EXO_PKG_ID_LEN lowercase hex digits. */
int exo_pkg_id_ok(const char *p, size_t len);

/* Splits the names field (names joined with "\n") into at most max names (pointing into p).
 * Returns how many, or -1 if there are more than max. "" has none; an empty name ("a\n\nb", a
 * trailing "\n") is returned as one, for exo_pkg_name_ok to refuse. */
int exo_pkg_names_split(const char *p, size_t len, exo_priv_field_t *out, size_t max);
/* Checks a start request's fields (action, names): exactly 2 fields; a known action; the
 * names field at most EXO_PKG_NAMES_BYTES, 0..64 names, each exo_pkg_name_ok; refresh,
 * upgrade_all and self_upgrade take none, install 1..64, each on [packages] allow; upgrade_all
 * only with [packages] allow_all, self_upgrade only with [packages] self_upgrade. NULL when
 * the worker may send it, else why not. */
const char *exo_pkgop_check_start(const exo_config_t *cfg, const exo_priv_field_t *f, size_t n);
/* Checks a poll request's fields (id, log offset, status offset, the offsets decimal of at
 * most 15 digits) and parses the offsets. NULL or why not. */
const char *exo_pkgop_check_poll(const exo_priv_field_t *f, size_t n, uint64_t *log_off,
                                 uint64_t *status_off);

/* A tool's command line: the absolute path to exec and a NULL-terminated argv pointing into
 * the structure itself (so it must not be copied once built). */
typedef struct exo_pkg_cmd_s {
    const char *path;
    const char *argv[EXO_PKG_ARGV_MAX + 1];
    size_t argc;
    int status_fd; /* 1 when the tool writes progress lines to fd 3 */
    /* PackageKit's: no program is run, the tool process calls exo_pk_run (pkgop_pk.c) with
     * the action, the names (names[0..n_names)) and the lock timeout. path is NULL. */
    int packagekit;
    exo_pkg_action_t action;
    size_t n_names;
    uint32_t lock_timeout_s;
    char lock_opt[48];
    char names[EXO_PKG_NAMES_MAX][EXO_PKG_NAME_MAX + 1];
} exo_pkg_cmd_t;

/* Builds the fixed command line of action a on backend b with the n names (split from a
 * request exo_pkgop_check_start passed; self_upgrade takes EXO_PKG_SELF_NAMES instead); for
 * PackageKit, the same names and the action, with packagekit set. Returns 0, or -EINVAL for the
 * none backend or bad input. */
int exo_pkg_cmd_build(exo_pkg_cmd_t *c, exo_pkg_backend_t b, exo_pkg_action_t a,
                      uint32_t lock_timeout_s, const exo_priv_field_t *names, size_t n);

/* How many of the len bytes p read from a file at some offset a poll hands out (len is at most
 * EXO_PKG_POLL_MAX): all of them when at_end (the operation has ended and they reach the end of
 * the file); else up to the last newline, so that a reader gets whole lines; else, for a line
 * longer than a whole slice (len == EXO_PKG_POLL_MAX), the bytes up to the last complete UTF-8
 * sequence; else none (a line still being written). */
size_t exo_pkg_poll_cut(const char *p, size_t len, int at_end);

/* Writes the exit line (with its newline) to dir/exit atomically, mode 0600. Returns 0 or a
 * negative errno. */
int exo_pkg_write_exit(const char *dir, const char *line);

/* What the waiter needs: the tool, its files and its deadline. */
typedef struct exo_pkg_run_s {
    const exo_pkg_cmd_t *cmd;
    const char *id;     /* the operation's id */
    const char *action; /* its action's name, for the scope's description */
    const char *dir;    /* state_dir/packages/<id> */
    int log_fd;         /* opened for appending, 0600, with the run lock (exo_pkg_lock_run) */
    int status_fd;      /* the same, or -1 when the tool has no status fd */
    int scope;          /* move into a transient scope unit first (exo_pkg_scope_wanted) */
    uint64_t timeout_ms;
} exo_pkg_run_t;

/* The run lock: an exclusive flock on the operation's log, taken by the monitor before it
 * forks the waiter and held by the open file description the waiter and the tool share, so
 * it lasts exactly as long as one of them runs, whichever process started them. A poll that
 * finds no exit line and the lock free knows the operation is lost; a monitor that restarted
 * (the agent's own upgrade restarts it) finds the operations still running by their lock.
 * Returns 0 or a negative errno. */
int exo_pkg_lock_run(int log_fd);
/* 1 while pkg_dir/id's run lock is held (its waiter or tool runs), else 0. */
int exo_pkg_running(const char *pkg_dir, const char *id);
/* An operation without an exit line whose run lock is held, other than the n ids in skip:
 * its id in out and 1, or 0. At most 1024 directories are looked at. */
int exo_pkg_find_running(const char *pkg_dir, const char *const *skip, size_t n, char *out);

/* Whether operation a should leave the agent's control group: the changing ones, when
 * systemd is the init system (/run/systemd/system). Stopping or restarting the agent's
 * service kills what is left in its control group; dpkg killed halfway leaves the system
 * broken, and the agent's own upgrade restarts the service. */
int exo_pkg_scope_wanted(exo_pkg_action_t a);
/* Moves the calling process into a new transient scope unit,
 * exosphere-guest-agent-pkg-<id>.scope in system.slice (StartTransientUnit over systemd's
 * private socket, /run/systemd/private: no bus daemon needed), and waits until
 * /proc/self/cgroup shows it (at most 10 s). Children forked afterwards are in the scope too.
 * Returns 0, or -1 with why in err. */
int exo_pkg_enter_scope(const char *id, const char *action, char *err, size_t errlen);

/* The waiter, in the child the monitor forked (its own process group already): moves into
 * the operation's scope when r->scope says so (failing the operation with exit 127 and a log
 * line when it cannot: the tool must not run where an agent restart would kill it), runs the
 * tool in a process group of its own with a fixed environment, stdin from /dev/null, stdout and
 * stderr to log_fd and fd 3 to status_fd; kills the tool's group at the deadline; writes the
 * exit line before it lets go of the run lock. Never returns. */
void exo_pkgop_waiter(const exo_pkg_run_t *r) __attribute__((noreturn));

/* ---- PackageKit (pkgop_pk.c) ---------------------------------------------------------- */

#define EXO_PK_SERVICE_FILE "/usr/share/dbus-1/system-services/org.freedesktop.PackageKit.service"
#define EXO_PK_LINE_MAX 1024    /* bytes of one line the client writes, with its newline */
#define EXO_PK_UPDATES_MAX 5000 /* updates one operation handles (the worker lists as many) */
#define EXO_PK_ID_MAX 512       /* bytes of one package id ("name;version;arch;data") */

/* The PackageKit client, in the tool process instead of an execve (so it runs as root, in the
 * tool's process group, and the waiter's deadline and exit line apply as for apt): connects to
 * the system bus and runs c->action as one or more transactions of org.freedesktop.PackageKit,
 * with the hints interactive=false, locale=C.UTF-8, background=false. Writes a few readable
 * lines to log_fd and the events, one a line, to status_fd:
 *
 *   begin ROLE                        a transaction starts: refresh-cache, get-updates,
 *                                     resolve, update-packages
 *   status STATUS                     its Status property (PackageKit's names: wait, setup,
 *                                     running, query, download, install, update, cleanup,
 *                                     waiting-for-lock, finished, ...)
 *   percent N                         its Percentage property, 0..100 (not while unknown)
 *   package INFO NAME VERSION ARCH REPO
 *                                     the Package signal: INFO is PackageKit's info name
 *                                     (installed, available, security, bugfix, normal,
 *                                     downloading, updating, installing, finished, ...); the
 *                                     package id "name;version;arch;data" split, each part
 *                                     "-" when empty, REPO the data (the origin)
 *   severity INFO NAME VERSION ARCH REPO
 *                                     after a package line whose signal carried an update
 *                                     severity (PackageKit 1.2: the upper 16 bits of info;
 *                                     low, normal, important, critical, security, ...)
 *   item STATUS PERCENT NAME VERSION ARCH REPO
 *                                     the ItemProgress signal (PERCENT 101: unknown)
 *   restart TYPE NAME VERSION ARCH REPO
 *                                     the RequireRestart signal (system, session, ...)
 *   error CODE DETAILS                the ErrorCode signal (PackageKit's error names:
 *                                     cannot-get-lock, no-network, package-not-found,
 *                                     no-space-on-device, ...); or the client's own: dbus (a
 *                                     call failed; DETAILS the D-Bus error), daemon-gone (the
 *                                     service left the bus), too-many (more than
 *                                     EXO_PK_UPDATES_MAX updates)
 *   finished EXIT RUNTIME_MS          the Finished signal (success, failed, cancelled, ...)
 *   unknown NAME                      install: no repository knows the name
 *   not-installed NAME                install: known, not installed (nothing to do, as apt's
 *                                     --only-upgrade); self_upgrade: an agent package that is
 *                                     not installed, skipped
 *   up-to-date NAME                   install, self_upgrade: installed, no update
 *   retry ROLE                        the transaction failed with cannot-get-lock (PackageKit's
 *                                     apt backend gives up after about 10 s) before
 *                                     lock_timeout: started again
 *   lock-timeout SECONDS              waited for the lock that long ([packages] lock_timeout):
 *                                     the transaction was cancelled, or not started again
 *   done                              the action ended successfully
 *
 * Keywords and the order of fields are stable; DETAILS is free text (control characters made
 * spaces) and last; every line is cut to EXO_PK_LINE_MAX bytes. Actions: refresh is
 * RefreshCache(false); list is GetUpdates (restricted to names when some are given), then
 * Resolve(installed) of the updates' names for the installed versions; install and
 * self_upgrade are GetUpdates, Resolve of each name without an update, and UpdatePackages
 * (only-trusted) of the updates of the names; upgrade_all is UpdatePackages of every update.
 * Returns the exit status: 0 when the action succeeded, 1 when not. */
int exo_pk_run(const exo_pkg_cmd_t *c, int log_fd, int status_fd);

/* PackageKit's names of its enums (pk-enum.c), "unknown" for a value out of range. */
const char *exo_pk_status_name(uint32_t v);
const char *exo_pk_info_name(uint32_t v);
const char *exo_pk_error_name(uint32_t v);
const char *exo_pk_exit_name(uint32_t v);
const char *exo_pk_restart_name(uint32_t v);
/* Writes package id (name;version;arch;data) as "NAME VERSION ARCH REPO" into out: each part
 * "-" when empty, whitespace and control characters in a part made '_'. Returns 0, or -1 when
 * the id has not 4 parts, an empty name or does not fit in cap. */
int exo_pk_id_fields(const char *id, char *out, size_t cap);
/* Formats one line (printf-like) into out[EXO_PK_LINE_MAX]: control characters made spaces,
 * cut to fit, ending with "\n". Returns its length. */
size_t exo_pk_line(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the operations' files (the monitor's side; pkgop_run.c) ------------------------- */

/* state_dir/packages, made (or found) root's alone (0700). Returns 0 or -1 with *err. */
int exo_pkg_dir_ready(const char *pkg_dir, const char **err);
/* A new operation id: 16 random bytes (getrandom) as lowercase hex. Returns 0 or -1. */
int exo_pkg_new_id(char out[EXO_PKG_ID_LEN + 1]);
/* Creates pkg_dir/id/ (0700) with its log and status files (0600, empty, open for appending,
 * close-on-exec). Returns 0, or -1 with *err and nothing left behind. */
int exo_pkg_create(const char *pkg_dir, const char *id, int *log_fd, int *status_fd,
                   const char **err);
/* Removes pkg_dir/id with the files an operation leaves there. Returns 0 or -1. */
int exo_pkg_remove(const char *pkg_dir, const char *id);
/* Removes the directories of ended operations (those with an exit line) whose line is older
 * than keep_s, then the oldest ones until fewer than EXO_PKG_ENDED_MAX remain (room for the
 * one starting), so that operation after operation cannot fill the disk; and directories
 * without an exit line older than orphan_s whose run lock is free. The n_running ids in
 * running are never touched.
 * At most 1024 directories are looked at per call. Returns how many were removed. */
size_t exo_pkg_prune(const char *pkg_dir, int64_t now, int64_t keep_s, int64_t orphan_s,
                     const char *const *running, size_t n_running);
/* Reads pkg_dir/id/exit (without its newline) into line. Returns 1, or 0 when there is none
 * (yet). */
int exo_pkg_read_exit(const char *pkg_dir, const char *id, char *line, size_t cap);

/* What a poll answers. */
typedef struct exo_pkg_poll_s {
    int done;                    /* the exit line exists: log and status are complete */
    int lost;                    /* no exit line, and no process holds the run lock */
    char exit[EXO_PKG_EXIT_MAX]; /* "" while running */
    char log[EXO_PKG_POLL_MAX], status[EXO_PKG_POLL_MAX];
    size_t log_len, status_len;     /* the slices (exo_pkg_poll_cut) */
    uint64_t log_size, status_size; /* the files' sizes */
} exo_pkg_poll_t;

/* Reads operation id's state and the slices of its log and status from the offsets. The exit
 * line is read first: once it exists the files are complete, so a "done" answer never misses
 * their last bytes. Without one, the run lock tells a running operation from a lost one
 * (the exit line is read again after the lock is found free: the waiter writes it before it
 * lets go). Returns 0, or -ENOENT when there is no such operation. */
int exo_pkg_poll_read(const char *pkg_dir, const char *id, uint64_t log_off, uint64_t status_off,
                      exo_pkg_poll_t *out);

/* ---- the worker's binding (l_packages.c) ---------------------------------------------- */

struct lua_State;
/* Registers the module "exo.packages" in package.preload. */
void exo_packages_preload(struct lua_State *L);

#endif
