/* The package operations (pkgop.c, pkgop_run.c): every rule of the name and request checks
 * with cases on both sides and at each limit, the fixed command line of each action on each
 * backend, the slicing of a poll, and the waiter itself running small programs (the log, the
 * status fd, the environment, stdin, exit lines, the deadline killing the whole group). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "pkgop.h"
#include "privsep.h"
#include "test.h"

#define S(x) x, strlen(x)

static exo_config_t cfg_;
static char dir_[64];

static void test_names(void)
{
    CHECK(exo_pkg_name_ok(S("nginx")));
    CHECK(exo_pkg_name_ok(S("libstdc++6")));
    CHECK(exo_pkg_name_ok(S("python3.11")));
    CHECK(exo_pkg_name_ok(S("NetworkManager")));
    CHECK(exo_pkg_name_ok(S("g_x-1")));
    CHECK(exo_pkg_name_ok(S("0ad")));
    CHECK(exo_pkg_name_ok(S("a")));
    CHECK(!exo_pkg_name_ok(S("")));
    CHECK(!exo_pkg_name_ok(S("-y")));
    CHECK(!exo_pkg_name_ok(S("--reinstall")));
    CHECK(!exo_pkg_name_ok(S(".hidden")));
    /* apt-get install bash- removes bash; g++ (a real package) ends with '+' and stays. */
    CHECK(!exo_pkg_name_ok(S("bash-")));
    CHECK(!exo_pkg_name_ok(S("-")));
    CHECK(exo_pkg_name_ok(S("g++")));
    CHECK(!exo_pkg_name_ok(S("a b")));
    CHECK(!exo_pkg_name_ok(S("a/b")));
    CHECK(!exo_pkg_name_ok(S("../etc")));
    CHECK(!exo_pkg_name_ok(S("nginx=1.2")));
    CHECK(!exo_pkg_name_ok(S("nginx:amd64")));
    CHECK(!exo_pkg_name_ok(S("a*")));
    CHECK(!exo_pkg_name_ok(S("a;b")));
    CHECK(!exo_pkg_name_ok(S("a$b")));
    CHECK(!exo_pkg_name_ok(S("a\nb")));
    CHECK(!exo_pkg_name_ok(S("caf\xc3\xa9")));
    CHECK(!exo_pkg_name_ok("a\0b", 3));
    char name[EXO_PKG_NAME_MAX + 2];
    memset(name, 'x', sizeof(name));
    CHECK(exo_pkg_name_ok(name, EXO_PKG_NAME_MAX));
    CHECK(!exo_pkg_name_ok(name, EXO_PKG_NAME_MAX + 1));
}

static void test_actions_and_ids(void)
{
    CHECK(exo_pkg_action_parse(S("refresh")) == EXO_PKG_REFRESH);
    CHECK(exo_pkg_action_parse(S("list")) == EXO_PKG_LIST);
    CHECK(exo_pkg_action_parse(S("install")) == EXO_PKG_INSTALL);
    CHECK(exo_pkg_action_parse(S("upgrade_all")) == EXO_PKG_UPGRADE_ALL);
    CHECK(exo_pkg_action_parse(S("self_upgrade")) == EXO_PKG_SELF_UPGRADE);
    CHECK(exo_pkg_action_parse(S("upgrade")) == -1);
    CHECK(exo_pkg_action_parse(S("Install")) == -1);
    CHECK(exo_pkg_action_parse(S("install ")) == -1);
    CHECK(exo_pkg_action_parse(S("")) == -1);
    CHECK(exo_pkg_action_changes(EXO_PKG_INSTALL) && exo_pkg_action_changes(EXO_PKG_UPGRADE_ALL));
    CHECK(exo_pkg_action_changes(EXO_PKG_SELF_UPGRADE));
    CHECK(!exo_pkg_action_changes(EXO_PKG_REFRESH) && !exo_pkg_action_changes(EXO_PKG_LIST));
    CHECK_STR(exo_pkg_action_name(EXO_PKG_UPGRADE_ALL), "upgrade_all");
    CHECK_STR(exo_pkg_backend_name(EXO_PKG_APT), "apt");
    CHECK_STR(exo_pkg_backend_name(EXO_PKG_DNF), "dnf");
    CHECK_STR(exo_pkg_backend_name(EXO_PKG_NONE), "none");
    /* With "auto" the backend is this host's, and stays the same; a named one is taken as
     * named, "none" disables package operations. */
    exo_config_t bc = {0};
    bc.packages_backend = EXO_PKG_CHOICE_AUTO;
    exo_pkg_backend_t b = exo_pkg_backend(&bc);
    CHECK(b == (access(EXO_PK_SERVICE_FILE, R_OK) == 0  ? EXO_PKG_PACKAGEKIT
                : access("/usr/bin/apt-get", X_OK) == 0 ? EXO_PKG_APT
                : access("/usr/bin/dnf", X_OK) == 0     ? EXO_PKG_DNF
                                                        : EXO_PKG_NONE));
    CHECK(exo_pkg_backend(&bc) == b);
    bc.packages_backend = EXO_PKG_CHOICE_DNF;
    CHECK(exo_pkg_backend(&bc) == EXO_PKG_DNF);
    bc.packages_backend = EXO_PKG_CHOICE_APT;
    CHECK(exo_pkg_backend(&bc) == EXO_PKG_APT);
    bc.packages_backend = EXO_PKG_CHOICE_PACKAGEKIT;
    CHECK(exo_pkg_backend(&bc) == EXO_PKG_PACKAGEKIT);
    CHECK_STR(exo_pkg_backend_name(EXO_PKG_PACKAGEKIT), "packagekit");
    bc.packages_backend = EXO_PKG_CHOICE_NONE;
    CHECK(exo_pkg_backend(&bc) == EXO_PKG_NONE);

    CHECK(exo_pkg_id_ok(S("0123456789abcdef0123456789abcdef")));
    CHECK(!exo_pkg_id_ok(S("0123456789ABCDEF0123456789abcdef")));
    CHECK(!exo_pkg_id_ok(S("0123456789abcdef0123456789abcde")));
    CHECK(!exo_pkg_id_ok(S("0123456789abcdef0123456789abcdef0")));
    CHECK(!exo_pkg_id_ok(S("0123456789abcdef0123456789abcdeg")));
    CHECK(!exo_pkg_id_ok(S("../../../../etc/passwd/xxxxxxxxxx")));
}

static void test_split(void)
{
    exo_priv_field_t out[EXO_PKG_NAMES_MAX];
    CHECK(exo_pkg_names_split(S(""), out, EXO_PKG_NAMES_MAX) == 0);
    REQUIRE(exo_pkg_names_split(S("a"), out, EXO_PKG_NAMES_MAX) == 1);
    CHECK(out[0].len == 1 && out[0].p[0] == 'a');
    REQUIRE(exo_pkg_names_split(S("ab\ncd"), out, EXO_PKG_NAMES_MAX) == 2);
    CHECK(out[1].len == 2 && memcmp(out[1].p, "cd", 2) == 0);
    /* Empty names are kept, for the name check to refuse. */
    REQUIRE(exo_pkg_names_split(S("a\n"), out, EXO_PKG_NAMES_MAX) == 2);
    CHECK(out[1].len == 0);
    REQUIRE(exo_pkg_names_split(S("\n"), out, EXO_PKG_NAMES_MAX) == 2);
    CHECK(exo_pkg_names_split(S("a\nb\nc"), out, 2) == -1);
    CHECK(exo_pkg_names_split(S("a\nb"), out, 2) == 2);
}

/* A start request: the action and the names joined with "\n". */
static const char *start(const char *action, const char *names)
{
    exo_priv_field_t f[2] = {{S(action)}, {S(names)}};
    return exo_pkgop_check_start(&cfg_, f, 2);
}

/* n names "p0", "p1", ... joined with "\n", each padded with 'x' to len bytes. */
static char *many_names(int n, size_t len)
{
    char *out = calloc((size_t)n, len + 1);
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        int w = snprintf(out + used, 16, "p%d", i);
        memset(out + used + w, 'x', len - (size_t)w);
        used += len;
        out[used++] = i + 1 < n ? '\n' : '\0';
    }
    return out;
}

static void test_check_start(void)
{
    const char *allow[] = {"nginx", "libstdc++6", "openssl"};
    REQUIRE(exo_config_set_list(&cfg_.packages_allow, allow, 3) == 0);
    cfg_.packages_allow_all = 1;
    CHECK(start("refresh", "") == NULL);
    CHECK(start("list", "") == NULL);
    CHECK(start("list", "nginx\nnot-allowed-but-only-listed") == NULL);
    CHECK(start("install", "nginx") == NULL);
    CHECK(start("install", "nginx\nlibstdc++6\nopenssl") == NULL);
    CHECK(start("upgrade_all", "") == NULL);
    cfg_.packages_self_upgrade = 1;
    CHECK(start("self_upgrade", "") == NULL);

    CHECK_STR(start("remove", ""), "a package operation with an unknown action");
    CHECK_STR(start("", ""), "a package operation with an unknown action");
    CHECK_STR(start("refresh", "nginx"), "a refresh with package names");
    CHECK_STR(start("upgrade_all", "nginx"), "an upgrade_all with package names");
    CHECK_STR(start("install", ""), "an install without package names");
    CHECK_STR(start("install", "nginx\ncurl"), "an install of a package not on [packages] allow");
    CHECK_STR(start("install", "NGINX"), "an install of a package not on [packages] allow");
    CHECK_STR(start("install", "nginx\n"), "a package operation with a bad package name");
    CHECK_STR(start("list", "-o\nAPT::Get::Fix-Broken=true"),
              "a package operation with a bad package name");
    CHECK_STR(start("list", "nginx curl"), "a package operation with a bad package name");
    CHECK_STR(start("list", "a\tb"), "a package operation with a bad package name");
    /* The agent's own names come from the monitor, never from the worker. */
    CHECK_STR(start("self_upgrade", "exosphere-guest-agent"), "a self_upgrade with package names");
    cfg_.packages_self_upgrade = 0;
    CHECK_STR(start("self_upgrade", ""), "a self_upgrade while [packages] self_upgrade is off");
    cfg_.packages_allow_all = 0;
    CHECK_STR(start("upgrade_all", ""), "an upgrade_all while [packages] allow_all is off");
    cfg_.packages_allow_all = 1;

    /* Field counts: exactly the action and the names. */
    exo_priv_field_t f[3] = {{S("list")}, {S("")}, {S("")}};
    CHECK_STR(exo_pkgop_check_start(&cfg_, f, 1), "a package operation without exactly 2 fields");
    CHECK_STR(exo_pkgop_check_start(&cfg_, f, 3), "a package operation without exactly 2 fields");
    CHECK_STR(exo_pkgop_check_start(&cfg_, f, 0), "a package operation without exactly 2 fields");

    /* The limits: 64 names, 4096 bytes of them. */
    char *names = many_names(64, 63); /* 64 * 64 - 1 = 4095 bytes */
    CHECK(strlen(names) == 4095);
    CHECK(start("list", names) == NULL);
    free(names);
    names = many_names(65, 8);
    CHECK_STR(start("list", names), "a package operation with more than 64 names");
    free(names);
    names = many_names(33, 128); /* 33 * 129 - 1 = 4256 bytes */
    CHECK_STR(start("list", names), "a package operation with more than 4096 bytes of names");
    free(names);
    names = many_names(1, 128);
    CHECK(start("list", names) == NULL);
    free(names);
    names = many_names(1, 129);
    CHECK_STR(start("list", names), "a package operation with a bad package name");
    free(names);
}

static const char *poll_req(const char *id, const char *lo, const char *so, uint64_t *l,
                            uint64_t *s)
{
    exo_priv_field_t f[3] = {{S(id)}, {S(lo)}, {S(so)}};
    return exo_pkgop_check_poll(f, 3, l, s);
}

static void test_check_poll(void)
{
    const char *id = "0123456789abcdef0123456789abcdef";
    uint64_t l = 7, s = 7;
    CHECK(poll_req(id, "0", "0", &l, &s) == NULL && l == 0 && s == 0);
    CHECK(poll_req(id, "3072", "999999999999999", &l, &s) == NULL);
    CHECK(l == 3072 && s == 999999999999999ULL);
    CHECK_STR(poll_req(id, "1000000000000000", "0", &l, &s), "a package poll with a bad offset");
    CHECK_STR(poll_req(id, "", "0", &l, &s), "a package poll with a bad offset");
    CHECK_STR(poll_req(id, "-1", "0", &l, &s), "a package poll with a bad offset");
    CHECK_STR(poll_req(id, "0", "1e3", &l, &s), "a package poll with a bad offset");
    CHECK_STR(poll_req(id, "0", " 1", &l, &s), "a package poll with a bad offset");
    CHECK_STR(poll_req("../x", "0", "0", &l, &s), "a package poll with a bad id");
    CHECK_STR(poll_req("0123456789ABCDEF0123456789abcdef", "0", "0", &l, &s),
              "a package poll with a bad id");
    exo_priv_field_t f[4] = {{S(id)}, {S("0")}, {S("0")}, {S("0")}};
    CHECK_STR(exo_pkgop_check_poll(f, 4, &l, &s), "a package poll without exactly 3 fields");
    CHECK_STR(exo_pkgop_check_poll(f, 2, &l, &s), "a package poll without exactly 3 fields");
}

/* The command line as one string, the arguments separated by spaces. */
static const char *cmd_text(exo_pkg_backend_t b, exo_pkg_action_t a, const char *names)
{
    static exo_pkg_cmd_t c;
    static char out[4096];
    exo_priv_field_t f[EXO_PKG_NAMES_MAX];
    int n = exo_pkg_names_split(names, strlen(names), f, EXO_PKG_NAMES_MAX);
    if (n < 0 || exo_pkg_cmd_build(&c, b, a, 300, f, (size_t)n) < 0) return "(error)";
    size_t used = (size_t)snprintf(out, sizeof(out), "%s%s:", c.path, c.status_fd ? " [fd 3]" : "");
    for (size_t i = 0; i < c.argc; i++)
        used += (size_t)snprintf(out + used, sizeof(out) - used, " %s", c.argv[i]);
    return c.argv[c.argc] == NULL ? out : "(argv not NULL-terminated)";
}

#define APT_LOCKS                                                                                  \
    "-q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o "                         \
    "Dpkg::Options::=--force-confold"

static void test_commands(void)
{
    CHECK_STR(cmd_text(EXO_PKG_APT, EXO_PKG_REFRESH, ""),
              "/usr/bin/apt-get: apt-get " APT_LOCKS " update");
    CHECK_STR(cmd_text(EXO_PKG_APT, EXO_PKG_LIST, ""),
              "/usr/bin/apt-get: apt-get -s -q -o Debug::NoLocking=true dist-upgrade");
    CHECK_STR(cmd_text(EXO_PKG_APT, EXO_PKG_LIST, "nginx\nopenssl"),
              "/usr/bin/apt-get: apt-get -s -q -o Debug::NoLocking=true install --only-upgrade "
              "nginx openssl");
    CHECK_STR(cmd_text(EXO_PKG_APT, EXO_PKG_INSTALL, "nginx\nlibstdc++6"),
              "/usr/bin/apt-get [fd 3]: apt-get -y " APT_LOCKS
              " -o APT::Status-Fd=3 install --only-upgrade nginx libstdc++6");
    CHECK_STR(cmd_text(EXO_PKG_APT, EXO_PKG_UPGRADE_ALL, ""),
              "/usr/bin/apt-get [fd 3]: apt-get -y " APT_LOCKS " -o APT::Status-Fd=3 dist-upgrade");
    CHECK_STR(cmd_text(EXO_PKG_DNF, EXO_PKG_REFRESH, ""), "/usr/bin/dnf: dnf -q makecache");
    CHECK_STR(cmd_text(EXO_PKG_DNF, EXO_PKG_LIST, ""), "/usr/bin/dnf: dnf -q check-update");
    CHECK_STR(cmd_text(EXO_PKG_DNF, EXO_PKG_LIST, "nginx"),
              "/usr/bin/dnf: dnf -q check-update nginx");
    CHECK_STR(cmd_text(EXO_PKG_DNF, EXO_PKG_INSTALL, "nginx\nopenssl"),
              "/usr/bin/dnf: dnf -y upgrade nginx openssl");
    CHECK_STR(cmd_text(EXO_PKG_DNF, EXO_PKG_UPGRADE_ALL, ""), "/usr/bin/dnf: dnf -y upgrade");
    /* self_upgrade: the agent's own packages, whatever names come with it. */
    CHECK_STR(cmd_text(EXO_PKG_APT, EXO_PKG_SELF_UPGRADE, ""),
              "/usr/bin/apt-get [fd 3]: apt-get -y " APT_LOCKS
              " -o APT::Status-Fd=3 install --only-upgrade exosphere-guest-agent "
              "exosphere-guest-agent-methods");
    CHECK_STR(cmd_text(EXO_PKG_DNF, EXO_PKG_SELF_UPGRADE, "nginx"),
              "/usr/bin/dnf: dnf -y upgrade exosphere-guest-agent exosphere-guest-agent-methods");
    CHECK_STR(cmd_text(EXO_PKG_NONE, EXO_PKG_LIST, ""), "(error)");
    /* The builder checks the names again: nothing but a name reaches argv. */
    CHECK_STR(cmd_text(EXO_PKG_APT, EXO_PKG_LIST, "-o"), "(error)");
    /* 64 names of 128 bytes fit the structure (the request's byte limit is tighter). */
    static exo_pkg_cmd_t c;
    exo_priv_field_t f[EXO_PKG_NAMES_MAX];
    char *names = many_names(EXO_PKG_NAMES_MAX, EXO_PKG_NAME_MAX);
    REQUIRE(exo_pkg_names_split(names, strlen(names), f, EXO_PKG_NAMES_MAX) == 64);
    REQUIRE(exo_pkg_cmd_build(&c, EXO_PKG_APT, EXO_PKG_INSTALL, 10, f, 64) == 0);
    CHECK(c.argc == 12 + 64 && c.argv[c.argc] == NULL);
    CHECK(strlen(c.argv[c.argc - 1]) == EXO_PKG_NAME_MAX);
    CHECK_STR(c.argv[4], "DPkg::Lock::Timeout=10");
    free(names);
}

/* PackageKit: no program, the names and the action kept for the client (exo_pk_run). */
static void test_packagekit_cmd(void)
{
    static exo_pkg_cmd_t c;
    exo_priv_field_t f[3] = {{S("nginx")}, {S("libstdc++6")}, {S("-o")}};
    REQUIRE(exo_pkg_cmd_build(&c, EXO_PKG_PACKAGEKIT, EXO_PKG_INSTALL, 42, f, 2) == 0);
    CHECK(c.packagekit == 1 && c.status_fd == 1 && c.path == NULL && c.argc == 0);
    CHECK(c.action == EXO_PKG_INSTALL && c.lock_timeout_s == 42 && c.n_names == 2);
    CHECK_STR(c.names[0], "nginx");
    CHECK_STR(c.names[1], "libstdc++6");
    REQUIRE(exo_pkg_cmd_build(&c, EXO_PKG_PACKAGEKIT, EXO_PKG_SELF_UPGRADE, 10, f, 1) == 0);
    CHECK(c.n_names == EXO_PKG_SELF_COUNT);
    CHECK_STR(c.names[0], "exosphere-guest-agent");
    CHECK_STR(c.names[1], "exosphere-guest-agent-methods");
    REQUIRE(exo_pkg_cmd_build(&c, EXO_PKG_PACKAGEKIT, EXO_PKG_UPGRADE_ALL, 10, f, 2) == 0);
    CHECK(c.n_names == 0);
    REQUIRE(exo_pkg_cmd_build(&c, EXO_PKG_PACKAGEKIT, EXO_PKG_LIST, 10, f, 0) == 0);
    CHECK(c.n_names == 0 && c.action == EXO_PKG_LIST);
    /* The names are checked here too. */
    CHECK(exo_pkg_cmd_build(&c, EXO_PKG_PACKAGEKIT, EXO_PKG_INSTALL, 10, f, 3) == -EINVAL);
}

/* The client's line helpers: package ids split, enum names, lines cleaned and bounded. */
static void test_packagekit_lines(void)
{
    char out[EXO_PK_LINE_MAX];
    REQUIRE(exo_pk_id_fields("exo-testpkg;1.1;all;ExoTest:bookworm", out, sizeof(out)) == 0);
    CHECK_STR(out, "exo-testpkg 1.1 all ExoTest:bookworm");
    REQUIRE(exo_pk_id_fields("bash;5.2.15-2+b7;amd64;installed:debian-bookworm-main", out,
                             sizeof(out)) == 0);
    CHECK_STR(out, "bash 5.2.15-2+b7 amd64 installed:debian-bookworm-main");
    /* Empty parts are "-"; spaces and control characters in a part '_'. */
    REQUIRE(exo_pk_id_fields("a;1;;", out, sizeof(out)) == 0);
    CHECK_STR(out, "a 1 - -");
    REQUIRE(exo_pk_id_fields("a;1 2;x86\n;my repo", out, sizeof(out)) == 0);
    CHECK_STR(out, "a 1_2 x86_ my_repo");
    REQUIRE(exo_pk_id_fields("a;1;\t;r", out, sizeof(out)) == 0);
    CHECK_STR(out, "a 1 _ r");
    CHECK(exo_pk_id_fields("a;1;all", out, sizeof(out)) == -1);
    CHECK(exo_pk_id_fields("a;1;all;r;x", out, sizeof(out)) == -1);
    CHECK(exo_pk_id_fields(";1;all;r", out, sizeof(out)) == -1);
    CHECK(exo_pk_id_fields("", out, sizeof(out)) == -1);
    CHECK(exo_pk_id_fields("abc;1;all;r", out, 8) == -1);
    CHECK(exo_pk_id_fields("abc;1;all;r", out, 12) == 0);
    CHECK(exo_pk_id_fields("abc;1;all;r", out, 11) == -1);

    CHECK_STR(exo_pk_status_name(30), "waiting-for-lock");
    CHECK_STR(exo_pk_status_name(8), "download");
    CHECK_STR(exo_pk_status_name(36), "run-hook");
    CHECK_STR(exo_pk_status_name(37), "unknown");
    CHECK_STR(exo_pk_info_name(1), "installed");
    CHECK_STR(exo_pk_info_name(8), "security");
    CHECK_STR(exo_pk_info_name(1000), "unknown");
    CHECK_STR(exo_pk_error_name(2), "no-network");
    CHECK_STR(exo_pk_error_name(8), "package-not-found");
    CHECK_STR(exo_pk_error_name(26), "cannot-get-lock");
    CHECK_STR(exo_pk_error_name(46), "no-space-on-device");
    CHECK_STR(exo_pk_error_name(66), "unfinished-transaction");
    CHECK_STR(exo_pk_error_name(68), "repo-already-set");
    CHECK_STR(exo_pk_error_name(69), "unknown");
    CHECK_STR(exo_pk_exit_name(1), "success");
    CHECK_STR(exo_pk_exit_name(3), "cancelled");
    CHECK_STR(exo_pk_exit_name(12), "unknown");
    CHECK_STR(exo_pk_restart_name(4), "system");

    CHECK(exo_pk_line(out, "error %s %s", "no-network", "a\nb\tc\r") == 24);
    CHECK_STR(out, "error no-network a b c \n");
    /* A long line is cut to EXO_PK_LINE_MAX bytes with its newline, never inside a UTF-8
     * sequence. */
    char *big = malloc(3000);
    REQUIRE(big != NULL);
    memset(big, 'x', 2999);
    big[2999] = '\0';
    CHECK(exo_pk_line(out, "%s", big) == EXO_PK_LINE_MAX - 1);
    CHECK(out[EXO_PK_LINE_MAX - 2] == '\n' && out[EXO_PK_LINE_MAX - 1] == '\0');
    for (size_t i = 0; i < 3000 - 2; i += 2)
        memcpy(big + i, "\xc3\xa9", 2); /* é */
    big[2998] = '\0';
    size_t len = exo_pk_line(out, "x%s", big);
    CHECK(len == EXO_PK_LINE_MAX - 2);
    CHECK(out[len - 1] == '\n' && (unsigned char)out[len - 2] == 0xa9);
    free(big);
}

/* Without a bus: the client says why on both files and fails (exit status 1). */
static void test_packagekit_no_bus(void)
{
    static exo_pkg_cmd_t c;
    char path[300], buf[1024];
    REQUIRE(exo_pkg_cmd_build(&c, EXO_PKG_PACKAGEKIT, EXO_PKG_REFRESH, 10, NULL, 0) == 0);
    snprintf(path, sizeof(path), "%s/pk-status", dir_);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    char *old =
        getenv("DBUS_SYSTEM_BUS_ADDRESS") ? strdup(getenv("DBUS_SYSTEM_BUS_ADDRESS")) : NULL;
    setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/exo-test-bus", 1);
    CHECK(exo_pk_run(&c, -1, fd) == 1);
    if (old) {
        setenv("DBUS_SYSTEM_BUS_ADDRESS", old, 1);
        free(old);
    } else {
        unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
    }
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    REQUIRE(n > 0);
    buf[n] = '\0';
    CHECK(strncmp(buf, "error dbus connecting to the system bus: ", 41) == 0);
    CHECK(strchr(buf, '\n') == buf + n - 1);
    close(fd);
    unlink(path);
}

static void test_poll_cut(void)
{
    char buf[EXO_PKG_POLL_MAX];
    /* Whole lines while running; everything once ended and at the end of the file. */
    CHECK(exo_pkg_poll_cut(S("one\ntwo\nthr"), 0) == 8);
    CHECK(exo_pkg_poll_cut(S("one\ntwo\nthr"), 1) == 11);
    CHECK(exo_pkg_poll_cut(S("one\n"), 0) == 4);
    CHECK(exo_pkg_poll_cut(S("partial"), 0) == 0);
    CHECK(exo_pkg_poll_cut(S(""), 0) == 0);
    CHECK(exo_pkg_poll_cut(S(""), 1) == 0);
    /* A line longer than a slice: the whole slice, not cutting a UTF-8 sequence. */
    memset(buf, 'a', sizeof(buf));
    CHECK(exo_pkg_poll_cut(buf, sizeof(buf), 0) == sizeof(buf));
    buf[sizeof(buf) - 1] = '\n';
    CHECK(exo_pkg_poll_cut(buf, sizeof(buf), 0) == sizeof(buf));
    buf[sizeof(buf) - 1] = 'a';
    buf[100] = '\n';
    CHECK(exo_pkg_poll_cut(buf, sizeof(buf), 0) == 101);
    buf[100] = 'a';
    memcpy(buf + sizeof(buf) - 1, "\xc3", 1); /* the first byte of a 2-byte sequence */
    CHECK(exo_pkg_poll_cut(buf, sizeof(buf), 0) == sizeof(buf) - 1);
    memcpy(buf + sizeof(buf) - 2, "\xc3\xa9", 2); /* a whole one */
    CHECK(exo_pkg_poll_cut(buf, sizeof(buf), 0) == sizeof(buf));
    memcpy(buf + sizeof(buf) - 3, "\xe2\x80\x94", 3);
    CHECK(exo_pkg_poll_cut(buf, sizeof(buf), 0) == sizeof(buf));
    memcpy(buf + sizeof(buf) - 3, "a\xe2\x80", 3);
    CHECK(exo_pkg_poll_cut(buf, sizeof(buf), 0) == sizeof(buf) - 2);
    memcpy(buf + sizeof(buf) - 4, "a\xf0\x9f\x98", 4);
    CHECK(exo_pkg_poll_cut(buf, sizeof(buf), 0) == sizeof(buf) - 3);
    memcpy(buf + sizeof(buf) - 4, "\xf0\x9f\x98\x80", 4);
    CHECK(exo_pkg_poll_cut(buf, sizeof(buf), 0) == sizeof(buf));
    /* Not text (stray continuation bytes): handed out as they are. */
    memset(buf, 0x80, sizeof(buf));
    CHECK(exo_pkg_poll_cut(buf, sizeof(buf), 0) == sizeof(buf));
    /* At the end of an ended operation, a cut sequence is handed out too: nothing follows. */
    memcpy(buf + sizeof(buf) - 1, "\xc3", 1);
    CHECK(exo_pkg_poll_cut(buf, sizeof(buf), 1) == sizeof(buf));
}

/* ---- the waiter ---------------------------------------------------------------------- */

static char *slurp(const char *name)
{
    static char text[8192];
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir_, name);
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, text, sizeof(text) - 1) : -1;
    if (fd >= 0) close(fd);
    text[n > 0 ? n : 0] = '\0';
    return n < 0 ? NULL : text;
}

static void clean_dir(void)
{
    const char *files[] = {"log", "status", "exit"};
    char path[128];
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir_, files[i]);
        unlink(path);
    }
}

/* Runs the waiter in a child with argv (argv[0] the path) and waits for it; returns the exit
 * line without its newline. */
static const char *run_waiter(const char *const *argv, int with_status, uint64_t timeout_ms)
{
    static exo_pkg_cmd_t c;
    static char line[64];
    memset(&c, 0, sizeof(c));
    c.path = argv[0];
    for (c.argc = 0; argv[c.argc]; c.argc++)
        c.argv[c.argc] = argv[c.argc];
    clean_dir();
    char lp[128], sp[128];
    snprintf(lp, sizeof(lp), "%s/log", dir_);
    snprintf(sp, sizeof(sp), "%s/status", dir_);
    int lfd = open(lp, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
    int sfd = open(sp, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
    if (lfd < 0 || sfd < 0) return "(cannot create the files)";
    exo_pkg_run_t r = {.cmd = &c,
                       .dir = dir_,
                       .log_fd = lfd,
                       .status_fd = with_status ? sfd : -1,
                       .timeout_ms = timeout_ms};
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        if (!with_status) close(sfd);
        exo_pkgop_waiter(&r);
    }
    close(lfd);
    close(sfd);
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return "(the waiter failed)";
    const char *e = slurp("exit");
    if (e == NULL) return "(no exit file)";
    snprintf(line, sizeof(line), "%s", e);
    size_t n = strlen(line);
    if (n == 0 || line[n - 1] != '\n') return "(no newline)";
    line[n - 1] = '\0';
    return line;
}

static void test_waiter(void)
{
    /* The environment is exactly the fixed one. */
    const char *env[] = {"/usr/bin/env", NULL};
    CHECK_STR(run_waiter(env, 0, 10000), "exit 0");
    CHECK_STR(slurp("log"), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
                            "LANG=C.UTF-8\nDEBIAN_FRONTEND=noninteractive\n");
    struct stat st;
    char path[128];
    snprintf(path, sizeof(path), "%s/exit", dir_);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

    /* stdout and stderr to the log, fd 3 to status, stdin at end of file, the exit code. */
    const char *sh[] = {"/bin/sh", "-c",
                        "echo out; echo err >&2; echo pmstatus:x:50:y >&3; read x; "
                        "echo read=$?; exit 3",
                        NULL};
    CHECK_STR(run_waiter(sh, 1, 10000), "exit 3");
    CHECK_STR(slurp("log"), "out\nerr\nread=1\n");
    CHECK_STR(slurp("status"), "pmstatus:x:50:y\n");

    /* Without a status fd, fd 3 is closed in the tool. */
    const char *no3[] = {"/bin/sh", "-c", "echo x >&3 || echo closed", NULL};
    CHECK_STR(run_waiter(no3, 0, 10000), "exit 0");
    CHECK(strstr(slurp("log"), "closed") != NULL);
    CHECK_STR(slurp("status"), "");

    const char *sig[] = {"/bin/sh", "-c", "kill -TERM $$", NULL};
    CHECK_STR(run_waiter(sig, 0, 10000), "signal 15");

    const char *missing[] = {"/nonexistent/apt-get", NULL};
    CHECK_STR(run_waiter(missing, 0, 10000), "exit 127");
    CHECK(strstr(slurp("log"), "cannot run /nonexistent/apt-get: No such file or directory") !=
          NULL);

    /* The deadline kills the tool's whole process group: the background sleep too, which
     * this process (a subreaper) then reaps. */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    const char *slow[] = {"/bin/sh", "-c", "sleep 30 & echo $!; wait", NULL};
    CHECK_STR(run_waiter(slow, 0, 300), "timeout");
    pid_t bg = (pid_t)atoi(slurp("log"));
    int status = 0;
    REQUIRE(bg > 0);
    CHECK(waitpid(bg, &status, 0) == bg && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

static void test_write_exit(void)
{
    clean_dir();
    CHECK(exo_pkg_write_exit(dir_, "lost") == 0);
    CHECK_STR(slurp("exit"), "lost\n");
    CHECK(exo_pkg_write_exit(dir_, "exit 0") == 0);
    CHECK_STR(slurp("exit"), "exit 0\n");
    CHECK(exo_pkg_write_exit("/nonexistent/dir", "exit 0") < 0);
}

/* ---- the operations' files ---------------------------------------------------------- */

static char pkg_[96];

static void put(const char *id, const char *name, const char *text, time_t mtime)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", pkg_, id);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/%s/%s", pkg_, id, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    struct timespec t[2] = {{mtime, 0}, {mtime, 0}};
    utimensat(AT_FDCWD, path, t, 0);
}

static int there(const char *id)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", pkg_, id);
    return access(path, F_OK) == 0;
}

static void test_files(void)
{
    const char *err = NULL;
    snprintf(pkg_, sizeof(pkg_), "%s/packages", dir_);
    REQUIRE(exo_pkg_dir_ready(pkg_, &err) == 0);
    struct stat st;
    REQUIRE(stat(pkg_, &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
    chmod(pkg_, 0755);
    CHECK(exo_pkg_dir_ready(pkg_, &err) == 0 && stat(pkg_, &st) == 0 &&
          (st.st_mode & 07777) == 0700);

    char id[EXO_PKG_ID_LEN + 1], id2[EXO_PKG_ID_LEN + 1];
    REQUIRE(exo_pkg_new_id(id) == 0 && exo_pkg_new_id(id2) == 0);
    CHECK(exo_pkg_id_ok(id, strlen(id)) && strcmp(id, id2) != 0);

    int lfd, sfd;
    REQUIRE(exo_pkg_create(pkg_, id, &lfd, &sfd, &err) == 0);
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", pkg_, id);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0700);
    snprintf(path, sizeof(path), "%s/%s/log", pkg_, id);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600 && st.st_size == 0);
    CHECK((fcntl(lfd, F_GETFD) & FD_CLOEXEC) && (fcntl(lfd, F_GETFL) & O_APPEND));
    /* The same id again: refused, and the first one's files are untouched. */
    int l2, s2;
    CHECK(exo_pkg_create(pkg_, id, &l2, &s2, &err) == -1 && l2 == -1 && s2 == -1);
    CHECK(there(id));

    /* Running: whole lines only, and no exit line. */
    exo_pkg_poll_t p;
    CHECK(write(lfd, "one\ntwo\npart", 12) == 12);
    CHECK(write(sfd, "pmstatus:a:10:x\n", 16) == 16);
    REQUIRE(exo_pkg_poll_read(pkg_, id, 0, 0, &p) == 0);
    CHECK(!p.done && p.exit[0] == '\0');
    CHECK(p.log_len == 8 && memcmp(p.log, "one\ntwo\n", 8) == 0 && p.log_size == 12);
    CHECK(p.status_len == 16 && p.status_size == 16);
    REQUIRE(exo_pkg_poll_read(pkg_, id, 8, 16, &p) == 0);
    CHECK(p.log_len == 0 && p.status_len == 0);
    /* Ended: the rest, however it ends, and the exit line. */
    char opdir[256];
    snprintf(opdir, sizeof(opdir), "%s/%s", pkg_, id);
    REQUIRE(exo_pkg_write_exit(opdir, "exit 100") == 0);
    REQUIRE(exo_pkg_poll_read(pkg_, id, 8, 0, &p) == 0);
    CHECK(p.done);
    CHECK_STR(p.exit, "exit 100");
    CHECK(p.log_len == 4 && memcmp(p.log, "part", 4) == 0);
    char line[EXO_PKG_EXIT_MAX];
    CHECK(exo_pkg_read_exit(pkg_, id, line, sizeof(line)) == 1);
    CHECK_STR(line, "exit 100");
    CHECK(exo_pkg_read_exit(pkg_, "0123456789abcdef0123456789abcdef", line, sizeof(line)) == 0);
    /* A big log comes in slices of at most EXO_PKG_POLL_MAX, cut after a newline. */
    char big[EXO_PKG_POLL_MAX + 100];
    memset(big, 'b', sizeof(big));
    big[1000] = big[EXO_PKG_POLL_MAX + 50] = '\n';
    CHECK(write(lfd, big, sizeof(big)) == (ssize_t)sizeof(big));
    REQUIRE(exo_pkg_poll_read(pkg_, id, 12, 0, &p) == 0);
    CHECK(p.log_len == 1001);
    REQUIRE(exo_pkg_poll_read(pkg_, id, 12 + 1001, 0, &p) == 0);
    CHECK(p.log_len == sizeof(big) - 1001); /* the rest, up to the end of the ended log */
    CHECK(exo_pkg_poll_read(pkg_, "0123456789abcdef0123456789abcdef", 0, 0, &p) == -ENOENT);
    CHECK(exo_pkg_poll_read(pkg_, "../../etc", 0, 0, &p) == -ENOENT);
    close(lfd);
    close(sfd);
    CHECK(exo_pkg_remove(pkg_, id) == 0 && !there(id));
}

/* The run lock: held while the waiter or the tool keeps the log open; a poll without an exit
 * line and without the lock is lost; a new monitor finds running operations by it. */
static void test_run_lock(void)
{
    const char *err = NULL;
    char id[EXO_PKG_ID_LEN + 1], found[EXO_PKG_ID_LEN + 1];
    int lfd, sfd;
    REQUIRE(exo_pkg_new_id(id) == 0);
    REQUIRE(exo_pkg_create(pkg_, id, &lfd, &sfd, &err) == 0);
    exo_pkg_poll_t p;
    CHECK(!exo_pkg_running(pkg_, id));
    REQUIRE(exo_pkg_poll_read(pkg_, id, 0, 0, &p) == 0);
    CHECK(!p.done && p.lost);
    REQUIRE(exo_pkg_lock_run(lfd) == 0);
    CHECK(exo_pkg_running(pkg_, id));
    REQUIRE(exo_pkg_poll_read(pkg_, id, 0, 0, &p) == 0);
    CHECK(!p.done && !p.lost);
    CHECK(exo_pkg_find_running(pkg_, NULL, 0, found) == 1);
    CHECK_STR(found, id);
    const char *skip[] = {id};
    CHECK(exo_pkg_find_running(pkg_, skip, 1, found) == 0);
    CHECK(!exo_pkg_running(pkg_, "../../etc/passwd"));

    /* A child that shares the log's open file description keeps the lock after this process
     * lets go of its copy, until it ends. */
    int go[2];
    REQUIRE(pipe(go) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        close(go[1]);
        _exit(read(go[0], &c, 1) < 0);
    }
    close(go[0]);
    close(lfd);
    CHECK(exo_pkg_running(pkg_, id));
    close(go[1]);
    int st;
    waitpid(pid, &st, 0);
    CHECK(!exo_pkg_running(pkg_, id));
    REQUIRE(exo_pkg_poll_read(pkg_, id, 0, 0, &p) == 0);
    CHECK(!p.done && p.lost);
    CHECK(exo_pkg_find_running(pkg_, NULL, 0, found) == 0);
    /* Its exit line ends it for good. */
    char opdir[256];
    snprintf(opdir, sizeof(opdir), "%s/%s", pkg_, id);
    REQUIRE(exo_pkg_write_exit(opdir, "exit 0") == 0);
    REQUIRE(exo_pkg_poll_read(pkg_, id, 0, 0, &p) == 0);
    CHECK(p.done && !p.lost);

    /* An orphan past its age stays while its lock is held, and goes once it is free. */
    char id2[EXO_PKG_ID_LEN + 1];
    REQUIRE(exo_pkg_new_id(id2) == 0);
    REQUIRE(exo_pkg_create(pkg_, id2, &lfd, &sfd, &err) == 0);
    REQUIRE(exo_pkg_lock_run(lfd) == 0);
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", pkg_, id2);
    struct timespec old[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
    REQUIRE(utimensat(AT_FDCWD, path, old, 0) == 0);
    exo_pkg_prune(pkg_, time(NULL), 86400, 3600, NULL, 0);
    CHECK(there(id2));
    close(lfd);
    close(sfd);
    exo_pkg_prune(pkg_, time(NULL), 86400, 3600, NULL, 0);
    CHECK(!there(id2));
    CHECK(exo_pkg_remove(pkg_, id) == 0);
}

/* The transient scope, on a host whose init is systemd and as root (else skipped, said so):
 * a child moves itself and checks its control group. */
static void test_scope(void)
{
    if (access("/run/systemd/system", F_OK) != 0 || geteuid() != 0) {
        printf("# skip test_scope: needs systemd as init and root\n");
        return;
    }
    char id[EXO_PKG_ID_LEN + 1];
    REQUIRE(exo_pkg_new_id(id) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        char err[256], want[96], cg[4096];
        if (exo_pkg_enter_scope(id, "test", err, sizeof(err)) < 0) {
            fprintf(stderr, "enter_scope: %s\n", err);
            _exit(1);
        }
        snprintf(want, sizeof(want), "/system.slice/exosphere-guest-agent-pkg-%s.scope", id);
        int fd = open("/proc/self/cgroup", O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, cg, sizeof(cg) - 1) : -1;
        cg[n > 0 ? n : 0] = '\0';
        _exit(strstr(cg, want) ? 0 : 2);
    }
    int st = -1;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(exo_pkg_scope_wanted(EXO_PKG_INSTALL) && exo_pkg_scope_wanted(EXO_PKG_SELF_UPGRADE));
    CHECK(!exo_pkg_scope_wanted(EXO_PKG_LIST) && !exo_pkg_scope_wanted(EXO_PKG_REFRESH));
}

static void test_prune(void)
{
    time_t now = time(NULL);
    const char *ended_old = "a0000000000000000000000000000000";
    const char *ended_new = "a1111111111111111111111111111111";
    const char *orphan_old = "b0000000000000000000000000000000";
    const char *orphan_new = "b1111111111111111111111111111111";
    const char *running = "c0000000000000000000000000000000";
    put(ended_old, "exit", "exit 0\n", now - 7200);
    put(ended_new, "exit", "exit 0\n", now - 60);
    put(orphan_old, "log", "x\n", now - 20000);
    put(orphan_new, "log", "x\n", now - 60);
    put(running, "log", "x\n", now - 20000);
    put(running, "exit", "exit 0\n", now - 20000);
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", pkg_, orphan_old);
    struct timespec t[2] = {{now - 20000, 0}, {now - 20000, 0}};
    utimensat(AT_FDCWD, path, t, 0);
    /* Not an operation's name: never touched. */
    snprintf(path, sizeof(path), "%s/not-an-id", pkg_);
    mkdir(path, 0700);

    const char *run[] = {running};
    CHECK(exo_pkg_prune(pkg_, now, 3600, 10000, run, 1) == 2);
    CHECK(!there(ended_old) && !there(orphan_old));
    CHECK(there(ended_new) && there(orphan_new) && there(running) && there("not-an-id"));
    rmdir(path);

    /* Too many ended ones: the oldest go until EXO_PKG_ENDED_MAX - 1 remain, whatever keep. */
    char id[EXO_PKG_ID_LEN + 1];
    for (int i = 0; i < EXO_PKG_ENDED_MAX + 10; i++) {
        snprintf(id, sizeof(id), "d%031d", i);
        put(id, "exit", "exit 0\n", now - 1000 + i);
    }
    /* ended_new (now - 60) is among the newest; the d...0 to d...11 are the oldest. */
    size_t removed = exo_pkg_prune(pkg_, now, 3600, 10000, run, 1);
    CHECK(removed == 12);
    snprintf(id, sizeof(id), "d%031d", 11);
    CHECK(!there(id));
    snprintf(id, sizeof(id), "d%031d", 12);
    CHECK(there(id));
    CHECK(there(ended_new));
    CHECK(exo_pkg_prune(pkg_, now, 3600, 10000, run, 1) == 0);
    /* With nothing running and a keep of 0 s, everything ended goes. */
    CHECK(exo_pkg_prune(pkg_, now + 1, 0, 10000, NULL, 0) == EXO_PKG_ENDED_MAX);
    CHECK(!there(running) && there(orphan_new));
    exo_pkg_remove(pkg_, orphan_new);
    CHECK(rmdir(pkg_) == 0);
}

int main(void)
{
    if (exo_config_defaults(&cfg_) < 0) return 1;
    snprintf(dir_, sizeof(dir_), "/tmp/exo-test-pkgop-XXXXXX");
    if (mkdtemp(dir_) == NULL) return 1;
    RUN(test_names);
    RUN(test_actions_and_ids);
    RUN(test_split);
    RUN(test_check_start);
    RUN(test_check_poll);
    RUN(test_commands);
    RUN(test_packagekit_cmd);
    RUN(test_packagekit_lines);
    RUN(test_packagekit_no_bus);
    RUN(test_poll_cut);
    RUN(test_waiter);
    RUN(test_write_exit);
    RUN(test_files);
    RUN(test_run_lock);
    RUN(test_scope);
    RUN(test_prune);
    clean_dir();
    rmdir(dir_);
    exo_config_free(&cfg_);
    TEST_END();
}
