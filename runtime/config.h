/* The agent's configuration: the parsed form of agent.conf, its defaults, its checks and its
 * printout. The file format and every key are described in docs/configuration.md; the key
 * table in config.c is the single source of names, types, defaults and ranges.
 *
 * Every function that can fail returns 0 or a negative errno and, when it takes `err`, leaves
 * a one-line message there that names the file, the line and the key. */
#ifndef EXO_CONFIG_H
#define EXO_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The build sets this from the install prefix; the fallback matches the Debian and RPM
 * packages so that a bare compile of the sources still finds the shipped methods. */
#ifndef EXO_DEFAULT_API_VERSIONS_DIR
#define EXO_DEFAULT_API_VERSIONS_DIR "/usr/share/exosphere-guest-agent/api-versions"
#endif
#ifndef EXO_DEFAULT_METHODS_DIR
#define EXO_DEFAULT_METHODS_DIR "/usr/share/exosphere-guest-agent/methods"
#endif

typedef enum { EXO_LOG_DEBUG = 0, EXO_LOG_INFO, EXO_LOG_WARN, EXO_LOG_ERROR } exo_log_level_t;
/* [packages] backend: found on the host (auto), named, or none (package methods disabled). */
typedef enum {
    EXO_PKG_CHOICE_AUTO = 0,
    EXO_PKG_CHOICE_APT,
    EXO_PKG_CHOICE_DNF,
    EXO_PKG_CHOICE_PACKAGEKIT,
    EXO_PKG_CHOICE_NONE
} exo_pkg_choice_t;

/* A list of owned, NUL-terminated strings; `items` is NULL when n is 0. */
typedef struct exo_strlist_s {
    char **items;
    size_t n;
} exo_strlist_t;

typedef struct exo_config_s {
    /* [server] */
    exo_strlist_t listen;       /* "host:port" items; IPv6 as "[::1]:8443" */
    char *unix_socket;          /* absolute path; the empty string disables the socket */
    unsigned unix_socket_mode;  /* permission bits of the socket, 0..0777 */
    int tls;                    /* 1: HTTPS; 0: plain HTTP */
    int allow_plain_http;       /* 1: plain HTTP may be served on non-loopback addresses */
    char *tls_certificate;      /* absolute path, or NULL to use a self-signed one */
    char *tls_private_key;      /* absolute path; set if and only if tls_certificate is */
    char *state_dir;            /* absolute path of keys, certificate and state */
    char *user;                 /* account the unprivileged worker process runs as */
    uint32_t max_connections;   /* open connections at most */
    uint32_t max_header_size;   /* bytes of request line and headers */
    uint32_t max_body_size;     /* bytes of one request body */
    uint32_t header_timeout_ms; /* time to receive the headers of a request */
    uint32_t body_timeout_ms;   /* time to receive the body of a request */
    uint32_t idle_timeout_ms;   /* keep-alive idle time before the connection closes */
    uint32_t max_pipelined;     /* requests parsed ahead on one connection */
    uint32_t max_batch;         /* entries in one JSON-RPC batch */
    uint32_t call_timeout_ms;   /* deadline of one method call */
    uint32_t drain_timeout_ms;  /* how long SIGTERM waits for in-flight calls */
    exo_strlist_t cors_origins; /* exact origins answered with CORS headers; empty: none */
    uint32_t cors_max_age_ms;   /* duration: Access-Control-Max-Age of preflight answers */
    /* [methods] */
    exo_strlist_t method_dirs;           /* absolute paths of method directories */
    char *api_versions_dir;              /* the API version files; "" for none */
    uint32_t cpu_sample_interval_ms;     /* period of /proc/stat sampling for CPU usage */
    char *operator_dir;                  /* absolute path, "" disables; operators' methods */
    int allow_override;                  /* bool: an operator method may replace a shipped one */
    exo_strlist_t operator_capabilities; /* capability names granted to operator methods */
    uint32_t memory_limit;               /* size: ceiling of the method VM's memory */
    uint32_t call_memory_limit;          /* size: memory one call may add to the VM */
    uint32_t call_instruction_limit;     /* Lua VM instructions one call may run */
    uint32_t preempt_slice_ms;           /* duration: CPU-bound calls yield the loop this often */
    /* [auth] */
    char *pam_service;             /* PAM service name used for logins */
    exo_strlist_t allow_users;     /* account names; empty: no user restriction */
    exo_strlist_t allow_groups;    /* group names; empty: no group restriction */
    exo_strlist_t admin_groups;    /* members of these groups get the admin permission level */
    int allow_root_login;          /* bool: root may log in */
    uint32_t token_lifetime_ms;    /* duration: a login token is valid this long */
    exo_strlist_t public_methods;  /* method names overridden to the public permission level */
    exo_strlist_t user_methods;    /* method names overridden to the user permission level */
    exo_strlist_t admin_methods;   /* method names overridden to the admin permission level */
    uint32_t login_backoff_ms;     /* delay after the first failed login of a name; 0: none */
    uint32_t login_backoff_max_ms; /* ceiling of the doubling login delay */
    uint32_t max_logins_in_flight; /* PAM checks running at once; more are refused as busy */
    uint32_t pam_timeout_ms;       /* a PAM check running longer is killed and the login fails */
    exo_strlist_t trusted_proxies; /* addresses or CIDRs whose X-Forwarded-For is believed */
    /* [console] */
    int console_status_line; /* bool: write the status line at start */
    char *console_device;    /* absolute path, or NULL to choose by distribution family */
    /* [system_load] */
    uint32_t load_interval_ms; /* duration: a load sample is taken at each multiple of this */
    uint32_t load_history_ms;  /* duration: how much load history is kept */
    int load_console_line;     /* bool: write each load sample to the console */
    /* [metadata] */
    char *metadata_url;                  /* http:// URL of the metadata document; "" disables */
    uint32_t metadata_timeout_ms;        /* duration: one fetch at most */
    uint32_t metadata_cache_ms;          /* duration: a fetched document is reused this long */
    uint32_t metadata_negative_cache_ms; /* duration: a failure is remembered this long */
    uint32_t metadata_max_bytes;         /* size: the document at most */
    /* [mounts] */
    char *mounts_volume_prefix;       /* absolute path: volumes mount directly under it */
    char *mounts_share_prefix;        /* absolute path: CephFS shares mount directly under it */
    char *mounts_owner;               /* user owning the root directory of each mount */
    uint32_t mounts_max_in_flight;    /* mount operations running at once; more are busy */
    uint32_t mounts_mount_timeout_ms; /* duration: probe, mount and unmount deadline */
    uint32_t mounts_mkfs_timeout_ms;  /* duration: mkfs deadline */
    char *mounts_secret_dir;          /* absolute path: CephFS secrets, root 0700 */
    /* [packages] */
    int packages_backend;              /* EXO_PKG_CHOICE_*: auto, apt, dnf, packagekit, none */
    exo_strlist_t packages_allow;      /* names packages.update may name; empty: none */
    int packages_allow_all;            /* bool: packages.update {all = true} is allowed */
    int packages_self_upgrade;         /* bool: self.upgrade is allowed */
    uint32_t packages_lock_timeout_ms; /* duration: apt waits this long for the dpkg locks */
    uint32_t packages_timeout_ms;      /* duration: a package operation's deadline */
    uint32_t packages_keep_ms;         /* duration: an ended operation's files are kept */
    /* [websocket] */
    uint32_t ws_ping_interval_ms; /* duration: the agent pings each session this often */
    uint32_t ws_pong_timeout_ms;  /* duration: a ping unanswered this long closes the session */
    uint32_t ws_max_message;      /* size: one received message, all fragments */
    uint32_t ws_max_queued;       /* size: unsent outbound bytes of one session */
    uint32_t ws_max_sessions;     /* open sessions at most */
    /* [jobs] */
    uint32_t jobs_max_duration_ms; /* duration: a job's deadline */
    uint32_t jobs_keep_ms;         /* duration: finished records and idempotency keys are kept */
    uint32_t jobs_max_records;     /* records kept at most (worker and monitor) */
    /* [log] */
    exo_log_level_t log_level; /* least severe level that is logged */
} exo_config_t;

/* Fills c, whose previous contents are ignored, with the documented defaults. Returns 0 or
 * -ENOMEM; on failure c holds nothing that needs freeing. */
int exo_config_defaults(exo_config_t *c);

/* Parses `len` bytes of configuration text, named `name` in messages, on top of what c holds:
 * keys the text sets replace their values, the others keep theirs. Returns 0, -EINVAL with a
 * message such as "agent.conf:12: unknown key 'foo' in section [server]", or -ENOMEM. On
 * failure c is left exactly as it was. */
int exo_config_parse(exo_config_t *c, const char *text, size_t len, const char *name, char *err,
                     size_t errlen);

/* Reads the file at `path` and parses it as exo_config_parse() does, naming the file in
 * messages ("/etc/x.conf: cannot read: No such file or directory"). Returns 0 or a negative
 * errno; on failure c is left exactly as it was. */
int exo_config_load(exo_config_t *c, const char *path, char *err, size_t errlen);

/* Checks what single values cannot: that every listen item is host:port with a numeric
 * address or localhost, that there is somewhere to listen, that a certificate comes with its
 * key, that plain HTTP is served off loopback only when allow_plain_http says so, that no
 * method is in more than one of public_methods, user_methods and admin_methods, and that
 * login_backoff_max is not below login_backoff. Account names and the items of
 * trusted_proxies and cors_origins, which the command line could set without the parser, are
 * checked again. Returns 0 or
 * -EINVAL with a message naming the key, such as "[server] tls_private_key: ...". */
int exo_config_validate(const exo_config_t *c, char *err, size_t errlen);

/* Replaces the list l with copies of the n given items. Returns 0 or -ENOMEM; on failure l
 * is unchanged. */
int exo_config_set_list(exo_strlist_t *l, const char *const *items, size_t n);

/* Replaces *field with a copy of value, or with NULL when value is NULL. Returns 0 or
 * -ENOMEM; on failure *field is unchanged. */
int exo_config_set_string(char **field, const char *value);

/* Frees everything c owns and leaves it zeroed; freeing twice is harmless. */
void exo_config_free(exo_config_t *c);
/* 1 if item is a valid listen address on loopback (127.0.0.0/8, ::1, localhost), else 0. */
int exo_config_is_loopback(const char *item);
/* 1 if the numeric address `ip` (IPv4 or IPv6 text, as libuv prints peers) matches one of
 * the trusted_proxies items (an address or CIDR), else 0. IPv4-mapped IPv6 peers
 * ("::ffff:10.0.0.1") match IPv4 items and mapped items match IPv4 peers; host bits past an
 * item's prefix are ignored; invalid items, a NULL c or ip, and anything but a bare numeric
 * address (a port, brackets, a zone, a prefix) match nothing. */
int exo_config_is_trusted_proxy(const exo_config_t *c, const char *ip);

/* Returns "debug", "info", "warn" or "error", or "unknown" for any other value. */
const char *exo_log_level_name(exo_log_level_t l);

/* Writes c in the file format, every key with a one-line comment, in the order of the key
 * table, so that parsing the output gives c back. */
void exo_config_dump(const exo_config_t *c, FILE *out);

#endif
