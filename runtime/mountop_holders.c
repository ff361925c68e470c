/* Which processes hold files on a busy mount (mountop.h): a scan of /proc, as lsof and fuser
 * do, without depending on either being installed (today's unmount script needed lsof). */
#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mountop.h"

typedef struct scan_s {
    const char *mountpoint;
    size_t mlen;
    dev_t dev;
    exo_mnt_holder_t *out;
    size_t max, found;
    pid_t pid;
    uid_t uid;
    char comm[17], user[33];
} scan_t;

static void add(scan_t *s, const char *use, int fd, const char *path)
{
    s->found++;
    if (s->found > s->max) return;
    exo_mnt_holder_t *h = &s->out[s->found - 1];
    memset(h, 0, sizeof(*h));
    h->pid = s->pid;
    h->uid = s->uid;
    h->fd = fd;
    snprintf(h->use, sizeof(h->use), "%s", use);
    memcpy(h->comm, s->comm, sizeof(h->comm));
    memcpy(h->user, s->user, sizeof(h->user));
    /* Paths are cut to EXO_MNT_HOLDER_PATH_MAX bytes: an answer has to fit in 8 KiB. */
    snprintf(h->path, sizeof(h->path), "%s", path);
}

/* The link at dir/name when what it points to is on the mount (by device number). */
static void check_link(scan_t *s, const char *dir, const char *name, const char *use, int fd)
{
    char link[512], target[4096];
    struct stat st;
    int len = snprintf(link, sizeof(link), "%s/%s", dir, name);
    if (len < 0 || (size_t)len >= sizeof(link)) return; /* never: /proc/PID/fd/N */
    if (stat(link, &st) < 0 || st.st_dev != s->dev) return;
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n < 0) n = 0;
    target[n] = '\0';
    add(s, use, fd, target);
}

static void scan_fds(scan_t *s, const char *pdir)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/fd", pdir);
    DIR *d = opendir(dir);
    if (d == NULL) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        check_link(s, dir, e->d_name, "fd", atoi(e->d_name));
    }
    closedir(d);
}

/* Mapped files by path (a mapping's device in maps is the file system's, but comparing paths
 * under the mountpoint is what the caller can read, and it needs no stat of each file). Each
 * file is listed once per process. */
static void scan_maps(scan_t *s, const char *pdir)
{
    char file[512], line[4608], last[4096] = "";
    snprintf(file, sizeof(file), "%s/maps", pdir);
    FILE *f = fopen(file, "re");
    if (f == NULL) return;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        /* address perms offset dev inode path */
        char *p = line;
        for (int field = 0; field < 5 && p; field++) {
            p = strchr(p, ' ');
            while (p && *p == ' ')
                p++;
        }
        if (p == NULL || *p != '/') continue;
        if (strncmp(p, s->mountpoint, s->mlen) != 0 || (p[s->mlen] != '/' && p[s->mlen] != '\0'))
            continue;
        if (strncmp(p, last, sizeof(last)) == 0) continue;
        /* Consecutive lines of one mapped file repeat the path; one report per file. */
        size_t n = strnlen(p, sizeof(last) - 1);
        memcpy(last, p, n);
        last[n] = '\0';
        add(s, "mmap", -1, p);
    }
    fclose(f);
}

static void process_facts(scan_t *s, const char *pdir)
{
    char file[512];
    struct stat st;
    s->uid = stat(pdir, &st) == 0 ? st.st_uid : (uid_t)-1;
    snprintf(file, sizeof(file), "%s/comm", pdir);
    s->comm[0] = '\0';
    FILE *f = fopen(file, "re");
    if (f) {
        if (fgets(s->comm, sizeof(s->comm), f) == NULL) s->comm[0] = '\0';
        s->comm[strcspn(s->comm, "\n")] = '\0';
        fclose(f);
    }
    struct passwd pw, *res = NULL;
    char buf[2048];
    if (getpwuid_r(s->uid, &pw, buf, sizeof(buf), &res) == 0 && res)
        snprintf(s->user, sizeof(s->user), "%s", pw.pw_name);
    else
        snprintf(s->user, sizeof(s->user), "%u", (unsigned)s->uid);
}

size_t exo_mnt_scan_holders(const char *proc_root, const char *mountpoint, dev_t dev,
                            exo_mnt_holder_t *out, size_t max)
{
    scan_t s = {
        .mountpoint = mountpoint, .mlen = strlen(mountpoint), .dev = dev, .out = out, .max = max};
    DIR *d = opendir(proc_root);
    if (d == NULL) return 0;
    pid_t self = getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || pid == self) continue;
        char pdir[300];
        snprintf(pdir, sizeof(pdir), "%s/%ld", proc_root, pid);
        s.pid = (pid_t)pid;
        process_facts(&s, pdir);
        check_link(&s, pdir, "cwd", "cwd", -1);
        check_link(&s, pdir, "root", "root", -1);
        check_link(&s, pdir, "exe", "exe", -1);
        scan_fds(&s, pdir);
        scan_maps(&s, pdir);
    }
    closedir(d);
    return s.found;
}

/* Appends text with control bytes, "\\", "\t" and bytes over 0x7e as \xNN. */
static int put_escaped(char *out, size_t cap, size_t *o, const char *text)
{
    static const char hex[] = "0123456789abcdef";
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        int esc = *p < 0x20 || *p > 0x7e || *p == '\\';
        if (*o + (esc ? 4 : 1) >= cap) return -1;
        if (!esc) {
            out[(*o)++] = (char)*p;
            continue;
        }
        out[(*o)++] = '\\';
        out[(*o)++] = 'x';
        out[(*o)++] = hex[*p >> 4];
        out[(*o)++] = hex[*p & 15];
    }
    return 0;
}

size_t exo_mnt_holders_encode(const exo_mnt_holder_t *h, size_t n, char *out, size_t cap,
                              size_t *written)
{
    size_t o = 0;
    *written = 0;
    for (size_t i = 0; i < n; i++) {
        size_t start = o;
        char head[96];
        int hl = snprintf(head, sizeof(head), "%d\t%u\t%s\t%d\t", (int)h[i].pid, (unsigned)h[i].uid,
                          h[i].use, h[i].fd);
        int ok = hl > 0 && o + (size_t)hl < cap;
        if (ok) {
            memcpy(out + o, head, (size_t)hl);
            o += (size_t)hl;
        }
        ok = ok && put_escaped(out, cap, &o, h[i].user) == 0 && o + 1 < cap;
        if (ok) out[o++] = '\t';
        ok = ok && put_escaped(out, cap, &o, h[i].comm) == 0 && o + 1 < cap;
        if (ok) out[o++] = '\t';
        ok = ok && put_escaped(out, cap, &o, h[i].path) == 0 && o + 1 < cap;
        if (!ok) {
            o = start;
            break;
        }
        out[o++] = '\n';
        (*written)++;
    }
    if (cap) out[o < cap ? o : cap - 1] = '\0';
    return o;
}
