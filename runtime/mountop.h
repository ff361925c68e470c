/* The monitor's mount operations (privsep.h EXO_OP_MOUNT_*): the checks of what the worker
 * asks for, and the work itself, done in a child process forked per request so that the
 * monitor's poll() loop never blocks on a tool (blkid, mkfs.ext4, systemd-mount, systemctl,
 * umount).
 *
 * The worker chooses names and policy; the monitor trusts none of it. exo_mountop_check
 * refuses a request that no honest worker sends (bad syntax: a relative path, "..", a path not
 * directly under a configured prefix, a bad character, a wrong field count); the monitor then
 * kills the worker. Everything that depends on the state of the machine (a missing device, the
 * root disk, a busy mount) is found by the child and answered as an error code.
 *
 * Answers (one privsep message, op | EXO_OP_ANSWER, the request's seq): field 0 is "ok" or an
 * error code (a stable lowercase word), then:
 *   ok PROBE:   exports ("KEY=VALUE\n" lines of blkid -p -o export), devname, kname, "0"|"1"
 *   ok MKFS:    nothing
 *   ok MOUNT:   unit
 *   ok UNMOUNT: stopped units ("\n"-separated), removed paths ("\n"-separated)
 *   ok CEPHFS:  unit, client ("kernel"|"fuse"), secret file
 *   error:      message[, holders (busy only; exo_mnt_holders_encode), truncated count]
 * The Lua side is runtime/l_mounts.c. */
#ifndef EXO_MOUNTOP_H
#define EXO_MOUNTOP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "privsep.h"

#define EXO_MNT_NAME_MAX 255    /* bytes of a mountpoint's last component */
#define EXO_MNT_DEVICE_MAX 255  /* bytes of a device path */
#define EXO_MNT_EXPORT_MAX 2048 /* bytes of a CephFS export path (its path part: 1024) */
#define EXO_MNT_KEY_MAX 256     /* bytes of a cephx key (base64) */
#define EXO_MNT_HOLDERS_MAX 64  /* holders listed in a busy answer; more are counted */
#define EXO_MNT_HOLDER_PATH_MAX 256
#define EXO_MNT_MESSAGE_MAX 1024 /* bytes of an error message in an answer */
#define EXO_MNT_MARKER "# Written by exosphere-guest-agent; removed by mounts.unmount"

/* ---- syntax (both sides: the worker checks before sending, the monitor again) ----------- */

/* A device path: "/dev/..." , normalised (no "//", "." or ".." components, no trailing "/"),
 * at most EXO_MNT_DEVICE_MAX bytes of [A-Za-z0-9_.:@+=,-/]. */
int exo_mnt_device_ok(const char *p, size_t len);
/* A mountpoint: prefix + "/" + one component of 1..255 bytes of [A-Za-z0-9_.@+-], not starting
 * with "." or "-". Returns 1 if p is one under volume_prefix (only when share_only is 0) or
 * share_prefix. */
int exo_mnt_mountpoint_ok(const exo_config_t *cfg, const char *p, size_t len, int share_only);
/* An ext4 label: 1..16 bytes of [A-Za-z0-9_.-]. */
int exo_mnt_label_ok(const char *p, size_t len);
/* A canonical UUID: 36 characters, 8-4-4-4-12 hex digits. */
int exo_mnt_uuid_ok(const char *p, size_t len);
/* A CephFS export: host:port[,host:port]*:/path; hosts are names, IPv4 or [IPv6]; the path is
 * absolute, of [A-Za-z0-9_./-], at most 1024 bytes. */
int exo_mnt_export_ok(const char *p, size_t len);
/* A cephx user: 1..64 bytes of [A-Za-z0-9_.-]. */
int exo_mnt_access_user_ok(const char *p, size_t len);
/* A cephx key: 1..256 bytes of base64. */
int exo_mnt_key_ok(const char *p, size_t len);
/* A flag field: "0" or "1". */
int exo_mnt_flag_ok(const exo_priv_field_t *f);

/* Checks a request's fields for op; NULL when the worker may have sent it, else why not. */
const char *exo_mountop_check(const exo_config_t *cfg, const exo_priv_msg_t *m);
/* The deadline in ms for op (the monitor kills the child after it, plus a grace period). */
uint32_t exo_mountop_timeout_ms(const exo_config_t *cfg, uint32_t op);

/* ---- texts --------------------------------------------------------------------------- */

/* systemd's path escaping (systemd-escape --path --suffix=SUFFIX): the path without its
 * leading and trailing "/", "/" as "-", every byte but [A-Za-z0-9:_.] (and a leading ".") as
 * \xNN; "/" alone is "-". Returns the length, or -1 if it does not fit in cap. */
int exo_mnt_escape_path(const char *path, const char *suffix, char *out, size_t cap);

typedef struct exo_cephfs_unit_s {
    const char *mountpoint, *export_path, *user, *secret_file, *conf_file;
    int fuse, read_only;
    unsigned timeout_s; /* how long the client waits for monitors and MDS before it fails */
} exo_cephfs_unit_t;

/* The .mount unit of a CephFS share (kernel client or ceph-fuse), starting with
 * EXO_MNT_MARKER. No key ever appears in it. Returns the length or -1 if it does not fit. */
int exo_mnt_cephfs_unit_text(const exo_cephfs_unit_t *u, char *out, size_t cap);
/* The secret file's text: the bare key (kernel client, secretfile=) or a keyring (fuse). */
int exo_mnt_secret_text(int fuse, const char *user, const char *key, char *out, size_t cap);
/* The ceph.conf of a ceph-fuse mount: its monitors, which mount.fuse.ceph cannot take in an
 * option (it splits every option at commas and runs ceph-fuse through a shell), and
 * client_mount_timeout (timeout_s), so that monitors that cannot be reached fail the mount
 * with "(110) Connection timed out" instead of the default 300 s wait. */
int exo_mnt_fuse_conf_text(const char *export_path, unsigned timeout_s, char *out, size_t cap);
/* The client timeout for a mount that may take mount_timeout_ms in all: half of it, so that
 * the client's own error (which says why) comes before the agent's deadline; at least 5 s. */
unsigned exo_mnt_client_timeout_s(uint32_t mount_timeout_ms);
/* The error code of a failed CephFS mount, from the clients' messages: "permission_denied",
 * "unreachable", "not_found" or "failed". */
const char *exo_mnt_cephfs_classify(const char *text);
/* Writes text to path atomically (a temporary file, fsync, rename) with mode, owned by root.
 * Returns 0 or a negative errno. */
int exo_mnt_write_file(const char *path, const char *text, size_t len, mode_t mode);

/* ---- blkid ---------------------------------------------------------------------------- */

/* Calls cb for each KEY=VALUE line of `blkid -o export` output (KEY of [A-Z0-9_], VALUE
 * without control bytes); other lines are skipped. Returns the number of pairs. */
int exo_mnt_blkid_parse(const char *text, size_t len,
                        void (*cb)(void *data, const char *key, size_t klen, const char *val,
                                   size_t vlen),
                        void *data);

/* ---- holders of a busy mount ---------------------------------------------------------- */

typedef struct exo_mnt_holder_s {
    pid_t pid;
    uid_t uid;
    int fd;      /* for use "fd", else -1 */
    char use[8]; /* "fd", "cwd", "root", "exe" or "mmap" */
    char comm[17];
    char user[33];
    char path[EXO_MNT_HOLDER_PATH_MAX + 1];
} exo_mnt_holder_t;

/* Scans /proc (proc_root, for tests) for processes with files on the file system of device
 * number dev mounted at mountpoint: open fds, cwd, root, exe (by st_dev) and mapped files (by
 * path under mountpoint). Fills at most max holders; returns how many were found in all. */
size_t exo_mnt_scan_holders(const char *proc_root, const char *mountpoint, dev_t dev,
                            exo_mnt_holder_t *out, size_t max);
/* Encodes holders as lines "pid\tuid\tuse\tfd\tuser\tcomm\tpath\n" (control bytes, "\\" and
 * bytes over 0x7e in user, comm and path as \xNN) into at most cap bytes; the holders that do
 * not fit are left out. Returns the bytes written and sets *written to the holders encoded. */
size_t exo_mnt_holders_encode(const exo_mnt_holder_t *h, size_t n, char *out, size_t cap,
                              size_t *written);

/* ---- the worker's binding (l_mounts.c) ----------------------------------------------- */

struct lua_State;
/* Registers the module "exo.mounts" in package.preload. */
void exo_mounts_preload(struct lua_State *L);

/* ---- the child ------------------------------------------------------------------------ */

/* Runs request m (already checked by exo_mountop_check) in a forked child and writes its one
 * answer message to fd; never returns. */
void exo_mountop_child(const exo_config_t *cfg, const exo_priv_msg_t *m, int fd)
    __attribute__((noreturn));

#endif
