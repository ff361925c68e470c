/* The configuration parser. Every key is one row of the table below, which gives its section,
 * name, type, place in exo_config_t, range, default (in file syntax) and a one-line
 * description; parsing, defaults, copying, freeing, validation of list sizes and the dump all
 * walk that table, so a new key is one new row. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "buf.h"
#include "cors.h"
#include "pkgop.h"
#include "url.h"

#define CFG_MAX_LINE 4096
#define CFG_MAX_FILE (1024 * 1024)
#define CFG_SHOW_MAX 64
#define KIB 1024ULL
#define MIB (1024ULL * 1024)
#define SEC 1000ULL
#define MIN (60ULL * 1000)
#define HOUR (60ULL * 60 * 1000)
#define ACCOUNT_MAX 32
#define ACCOUNT_RULE                                                                               \
    "1 to 32 letters, digits, '_', '.' or '-', not starting with '-' and not only digits or dots"

typedef enum {
    CT_BOOL,
    CT_UINT,         /* plain decimal number */
    CT_SIZE,         /* bytes, with an optional K, M or G suffix */
    CT_DURATION,     /* milliseconds, written with a required ms, s, m or h suffix */
    CT_MODE,         /* octal permission bits */
    CT_LOGLEVEL,     /* one of the exo_log_level_t names */
    CT_PKGBACKEND,   /* one of the exo_pkg_choice_t names */
    CT_PATH,         /* absolute path, required */
    CT_PATH_EMPTY,   /* absolute path, or "" kept as the empty string (meaning "disabled") */
    CT_PATH_NONE,    /* absolute path, or "" stored as NULL (meaning "not set") */
    CT_ADDR_LIST,    /* list of host:port items */
    CT_PATH_LIST,    /* list of absolute paths */
    CT_NAME_LIST,    /* list of dotted lower-case names, such as capability names */
    CT_ACCOUNT,      /* user, group or service name, required */
    CT_ACCOUNT_LIST, /* list of account names */
    CT_IP_LIST,      /* list of numeric IPv4 or IPv6 addresses, each with an optional /prefix */
    CT_URL,          /* http:// URL (exo_url_parse), or "" kept as the empty string (disabled) */
    CT_ORIGIN_LIST,  /* list of exact web origins (exo_cors_origin_check) */
    CT_PKG_LIST,     /* list of package names (exo_pkg_name_ok) */
} cfg_type_t;

/* One configuration key. For numbers min and max bound the value, for paths and account names
 * max bounds the length, and for lists they bound the number of items. */
typedef struct cfg_key_s {
    const char *section;
    const char *name;
    cfg_type_t type;
    size_t offset;
    uint64_t min, max;
    const char *def;
    const char *doc;
} cfg_key_t;

#define KEY(sec, name, type, field, min, max, def, doc)                                            \
    {                                                                                              \
        sec, name, type, offsetof(exo_config_t, field), min, max, def, doc                         \
    }

/* Rows of one section stay together: the dump and the list of known sections rely on it. */
static const cfg_key_t keys[] = {
    KEY("server", "listen", CT_ADDR_LIST, listen, 0, 64, "\"0.0.0.0:8443\", \"[::]:8443\"",
        "TCP addresses to listen on, as host:port items; IPv6 in brackets; empty for none."),
    KEY("server", "unix_socket", CT_PATH_EMPTY, unix_socket, 0, 107,
        "\"/run/exosphere-guest-agent/agent.sock\"",
        "Local socket, where the peer's uid identifies the caller; \"\" disables it."),
    KEY("server", "unix_socket_mode", CT_MODE, unix_socket_mode, 0, 0777, "0666",
        "Permission bits of the local socket, in octal."),
    KEY("server", "tls", CT_BOOL, tls, 0, 1, "true", "Serve HTTPS; false serves plain HTTP."),
    KEY("server", "allow_plain_http", CT_BOOL, allow_plain_http, 0, 1, "false",
        "Allow tls = false on addresses other than loopback."),
    KEY("server", "tls_certificate", CT_PATH_NONE, tls_certificate, 0, 4095, "\"\"",
        "PEM certificate chain; \"\" creates a self-signed one in state_dir."),
    KEY("server", "tls_private_key", CT_PATH_NONE, tls_private_key, 0, 4095, "\"\"",
        "PEM private key of tls_certificate; set both or neither."),
    KEY("server", "state_dir", CT_PATH, state_dir, 0, 4095, "\"/var/lib/exosphere-guest-agent\"",
        "Directory of keys, the generated certificate and other state."),
    KEY("server", "user", CT_ACCOUNT, user, 1, ACCOUNT_MAX, "\"exosphere-guest-agent\"",
        "System user the unprivileged worker process runs as."),
    KEY("server", "max_connections", CT_UINT, max_connections, 1, 100000, "1024",
        "Open connections at most; clients beyond it are answered 503."),
    KEY("server", "max_header_size", CT_SIZE, max_header_size, KIB, MIB, "16K",
        "Size of a request line and its headers at most."),
    KEY("server", "max_body_size", CT_SIZE, max_body_size, KIB, 64 * MIB, "1M",
        "Size of one request body at most."),
    KEY("server", "header_timeout", CT_DURATION, header_timeout_ms, 100, HOUR, "10s",
        "Time allowed to receive the headers of a request."),
    KEY("server", "body_timeout", CT_DURATION, body_timeout_ms, 100, HOUR, "30s",
        "Time allowed to receive the body of a request."),
    KEY("server", "idle_timeout", CT_DURATION, idle_timeout_ms, 100, HOUR, "75s",
        "Idle keep-alive connections close after this; above the 60s of nginx proxies."),
    KEY("server", "max_pipelined", CT_UINT, max_pipelined, 1, 1024, "16",
        "Requests parsed ahead on one connection before reading pauses."),
    KEY("server", "max_batch", CT_UINT, max_batch, 1, 10000, "100",
        "Entries in one JSON-RPC batch at most."),
    KEY("server", "call_timeout", CT_DURATION, call_timeout_ms, 100, HOUR, "30s",
        "Deadline of one method call; long work runs as a job instead."),
    KEY("server", "drain_timeout", CT_DURATION, drain_timeout_ms, 0, HOUR, "10s",
        "On SIGTERM, how long calls in flight may take to finish."),
    KEY("server", "cors_origins", CT_ORIGIN_LIST, cors_origins, 0, 32, "",
        "Web origins answered with CORS headers, like \"https://exosphere.example.org\"; empty "
        "(behind Exosphere's proxy, which adds its own): none."),
    KEY("server", "cors_max_age", CT_DURATION, cors_max_age_ms, 0, 24 * HOUR, "10m",
        "How long browsers may cache a preflight answer (Access-Control-Max-Age)."),
    KEY("methods", "dirs", CT_PATH_LIST, method_dirs, 1, 16, "\"" EXO_DEFAULT_METHODS_DIR "\"",
        "Directories to load methods from."),
    KEY("methods", "api_versions_dir", CT_PATH_EMPTY, api_versions_dir, 0, 4095,
        "\"" EXO_DEFAULT_API_VERSIONS_DIR "\"",
        "Directory of the API version files (<YYYY-MM-DD>.lua) shipped with the methods; \"\" "
        "serves the methods under one version only."),
    KEY("methods", "cpu_sample_interval", CT_DURATION, cpu_sample_interval_ms, 100, MIN, "2s",
        "How often /proc/stat is sampled to compute CPU usage."),
    KEY("methods", "operator_dir", CT_PATH_EMPTY, operator_dir, 0, 4095,
        "\"/etc/exosphere-guest-agent/methods.d\"",
        "Directory of the operator's own methods; \"\" disables it."),
    KEY("methods", "allow_override", CT_BOOL, allow_override, 0, 1, "false",
        "Let an operator method replace a shipped method of the same name."),
    KEY("methods", "operator_capabilities", CT_NAME_LIST, operator_capabilities, 0, 32, "",
        "Capabilities operator methods may use (system.read, process.run, mounts.read, "
        "mounts.write, packages.read, packages.write)."),
    KEY("methods", "memory_limit", CT_SIZE, memory_limit, 4 * MIB, 4095 * MIB, "128M",
        "Memory ceiling of the Lua VM that runs methods."),
    KEY("methods", "call_memory_limit", CT_SIZE, call_memory_limit, 256 * KIB, 4095 * MIB, "32M",
        "Memory one call may add to the VM before it is stopped."),
    KEY("methods", "call_instruction_limit", CT_UINT, call_instruction_limit, 10000, 4000000000ULL,
        "200000000", "Lua instructions one call may run before it is stopped."),
    KEY("methods", "preempt_slice", CT_DURATION, preempt_slice_ms, 1, SEC, "2ms",
        "How long a CPU-bound call runs before other work gets the loop."),
    KEY("auth", "pam_service", CT_ACCOUNT, pam_service, 1, ACCOUNT_MAX, "\"exosphere-guest-agent\"",
        "PAM service name used for logins (/etc/pam.d/<name>)."),
    KEY("auth", "allow_users", CT_ACCOUNT_LIST, allow_users, 0, 256, "",
        "Users who may log in, besides members of allow_groups; both empty: anyone."),
    KEY("auth", "allow_groups", CT_ACCOUNT_LIST, allow_groups, 0, 256, "",
        "Groups whose members may log in, besides allow_users; both empty: anyone."),
    KEY("auth", "admin_groups", CT_ACCOUNT_LIST, admin_groups, 0, 64,
        "\"sudo\", \"wheel\", \"admin\"",
        "Members of these groups get the admin permission level."),
    KEY("auth", "allow_root_login", CT_BOOL, allow_root_login, 0, 1, "false",
        "Let root (uid 0) log in; otherwise its logins are refused."),
    KEY("auth", "token_lifetime", CT_DURATION, token_lifetime_ms, MIN, 168 * HOUR, "12h",
        "How long a login token stays valid."),
    KEY("auth", "public_methods", CT_NAME_LIST, public_methods, 0, 256, "",
        "Methods whose permission level is overridden to public."),
    KEY("auth", "user_methods", CT_NAME_LIST, user_methods, 0, 256, "",
        "Methods whose permission level is overridden to user."),
    KEY("auth", "admin_methods", CT_NAME_LIST, admin_methods, 0, 256, "",
        "Methods whose permission level is overridden to admin."),
    KEY("auth", "login_backoff", CT_DURATION, login_backoff_ms, 0, HOUR, "1s",
        "Delay after a failed login for a user name, doubled on each further failure; 0s: none."),
    KEY("auth", "login_backoff_max", CT_DURATION, login_backoff_max_ms, 0, 24 * HOUR, "5m",
        "Ceiling of the login_backoff delay."),
    KEY("auth", "max_logins_in_flight", CT_UINT, max_logins_in_flight, 1, 64, "4",
        "PAM checks that may run at once; further logins are refused as busy."),
    KEY("auth", "pam_timeout", CT_DURATION, pam_timeout_ms, SEC, 5 * MIN, "15s",
        "A PAM check still running after this is killed and the login fails."),
    KEY("auth", "trusted_proxies", CT_IP_LIST, trusted_proxies, 0, 64, "",
        "Proxies (addresses or CIDRs) whose X-Forwarded-For is believed in login logs."),
    KEY("console", "status_line", CT_BOOL, console_status_line, 0, 1, "true",
        "Write the agent's status line (version, port, TLS fingerprint) to the console at start."),
    KEY("console", "device", CT_PATH_NONE, console_device, 0, 4095, "\"\"",
        "Where console lines go; \"\" picks /dev/kmsg on the Red Hat family, else /dev/console."),
    KEY("system_load", "interval", CT_DURATION, load_interval_ms, SEC, HOUR, "1m",
        "Take a load sample at each multiple of this on the wall clock, like cron."),
    KEY("system_load", "history", CT_DURATION, load_history_ms, HOUR, 168 * HOUR, "24h",
        "Load history kept across restarts (at most 10080 samples)."),
    KEY("system_load", "console_line", CT_BOOL, load_console_line, 0, 1, "true",
        "Write each load sample to the console as the line older Exosphere versions chart."),
    KEY("metadata", "url", CT_URL, metadata_url, 0, EXO_URL_MAX,
        "\"http://169.254.169.254/openstack/latest/meta_data.json\"",
        "OpenStack metadata document (volume names), plain http:// only; \"\" disables it."),
    KEY("metadata", "timeout", CT_DURATION, metadata_timeout_ms, 100, MIN, "2s",
        "A fetch of the metadata document taking longer fails."),
    KEY("metadata", "cache", CT_DURATION, metadata_cache_ms, 0, 24 * HOUR, "5m",
        "How long a fetched metadata document is reused; 0s fetches every time."),
    KEY("metadata", "negative_cache", CT_DURATION, metadata_negative_cache_ms, 0, HOUR, "30s",
        "How long a failed fetch is remembered before the service is asked again."),
    KEY("metadata", "max_bytes", CT_SIZE, metadata_max_bytes, KIB, 64 * MIB, "1M",
        "Size of the metadata document at most."),
    KEY("mounts", "volume_prefix", CT_PATH, mounts_volume_prefix, 0, 1024, "\"/media/volume\"",
        "Volumes mount in directories directly under this one."),
    KEY("mounts", "share_prefix", CT_PATH, mounts_share_prefix, 0, 1024, "\"/media/share\"",
        "CephFS shares mount in directories directly under this one."),
    KEY("mounts", "owner", CT_ACCOUNT, mounts_owner, 1, ACCOUNT_MAX, "\"exouser\"",
        "User (and its primary group) that owns the root directory of every mount."),
    KEY("mounts", "max_in_flight", CT_UINT, mounts_max_in_flight, 1, 64, "4",
        "Mount operations that may run at once; further ones are refused as busy."),
    KEY("mounts", "mount_timeout", CT_DURATION, mounts_mount_timeout_ms, SEC, 30 * MIN, "60s",
        "A probe, mount or unmount still running after this is stopped and fails."),
    KEY("mounts", "mkfs_timeout", CT_DURATION, mounts_mkfs_timeout_ms, 10 * SEC, 2 * HOUR, "10m",
        "A mkfs still running after this is stopped and fails."),
    KEY("mounts", "secret_dir", CT_PATH, mounts_secret_dir, 0, 1024,
        "\"/var/lib/exosphere-guest-agent/cephfs\"",
        "Root-only directory of the CephFS secret and keyring files (0700, files 0600)."),
    KEY("packages", "backend", CT_PKGBACKEND, packages_backend, 0, 4, "auto",
        "Package manager: auto (PackageKit if its D-Bus service is installed, else apt-get if "
        "installed, else dnf), apt, dnf, packagekit, or none (package methods answer "
        "Unsupported)."),
    KEY("packages", "allow", CT_PKG_LIST, packages_allow, 0, 256, "",
        "Packages that packages.update {packages} may name (exact names)."),
    KEY("packages", "allow_all", CT_BOOL, packages_allow_all, 0, 1, "true",
        "Whether packages.update {all = true} (an admin method) is allowed."),
    KEY("packages", "self_upgrade", CT_BOOL, packages_self_upgrade, 0, 1, "true",
        "Whether self.upgrade (an admin method) may upgrade the agent's own packages."),
    KEY("packages", "lock_timeout", CT_DURATION, packages_lock_timeout_ms, 10 * SEC, HOUR, "5m",
        "How long apt waits for the dpkg and apt locks before it fails."),
    KEY("packages", "timeout", CT_DURATION, packages_timeout_ms, MIN, 6 * HOUR, "1h",
        "A package operation's deadline: the tool's process group is killed after it."),
    KEY("packages", "keep", CT_DURATION, packages_keep_ms, MIN, 30 * 24 * HOUR, "24h",
        "How long an ended package operation's files stay in state_dir/packages."),
    KEY("websocket", "ping_interval", CT_DURATION, ws_ping_interval_ms, 100, 10 * MIN, "25s",
        "The agent pings each WebSocket session this often (proxies close idle ones at 60s)."),
    KEY("websocket", "pong_timeout", CT_DURATION, ws_pong_timeout_ms, 100, 10 * MIN, "10s",
        "A session whose peer has not answered a ping with a pong after this is closed."),
    KEY("websocket", "max_message", CT_SIZE, ws_max_message, KIB, 64 * MIB, "1M",
        "Size of one received message at most (all its fragments); a larger one closes with 1009."),
    KEY("websocket", "max_queued", CT_SIZE, ws_max_queued, 16 * KIB, 1024 * MIB, "1M",
        "Unsent outbound bytes per session at most; past it the session closes with 1008."),
    KEY("websocket", "max_sessions", CT_UINT, ws_max_sessions, 1, 1000000, "20000",
        "Open WebSocket sessions at most; further upgrades are answered 503."),
    KEY("jobs", "max_duration", CT_DURATION, jobs_max_duration_ms, SEC, 24 * HOUR, "1h",
        "A job still running after this is stopped and fails with Timeout."),
    KEY("jobs", "keep", CT_DURATION, jobs_keep_ms, MIN, 30 * 24 * HOUR, "24h",
        "Finished job records (and idempotency keys) are kept this long, across worker restarts."),
    KEY("jobs", "max_records", CT_UINT, jobs_max_records, 16, 10000, "1000",
        "Job records kept at most; past it the oldest finished ones go first."),
    KEY("log", "level", CT_LOGLEVEL, log_level, EXO_LOG_DEBUG, EXO_LOG_ERROR, "info",
        "Least severe level logged: debug, info, warn or error."),
};

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const pkg_backend_names[] = {"auto", "apt", "dnf", "packagekit", "none"};

/* Where a message comes from: the file and line (when there is a file) and the key (when
 * there is one), which together make the message's prefix. */
typedef struct cfg_ctx_s {
    const char *name;
    unsigned line;
    const cfg_key_t *key;
    char *err;
    size_t errlen;
} cfg_ctx_t;

/* Writes "name:line: [section] key: " and the formatted message into the context's buffer,
 * and returns -EINVAL so that callers can `return fail(...)`. */
__attribute__((format(printf, 2, 3))) static int fail(cfg_ctx_t *cx, const char *fmt, ...)
{
    if (cx->err == NULL || cx->errlen == 0) return -EINVAL;
    size_t n = 0;
    int w = 0;
    if (cx->name != NULL) w = snprintf(cx->err, cx->errlen, "%s:%u: ", cx->name, cx->line);
    n = w > 0 ? (size_t)w : 0;
    if (cx->key != NULL && n < cx->errlen) {
        w = snprintf(cx->err + n, cx->errlen - n, "[%s] %s: ", cx->key->section, cx->key->name);
        n += w > 0 ? (size_t)w : 0;
    }
    if (n < cx->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cx->err + n, cx->errlen - n, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static int fail_nomem(cfg_ctx_t *cx)
{
    if (cx->err != NULL && cx->errlen > 0)
        snprintf(cx->err, cx->errlen, "%s: out of memory", cx->name ? cx->name : "configuration");
    return -ENOMEM;
}

/* Copies text from the file into out for quoting in a message. Control bytes become '?' so a
 * hostile file cannot forge log lines, and long values are cut so the message stays one
 * readable line. */
static const char *show(char *out, size_t outlen, const char *s, size_t len)
{
    size_t max = outlen - 4, j = 0;
    for (size_t i = 0; i < len && j < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[j++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    if (len > max) {
        memcpy(out + j, "...", 3);
        j += 3;
    }
    out[j] = '\0';
    return out;
}

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}

static void trim(const char **s, size_t *len)
{
    while (*len > 0 && is_space(**s))
        (*s)++, (*len)--;
    while (*len > 0 && is_space((*s)[*len - 1]))
        (*len)--;
}

static void list_free(exo_strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static bool is_list(cfg_type_t t)
{
    return t == CT_ADDR_LIST || t == CT_PATH_LIST || t == CT_NAME_LIST || t == CT_ACCOUNT_LIST ||
           t == CT_IP_LIST || t == CT_ORIGIN_LIST || t == CT_PKG_LIST;
}

static bool is_string(cfg_type_t t)
{
    return t == CT_PATH || t == CT_PATH_EMPTY || t == CT_PATH_NONE || t == CT_ACCOUNT ||
           t == CT_URL;
}

/* The suffixes of sizes and durations, largest first so that formatting picks the largest
 * unit that divides a value exactly and the dump shows "16K" and "75s" rather than raw counts.
 * Sizes may omit the suffix; durations may not, so their list has no empty one. */
typedef struct cfg_unit_s {
    const char *suffix;
    uint64_t mult;
} cfg_unit_t;

static const cfg_unit_t size_units[] = {{"G", 1024 * MIB}, {"M", MIB}, {"K", KIB}, {"", 1}, {0}};
static const cfg_unit_t time_units[] = {{"h", HOUR}, {"m", MIN}, {"s", SEC}, {"ms", 1}, {0}};

static const cfg_unit_t *units_of(cfg_type_t t)
{
    return t == CT_SIZE ? size_units : t == CT_DURATION ? time_units : NULL;
}

/* Formats a number the way the file writes it. */
static void format_num(char *out, size_t len, cfg_type_t t, uint64_t v)
{
    const cfg_unit_t *u = units_of(t);
    if (t == CT_MODE) {
        snprintf(out, len, "%04llo", (unsigned long long)v);
        return;
    }
    while (u != NULL && v % u->mult != 0)
        u++;
    /* Zero divides by every unit; seconds read best for a zero duration. */
    if (v == 0 && t == CT_DURATION) u = &time_units[2];
    snprintf(out, len, "%llu%s", (unsigned long long)(u ? v / u->mult : v), u ? u->suffix : "");
}

/* Decodes one value, quoted or bare, into a new string. Comments take whole lines, so a bare
 * value with " #" or " ;" in it is refused rather than silently kept: it is almost always an
 * attempted trailing comment, and quoting says what is meant otherwise. */
static int decode_scalar(cfg_ctx_t *cx, const char *s, size_t len, char **out)
{
    char shown[CFG_SHOW_MAX];
    exo_buf_t b = EXO_BUF_INIT;
    if (len > 0 && s[0] == '"') {
        size_t i = 1;
        for (; i < len && s[i] != '"'; i++) {
            char ch = s[i];
            if (ch == '\\') {
                if (i + 1 >= len || (s[i + 1] != '"' && s[i + 1] != '\\')) {
                    exo_buf_free(&b);
                    return fail(cx, "unknown escape in %s; only \\\" and \\\\ are allowed",
                                show(shown, sizeof(shown), s, len));
                }
                ch = s[++i];
            }
            if (exo_buf_appendc(&b, ch) < 0) goto nomem;
        }
        if (i >= len || i + 1 != len) {
            exo_buf_free(&b);
            return fail(cx,
                        i >= len ? "missing closing quote in %s"
                                 : "unexpected text after the closing quote in %s",
                        show(shown, sizeof(shown), s, len));
        }
    } else {
        for (size_t i = 0; i < len; i++) {
            if (s[i] == '"')
                return fail(cx, "a quote may only begin a value, in %s",
                            show(shown, sizeof(shown), s, len));
            if ((s[i] == '#' || s[i] == ';') && (i == 0 || is_space(s[i - 1])))
                return fail(cx,
                            "comments must be on a line of their own; quote the value if "
                            "'%c' belongs to it, in %s",
                            s[i], show(shown, sizeof(shown), s, len));
        }
        if (exo_buf_append(&b, s, len) < 0) goto nomem;
    }
    if (exo_buf_appendc(&b, '\0') < 0) goto nomem;
    *out = exo_buf_steal(&b, NULL);
    return 0;
nomem:
    exo_buf_free(&b);
    return fail_nomem(cx);
}

/* Splits a list at the commas outside quotes and decodes each item. An empty value is the
 * empty list; an empty item is refused because it is nearly always a stray comma. */
static int decode_list(cfg_ctx_t *cx, const char *s, size_t len, exo_strlist_t *out)
{
    exo_strlist_t l = {NULL, 0};
    size_t start = 0;
    bool quoted = false;
    int rc = 0;
    for (size_t i = 0; len > 0 && i <= len; i++) {
        if (i < len && quoted) {
            if (s[i] == '\\' && i + 1 < len)
                i++;
            else if (s[i] == '"')
                quoted = false;
            continue;
        }
        if (i < len && s[i] == '"') quoted = true;
        if (i < len && s[i] != ',') continue;
        const char *item = s + start;
        size_t n = i - start;
        start = i + 1;
        trim(&item, &n);
        if (n == 0) {
            rc = fail(cx, "item %zu of the list is empty; items are separated by single commas",
                      l.n + 1);
            break;
        }
        char **items = realloc(l.items, (l.n + 1) * sizeof(*items));
        if (items == NULL) {
            rc = fail_nomem(cx);
            break;
        }
        l.items = items;
        if ((rc = decode_scalar(cx, item, n, &l.items[l.n])) < 0) break;
        l.n++;
    }
    if (rc < 0)
        list_free(&l);
    else
        *out = l;
    return rc;
}

/* Checks one listen item. Returns NULL when it is valid, with *loopback telling whether it
 * names a loopback address, or else the reason it is not. */
static const char *check_listen(const char *item, bool *loopback)
{
    static const char *const bad = "is not host:port with a numeric IPv4 address, an IPv6 "
                                   "address in brackets or localhost, and a port 0..65535";
    char host[64];
    const char *port;
    size_t hlen;
    unsigned char addr[16];
    if (item[0] == '[') {
        const char *close = strchr(item, ']');
        if (close == NULL || close[1] != ':') return bad;
        hlen = (size_t)(close - item - 1);
        port = close + 2;
        if (hlen >= sizeof(host)) return bad;
        memcpy(host, item + 1, hlen);
        host[hlen] = '\0';
        if (inet_pton(AF_INET6, host, addr) != 1) return bad;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        *loopback = (memcmp(addr, mapped, 12) == 0 && addr[12] == 127) ||
                    (memcmp(addr, in6addr_loopback.s6_addr, 16) == 0);
    } else {
        const char *colon = strrchr(item, ':');
        if (colon == NULL) return bad;
        hlen = (size_t)(colon - item);
        port = colon + 1;
        if (memchr(item, ':', hlen) != NULL)
            return "is an IPv6 address without brackets; write it like [::1]:8443";
        if (hlen >= sizeof(host)) return bad;
        memcpy(host, item, hlen);
        host[hlen] = '\0';
        if (strcmp(host, "localhost") == 0)
            *loopback = true;
        else if (inet_pton(AF_INET, host, addr) == 1)
            *loopback = addr[0] == 127;
        else
            return bad;
    }
    size_t plen = strlen(port);
    if (plen == 0 || plen > 5 || strspn(port, "0123456789") != plen || atol(port) > 65535)
        return bad;
    return NULL;
}

/* Checks a path value: absolute, short enough, and empty only where the type allows it. */
static int check_path(cfg_ctx_t *cx, cfg_type_t t, uint64_t max, const char *p)
{
    char shown[CFG_SHOW_MAX];
    if (p[0] == '/' && strlen(p) <= max) return 0;
    if (p[0] == '/') return fail(cx, "path is longer than %llu bytes", (unsigned long long)max);
    if (p[0] == '\0' && (t == CT_PATH_EMPTY || t == CT_PATH_NONE)) return 0;
    return fail(cx, "expected an absolute path%s, got '%s'",
                t == CT_PATH_EMPTY  ? " or \"\" to disable"
                : t == CT_PATH_NONE ? " or \"\" for none"
                                    : "",
                show(shown, sizeof(shown), p, strlen(p)));
}

/* Parses a number of a numeric type. Returns 0 with *v set, 1 when the text is not a number of
 * that type, or 2 when it is a duration without its unit. Values too large for 64 bits come
 * back as UINT64_MAX, which every range check refuses. */
static int parse_num(cfg_type_t t, const char *s, uint64_t *v)
{
    const cfg_unit_t *u = units_of(t);
    uint64_t x = 0;
    size_t i = 0;
    unsigned base = t == CT_MODE ? 8 : 10;
    for (; s[i] >= '0' && s[i] < (char)('0' + base); i++)
        x = x > (UINT64_MAX - 9) / 10 ? UINT64_MAX : x * base + (uint64_t)(s[i] - '0');
    if (i == 0 || (t == CT_MODE && i > 4)) return 1;
    if (u == NULL && s[i] != '\0') return 1;
    while (u != NULL && u->suffix != NULL && strcasecmp(u->suffix, s + i) != 0)
        u++;
    if (u != NULL && u->suffix == NULL) return (t == CT_DURATION && s[i] == '\0') ? 2 : 1;
    uint64_t mult = u != NULL ? u->mult : 1;
    *v = x > UINT64_MAX / mult ? UINT64_MAX : x * mult;
    return 0;
}

static int set_number(cfg_ctx_t *cx, void *field, const char *s)
{
    static const char *const forms[] = {
        [CT_SIZE] = "a size like 512K or 1M",
        [CT_DURATION] = "a duration like 500ms, 30s, 5m or 1h",
        [CT_MODE] = "an octal mode like 0660",
    };
    const cfg_key_t *k = cx->key;
    char shown[CFG_SHOW_MAX], lo[32], hi[32];
    uint64_t v = 0;
    int rc = parse_num(k->type, s, &v);
    show(shown, sizeof(shown), s, strlen(s));
    format_num(lo, sizeof(lo), k->type, k->min);
    format_num(hi, sizeof(hi), k->type, k->max);
    if (rc != 0 && k->type == CT_UINT)
        return fail(cx, "expected a whole number from %s to %s, got '%s'", lo, hi, shown);
    if (rc != 0)
        return fail(cx, "expected %s, got '%s'%s", forms[k->type], shown,
                    rc == 2 ? " (durations need a unit)" : "");
    if (v < k->min || v > k->max) return fail(cx, "%s is out of range %s..%s", shown, lo, hi);
    if (k->type == CT_MODE)
        *(unsigned *)field = (unsigned)v;
    else
        *(uint32_t *)field = (uint32_t)v;
    return 0;
}

/* Checks the number of items of a list against the bounds of its key. */
static int check_count(cfg_ctx_t *cx, size_t n)
{
    if (n >= cx->key->min && n <= cx->key->max) return 0;
    return fail(cx, "expected %llu to %llu items, got %zu", (unsigned long long)cx->key->min,
                (unsigned long long)cx->key->max, n);
}

/* Returns the index of the name that s matches, ignoring case, or -1. */
static int lookup(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(s, names[i]) == 0) return (int)i;
    }
    return -1;
}

int exo_config_is_loopback(const char *item)
{
    bool loopback = false;
    return check_listen(item, &loopback) == NULL && loopback;
}

/* A capability-style name: lower-case letters, digits and underscores in dot-separated parts.
 * Method names take the same form and may be 128 bytes long (sandbox/method.lua). */
static bool is_dotted_name(const char *s)
{
    bool start = true;
    if (*s == '\0' || strlen(s) > 128) return false;
    for (; *s; s++) {
        if (*s == '.') {
            if (start) return false;
            start = true;
        } else if ((*s >= 'a' && *s <= 'z') ||
                   (!start && ((*s >= '0' && *s <= '9') || *s == '_'))) {
            start = false;
        } else {
            return false;
        }
    }
    return !start;
}

/* A user, group or PAM service name: 1 to 32 of [A-Za-z0-9_.-], not starting with '-' (which
 * programs would read as an option), not only digits (which reads as a uid or gid) and not only
 * dots (".", ".." name directories, as in /etc/pam.d/..). */
static bool is_account(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n > ACCOUNT_MAX || s[0] == '-') return false;
    if (strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != n)
        return false;
    return strspn(s, "0123456789") != n && strspn(s, ".") != n;
}

/* Parses a trusted_proxies item, an IPv4 or IPv6 address with an optional "/prefix". Returns
 * NULL when it is valid, with the network in addr and its prefix length in *bits, both in the
 * IPv6 space where an IPv4 address a.b.c.d/p is ::ffff:a.b.c.d/(96 + p); or else the reason it
 * is not valid. */
static const char *check_ip(const char *item, unsigned char addr[16], unsigned *bits)
{
    static const char *const bad = "is not an IPv4 or IPv6 address, optionally with a /prefix "
                                   "length";
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    char host[64];
    const char *slash = strchr(item, '/');
    size_t hlen = slash != NULL ? (size_t)(slash - item) : strlen(item);
    unsigned max = 128, prefix = 128;
    if (hlen == 0 || hlen >= sizeof(host)) return bad;
    memcpy(host, item, hlen);
    host[hlen] = '\0';
    if (inet_pton(AF_INET, host, addr + 12) == 1) {
        memcpy(addr, mapped, sizeof(mapped));
        max = prefix = 32;
    } else if (inet_pton(AF_INET6, host, addr) != 1) {
        return bad;
    }
    if (slash != NULL) {
        size_t plen = strlen(slash + 1);
        if (plen == 0 || plen > 3 || strspn(slash + 1, "0123456789") != plen) return bad;
        prefix = (unsigned)atoi(slash + 1);
        if (prefix > max)
            return max == 32 ? "has a prefix length out of range 0..32"
                             : "has a prefix length out of range 0..128";
    }
    *bits = prefix + (128 - max);
    return NULL;
}

/* 1 if the first `bits` bits of a and b agree. */
static bool same_prefix(const unsigned char *a, const unsigned char *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0) return false;
    return rest == 0 || ((a[whole] ^ b[whole]) & (0xffu << (8 - rest)) & 0xffu) == 0;
}

int exo_config_is_trusted_proxy(const exo_config_t *c, const char *ip)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    unsigned char peer[16], net[16];
    unsigned bits = 0;
    if (c == NULL || ip == NULL) return 0;
    if (inet_pton(AF_INET, ip, peer + 12) == 1)
        memcpy(peer, mapped, sizeof(mapped));
    else if (inet_pton(AF_INET6, ip, peer) != 1)
        return 0;
    for (size_t i = 0; i < c->trusted_proxies.n; i++) {
        if (check_ip(c->trusted_proxies.items[i], net, &bits) == NULL &&
            same_prefix(peer, net, bits))
            return 1;
    }
    return 0;
}

/* Checks one item of a list of key k. Returns 0, or fails with a message naming the item. */
static int check_list_item(cfg_ctx_t *cx, const cfg_key_t *k, const char *item)
{
    char shown[CFG_SHOW_MAX];
    unsigned char addr[16];
    unsigned bits;
    bool loopback;
    const char *why = NULL;
    show(shown, sizeof(shown), item, strlen(item));
    switch (k->type) {
    case CT_PATH_LIST:
        return check_path(cx, CT_PATH, 4095, item);
    case CT_NAME_LIST:
        if (is_dotted_name(item)) return 0;
        return fail(cx, "'%s' is not a name like %s", shown,
                    strstr(k->name, "methods") != NULL ? "agent.info" : "system.read");
    case CT_ACCOUNT_LIST:
        if (is_account(item)) return 0;
        return fail(cx, "'%s' is not an account name of " ACCOUNT_RULE, shown);
    case CT_IP_LIST:
        why = check_ip(item, addr, &bits);
        break;
    case CT_ORIGIN_LIST:
        why = exo_cors_origin_check(item);
        break;
    case CT_PKG_LIST:
        if (exo_pkg_name_ok(item, strlen(item))) return 0;
        return fail(cx, "'%s' is not a package name of " EXO_PKG_NAME_RULE, shown);
    default:
        why = check_listen(item, &loopback);
        break;
    }
    return why == NULL ? 0 : fail(cx, "'%s' %s", shown, why);
}

/* Parses the raw value text of key cx->key into its field of c, replacing what was there. */
static int set_value(cfg_ctx_t *cx, exo_config_t *c, const char *s, size_t len)
{
    static const char *const truths[] = {"true", "yes", "on", "1", "false", "no", "off", "0"};
    const cfg_key_t *k = cx->key;
    void *field = (char *)c + k->offset;
    char *v = NULL, shown[CFG_SHOW_MAX];
    int rc = 0, i;
    if (is_list(k->type)) {
        exo_strlist_t l;
        if ((rc = decode_list(cx, s, len, &l)) < 0) return rc;
        rc = check_count(cx, l.n);
        for (size_t j = 0; rc == 0 && j < l.n; j++)
            rc = check_list_item(cx, k, l.items[j]);
        if (rc < 0) {
            list_free(&l);
            return rc;
        }
        list_free(field);
        *(exo_strlist_t *)field = l;
        return 0;
    }
    if ((rc = decode_scalar(cx, s, len, &v)) < 0) return rc;
    show(shown, sizeof(shown), v, strlen(v));
    switch (k->type) {
    case CT_BOOL:
        i = lookup(truths, sizeof(truths) / sizeof(truths[0]), v);
        if (i < 0)
            rc = fail(cx, "expected true or false (or yes/no, on/off, 1/0), got '%s'", shown);
        else
            *(int *)field = i < 4;
        break;
    case CT_LOGLEVEL:
        i = lookup(level_names, sizeof(level_names) / sizeof(level_names[0]), v);
        if (i < 0)
            rc = fail(cx, "expected one of debug, info, warn, error, got '%s'", shown);
        else
            *(exo_log_level_t *)field = (exo_log_level_t)i;
        break;
    case CT_PKGBACKEND:
        i = lookup(pkg_backend_names, sizeof(pkg_backend_names) / sizeof(pkg_backend_names[0]), v);
        if (i < 0)
            rc = fail(cx, "expected one of auto, apt, dnf, packagekit, none, got '%s'", shown);
        else
            *(int *)field = i;
        break;
    case CT_PATH:
    case CT_PATH_EMPTY:
    case CT_PATH_NONE:
        if ((rc = check_path(cx, k->type, k->max, v)) < 0) break;
        free(*(char **)field);
        *(char **)field = (v[0] == '\0' && k->type == CT_PATH_NONE) ? NULL : v;
        if (*(char **)field != NULL) v = NULL;
        break;
    case CT_URL: {
        exo_url_t url;
        char why[160];
        if (v[0] != '\0' && exo_url_parse(v, &url, why, sizeof(why)) < 0) {
            rc = fail(cx, "%s, got '%s'", why, shown);
            break;
        }
        free(*(char **)field);
        *(char **)field = v;
        v = NULL;
        break;
    }
    case CT_ACCOUNT:
        if (!is_account(v)) {
            rc = fail(cx, "expected an account name of " ACCOUNT_RULE ", got '%s'", shown);
            break;
        }
        free(*(char **)field);
        *(char **)field = v;
        v = NULL;
        break;
    default:
        rc = set_number(cx, field, v);
        break;
    }
    free(v);
    return rc;
}

static const cfg_key_t *find_key(const char *section, const char *name, size_t len)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if ((section == NULL || strcmp(keys[i].section, section) == 0) &&
            strlen(keys[i].name) == len && memcmp(keys[i].name, name, len) == 0)
            return &keys[i];
    }
    return NULL;
}

static const cfg_key_t *key_named(const char *section, const char *name)
{
    return find_key(section, name, strlen(name));
}

static const char *find_section(const char *name, size_t len)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strlen(keys[i].section) == len && memcmp(keys[i].section, name, len) == 0)
            return keys[i].section;
    }
    return NULL;
}

/* Handles a "[section]" line, setting *section to the table's name for it. */
static int parse_section(cfg_ctx_t *cx, const char *s, size_t len, const char **section)
{
    char shown[CFG_SHOW_MAX], known[256] = "";
    if (s[len - 1] != ']')
        return fail(cx, "a section header must end with ']', got '%s'",
                    show(shown, sizeof(shown), s, len));
    const char *name = s + 1;
    size_t n = len - 2;
    trim(&name, &n);
    if ((*section = find_section(name, n)) != NULL) return 0;
    for (size_t i = 0, k = 0; i < N_KEYS; i++) {
        if (i > 0 && strcmp(keys[i].section, keys[i - 1].section) == 0) continue;
        k = strlen(known);
        snprintf(known + k, sizeof(known) - k, "%s[%s]", i > 0 ? ", " : "", keys[i].section);
    }
    return fail(cx, "unknown section [%s]; the sections are %s",
                show(shown, sizeof(shown), name, n), known);
}

/* Handles a "key = value" line in the current section. */
static int parse_pair(cfg_ctx_t *cx, exo_config_t *c, const char *section, unsigned *seen,
                      const char *s, size_t len)
{
    char shown[CFG_SHOW_MAX];
    const char *eq = memchr(s, '=', len);
    if (eq == NULL)
        return fail(cx, "expected 'key = value', a [section] header or a comment, got '%s'",
                    show(shown, sizeof(shown), s, len));
    const char *name = s, *value = eq + 1;
    size_t nlen = (size_t)(eq - s), vlen = len - nlen - 1;
    trim(&name, &nlen);
    trim(&value, &vlen);
    const cfg_key_t *k = section ? find_key(section, name, nlen) : NULL;
    const cfg_key_t *elsewhere = find_key(NULL, name, nlen);
    show(shown, sizeof(shown), name, nlen);
    if (section == NULL && elsewhere != NULL)
        return fail(cx, "key '%s' is outside any section; put it under [%s]", shown,
                    elsewhere->section);
    if (section == NULL) return fail(cx, "key '%s' is outside any section", shown);
    if (k == NULL && elsewhere != NULL)
        return fail(cx, "unknown key '%s' in section [%s]; it belongs in [%s]", shown, section,
                    elsewhere->section);
    if (k == NULL) return fail(cx, "unknown key '%s' in section [%s]", shown, section);
    cx->key = k;
    if (seen[k - keys] != 0)
        return fail(cx, "given twice, on lines %u and %u", seen[k - keys], cx->line);
    seen[k - keys] = cx->line;
    return set_value(cx, c, value, vlen);
}

/* Parses text into c line by line, stopping at the first error. */
static int parse_text(exo_config_t *c, const char *text, size_t len, cfg_ctx_t *cx)
{
    unsigned seen[N_KEYS] = {0};
    const char *section = NULL;
    size_t pos = 0;
    /* Editors on other systems may start the file with a UTF-8 byte order mark. */
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) pos = 3;
    while (pos < len) {
        const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        int rc;
        pos += n + 1;
        cx->line++;
        cx->key = NULL;
        if (n > 0 && s[n - 1] == '\r') n--;
        if (n > CFG_MAX_LINE) return fail(cx, "line is longer than %d bytes", CFG_MAX_LINE);
        if (memchr(s, '\0', n) != NULL) return fail(cx, "line contains a NUL byte");
        trim(&s, &n);
        if (n == 0 || s[0] == '#' || s[0] == ';') continue;
        if (s[0] == '[')
            rc = parse_section(cx, s, n, &section);
        else
            rc = parse_pair(cx, c, section, seen, s, n);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Makes dst a deep copy of src, so that a parse can work on the copy and leave src untouched
 * when it fails. */
static int config_copy(exo_config_t *dst, const exo_config_t *src)
{
    *dst = *src;
    for (size_t i = 0; i < N_KEYS; i++) {
        void *field = (char *)dst + keys[i].offset;
        if (is_list(keys[i].type))
            *(exo_strlist_t *)field = (exo_strlist_t){NULL, 0};
        else if (is_string(keys[i].type))
            *(char **)field = NULL;
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        const void *from = (const char *)src + keys[i].offset;
        void *to = (char *)dst + keys[i].offset;
        int rc = 0;
        if (is_list(keys[i].type)) {
            const exo_strlist_t *l = from;
            rc = exo_config_set_list(to, (const char *const *)l->items, l->n);
        } else if (is_string(keys[i].type)) {
            rc = exo_config_set_string(to, *(char *const *)from);
        }
        if (rc < 0) {
            exo_config_free(dst);
            return rc;
        }
    }
    return 0;
}

int exo_config_defaults(exo_config_t *c)
{
    cfg_ctx_t cx = {"built-in default", 0, NULL, NULL, 0};
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < N_KEYS; i++) {
        cx.key = &keys[i];
        int rc = set_value(&cx, c, keys[i].def, strlen(keys[i].def));
        /* Only memory can fail here: the unit tests parse every default. */
        if (rc < 0) {
            exo_config_free(c);
            return rc;
        }
    }
    return 0;
}

int exo_config_parse(exo_config_t *c, const char *text, size_t len, const char *name, char *err,
                     size_t errlen)
{
    cfg_ctx_t cx = {name, 0, NULL, err, errlen};
    exo_config_t tmp;
    if (config_copy(&tmp, c) < 0) return fail_nomem(&cx);
    int rc = parse_text(&tmp, text, len, &cx);
    if (rc < 0) {
        exo_config_free(&tmp);
        return rc;
    }
    exo_config_free(c);
    *c = tmp;
    return 0;
}

int exo_config_load(exo_config_t *c, const char *path, char *err, size_t errlen)
{
    cfg_ctx_t cx = {NULL, 0, NULL, err, errlen};
    exo_buf_t b = EXO_BUF_INIT;
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    for (;;) {
        /* A read past the limit proves the file too large without reading all of it. */
        if ((rc = exo_buf_reserve(&b, 65536)) < 0) goto out;
        ssize_t r = read(fd, b.data + b.len, b.cap - b.len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0) break;
        b.len += (size_t)r;
        if (b.len > CFG_MAX_FILE) {
            rc = fail(&cx, "%s: larger than %d bytes; is this the configuration file?", path,
                      CFG_MAX_FILE);
            goto out;
        }
    }
    rc = exo_config_parse(c, b.data ? b.data : "", b.len, path, err, errlen);
out:
    if (rc < 0 && rc != -EINVAL && err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
    if (fd >= 0) close(fd);
    exo_buf_free(&b);
    return rc;
}

int exo_config_validate(const exo_config_t *c, char *err, size_t errlen)
{
    cfg_ctx_t cx = {NULL, 0, NULL, err, errlen};
    char shown[CFG_SHOW_MAX];
    const char *exposed = NULL;
    /* Lists set from the command line bypass the parser, so their sizes are checked again. */
    for (size_t i = 0; i < N_KEYS; i++) {
        const exo_strlist_t *l = (const void *)((const char *)c + keys[i].offset);
        cx.key = &keys[i];
        if (is_list(keys[i].type) && check_count(&cx, l->n) < 0) return -EINVAL;
    }
    cx.key = key_named("server", "listen");
    for (size_t i = 0; i < c->listen.n; i++) {
        const char *item = c->listen.items[i];
        bool loopback = false;
        const char *why = check_listen(item, &loopback);
        show(shown, sizeof(shown), item, strlen(item));
        if (why != NULL) return fail(&cx, "'%s' %s", shown, why);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->listen.items[j], item) == 0)
                return fail(&cx, "'%s' is listed twice", shown);
        }
        if (!loopback && exposed == NULL) exposed = item;
    }
    if (c->listen.n == 0 && (c->unix_socket == NULL || c->unix_socket[0] == '\0'))
        return fail(&cx, "is empty and unix_socket is disabled, so there is nowhere to listen");
    if (!c->tls && !c->allow_plain_http && exposed != NULL) {
        cx.key = key_named("server", "tls");
        return fail(&cx,
                    "false serves plain HTTP, but listen has '%s', which is not a loopback "
                    "address; listen on loopback only or set allow_plain_http = true",
                    show(shown, sizeof(shown), exposed, strlen(exposed)));
    }
    if ((c->tls_certificate == NULL) != (c->tls_private_key == NULL)) {
        bool cert = c->tls_certificate != NULL;
        cx.key = key_named("server", cert ? "tls_private_key" : "tls_certificate");
        return fail(&cx, "must be set when %s is, since each needs the other",
                    cert ? "tls_certificate" : "tls_private_key");
    }
    /* Account names, proxies, origins and package names may also come from outside the parser; a
     * NULL name is "". */
    for (size_t i = 0; i < N_KEYS; i++) {
        const void *field = (const char *)c + keys[i].offset;
        cx.key = &keys[i];
        if (keys[i].type == CT_ACCOUNT && !is_account(*(char *const *)field)) {
            const char *v = *(char *const *)field != NULL ? *(char *const *)field : "";
            return fail(&cx, "expected an account name of " ACCOUNT_RULE ", got '%s'",
                        show(shown, sizeof(shown), v, strlen(v)));
        }
        if (keys[i].type != CT_ACCOUNT_LIST && keys[i].type != CT_IP_LIST &&
            keys[i].type != CT_ORIGIN_LIST && keys[i].type != CT_PKG_LIST)
            continue;
        const exo_strlist_t *l = field;
        for (size_t j = 0; j < l->n; j++) {
            if (check_list_item(&cx, &keys[i], l->items[j]) < 0) return -EINVAL;
        }
    }
    /* A method has one permission level, so it may be overridden to one level only. */
    static const char *const levels[] = {"public_methods", "user_methods", "admin_methods"};
    const exo_strlist_t *overrides[] = {&c->public_methods, &c->user_methods, &c->admin_methods};
    for (size_t b = 1; b < 3; b++) {
        for (size_t a = 0; a < b; a++) {
            for (size_t i = 0; i < overrides[b]->n; i++) {
                const char *m = overrides[b]->items[i];
                for (size_t j = 0; j < overrides[a]->n; j++) {
                    if (strcmp(m, overrides[a]->items[j]) != 0) continue;
                    cx.key = key_named("auth", levels[b]);
                    return fail(&cx, "'%s' is also in %s", show(shown, sizeof(shown), m, strlen(m)),
                                levels[a]);
                }
            }
        }
    }
    if (c->login_backoff_max_ms < c->login_backoff_ms) {
        char lo[32], hi[32];
        format_num(lo, sizeof(lo), CT_DURATION, c->login_backoff_max_ms);
        format_num(hi, sizeof(hi), CT_DURATION, c->login_backoff_ms);
        cx.key = key_named("auth", "login_backoff_max");
        return fail(&cx, "%s is less than login_backoff (%s), which it caps", lo, hi);
    }
    return 0;
}

int exo_config_set_list(exo_strlist_t *l, const char *const *items, size_t n)
{
    exo_strlist_t nl = {NULL, 0};
    if (n > 0 && (nl.items = calloc(n, sizeof(*nl.items))) == NULL) return -ENOMEM;
    for (; nl.n < n; nl.n++) {
        if ((nl.items[nl.n] = strdup(items[nl.n])) == NULL) {
            list_free(&nl);
            return -ENOMEM;
        }
    }
    list_free(l);
    *l = nl;
    return 0;
}

int exo_config_set_string(char **field, const char *value)
{
    char *copy = NULL;
    if (value != NULL && (copy = strdup(value)) == NULL) return -ENOMEM;
    free(*field);
    *field = copy;
    return 0;
}

void exo_config_free(exo_config_t *c)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        void *field = (char *)c + keys[i].offset;
        if (is_list(keys[i].type))
            list_free(field);
        else if (is_string(keys[i].type))
            free(*(char **)field);
    }
    memset(c, 0, sizeof(*c));
}

const char *exo_log_level_name(exo_log_level_t l)
{
    if ((unsigned)l < sizeof(level_names) / sizeof(level_names[0])) return level_names[l];
    return "unknown";
}

/* Writes a string in double quotes, escaping what the parser unescapes. */
static void put_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (; s != NULL && *s != '\0'; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

void exo_config_dump(const exo_config_t *c, FILE *out)
{
    char num[32];
    fputs("# Effective configuration of exosphere-guest-agent (docs/configuration.md).\n", out);
    for (size_t i = 0; i < N_KEYS; i++) {
        const cfg_key_t *k = &keys[i];
        const void *field = (const char *)c + k->offset;
        if (i == 0 || strcmp(k->section, keys[i - 1].section) != 0)
            fprintf(out, "\n[%s]\n", k->section);
        fprintf(out, "# %s\n%s = ", k->doc, k->name);
        if (is_list(k->type)) {
            const exo_strlist_t *l = field;
            for (size_t j = 0; j < l->n; j++) {
                fputs(j > 0 ? ", " : "", out);
                put_quoted(out, l->items[j]);
            }
        } else if (is_string(k->type)) {
            put_quoted(out, *(char *const *)field);
        } else if (k->type == CT_BOOL) {
            fputs(*(const int *)field ? "true" : "false", out);
        } else if (k->type == CT_LOGLEVEL) {
            fputs(exo_log_level_name(*(const exo_log_level_t *)field), out);
        } else if (k->type == CT_PKGBACKEND) {
            fputs(pkg_backend_names[(unsigned)*(const int *)field %
                                    (sizeof(pkg_backend_names) / sizeof(pkg_backend_names[0]))],
                  out);
        } else {
            uint64_t v = k->type == CT_MODE ? *(const unsigned *)field : *(const uint32_t *)field;
            format_num(num, sizeof(num), k->type, v);
            fputs(num, out);
        }
        fputc('\n', out);
    }
}
