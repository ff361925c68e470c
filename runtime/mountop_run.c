/* The mount operations' work, in the child the monitor forks per request (mountop.h). The
 * child may block: the monitor waits for its one answer on a pipe and kills its process group
 * at the deadline. Tools run from a fixed PATH with a clean environment, their output is
 * bounded, and a cephx key is scrubbed from anything that is logged or answered. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mountop.h"

#define TOOL_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define TOOL_OUT_MAX 6000 /* bytes of a tool's output kept (answers must fit 8 KiB) */
#define UNIT_DIR "/etc/systemd/system"
#define STEP_MS 15000 /* a systemctl step that should be quick (is-active, daemon-reload) */
#define ROOT_DEVS_MAX 32

typedef struct req_s {
    const exo_config_t *cfg;
    uint32_t op, seq;
    int fd;
    const char *key; /* a cephx key to scrub from every text, or NULL */
} req_t;

typedef struct tool_s {
    int status; /* exit status, -ETIMEDOUT, or -errno when it could not run */
    char out[TOOL_OUT_MAX], err[TOOL_OUT_MAX];
} tool_t;

typedef struct blockdev_s {
    char path[PATH_MAX];
    char kname[64];
    dev_t rdev;
    int partition;
    dev_t parent; /* the whole disk of a partition */
} blockdev_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* snprintf that says whether the text fit: 0, or -1 when it was cut. */
static int __attribute__((format(printf, 3, 4))) fmt(char *out, size_t cap, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(out, cap, f, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* ---- answers ----------------------------------------------------------------------------- */

/* Replaces every copy of the key in text with "***" (tool output may echo an option line). */
static void scrub(const req_t *r, char *text)
{
    if (r->key == NULL || !r->key[0]) return;
    size_t kl = strlen(r->key);
    char *p;
    while ((p = strstr(text, r->key)) != NULL) {
        memcpy(p, "***", 3);
        memmove(p + 3, p + kl, strlen(p + kl) + 1);
    }
}

static void __attribute__((noreturn)) reply(const req_t *r, const exo_priv_field_t *f, size_t n)
{
    uint8_t buf[EXO_PRIV_MAX_MESSAGE];
    int len = exo_priv_encode(buf, sizeof(buf), r->op | EXO_OP_ANSWER, r->seq, f, n);
    if (len < 0) {
        exo_priv_field_t fail[2] = {{"failed", 6}, {"the answer was too long", 23}};
        len = exo_priv_encode(buf, sizeof(buf), r->op | EXO_OP_ANSWER, r->seq, fail, 2);
    }
    ssize_t w = write(r->fd, buf, (size_t)len);
    _exit(w == len ? 0 : 1);
}

static const char *op_name(uint32_t op)
{
    switch (op) {
    case EXO_OP_MOUNT_PROBE:
        return "probe";
    case EXO_OP_MOUNT_MKFS:
        return "mkfs";
    case EXO_OP_MOUNT_MOUNT:
        return "mount";
    case EXO_OP_MOUNT_UNMOUNT:
        return "unmount";
    default:
        return "cephfs mount";
    }
}

/* Answers an error code with a message (and logs it as a warning). */
static void __attribute__((noreturn, format(printf, 3, 4)))
fail(const req_t *r, const char *code, const char *fmt, ...)
{
    char msg[EXO_MNT_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    scrub(r, msg);
    exo_warn("mounts: %s failed: %s: %s", op_name(r->op), code, msg);
    exo_priv_field_t f[2] = {{code, strlen(code)}, {msg, strlen(msg)}};
    reply(r, f, 2);
}

/* ---- tools ------------------------------------------------------------------------------ */

static int find_tool(const char *name, char *out, size_t cap)
{
    const char *dirs = TOOL_PATH;
    while (*dirs) {
        size_t dl = strcspn(dirs, ":");
        snprintf(out, cap, "%.*s/%s", (int)dl, dirs, name);
        if (access(out, X_OK) == 0) return 0;
        dirs += dl + (dirs[dl] == ':');
    }
    return -ENOENT;
}

static void keep(char *buf, size_t *len, const char *data, size_t n)
{
    size_t room = TOOL_OUT_MAX - 1 - *len;
    if (n > room) n = room;
    memcpy(buf + *len, data, n);
    *len += n;
    buf[*len] = '\0';
}

/* Trims trailing white space. */
static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

/* Runs argv[0] (found in TOOL_PATH) with stdin from /dev/null and a clean environment, for at
 * most timeout_ms; its stdout and stderr are kept (bounded) in t. */
static void run_tool(const req_t *r, const char *const argv[], uint64_t timeout_ms, tool_t *t)
{
    char path[PATH_MAX];
    t->out[0] = t->err[0] = '\0';
    if (find_tool(argv[0], path, sizeof(path)) < 0) {
        t->status = -ENOENT;
        snprintf(t->err, sizeof(t->err), "%s is not installed", argv[0]);
        return;
    }
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) < 0) {
        t->status = -errno;
        return;
    }
    if (pipe2(pe, O_CLOEXEC) < 0) {
        t->status = -errno;
        close(po[0]);
        close(po[1]);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(po[1], 1) < 0 || dup2(pe[1], 2) < 0)
            _exit(127);
        char *const envp[] = {"PATH=" TOOL_PATH, "LC_ALL=C", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
                              NULL};
        char *args[32];
        size_t n = 0;
        for (; argv[n] && n < 31; n++)
            args[n] = strdup(argv[n]);
        args[n] = NULL;
        execve(path, args, envp);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    if (pid < 0) {
        t->status = -errno;
        close(po[0]);
        close(pe[0]);
        return;
    }
    size_t ol = 0, el = 0;
    uint64_t deadline = now_ms() + timeout_ms;
    struct pollfd pf[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    int open_fds = 2, timed_out = 0;
    while (open_fds > 0) {
        uint64_t now = now_ms();
        if (now >= deadline) {
            timed_out = 1;
            break;
        }
        int rc = poll(pf, 2, (int)(deadline - now));
        if (rc < 0 && errno == EINTR) continue;
        if (rc < 0) break;
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !pf[i].revents) continue;
            char chunk[4096];
            ssize_t n = read(pf[i].fd, chunk, sizeof(chunk));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                close(pf[i].fd);
                pf[i].fd = -1;
                open_fds--;
                continue;
            }
            if (i == 0)
                keep(t->out, &ol, chunk, (size_t)n);
            else
                keep(t->err, &el, chunk, (size_t)n);
        }
    }
    for (int i = 0; i < 2; i++)
        if (pf[i].fd >= 0) close(pf[i].fd);
    int status = 0;
    /* Output closed: the tool is ending; it gets what is left of its time to exit. */
    while (!timed_out && waitpid(pid, &status, WNOHANG) == 0) {
        if (now_ms() >= deadline)
            timed_out = 1;
        else
            usleep(10000);
    }
    if (timed_out) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        t->status = -ETIMEDOUT;
    } else {
        t->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    scrub(r, t->out);
    scrub(r, t->err);
    trim(t->out);
    trim(t->err);
}

/* The tool's error output for a message: stderr, else stdout, else its status. */
static const char *tool_text(tool_t *t)
{
    if (t->err[0]) return t->err;
    if (t->out[0]) return t->out;
    if (t->status == -ETIMEDOUT)
        snprintf(t->err, sizeof(t->err), "it did not finish in time");
    else
        snprintf(t->err, sizeof(t->err), "exit status %d", t->status);
    return t->err;
}

static void __attribute__((noreturn)) fail_tool(const req_t *r, const char *what, tool_t *t)
{
    if (t->status == -ETIMEDOUT) fail(r, "timeout", "%s did not finish in time", what);
    fail(r, "failed", "%s failed: %s", what, tool_text(t));
}

/* ---- block devices ---------------------------------------------------------------------- */

static int read_line(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) return -1;
    int ok = fgets(out, (int)cap, f) != NULL;
    fclose(f);
    if (!ok) return -1;
    out[strcspn(out, "\n")] = '\0';
    return 0;
}

static int read_devno(const char *path, dev_t *out)
{
    char line[32];
    unsigned ma, mi;
    if (read_line(path, line, sizeof(line)) < 0 || sscanf(line, "%u:%u", &ma, &mi) != 2) return -1;
    *out = makedev(ma, mi);
    return 0;
}

static void sys_dir(dev_t d, char *out, size_t cap)
{
    snprintf(out, cap, "/sys/dev/block/%u:%u", major(d), minor(d));
}

/* Fills d for a device path, or fails the request with not_found or not_block. */
static void resolve_device(const req_t *r, const char *in, blockdev_t *d)
{
    memset(d, 0, sizeof(*d));
    struct stat st;
    if (realpath(in, d->path) == NULL) {
        if (errno == ENOENT || errno == ENOTDIR) fail(r, "not_found", "%s does not exist", in);
        fail(r, "failed", "%s: %s", in, strerror(errno));
    }
    if (strncmp(d->path, "/dev/", 5) != 0) fail(r, "not_block", "%s leads out of /dev", in);
    if (stat(d->path, &st) < 0) fail(r, "not_found", "%s: %s", in, strerror(errno));
    if (!S_ISBLK(st.st_mode)) fail(r, "not_block", "%s is not a block device", in);
    d->rdev = st.st_rdev;
    char sys[64], link[PATH_MAX], part[PATH_MAX];
    sys_dir(d->rdev, sys, sizeof(sys));
    if (realpath(sys, link) == NULL) fail(r, "not_block", "%s has no entry in /sys", in);
    const char *base = strrchr(link, '/');
    fmt(d->kname, sizeof(d->kname), "%s", base ? base + 1 : link);
    snprintf(part, sizeof(part), "%s/partition", sys);
    if (access(part, F_OK) == 0) {
        char *slash = strrchr(link, '/');
        if (slash) *slash = '\0';
        fmt(part, sizeof(part), "%s/dev", link);
        d->partition = read_devno(part, &d->parent) == 0;
    }
}

typedef struct devset_s {
    dev_t d[ROOT_DEVS_MAX];
    size_t n;
} devset_t;

static int devset_has(const devset_t *s, dev_t d)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->d[i] == d) return 1;
    return 0;
}

static void devset_add(devset_t *s, dev_t d)
{
    if (!devset_has(s, d) && s->n < ROOT_DEVS_MAX) s->d[s->n++] = d;
}

/* Adds d, the disk it is a partition of, and (for a device-mapper or md device) the devices
 * under it, down to the disks. */
static void add_stack(devset_t *s, dev_t d, int depth)
{
    char sys[64], path[PATH_MAX], link[PATH_MAX];
    if (depth > 8 || devset_has(s, d)) return;
    devset_add(s, d);
    sys_dir(d, sys, sizeof(sys));
    snprintf(path, sizeof(path), "%s/partition", sys);
    if (access(path, F_OK) == 0 && realpath(sys, link)) {
        char *slash = strrchr(link, '/');
        dev_t parent;
        if (slash) *slash = '\0';
        fmt(path, sizeof(path), "%s/dev", link);
        if (read_devno(path, &parent) == 0) add_stack(s, parent, depth + 1);
    }
    snprintf(path, sizeof(path), "%s/slaves", sys);
    DIR *dir = opendir(path);
    struct dirent *e;
    while (dir && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char dev[PATH_MAX];
        dev_t slave;
        fmt(dev, sizeof(dev), "%s/%s/dev", path, e->d_name);
        if (read_devno(dev, &slave) == 0) add_stack(s, slave, depth + 1);
    }
    if (dir) closedir(dir);
}

/* One line of /proc/self/mountinfo. */
typedef struct mnt_s {
    dev_t dev;
    char where[PATH_MAX], source[PATH_MAX], fstype[64];
} mnt_t;

/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void unescape_octal(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
            p[3] >= '0' && p[3] <= '7') {
            *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

static int parse_mountinfo_line(char *line, mnt_t *m)
{
    unsigned ma, mi;
    char where[PATH_MAX];
    if (sscanf(line, "%*d %*d %u:%u %*s %4095s", &ma, &mi, where) != 3) return -1;
    char *sep = strstr(line, " - ");
    if (sep == NULL) return -1;
    char fstype[64], source[PATH_MAX];
    if (sscanf(sep + 3, "%63s %4095s", fstype, source) != 2) return -1;
    m->dev = makedev(ma, mi);
    unescape_octal(where);
    unescape_octal(source);
    snprintf(m->where, sizeof(m->where), "%s", where);
    snprintf(m->source, sizeof(m->source), "%s", source);
    snprintf(m->fstype, sizeof(m->fstype), "%s", fstype);
    return 0;
}

/* Calls match on each mount until it returns 1; returns 1 then (with *m the mount), else 0.
 * The last mount on a path is the one that is visible, so a search by path keeps going. */
static int find_mount(int (*match)(const mnt_t *m, const void *arg), const void *arg, int last,
                      mnt_t *out)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[3 * PATH_MAX];
    mnt_t m;
    int found = 0;
    while (f && fgets(line, sizeof(line), f)) {
        if (parse_mountinfo_line(line, &m) < 0 || !match(&m, arg)) continue;
        *out = m;
        found = 1;
        if (!last) break;
    }
    if (f) fclose(f);
    return found;
}

static int match_where(const mnt_t *m, const void *arg)
{
    return strcmp(m->where, (const char *)arg) == 0;
}

static int match_devs(const mnt_t *m, const void *arg)
{
    return devset_has((const devset_t *)arg, m->dev);
}

/* The devices that hold "/": the root file system's device, the one its mount names, and the
 * disks and stacks under them. */
static void root_devices(devset_t *s)
{
    struct stat st;
    memset(s, 0, sizeof(*s));
    if (stat("/", &st) == 0) {
        char sys[64];
        sys_dir(st.st_dev, sys, sizeof(sys));
        if (access(sys, F_OK) == 0) add_stack(s, st.st_dev, 0);
    }
    mnt_t m;
    if (find_mount(match_where, "/", 1, &m) && strncmp(m.source, "/dev/", 5) == 0 &&
        stat(m.source, &st) == 0 && S_ISBLK(st.st_mode))
        add_stack(s, st.st_rdev, 0);
}

static int is_root_disk(const blockdev_t *d)
{
    devset_t root;
    root_devices(&root);
    return devset_has(&root, d->rdev) || (d->partition && devset_has(&root, d->parent));
}

/* The device and its partitions. */
static void device_and_partitions(const blockdev_t *d, devset_t *s, size_t *parts)
{
    char sys[64], path[PATH_MAX];
    memset(s, 0, sizeof(*s));
    devset_add(s, d->rdev);
    *parts = 0;
    sys_dir(d->rdev, sys, sizeof(sys));
    DIR *dir = opendir(sys);
    struct dirent *e;
    while (dir && (e = readdir(dir)) != NULL) {
        dev_t p;
        snprintf(path, sizeof(path), "%s/%s/partition", sys, e->d_name);
        if (e->d_name[0] == '.' || access(path, F_OK) < 0) continue;
        snprintf(path, sizeof(path), "%s/%s/dev", sys, e->d_name);
        if (read_devno(path, &p) == 0) {
            devset_add(s, p);
            (*parts)++;
        }
    }
    if (dir) closedir(dir);
}

/* Fails with code when the device or one of its partitions is mounted, used as swap, held by
 * another block device (device mapper, md) or opened exclusively. */
static void refuse_if_in_use(const req_t *r, const blockdev_t *d, const char *code)
{
    devset_t s;
    size_t parts;
    mnt_t m;
    device_and_partitions(d, &s, &parts);
    if (find_mount(match_devs, &s, 0, &m))
        fail(r, code, "%s is already mounted at %s", d->path, m.where);
    for (size_t i = 0; i < s.n; i++) {
        char path[128];
        snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/holders", major(s.d[i]), minor(s.d[i]));
        DIR *dir = opendir(path);
        struct dirent *e;
        while (dir && (e = readdir(dir)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char name[256];
            snprintf(name, sizeof(name), "%s", e->d_name);
            closedir(dir);
            fail(r, code, "%s is in use by %s", d->path, name);
        }
        if (dir) closedir(dir);
    }
    FILE *f = fopen("/proc/swaps", "re");
    char line[PATH_MAX + 64], dev[PATH_MAX];
    while (f && fgets(line, sizeof(line), f)) {
        struct stat st;
        if (sscanf(line, "%4095s", dev) == 1 && stat(dev, &st) == 0 && S_ISBLK(st.st_mode) &&
            devset_has(&s, st.st_rdev)) {
            fclose(f);
            fail(r, code, "%s is in use as swap", d->path);
        }
    }
    if (f) fclose(f);
    /* The kernel's own answer for whatever the checks above missed. */
    int fd = open(d->path, O_RDONLY | O_EXCL | O_CLOEXEC);
    if (fd < 0 && errno == EBUSY) fail(r, code, "%s is in use (busy)", d->path);
    if (fd >= 0) close(fd);
}

/* ---- probe ------------------------------------------------------------------------------ */

typedef struct exports_s {
    char text[TOOL_OUT_MAX];
    size_t len;
    int pttype;
    char type[64];
} exports_t;

static void on_export(void *data, const char *key, size_t kl, const char *val, size_t vl)
{
    exports_t *e = data;
    if (e->len + kl + vl + 3 > sizeof(e->text)) return;
    e->len += (size_t)snprintf(e->text + e->len, sizeof(e->text) - e->len, "%.*s=%.*s\n", (int)kl,
                               key, (int)vl, val);
    if (kl == 6 && memcmp(key, "PTTYPE", 6) == 0) e->pttype = 1;
    if (kl == 4 && memcmp(key, "TYPE", 4) == 0)
        snprintf(e->type, sizeof(e->type), "%.*s", (int)vl, val);
}

/* blkid's low-level probe (-p: the device itself, not the cache). Returns the number of
 * KEY=VALUE pairs (0: no signature), or fails the request. */
static int probe(const req_t *r, const blockdev_t *d, exports_t *e)
{
    tool_t t;
    const char *argv[] = {"blkid", "-p", "-o", "export", d->path, NULL};
    memset(e, 0, sizeof(*e));
    run_tool(r, argv, r->cfg->mounts_mount_timeout_ms, &t);
    if (t.status == 2) return 0; /* nothing found */
    if (t.status != 0) fail_tool(r, "blkid", &t);
    return exo_mnt_blkid_parse(t.out, strlen(t.out), on_export, e);
}

static void op_probe(const req_t *r, const exo_priv_msg_t *m)
{
    char dev[EXO_MNT_DEVICE_MAX + 1];
    blockdev_t d;
    exports_t e;
    exo_priv_field_copy(&m->f[0], dev, sizeof(dev));
    resolve_device(r, dev, &d);
    int root = is_root_disk(&d);
    probe(r, &d, &e);
    /* blkid names the device it was given; the answer names the resolved one. */
    exo_priv_field_t f[5] = {
        {"ok", 2},
        {e.text, e.len},
        {d.path, strlen(d.path)},
        {d.kname, strlen(d.kname)},
        {root ? "1" : "0", 1},
    };
    reply(r, f, 5);
}

/* ---- mkfs ------------------------------------------------------------------------------- */

static void op_mkfs(const req_t *r, const exo_priv_msg_t *m)
{
    char dev[EXO_MNT_DEVICE_MAX + 1], label[17], uuid[37];
    blockdev_t d;
    exports_t e;
    size_t parts;
    devset_t s;
    exo_priv_field_copy(&m->f[0], dev, sizeof(dev));
    exo_priv_field_copy(&m->f[1], label, sizeof(label));
    exo_priv_field_copy(&m->f[2], uuid, sizeof(uuid));
    resolve_device(r, dev, &d);
    if (is_root_disk(&d)) fail(r, "root_disk", "%s is (or is on) the root disk", d.path);
    refuse_if_in_use(r, &d, "mounted");
    device_and_partitions(&d, &s, &parts);
    if (parts) fail(r, "partitioned", "%s has %zu partitions", d.path, parts);
    if (probe(r, &d, &e) > 0) {
        if (e.pttype) fail(r, "partitioned", "%s has a partition table", d.path);
        fail(r, "has_signature", "%s already holds %s%s", d.path,
             e.type[0] ? "a file system: " : "a signature", e.type);
    }
    const char *argv[20];
    int n = 0;
    argv[n++] = "mkfs.ext4";
    argv[n++] = "-q";
    argv[n++] = "-L";
    argv[n++] = label;
    if (uuid[0]) {
        argv[n++] = "-U";
        argv[n++] = uuid;
    }
    const char *rest[] = {"-I", "256", "-m", "0", "-E", "nodiscard,lazy_itable_init=1",
                          "-b", "4096"};
    for (size_t i = 0; i < sizeof(rest) / sizeof(rest[0]); i++)
        argv[n++] = rest[i];
    argv[n++] = d.path;
    argv[n] = NULL;
    tool_t t;
    run_tool(r, argv, r->cfg->mounts_mkfs_timeout_ms, &t);
    if (t.status != 0) fail_tool(r, "mkfs.ext4", &t);
    exo_info("mounts: made an ext4 file system on %s (label %s%s%s)", d.path, label,
             uuid[0] ? ", uuid " : "", uuid);
    exo_priv_field_t f[1] = {{"ok", 2}};
    reply(r, f, 1);
}

/* ---- mount ------------------------------------------------------------------------------ */

typedef struct owner_s {
    uid_t uid;
    gid_t gid;
    char user[64], group[64];
} owner_t;

static void lookup_owner(const req_t *r, owner_t *o)
{
    struct passwd pw, *res = NULL;
    struct group gr, *gres = NULL;
    char buf[4096], gbuf[4096];
    const char *name = r->cfg->mounts_owner;
    if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
        fail(r, "no_owner", "the owner of mounts, user '%s' ([mounts] owner), does not exist",
             name);
    o->uid = pw.pw_uid;
    o->gid = pw.pw_gid;
    snprintf(o->user, sizeof(o->user), "%s", pw.pw_name);
    if (getgrgid_r(pw.pw_gid, &gr, gbuf, sizeof(gbuf), &gres) == 0 && gres)
        snprintf(o->group, sizeof(o->group), "%s", gr.gr_name);
    else
        snprintf(o->group, sizeof(o->group), "%u", (unsigned)pw.pw_gid);
}

static int have_systemd(void)
{
    return access("/run/systemd/system", F_OK) == 0;
}

static void require_systemd(const req_t *r)
{
    if (!have_systemd())
        fail(r, "no_systemd", "mounts need systemd as the init system (no /run/systemd/system)");
}

static int unit_active(const req_t *r, const char *unit)
{
    tool_t t;
    const char *argv[] = {"systemctl", "is-active", "--quiet", unit, NULL};
    run_tool(r, argv, STEP_MS, &t);
    return t.status == 0;
}

/* mkdir -p of a configured prefix, 0755 root. */
static void make_prefix(const req_t *r, const char *prefix)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s", prefix);
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            fail(r, "failed", "cannot create %s: %s", path, strerror(errno));
        *p = c;
        if (c == '\0') break;
    }
}

static void refuse_if_mountpoint_taken(const req_t *r, const char *where, const char *unit)
{
    mnt_t m;
    if (find_mount(match_where, where, 1, &m))
        fail(r, "already_mounted", "%s is already a mountpoint (of %s)", where, m.source);
    if (have_systemd() && unit_active(r, unit))
        fail(r, "already_mounted", "the unit %s is already active", unit);
}

/* Owner and group of the mounted root directory, like today's script. */
static void chown_root(const req_t *r, const char *where, const owner_t *o)
{
    if (chown(where, o->uid, o->gid) < 0)
        exo_warn("mounts: cannot give %s to %s:%s: %s", where, o->user, o->group, strerror(errno));
}

static void op_mount(const req_t *r, const exo_priv_msg_t *m)
{
    char dev[EXO_MNT_DEVICE_MAX + 1], where[PATH_MAX], unit[PATH_MAX], opts[512];
    blockdev_t d;
    owner_t o;
    exo_priv_field_copy(&m->f[0], dev, sizeof(dev));
    exo_priv_field_copy(&m->f[1], where, sizeof(where));
    int ro = exo_priv_field_is(&m->f[2], "1");
    if (exo_mnt_escape_path(where, ".mount", unit, sizeof(unit)) < 0)
        fail(r, "failed", "the unit name of %s is too long", where);
    lookup_owner(r, &o);
    resolve_device(r, dev, &d);
    if (is_root_disk(&d)) fail(r, "root_disk", "%s is (or is on) the root disk", d.path);
    require_systemd(r);
    refuse_if_mountpoint_taken(r, where, unit);
    refuse_if_in_use(r, &d, "already_mounted");
    make_prefix(r, exo_mnt_mountpoint_ok(r->cfg, where, strlen(where), 1)
                       ? r->cfg->mounts_share_prefix
                       : r->cfg->mounts_volume_prefix);
    snprintf(opts, sizeof(opts),
             "--options=user,exec,%s,auto,nofail,X-mount.owner=%s,X-mount.group=%s,"
             "x-systemd.device-timeout=1s",
             ro ? "ro" : "rw", o.user, o.group);
    const char *argv[] = {
        "systemd-mount", "--no-ask-password", "--collect", opts, d.path, where, NULL};
    tool_t t;
    run_tool(r, argv, r->cfg->mounts_mount_timeout_ms, &t);
    if (t.status != 0) fail_tool(r, "systemd-mount", &t);
    if (!ro) chown_root(r, where, &o);
    exo_info("mounts: mounted %s at %s (%s, unit %s)", d.path, where, ro ? "ro" : "rw", unit);
    exo_priv_field_t f[2] = {{"ok", 2}, {unit, strlen(unit)}};
    reply(r, f, 2);
}

/* ---- unmount ---------------------------------------------------------------------------- */

typedef struct list_s {
    char text[3000];
    size_t len;
} list_t;

static void list_add(list_t *l, const char *item)
{
    size_t n = strlen(item);
    if (l->len + n + 2 > sizeof(l->text)) return;
    if (l->len) l->text[l->len++] = '\n';
    memcpy(l->text + l->len, item, n + 1);
    l->len += n;
}

/* The files the agent keeps for a share whose unit is `unit`: its secret (kernel client), its
 * keyring and its ceph.conf (ceph-fuse). systemd's "\" escapes are written as "@" (which the
 * escaping never produces), because mount.fuse.ceph passes options through a shell. */
static void share_file(const exo_config_t *cfg, const char *unit, const char *ext, char *out,
                       size_t cap)
{
    char name[PATH_MAX];
    snprintf(name, sizeof(name), "%s", unit);
    for (char *p = name; *p; p++)
        if (*p == '\\') *p = '@';
    fmt(out, cap, "%s/%s.%s", cfg->mounts_secret_dir, name, ext);
}

static int agent_unit(const char *unit_path)
{
    char line[128];
    return read_line(unit_path, line, sizeof(line)) == 0 && strcmp(line, EXO_MNT_MARKER) == 0;
}

static void systemctl_quiet(const req_t *r, const char *verb, const char *unit)
{
    tool_t t;
    const char *argv[] = {"systemctl", verb, unit, NULL};
    const char *reload[] = {"systemctl", "daemon-reload", NULL};
    run_tool(r, unit ? argv : reload, STEP_MS, &t);
    if (t.status != 0)
        exo_warn("mounts: systemctl %s%s%s: %s", verb, unit ? " " : "", unit ? unit : "",
                 tool_text(&t));
}

/* Disables and removes a share's unit and its files; adds what it removed to removed. */
static void remove_share(const req_t *r, const char *unit, list_t *removed)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", UNIT_DIR, unit);
    if (have_systemd()) systemctl_quiet(r, "disable", unit);
    if (unlink(path) == 0) list_add(removed, path);
    static const char *const exts[] = {"secret", "keyring", "conf"};
    for (size_t i = 0; i < 3; i++) {
        share_file(r->cfg, unit, exts[i], path, sizeof(path));
        if (unlink(path) == 0) list_add(removed, path);
    }
    if (have_systemd()) systemctl_quiet(r, "daemon-reload", NULL);
}

static void __attribute__((noreturn)) busy(const req_t *r, const char *where, dev_t dev)
{
    static exo_mnt_holder_t h[EXO_MNT_HOLDERS_MAX];
    static char enc[EXO_PRIV_MAX_MESSAGE];
    char msg[256], trunc[24];
    size_t found = exo_mnt_scan_holders("/proc", where, dev, h, EXO_MNT_HOLDERS_MAX);
    size_t listed = found < EXO_MNT_HOLDERS_MAX ? found : EXO_MNT_HOLDERS_MAX;
    size_t pids = 0;
    for (size_t i = 0; i < listed; i++)
        if (i == 0 || h[i].pid != h[i - 1].pid) pids++;
    fmt(msg, sizeof(msg), "%s is busy: %zu process%s hold%s %zu file%s open on it%s", where, pids,
        pids == 1 ? "" : "es", pids == 1 ? "s" : "", found, found == 1 ? "" : "s",
        found > listed ? " (the list is cut short)" : "");
    /* Room for the header, four field lengths, the code, the message and the count. */
    size_t room = EXO_PRIV_MAX_MESSAGE - 12 - 16 - 4 - strlen(msg) - sizeof(trunc);
    size_t written;
    size_t len = exo_mnt_holders_encode(h, listed, enc, room, &written);
    snprintf(trunc, sizeof(trunc), "%zu", found - written);
    exo_warn("mounts: unmount failed: busy: %s", msg);
    exo_priv_field_t f[4] = {{"busy", 4}, {msg, strlen(msg)}, {enc, len}, {trunc, strlen(trunc)}};
    reply(r, f, 4);
}

static void op_unmount(const req_t *r, const exo_priv_msg_t *m)
{
    char where[PATH_MAX], unit[PATH_MAX], unit_path[PATH_MAX];
    list_t stopped = {0}, removed = {0};
    mnt_t mnt;
    tool_t t;
    exo_priv_field_copy(&m->f[0], where, sizeof(where));
    int lazy = exo_priv_field_is(&m->f[1], "1");
    if (exo_mnt_escape_path(where, ".mount", unit, sizeof(unit)) < 0)
        fail(r, "failed", "the unit name of %s is too long", where);
    fmt(unit_path, sizeof(unit_path), "%s/%s", UNIT_DIR, unit);
    if (!find_mount(match_where, where, 1, &mnt))
        fail(r, "not_mounted", "%s is not a mountpoint", where);
    struct stat st;
    dev_t fsdev = stat(where, &st) == 0 ? st.st_dev : mnt.dev;
    if (have_systemd()) {
        /* Today's udev automount unit first: stopping it is what keeps it from mounting the
         * volume again; then the mount unit itself (systemd-mount's or a share's). */
        struct stat ds;
        if (strncmp(mnt.source, "/dev/", 5) == 0 && stat(mnt.source, &ds) == 0 &&
            S_ISBLK(ds.st_mode)) {
            blockdev_t d;
            resolve_device(r, mnt.source, &d);
            char svc[128];
            snprintf(svc, sizeof(svc), "automount-volume@%s.service", d.kname);
            if (unit_active(r, svc)) {
                const char *argv[] = {"systemctl", "stop", svc, NULL};
                run_tool(r, argv, r->cfg->mounts_mount_timeout_ms, &t);
                if (t.status == 0) list_add(&stopped, svc);
            }
        }
        if (unit_active(r, unit)) {
            const char *argv[] = {"systemctl", "stop", unit, NULL};
            run_tool(r, argv, r->cfg->mounts_mount_timeout_ms, &t);
            if (t.status == -ETIMEDOUT)
                fail(r, "timeout", "systemctl stop %s did not finish", unit);
            if (t.status == 0) list_add(&stopped, unit);
        }
    }
    if (find_mount(match_where, where, 1, &mnt)) {
        if (umount2(where, lazy ? MNT_DETACH : 0) < 0) {
            if (errno == EBUSY) busy(r, where, fsdev);
            fail(r, "failed", "umount %s: %s", where, strerror(errno));
        }
    }
    if (agent_unit(unit_path)) remove_share(r, unit, &removed);
    /* The empty mountpoint goes too, as today's automount removes it; rmdir leaves a directory
     * that holds anything (or is still mounted, lazily detached or stacked) alone. */
    if (!find_mount(match_where, where, 1, &mnt) && rmdir(where) == 0) list_add(&removed, where);
    exo_info("mounts: unmounted %s%s (stopped: %s)", where, lazy ? " (lazily)" : "",
             stopped.len ? stopped.text : "none");
    exo_priv_field_t f[3] = {{"ok", 2}, {stopped.text, stopped.len}, {removed.text, removed.len}};
    reply(r, f, 3);
}

/* ---- CephFS ----------------------------------------------------------------------------- */

/* The kernel client needs mount.ceph and a ceph module that is loaded or can be. */
static int kernel_client(void)
{
    char path[PATH_MAX], rel[256], line[1024];
    if (find_tool("mount.ceph", path, sizeof(path)) < 0) return 0;
    if (access("/sys/module/ceph", F_OK) == 0) return 1;
    if (read_line("/proc/sys/kernel/osrelease", rel, sizeof(rel)) < 0) return 0;
    int found = 0;
    static const char *const roots[] = {"/lib/modules", "/usr/lib/modules"};
    for (size_t i = 0; i < 2 && !found; i++) {
        snprintf(path, sizeof(path), "%s/%s/modules.dep", roots[i], rel);
        FILE *f = fopen(path, "re");
        while (f && !found && fgets(line, sizeof(line), f)) {
            char *colon = strchr(line, ':');
            if (colon == NULL) continue;
            *colon = '\0';
            const char *base = strrchr(line, '/');
            base = base ? base + 1 : line;
            found = strncmp(base, "ceph.ko", 7) == 0;
        }
        if (f) fclose(f);
    }
    return found;
}

/* Why a CephFS mount failed, from the tools' and the unit's messages. The strings are those
 * of ceph-fuse ("ceph mount failed with (13) Permission denied", "(110) Connection timed
 * out", "(1) Operation not permitted" for a path outside the access rule, "(2) No such file or
 * directory") and of mount.ceph ("mount error 13 = Permission denied", "mount error 110"),
 * as docs/testing-systemd.md "Ceph in a container" records them. */
const char *exo_mnt_cephfs_classify(const char *text)
{
    static const char *const denied[] = {
        "Permission denied", "error 13",  "EACCES",
        "permission denied", "error -13", "(1) Operation not permitted",
        "non-allowable root"};
    static const char *const unreach[] = {
        "Connection timed out", "error 110",  "no mds",   "can't connect",
        "unable to get monmap", "error -110", "ETIMEDOUT"};
    static const char *const missing[] = {"(2) No such file or directory",
                                          "error 2 = No such file"};
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++)
        if (strstr(text, denied[i])) return "permission_denied";
    for (size_t i = 0; i < sizeof(unreach) / sizeof(unreach[0]); i++)
        if (strstr(text, unreach[i])) return "unreachable";
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++)
        if (strstr(text, missing[i])) return "not_found";
    return "failed";
}

static void secret_dir(const req_t *r)
{
    const char *dir = r->cfg->mounts_secret_dir;
    struct stat st;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        fail(r, "failed", "cannot create %s: %s", dir, strerror(errno));
    if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        fail(r, "failed", "%s ([mounts] secret_dir) is not a directory", dir);
    if (chown(dir, 0, 0) < 0 || chmod(dir, 0700) < 0)
        fail(r, "failed", "cannot make %s root's alone: %s", dir, strerror(errno));
}

static void write_or_fail(const req_t *r, const char *path, const char *text, size_t len,
                          mode_t mode)
{
    int rc = exo_mnt_write_file(path, text, len, mode);
    if (rc < 0) fail(r, "failed", "cannot write %s: %s", path, strerror(-rc));
}

static void op_cephfs(req_t *r, const exo_priv_msg_t *m)
{
    char where[PATH_MAX], export_path[EXO_MNT_EXPORT_MAX + 1], user[65], key[EXO_MNT_KEY_MAX + 1];
    char unit[PATH_MAX], unit_path[PATH_MAX], secret[PATH_MAX], conf[PATH_MAX];
    char text[8192];
    owner_t o;
    exo_priv_field_copy(&m->f[0], where, sizeof(where));
    exo_priv_field_copy(&m->f[1], export_path, sizeof(export_path));
    exo_priv_field_copy(&m->f[2], user, sizeof(user));
    exo_priv_field_copy(&m->f[3], key, sizeof(key));
    r->key = key;
    int ro = exo_priv_field_is(&m->f[4], "1");
    if (exo_mnt_escape_path(where, ".mount", unit, sizeof(unit)) < 0)
        fail(r, "failed", "the unit name of %s is too long", where);
    fmt(unit_path, sizeof(unit_path), "%s/%s", UNIT_DIR, unit);
    lookup_owner(r, &o);
    char tool[PATH_MAX];
    int fuse = !kernel_client();
    if (fuse && find_tool("ceph-fuse", tool, sizeof(tool)) < 0)
        fail(r, "no_client",
             "no CephFS client: neither mount.ceph (with the ceph kernel module) nor ceph-fuse "
             "is installed");
    require_systemd(r);
    refuse_if_mountpoint_taken(r, where, unit);
    if (access(unit_path, F_OK) == 0)
        fail(r, "already_mounted", "%s exists: the share is already set up", unit_path);
    secret_dir(r);
    share_file(r->cfg, unit, fuse ? "keyring" : "secret", secret, sizeof(secret));
    share_file(r->cfg, unit, "conf", conf, sizeof(conf));
    int n = exo_mnt_secret_text(fuse, user, key, text, sizeof(text));
    if (n < 0) fail(r, "failed", "the secret does not fit");
    write_or_fail(r, secret, text, (size_t)n, 0600);
    if (fuse) {
        n = exo_mnt_fuse_conf_text(export_path,
                                   exo_mnt_client_timeout_s(r->cfg->mounts_mount_timeout_ms), text,
                                   sizeof(text));
        if (n < 0) fail(r, "failed", "the ceph.conf does not fit");
        write_or_fail(r, conf, text, (size_t)n, 0600);
    }
    exo_cephfs_unit_t u = {.mountpoint = where,
                           .export_path = export_path,
                           .user = user,
                           .secret_file = secret,
                           .conf_file = conf,
                           .fuse = fuse,
                           .read_only = ro,
                           .timeout_s = exo_mnt_client_timeout_s(r->cfg->mounts_mount_timeout_ms)};
    n = exo_mnt_cephfs_unit_text(&u, text, sizeof(text));
    if (n < 0 || exo_mnt_write_file(unit_path, text, (size_t)n, 0644) < 0) {
        list_t removed = {0};
        remove_share(r, unit, &removed);
        fail(r, "failed", "cannot write %s", unit_path);
    }
    make_prefix(r, r->cfg->mounts_share_prefix);
    systemctl_quiet(r, "daemon-reload", NULL);
    tool_t t;
    const char *argv[] = {"systemctl", "enable", "--now", unit, NULL};
    run_tool(r, argv, r->cfg->mounts_mount_timeout_ms, &t);
    mnt_t mnt;
    if (t.status == 0 && find_mount(match_where, where, 1, &mnt)) {
        if (!ro) chown_root(r, where, &o);
        exo_info("mounts: mounted CephFS share %s at %s as %s (%s client, %s, unit %s)",
                 export_path, where, user, fuse ? "fuse" : "kernel", ro ? "ro" : "rw", unit);
        const char *client = fuse ? "fuse" : "kernel";
        exo_priv_field_t f[4] = {
            {"ok", 2}, {unit, strlen(unit)}, {client, strlen(client)}, {secret, strlen(secret)}};
        reply(r, f, 4);
    }
    /* Why, from systemctl and the unit's journal, before the clean-up. */
    char why[2 * TOOL_OUT_MAX + 64];
    tool_t j;
    const char *jargv[] = {"journalctl", "--no-pager", "-o", "cat", "-n", "20", "-u", unit, NULL};
    int timed_out = t.status == -ETIMEDOUT;
    snprintf(why, sizeof(why), "%s", tool_text(&t));
    run_tool(r, jargv, STEP_MS, &j);
    if (j.status == 0 && j.out[0]) snprintf(why, sizeof(why), "%s\n%s", t.err, j.out);
    scrub(r, why);
    list_t removed = {0};
    if (timed_out) systemctl_quiet(r, "stop", unit);
    remove_share(r, unit, &removed);
    const char *code = timed_out ? "timeout" : exo_mnt_cephfs_classify(why);
    /* The last lines say most; keep the message short. */
    const char *tail = why + (strlen(why) > 600 ? strlen(why) - 600 : 0);
    fail(r, code, "mounting %s at %s failed: %s", export_path, where, tail);
}

/* ---- entry ------------------------------------------------------------------------------ */

void exo_mountop_child(const exo_config_t *cfg, const exo_priv_msg_t *m, int fd)
{
    req_t r = {.cfg = cfg, .op = m->op, .seq = m->seq, .fd = fd};
    umask(022);
    switch (m->op) {
    case EXO_OP_MOUNT_PROBE:
        op_probe(&r, m);
        break;
    case EXO_OP_MOUNT_MKFS:
        op_mkfs(&r, m);
        break;
    case EXO_OP_MOUNT_MOUNT:
        op_mount(&r, m);
        break;
    case EXO_OP_MOUNT_UNMOUNT:
        op_unmount(&r, m);
        break;
    case EXO_OP_MOUNT_CEPHFS:
        op_cephfs(&r, m);
        break;
    }
    fail(&r, "failed", "unknown operation %u", (unsigned)m->op);
}
