/* exosphere-guest-agent: the command line. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>

#include "buf.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "lvm.h"
#include "auth.h"
#include "monitor.h"
#include "server.h"

#define DEV_LISTEN "127.0.0.1:8080"

static const char usage_main[] =
    "Usage: exosphere-guest-agent COMMAND [OPTIONS]\n"
    "\n"
    "The Exosphere Guest Agent: JSON-RPC 2.0 over HTTPS for Exosphere.\n"
    "\n"
    "Commands:\n"
    "  serve     run the agent\n"
    "  call      call a method over the local Unix socket\n"
    "  openrpc   print the OpenRPC document of the installed methods\n"
    "  check     check method files before installing them\n"
    "  version   print the version\n"
    "\n"
    "Run 'exosphere-guest-agent COMMAND --help' for a command's options.\n";

static const char usage_serve[] =
    "Usage: exosphere-guest-agent serve [--config FILE] [--dev] [--methods DIR]...\n"
    "                                   [--print-config]\n"
    "\n"
    "Runs the agent in the foreground until SIGTERM or SIGINT, which let calls in flight\n"
    "finish first. SIGHUP reloads the methods.\n"
    "\n"
    "  --config FILE    configuration file (default " EXO_DEFAULT_CONFIG ",\n"
    "                   used when it exists)\n"
    "  --dev            development mode: plain HTTP on loopback only (the configured\n"
    "                   addresses if all are loopback, else " DEV_LISTEN "), tracebacks in\n"
    "                   error data, results checked against their schemas, methods\n"
    "                   reloaded when a method file changes\n"
    "  --methods DIR    load methods from DIR instead of the configured method_dirs\n"
    "                   (repeatable)\n"
    "  --print-config   print the effective configuration and exit\n";

static const char usage_call[] =
    "Usage: exosphere-guest-agent call METHOD [PARAMS_JSON] [--socket PATH] [--config FILE]\n"
    "\n"
    "Calls METHOD over the agent's Unix socket, where the caller's uid identifies it, and\n"
    "prints the result as JSON. PARAMS_JSON is a JSON object or array.\n"
    "Exit status: 0 success, 1 the method returned an error (printed on stderr), 2 usage or\n"
    "connection error.\n"
    "\n"
    "  --socket PATH    the agent's socket (default: unix_socket from the configuration)\n"
    "  --config FILE    configuration file to read unix_socket from\n";

static const char usage_openrpc[] =
    "Usage: exosphere-guest-agent openrpc [--config FILE] [--methods DIR]... [--api-versions DIR]\n"
    "                                     [--version VERSION]\n"
    "\n"
    "Prints the OpenRPC document of the methods the agent would load, as a client of API\n"
    "version VERSION (YYYY-MM-DD; default: the current one) sees them.\n"
    "\n"
    "  --methods DIR        load methods from DIR instead of the configured [methods] dirs\n"
    "  --api-versions DIR   the API version files (default: [methods] api_versions_dir, or\n"
    "                       the api-versions directory beside the first --methods DIR)\n"
    "  --version VERSION    the API version; an unknown one fails, listing those served\n";

static const char usage_check[] =
    "Usage: exosphere-guest-agent check [--config FILE] FILE...\n"
    "\n"
    "Checks method files as the agent would load them: Lua syntax, the declaration, the\n"
    "schemas, and every example against the method's schemas. Prints one line per good file\n"
    "and file:line: message for each problem. Exit status: 0 all good, 1 a file has problems,\n"
    "2 usage error.\n"
    "\n"
    "  --config FILE    also check the files as operator methods under this configuration:\n"
    "                   capabilities that [methods] operator_capabilities does not grant,\n"
    "                   and names already taken by the methods in [methods] dirs (unless\n"
    "                   allow_override = true)\n";

static int want_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
    return 0;
}

typedef struct opts_s {
    const char *config;
    const char *socket;
    int dev, print_config;
    const char *methods[16];
    size_t n_methods;
    const char *api_versions; /* --api-versions DIR */
    const char *version;      /* openrpc --version V */
    const char *args[4];
    size_t n_args;
} opts_t;

static int parse_opts(int argc, char **argv, opts_t *o, const char *usage)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0 && i + 1 < argc) {
            o->config = argv[++i];
        } else if (strcmp(a, "--socket") == 0 && i + 1 < argc) {
            o->socket = argv[++i];
        } else if (strcmp(a, "--methods") == 0 && i + 1 < argc) {
            if (o->n_methods == sizeof(o->methods) / sizeof(o->methods[0])) {
                fprintf(stderr, "exosphere-guest-agent: too many --methods\n");
                return -1;
            }
            o->methods[o->n_methods++] = argv[++i];
        } else if (strcmp(a, "--api-versions") == 0 && i + 1 < argc) {
            o->api_versions = argv[++i];
        } else if (strcmp(a, "--version") == 0 && i + 1 < argc && usage == usage_openrpc) {
            o->version = argv[++i];
        } else if (strcmp(a, "--dev") == 0) {
            o->dev = 1;
        } else if (strcmp(a, "--print-config") == 0) {
            o->print_config = 1;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "exosphere-guest-agent: unknown or incomplete option '%s'\n\n%s", a,
                    usage);
            return -1;
        } else if (o->n_args < sizeof(o->args) / sizeof(o->args[0])) {
            o->args[o->n_args++] = a;
        } else {
            fprintf(stderr, "exosphere-guest-agent: unexpected argument '%s'\n\n%s", a, usage);
            return -1;
        }
    }
    return 0;
}

/* --api-versions DIR, or with --methods DIR alone the api-versions directory beside it when
 * there is one (the layout of the source tree and of the installed packages alike). */
static int set_api_versions_dir(exo_config_t *cfg, const opts_t *o)
{
    char beside[4096];
    const char *dir = o->api_versions;
    if (dir == NULL && o->n_methods > 0) {
        struct stat st;
        int n = snprintf(beside, sizeof(beside), "%s/../api-versions", o->methods[0]);
        if (n > 0 && (size_t)n < sizeof(beside) && stat(beside, &st) == 0 && S_ISDIR(st.st_mode))
            dir = beside;
    }
    if (dir == NULL) return 0;
    char *copy = strdup(dir);
    if (copy == NULL) {
        fprintf(stderr, "exosphere-guest-agent: out of memory\n");
        return -1;
    }
    free(cfg->api_versions_dir);
    cfg->api_versions_dir = copy;
    return 0;
}

/* Defaults, then the file (the given one, or the default one when it exists), then the
 * command line. */
static int load_config(exo_config_t *cfg, const opts_t *o)
{
    char err[1024];
    if (exo_config_defaults(cfg) < 0) {
        fprintf(stderr, "exosphere-guest-agent: out of memory\n");
        return -1;
    }
    const char *path = o->config;
    if (path == NULL && access(EXO_DEFAULT_CONFIG, F_OK) == 0) path = EXO_DEFAULT_CONFIG;
    if (path && exo_config_load(cfg, path, err, sizeof(err)) < 0) {
        fprintf(stderr, "exosphere-guest-agent: %s\n", err);
        return -1;
    }
    if (o->n_methods > 0 && exo_config_set_list(&cfg->method_dirs, o->methods, o->n_methods) < 0)
        return -1;
    if (set_api_versions_dir(cfg, o) < 0) return -1;
    if (o->dev) {
        /* Development mode never faces the network: plain HTTP, on the configured addresses
         * if they are all loopback ones, else on DEV_LISTEN. */
        int all_loopback = cfg->listen.n > 0;
        for (size_t i = 0; i < cfg->listen.n; i++)
            all_loopback = all_loopback && exo_config_is_loopback(cfg->listen.items[i]);
        const char *listen[] = {DEV_LISTEN};
        if (!all_loopback && exo_config_set_list(&cfg->listen, listen, 1) < 0) return -1;
        cfg->tls = 0;
        if (cfg->unix_socket &&
            strcmp(cfg->unix_socket, "/run/exosphere-guest-agent/agent.sock") == 0 &&
            access("/run/exosphere-guest-agent", W_OK) != 0)
            exo_config_set_string(&cfg->unix_socket, "");
    }
    if (exo_config_validate(cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "exosphere-guest-agent: %s\n", err);
        return -1;
    }
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    if (want_help(argc, argv)) {
        fputs(usage_serve, stdout);
        return 0;
    }
    opts_t o = {0};
    if (parse_opts(argc, argv, &o, usage_serve) < 0 || o.n_args > 0) {
        if (o.n_args > 0) fprintf(stderr, "exosphere-guest-agent: serve takes no arguments\n");
        return 2;
    }
    exo_config_t cfg;
    if (load_config(&cfg, &o) < 0) {
        exo_config_free(&cfg);
        return 2;
    }
    if (o.print_config) {
        exo_config_dump(&cfg, stdout);
        exo_config_free(&cfg);
        return 0;
    }
    exo_log_init(o.dev ? EXO_LOG_DEBUG : cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    int code;
    if (geteuid() == 0) {
        code = exo_monitor_run(&cfg, o.dev);
    } else {
        /* Development: one unprivileged process, and no privileged operation works. */
        exo_prepared_t prep;
        char err[1024];
        exo_warn("not started as root: running without the monitor; logins and other privileged "
                 "operations are refused");
        if (exo_prepare(&cfg, &prep, err, sizeof(err)) < 0) {
            exo_error("cannot start: %s", err);
            code = 1;
        } else {
            exo_auth_init(NULL, NULL);
            code = exo_worker_run(&cfg, o.dev, &prep, -1);
            exo_prepared_close(&prep);
        }
    }
    exo_config_free(&cfg);
    return code;
}

/* Sends one HTTP request over the Unix socket and reads the whole answer (the agent closes
 * the connection after it: the request says Connection: close). */
static int unix_post(const char *path, const char *body, size_t len, exo_buf_t *resp)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) return -ENAMETOOLONG;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    exo_buf_t req = EXO_BUF_INIT;
    exo_buf_printf(&req,
                   "POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                   len);
    exo_buf_append(&req, body, len);
    size_t off = 0;
    while (off < req.len) {
        ssize_t n = write(fd, req.data + off, req.len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = errno;
            exo_buf_free(&req);
            close(fd);
            return -e;
        }
        off += (size_t)n;
    }
    exo_buf_free(&req);
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (exo_buf_append(resp, buf, (size_t)n) < 0) {
            close(fd);
            return -ENOMEM;
        }
    }
    close(fd);
    return 0;
}

static int cmd_call(int argc, char **argv)
{
    if (want_help(argc, argv)) {
        fputs(usage_call, stdout);
        return 0;
    }
    opts_t o = {0};
    if (parse_opts(argc, argv, &o, usage_call) < 0) return 2;
    if (o.n_args < 1 || o.n_args > 2) {
        fprintf(stderr, "exosphere-guest-agent: call needs METHOD and optional PARAMS_JSON\n\n%s",
                usage_call);
        return 2;
    }
    exo_config_t cfg;
    const char *sock = o.socket;
    if (sock == NULL) {
        if (load_config(&cfg, &o) < 0) {
            exo_config_free(&cfg);
            return 2;
        }
    } else {
        exo_config_defaults(&cfg);
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s", sock ? sock : cfg.unix_socket);
    exo_config_free(&cfg);

    /* The request is built with the codec, so the method name and params are encoded and
     * checked exactly as the agent will read them. */
    lua_State *L = luaL_newstate();
    exo_buf_t body = EXO_BUF_INIT, resp = EXO_BUF_INIT;
    exo_json_err_t jerr;
    int code = 2;
    lua_createtable(L, 0, 4);
    lua_pushliteral(L, "2.0");
    lua_setfield(L, -2, "jsonrpc");
    lua_pushinteger(L, 1);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, o.args[0]);
    lua_setfield(L, -2, "method");
    if (o.n_args == 2) {
        if (exo_json_decode(L, o.args[1], strlen(o.args[1]), &jerr) < 0) {
            fprintf(stderr, "exosphere-guest-agent: PARAMS_JSON is not JSON: %s at byte %zu\n",
                    jerr.msg, jerr.offset);
            goto out;
        }
        if (!lua_istable(L, -1)) {
            fprintf(stderr, "exosphere-guest-agent: PARAMS_JSON must be an object or array\n");
            goto out;
        }
        lua_setfield(L, -2, "params");
    }
    if (exo_json_encode(L, -1, &body, &jerr) < 0) {
        fprintf(stderr, "exosphere-guest-agent: %s\n", jerr.msg);
        goto out;
    }
    int rc = unix_post(path, body.data, body.len, &resp);
    if (rc < 0) {
        fprintf(stderr, "exosphere-guest-agent: cannot reach the agent at %s: %s\n", path,
                strerror(-rc));
        goto out;
    }
    const char *sep = resp.len ? memmem(resp.data, resp.len, "\r\n\r\n", 4) : NULL;
    if (sep == NULL || resp.len < 12 || strncmp(resp.data + 9, "200", 3) != 0) {
        fprintf(stderr, "exosphere-guest-agent: unexpected answer: %.*s\n",
                (int)(sep ? sep - resp.data : (ptrdiff_t)resp.len), resp.data ? resp.data : "");
        goto out;
    }
    const char *json = sep + 4;
    size_t jlen = resp.len - (size_t)(json - resp.data);
    const char *val;
    size_t vlen;
    if (exo_json_object_member(json, jlen, "result", &val, &vlen)) {
        printf("%.*s\n", (int)vlen, val);
        code = 0;
    } else if (exo_json_object_member(json, jlen, "error", &val, &vlen)) {
        fprintf(stderr, "%.*s\n", (int)vlen, val);
        code = 1;
    } else {
        fprintf(stderr, "exosphere-guest-agent: unexpected answer: %.*s\n", (int)jlen, json);
    }
out:
    exo_buf_free(&body);
    exo_buf_free(&resp);
    lua_close(L);
    return code;
}

static int cmd_openrpc(int argc, char **argv)
{
    if (want_help(argc, argv)) {
        fputs(usage_openrpc, stdout);
        return 0;
    }
    opts_t o = {0};
    if (parse_opts(argc, argv, &o, usage_openrpc) < 0 || o.n_args > 0) return 2;
    exo_config_t cfg;
    if (load_config(&cfg, &o) < 0) {
        exo_config_free(&cfg);
        return 2;
    }
    exo_log_init(EXO_LOG_WARN);
    uv_loop_t *loop = uv_default_loop();
    exo_runtime_info_t rt = {.loop = loop, .config = &cfg};
    exo_lvm_t *vm;
    char err[1024];
    int code = 0;
    if (exo_lvm_new(&rt, &vm, err, sizeof(err)) < 0) {
        fprintf(stderr, "exosphere-guest-agent: %s\n", err);
        code = 1;
    } else {
        size_t len;
        const char *doc = exo_lvm_openrpc(vm, o.version, &len, err, sizeof(err));
        if (doc == NULL) {
            fprintf(stderr, "exosphere-guest-agent: %s\n", err);
            code = o.version ? 2 : 1;
        } else {
            fwrite(doc, 1, len, stdout);
            fputc('\n', stdout);
        }
        exo_lvm_release(vm);
    }
    uv_loop_close(loop);
    exo_config_free(&cfg);
    return code;
}

static int cmd_check(int argc, char **argv)
{
    if (want_help(argc, argv)) {
        fputs(usage_check, stdout);
        return 0;
    }
    const char *config = NULL;
    if (argc >= 2 && strcmp(argv[0], "--config") == 0) {
        config = argv[1];
        argc -= 2;
        argv += 2;
    }
    if (argc < 1) {
        fprintf(stderr, "exosphere-guest-agent: check needs at least one FILE\n\n%s", usage_check);
        return 2;
    }
    for (int i = 0; i < argc; i++) {
        if (argv[i][0] == '-') {
            fprintf(stderr, "exosphere-guest-agent: unknown option '%s'\n\n%s", argv[i],
                    usage_check);
            return 2;
        }
    }
    exo_config_t cfg;
    char err[1024];
    if (exo_config_defaults(&cfg) < 0) return 2;
    if (config && exo_config_load(&cfg, config, err, sizeof(err)) < 0) {
        fprintf(stderr, "exosphere-guest-agent: %s\n", err);
        exo_config_free(&cfg);
        return 2;
    }
    exo_log_init(EXO_LOG_ERROR);
    uv_loop_t *loop = uv_default_loop();
    exo_runtime_info_t rt = {.loop = loop, .config = &cfg};
    int failed = exo_lvm_check_files(&rt, argv, argc, config != NULL, stdout);
    uv_loop_close(loop);
    exo_config_free(&cfg);
    return failed == 0 ? 0 : failed > 0 ? 1 : 2;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage_main, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "call") == 0) return cmd_call(argc - 2, argv + 2);
    if (strcmp(cmd, "openrpc") == 0) return cmd_openrpc(argc - 2, argv + 2);
    if (strcmp(cmd, "check") == 0) return cmd_check(argc - 2, argv + 2);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        if (want_help(argc - 2, argv + 2)) {
            puts("Usage: exosphere-guest-agent version\n\nPrints the version and the Lua API "
                 "level.");
            return 0;
        }
        printf("exosphere-guest-agent %s (Lua API level %d)\n", EXO_VERSION, EXO_LUA_API_LEVEL);
        return 0;
    }
    fprintf(stderr, "exosphere-guest-agent: unknown command '%s'\n\n%s", cmd, usage_main);
    return 2;
}
