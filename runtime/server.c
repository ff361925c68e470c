/* Listeners, signals, the CPU sampler, reload and drain. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "events.h"
#include "jobs.h"
#include "load_sampler.h"
#include "log.h"
#include "metadata.h"
#include "mountwatch.h"
#include "monclient.h"
#include "notify.h"
#include "server.h"
#include "tls.h"

/* ---- CPU usage from /proc/stat deltas, sampled in the background -------------------------- */

static struct {
    unsigned long long busy[2], total[2];
    int samples;
} cpu_;

static int read_proc_stat(unsigned long long *busy, unsigned long long *total)
{
    char line[512];
    FILE *f = fopen("/proc/stat", "re");
    if (f == NULL) return -errno;
    char *ok = fgets(line, sizeof(line), f);
    fclose(f);
    unsigned long long v[10] = {0};
    if (ok == NULL || sscanf(line, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
                             &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) < 4)
        return -EINVAL;
    /* guest and guest_nice (v[8], v[9]) are already counted in user and nice. */
    unsigned long long idle = v[3] + v[4];
    *total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    *busy = *total - idle;
    return 0;
}

static void cpu_sample(void)
{
    unsigned long long busy, total;
    if (read_proc_stat(&busy, &total) < 0) return;
    cpu_.busy[0] = cpu_.busy[1];
    cpu_.total[0] = cpu_.total[1];
    cpu_.busy[1] = busy;
    cpu_.total[1] = total;
    cpu_.samples++;
}

/* The busy share over the latest window; before the second sample, since boot. */
static int cpu_percent(void)
{
    if (cpu_.samples == 0) return -1;
    unsigned long long db = cpu_.busy[1], dt = cpu_.total[1];
    if (cpu_.samples > 1) {
        db -= cpu_.busy[0];
        dt -= cpu_.total[0];
    }
    if (dt == 0) return 0;
    return (int)((db * 100 + dt / 2) / dt);
}

static void on_cpu_timer(uv_timer_t *t)
{
    cpu_sample();
}

/* ---- listeners ---------------------------------------------------------------------------- */

static void on_connection(uv_stream_t *s, int status)
{
    exo_listener_t *l = s->data;
    if (status < 0) {
        exo_warn("%s: accept failed: %s", l->name, uv_strerror(status));
        return;
    }
    exo_conn_accept(l);
}

static int parse_hostport(const char *item, struct sockaddr_storage *ss)
{
    char host[64];
    const char *colon = strrchr(item, ':');
    if (colon == NULL) return -EINVAL;
    int port = atoi(colon + 1);
    size_t hlen = (size_t)(colon - item);
    if (item[0] == '[' && hlen >= 2 && item[hlen - 1] == ']') {
        item++;
        hlen -= 2;
    }
    if (hlen >= sizeof(host)) return -EINVAL;
    memcpy(host, item, hlen);
    host[hlen] = '\0';
    if (strcmp(host, "localhost") == 0) snprintf(host, sizeof(host), "127.0.0.1");
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 0;
    return -EINVAL;
}

static int open_tcp(const exo_config_t *cfg, exo_listen_fd_t *l, const char *item, char *err,
                    size_t errlen)
{
    struct sockaddr_storage ss;
    if (parse_hostport(item, &ss) < 0) {
        snprintf(err, errlen, "listen: bad address '%s'", item);
        return -EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", item, strerror(errno));
        return -errno;
    }
    l->fd = fd;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    socklen_t len =
        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 511) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot listen on %s: %s", item, strerror(e));
        return -e;
    }
    l->transport = cfg->tls ? EXO_TRANSPORT_HTTPS : EXO_TRANSPORT_HTTP;
    snprintf(l->name, sizeof(l->name), "%s://%s", cfg->tls ? "https" : "http", item);
    return 0;
}

static int mkdir_parents(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    return 0;
}

static int open_unix(const exo_config_t *cfg, exo_prepared_t *p, exo_listen_fd_t *l,
                     const char *path, char *err, size_t errlen)
{
    struct stat st;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "unix_socket: %s is too long for a socket path", path);
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    mkdir_parents(path);
    /* A socket left by an earlier run is replaced; any other file there is an error. */
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "unix_socket: %s exists and is not a socket", path);
            return -EEXIST;
        }
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
        return -errno;
    }
    l->fd = fd;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(e));
        return -e;
    }
    p->unix_path = strdup(path);
    if (chmod(path, cfg->unix_socket_mode) < 0 || listen(fd, 128) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(e));
        return -e;
    }
    l->transport = EXO_TRANSPORT_UNIX;
    snprintf(l->name, sizeof(l->name), "unix:%s", path);
    return 0;
}

/* Socket activation (sd_listen_fds(3)): the sockets systemd passed, from descriptor 3 on. Each
 * must be a listening stream socket; a Unix one is the local socket, a TCP one serves HTTPS (or
 * plain HTTP, on loopback or when allowed, as with [server] listen). Returns how many were
 * taken (0 when the agent was not activated), or a negative errno with a message in err. */
static int take_activated(const exo_config_t *cfg, exo_prepared_t *p, char *err, size_t errlen)
{
    const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
    if (pid_s == NULL || fds_s == NULL || strtol(pid_s, NULL, 10) != (long)getpid()) return 0;
    long n = strtol(fds_s, NULL, 10);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (n <= 0) return 0;
    if (n > 64) {
        snprintf(err, errlen, "socket activation: %ld sockets passed, at most 64 are served", n);
        return -EINVAL;
    }
    for (int fd = 3; fd < 3 + (int)n; fd++) {
        exo_listen_fd_t *l = &p->fds[p->n_fds++];
        l->fd = fd;
        int type = 0, listening = 0;
        socklen_t len = sizeof(type);
        struct sockaddr_storage ss;
        socklen_t sslen = sizeof(ss);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM ||
            getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening ||
            getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) {
            snprintf(err, errlen,
                     "socket activation: descriptor %d is not a listening stream socket (the "
                     "socket unit must use ListenStream=)",
                     fd);
            return -EINVAL;
        }
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        if (ss.ss_family == AF_UNIX) {
            l->transport = EXO_TRANSPORT_UNIX;
            snprintf(l->name, sizeof(l->name), "unix:%s (from systemd)",
                     ((struct sockaddr_un *)&ss)->sun_path);
            continue;
        }
        char host[64] = "?";
        int port = 0;
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        char item[80];
        snprintf(item, sizeof(item), ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
        if (!cfg->tls && !cfg->allow_plain_http && !exo_config_is_loopback(item)) {
            snprintf(err, errlen,
                     "socket activation: %s is not on loopback, and plain HTTP (tls = false) is "
                     "served off loopback only with allow_plain_http = true",
                     item);
            return -EINVAL;
        }
        l->transport = cfg->tls ? EXO_TRANSPORT_HTTPS : EXO_TRANSPORT_HTTP;
        snprintf(l->name, sizeof(l->name), "%s://%s (from systemd)", cfg->tls ? "https" : "http",
                 item);
    }
    return (int)n;
}

int exo_prepare(const exo_config_t *cfg, exo_prepared_t *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    for (size_t i = 0; i < sizeof(p->fds) / sizeof(p->fds[0]); i++)
        p->fds[i].fd = -1;
    int rc = 0;
    if (cfg->tls) {
        if (mkdir(cfg->state_dir, 0700) < 0 && errno != EEXIST) {
            rc = -errno;
            snprintf(err, errlen, "state_dir %s: %s", cfg->state_dir, strerror(errno));
            goto fail;
        }
        rc = exo_tls_setup(cfg->tls_certificate, cfg->tls_private_key, cfg->state_dir, &p->ssl_ctx,
                           p->tls_fingerprint, sizeof(p->tls_fingerprint), err, errlen);
        if (rc < 0) goto fail;
    }
    rc = take_activated(cfg, p, err, errlen);
    if (rc < 0) goto fail;
    if (rc > 0) {
        exo_info("socket activation: serving the %d sockets systemd passed; [server] listen and "
                 "unix_socket are not used",
                 rc);
        return 0;
    }
    for (size_t i = 0; i < cfg->listen.n && p->n_fds < 64; i++) {
        rc = open_tcp(cfg, &p->fds[p->n_fds++], cfg->listen.items[i], err, errlen);
        if (rc < 0) goto fail;
    }
    if (cfg->unix_socket && cfg->unix_socket[0]) {
        rc = open_unix(cfg, p, &p->fds[p->n_fds++], cfg->unix_socket, err, errlen);
        if (rc < 0) goto fail;
    }
    return 0;
fail:
    exo_prepared_close(p);
    return rc;
}

void exo_prepared_close(exo_prepared_t *p)
{
    for (size_t i = 0; i < p->n_fds; i++) {
        if (p->fds[i].fd >= 0) close(p->fds[i].fd);
        p->fds[i].fd = -1;
    }
    p->n_fds = 0;
    if (p->unix_path) {
        struct stat st;
        if (lstat(p->unix_path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(p->unix_path);
        free(p->unix_path);
        p->unix_path = NULL;
    }
    if (p->ssl_ctx) SSL_CTX_free(p->ssl_ctx);
    p->ssl_ctx = NULL;
}

/* Serves on a prepared socket; the handle takes the descriptor over, so that closing the
 * listeners when draining really stops new connections in this process. (The monitor keeps
 * its own copy, in its own descriptor table, for the next worker; it closes it on SIGTERM.) */
static int listen_on(exo_server_t *srv, exo_listener_t *l, exo_listen_fd_t *pl, char *err,
                     size_t errlen)
{
    int fd = pl->fd;
    int rc = fd < 0 ? -EBADF : 0;
    pl->fd = -1;
    if (rc == 0 && pl->transport == EXO_TRANSPORT_UNIX) {
        uv_pipe_init(srv->loop, &l->h.pipe, 0);
        l->h.handle.data = l;
        rc = uv_pipe_open(&l->h.pipe, fd);
    } else if (rc == 0) {
        uv_tcp_init(srv->loop, &l->h.tcp);
        l->h.handle.data = l;
        rc = uv_tcp_open(&l->h.tcp, fd);
    }
    if (rc == 0)
        rc =
            uv_listen(&l->h.stream, pl->transport == EXO_TRANSPORT_UNIX ? 128 : 511, on_connection);
    l->transport = pl->transport;
    snprintf(l->name, sizeof(l->name), "%s", pl->name);
    if (rc < 0) snprintf(err, errlen, "cannot listen on %s: %s", pl->name, uv_strerror(rc));
    return rc;
}

/* ---- reload and drain --------------------------------------------------------------------- */

int exo_server_reload(exo_server_t *srv)
{
    char err[1024];
    exo_lvm_t *vm;
    uint64_t t0 = uv_hrtime();
    int rc = exo_lvm_new(&srv->rt, &vm, err, sizeof(err));
    if (rc < 0) {
        exo_error("reload failed, still serving the methods loaded before: %s", err);
        return rc;
    }
    int loaded, skipped, old_loaded, old_skipped;
    exo_lvm_counts(vm, &loaded, &skipped);
    exo_lvm_counts(srv->vm, &old_loaded, &old_skipped);
    /* A method file that no longer loads would take its methods away: the old methods stay
     * until the files load at least as well as before. The skipped files are logged above. */
    if (skipped > old_skipped) {
        exo_error("reload failed, still serving the methods loaded before: %d method files "
                  "skipped, %d before",
                  skipped, old_skipped);
        exo_lvm_release(vm);
        return -EINVAL;
    }
    /* Calls in flight hold the old VM; it is freed when the last of them ends. */
    exo_lvm_release(srv->vm);
    srv->vm = vm;
    exo_jobs_vm_changed();
    exo_info("reloaded methods: %d loaded, %d method files skipped, in %.1f ms", loaded, skipped,
             (double)(uv_hrtime() - t0) / 1e6);
    return 0;
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void stop_everything(exo_server_t *srv)
{
    for (size_t i = 0; i < srv->n_listeners; i++)
        close_handle(&srv->listeners[i].h.handle);
    if (!srv->handles_ready) return;
    close_handle((uv_handle_t *)&srv->sig_term);
    close_handle((uv_handle_t *)&srv->sig_int);
    close_handle((uv_handle_t *)&srv->sig_hup);
    close_handle((uv_handle_t *)&srv->cpu_timer);
    close_handle((uv_handle_t *)&srv->drain_timer);
    close_handle((uv_handle_t *)&srv->watch_timer);
    for (size_t i = 0; i < srv->n_watches; i++)
        close_handle((uv_handle_t *)&srv->watches[i]);
    exo_events_stop();
    exo_jobs_stop();
    exo_load_sampler_stop();
    /* Before the run queue closes: the fetch's waiters may still resume their calls. */
    exo_metadata_shutdown();
    exo_mountwatch_stop();
    exo_calls_shutdown();
    exo_core_shutdown();
}

static void on_drain_tick(uv_timer_t *t)
{
    exo_server_t *srv = t->data;
    exo_conn_close_idle(srv);
    uint64_t waited = uv_now(srv->loop) - srv->ready_ms;
    if (exo_calls_in_flight() > 0 && srv->conns != NULL && waited < srv->cfg->drain_timeout_ms)
        return;
    if (exo_calls_in_flight() > 0)
        exo_warn("drain timeout: %d calls still running are abandoned", exo_calls_in_flight());
    /* Connections still open now have nothing left to answer, or ran out of time. */
    exo_conn_close_all(srv);
    stop_everything(srv);
}

static void start_drain(exo_server_t *srv, const char *why)
{
    if (srv->draining) return;
    srv->draining = 1;
    exo_info("%s: draining (up to %u ms for %d calls in flight)", why,
             (unsigned)srv->cfg->drain_timeout_ms, exo_calls_in_flight());
    for (size_t i = 0; i < srv->n_listeners; i++)
        close_handle(&srv->listeners[i].h.handle);
    srv->ready_ms = uv_now(srv->loop);
    uv_timer_start(&srv->drain_timer, on_drain_tick, 0, 20);
}

static void on_signal(uv_signal_t *s, int signum)
{
    exo_server_t *srv = s->data;
    if (signum == SIGHUP)
        exo_server_reload(srv);
    else
        start_drain(srv, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- development mode: reload when a method file changes --------------------------------- */

static void on_watch_timer(uv_timer_t *t)
{
    exo_server_reload(t->data);
}

static void on_method_change(uv_fs_event_t *h, const char *file, int events, int status)
{
    exo_server_t *srv = h->data;
    /* Editors write a file in several steps; one reload after the burst is enough. */
    uv_timer_start(&srv->watch_timer, on_watch_timer, 150, 0);
}

static void watch_methods(exo_server_t *srv)
{
    const exo_config_t *cfg = srv->cfg;
    uv_timer_init(srv->loop, &srv->watch_timer);
    srv->watch_timer.data = srv;
    const char *dirs[17];
    size_t n = 0;
    for (size_t i = 0; i < cfg->method_dirs.n && n < 16; i++)
        dirs[n++] = cfg->method_dirs.items[i];
    if (cfg->operator_dir && cfg->operator_dir[0]) dirs[n++] = cfg->operator_dir;
    for (size_t i = 0; i < n; i++) {
        uv_fs_event_t *w = &srv->watches[srv->n_watches];
        uv_fs_event_init(srv->loop, w);
        w->data = srv;
        srv->n_watches++;
        if (uv_fs_event_start(w, on_method_change, dirs[i], 0) == 0)
            exo_info("watching %s: a change reloads the methods", dirs[i]);
    }
}

/* ---- start ------------------------------------------------------------------------------- */

int exo_server_start(exo_server_t *srv, uv_loop_t *loop, exo_config_t *cfg, int dev,
                     exo_prepared_t *p, char *err, size_t errlen)
{
    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    srv->dev = dev;
    unsigned char rnd[4];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) memset(rnd, 0, sizeof(rnd));
    snprintf(srv->id_prefix, sizeof(srv->id_prefix), "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
             rnd[3]);
    srv->rt.loop = loop;
    srv->rt.config = cfg;
    srv->rt.dev = dev;
    srv->rt.started = (int64_t)time(NULL);
    srv->rt.started_ms = uv_now(loop);
    srv->rt.cpu_percent = cpu_percent;
    cpu_sample();

    srv->ssl_ctx = p->ssl_ctx;
    srv->tls_fingerprint = p->tls_fingerprint;
    int rc = exo_lvm_new(&srv->rt, &srv->vm, err, errlen);
    if (rc < 0) return rc;

    srv->listeners = calloc(p->n_fds ? p->n_fds : 1, sizeof(*srv->listeners));
    if (srv->listeners == NULL) return -ENOMEM;
    for (size_t i = 0; i < p->n_fds; i++) {
        exo_listener_t *l = &srv->listeners[srv->n_listeners];
        l->srv = srv;
        srv->n_listeners++;
        rc = listen_on(srv, l, &p->fds[i], err, errlen);
        if (rc < 0) return rc;
    }
    uv_signal_init(loop, &srv->sig_term);
    uv_signal_init(loop, &srv->sig_int);
    uv_signal_init(loop, &srv->sig_hup);
    srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv;
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    uv_signal_start(&srv->sig_hup, on_signal, SIGHUP);
    uv_timer_init(loop, &srv->drain_timer);
    srv->drain_timer.data = srv;
    uv_timer_init(loop, &srv->cpu_timer);
    uv_timer_start(&srv->cpu_timer, on_cpu_timer, cfg->cpu_sample_interval_ms,
                   cfg->cpu_sample_interval_ms);
    uv_unref((uv_handle_t *)&srv->cpu_timer);
    srv->ready_ms = uv_now(loop);
    if (dev)
        watch_methods(srv);
    else
        uv_timer_init(loop, &srv->watch_timer);
    /* Without the watch the generation stays put; the agent still serves. */
    rc = exo_mountwatch_start(loop, NULL);
    if (rc < 0)
        exo_warn("cannot watch the mount table (/proc/self/mountinfo): %s; mount changes will "
                 "not be noticed",
                 uv_strerror(rc));
    srv->handles_ready = 1;

    int loaded, skipped;
    exo_lvm_counts(srv->vm, &loaded, &skipped);
    for (size_t i = 0; i < srv->n_listeners; i++)
        exo_info("listening on %s", srv->listeners[i].name);
    if (cfg->tls) exo_info("TLS certificate SHA-256 fingerprint %s", srv->tls_fingerprint);
    exo_info("exosphere-guest-agent %s ready: %d methods loaded, %d method files skipped%s",
             EXO_VERSION, loaded, skipped, dev ? " (development mode)" : "");
    return 0;
}

int exo_server_run(exo_server_t *srv)
{
    uv_run(srv->loop, UV_RUN_DEFAULT);
    return srv->exit_code;
}

void exo_server_close(exo_server_t *srv)
{
    if (srv->loop) {
        stop_everything(srv);
        exo_conn_close_all(srv);
        uv_run(srv->loop, UV_RUN_DEFAULT);
    }
    if (srv->vm) exo_lvm_release(srv->vm);
    srv->vm = NULL;
    srv->ssl_ctx = NULL;
    free(srv->listeners);
    srv->listeners = NULL;
}

/* ---- the worker: the serving side, under the monitor or alone --------------------------- */

static void on_monitor_lost(void *data)
{
    start_drain(data, "monitor gone");
}

static void on_ready_answer(void *data, int status, const exo_priv_msg_t *m)
{
    if (status < 0 || !exo_priv_field_is(&m->f[0], "ok"))
        exo_warn("the monitor did not acknowledge that the worker is ready");
}

int exo_worker_run(exo_config_t *cfg, int dev, exo_prepared_t *p, int monitor_fd)
{
    uv_loop_t *loop = uv_default_loop();
    exo_server_t srv;
    char err[1024];
    int code;
    memset(&srv, 0, sizeof(srv));
    if (monitor_fd >= 0 && exo_mon_start(loop, monitor_fd, on_monitor_lost, &srv) < 0) {
        exo_error("cannot start: the monitor socket cannot be watched");
        return 1;
    }
    if (exo_server_start(&srv, loop, cfg, dev, p, err, sizeof(err)) < 0) {
        exo_error("cannot start: %s", err);
        code = 1;
    } else {
        if (monitor_fd >= 0) exo_mon_request(EXO_OP_READY, NULL, 0, on_ready_answer, NULL);
        /* After READY: the monitor answers in order, so the history follows the readiness. */
        if (exo_load_sampler_start(&srv) < 0)
            exo_error("the load sampler cannot start: out of memory");
        int erc = exo_events_start(&srv);
        if (erc < 0)
            exo_error("the notification sources cannot start: %s; notify.system_load and "
                      "notify.mounts.* will not be sent",
                      strerror(-erc));
        if (exo_jobs_start(&srv) < 0) exo_error("jobs cannot start");
        /* Alone (no monitor), this process is what systemd waits for. */
        if (monitor_fd < 0) exo_sd_notify("READY=1\nSTATUS=serving (without the root monitor)");
        code = exo_server_run(&srv);
        exo_info("stopped");
    }
    exo_server_close(&srv);
    exo_mon_stop();
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return code;
}
