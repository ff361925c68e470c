/* The mount operations' checks and texts (mountop.c, mountop_holders.c): every rule of every
 * validator with cases on both sides, systemd's path escaping against systemd-escape, the
 * CephFS unit and secret files, blkid's export format, the scan for holders of a busy mount and
 * the busy answer's size bound. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "mountop.h"
#include "privsep.h"
#include "test.h"

static exo_config_t cfg_;

#define S(x) x, strlen(x)

static void test_device(void)
{
    CHECK(exo_mnt_device_ok(S("/dev/vdb")));
    CHECK(exo_mnt_device_ok(S("/dev/disk/by-id/virtio-0123456789abcdef0123")));
    CHECK(exo_mnt_device_ok(S("/dev/disk/by-path/pci-0000:00:05.0")));
    CHECK(exo_mnt_device_ok(S("/dev/mapper/vg0-lv_data")));
    CHECK(!exo_mnt_device_ok(S("/dev/")));
    CHECK(!exo_mnt_device_ok(S("/dev")));
    CHECK(!exo_mnt_device_ok(S("vdb")));
    CHECK(!exo_mnt_device_ok(S("/tmp/vdb")));
    CHECK(!exo_mnt_device_ok(S("/dev/../etc/shadow")));
    CHECK(!exo_mnt_device_ok(S("/dev/./vdb")));
    CHECK(!exo_mnt_device_ok(S("/dev//vdb")));
    CHECK(!exo_mnt_device_ok(S("/dev/vdb/")));
    CHECK(!exo_mnt_device_ok(S("/dev/v db")));
    CHECK(!exo_mnt_device_ok(S("/dev/v\\x2fdb")));
    CHECK(!exo_mnt_device_ok("/dev/vd\0b", 9));
    char big[300] = "/dev/";
    memset(big + 5, 'a', 250);
    CHECK(exo_mnt_device_ok(big, 255));
    big[255] = 'a';
    CHECK(!exo_mnt_device_ok(big, 256));
}

static void test_mountpoint(void)
{
    CHECK(exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/data"), 0));
    CHECK(exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/my-vol.part1"), 0));
    CHECK(exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/a_b@c+d"), 0));
    CHECK(exo_mnt_mountpoint_ok(&cfg_, S("/media/share/s1"), 0));
    CHECK(exo_mnt_mountpoint_ok(&cfg_, S("/media/share/s1"), 1));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/data"), 1)); /* shares only */
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/a/b"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/.."), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/../../etc"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/."), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume//data"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/data/"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("media/volume/data"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volumex/data"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/etc"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/.hidden"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/-opt"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/a b"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/a\\b"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, S("/media/volume/a:b"), 0));
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, "/media/volume/a\0b", 16, 0));
    char big[400] = "/media/volume/";
    memset(big + 14, 'n', 255);
    CHECK(exo_mnt_mountpoint_ok(&cfg_, big, 14 + 255, 0));
    big[14 + 255] = 'n';
    CHECK(!exo_mnt_mountpoint_ok(&cfg_, big, 14 + 256, 0));
}

static void test_small_fields(void)
{
    CHECK(exo_mnt_label_ok(S("data")));
    CHECK(exo_mnt_label_ok(S("A-b_c.0123456789")));
    CHECK(!exo_mnt_label_ok(S("")));
    CHECK(!exo_mnt_label_ok(S("A-b_c.01234567890"))); /* 17 */
    CHECK(!exo_mnt_label_ok(S("a b")));
    CHECK(!exo_mnt_label_ok(S("a/b")));
    CHECK(exo_mnt_uuid_ok(S("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")));
    CHECK(exo_mnt_uuid_ok(S("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0")));
    CHECK(!exo_mnt_uuid_ok(S("0f1e2d3c4b5a69788796a5b4c3d2e1f0")));
    CHECK(!exo_mnt_uuid_ok(S("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f")));
    CHECK(!exo_mnt_uuid_ok(S("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg")));
    CHECK(!exo_mnt_uuid_ok(S("0f1e2d3c-4b5a-6978-87960a5b4c3d2e1f0")));
    CHECK(exo_mnt_access_user_ok(S("share-rw")));
    CHECK(exo_mnt_access_user_ok(S("a.b_c")));
    CHECK(!exo_mnt_access_user_ok(S("")));
    CHECK(!exo_mnt_access_user_ok(S("a b")));
    CHECK(!exo_mnt_access_user_ok(S("a,b")));
    char u[70];
    memset(u, 'u', sizeof(u));
    CHECK(exo_mnt_access_user_ok(u, 64));
    CHECK(!exo_mnt_access_user_ok(u, 65));
    CHECK(exo_mnt_key_ok(S("AQBx3mZlAAAAABAAcG9ydGFsc2VjcmV0a2V5MTIzNDU2Nzg5MA==")));
    CHECK(exo_mnt_key_ok(S("abc+/d=")));
    CHECK(!exo_mnt_key_ok(S("")));
    CHECK(!exo_mnt_key_ok(S("=")));
    CHECK(!exo_mnt_key_ok(S("abc===")));
    CHECK(!exo_mnt_key_ok(S("ab=c")));
    CHECK(!exo_mnt_key_ok(S("ab,c")));
    CHECK(!exo_mnt_key_ok(S("ab\nc")));
    char k[300];
    memset(k, 'k', sizeof(k));
    CHECK(exo_mnt_key_ok(k, 256));
    CHECK(!exo_mnt_key_ok(k, 257));
    exo_priv_field_t one = {"1", 1}, zero = {"0", 1}, two = {"2", 1}, empty = {"", 0};
    CHECK(exo_mnt_flag_ok(&one) && exo_mnt_flag_ok(&zero));
    CHECK(!exo_mnt_flag_ok(&two) && !exo_mnt_flag_ok(&empty));
}

static void test_export(void)
{
    CHECK(exo_mnt_export_ok(S("mon1:6789:/volumes/_nogroup/a/b")));
    CHECK(exo_mnt_export_ok(S("10.0.0.1:6789,10.0.0.2:6789,10.0.0.3:6789:/volumes/_nogroup/x")));
    CHECK(exo_mnt_export_ok(S("[2001:db8::1]:6789,[2001:db8::2]:3300:/v")));
    CHECK(exo_mnt_export_ok(S("ceph-mon.example.org:3300:/")));
    CHECK(!exo_mnt_export_ok(S("mon1:/volumes")));           /* no port */
    CHECK(!exo_mnt_export_ok(S("mon1:6789")));               /* no path */
    CHECK(!exo_mnt_export_ok(S(":6789:/v")));                /* no host */
    CHECK(!exo_mnt_export_ok(S("mon1:6789,:/v")));           /* an empty monitor */
    CHECK(!exo_mnt_export_ok(S("mon1:67890a:/v")));          /* a bad port */
    CHECK(!exo_mnt_export_ok(S("mon1:123456:/v")));          /* six digits */
    CHECK(!exo_mnt_export_ok(S("mo n1:6789:/v")));           /* a space */
    CHECK(!exo_mnt_export_ok(S("mon1:6789:/v/../x")));       /* .. */
    CHECK(!exo_mnt_export_ok(S("mon1:6789:/v,name=admin"))); /* an option in the path */
    CHECK(!exo_mnt_export_ok(S("[2001:db8::g]:6789:/v")));
    CHECK(!exo_mnt_export_ok(S("[2001:db8::1]6789:/v")));
    CHECK(!exo_mnt_export_ok(S("-mon:6789:/v")));
    char big[1200] = "m:1:/";
    memset(big + 5, 'p', 1023);
    CHECK(exo_mnt_export_ok(big, 4 + 1024));
    big[4 + 1024] = 'p';
    CHECK(!exo_mnt_export_ok(big, 4 + 1025));
}

static exo_priv_msg_t msg(uint32_t op, size_t n, const char *const *fields)
{
    exo_priv_msg_t m;
    memset(&m, 0, sizeof(m));
    m.op = op;
    m.n = n;
    for (size_t i = 0; i < n; i++)
        m.f[i] = (exo_priv_field_t){fields[i], strlen(fields[i])};
    return m;
}

static void test_request_check(void)
{
    const char *probe[] = {"/dev/vdb"};
    const char *mkfs[] = {"/dev/vdb", "data", ""};
    const char *mkfs_uuid[] = {"/dev/vdb", "data", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"};
    const char *mnt[] = {"/dev/vdb", "/media/volume/data", "0"};
    const char *umnt[] = {"/media/share/s", "1"};
    const char *ceph[] = {"/media/share/s", "m:6789:/v", "s-rw", "QUJD", "1"};
    exo_priv_msg_t m;
    m = msg(EXO_OP_MOUNT_PROBE, 1, probe);
    CHECK(exo_mountop_check(&cfg_, &m) == NULL);
    m = msg(EXO_OP_MOUNT_MKFS, 3, mkfs);
    CHECK(exo_mountop_check(&cfg_, &m) == NULL);
    m = msg(EXO_OP_MOUNT_MKFS, 3, mkfs_uuid);
    CHECK(exo_mountop_check(&cfg_, &m) == NULL);
    m = msg(EXO_OP_MOUNT_MOUNT, 3, mnt);
    CHECK(exo_mountop_check(&cfg_, &m) == NULL);
    m = msg(EXO_OP_MOUNT_UNMOUNT, 2, umnt);
    CHECK(exo_mountop_check(&cfg_, &m) == NULL);
    m = msg(EXO_OP_MOUNT_CEPHFS, 5, ceph);
    CHECK(exo_mountop_check(&cfg_, &m) == NULL);
    /* Field counts. */
    m = msg(EXO_OP_MOUNT_PROBE, 0, probe);
    CHECK_STR(exo_mountop_check(&cfg_, &m), "a mount probe without exactly 1 field");
    m = msg(EXO_OP_MOUNT_MKFS, 2, mkfs);
    CHECK(exo_mountop_check(&cfg_, &m) != NULL);
    m = msg(EXO_OP_MOUNT_MOUNT, 2, mnt);
    CHECK(exo_mountop_check(&cfg_, &m) != NULL);
    m = msg(EXO_OP_MOUNT_UNMOUNT, 1, umnt);
    CHECK(exo_mountop_check(&cfg_, &m) != NULL);
    m = msg(EXO_OP_MOUNT_CEPHFS, 4, ceph);
    CHECK(exo_mountop_check(&cfg_, &m) != NULL);
    /* A field each. */
    const char *bad_dev[] = {"/etc/passwd"};
    m = msg(EXO_OP_MOUNT_PROBE, 1, bad_dev);
    CHECK_STR(exo_mountop_check(&cfg_, &m), "a mount probe with a bad device path");
    const char *bad_label[] = {"/dev/vdb", "", ""};
    m = msg(EXO_OP_MOUNT_MKFS, 3, bad_label);
    CHECK_STR(exo_mountop_check(&cfg_, &m), "a mkfs request with a bad label");
    const char *bad_uuid[] = {"/dev/vdb", "x", "nope"};
    m = msg(EXO_OP_MOUNT_MKFS, 3, bad_uuid);
    CHECK_STR(exo_mountop_check(&cfg_, &m), "a mkfs request with a bad UUID");
    const char *outside[] = {"/dev/vdb", "/etc", "0"};
    m = msg(EXO_OP_MOUNT_MOUNT, 3, outside);
    CHECK(strstr(exo_mountop_check(&cfg_, &m), "not directly under") != NULL);
    const char *dotdot[] = {"/media/volume/../../etc", "0"};
    m = msg(EXO_OP_MOUNT_UNMOUNT, 2, dotdot);
    CHECK(strstr(exo_mountop_check(&cfg_, &m), "not directly under") != NULL);
    const char *flag[] = {"/dev/vdb", "/media/volume/d", "yes"};
    m = msg(EXO_OP_MOUNT_MOUNT, 3, flag);
    CHECK_STR(exo_mountop_check(&cfg_, &m), "a mount request with a bad read-only flag");
    const char *vol_share[] = {"/media/volume/s", "m:6789:/v", "s-rw", "QUJD", "1"};
    m = msg(EXO_OP_MOUNT_CEPHFS, 5, vol_share);
    CHECK(strstr(exo_mountop_check(&cfg_, &m), "share_prefix") != NULL);
    const char *bad_key[] = {"/media/share/s", "m:6789:/v", "s-rw", "a,secret=b", "1"};
    m = msg(EXO_OP_MOUNT_CEPHFS, 5, bad_key);
    CHECK_STR(exo_mountop_check(&cfg_, &m), "a CephFS mount request with a bad key");
    m = msg(99, 0, probe);
    CHECK(exo_mountop_check(&cfg_, &m) != NULL);
}

/* What systemd-escape --path --suffix=mount prints for path, or NULL without it. */
static char *systemd_escape(const char *path)
{
    int p[2];
    if (access("/usr/bin/systemd-escape", X_OK) < 0 || pipe(p) < 0) return NULL;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        execl("/usr/bin/systemd-escape", "systemd-escape", "--path", "--suffix=mount", "--", path,
              (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    static char out[1024];
    size_t n = 0;
    ssize_t r;
    while ((r = read(p[0], out + n, sizeof(out) - 1 - n)) > 0)
        n += (size_t)r;
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    out[n] = '\0';
    out[strcspn(out, "\n")] = '\0';
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? out : NULL;
}

static void test_escape(void)
{
    char out[1024];
    CHECK(exo_mnt_escape_path("/media/volume/data", ".mount", out, sizeof(out)) > 0);
    CHECK_STR(out, "media-volume-data.mount");
    exo_mnt_escape_path("/media/volume/my-vol", ".mount", out, sizeof(out));
    CHECK_STR(out, "media-volume-my\\x2dvol.mount");
    exo_mnt_escape_path("/", ".mount", out, sizeof(out));
    CHECK_STR(out, "-.mount");
    exo_mnt_escape_path("/media/share/.x", ".mount", out, sizeof(out));
    CHECK_STR(out, "media-share-.x.mount");
    CHECK(exo_mnt_escape_path("/media/volume/data", ".mount", out, 10) == -1);
    static const char *const tricky[] = {
        "/media/volume/my-vol",     "/media/volume/a b",    "/media/volume/a@b+c",
        "/media/volume/x.part1",    "/media/volume/ümlaut", "/media/volume/a\\b",
        "/media/volume/a:b_c",      "/.hidden/x",           "/media/volume/-lead",
        "/media/volume/a.-b",       "/media/share/s-rw",    "/media/volume/%n",
        "/media/volume/1234567890",
    };
    int compared = 0;
    for (size_t i = 0; i < sizeof(tricky) / sizeof(tricky[0]); i++) {
        char *want = systemd_escape(tricky[i]);
        if (want == NULL) continue;
        compared++;
        REQUIRE(exo_mnt_escape_path(tricky[i], ".mount", out, sizeof(out)) > 0);
        CHECK_STR(out, want);
    }
    if (compared == 0) fprintf(stderr, "test_escape: no systemd-escape; compared nothing\n");
}

static void test_unit_text(void)
{
    char out[4096];
    exo_cephfs_unit_t k = {.mountpoint = "/media/share/s1",
                           .export_path = "m1:6789,m2:6789:/volumes/_nogroup/a/b",
                           .user = "s1-rw",
                           .secret_file = "/var/lib/x/media-share-s1.mount.secret",
                           .conf_file = "/var/lib/x/media-share-s1.mount.conf",
                           .timeout_s = 30};
    REQUIRE(exo_mnt_cephfs_unit_text(&k, out, sizeof(out)) > 0);
    CHECK_STR(out, "# Written by exosphere-guest-agent; removed by mounts.unmount\n"
                   "[Unit]\n"
                   "Description=CephFS share at /media/share/s1 (exosphere-guest-agent)\n"
                   "After=network-online.target\n"
                   "Wants=network-online.target\n"
                   "\n"
                   "[Mount]\n"
                   "What=m1:6789,m2:6789:/volumes/_nogroup/a/b\n"
                   "Where=/media/share/s1\n"
                   "Type=ceph\n"
                   "Options=noatime,_netdev,nofail,name=s1-rw,secretfile=/var/lib/x/"
                   "media-share-s1.mount.secret,mount_timeout=30,rw\n"
                   "\n"
                   "[Install]\n"
                   "WantedBy=remote-fs.target\n");
    exo_cephfs_unit_t f = k;
    f.fuse = 1;
    f.read_only = 1;
    f.secret_file = "/var/lib/x/media-share-s1.mount.keyring";
    REQUIRE(exo_mnt_cephfs_unit_text(&f, out, sizeof(out)) > 0);
    CHECK_STR(out,
              "# Written by exosphere-guest-agent; removed by mounts.unmount\n"
              "[Unit]\n"
              "Description=CephFS share at /media/share/s1 (exosphere-guest-agent)\n"
              "After=network-online.target\n"
              "Wants=network-online.target\n"
              "\n"
              "[Mount]\n"
              "What=none\n"
              "Where=/media/share/s1\n"
              "Type=fuse.ceph\n"
              "Options=ceph.id=s1-rw,ceph.client_mountpoint=/volumes/_nogroup/a/b,"
              "ceph.conf=/var/lib/x/media-share-s1.mount.conf,"
              "ceph.keyring=/var/lib/x/media-share-s1.mount.keyring,ceph.no_mon_config,_netdev,"
              "nofail,ro\n"
              "\n"
              "[Install]\n"
              "WantedBy=remote-fs.target\n");
    CHECK(exo_mnt_cephfs_unit_text(&k, out, 100) == -1);
    const char *key = "AQBx3mZlAAAAABAAcG9ydGFsc2VjcmV0a2V5MTIzNDU2Nzg5MA==";
    REQUIRE(exo_mnt_secret_text(0, "s1-rw", key, out, sizeof(out)) > 0);
    CHECK_STR(out, "AQBx3mZlAAAAABAAcG9ydGFsc2VjcmV0a2V5MTIzNDU2Nzg5MA==\n");
    REQUIRE(exo_mnt_secret_text(1, "s1-rw", key, out, sizeof(out)) > 0);
    CHECK_STR(out,
              "[client.s1-rw]\n\tkey = AQBx3mZlAAAAABAAcG9ydGFsc2VjcmV0a2V5MTIzNDU2Nzg5MA==\n");
    REQUIRE(exo_mnt_fuse_conf_text(k.export_path, 30, out, sizeof(out)) > 0);
    CHECK_STR(out, "# Written by exosphere-guest-agent for one CephFS share\n[global]\n"
                   "\tmon_host = m1:6789,m2:6789\n[client]\n\tclient_mount_timeout = 30\n");
    CHECK(exo_mnt_client_timeout_s(60000) == 30 && exo_mnt_client_timeout_s(4000) == 5);
    /* The clients' own words (docs/testing-systemd.md, "Ceph in a container"). */
    CHECK_STR(exo_mnt_cephfs_classify("ceph-fuse[973]: ceph mount failed with (13) Permission "
                                      "denied"),
              "permission_denied");
    CHECK_STR(exo_mnt_cephfs_classify("mds.0 rejected us (non-allowable root '/x')\nceph mount "
                                      "failed with (1) Operation not permitted"),
              "permission_denied");
    CHECK_STR(exo_mnt_cephfs_classify("ceph mount failed with (110) Connection timed out"),
              "unreachable");
    CHECK_STR(exo_mnt_cephfs_classify("mount error 110 = Connection timed out"), "unreachable");
    CHECK_STR(exo_mnt_cephfs_classify("ceph mount failed with (2) No such file or directory"),
              "not_found");
    CHECK_STR(exo_mnt_cephfs_classify("Job failed. See journalctl"), "failed");
    /* The files: mode 0600 whatever the umask, replaced atomically, no temporary left. */
    char dir[] = "/tmp/exo-mountop-XXXXXX", path[256], tmp[300];
    REQUIRE(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/s.secret", dir);
    mode_t old = umask(0);
    CHECK(exo_mnt_write_file(path, "one\n", 4, 0600) == (geteuid() == 0 ? 0 : -EPERM));
    umask(old);
    if (geteuid() == 0) {
        struct stat st;
        REQUIRE(stat(path, &st) == 0);
        CHECK((st.st_mode & 07777) == 0600 && st.st_uid == 0 && st.st_size == 4);
        CHECK(exo_mnt_write_file(path, "two!!\n", 6, 0600) == 0);
        CHECK(stat(path, &st) == 0 && st.st_size == 6);
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        CHECK(access(tmp, F_OK) < 0);
        unlink(path);
    }
    rmdir(dir);
    /* The unit never holds the key, whatever the fields. */
    REQUIRE(exo_mnt_cephfs_unit_text(&k, out, sizeof(out)) > 0);
    CHECK(strstr(out, key) == NULL && strstr(out, "secret=") == NULL);
}

typedef struct pairs_s {
    char text[512];
} pairs_t;

static void on_pair(void *data, const char *k, size_t kl, const char *v, size_t vl)
{
    pairs_t *p = data;
    size_t n = strlen(p->text);
    snprintf(p->text + n, sizeof(p->text) - n, "[%.*s|%.*s]", (int)kl, k, (int)vl, v);
}

static void test_blkid(void)
{
    pairs_t p = {""};
    const char *out = "DEVNAME=/dev/loop0\nUUID=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n"
                      "BLOCK_SIZE=4096\nTYPE=ext4\nLABEL=my vol=1\n";
    CHECK(exo_mnt_blkid_parse(out, strlen(out), on_pair, &p) == 5);
    CHECK_STR(p.text, "[DEVNAME|/dev/loop0][UUID|0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0]"
                      "[BLOCK_SIZE|4096][TYPE|ext4][LABEL|my vol=1]");
    pairs_t q = {""};
    const char *odd = "PTTYPE=dos\nnot a pair\nlower=x\n=empty\nPART_ENTRY_NUMBER=1\nBAD=a\x01"
                      "b\nLAST=no newline";
    CHECK(exo_mnt_blkid_parse(odd, strlen(odd), on_pair, &q) == 3);
    CHECK_STR(q.text, "[PTTYPE|dos][PART_ENTRY_NUMBER|1][LAST|no newline]");
    pairs_t e = {""};
    CHECK(exo_mnt_blkid_parse("", 0, on_pair, &e) == 0);
}

/* Many holders with long paths: the encoding stops at whole holders within its room, and a
 * busy answer built from it fits in one message. */
static void test_holders_encode(void)
{
    static exo_mnt_holder_t h[EXO_MNT_HOLDERS_MAX];
    for (size_t i = 0; i < EXO_MNT_HOLDERS_MAX; i++) {
        h[i] = (exo_mnt_holder_t){.pid = (pid_t)(1000 + i), .uid = 1000, .fd = (int)i};
        snprintf(h[i].use, sizeof(h[i].use), "fd");
        snprintf(h[i].comm, sizeof(h[i].comm), "tab\there");
        snprintf(h[i].user, sizeof(h[i].user), "exouser");
        memset(h[i].path, 'p', EXO_MNT_HOLDER_PATH_MAX);
        h[i].path[0] = '/';
        h[i].path[10] = '\n';
        h[i].path[EXO_MNT_HOLDER_PATH_MAX] = '\0';
    }
    static char enc[EXO_PRIV_MAX_MESSAGE];
    size_t written;
    size_t room = EXO_PRIV_MAX_MESSAGE - 12 - 16 - 4 - 200 - 24;
    size_t len = exo_mnt_holders_encode(h, EXO_MNT_HOLDERS_MAX, enc, room, &written);
    CHECK(len < room && written > 10 && written < EXO_MNT_HOLDERS_MAX);
    CHECK(strncmp(enc, "1000\t1000\tfd\t0\texouser\ttab\\x09here\t/ppppppppp\\x0ap", 49) == 0);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += enc[i] == '\n';
    CHECK(lines == written);
    char msg[200];
    memset(msg, 'm', sizeof(msg));
    exo_priv_field_t f[4] = {{"busy", 4}, {msg, sizeof(msg)}, {enc, len}, {"40", 2}};
    static uint8_t buf[EXO_PRIV_MAX_MESSAGE];
    CHECK(exo_priv_encode(buf, sizeof(buf), EXO_OP_MOUNT_UNMOUNT | EXO_OP_ANSWER, 1, f, 4) > 0);
    /* Few holders: all of them. */
    CHECK(exo_mnt_holders_encode(h, 3, enc, room, &written) > 0 && written == 3);
    /* No room: none, and an empty string. */
    CHECK(exo_mnt_holders_encode(h, 3, enc, 20, &written) == 0 && written == 0 && !enc[0]);
}

/* A child holds a file open, its cwd and a mapping on a tmpfs mounted for the test. */
static void test_holders_scan(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_holders_scan: skipped (needs root to mount a tmpfs)\n");
        return;
    }
    char dir[] = "/tmp/exo-holders-XXXXXX", file[256], map[256];
    REQUIRE(mkdtemp(dir) != NULL);
    if (mount("tmpfs", dir, "tmpfs", 0, "size=1m") < 0) {
        fprintf(stderr, "test_holders_scan: skipped (mount: %s)\n", strerror(errno));
        rmdir(dir);
        return;
    }
    snprintf(file, sizeof(file), "%s/open.txt", dir);
    snprintf(map, sizeof(map), "%s/mapped.bin", dir);
    int fd = open(map, O_CREAT | O_RDWR, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, 4096) == 0);
    close(fd);
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        int held = open(file, O_CREAT | O_RDWR, 0644);
        int mf = open(map, O_RDONLY);
        void *p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, mf, 0);
        close(mf);
        if (held < 0 || p == MAP_FAILED || chdir(dir) < 0) _exit(1);
        if (dup2(held, 42) < 0 || write(ready[1], "x", 1) != 1) _exit(1);
        pause();
        _exit(0);
    }
    close(ready[1]);
    char c;
    REQUIRE(read(ready[0], &c, 1) == 1);
    close(ready[0]);
    struct stat st;
    REQUIRE(stat(dir, &st) == 0);
    static exo_mnt_holder_t h[EXO_MNT_HOLDERS_MAX];
    size_t n = exo_mnt_scan_holders("/proc", dir, st.st_dev, h, EXO_MNT_HOLDERS_MAX);
    int fd42 = 0, cwd = 0, mmap_seen = 0;
    for (size_t i = 0; i < n && i < EXO_MNT_HOLDERS_MAX; i++) {
        if (h[i].pid != pid) continue;
        CHECK(h[i].uid == 0 && strcmp(h[i].user, "root") == 0 && h[i].comm[0]);
        if (strcmp(h[i].use, "fd") == 0 && h[i].fd == 42) fd42 = strcmp(h[i].path, file) == 0;
        if (strcmp(h[i].use, "cwd") == 0) cwd = strcmp(h[i].path, dir) == 0 && h[i].fd == -1;
        if (strcmp(h[i].use, "mmap") == 0) mmap_seen = strcmp(h[i].path, map) == 0;
    }
    CHECK(fd42 && cwd && mmap_seen);
    /* A cap of one: one listed, all counted. */
    CHECK(exo_mnt_scan_holders("/proc", dir, st.st_dev, h, 1) == n);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    CHECK(exo_mnt_scan_holders("/proc", dir, st.st_dev, h, EXO_MNT_HOLDERS_MAX) == 0);
    CHECK(umount(dir) == 0);
    rmdir(dir);
}

int main(void)
{
    if (exo_config_defaults(&cfg_) != 0) return 1;
    RUN(test_device);
    RUN(test_mountpoint);
    RUN(test_small_fields);
    RUN(test_export);
    RUN(test_request_check);
    RUN(test_escape);
    RUN(test_unit_text);
    RUN(test_blkid);
    RUN(test_holders_encode);
    RUN(test_holders_scan);
    exo_config_free(&cfg_);
    TEST_END();
}
