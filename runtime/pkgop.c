/* The package operations' checks, command lines and poll slicing; see pkgop.h. The waiter is
 * in pkgop_run.c, the monitor's side in monitor.c. */
#include "pkgop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "statefile.h"

#define APT_GET "/usr/bin/apt-get"
#define DNF "/usr/bin/dnf"

static const char *const action_names[EXO_PKG_ACTIONS] = {"refresh", "list", "install",
                                                          "upgrade_all", "self_upgrade"};

const char *exo_pkg_backend_name(exo_pkg_backend_t b)
{
    return b == EXO_PKG_APT          ? "apt"
           : b == EXO_PKG_DNF        ? "dnf"
           : b == EXO_PKG_PACKAGEKIT ? "packagekit"
                                     : "none";
}

exo_pkg_backend_t exo_pkg_backend(const exo_config_t *cfg)
{
    static int found = 0;
    static exo_pkg_backend_t b = EXO_PKG_NONE;
    switch (cfg->packages_backend) {
    case EXO_PKG_CHOICE_APT:
        return EXO_PKG_APT;
    case EXO_PKG_CHOICE_DNF:
        return EXO_PKG_DNF;
    case EXO_PKG_CHOICE_PACKAGEKIT:
        return EXO_PKG_PACKAGEKIT;
    case EXO_PKG_CHOICE_NONE:
        return EXO_PKG_NONE;
    default:
        break;
    }
    if (!found) {
        /* PackageKit first: where it is installed it is the system's own package service, and
         * going through it keeps its state (and its users' views) right. */
        b = access(EXO_PK_SERVICE_FILE, R_OK) == 0 ? EXO_PKG_PACKAGEKIT
            : access(APT_GET, X_OK) == 0           ? EXO_PKG_APT
            : access(DNF, X_OK) == 0               ? EXO_PKG_DNF
                                                   : EXO_PKG_NONE;
        found = 1;
    }
    return b;
}

int exo_pkg_action_parse(const char *p, size_t len)
{
    for (int a = 0; a < EXO_PKG_ACTIONS; a++)
        if (strlen(action_names[a]) == len && memcmp(p, action_names[a], len) == 0) return a;
    return -1;
}

const char *exo_pkg_action_name(exo_pkg_action_t a)
{
    return (unsigned)a < EXO_PKG_ACTIONS ? action_names[a] : "?";
}

int exo_pkg_action_changes(exo_pkg_action_t a)
{
    return a == EXO_PKG_INSTALL || a == EXO_PKG_UPGRADE_ALL || a == EXO_PKG_SELF_UPGRADE;
}

int exo_pkg_name_ok(const char *p, size_t len)
{
    if (len < 1 || len > EXO_PKG_NAME_MAX || p[0] == '-' || p[0] == '.' || p[len - 1] == '-')
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '+' || c == '-'))
            return 0;
    }
    return 1;
}

int exo_pkg_allowed(const exo_config_t *cfg, const char *p, size_t len)
{
    for (size_t i = 0; i < cfg->packages_allow.n; i++) {
        const char *item = cfg->packages_allow.items[i];
        if (strlen(item) == len && memcmp(item, p, len) == 0) return 1;
    }
    return 0;
}

int exo_pkg_id_ok(const char *p, size_t len)
{
    if (len != EXO_PKG_ID_LEN) return 0;
    for (size_t i = 0; i < len; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return 0;
    return 1;
}

int exo_pkg_names_split(const char *p, size_t len, exo_priv_field_t *out, size_t max)
{
    size_t n = 0, start = 0;
    if (len == 0) return 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && p[i] != '\n') continue;
        if (n == max) return -1;
        out[n++] = (exo_priv_field_t){p + start, i - start};
        start = i + 1;
    }
    return (int)n;
}

const char *exo_pkgop_check_start(const exo_config_t *cfg, const exo_priv_field_t *f, size_t n)
{
    exo_priv_field_t name[EXO_PKG_NAMES_MAX];
    if (n != 2) return "a package operation without exactly 2 fields";
    int a = exo_pkg_action_parse(f[0].p, f[0].len);
    if (a < 0) return "a package operation with an unknown action";
    if (f[1].len > EXO_PKG_NAMES_BYTES)
        return "a package operation with more than 4096 bytes of names";
    int names = exo_pkg_names_split(f[1].p, f[1].len, name, EXO_PKG_NAMES_MAX);
    if (names < 0) return "a package operation with more than 64 names";
    for (int i = 0; i < names; i++)
        if (!exo_pkg_name_ok(name[i].p, name[i].len))
            return "a package operation with a bad package name";
    switch (a) {
    case EXO_PKG_REFRESH:
        if (names) return "a refresh with package names";
        return NULL;
    case EXO_PKG_LIST:
        return NULL;
    case EXO_PKG_INSTALL:
        if (names == 0) return "an install without package names";
        for (int i = 0; i < names; i++)
            if (!exo_pkg_allowed(cfg, name[i].p, name[i].len))
                return "an install of a package not on [packages] allow";
        return NULL;
    case EXO_PKG_SELF_UPGRADE:
        if (names) return "a self_upgrade with package names";
        if (!cfg->packages_self_upgrade)
            return "a self_upgrade while [packages] self_upgrade is off";
        return NULL;
    default: /* EXO_PKG_UPGRADE_ALL */
        if (names) return "an upgrade_all with package names";
        if (!cfg->packages_allow_all) return "an upgrade_all while [packages] allow_all is off";
        return NULL;
    }
}

/* A decimal offset of 1..15 digits (far beyond any log, and exact in a Lua number). */
static int parse_offset(const exo_priv_field_t *f, uint64_t *out)
{
    if (f->len < 1 || f->len > 15) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < f->len; i++) {
        if (f->p[i] < '0' || f->p[i] > '9') return -1;
        v = v * 10 + (uint64_t)(f->p[i] - '0');
    }
    *out = v;
    return 0;
}

const char *exo_pkgop_check_poll(const exo_priv_field_t *f, size_t n, uint64_t *log_off,
                                 uint64_t *status_off)
{
    if (n != 3) return "a package poll without exactly 3 fields";
    if (!exo_pkg_id_ok(f[0].p, f[0].len)) return "a package poll with a bad id";
    if (parse_offset(&f[1], log_off) < 0 || parse_offset(&f[2], status_off) < 0)
        return "a package poll with a bad offset";
    return NULL;
}

static void add(exo_pkg_cmd_t *c, const char *arg)
{
    if (c->argc < EXO_PKG_ARGV_MAX) c->argv[c->argc++] = arg;
    c->argv[c->argc] = NULL;
}

/* apt-get's options for a run that takes the locks: wait for them, keep the configuration
 * files the administrator changed and take the package's new ones for the others, without
 * asking (stdin is /dev/null and DEBIAN_FRONTEND=noninteractive). */
static void apt_locking(exo_pkg_cmd_t *c)
{
    add(c, "-q");
    add(c, "-o");
    add(c, c->lock_opt);
    add(c, "-o");
    add(c, "Dpkg::Options::=--force-confdef");
    add(c, "-o");
    add(c, "Dpkg::Options::=--force-confold");
}

static void apt_cmd(exo_pkg_cmd_t *c, exo_pkg_action_t a, size_t n)
{
    c->path = APT_GET;
    add(c, "apt-get");
    switch (a) {
    case EXO_PKG_REFRESH:
        apt_locking(c);
        add(c, "update");
        break;
    case EXO_PKG_LIST:
        /* A simulation, which apt runs without the locks when told to: it changes nothing and
         * must not wait behind (or block) a running upgrade. */
        add(c, "-s");
        add(c, "-q");
        add(c, "-o");
        add(c, "Debug::NoLocking=true");
        if (n == 0) {
            add(c, "dist-upgrade");
        } else {
            add(c, "install");
            add(c, "--only-upgrade");
        }
        break;
    case EXO_PKG_INSTALL:
    case EXO_PKG_UPGRADE_ALL:
    case EXO_PKG_SELF_UPGRADE:
        add(c, "-y");
        apt_locking(c);
        add(c, "-o");
        add(c, "APT::Status-Fd=3");
        c->status_fd = 1;
        if (a != EXO_PKG_UPGRADE_ALL) {
            add(c, "install");
            add(c, "--only-upgrade");
        } else {
            add(c, "dist-upgrade");
        }
        break;
    default:
        break;
    }
}

static void dnf_cmd(exo_pkg_cmd_t *c, exo_pkg_action_t a)
{
    c->path = DNF;
    add(c, "dnf");
    switch (a) {
    case EXO_PKG_REFRESH:
        add(c, "-q");
        add(c, "makecache");
        break;
    case EXO_PKG_LIST:
        add(c, "-q");
        add(c, "check-update");
        break;
    default: /* install, self_upgrade (names follow) and upgrade_all */
        add(c, "-y");
        add(c, "upgrade");
        break;
    }
}

int exo_pkg_cmd_build(exo_pkg_cmd_t *c, exo_pkg_backend_t b, exo_pkg_action_t a,
                      uint32_t lock_timeout_s, const exo_priv_field_t *names, size_t n)
{
    memset(c, 0, sizeof(*c));
    if ((b != EXO_PKG_APT && b != EXO_PKG_DNF && b != EXO_PKG_PACKAGEKIT) ||
        (unsigned)a >= EXO_PKG_ACTIONS || n > EXO_PKG_NAMES_MAX)
        return -EINVAL;
    c->action = a;
    c->lock_timeout_s = lock_timeout_s;
    snprintf(c->lock_opt, sizeof(c->lock_opt), "DPkg::Lock::Timeout=%u", (unsigned)lock_timeout_s);
    if (b == EXO_PKG_APT) {
        apt_cmd(c, a, n);
    } else if (b == EXO_PKG_DNF) {
        dnf_cmd(c, a);
    } else {
        /* No program: the tool process is the client (exo_pk_run), and writes its events to
         * the status file. */
        c->packagekit = 1;
        c->status_fd = 1;
    }
    /* Names only where the action takes them (the check refuses them elsewhere); the agent's
     * own for self_upgrade. */
    static const char *const self[EXO_PKG_SELF_COUNT] = EXO_PKG_SELF_NAMES;
    exo_priv_field_t own[EXO_PKG_SELF_COUNT];
    if (a == EXO_PKG_SELF_UPGRADE) {
        for (size_t i = 0; i < EXO_PKG_SELF_COUNT; i++)
            own[i] = (exo_priv_field_t){self[i], strlen(self[i])};
        names = own;
        n = EXO_PKG_SELF_COUNT;
    }
    if (a == EXO_PKG_REFRESH || a == EXO_PKG_UPGRADE_ALL) n = 0;
    for (size_t i = 0; i < n; i++) {
        if (!exo_pkg_name_ok(names[i].p, names[i].len)) return -EINVAL;
        memcpy(c->names[i], names[i].p, names[i].len);
        c->names[i][names[i].len] = '\0';
        if (!c->packagekit) add(c, c->names[i]);
    }
    c->n_names = n;
    return 0;
}

/* The length of the longest prefix of p[0..len) that does not end inside a UTF-8 sequence. */
static size_t utf8_whole(const char *p, size_t len)
{
    size_t back = 0;
    while (back < 3 && back < len && ((unsigned char)p[len - 1 - back] & 0xc0) == 0x80)
        back++;
    if (back == len) return len; /* only continuation bytes: not text, hand them out */
    unsigned char lead = (unsigned char)p[len - 1 - back];
    size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    return back + 1 >= need ? len : len - back - 1;
}

size_t exo_pkg_poll_cut(const char *p, size_t len, int at_end)
{
    if (at_end || len == 0) return len;
    for (size_t i = len; i > 0; i--)
        if (p[i - 1] == '\n') return i;
    if (len >= EXO_PKG_POLL_MAX) return utf8_whole(p, len);
    return 0;
}

int exo_pkg_write_exit(const char *dir, const char *line)
{
    char path[EXO_STATEFILE_PATH_MAX], err[256];
    if ((size_t)snprintf(path, sizeof(path), "%s/exit", dir) >= sizeof(path)) return -ENAMETOOLONG;
    exo_statefile_t w;
    int rc = exo_statefile_begin(&w, path, 0600, err, sizeof(err));
    if (rc < 0) return rc;
    exo_statefile_write(&w, line, strlen(line));
    exo_statefile_write(&w, "\n", 1);
    return exo_statefile_commit(&w, path, 0, err, sizeof(err));
}
