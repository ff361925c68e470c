/* The PackageKit client (pkgop.h exo_pk_run): runs in the tool process of a package operation,
 * where apt-get would be exec'd, and turns PackageKit's transactions into the lines of the
 * status file. It is a plain blocking sd-bus client: the process does nothing else, and the
 * waiter above it enforces [packages] timeout by killing it. Everything it keeps is bounded:
 * at most EXO_PK_UPDATES_MAX package ids of at most EXO_PK_ID_MAX bytes, lines of at most
 * EXO_PK_LINE_MAX bytes. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include "pkgop.h"

#define PK_NAME "org.freedesktop.PackageKit"
#define PK_PATH "/org/freedesktop/PackageKit"
#define PK_TX_IFACE "org.freedesktop.PackageKit.Transaction"

/* PackageKit's bitfields: a filter or flag enum value v is the bit 1 << v. */
#define PK_FILTER_NONE (1ull << 1)
#define PK_FILTER_INSTALLED (1ull << 2)
#define PK_FLAG_ONLY_TRUSTED (1ull << 1)
#define PK_STATUS_WAIT 1u
#define PK_STATUS_SETUP 2u
#define PK_STATUS_LOADING_CACHE 27u
#define PK_STATUS_WAITING_FOR_LOCK 30u
#define PK_EXIT_SUCCESS 1u
#define PK_ERROR_CANNOT_GET_LOCK 26u
#define PK_PERCENT_UNKNOWN 101u
/* How long to wait for a cancelled transaction's Finished, and at most between checks. */
#define CANCEL_WAIT_MS 30000
#define WAIT_SLICE_MS 1000
#define RETRY_MS 1000 /* between transactions that failed for the lock */

/* ---- PackageKit's enum names (pk-enum.c, PackageKit 1.2) ------------------------------ */

static const char *const status_names[] = {"unknown",
                                           "wait",
                                           "setup",
                                           "running",
                                           "query",
                                           "info",
                                           "remove",
                                           "refresh-cache",
                                           "download",
                                           "install",
                                           "update",
                                           "cleanup",
                                           "obsolete",
                                           "dep-resolve",
                                           "sig-check",
                                           "test-commit",
                                           "commit",
                                           "request",
                                           "finished",
                                           "cancel",
                                           "download-repository",
                                           "download-packagelist",
                                           "download-filelist",
                                           "download-changelog",
                                           "download-group",
                                           "download-updateinfo",
                                           "repackaging",
                                           "loading-cache",
                                           "scan-applications",
                                           "generate-package-list",
                                           "waiting-for-lock",
                                           "waiting-for-auth",
                                           "scan-process-list",
                                           "check-executable-files",
                                           "check-libraries",
                                           "copy-files",
                                           "run-hook"};
static const char *const info_names[] = {"unknown",
                                         "installed",
                                         "available",
                                         "low",
                                         "enhancement",
                                         "normal",
                                         "bugfix",
                                         "important",
                                         "security",
                                         "blocked",
                                         "downloading",
                                         "updating",
                                         "installing",
                                         "removing",
                                         "cleanup",
                                         "obsoleting",
                                         "collection-installed",
                                         "collection-available",
                                         "finished",
                                         "reinstalling",
                                         "downgrading",
                                         "preparing",
                                         "decompressing",
                                         "untrusted",
                                         "trusted",
                                         "unavailable",
                                         "critical"};
static const char *const error_names[] = {"unknown",
                                          "oom",
                                          "no-network",
                                          "not-supported",
                                          "internal-error",
                                          "gpg-failure",
                                          "package-id-invalid",
                                          "package-not-installed",
                                          "package-not-found",
                                          "package-already-installed",
                                          "package-download-failed",
                                          "group-not-found",
                                          "group-list-invalid",
                                          "dep-resolution-failed",
                                          "filter-invalid",
                                          "create-thread-failed",
                                          "transaction-error",
                                          "transaction-cancelled",
                                          "no-cache",
                                          "repo-not-found",
                                          "cannot-remove-system-package",
                                          "process-kill",
                                          "failed-initialization",
                                          "failed-finalise",
                                          "failed-config-parsing",
                                          "cannot-cancel",
                                          "cannot-get-lock",
                                          "no-packages-to-update",
                                          "cannot-write-repo-config",
                                          "local-install-failed",
                                          "bad-gpg-signature",
                                          "missing-gpg-signature",
                                          "cannot-install-source-package",
                                          "repo-configuration-error",
                                          "no-license-agreement",
                                          "file-conflicts",
                                          "package-conflicts",
                                          "repo-not-available",
                                          "invalid-package-file",
                                          "package-install-blocked",
                                          "package-corrupt",
                                          "all-packages-already-installed",
                                          "file-not-found",
                                          "no-more-mirrors-to-try",
                                          "no-distro-upgrade-data",
                                          "incompatible-architecture",
                                          "no-space-on-device",
                                          "media-change-required",
                                          "not-authorized",
                                          "update-not-found",
                                          "cannot-install-repo-unsigned",
                                          "cannot-update-repo-unsigned",
                                          "cannot-get-filelist",
                                          "cannot-get-requires",
                                          "cannot-disable-repository",
                                          "restricted-download",
                                          "package-failed-to-configure",
                                          "package-failed-to-build",
                                          "package-failed-to-install",
                                          "package-failed-to-remove",
                                          "failed-due-to-running-process",
                                          "package-database-changed",
                                          "provide-type-not-supported",
                                          "install-root-invalid",
                                          "cannot-fetch-sources",
                                          "cancelled-priority",
                                          "unfinished-transaction",
                                          "lock-required",
                                          "repo-already-set"};
static const char *const exit_names[] = {"unknown",          "success",
                                         "failed",           "cancelled",
                                         "key-required",     "eula-required",
                                         "killed",           "media-change-required",
                                         "need-untrusted",   "cancelled-priority",
                                         "skip-transaction", "repair-required"};
static const char *const restart_names[] = {
    "unknown", "none", "application", "session", "system", "security-session", "security-system"};

#define NAME_OF(table, v) ((v) < sizeof(table) / sizeof(table[0]) ? table[v] : "unknown")

const char *exo_pk_status_name(uint32_t v)
{
    return NAME_OF(status_names, v);
}
const char *exo_pk_info_name(uint32_t v)
{
    return NAME_OF(info_names, v);
}
const char *exo_pk_error_name(uint32_t v)
{
    return NAME_OF(error_names, v);
}
const char *exo_pk_exit_name(uint32_t v)
{
    return NAME_OF(exit_names, v);
}
const char *exo_pk_restart_name(uint32_t v)
{
    return NAME_OF(restart_names, v);
}

/* ---- lines ---------------------------------------------------------------------------- */

int exo_pk_id_fields(const char *id, char *out, size_t cap)
{
    size_t o = 0, part = 0, part_len = 0;
    for (const char *p = id;; p++) {
        if (*p == ';' || *p == '\0') {
            if (part_len == 0) {
                if (part == 0) return -1; /* no name */
                if (o + 1 >= cap) return -1;
                out[o++] = '-';
            }
            if (*p == '\0') break;
            if (++part > 3) return -1;
            if (o + 1 >= cap) return -1;
            out[o++] = ' ';
            part_len = 0;
            continue;
        }
        unsigned char ch = (unsigned char)*p;
        if (o + 1 >= cap) return -1;
        out[o++] = ch <= ' ' || ch == 0x7f ? '_' : (char)ch;
        part_len++;
    }
    if (part != 3) return -1;
    out[o] = '\0';
    return 0;
}

size_t exo_pk_line(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, EXO_PK_LINE_MAX - 1, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n > EXO_PK_LINE_MAX - 2 ? EXO_PK_LINE_MAX - 2 : (size_t)n;
    /* Cut inside a UTF-8 sequence: drop its lead and continuation bytes. */
    if (n > 0 && (size_t)n > len) {
        size_t back = len;
        while (back > 0 && ((unsigned char)out[back - 1] & 0xc0) == 0x80)
            back--;
        if (back > 0 && (unsigned char)out[back - 1] >= 0xc0) len = back - 1;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)out[i] < ' ' || out[i] == 0x7f) out[i] = ' ';
    out[len++] = '\n';
    out[len] = '\0';
    return len;
}

/* ---- the client ------------------------------------------------------------------------ */

typedef struct pk_s {
    const exo_pkg_cmd_t *cmd;
    sd_bus *bus;
    int log_fd, status_fd;
    /* The transaction running. */
    char path[256];
    int finished;
    uint32_t exit;
    int errors;       /* ErrorCode signals in this transaction */
    int waiting;      /* its status is waiting-for-lock */
    uint64_t wait_ms; /* lock waited, over the whole operation */
    uint64_t wait_at; /* when the present wait began */
    int cancelled;    /* cancelled for the lock timeout */
    int lock_error;   /* an ErrorCode cannot-get-lock in this transaction */
    int gone;         /* the daemon left the bus */
    uint32_t percent; /* the last one written */
    /* GetUpdates collects; Resolve marks names. */
    int collect; /* 1: Package signals are updates to keep */
    uint64_t resolve_filter;
    char **ids;
    size_t n_ids;
    int too_many;
    int known[EXO_PKG_NAMES_MAX], installed[EXO_PKG_NAMES_MAX], updates[EXO_PKG_NAMES_MAX];
} pk_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void write_all(int fd, const char *p, size_t len)
{
    while (fd >= 0 && len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* the file is gone or full: nothing better to do with a line */
        p += w;
        len -= (size_t)w;
    }
}

/* One line, prefix and the formatted text, cleaned and cut (exo_pk_line), to fd. */
static void vline(int fd, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void vline(int fd, const char *prefix, const char *fmt, va_list ap)
{
    char tmp[EXO_PK_LINE_MAX], line[EXO_PK_LINE_MAX];
    if (vsnprintf(tmp, sizeof(tmp), fmt, ap) < 0) return;
    write_all(fd, line, exo_pk_line(line, "%s%s", prefix, tmp));
}

/* One event line to the status file. */
static void emit(pk_t *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(pk_t *k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vline(k->status_fd, "", fmt, ap);
    va_end(ap);
}

/* One readable line to the log, for an operator reading the operation's files. */
static void say(pk_t *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(pk_t *k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vline(k->log_fd, "PackageKit: ", fmt, ap);
    va_end(ap);
}

static void bus_failed(pk_t *k, const char *what, const sd_bus_error *e, int r)
{
    const char *msg = e && sd_bus_error_is_set(e) ? e->message : strerror(r < 0 ? -r : r);
    const char *name = e && sd_bus_error_is_set(e) ? e->name : "";
    emit(k, "error dbus %s: %s %s", what, name, msg ? msg : "");
    say(k, "%s failed: %s %s", what, name, msg ? msg : "");
}

/* The index of the name part of package id in the command's names, or -1. */
static int name_index(const pk_t *k, const char *id)
{
    size_t len = strcspn(id, ";");
    for (size_t i = 0; i < k->cmd->n_names; i++)
        if (strlen(k->cmd->names[i]) == len && memcmp(k->cmd->names[i], id, len) == 0)
            return (int)i;
    return -1;
}

static void keep_update(pk_t *k, const char *id)
{
    int i = name_index(k, id);
    if (k->cmd->n_names > 0 && i < 0) return;
    if (i >= 0) k->updates[i] = 1;
    if (k->n_ids >= EXO_PK_UPDATES_MAX) {
        if (!k->too_many) emit(k, "error too-many more than %d updates", EXO_PK_UPDATES_MAX);
        k->too_many = 1;
        return;
    }
    char *copy = strdup(id);
    if (copy != NULL) k->ids[k->n_ids++] = copy;
}

static int on_package(pk_t *k, sd_bus_message *m)
{
    uint32_t info;
    const char *id, *summary;
    char fields[EXO_PK_LINE_MAX];
    if (sd_bus_message_read(m, "uss", &info, &id, &summary) < 0) return 0;
    (void)summary;
    if (strlen(id) > EXO_PK_ID_MAX || exo_pk_id_fields(id, fields, sizeof(fields)) < 0) return 0;
    /* Restricted to the names when there are some: a list of two packages does not write the
     * thousands of the machine. */
    int i = name_index(k, id);
    if (k->collect && k->cmd->n_names > 0 && i < 0) return 0;
    /* PackageKit 1.2 puts an update's severity in the upper 16 bits of info. */
    emit(k, "package %s %s", exo_pk_info_name(info & 0xffff), fields);
    if (info >> 16) emit(k, "severity %s %s", exo_pk_info_name(info >> 16), fields);
    if (k->collect) {
        keep_update(k, id);
    } else if (i >= 0) {
        k->known[i] = 1;
        if ((info & 0xffff) == 1) k->installed[i] = 1; /* PK_INFO_ENUM_INSTALLED */
    }
    return 0;
}

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *ret)
{
    pk_t *k = userdata;
    const char *member = sd_bus_message_get_member(m);
    (void)ret;
    if (member == NULL) return 0;
    if (strcmp(member, "Package") == 0) return on_package(k, m);
    if (strcmp(member, "ItemProgress") == 0) {
        const char *id;
        uint32_t status, pct;
        char fields[EXO_PK_LINE_MAX];
        if (sd_bus_message_read(m, "suu", &id, &status, &pct) >= 0 && strlen(id) <= EXO_PK_ID_MAX &&
            exo_pk_id_fields(id, fields, sizeof(fields)) == 0)
            emit(k, "item %s %u %s", exo_pk_status_name(status), (unsigned)pct, fields);
    } else if (strcmp(member, "ErrorCode") == 0) {
        uint32_t code;
        const char *details;
        if (sd_bus_message_read(m, "us", &code, &details) >= 0) {
            k->errors++;
            if (code == PK_ERROR_CANNOT_GET_LOCK) k->lock_error = 1;
            emit(k, "error %s %s", exo_pk_error_name(code), details);
            say(k, "error %s: %s", exo_pk_error_name(code), details);
        }
    } else if (strcmp(member, "RequireRestart") == 0) {
        uint32_t type;
        const char *id;
        char fields[EXO_PK_LINE_MAX];
        if (sd_bus_message_read(m, "us", &type, &id) >= 0 && strlen(id) <= EXO_PK_ID_MAX &&
            exo_pk_id_fields(id, fields, sizeof(fields)) == 0)
            emit(k, "restart %s %s", exo_pk_restart_name(type), fields);
    } else if (strcmp(member, "Finished") == 0) {
        uint32_t exit, runtime;
        if (sd_bus_message_read(m, "uu", &exit, &runtime) >= 0) {
            k->finished = 1;
            k->exit = exit;
            emit(k, "finished %s %u", exo_pk_exit_name(exit), (unsigned)runtime);
            say(k, "finished: %s in %u ms", exo_pk_exit_name(exit), (unsigned)runtime);
        }
    } else if (strcmp(member, "Destroy") == 0 && !k->finished) {
        /* Gone without Finished: nothing more will come. */
        k->finished = 1;
        k->exit = 0;
    }
    return 0;
}

/* The lock wait runs from the first waiting-for-lock until the work goes on: PackageKit's apt
 * backend retries every second, between the retries saying loading-cache, which must not end
 * the wait (nor restart its clock). */
static int still_waiting(uint32_t status)
{
    return status == PK_STATUS_WAITING_FOR_LOCK || status == PK_STATUS_LOADING_CACHE ||
           status == PK_STATUS_WAIT || status == PK_STATUS_SETUP;
}

static void set_status(pk_t *k, uint32_t status)
{
    if (status == PK_STATUS_WAITING_FOR_LOCK && !k->waiting) {
        k->waiting = 1;
        k->wait_at = now_ms();
    } else if (k->waiting && !still_waiting(status)) {
        k->waiting = 0;
        k->wait_ms += now_ms() - k->wait_at;
    }
    emit(k, "status %s", exo_pk_status_name(status));
}

/* PropertiesChanged(s interface, a{sv} changed, as invalidated): Status and Percentage. */
static int on_properties(sd_bus_message *m, void *userdata, sd_bus_error *ret)
{
    pk_t *k = userdata;
    const char *iface, *prop;
    (void)ret;
    if (sd_bus_message_read(m, "s", &iface) < 0 || strcmp(iface, PK_TX_IFACE) != 0) return 0;
    if (sd_bus_message_enter_container(m, 'a', "{sv}") < 0) return 0;
    while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
        if (sd_bus_message_read(m, "s", &prop) < 0) return 0;
        uint32_t v;
        if ((strcmp(prop, "Status") == 0 || strcmp(prop, "Percentage") == 0) &&
            sd_bus_message_read(m, "v", "u", &v) >= 0) {
            if (prop[0] == 'S') {
                set_status(k, v);
            } else if (v != PK_PERCENT_UNKNOWN && v <= 100 && v != k->percent) {
                k->percent = v;
                emit(k, "percent %u", (unsigned)v);
            }
        } else if (sd_bus_message_skip(m, "v") < 0) {
            return 0;
        }
        if (sd_bus_message_exit_container(m) < 0) return 0;
    }
    return 0;
}

/* NameOwnerChanged of PackageKit's name: the daemon crashed or was stopped mid-transaction. */
static int on_owner(sd_bus_message *m, void *userdata, sd_bus_error *ret)
{
    pk_t *k = userdata;
    const char *name, *old_owner, *new_owner;
    (void)ret;
    if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) >= 0 &&
        strcmp(name, PK_NAME) == 0 && new_owner[0] == '\0' && old_owner[0] != '\0') {
        k->gone = 1;
        emit(k, "error daemon-gone PackageKit left the system bus during the transaction");
    }
    return 0;
}

/* Cancels the transaction after the lock wait ran past lock_timeout. */
static void cancel_for_lock(pk_t *k)
{
    sd_bus_error e = SD_BUS_ERROR_NULL;
    k->cancelled = 1;
    emit(k, "lock-timeout %u", (unsigned)k->cmd->lock_timeout_s);
    say(k, "the package manager's lock was still held after %u s: cancelling",
        (unsigned)k->cmd->lock_timeout_s);
    int r = sd_bus_call_method(k->bus, PK_NAME, k->path, PK_TX_IFACE, "Cancel", &e, NULL, "");
    if (r < 0) bus_failed(k, "Cancel", &e, r);
    sd_bus_error_free(&e);
}

/* Processes the bus until the transaction finished; cancels it when the lock wait runs past
 * the lock timeout. Returns 0, or -1 when the bus failed. */
static int run_loop(pk_t *k)
{
    uint64_t cancel_deadline = 0;
    while (!k->finished && !k->gone) {
        int r = sd_bus_process(k->bus, NULL);
        if (r < 0) {
            bus_failed(k, "reading the bus", NULL, r);
            return -1;
        }
        if (r > 0) continue;
        uint64_t now = now_ms(), slice = WAIT_SLICE_MS;
        uint64_t waited = k->wait_ms + (k->waiting ? now - k->wait_at : 0);
        uint64_t limit = (uint64_t)k->cmd->lock_timeout_s * 1000;
        if (!k->cancelled && k->waiting && waited >= limit) {
            cancel_for_lock(k);
            cancel_deadline = now + CANCEL_WAIT_MS;
        } else if (k->waiting && !k->cancelled && limit - waited < slice) {
            slice = limit - waited;
        }
        if (k->cancelled && now >= cancel_deadline) return 0; /* it never said Finished */
        r = sd_bus_wait(k->bus, slice * 1000);
        if (r < 0 && r != -EINTR) {
            bus_failed(k, "waiting on the bus", NULL, r);
            return -1;
        }
    }
    return 0;
}

static int append_strv(sd_bus_message *m, const char *const *v, size_t n)
{
    int r = sd_bus_message_open_container(m, 'a', "s");
    for (size_t i = 0; r >= 0 && i < n; i++)
        r = sd_bus_message_append(m, "s", v[i]);
    return r < 0 ? r : sd_bus_message_close_container(m);
}

/* Starts transaction method `method` with its arguments appended by `args`; runs it to its end.
 * Returns 0 when it finished with success and no error, else -1 (the lines say why). */
typedef int (*args_fn)(sd_bus_message *m, const pk_t *k, const void *arg);

static int transaction(pk_t *k, const char *role, const char *method, args_fn args, const void *arg)
{
    sd_bus_error e = SD_BUS_ERROR_NULL;
    sd_bus_message *reply = NULL, *call = NULL;
    sd_bus_slot *sig = NULL, *props = NULL;
    const char *path;
    int rc = -1;
    k->finished = 0;
    k->errors = 0;
    k->lock_error = 0;
    k->exit = 0;
    k->waiting = 0;
    k->percent = PK_PERCENT_UNKNOWN;
    int r =
        sd_bus_call_method(k->bus, PK_NAME, PK_PATH, PK_NAME, "CreateTransaction", &e, &reply, "");
    if (r < 0 || sd_bus_message_read(reply, "o", &path) < 0 || strlen(path) >= sizeof(k->path)) {
        bus_failed(k, "CreateTransaction", &e, r < 0 ? r : -EBADMSG);
        goto out;
    }
    strcpy(k->path, path);
    /* The matches before the call: a quick transaction finishes before the call's reply. */
    r = sd_bus_match_signal(k->bus, &sig, PK_NAME, k->path, PK_TX_IFACE, NULL, on_signal, k);
    if (r >= 0)
        r = sd_bus_match_signal(k->bus, &props, PK_NAME, k->path, "org.freedesktop.DBus.Properties",
                                "PropertiesChanged", on_properties, k);
    if (r < 0) {
        bus_failed(k, "adding the signal matches", NULL, r);
        goto out;
    }
    static const char *const hints[] = {"interactive=false", "locale=C.UTF-8", "background=false"};
    r = sd_bus_message_new_method_call(k->bus, &call, PK_NAME, k->path, PK_TX_IFACE, "SetHints");
    if (r >= 0) r = append_strv(call, hints, sizeof(hints) / sizeof(hints[0]));
    if (r >= 0) r = sd_bus_call(k->bus, call, 0, &e, NULL);
    call = sd_bus_message_unref(call);
    if (r < 0) {
        bus_failed(k, "SetHints", &e, r);
        goto out;
    }
    emit(k, "begin %s", role);
    say(k, "%s", role);
    r = sd_bus_message_new_method_call(k->bus, &call, PK_NAME, k->path, PK_TX_IFACE, method);
    if (r >= 0) r = args(call, k, arg);
    if (r >= 0) r = sd_bus_call(k->bus, call, 0, &e, NULL);
    if (r < 0) {
        bus_failed(k, method, &e, r);
        goto out;
    }
    if (run_loop(k) < 0) goto out;
    if (k->waiting) k->wait_ms += now_ms() - k->wait_at;
    k->waiting = 0;
    rc = k->finished && !k->cancelled && k->exit == PK_EXIT_SUCCESS && k->errors == 0 ? 0 : -1;
out:
    sd_bus_error_free(&e);
    sd_bus_message_unref(call);
    sd_bus_message_unref(reply);
    sd_bus_slot_unref(sig);
    sd_bus_slot_unref(props);
    return rc;
}

/* A transaction that takes the package manager's lock. PackageKit's apt backend waits for the
 * lock about 10 s and then fails with cannot-get-lock: the transaction is then started again
 * until the lock was waited for [packages] lock_timeout in all, as apt-get's own
 * DPkg::Lock::Timeout would. */
static int locked_transaction(pk_t *k, const char *role, const char *method, args_fn args,
                              const void *arg)
{
    uint64_t limit = (uint64_t)k->cmd->lock_timeout_s * 1000;
    for (;;) {
        int rc = transaction(k, role, method, args, arg);
        if (rc == 0 || k->cancelled || k->gone || !k->lock_error) return rc;
        if (k->wait_ms + RETRY_MS > limit) {
            emit(k, "lock-timeout %u", (unsigned)k->cmd->lock_timeout_s);
            say(k, "the package manager's lock was still held after %u s",
                (unsigned)k->cmd->lock_timeout_s);
            return -1;
        }
        emit(k, "retry %s", role);
        usleep(RETRY_MS * 1000);
        k->wait_ms += RETRY_MS;
    }
}

static int args_refresh(sd_bus_message *m, const pk_t *k, const void *arg)
{
    (void)k;
    (void)arg;
    return sd_bus_message_append(m, "b", 0);
}

static int args_filter(sd_bus_message *m, const pk_t *k, const void *arg)
{
    (void)k;
    (void)arg;
    return sd_bus_message_append(m, "t", (uint64_t)PK_FILTER_NONE);
}

/* Resolve(filter, names): arg is a NULL-terminated list. */
static int args_resolve(sd_bus_message *m, const pk_t *k, const void *arg)
{
    const char *const *names = arg;
    size_t n = 0;
    (void)k;
    while (names[n] != NULL)
        n++;
    int r = sd_bus_message_append(m, "t", k->resolve_filter);
    return r < 0 ? r : append_strv(m, names, n);
}

static int args_update(sd_bus_message *m, const pk_t *k, const void *arg)
{
    (void)arg;
    int r = sd_bus_message_append(m, "t", (uint64_t)PK_FLAG_ONLY_TRUSTED);
    return r < 0 ? r : append_strv(m, (const char *const *)k->ids, k->n_ids);
}

/* GetUpdates, keeping the ids (of the names, when there are some). */
static int get_updates(pk_t *k)
{
    k->collect = 1;
    int rc = transaction(k, "get-updates", "GetUpdates", args_filter, NULL);
    k->collect = 0;
    return rc < 0 || k->too_many ? -1 : 0;
}

/* Resolve(installed) of the kept updates' names: their installed versions (the worker's
 * "installed" of a list, "from" of what an update changed). A failed Resolve leaves them
 * unknown: the rest is still right, so it fails nothing. */
static int resolve_installed(pk_t *k)
{
    if (k->n_ids == 0) return 0;
    const char **names = calloc(k->n_ids + 1, sizeof(*names));
    char *buf = calloc(k->n_ids, EXO_PK_ID_MAX + 1);
    if (names == NULL || buf == NULL) {
        free(names);
        free(buf);
        emit(k, "error oom no memory for the names of %zu updates", k->n_ids);
        return -1;
    }
    for (size_t i = 0; i < k->n_ids; i++) {
        char *name = buf + i * (EXO_PK_ID_MAX + 1);
        size_t len = strcspn(k->ids[i], ";");
        memcpy(name, k->ids[i], len);
        name[len] = '\0';
        names[i] = name;
    }
    k->resolve_filter = PK_FILTER_INSTALLED;
    transaction(k, "resolve", "Resolve", args_resolve, names);
    free(names);
    free(buf);
    return 0;
}

/* list: the updates, then their installed versions. */
static int do_list(pk_t *k)
{
    if (get_updates(k) < 0) return -1;
    return resolve_installed(k);
}

/* install, self_upgrade: the names' updates; each name without one resolved alone (a
 * Resolve of an unknown name fails its whole transaction), then UpdatePackages. */
static int do_install(pk_t *k)
{
    int self = k->cmd->action == EXO_PKG_SELF_UPGRADE, bad = 0;
    if (get_updates(k) < 0) return -1;
    /* Every package of the name, installed or not: not installed is nothing to do, as with
     * apt-get's --only-upgrade, unknown is an error. */
    k->resolve_filter = PK_FILTER_NONE;
    for (size_t i = 0; i < k->cmd->n_names; i++) {
        if (k->updates[i]) continue;
        const char *one[2] = {k->cmd->names[i], NULL};
        transaction(k, "resolve", "Resolve", args_resolve, one);
        if (k->installed[i]) {
            emit(k, "up-to-date %s", k->cmd->names[i]);
        } else if (k->known[i] || self) {
            emit(k, "not-installed %s", k->cmd->names[i]);
        } else {
            emit(k, "unknown %s", k->cmd->names[i]);
            say(k, "no package %s is known", k->cmd->names[i]);
            bad = 1;
        }
    }
    if (bad) return -1;
    if (k->n_ids == 0) return 0;
    if (resolve_installed(k) < 0) return -1;
    return locked_transaction(k, "update-packages", "UpdatePackages", args_update, NULL);
}

static int do_action(pk_t *k)
{
    switch (k->cmd->action) {
    case EXO_PKG_REFRESH:
        return locked_transaction(k, "refresh-cache", "RefreshCache", args_refresh, NULL);
    case EXO_PKG_LIST:
        return do_list(k);
    case EXO_PKG_INSTALL:
    case EXO_PKG_SELF_UPGRADE:
        return do_install(k);
    case EXO_PKG_UPGRADE_ALL:
        if (get_updates(k) < 0) return -1;
        if (k->n_ids == 0) return 0;
        if (resolve_installed(k) < 0) return -1;
        return locked_transaction(k, "update-packages", "UpdatePackages", args_update, NULL);
    default:
        return -1;
    }
}

int exo_pk_run(const exo_pkg_cmd_t *c, int log_fd, int status_fd)
{
    pk_t k = {.cmd = c, .log_fd = log_fd, .status_fd = status_fd};
    sd_bus_slot *owner = NULL;
    int rc = 1;
    k.ids = calloc(EXO_PK_UPDATES_MAX, sizeof(*k.ids));
    if (k.ids == NULL) {
        emit(&k, "error oom no memory for the update list");
        return 1;
    }
    int r = sd_bus_open_system(&k.bus);
    if (r < 0) {
        bus_failed(&k, "connecting to the system bus", NULL, r);
        goto out;
    }
    r = sd_bus_match_signal(k.bus, &owner, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                            "org.freedesktop.DBus", "NameOwnerChanged", on_owner, &k);
    if (r < 0) {
        bus_failed(&k, "adding the signal matches", NULL, r);
        goto out;
    }
    if (do_action(&k) == 0) {
        emit(&k, "done");
        rc = 0;
    }
out:
    for (size_t i = 0; i < k.n_ids; i++)
        free(k.ids[i]);
    free(k.ids);
    sd_bus_slot_unref(owner);
    sd_bus_flush_close_unref(k.bus);
    return rc;
}
