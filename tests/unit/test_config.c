/* Unit tests of the configuration parser: every value type, every error message, defaults,
 * validation, the dump, and the shipped packaging/agent.conf. Run from the repository root,
 * as ctest does, so that packaging/agent.conf is found. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

#define PACKAGED_METHODS_DIR "/usr/share/exosphere-guest-agent/methods"

static char err_[512];

/* Parses text on top of the defaults and returns the error message, or "OK". */
static const char *parse_err(const char *text)
{
    exo_config_t c;
    if (exo_config_defaults(&c) != 0) return "defaults failed";
    strcpy(err_, "OK");
    int rc = exo_config_parse(&c, text, strlen(text), "agent.conf", err_, sizeof(err_));
    if ((rc == 0) != (strcmp(err_, "OK") == 0)) strcpy(err_, "return code and message disagree");
    if (rc != 0 && rc != -EINVAL) strcpy(err_, "unexpected return code");
    exo_config_free(&c);
    return err_;
}

/* Parses text on top of the defaults into c, which the caller frees. */
static int parse_into(exo_config_t *c, const char *text)
{
    if (exo_config_defaults(c) != 0) return -ENOMEM;
    err_[0] = '\0';
    return exo_config_parse(c, text, strlen(text), "agent.conf", err_, sizeof(err_));
}

/* Validates the defaults after applying text, and returns the message or "OK". */
static const char *validate_err(const char *text)
{
    exo_config_t c;
    if (parse_into(&c, text) != 0) {
        exo_config_free(&c);
        return "parse failed";
    }
    strcpy(err_, "OK");
    exo_config_validate(&c, err_, sizeof(err_));
    exo_config_free(&c);
    return err_;
}

/* Returns the dump of c as a string that the caller frees. */
static char *dump(const exo_config_t *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL) return NULL;
    exo_config_dump(c, f);
    fclose(f);
    return text;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    int ch;
    while ((ch = fgetc(f)) != EOF)
        fputc(ch, out);
    fclose(out);
    fclose(f);
    return text;
}

static void test_defaults(void)
{
    exo_config_t c;
    REQUIRE(exo_config_defaults(&c) == 0);
    REQUIRE(c.listen.n == 2);
    CHECK_STR(c.listen.items[0], "0.0.0.0:8443");
    CHECK_STR(c.listen.items[1], "[::]:8443");
    CHECK_STR(c.unix_socket, "/run/exosphere-guest-agent/agent.sock");
    CHECK(c.unix_socket_mode == 0666);
    CHECK(c.tls == 1);
    CHECK(c.allow_plain_http == 0);
    CHECK(c.tls_certificate == NULL);
    CHECK(c.tls_private_key == NULL);
    CHECK_STR(c.state_dir, "/var/lib/exosphere-guest-agent");
    CHECK(c.max_connections == 1024);
    CHECK(c.max_header_size == 16 * 1024);
    CHECK(c.max_body_size == 1024 * 1024);
    CHECK(c.header_timeout_ms == 10000);
    CHECK(c.body_timeout_ms == 30000);
    CHECK(c.idle_timeout_ms == 75000);
    CHECK(c.max_pipelined == 16);
    CHECK(c.max_batch == 100);
    CHECK(c.call_timeout_ms == 30000);
    CHECK(c.drain_timeout_ms == 10000);
    CHECK(c.cors_origins.n == 0 && c.cors_origins.items == NULL);
    CHECK(c.cors_max_age_ms == 600000);
    REQUIRE(c.method_dirs.n == 1);
    CHECK_STR(c.method_dirs.items[0], EXO_DEFAULT_METHODS_DIR);
    CHECK_STR(c.api_versions_dir, EXO_DEFAULT_API_VERSIONS_DIR);
    CHECK(c.cpu_sample_interval_ms == 2000);
    CHECK_STR(c.user, "exosphere-guest-agent");
    CHECK_STR(c.pam_service, "exosphere-guest-agent");
    CHECK(c.allow_users.n == 0 && c.allow_users.items == NULL);
    CHECK(c.allow_groups.n == 0 && c.allow_groups.items == NULL);
    REQUIRE(c.admin_groups.n == 3);
    CHECK_STR(c.admin_groups.items[0], "sudo");
    CHECK_STR(c.admin_groups.items[1], "wheel");
    CHECK_STR(c.admin_groups.items[2], "admin");
    CHECK(c.allow_root_login == 0);
    CHECK(c.token_lifetime_ms == 12u * 3600 * 1000);
    CHECK(c.public_methods.n == 0 && c.user_methods.n == 0 && c.admin_methods.n == 0);
    CHECK(c.login_backoff_ms == 1000);
    CHECK(c.login_backoff_max_ms == 300000);
    CHECK(c.max_logins_in_flight == 4);
    CHECK(c.pam_timeout_ms == 15000);
    CHECK(c.trusted_proxies.n == 0 && c.trusted_proxies.items == NULL);
    CHECK_STR(c.metadata_url, "http://169.254.169.254/openstack/latest/meta_data.json");
    CHECK(c.metadata_timeout_ms == 2000);
    CHECK(c.metadata_cache_ms == 300000);
    CHECK(c.metadata_negative_cache_ms == 30000);
    CHECK(c.metadata_max_bytes == 1024 * 1024);
    CHECK(c.log_level == EXO_LOG_INFO);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    exo_config_free(&c);
    /* Freeing twice is harmless because free leaves the structure zeroed. */
    exo_config_free(&c);
    CHECK(c.listen.items == NULL && c.unix_socket == NULL);
}

static void test_every_key(void)
{
    exo_config_t c;
    const char *text = "[server]\n"
                       "listen = 127.0.0.1:8080\n"
                       "unix_socket = /tmp/agent.sock\n"
                       "unix_socket_mode = 0600\n"
                       "tls = no\n"
                       "allow_plain_http = yes\n"
                       "tls_certificate = /etc/ssl/agent.pem\n"
                       "tls_private_key = \"/etc/ssl/agent.key\"\n"
                       "state_dir = /srv/state\n"
                       "user = _agent\n"
                       "max_connections = 10\n"
                       "max_header_size = 8K\n"
                       "max_body_size = 2M\n"
                       "header_timeout = 500ms\n"
                       "body_timeout = 2m\n"
                       "idle_timeout = 1h\n"
                       "max_pipelined = 1\n"
                       "max_batch = 10000\n"
                       "call_timeout = 45s\n"
                       "drain_timeout = 0s\n"
                       "[methods]\n"
                       "dirs = /usr/share/m, /etc/exosphere-guest-agent/methods.d\n"
                       "cpu_sample_interval = 100ms\n"
                       "[auth]\n"
                       "pam_service = login\n"
                       "allow_users = alice, \"bob.smith\"\n"
                       "allow_groups = ops\n"
                       "admin_groups =\n"
                       "allow_root_login = yes\n"
                       "token_lifetime = 168h\n"
                       "public_methods = agent.info\n"
                       "user_methods = system_load.current, disk.usage\n"
                       "admin_methods = packages.upgrade\n"
                       "login_backoff = 0s\n"
                       "login_backoff_max = 24h\n"
                       "max_logins_in_flight = 64\n"
                       "pam_timeout = 5m\n"
                       "trusted_proxies = 10.0.0.0/8, \"fd00::1\"\n"
                       "[log]\n"
                       "level = debug\n";
    REQUIRE(parse_into(&c, text) == 0);
    REQUIRE(c.listen.n == 1);
    CHECK_STR(c.listen.items[0], "127.0.0.1:8080");
    CHECK_STR(c.unix_socket, "/tmp/agent.sock");
    CHECK(c.unix_socket_mode == 0600);
    CHECK(c.tls == 0);
    CHECK(c.allow_plain_http == 1);
    CHECK_STR(c.tls_certificate, "/etc/ssl/agent.pem");
    CHECK_STR(c.tls_private_key, "/etc/ssl/agent.key");
    CHECK_STR(c.state_dir, "/srv/state");
    CHECK(c.max_connections == 10);
    CHECK(c.max_header_size == 8192);
    CHECK(c.max_body_size == 2 * 1024 * 1024);
    CHECK(c.header_timeout_ms == 500);
    CHECK(c.body_timeout_ms == 120000);
    CHECK(c.idle_timeout_ms == 3600000);
    CHECK(c.max_pipelined == 1);
    CHECK(c.max_batch == 10000);
    CHECK(c.call_timeout_ms == 45000);
    CHECK(c.drain_timeout_ms == 0);
    REQUIRE(c.method_dirs.n == 2);
    CHECK_STR(c.method_dirs.items[0], "/usr/share/m");
    CHECK_STR(c.method_dirs.items[1], "/etc/exosphere-guest-agent/methods.d");
    CHECK(c.cpu_sample_interval_ms == 100);
    CHECK_STR(c.user, "_agent");
    CHECK_STR(c.pam_service, "login");
    REQUIRE(c.allow_users.n == 2);
    CHECK_STR(c.allow_users.items[0], "alice");
    CHECK_STR(c.allow_users.items[1], "bob.smith");
    REQUIRE(c.allow_groups.n == 1);
    CHECK_STR(c.allow_groups.items[0], "ops");
    CHECK(c.admin_groups.n == 0 && c.admin_groups.items == NULL);
    CHECK(c.allow_root_login == 1);
    CHECK(c.token_lifetime_ms == 168u * 3600 * 1000);
    REQUIRE(c.public_methods.n == 1);
    CHECK_STR(c.public_methods.items[0], "agent.info");
    REQUIRE(c.user_methods.n == 2);
    CHECK_STR(c.user_methods.items[1], "disk.usage");
    REQUIRE(c.admin_methods.n == 1);
    CHECK_STR(c.admin_methods.items[0], "packages.upgrade");
    CHECK(c.login_backoff_ms == 0);
    CHECK(c.login_backoff_max_ms == 24u * 3600 * 1000);
    CHECK(c.max_logins_in_flight == 64);
    CHECK(c.pam_timeout_ms == 300000);
    REQUIRE(c.trusted_proxies.n == 2);
    CHECK_STR(c.trusted_proxies.items[0], "10.0.0.0/8");
    CHECK_STR(c.trusted_proxies.items[1], "fd00::1");
    CHECK(c.log_level == EXO_LOG_DEBUG);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    exo_config_free(&c);
}

static void test_booleans(void)
{
    static const char *const yes[] = {"true", "yes", "on", "1", "TRUE", "Yes", "\"on\""};
    static const char *const no[] = {"false", "no", "off", "0", "False", "OFF", "\"0\""};
    char text[128];
    exo_config_t c;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        snprintf(text, sizeof(text), "[server]\ntls = false\nallow_plain_http = %s\n", yes[i]);
        CHECK(parse_into(&c, text) == 0 && c.allow_plain_http == 1 && c.tls == 0);
        exo_config_free(&c);
        snprintf(text, sizeof(text), "[server]\ntls = %s\n", no[i]);
        CHECK(parse_into(&c, text) == 0 && c.tls == 0);
        exo_config_free(&c);
    }
    CHECK_STR(parse_err("[server]\ntls = maybe\n"),
              "agent.conf:2: [server] tls: expected true or false (or yes/no, on/off, 1/0), got "
              "'maybe'");
    CHECK_STR(parse_err("[server]\ntls =\n"), "agent.conf:2: [server] tls: expected true or false "
                                              "(or yes/no, on/off, 1/0), got ''");
}

/* [mounts]: defaults, a value of each key, and a bad value of each. */
static void test_mounts(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "") == 0);
    CHECK_STR(c.mounts_volume_prefix, "/media/volume");
    CHECK_STR(c.mounts_share_prefix, "/media/share");
    CHECK_STR(c.mounts_owner, "exouser");
    CHECK(c.mounts_max_in_flight == 4);
    CHECK(c.mounts_mount_timeout_ms == 60000);
    CHECK(c.mounts_mkfs_timeout_ms == 600000);
    CHECK_STR(c.mounts_secret_dir, "/var/lib/exosphere-guest-agent/cephfs");
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[mounts]\nvolume_prefix = /mnt/v\nshare_prefix = /mnt/s\nowner = "
                           "ubuntu\nmax_in_flight = 64\nmount_timeout = 1s\nmkfs_timeout = "
                           "2h\nsecret_dir = /etc/x\n") == 0);
    CHECK_STR(c.mounts_volume_prefix, "/mnt/v");
    CHECK_STR(c.mounts_share_prefix, "/mnt/s");
    CHECK_STR(c.mounts_owner, "ubuntu");
    CHECK(c.mounts_max_in_flight == 64);
    CHECK(c.mounts_mount_timeout_ms == 1000);
    CHECK(c.mounts_mkfs_timeout_ms == 7200000);
    CHECK_STR(c.mounts_secret_dir, "/etc/x");
    exo_config_free(&c);
    CHECK_STR(parse_err("[mounts]\nvolume_prefix = media\n"),
              "agent.conf:2: [mounts] volume_prefix: expected an absolute path, got 'media'");
    CHECK_STR(parse_err("[mounts]\nshare_prefix = \"\"\n"),
              "agent.conf:2: [mounts] share_prefix: expected an absolute path, got ''");
    CHECK(strstr(parse_err("[mounts]\nowner = -x\n"), "[mounts] owner:") != NULL);
    CHECK_STR(parse_err("[mounts]\nmax_in_flight = 0\n"),
              "agent.conf:2: [mounts] max_in_flight: 0 is out of range 1..64");
    CHECK_STR(parse_err("[mounts]\nmount_timeout = 31m\n"),
              "agent.conf:2: [mounts] mount_timeout: 31m is out of range 1s..30m");
    CHECK_STR(parse_err("[mounts]\nmkfs_timeout = 9s\n"),
              "agent.conf:2: [mounts] mkfs_timeout: 9s is out of range 10s..2h");
    CHECK_STR(parse_err("[methods]\napi_versions_dir = api-versions\n"),
              "agent.conf:2: [methods] api_versions_dir: expected an absolute path or \"\" to "
              "disable, got "
              "'api-versions'");
    CHECK_STR(parse_err("[mounts]\nsecret_dir = cephfs\n"),
              "agent.conf:2: [mounts] secret_dir: expected an absolute path, got 'cephfs'");
}

/* [websocket]: defaults, a value of each key, and a bad value of each. */
static void test_websocket(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "") == 0);
    CHECK(c.ws_ping_interval_ms == 25000);
    CHECK(c.ws_pong_timeout_ms == 10000);
    CHECK(c.ws_max_message == 1024 * 1024);
    CHECK(c.ws_max_queued == 1024 * 1024);
    CHECK(c.ws_max_sessions == 20000);
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[websocket]\nping_interval = 100ms\npong_timeout = 10m\n"
                           "max_message = 1K\nmax_queued = 16K\nmax_sessions = 1\n") == 0);
    CHECK(c.ws_ping_interval_ms == 100);
    CHECK(c.ws_pong_timeout_ms == 600000);
    CHECK(c.ws_max_message == 1024);
    CHECK(c.ws_max_queued == 16 * 1024);
    CHECK(c.ws_max_sessions == 1);
    exo_config_free(&c);
    CHECK_STR(parse_err("[websocket]\nping_interval = 11m\n"),
              "agent.conf:2: [websocket] ping_interval: 11m is out of range 100ms..10m");
    CHECK_STR(parse_err("[websocket]\npong_timeout = 99ms\n"),
              "agent.conf:2: [websocket] pong_timeout: 99ms is out of range 100ms..10m");
    CHECK(strstr(parse_err("[websocket]\nmax_message = 100\n"), "[websocket] max_message:") !=
          NULL);
    CHECK(strstr(parse_err("[websocket]\nmax_queued = 2G\n"), "[websocket] max_queued:") != NULL);
    CHECK_STR(parse_err("[websocket]\nmax_sessions = 0\n"),
              "agent.conf:2: [websocket] max_sessions: 0 is out of range 1..1000000");
}

/* [jobs]: defaults, a value of each key, and a bad value of each. */
static void test_jobs(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "") == 0);
    CHECK(c.jobs_max_duration_ms == 3600000);
    CHECK(c.jobs_keep_ms == 86400000);
    CHECK(c.jobs_max_records == 1000);
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[jobs]\nmax_duration = 1s\nkeep = 1m\nmax_records = 16\n") == 0);
    CHECK(c.jobs_max_duration_ms == 1000);
    CHECK(c.jobs_keep_ms == 60000);
    CHECK(c.jobs_max_records == 16);
    exo_config_free(&c);
    CHECK_STR(parse_err("[jobs]\nmax_duration = 25h\n"),
              "agent.conf:2: [jobs] max_duration: 25h is out of range 1s..24h");
    CHECK(strstr(parse_err("[jobs]\nkeep = 59s\n"), "[jobs] keep:") != NULL);
    CHECK_STR(parse_err("[jobs]\nmax_records = 15\n"),
              "agent.conf:2: [jobs] max_records: 15 is out of range 16..10000");
}

/* [packages]: defaults, a value of each key, and a bad value of each; the allow list takes
 * package names (exo_pkg_name_ok), not the dotted names of other lists. */
static void test_packages(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "") == 0);
    CHECK(c.packages_backend == EXO_PKG_CHOICE_AUTO);
    CHECK(c.packages_allow.n == 0);
    CHECK(c.packages_allow_all == 1);
    CHECK(c.packages_self_upgrade == 1);
    CHECK(c.packages_lock_timeout_ms == 300000);
    CHECK(c.packages_timeout_ms == 3600000);
    CHECK(c.packages_keep_ms == 86400000);
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[packages]\nallow = nginx, libstdc++6, \"python3.11\", "
                           "NetworkManager, g_x-1\nallow_all = no\nself_upgrade = "
                           "off\nlock_timeout = 10s\ntimeout = "
                           "6h\nkeep = 1m\n") == 0);
    REQUIRE(c.packages_allow.n == 5);
    CHECK_STR(c.packages_allow.items[0], "nginx");
    CHECK_STR(c.packages_allow.items[1], "libstdc++6");
    CHECK_STR(c.packages_allow.items[2], "python3.11");
    CHECK_STR(c.packages_allow.items[3], "NetworkManager");
    CHECK(c.packages_allow_all == 0);
    CHECK(c.packages_self_upgrade == 0);
    CHECK(c.packages_lock_timeout_ms == 10000);
    CHECK(c.packages_timeout_ms == 6 * 3600000);
    CHECK(c.packages_keep_ms == 60000);
    exo_config_free(&c);
    const char *backends[] = {"auto", "apt", "dnf", "packagekit", "none"};
    for (int i = 0; i < 5; i++) {
        char t[64];
        snprintf(t, sizeof(t), "[packages]\nbackend = %s\n", backends[i]);
        REQUIRE(parse_into(&c, t) == 0);
        CHECK(c.packages_backend == i);
        exo_config_free(&c);
    }
    CHECK_STR(
        parse_err("[packages]\nbackend = yum\n"),
        "agent.conf:2: [packages] backend: expected one of auto, apt, dnf, packagekit, none, got "
        "'yum'");
    CHECK(strstr(parse_err("[packages]\nbackend = pkcon\n"), "got 'pkcon'") != NULL);
    CHECK_STR(parse_err("[packages]\nallow = nginx, -rf\n"),
              "agent.conf:2: [packages] allow: '-rf' is not a package name of 1 to 128 letters, "
              "digits, '.', '_', '+' or '-', not starting with '-' or '.', not ending with '-'");
    /* apt-get install bash- would remove bash. */
    CHECK(strstr(parse_err("[packages]\nallow = bash-\n"), "'bash-' is not a package") != NULL);
    CHECK(strstr(parse_err("[packages]\nallow = .hidden\n"), "'.hidden' is not a package") != NULL);
    CHECK(strstr(parse_err("[packages]\nallow = \"a b\"\n"), "'a b' is not a package") != NULL);
    char text[300];
    snprintf(text, sizeof(text), "[packages]\nallow = %0129d\n", 0);
    CHECK(strstr(parse_err(text), "is not a package name") != NULL);
    CHECK(strstr(parse_err("[packages]\nself_upgrade = 2\n"), "[packages] self_upgrade:") != NULL);
    CHECK(strstr(parse_err("[packages]\nallow_all = sometimes\n"), "[packages] allow_all:") !=
          NULL);
    CHECK_STR(parse_err("[packages]\nlock_timeout = 9s\n"),
              "agent.conf:2: [packages] lock_timeout: 9s is out of range 10s..1h");
    CHECK_STR(parse_err("[packages]\ntimeout = 7h\n"),
              "agent.conf:2: [packages] timeout: 7h is out of range 1m..6h");
    CHECK(strstr(parse_err("[packages]\nkeep = 59s\n"), "[packages] keep: 59s is out of range") !=
          NULL);
}

/* [console]: the status line switch and the device, whose "" means "choose by family". */
static void test_console(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "") == 0);
    CHECK(c.console_status_line == 1 && c.console_device == NULL);
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[console]\nstatus_line = off\ndevice = /dev/ttyS0\n") == 0);
    CHECK(c.console_status_line == 0);
    CHECK_STR(c.console_device, "/dev/ttyS0");
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[console]\ndevice = \"\"\n") == 0);
    CHECK(c.console_device == NULL);
    exo_config_free(&c);
    CHECK_STR(parse_err("[console]\ndevice = dev/console\n"),
              "agent.conf:2: [console] device: expected an absolute path or \"\" for none, got "
              "'dev/console'");
    CHECK_STR(parse_err("[console]\nstatus_line = sometimes\n"),
              "agent.conf:2: [console] status_line: expected true or false (or yes/no, on/off, "
              "1/0), got 'sometimes'");
}

/* [system_load]: the sampling interval (1 s to 1 h), the history kept (1 h to 7 days) and the
 * console line switch. */
static void test_system_load(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "") == 0);
    CHECK(c.load_interval_ms == 60000 && c.load_history_ms == 24 * 3600 * 1000u);
    CHECK(c.load_console_line == 1);
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[system_load]\ninterval = 1s\nhistory = 168h\nconsole_line = no\n") ==
            0);
    CHECK(c.load_interval_ms == 1000 && c.load_history_ms == 168 * 3600 * 1000u);
    CHECK(c.load_console_line == 0);
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[system_load]\ninterval = 1h\nhistory = 1h\n") == 0);
    CHECK(c.load_interval_ms == 3600000 && c.load_history_ms == 3600000);
    exo_config_free(&c);
    CHECK_STR(parse_err("[system_load]\ninterval = 999ms\n"),
              "agent.conf:2: [system_load] interval: 999ms is out of range 1s..1h");
    CHECK_STR(parse_err("[system_load]\ninterval = 61m\n"),
              "agent.conf:2: [system_load] interval: 61m is out of range 1s..1h");
    CHECK_STR(parse_err("[system_load]\nhistory = 59m\n"),
              "agent.conf:2: [system_load] history: 59m is out of range 1h..168h");
    CHECK_STR(parse_err("[system_load]\nhistory = 169h\n"),
              "agent.conf:2: [system_load] history: 169h is out of range 1h..168h");
    CHECK_STR(parse_err("[system_load]\nconsole_line = often\n"),
              "agent.conf:2: [system_load] console_line: expected true or false (or yes/no, "
              "on/off, 1/0), got 'often'");
}

/* [metadata]: the URL (plain http:// only; "" disables) and the fetch's bounds. */
static void test_metadata(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c,
                       "[metadata]\nurl = \"http://[fe80::a9fe:a9fe]:8080/m.json\"\n"
                       "timeout = 500ms\ncache = 0s\nnegative_cache = 1h\nmax_bytes = 64K\n") == 0);
    CHECK_STR(c.metadata_url, "http://[fe80::a9fe:a9fe]:8080/m.json");
    CHECK(c.metadata_timeout_ms == 500);
    CHECK(c.metadata_cache_ms == 0);
    CHECK(c.metadata_negative_cache_ms == 3600000);
    CHECK(c.metadata_max_bytes == 64 * 1024);
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[metadata]\nurl = \"\"\n") == 0);
    CHECK_STR(c.metadata_url, "");
    exo_config_free(&c);
    CHECK_STR(parse_err("[metadata]\nurl = https://169.254.169.254/x\n"),
              "agent.conf:2: [metadata] url: https is not supported: the metadata service is "
              "plain HTTP on the link-local network; use http://, got "
              "'https://169.254.169.254/x'");
    CHECK_STR(parse_err("[metadata]\nurl = ftp://h/x\n"),
              "agent.conf:2: [metadata] url: only http:// URLs are supported, got 'ftp://h/x'");
    CHECK_STR(parse_err("[metadata]\nurl = http://h:0/x\n"),
              "agent.conf:2: [metadata] url: the port must be a number from 1 to 65535, got "
              "'http://h:0/x'");
    CHECK_STR(parse_err("[metadata]\ntimeout = 50ms\n"),
              "agent.conf:2: [metadata] timeout: 50ms is out of range 100ms..1m");
    CHECK_STR(parse_err("[metadata]\ncache = 2d\n"),
              "agent.conf:2: [metadata] cache: expected a duration like 500ms, 30s, 5m or 1h, "
              "got '2d'");
    CHECK_STR(parse_err("[metadata]\nnegative_cache = 2h\n"),
              "agent.conf:2: [metadata] negative_cache: 2h is out of range 0s..1h");
    CHECK_STR(parse_err("[metadata]\nmax_bytes = 512\n"),
              "agent.conf:2: [metadata] max_bytes: 512 is out of range 1K..64M");
}

static void test_sizes(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "[server]\nmax_header_size = 1024\nmax_body_size = 64m\n") == 0);
    CHECK(c.max_header_size == 1024);
    CHECK(c.max_body_size == 64u * 1024 * 1024);
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[server]\nmax_header_size = 1536\nmax_body_size = 3k\n") == 0);
    CHECK(c.max_header_size == 1536);
    CHECK(c.max_body_size == 3072);
    exo_config_free(&c);
    CHECK_STR(parse_err("[server]\n\n\n\n\n\nmax_body_size = lots\n"),
              "agent.conf:7: [server] max_body_size: expected a size like 512K or 1M, got 'lots'");
    CHECK_STR(parse_err("[server]\nmax_body_size = 1KB\n"),
              "agent.conf:2: [server] max_body_size: expected a size like 512K or 1M, got '1KB'");
    CHECK_STR(parse_err("[server]\nmax_body_size = -1K\n"),
              "agent.conf:2: [server] max_body_size: expected a size like 512K or 1M, got '-1K'");
    CHECK_STR(parse_err("[server]\nmax_body_size = 1.5M\n"),
              "agent.conf:2: [server] max_body_size: expected a size like 512K or 1M, got '1.5M'");
    CHECK_STR(parse_err("[server]\nmax_body_size = 128M\n"),
              "agent.conf:2: [server] max_body_size: 128M is out of range 1K..64M");
    CHECK_STR(parse_err("[server]\nmax_header_size = 1023\n"),
              "agent.conf:2: [server] max_header_size: 1023 is out of range 1K..1M");
    CHECK_STR(parse_err("[server]\nmax_header_size = 1G\n"),
              "agent.conf:2: [server] max_header_size: 1G is out of range 1K..1M");
    /* Numbers beyond 64 bits must be refused, not wrapped into range. */
    CHECK_STR(parse_err("[server]\nmax_header_size = 18446744073709551617\n"),
              "agent.conf:2: [server] max_header_size: 18446744073709551617 is out of range "
              "1K..1M");
    CHECK_STR(parse_err("[server]\nmax_body_size = 17179869184G\n"),
              "agent.conf:2: [server] max_body_size: 17179869184G is out of range 1K..64M");
}

static void test_durations(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "[server]\nheader_timeout = 1500ms\nbody_timeout = 1H\n"
                           "call_timeout = 10M\n[methods]\ncpu_sample_interval = 1m\n") == 0);
    CHECK(c.header_timeout_ms == 1500);
    CHECK(c.body_timeout_ms == 3600000);
    CHECK(c.call_timeout_ms == 600000);
    CHECK(c.cpu_sample_interval_ms == 60000);
    exo_config_free(&c);
    CHECK_STR(parse_err("[server]\ncall_timeout = 30\n"),
              "agent.conf:2: [server] call_timeout: expected a duration like 500ms, 30s, 5m or "
              "1h, got '30' (durations need a unit)");
    CHECK_STR(parse_err("[server]\ncall_timeout = 30 s\n"),
              "agent.conf:2: [server] call_timeout: expected a duration like 500ms, 30s, 5m or "
              "1h, got '30 s'");
    CHECK_STR(parse_err("[server]\ncall_timeout = 1d\n"),
              "agent.conf:2: [server] call_timeout: expected a duration like 500ms, 30s, 5m or "
              "1h, got '1d'");
    CHECK_STR(parse_err("[server]\ncall_timeout = s\n"),
              "agent.conf:2: [server] call_timeout: expected a duration like 500ms, 30s, 5m or "
              "1h, got 's'");
    CHECK_STR(parse_err("[methods]\ncpu_sample_interval = 61s\n"),
              "agent.conf:2: [methods] cpu_sample_interval: 61s is out of range 100ms..1m");
    CHECK_STR(parse_err("[methods]\ncpu_sample_interval = 99ms\n"),
              "agent.conf:2: [methods] cpu_sample_interval: 99ms is out of range 100ms..1m");
    CHECK_STR(parse_err("[server]\nidle_timeout = 2h\n"),
              "agent.conf:2: [server] idle_timeout: 2h is out of range 100ms..1h");
    CHECK_STR(parse_err("[server]\ndrain_timeout = 99999999999999h\n"),
              "agent.conf:2: [server] drain_timeout: 99999999999999h is out of range 0s..1h");
}

static void test_numbers_and_modes(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "[server]\nunix_socket_mode = 660\nmax_connections = 100000\n") == 0);
    CHECK(c.unix_socket_mode == 0660);
    CHECK(c.max_connections == 100000);
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[server]\nunix_socket_mode = 0\n") == 0);
    CHECK(c.unix_socket_mode == 0);
    exo_config_free(&c);
    CHECK_STR(parse_err("[server]\nmax_connections = 0\n"),
              "agent.conf:2: [server] max_connections: 0 is out of range 1..100000");
    CHECK_STR(parse_err("[server]\nmax_connections = many\n"),
              "agent.conf:2: [server] max_connections: expected a whole number from 1 to "
              "100000, got 'many'");
    CHECK_STR(parse_err("[server]\nmax_batch = 1e3\n"),
              "agent.conf:2: [server] max_batch: expected a whole number from 1 to 10000, got "
              "'1e3'");
    CHECK_STR(parse_err("[server]\nmax_pipelined = 1025\n"),
              "agent.conf:2: [server] max_pipelined: 1025 is out of range 1..1024");
    CHECK_STR(parse_err("[server]\nunix_socket_mode = 0668\n"),
              "agent.conf:2: [server] unix_socket_mode: expected an octal mode like 0660, got "
              "'0668'");
    CHECK_STR(parse_err("[server]\nunix_socket_mode = rw-rw-rw-\n"),
              "agent.conf:2: [server] unix_socket_mode: expected an octal mode like 0660, got "
              "'rw-rw-rw-'");
    CHECK_STR(parse_err("[server]\nunix_socket_mode = 1777\n"),
              "agent.conf:2: [server] unix_socket_mode: 1777 is out of range 0000..0777");
    CHECK_STR(parse_err("[server]\nunix_socket_mode = 00660\n"),
              "agent.conf:2: [server] unix_socket_mode: expected an octal mode like 0660, got "
              "'00660'");
}

static void test_log_levels(void)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char text[64];
    exo_config_t c;
    for (int i = 0; i < 4; i++) {
        snprintf(text, sizeof(text), "[log]\nlevel = %s\n", names[i]);
        CHECK(parse_into(&c, text) == 0 && c.log_level == (exo_log_level_t)i);
        CHECK_STR(exo_log_level_name((exo_log_level_t)i), names[i]);
        exo_config_free(&c);
    }
    CHECK(parse_into(&c, "[log]\nlevel = WARN\n") == 0 && c.log_level == EXO_LOG_WARN);
    exo_config_free(&c);
    CHECK_STR(exo_log_level_name((exo_log_level_t)7), "unknown");
    CHECK_STR(parse_err("[log]\nlevel = warning\n"),
              "agent.conf:2: [log] level: expected one of debug, info, warn, error, got "
              "'warning'");
}

static void test_lists(void)
{
    exo_config_t c;
    /* Quoted items keep commas, '#' and escaped quotes and backslashes; bare ones are trimmed.
     */
    REQUIRE(parse_into(&c, "[methods]\n"
                           "dirs =  \"/a,b\" ,/plain , \"/x \\\"q\\\" \\\\ # y\",\"/z\"  \n") == 0);
    REQUIRE(c.method_dirs.n == 4);
    CHECK_STR(c.method_dirs.items[0], "/a,b");
    CHECK_STR(c.method_dirs.items[1], "/plain");
    CHECK_STR(c.method_dirs.items[2], "/x \"q\" \\ # y");
    CHECK_STR(c.method_dirs.items[3], "/z");
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[server]\nlisten = [::1]:1, 127.0.0.1:2,localhost:0\n") == 0);
    REQUIRE(c.listen.n == 3);
    CHECK_STR(c.listen.items[0], "[::1]:1");
    CHECK_STR(c.listen.items[1], "127.0.0.1:2");
    CHECK_STR(c.listen.items[2], "localhost:0");
    exo_config_free(&c);
    /* An empty listen list leaves only the Unix socket. */
    REQUIRE(parse_into(&c, "[server]\nlisten =\n") == 0);
    CHECK(c.listen.n == 0 && c.listen.items == NULL);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    exo_config_free(&c);
    CHECK_STR(parse_err("[methods]\ndirs =\n"),
              "agent.conf:2: [methods] dirs: expected 1 to 16 items, got 0");
    CHECK_STR(parse_err("[methods]\ndirs = /a,,/b\n"),
              "agent.conf:2: [methods] dirs: item 2 of the list is empty; items are separated "
              "by single commas");
    CHECK_STR(parse_err("[methods]\ndirs = /a,\n"),
              "agent.conf:2: [methods] dirs: item 2 of the list is empty; items are separated "
              "by single commas");
    CHECK_STR(parse_err("[methods]\ndirs = /a, relative\n"),
              "agent.conf:2: [methods] dirs: expected an absolute path, got 'relative'");
    CHECK_STR(parse_err("[methods]\ndirs = \"/a\", \"/b\n"),
              "agent.conf:2: [methods] dirs: missing closing quote in \"/b");
    CHECK_STR(parse_err("[server]\nlisten = 0.0.0.0:8443, example.org:443\n"),
              "agent.conf:2: [server] listen: 'example.org:443' is not host:port with a numeric "
              "IPv4 address, an IPv6 address in brackets or localhost, and a port 0..65535");
    CHECK_STR(parse_err("[server]\nlisten = ::1:8443\n"),
              "agent.conf:2: [server] listen: '::1:8443' is an IPv6 address without brackets; "
              "write it like [::1]:8443");
    CHECK_STR(parse_err("[server]\nlisten = 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,"
                        "21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,"
                        "45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65\n"),
              "agent.conf:2: [server] listen: expected 0 to 64 items, got 65");
}

static void test_paths(void)
{
    exo_config_t c;
    /* "" disables the Unix socket but keeps a string; for the certificate it means "none". */
    REQUIRE(parse_into(&c, "[server]\nunix_socket = \"\"\ntls_certificate = /c\n"
                           "tls_private_key = /k\n") == 0);
    CHECK_STR(c.unix_socket, "");
    CHECK_STR(c.tls_certificate, "/c");
    const char *unset = "[server]\ntls_certificate =\ntls_private_key = \"\"\n";
    REQUIRE(exo_config_parse(&c, unset, strlen(unset), "second.conf", err_, sizeof(err_)) == 0);
    CHECK(c.tls_certificate == NULL && c.tls_private_key == NULL);
    exo_config_free(&c);
    /* A value may contain '#' or ';' when nothing but text precedes it. */
    REQUIRE(parse_into(&c, "[server]\nstate_dir = /srv/a#b;c\n") == 0);
    CHECK_STR(c.state_dir, "/srv/a#b;c");
    exo_config_free(&c);
    /* Only the first '=' separates the key from the value. */
    REQUIRE(parse_into(&c, "[server]\nstate_dir = /srv/k=v\n") == 0);
    CHECK_STR(c.state_dir, "/srv/k=v");
    exo_config_free(&c);
    CHECK_STR(parse_err("[server]\nstate_dir =\n"),
              "agent.conf:2: [server] state_dir: expected an absolute path, got ''");
    CHECK_STR(parse_err("[server]\nunix_socket = agent.sock\n"),
              "agent.conf:2: [server] unix_socket: expected an absolute path or \"\" to disable, "
              "got 'agent.sock'");
    CHECK_STR(parse_err("[server]\ntls_certificate = cert.pem\n"),
              "agent.conf:2: [server] tls_certificate: expected an absolute path or \"\" for "
              "none, got 'cert.pem'");
    char text[300] = "[server]\nunix_socket = /";
    memset(text + strlen(text), 'a', 107);
    strcat(text, "\n");
    CHECK_STR(parse_err(text), "agent.conf:2: [server] unix_socket: path is longer than 107 bytes");
    text[strlen(text) - 2] = '\n';
    text[strlen(text) - 1] = '\0';
    CHECK_STR(parse_err(text), "OK");
}

static void test_syntax(void)
{
    exo_config_t c;
    /* Comments, blank lines, indentation, spaces inside the brackets, a section given twice,
     * CRLF line endings, a byte order mark and a last line without a newline. */
    const char *text = "\xef\xbb\xbf# comment\r\n"
                       "; another\r\n"
                       "\r\n"
                       "  [ server ]  \r\n"
                       "\t# indented comment\r\n"
                       "  max_batch=7\r\n"
                       "[log]\r\n"
                       "[server]\r\n"
                       "max_pipelined = 3";
    REQUIRE(parse_into(&c, text) == 0);
    CHECK(c.max_batch == 7);
    CHECK(c.max_pipelined == 3);
    exo_config_free(&c);
    CHECK_STR(parse_err(""), "OK");
    CHECK_STR(parse_err("[server]\r\nstate_dir = /srv\r\n"), "OK");
}

static void test_structure_errors(void)
{
    CHECK_STR(parse_err("[server]\n\n\n\n\n\n\n\n\n\n\nfoo = 1\n"),
              "agent.conf:12: unknown key 'foo' in section [server]");
    CHECK_STR(parse_err("[server]\nlevel = debug\n"),
              "agent.conf:2: unknown key 'level' in section [server]; it belongs in [log]");
    CHECK_STR(parse_err("# x\n[serve]\n"),
              "agent.conf:2: unknown section [serve]; the sections "
              "are [server], [methods], [auth], [console], [system_load], [metadata], [mounts], "
              "[packages], [websocket], [jobs], [log]");
    CHECK_STR(parse_err("[server\n"),
              "agent.conf:1: a section header must end with ']', got '[server'");
    CHECK_STR(parse_err("[server] # main\n"),
              "agent.conf:1: a section header must end with ']', got '[server] # main'");
    CHECK_STR(parse_err("tls = true\n"),
              "agent.conf:1: key 'tls' is outside any section; put it under [server]");
    CHECK_STR(parse_err("colour = blue\n"), "agent.conf:1: key 'colour' is outside any section");
    CHECK_STR(parse_err("[server]\ntls true\n"), "agent.conf:2: expected 'key = value', a "
                                                 "[section] header or a comment, got 'tls true'");
    CHECK_STR(parse_err("[server]\ntls = true\n\n[log]\n[server]\ntls = false\n"),
              "agent.conf:6: [server] tls: given twice, on lines 2 and 6");
    CHECK_STR(parse_err("[server]\nstate_dir = /srv # state\n"),
              "agent.conf:2: [server] state_dir: comments must be on a line of their own; quote "
              "the value if '#' belongs to it, in /srv # state");
    CHECK_STR(parse_err("[server]\ntls = true ; on\n"),
              "agent.conf:2: [server] tls: comments must be on a line of their own; quote the "
              "value if ';' belongs to it, in true ; on");
    CHECK_STR(parse_err("[server]\nstate_dir = \"/srv\" # state\n"),
              "agent.conf:2: [server] state_dir: unexpected text after the closing quote in "
              "\"/srv\" # state");
    CHECK_STR(parse_err("[server]\nstate_dir = \"/srv\n"),
              "agent.conf:2: [server] state_dir: missing closing quote in \"/srv");
    CHECK_STR(parse_err("[server]\nstate_dir = \"/srv\\n\"\n"),
              "agent.conf:2: [server] state_dir: unknown escape in \"/srv\\n\"; only \\\" and "
              "\\\\ are allowed");
    CHECK_STR(parse_err("[server]\nstate_dir = /s\"rv\"\n"),
              "agent.conf:2: [server] state_dir: a quote may only begin a value, in /s\"rv\"");
}

static void test_line_errors(void)
{
    char *text = malloc(5000);
    REQUIRE(text != NULL);
    /* A line of exactly 4096 bytes is accepted; CR of CRLF does not count towards it. */
    strcpy(text, "[server]\n#");
    memset(text + 10, 'x', 4095);
    strcpy(text + 4105, "\r\n");
    CHECK_STR(parse_err(text), "OK");
    strcpy(text + 4105, "x\n");
    CHECK_STR(parse_err(text), "agent.conf:2: line is longer than 4096 bytes");
    free(text);

    exo_config_t c;
    REQUIRE(exo_config_defaults(&c) == 0);
    static const char nul[] = "[server]\ntls = tr\0ue\n";
    CHECK(exo_config_parse(&c, nul, sizeof(nul) - 1, "agent.conf", err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "agent.conf:2: line contains a NUL byte");
    /* Control bytes in a quoted value are replaced so that messages stay on one line. */
    const char *escape = "[log]\nlevel = x\x1b[2Jy\n";
    CHECK(exo_config_parse(&c, escape, strlen(escape), "agent.conf", err_, sizeof(err_)) ==
          -EINVAL);
    CHECK_STR(err_, "agent.conf:2: [log] level: expected one of debug, info, warn, error, got "
                    "'x?[2Jy'");
    /* A long value is cut short in the message. */
    char big[200] = "[log]\nlevel = ";
    memset(big + strlen(big), 'v', 100);
    CHECK(exo_config_parse(&c, big, strlen(big), "agent.conf", err_, sizeof(err_)) == -EINVAL);
    char want[80] = "got '";
    memset(want + strlen(want), 'v', 60);
    strcat(want, "...'");
    CHECK(strstr(err_, want) != NULL);
    /* A small buffer is filled without overflowing; no buffer at all is fine too. */
    char tiny[12];
    CHECK(exo_config_parse(&c, "x", 1, "agent.conf", tiny, sizeof(tiny)) == -EINVAL);
    CHECK_STR(tiny, "agent.conf:");
    CHECK(exo_config_parse(&c, "x", 1, "agent.conf", NULL, 0) == -EINVAL);
    exo_config_free(&c);
}

#define ACCOUNT_RULE                                                                               \
    "1 to 32 letters, digits, '_', '.' or '-', not starting with '-' and not only digits or dots"

static void test_accounts(void)
{
    static const char *const good[] = {
        "a", "_x", "A1", "user.name-1", "x-", "1a", "x.", "0.1", "abcdefghijklmnopqrstuvwxyz012345",
    };
    static const char *const bad[] = {
        "-x",   "a b",     "\"x:y\"",     "abcdefghijklmnopqrstuvwxyz0123456",
        "\"\"", "123",     ".",           "..",
        "a/b",  "\"a,b\"", "r\xc3\xa9my", "x$",
        "~x",
    };
    char text[256], want[512];
    exo_config_t c;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(text, sizeof(text), "[server]\nuser = %s\n[auth]\npam_service = %s\n", good[i],
                 good[i]);
        REQUIRE(parse_into(&c, text) == 0);
        CHECK_STR(c.user, good[i]);
        CHECK_STR(c.pam_service, good[i]);
        exo_config_free(&c);
        snprintf(text, sizeof(text), "[auth]\nallow_groups = wheel, %s\n", good[i]);
        REQUIRE(parse_into(&c, text) == 0);
        REQUIRE(c.allow_groups.n == 2);
        CHECK_STR(c.allow_groups.items[1], good[i]);
        exo_config_free(&c);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* The message shows the value as decoded: without quotes. */
        const char *v = bad[i];
        char shown[64];
        size_t n = strlen(v);
        if (v[0] == '"') v++, n -= 2;
        snprintf(shown, sizeof(shown), "%.*s", (int)n, v);
        snprintf(text, sizeof(text), "[server]\nuser = %s\n", bad[i]);
        snprintf(want, sizeof(want),
                 "agent.conf:2: [server] user: expected an account name of " ACCOUNT_RULE
                 ", got '%s'",
                 shown);
        CHECK_STR(parse_err(text), want);
        snprintf(text, sizeof(text), "[auth]\n\npam_service = %s\n", bad[i]);
        snprintf(want, sizeof(want),
                 "agent.conf:3: [auth] pam_service: expected an account name of " ACCOUNT_RULE
                 ", got '%s'",
                 shown);
        CHECK_STR(parse_err(text), want);
        snprintf(text, sizeof(text), "[auth]\nallow_users = alice, %s\n", bad[i]);
        snprintf(want, sizeof(want),
                 "agent.conf:2: [auth] allow_users: '%s' is not an account name of " ACCOUNT_RULE,
                 shown);
        CHECK_STR(parse_err(text), want);
    }
    CHECK_STR(parse_err("[auth]\nadmin_groups = a, -b\n"),
              "agent.conf:2: [auth] admin_groups: '-b' is not an account name of " ACCOUNT_RULE);
    CHECK_STR(parse_err("[auth]\nallow_groups = a,,b\n"),
              "agent.conf:2: [auth] allow_groups: item 2 of the list is empty; items are "
              "separated by single commas");
    /* Lists have their own bounds: 256 users or groups, 64 admin groups. */
    char *many = malloc(4096);
    REQUIRE(many != NULL);
    strcpy(many, "[auth]\nallow_users = u0");
    for (int i = 1; i < 256; i++)
        sprintf(many + strlen(many), ",u%d", i);
    strcat(many, "\n");
    REQUIRE(parse_into(&c, many) == 0);
    CHECK(c.allow_users.n == 256);
    CHECK_STR(c.allow_users.items[255], "u255");
    exo_config_free(&c);
    strcpy(many + strlen(many) - 1, ",u256\n");
    CHECK_STR(parse_err(many),
              "agent.conf:2: [auth] allow_users: expected 0 to 256 items, got 257");
    strcpy(many, "[auth]\nadmin_groups = g0");
    for (int i = 1; i < 65; i++)
        sprintf(many + strlen(many), ",g%d", i);
    CHECK_STR(parse_err(many), "agent.conf:2: [auth] admin_groups: expected 0 to 64 items, got 65");
    free(many);
}

static void test_ip_lists(void)
{
    static const char *const good[] = {
        "1.2.3.4",      "0.0.0.0/0", "10.0.0.1/8",      "10.0.0.0/32",    "::1",
        "::/0",         "fe80::/10", "::ffff:10.0.0.1", "2001:db8::/128", "::ffff:10.0.0.0/104",
        "10.0.0.0/008",
    };
    static const char *const bad[] = {
        "10.0.0.0/",         "/8",          "10.0.0/8",
        "example.org",       "10.0.0.1/-1", "10.0.0.1/+8",
        "fe80::1%eth0",      "1.2.3.4:80",  "10.0.0.0/8/8",
        "10.0.0.0/0008",     "[::1]",       "[::1]/128",
        "1.2.3.4 /8",        "::1/1e2",     "256.0.0.1",
        "1:2:3:4:5:6:7:8:9",
    };
    char text[256], want[512];
    exo_config_t c;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(text, sizeof(text), "[auth]\ntrusted_proxies = 192.0.2.1, \"%s\"\n", good[i]);
        REQUIRE(parse_into(&c, text) == 0);
        REQUIRE(c.trusted_proxies.n == 2);
        /* Items are kept as written, not normalised. */
        CHECK_STR(c.trusted_proxies.items[1], good[i]);
        CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
        exo_config_free(&c);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "[auth]\ntrusted_proxies = 192.0.2.1, \"%s\"\n", bad[i]);
        snprintf(want, sizeof(want),
                 "agent.conf:2: [auth] trusted_proxies: '%s' is not an IPv4 or IPv6 address, "
                 "optionally with a /prefix length",
                 bad[i]);
        CHECK_STR(parse_err(text), want);
    }
    CHECK_STR(parse_err("[auth]\ntrusted_proxies = 10.0.0.0/33\n"),
              "agent.conf:2: [auth] trusted_proxies: '10.0.0.0/33' has a prefix length out of "
              "range 0..32");
    CHECK_STR(parse_err("[auth]\ntrusted_proxies = ::1/129\n"),
              "agent.conf:2: [auth] trusted_proxies: '::1/129' has a prefix length out of range "
              "0..128");
    CHECK_STR(parse_err("[auth]\ntrusted_proxies = ::ffff:1.2.3.4/999\n"),
              "agent.conf:2: [auth] trusted_proxies: '::ffff:1.2.3.4/999' has a prefix length "
              "out of range 0..128");
    /* An address longer than any IPv6 text is refused without overflowing. */
    char lng[200] = "[auth]\ntrusted_proxies = ";
    memset(lng + strlen(lng), '1', 100);
    CHECK(strstr(parse_err(lng), "' is not an IPv4 or IPv6 address, optionally with a /prefix "
                                 "length") != NULL);
    char *many = malloc(2048);
    REQUIRE(many != NULL);
    strcpy(many, "[auth]\ntrusted_proxies = 10.0.0.0");
    for (int i = 1; i < 65; i++)
        sprintf(many + strlen(many), ",10.0.0.%d", i);
    CHECK_STR(parse_err(many),
              "agent.conf:2: [auth] trusted_proxies: expected 0 to 64 items, got 65");
    free(many);
}

static void test_auth_numbers(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "[auth]\ntoken_lifetime = 1m\nlogin_backoff = 1h\nlogin_backoff_max = "
                           "1h\nmax_logins_in_flight = 1\npam_timeout = 1s\n") == 0);
    CHECK(c.token_lifetime_ms == 60000);
    CHECK(c.login_backoff_ms == 3600000);
    CHECK(c.login_backoff_max_ms == 3600000);
    CHECK(c.max_logins_in_flight == 1);
    CHECK(c.pam_timeout_ms == 1000);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    exo_config_free(&c);
    CHECK_STR(parse_err("[auth]\ntoken_lifetime = 59s\n"),
              "agent.conf:2: [auth] token_lifetime: 59s is out of range 1m..168h");
    CHECK_STR(parse_err("[auth]\ntoken_lifetime = 169h\n"),
              "agent.conf:2: [auth] token_lifetime: 169h is out of range 1m..168h");
    CHECK_STR(parse_err("[auth]\ntoken_lifetime = 12\n"),
              "agent.conf:2: [auth] token_lifetime: expected a duration like 500ms, 30s, 5m or "
              "1h, got '12' (durations need a unit)");
    CHECK_STR(parse_err("[auth]\nlogin_backoff = 61m\n"),
              "agent.conf:2: [auth] login_backoff: 61m is out of range 0s..1h");
    CHECK_STR(parse_err("[auth]\nlogin_backoff_max = 25h\n"),
              "agent.conf:2: [auth] login_backoff_max: 25h is out of range 0s..24h");
    CHECK_STR(parse_err("[auth]\nmax_logins_in_flight = 0\n"),
              "agent.conf:2: [auth] max_logins_in_flight: 0 is out of range 1..64");
    CHECK_STR(parse_err("[auth]\nmax_logins_in_flight = 65\n"),
              "agent.conf:2: [auth] max_logins_in_flight: 65 is out of range 1..64");
    CHECK_STR(parse_err("[auth]\npam_timeout = 999ms\n"),
              "agent.conf:2: [auth] pam_timeout: 999ms is out of range 1s..5m");
    CHECK_STR(parse_err("[auth]\npam_timeout = 301s\n"),
              "agent.conf:2: [auth] pam_timeout: 301s is out of range 1s..5m");
    CHECK_STR(parse_err("[auth]\nallow_root_login = root\n"),
              "agent.conf:2: [auth] allow_root_login: expected true or false (or yes/no, on/off, "
              "1/0), got 'root'");
    /* The backoff's ceiling may not be below its start. */
    CHECK_STR(validate_err("[auth]\nlogin_backoff = 10m\n"),
              "[auth] login_backoff_max: 5m is less than login_backoff (10m), which it caps");
    CHECK_STR(validate_err("[auth]\nlogin_backoff = 2s\nlogin_backoff_max = 1500ms\n"),
              "[auth] login_backoff_max: 1500ms is less than login_backoff (2s), which it caps");
    CHECK_STR(validate_err("[auth]\nlogin_backoff = 2s\nlogin_backoff_max = 2s\n"), "OK");
    CHECK_STR(validate_err("[auth]\nlogin_backoff = 0s\nlogin_backoff_max = 0s\n"), "OK");
    CHECK_STR(validate_err("[auth]\nlogin_backoff = 1h\nlogin_backoff_max = 24h\n"), "OK");
}

static void test_method_overrides(void)
{
    exo_config_t c;
    char name[200];
    REQUIRE(parse_into(&c, "[auth]\npublic_methods = agent.info, rpc.discover\n"
                           "admin_methods = \"system_load.current\"\n") == 0);
    REQUIRE(c.public_methods.n == 2);
    CHECK_STR(c.public_methods.items[1], "rpc.discover");
    REQUIRE(c.admin_methods.n == 1);
    CHECK_STR(c.admin_methods.items[0], "system_load.current");
    exo_config_free(&c);
    CHECK_STR(parse_err("[auth]\nadmin_methods = Agent.Info\n"),
              "agent.conf:2: [auth] admin_methods: 'Agent.Info' is not a name like agent.info");
    CHECK_STR(parse_err("[auth]\nuser_methods = a..b\n"),
              "agent.conf:2: [auth] user_methods: 'a..b' is not a name like agent.info");
    CHECK_STR(parse_err("[auth]\npublic_methods = _a.b\n"),
              "agent.conf:2: [auth] public_methods: '_a.b' is not a name like agent.info");
    CHECK_STR(parse_err("[methods]\noperator_capabilities = system.read, Process.run\n"),
              "agent.conf:2: [methods] operator_capabilities: 'Process.run' is not a name like "
              "system.read");
    /* Method names may be 128 bytes long, as sandbox/method.lua allows. */
    snprintf(name, sizeof(name), "[auth]\nuser_methods = a.%0126d\n", 0);
    memset(name + strlen("[auth]\nuser_methods = a."), 'x', 126);
    CHECK_STR(parse_err(name), "OK");
    snprintf(name, sizeof(name), "[auth]\nuser_methods = a.%0127d\n", 0);
    memset(name + strlen("[auth]\nuser_methods = a."), 'x', 127);
    CHECK(strstr(parse_err(name), "is not a name like agent.info") != NULL);

    /* A method may be overridden to one level only; the message names the later list. */
    CHECK_STR(validate_err("[auth]\npublic_methods = a.b\nuser_methods = x.y\n"
                           "admin_methods = c.d, x.y\n"),
              "[auth] admin_methods: 'x.y' is also in user_methods");
    CHECK_STR(validate_err("[auth]\npublic_methods = a.b\nadmin_methods = c.d, a.b\n"),
              "[auth] admin_methods: 'a.b' is also in public_methods");
    CHECK_STR(validate_err("[auth]\npublic_methods = q.r, a.b\nuser_methods = a.b\n"),
              "[auth] user_methods: 'a.b' is also in public_methods");
    CHECK_STR(validate_err("[auth]\npublic_methods = a.b\nuser_methods = a.c\n"
                           "admin_methods = a.d\n"),
              "OK");
    /* Naming a method twice in the same list is harmless. */
    CHECK_STR(validate_err("[auth]\nadmin_methods = a.b, a.b\n"), "OK");
}

/* Values set without the parser, as the command line might, are checked by validate. */
static void test_validate_auth(void)
{
    exo_config_t c;
    REQUIRE(exo_config_defaults(&c) == 0);
    REQUIRE(exo_config_set_string(&c.user, "-x") == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "[server] user: expected an account name of " ACCOUNT_RULE ", got '-x'");
    REQUIRE(exo_config_set_string(&c.user, NULL) == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "[server] user: expected an account name of " ACCOUNT_RULE ", got ''");
    REQUIRE(exo_config_set_string(&c.user, "agent") == 0);
    REQUIRE(exo_config_set_string(&c.pam_service, "..") == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "[auth] pam_service: expected an account name of " ACCOUNT_RULE ", got '..'");
    REQUIRE(exo_config_set_string(&c.pam_service, "sshd") == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    static const char *const groups[] = {"ops", "a:b"};
    REQUIRE(exo_config_set_list(&c.allow_groups, groups, 2) == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "[auth] allow_groups: 'a:b' is not an account name of " ACCOUNT_RULE);
    REQUIRE(exo_config_set_list(&c.allow_groups, groups, 1) == 0);
    static const char *const proxies[] = {"10.0.0.0/8", "::1/129"};
    REQUIRE(exo_config_set_list(&c.trusted_proxies, proxies, 2) == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "[auth] trusted_proxies: '::1/129' has a prefix length out of range 0..128");
    REQUIRE(exo_config_set_list(&c.trusted_proxies, proxies, 1) == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    const char *users[257];
    for (size_t i = 0; i < 257; i++)
        users[i] = "u";
    REQUIRE(exo_config_set_list(&c.allow_users, users, 257) == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "[auth] allow_users: expected 0 to 256 items, got 257");
    REQUIRE(exo_config_set_list(&c.allow_users, users, 256) == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    c.login_backoff_max_ms = 999;
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "[auth] login_backoff_max: 999ms is less than login_backoff (1s), which it "
                    "caps");
    exo_config_free(&c);
}

/* The origin checks themselves are tested in test_cors.c; here, that the parser and the
 * validation use them, the list bounds and cors_max_age. */
static void test_cors_keys(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "[server]\ncors_origins = https://exosphere.example.org, "
                           "\"http://127.0.0.1:8000\"\ncors_max_age = 2h\n") == 0);
    REQUIRE(c.cors_origins.n == 2);
    CHECK_STR(c.cors_origins.items[0], "https://exosphere.example.org");
    CHECK_STR(c.cors_origins.items[1], "http://127.0.0.1:8000");
    CHECK(c.cors_max_age_ms == 2u * 3600 * 1000);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    static const char *const bad[] = {"https://a.example", "*"};
    REQUIRE(exo_config_set_list(&c.cors_origins, bad, 2) == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "[server] cors_origins: '*' has a wildcard; CORS here is for exact origins "
                    "only, so list each one");
    exo_config_free(&c);
    CHECK_STR(parse_err("[server]\ncors_origins = \"*\"\n"),
              "agent.conf:2: [server] cors_origins: '*' has a wildcard; CORS here is for exact "
              "origins only, so list each one");
    CHECK_STR(parse_err("[server]\ncors_origins = https://x.example/\n"),
              "agent.conf:2: [server] cors_origins: 'https://x.example/' has a path, query or "
              "fragment (or a trailing '/'); an origin is scheme://host[:port]");
    CHECK_STR(parse_err("[server]\ncors_origins = x.example\n"),
              "agent.conf:2: [server] cors_origins: 'x.example' does not start with http:// or "
              "https://");
    CHECK_STR(parse_err("[server]\ncors_max_age = 25h\n"),
              "agent.conf:2: [server] cors_max_age: 25h is out of range 0s..24h");
    CHECK_STR(parse_err("[server]\ncors_max_age = 600\n"),
              "agent.conf:2: [server] cors_max_age: expected a duration like 500ms, 30s, 5m or "
              "1h, got '600' (durations need a unit)");
    char many[1200] = "[server]\ncors_origins = http://a.example";
    for (int i = 0; i < 32; i++)
        strcat(many, ", http://a.example");
    CHECK_STR(parse_err(many),
              "agent.conf:2: [server] cors_origins: expected 0 to 32 items, got 33");
}

static void test_trusted_proxy(void)
{
    exo_config_t c;
    REQUIRE(exo_config_defaults(&c) == 0);
    /* The empty list trusts nobody. */
    CHECK(exo_config_is_trusted_proxy(&c, "127.0.0.1") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "::1") == 0);
    static const char *const items[] = {
        "10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1", "172.16.0.0/12", "fe80::/10",
    };
    REQUIRE(exo_config_set_list(&c.trusted_proxies, items, sizeof(items) / sizeof(items[0])) == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "10.1.2.3") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "10.255.255.255") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "11.0.0.1") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "9.255.255.255") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "192.168.1.7") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "192.168.1.8") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "172.16.0.1") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "172.31.255.255") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "172.32.0.0") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "172.15.255.255") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "2001:db8:1::5") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "2001:db9::1") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "febf::1") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "fec0::1") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "::1") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "0:0:0:0:0:0:0:1") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "::2") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "127.0.0.1") == 0);
    /* Peers of an IPv6 socket that are IPv4 show as mapped addresses and match IPv4 items. */
    CHECK(exo_config_is_trusted_proxy(&c, "::ffff:10.0.0.1") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "::ffff:192.168.1.7") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "::FFFF:172.20.0.1") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "::ffff:11.0.0.1") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "::ffff:192.168.1.8") == 0);
    /* The IPv4-compatible form is not the mapped one. */
    CHECK(exo_config_is_trusted_proxy(&c, "::10.0.0.1") == 0);
    /* Anything that is not a bare numeric address matches nothing. */
    CHECK(exo_config_is_trusted_proxy(&c, "") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, NULL) == 0);
    CHECK(exo_config_is_trusted_proxy(NULL, "10.0.0.1") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "10.0.0.1:8443") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "10.0.0.1/8") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "[::1]") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "localhost") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "10.0.0.1 ") == 0);

    /* Host bits in an item are ignored; a mapped item matches the IPv4 peer; /0 is everyone of
     * its family, IPv4 peers of an IPv6 socket included. */
    static const char *const more[] = {"10.9.9.9/8", "::ffff:192.0.2.1", "bogus", "0.0.0.0/0"};
    REQUIRE(exo_config_set_list(&c.trusted_proxies, more, 2) == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "10.0.0.1") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "192.0.2.1") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "::ffff:192.0.2.1") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "192.0.2.2") == 0);
    REQUIRE(exo_config_set_list(&c.trusted_proxies, more + 2, 2) == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "8.8.8.8") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "::ffff:8.8.8.8") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "2001:db8::1") == 0);
    /* Exact items: /32 and /128 are the address itself. */
    static const char *const exact[] = {"203.0.113.9/32", "2001:db8::9/128"};
    REQUIRE(exo_config_set_list(&c.trusted_proxies, exact, 2) == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "203.0.113.9") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "203.0.113.8") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "2001:db8::9") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "2001:db8::8") == 0);
    static const char *const v6all[] = {"::/0"};
    REQUIRE(exo_config_set_list(&c.trusted_proxies, v6all, 1) == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "2001:db8::1") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "::") == 1);
    exo_config_free(&c);
    /* Items parsed from a file behave the same. */
    REQUIRE(parse_into(&c, "[auth]\ntrusted_proxies = 100.64.0.0/10, \"fd00::/8\"\n") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "100.127.255.254") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "100.128.0.1") == 0);
    CHECK(exo_config_is_trusted_proxy(&c, "fd12:3456::1") == 1);
    CHECK(exo_config_is_trusted_proxy(&c, "fe00::1") == 0);
    exo_config_free(&c);
}

static void test_layering_and_atomicity(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "[server]\nmax_batch = 5\nstate_dir = /first\n") == 0);
    char *before = dump(&c);
    REQUIRE(before != NULL);
    /* A later text changes only the keys it names; a key may be given again in another text. */
    const char *second = "[server]\nmax_batch = 6\n";
    REQUIRE(exo_config_parse(&c, second, strlen(second), "b.conf", err_, sizeof(err_)) == 0);
    CHECK(c.max_batch == 6);
    CHECK_STR(c.state_dir, "/first");
    /* A failed parse leaves every earlier value, including those set before the bad line. */
    const char *bad = "[server]\nmax_batch = 7\nstate_dir = /second\nlisten = \"[::1]:1\"\n"
                      "tls = sometimes\n";
    CHECK(exo_config_parse(&c, bad, strlen(bad), "c.conf", err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "c.conf:5: [server] tls: expected true or false (or yes/no, on/off, 1/0), "
                    "got 'sometimes'");
    CHECK(c.max_batch == 6);
    CHECK_STR(c.state_dir, "/first");
    CHECK(c.listen.n == 2);
    c.max_batch = 5;
    char *after = dump(&c);
    REQUIRE(after != NULL);
    CHECK_STR(after, before);
    free(before);
    free(after);
    exo_config_free(&c);
}

static void test_validate(void)
{
    CHECK_STR(validate_err(""), "OK");
    CHECK_STR(validate_err("[server]\ntls_certificate = /c\n"),
              "[server] tls_private_key: must be set when tls_certificate is, since each needs "
              "the other");
    CHECK_STR(validate_err("[server]\ntls_private_key = /k\n"),
              "[server] tls_certificate: must be set when tls_private_key is, since each needs "
              "the other");
    CHECK_STR(validate_err("[server]\ntls_certificate = /c\ntls_private_key = /k\n"), "OK");
    CHECK_STR(validate_err("[server]\ntls = false\n"),
              "[server] tls: false serves plain HTTP, but listen has '0.0.0.0:8443', which is "
              "not a loopback address; listen on loopback only or set allow_plain_http = true");
    CHECK_STR(validate_err("[server]\ntls = false\nlisten = 127.0.0.1:1, [::1]:2\n"), "OK");
    CHECK_STR(validate_err("[server]\ntls = false\nlisten = [::1]:2, 10.0.0.5:80\n"),
              "[server] tls: false serves plain HTTP, but listen has '10.0.0.5:80', which is not "
              "a loopback address; listen on loopback only or set allow_plain_http = true");
    CHECK_STR(validate_err("[server]\ntls = false\nlisten = 127.9.9.9:1, localhost:2, "
                           "[::ffff:127.0.0.1]:3\n"),
              "OK");
    CHECK_STR(validate_err("[server]\ntls = false\nlisten = [::ffff:10.0.0.1]:3\n"),
              "[server] tls: false serves plain HTTP, but listen has '[::ffff:10.0.0.1]:3', "
              "which is not a loopback address; listen on loopback only or set "
              "allow_plain_http = true");
    CHECK_STR(validate_err("[server]\ntls = false\nallow_plain_http = true\n"), "OK");
    CHECK_STR(validate_err("[server]\nlisten = 127.0.0.1:1, 127.0.0.1:1\n"),
              "[server] listen: '127.0.0.1:1' is listed twice");
    CHECK_STR(validate_err("[server]\nlisten =\nunix_socket = \"\"\n"),
              "[server] listen: is empty and unix_socket is disabled, so there is nowhere to "
              "listen");

    /* Lists set from the command line are checked here, since no parser saw them. */
    static const char *const bad_items[] = {
        "127.0.0.1",        "127.0.0.1:",       "127.0.0.1:65536", "127.0.0.1:+80", "[::1]8443",
        "[::1:8443",        "[fe80::1%eth0]:1", "1.2.3:80",        "localhost.:80", ":8443",
        "127.0.0.1:123456", "[127.0.0.1]:80",   "0.0.0.0:84 43",   "[:::1]:80",
    };
    exo_config_t c;
    REQUIRE(exo_config_defaults(&c) == 0);
    for (size_t i = 0; i < sizeof(bad_items) / sizeof(bad_items[0]); i++) {
        char want[256];
        snprintf(want, sizeof(want),
                 "[server] listen: '%s' is not host:port with a numeric IPv4 address, an IPv6 "
                 "address in brackets or localhost, and a port 0..65535",
                 bad_items[i]);
        REQUIRE(exo_config_set_list(&c.listen, &bad_items[i], 1) == 0);
        CHECK(exo_config_validate(&c, err_, sizeof(err_)) == -EINVAL);
        CHECK_STR(err_, want);
    }
    static const char *const good[] = {"0.0.0.0:0", "[::]:65535", "localhost:8080"};
    REQUIRE(exo_config_set_list(&c.listen, good, 3) == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    REQUIRE(exo_config_set_list(&c.method_dirs, NULL, 0) == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "[methods] dirs: expected 1 to 16 items, got 0");
    exo_config_free(&c);
}

static void test_setters(void)
{
    exo_config_t c;
    REQUIRE(exo_config_defaults(&c) == 0);
    static const char *const dev[] = {"127.0.0.1:8080"};
    REQUIRE(exo_config_set_list(&c.listen, dev, 1) == 0);
    REQUIRE(c.listen.n == 1);
    CHECK_STR(c.listen.items[0], "127.0.0.1:8080");
    CHECK(c.listen.items[0] != dev[0]);
    REQUIRE(exo_config_set_list(&c.listen, NULL, 0) == 0);
    CHECK(c.listen.n == 0 && c.listen.items == NULL);
    REQUIRE(exo_config_set_string(&c.tls_certificate, "/cert") == 0);
    CHECK_STR(c.tls_certificate, "/cert");
    REQUIRE(exo_config_set_string(&c.tls_certificate, NULL) == 0);
    CHECK(c.tls_certificate == NULL);
    REQUIRE(exo_config_set_string(&c.state_dir, c.state_dir) == 0);
    CHECK_STR(c.state_dir, "/var/lib/exosphere-guest-agent");
    exo_config_free(&c);
}

static void test_dump_round_trip(void)
{
    exo_config_t c, d;
    REQUIRE(exo_config_defaults(&c) == 0);
    char *text = dump(&c);
    REQUIRE(text != NULL);
    CHECK(strstr(text, "\n[server]\n# TCP addresses") != NULL);
    CHECK(strstr(text, "\nlisten = \"0.0.0.0:8443\", \"[::]:8443\"\n") != NULL);
    CHECK(strstr(text, "\nunix_socket_mode = 0666\n") != NULL);
    CHECK(strstr(text, "\ntls = true\n") != NULL);
    CHECK(strstr(text, "\ntls_certificate = \"\"\n") != NULL);
    CHECK(strstr(text, "\nmax_header_size = 16K\n") != NULL);
    CHECK(strstr(text, "\nmax_body_size = 1M\n") != NULL);
    CHECK(strstr(text, "\nidle_timeout = 75s\n") != NULL);
    CHECK(strstr(text, "\ncpu_sample_interval = 2s\n") != NULL);
    CHECK(strstr(text, "\n[log]\n# Least severe level logged: debug, info, warn or error.\n"
                       "level = info\n") != NULL);
    CHECK(strstr(text, "\nuser = \"exosphere-guest-agent\"\n") != NULL);
    CHECK(strstr(text, "\n[auth]\n# PAM service") != NULL);
    CHECK(strstr(text, "\npam_service = \"exosphere-guest-agent\"\n") != NULL);
    CHECK(strstr(text, "\nallow_users = \n") != NULL);
    CHECK(strstr(text, "\nadmin_groups = \"sudo\", \"wheel\", \"admin\"\n") != NULL);
    CHECK(strstr(text, "\nallow_root_login = false\n") != NULL);
    CHECK(strstr(text, "\ntoken_lifetime = 12h\n") != NULL);
    CHECK(strstr(text, "\nlogin_backoff = 1s\n") != NULL);
    CHECK(strstr(text, "\nlogin_backoff_max = 5m\n") != NULL);
    CHECK(strstr(text, "\nmax_logins_in_flight = 4\n") != NULL);
    CHECK(strstr(text, "\npam_timeout = 15s\n") != NULL);
    CHECK(strstr(text, "\ntrusted_proxies = \n") != NULL);
    /* Sections come in table order: [auth] between [methods] and [log]. */
    CHECK(strstr(text, "[methods]") < strstr(text, "[auth]"));
    CHECK(strstr(text, "[auth]") < strstr(text, "[log]"));
    free(text);
    exo_config_free(&c);

    /* Values that need quoting, exact units and odd numbers survive a dump and a parse. */
    const char *odd = "[server]\n"
                      "listen = \"[::1]:1\"\n"
                      "unix_socket = \"\"\n"
                      "unix_socket_mode = 0\n"
                      "tls = off\n"
                      "tls_certificate = \"/c \\\"q\\\" \\\\ , # ;\"\n"
                      "tls_private_key = /k\n"
                      "max_header_size = 1025\n"
                      "max_body_size = 64M\n"
                      "header_timeout = 1001ms\n"
                      "body_timeout = 90s\n"
                      "idle_timeout = 60m\n"
                      "drain_timeout = 0ms\n"
                      "user = \"a.b-c\"\n"
                      "[methods]\n"
                      "dirs = \"/a,b\", /c\n"
                      "[auth]\n"
                      "pam_service = _Svc\n"
                      "allow_users = \"x\", y\n"
                      "admin_groups =\n"
                      "allow_root_login = on\n"
                      "token_lifetime = 90m\n"
                      "user_methods = a.b, c.d\n"
                      "login_backoff = 1500ms\n"
                      "login_backoff_max = 0h\n"
                      "trusted_proxies = ::1/128, 10.0.0.0/8\n"
                      "[log]\n"
                      "level = error\n";
    REQUIRE(parse_into(&c, odd) == 0);
    text = dump(&c);
    REQUIRE(text != NULL);
    CHECK(strstr(text, "\nidle_timeout = 1h\n") != NULL);
    CHECK(strstr(text, "\nbody_timeout = 90s\n") != NULL);
    CHECK(strstr(text, "\nheader_timeout = 1001ms\n") != NULL);
    CHECK(strstr(text, "\nmax_header_size = 1025\n") != NULL);
    CHECK(strstr(text, "\ndrain_timeout = 0s\n") != NULL);
    CHECK(strstr(text, "\nunix_socket_mode = 0000\n") != NULL);
    CHECK(strstr(text, "\ntls_certificate = \"/c \\\"q\\\" \\\\ , # ;\"\n") != NULL);
    CHECK(strstr(text, "\nuser = \"a.b-c\"\n") != NULL);
    CHECK(strstr(text, "\npam_service = \"_Svc\"\n") != NULL);
    CHECK(strstr(text, "\nallow_users = \"x\", \"y\"\n") != NULL);
    CHECK(strstr(text, "\nadmin_groups = \n") != NULL);
    CHECK(strstr(text, "\nallow_root_login = true\n") != NULL);
    CHECK(strstr(text, "\ntoken_lifetime = 90m\n") != NULL);
    CHECK(strstr(text, "\nuser_methods = \"a.b\", \"c.d\"\n") != NULL);
    CHECK(strstr(text, "\nlogin_backoff = 1500ms\n") != NULL);
    CHECK(strstr(text, "\nlogin_backoff_max = 0s\n") != NULL);
    CHECK(strstr(text, "\ntrusted_proxies = \"::1/128\", \"10.0.0.0/8\"\n") != NULL);
    REQUIRE(exo_config_defaults(&d) == 0);
    CHECK(exo_config_parse(&d, text, strlen(text), "dump", err_, sizeof(err_)) == 0);
    CHECK_STR(err_, "");
    char *again = dump(&d);
    CHECK_STR(again, text);
    CHECK_STR(d.tls_certificate, "/c \"q\" \\ , # ;");
    REQUIRE(d.method_dirs.n == 2);
    CHECK_STR(d.method_dirs.items[0], "/a,b");
    CHECK_STR(d.user, "a.b-c");
    CHECK_STR(d.pam_service, "_Svc");
    CHECK(d.admin_groups.n == 0);
    CHECK(d.allow_root_login == 1);
    CHECK(d.token_lifetime_ms == 90u * 60 * 1000);
    REQUIRE(d.trusted_proxies.n == 2);
    CHECK_STR(d.trusted_proxies.items[0], "::1/128");
    CHECK(d.login_backoff_ms == 1500 && d.login_backoff_max_ms == 0);
    free(again);
    free(text);
    exo_config_free(&c);
    exo_config_free(&d);
}

static void test_load(void)
{
    exo_config_t c;
    REQUIRE(exo_config_defaults(&c) == 0);
    CHECK(exo_config_load(&c, "/nonexistent/agent.conf", err_, sizeof(err_)) == -ENOENT);
    CHECK_STR(err_, "/nonexistent/agent.conf: cannot read: No such file or directory");
    CHECK(exo_config_load(&c, "/", err_, sizeof(err_)) == -EISDIR);
    CHECK_STR(err_, "/: cannot read: Is a directory");

    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    const char *text = "[server]\nmax_batch = 9\n[log]\nlevel = loud\n";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    CHECK(exo_config_load(&c, path, err_, sizeof(err_)) == -EINVAL);
    char want[128];
    snprintf(want, sizeof(want),
             "%s:4: [log] level: expected one of debug, info, warn, error, got 'loud'", path);
    CHECK_STR(err_, want);
    CHECK(c.max_batch == 100);
    CHECK(ftruncate(fd, 23) == 0);
    CHECK(exo_config_load(&c, path, err_, sizeof(err_)) == 0);
    CHECK(c.max_batch == 9);
    /* A file over 1 MiB is refused before it is all read. */
    CHECK(ftruncate(fd, 2 * 1024 * 1024) == 0);
    CHECK(exo_config_load(&c, path, err_, sizeof(err_)) == -EINVAL);
    snprintf(want, sizeof(want), "%s: larger than 1048576 bytes; is this the configuration file?",
             path);
    CHECK_STR(err_, want);
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(exo_config_load(&c, path, err_, sizeof(err_)) == 0);
    close(fd);
    unlink(path);
    exo_config_free(&c);
}

/* The shipped file sets nothing: every key is commented out, so it parses to the defaults. */
static void test_packaged_file_is_defaults(void)
{
    char *text = read_file("packaging/agent.conf");
    REQUIRE(text != NULL);
    exo_config_t c, d;
    REQUIRE(exo_config_defaults(&c) == 0);
    REQUIRE(exo_config_defaults(&d) == 0);
    CHECK(exo_config_parse(&c, text, strlen(text), "packaging/agent.conf", err_, sizeof(err_)) ==
          0);
    char *a = dump(&c), *b = dump(&d);
    CHECK_STR(a, b);
    free(a);
    free(b);
    free(text);
    exo_config_free(&c);
    exo_config_free(&d);
}

/* Appends the key names of the "key = value" lines of text, in order, to names. Lines of the
 * packaged file that start "#key = " are commented-out settings and count too when
 * `commented` is set; prose comments start with "# ". */
static void key_names(const char *text, int commented, char *names, size_t len)
{
    names[0] = '\0';
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (commented && p[0] == '#' && p[1] >= 'a' && p[1] <= 'z')
            p++;
        else if (commented || p[0] == '#')
            continue;
        size_t n = strcspn(p, " =\n");
        if (p[n] == ' ' && strncmp(p + n, " = ", 3) == 0 && strlen(names) + n + 2 < len)
            strncat(strcat(names, " "), p, n);
    }
}

/* The shipped file lists every key in the table's order, and uncommenting every setting
 * gives the defaults again, so its documented values cannot drift from the code. */
static void test_packaged_file_documents_defaults(void)
{
    char *text = read_file("packaging/agent.conf");
    REQUIRE(text != NULL);
    exo_config_t c, d;
    REQUIRE(exo_config_defaults(&d) == 0);
    char *want = dump(&d), have_names[2048], want_names[2048];
    key_names(want, 0, want_names, sizeof(want_names));
    key_names(text, 1, have_names, sizeof(have_names));
    CHECK(strlen(want_names) > 100);
    CHECK_STR(have_names, want_names);

    for (char *p = text; p != NULL; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (p[0] == '#' && p[1] >= 'a' && p[1] <= 'z') p[0] = ' ';
    }
    REQUIRE(exo_config_defaults(&c) == 0);
    err_[0] = '\0';
    CHECK(exo_config_parse(&c, text, strlen(text), "uncommented", err_, sizeof(err_)) == 0);
    CHECK_STR(err_, "");
    /* The file shows the packaged location of the methods, which a build under another prefix
     * does not have as its default. */
    REQUIRE(c.method_dirs.n == 1);
    CHECK_STR(c.method_dirs.items[0], PACKAGED_METHODS_DIR);
    REQUIRE(exo_config_set_list(&c.method_dirs, (const char *const *)d.method_dirs.items,
                                d.method_dirs.n) == 0);
    char *have = dump(&c);
    CHECK_STR(have, want);
    free(have);
    free(want);
    free(text);
    exo_config_free(&c);
    exo_config_free(&d);
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_every_key);
    RUN(test_booleans);
    RUN(test_sizes);
    RUN(test_durations);
    RUN(test_numbers_and_modes);
    RUN(test_log_levels);
    RUN(test_lists);
    RUN(test_paths);
    RUN(test_syntax);
    RUN(test_structure_errors);
    RUN(test_line_errors);
    RUN(test_accounts);
    RUN(test_ip_lists);
    RUN(test_auth_numbers);
    RUN(test_method_overrides);
    RUN(test_validate_auth);
    RUN(test_trusted_proxy);
    RUN(test_cors_keys);
    RUN(test_layering_and_atomicity);
    RUN(test_validate);
    RUN(test_setters);
    RUN(test_dump_round_trip);
    RUN(test_mounts);
    RUN(test_websocket);
    RUN(test_jobs);
    RUN(test_packages);
    RUN(test_console);
    RUN(test_system_load);
    RUN(test_metadata);
    RUN(test_load);
    RUN(test_packaged_file_is_defaults);
    RUN(test_packaged_file_documents_defaults);
    TEST_END();
}
