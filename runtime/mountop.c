/* The mount operations' checks and texts; see mountop.h. The child's work is in
 * mountop_run.c, the scan for holders of a busy mount in mountop_holders.c. */
#include "mountop.h"
#include "statefile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int in_set(unsigned char c, const char *extra)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    return c != '\0' && strchr(extra, c) != NULL;
}

static int all_in_set(const char *p, size_t len, const char *extra)
{
    for (size_t i = 0; i < len; i++)
        if (!in_set((unsigned char)p[i], extra)) return 0;
    return 1;
}

/* An absolute path without "//", "." or ".." components and without a trailing "/". */
static int normalised(const char *p, size_t len)
{
    if (len < 2 || p[0] != '/' || p[len - 1] == '/') return 0;
    size_t i = 0;
    while (i < len) {
        size_t start = ++i; /* past the "/" */
        while (i < len && p[i] != '/')
            i++;
        size_t n = i - start;
        if (n == 0) return 0;
        if ((n == 1 && p[start] == '.') || (n == 2 && p[start] == '.' && p[start + 1] == '.'))
            return 0;
    }
    return 1;
}

int exo_mnt_device_ok(const char *p, size_t len)
{
    return len > 5 && len <= EXO_MNT_DEVICE_MAX && memcmp(p, "/dev/", 5) == 0 &&
           all_in_set(p, len, "_.:@+=,-/") && normalised(p, len);
}

static int component_ok(const char *p, size_t len)
{
    return len >= 1 && len <= EXO_MNT_NAME_MAX && p[0] != '.' && p[0] != '-' &&
           all_in_set(p, len, "_.@+-");
}

static int under(const char *prefix, const char *p, size_t len)
{
    size_t pl = strlen(prefix);
    while (pl > 1 && prefix[pl - 1] == '/')
        pl--;            /* a configured "/media/volume/" */
    if (pl == 1) pl = 0; /* "/" itself */
    if (len <= pl + 1 || memcmp(p, prefix, pl) != 0 || p[pl] != '/') return 0;
    return component_ok(p + pl + 1, len - pl - 1);
}

int exo_mnt_mountpoint_ok(const exo_config_t *cfg, const char *p, size_t len, int share_only)
{
    if (!normalised(p, len) || memchr(p, '\0', len)) return 0;
    if (under(cfg->mounts_share_prefix, p, len)) return 1;
    return !share_only && under(cfg->mounts_volume_prefix, p, len);
}

int exo_mnt_label_ok(const char *p, size_t len)
{
    return len >= 1 && len <= 16 && all_in_set(p, len, "_.-");
}

int exo_mnt_uuid_ok(const char *p, size_t len)
{
    if (len != 36) return 0;
    for (size_t i = 0; i < 36; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        unsigned char c = (unsigned char)p[i];
        int hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (dash ? c != '-' : !hex) return 0;
    }
    return 1;
}

/* host:port, the host a name, an IPv4 address or a bracketed IPv6 address. */
static int mon_ok(const char *p, size_t len)
{
    const char *colon = NULL;
    if (len > 0 && p[0] == '[') {
        const char *close = memchr(p, ']', len);
        if (close == NULL || close == p + 1 || close + 1 >= p + len || close[1] != ':') return 0;
        for (const char *q = p + 1; q < close; q++)
            if (*q == '\0' || !strchr("0123456789abcdefABCDEF:.", *q)) return 0;
        colon = close + 1;
    } else {
        colon = memchr(p, ':', len);
        if (colon == NULL || colon == p || colon - p > 253) return 0;
        if (!all_in_set(p, (size_t)(colon - p), ".-") || p[0] == '-' || p[0] == '.') return 0;
    }
    size_t plen = (size_t)(p + len - colon - 1);
    if (plen < 1 || plen > 5 || !all_in_set(colon + 1, plen, "")) return 0;
    for (size_t i = 1; i <= plen; i++)
        if (colon[i] < '0' || colon[i] > '9') return 0;
    return 1;
}

int exo_mnt_export_ok(const char *p, size_t len)
{
    if (len > EXO_MNT_EXPORT_MAX || memchr(p, '\0', len)) return 0;
    /* The path starts at the first ":/" (hosts and ports hold no "/"). */
    const char *path = NULL;
    for (size_t i = 0; i + 1 < len && path == NULL; i++)
        if (p[i] == ':' && p[i + 1] == '/') path = p + i + 1;
    if (path == NULL || path == p + 1) return 0;
    size_t plen = (size_t)(p + len - path);
    if (plen > 1024 || !all_in_set(path, plen, "_./-")) return 0;
    if (plen > 1 && !normalised(path, plen)) return 0;
    const char *mons = p, *end = path - 1; /* the ":" before the path */
    while (mons < end) {
        const char *comma = memchr(mons, ',', (size_t)(end - mons));
        const char *stop = comma ? comma : end;
        if (!mon_ok(mons, (size_t)(stop - mons))) return 0;
        mons = comma ? comma + 1 : end;
        if (comma && mons == end) return 0;
    }
    return 1;
}

int exo_mnt_access_user_ok(const char *p, size_t len)
{
    return len >= 1 && len <= 64 && all_in_set(p, len, "_.-");
}

int exo_mnt_key_ok(const char *p, size_t len)
{
    if (len < 1 || len > EXO_MNT_KEY_MAX) return 0;
    size_t i = 0;
    while (i < len && in_set((unsigned char)p[i], "+/"))
        i++;
    size_t pad = 0;
    while (i < len && p[i] == '=' && pad < 2)
        i++, pad++;
    return i == len && i > pad;
}

int exo_mnt_flag_ok(const exo_priv_field_t *f)
{
    return exo_priv_field_is(f, "0") || exo_priv_field_is(f, "1");
}

static int device_field_ok(const exo_priv_field_t *f)
{
    return exo_mnt_device_ok(f->p, f->len);
}

const char *exo_mountop_check(const exo_config_t *cfg, const exo_priv_msg_t *m)
{
    const exo_priv_field_t *f = m->f;
    switch (m->op) {
    case EXO_OP_MOUNT_PROBE:
        if (m->n != 1) return "a mount probe without exactly 1 field";
        if (!device_field_ok(&f[0])) return "a mount probe with a bad device path";
        return NULL;
    case EXO_OP_MOUNT_MKFS:
        if (m->n != 3) return "a mkfs request without exactly 3 fields";
        if (!device_field_ok(&f[0])) return "a mkfs request with a bad device path";
        if (!exo_mnt_label_ok(f[1].p, f[1].len)) return "a mkfs request with a bad label";
        if (f[2].len != 0 && !exo_mnt_uuid_ok(f[2].p, f[2].len))
            return "a mkfs request with a bad UUID";
        return NULL;
    case EXO_OP_MOUNT_MOUNT:
        if (m->n != 3) return "a mount request without exactly 3 fields";
        if (!device_field_ok(&f[0])) return "a mount request with a bad device path";
        if (!exo_mnt_mountpoint_ok(cfg, f[1].p, f[1].len, 0))
            return "a mount request with a mountpoint not directly under a mount prefix";
        if (!exo_mnt_flag_ok(&f[2])) return "a mount request with a bad read-only flag";
        return NULL;
    case EXO_OP_MOUNT_UNMOUNT:
        if (m->n != 2) return "an unmount request without exactly 2 fields";
        if (!exo_mnt_mountpoint_ok(cfg, f[0].p, f[0].len, 0))
            return "an unmount request with a mountpoint not directly under a mount prefix";
        if (!exo_mnt_flag_ok(&f[1])) return "an unmount request with a bad lazy flag";
        return NULL;
    case EXO_OP_MOUNT_CEPHFS:
        if (m->n != 5) return "a CephFS mount request without exactly 5 fields";
        if (!exo_mnt_mountpoint_ok(cfg, f[0].p, f[0].len, 1))
            return "a CephFS mount request with a mountpoint not directly under share_prefix";
        if (!exo_mnt_export_ok(f[1].p, f[1].len))
            return "a CephFS mount request with a bad export path";
        if (!exo_mnt_access_user_ok(f[2].p, f[2].len))
            return "a CephFS mount request with a bad access user";
        if (!exo_mnt_key_ok(f[3].p, f[3].len)) return "a CephFS mount request with a bad key";
        if (!exo_mnt_flag_ok(&f[4])) return "a CephFS mount request with a bad read-only flag";
        return NULL;
    }
    return "a request for an operation that is not a mount operation";
}

uint32_t exo_mountop_timeout_ms(const exo_config_t *cfg, uint32_t op)
{
    if (op == EXO_OP_MOUNT_MKFS) return cfg->mounts_mkfs_timeout_ms;
    /* A CephFS mount runs systemctl enable --now and, on failure, a clean-up with its own
     * bounded steps: room for both. */
    if (op == EXO_OP_MOUNT_CEPHFS) return cfg->mounts_mount_timeout_ms * 2;
    return cfg->mounts_mount_timeout_ms;
}

/* ---- texts --------------------------------------------------------------------------- */

int exo_mnt_escape_path(const char *path, const char *suffix, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t len = strlen(path), start = 0, o = 0;
    while (start < len && path[start] == '/')
        start++;
    while (len > start && path[len - 1] == '/')
        len--;
    if (start == len) {
        if (cap < 2) return -1;
        out[o++] = '-';
    }
    for (size_t i = start; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c == '/') {
            if (i > start && path[i - 1] == '/') continue; /* "//" is one "/" */
            if (o + 1 >= cap) return -1;
            out[o++] = '-';
        } else if (in_set(c, ":_.") && !(c == '.' && i == start)) {
            if (o + 1 >= cap) return -1;
            out[o++] = (char)c;
        } else {
            if (o + 4 >= cap) return -1;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    size_t sl = strlen(suffix);
    if (o + sl >= cap) return -1;
    memcpy(out + o, suffix, sl + 1);
    return (int)(o + sl);
}

/* The monitors of an export ("a:1,b:2:/path" -> "a:1,b:2"). */
static size_t export_mons_len(const char *export_path)
{
    const char *path = strstr(export_path, ":/");
    return path ? (size_t)(path - export_path) : 0;
}

int exo_mnt_cephfs_unit_text(const exo_cephfs_unit_t *u, char *out, size_t cap)
{
    const char *rw = u->read_only ? "ro" : "rw";
    size_t ml = export_mons_len(u->export_path);
    int n;
    if (!u->fuse) {
        n = snprintf(out, cap,
                     EXO_MNT_MARKER "\n"
                                    "[Unit]\n"
                                    "Description=CephFS share at %s (exosphere-guest-agent)\n"
                                    "After=network-online.target\n"
                                    "Wants=network-online.target\n"
                                    "\n"
                                    "[Mount]\n"
                                    "What=%s\n"
                                    "Where=%s\n"
                                    "Type=ceph\n"
                                    "Options=noatime,_netdev,nofail,name=%s,secretfile=%s,"
                                    "mount_timeout=%u,%s\n"
                                    "\n"
                                    "[Install]\n"
                                    "WantedBy=remote-fs.target\n",
                     u->mountpoint, u->export_path, u->mountpoint, u->user, u->secret_file,
                     u->timeout_s, rw);
    } else {
        n = snprintf(out, cap,
                     EXO_MNT_MARKER "\n"
                                    "[Unit]\n"
                                    "Description=CephFS share at %s (exosphere-guest-agent)\n"
                                    "After=network-online.target\n"
                                    "Wants=network-online.target\n"
                                    "\n"
                                    "[Mount]\n"
                                    "What=none\n"
                                    "Where=%s\n"
                                    "Type=fuse.ceph\n"
                                    "Options=ceph.id=%s,ceph.client_mountpoint=%s,ceph.conf=%s,"
                                    "ceph.keyring=%s,ceph.no_mon_config,_netdev,nofail,%s\n"
                                    "\n"
                                    "[Install]\n"
                                    "WantedBy=remote-fs.target\n",
                     u->mountpoint, u->mountpoint, u->user, u->export_path + ml + 1, u->conf_file,
                     u->secret_file, rw);
    }
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

int exo_mnt_secret_text(int fuse, const char *user, const char *key, char *out, size_t cap)
{
    int n = fuse ? snprintf(out, cap, "[client.%s]\n\tkey = %s\n", user, key)
                 : snprintf(out, cap, "%s\n", key);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

int exo_mnt_fuse_conf_text(const char *export_path, unsigned timeout_s, char *out, size_t cap)
{
    size_t ml = export_mons_len(export_path);
    int n = snprintf(out, cap,
                     "# Written by exosphere-guest-agent for one CephFS share\n"
                     "[global]\n\tmon_host = %.*s\n"
                     "[client]\n\tclient_mount_timeout = %u\n",
                     (int)ml, export_path, timeout_s);
    return n < 0 || (size_t)n >= cap || ml == 0 ? -1 : n;
}

unsigned exo_mnt_client_timeout_s(uint32_t mount_timeout_ms)
{
    unsigned s = (unsigned)(mount_timeout_ms / 2000);
    return s < 5 ? 5 : s;
}

int exo_mnt_write_file(const char *path, const char *text, size_t len, mode_t mode)
{
    exo_statefile_t w;
    int rc = exo_statefile_begin(&w, path, mode, NULL, 0);
    if (rc < 0) return rc;
    /* Root's, whoever owns the directory: a secret file must be readable by root alone. */
    if (fchown(w.fd, 0, 0) < 0) rc = -errno;
    exo_statefile_write(&w, text, len);
    return exo_statefile_commit(&w, path, rc, NULL, 0);
}

/* ---- blkid ---------------------------------------------------------------------------- */

int exo_mnt_blkid_parse(const char *text, size_t len,
                        void (*cb)(void *data, const char *key, size_t klen, const char *val,
                                   size_t vlen),
                        void *data)
{
    int pairs = 0;
    size_t i = 0;
    while (i < len) {
        const char *line = text + i;
        const char *nl = memchr(line, '\n', len - i);
        size_t ll = nl ? (size_t)(nl - line) : len - i;
        i += ll + 1;
        const char *eq = memchr(line, '=', ll);
        if (eq == NULL || eq == line) continue;
        size_t kl = (size_t)(eq - line), vl = ll - kl - 1;
        int ok = 1;
        for (size_t k = 0; k < kl && ok; k++)
            ok = (line[k] >= 'A' && line[k] <= 'Z') || (line[k] >= '0' && line[k] <= '9') ||
                 line[k] == '_';
        for (size_t k = 0; k < vl && ok; k++)
            ok = (unsigned char)eq[1 + k] >= 0x20 && eq[1 + k] != 0x7f;
        if (!ok) continue;
        cb(data, line, kl, eq + 1, vl);
        pairs++;
    }
    return pairs;
}
