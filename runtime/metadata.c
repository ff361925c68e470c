/* The metadata client: the URL parser, one HTTP/1.1 GET at a time, and the cache.
 *
 * A fetch is one object with a deadline timer, a TCP handle (one per address tried) and, for a
 * host name, a getaddrinfo request. The first thing to end it (the response, an error, the
 * deadline, shutdown) decides the outcome, stores it in the cache and hands it to every waiter;
 * the handles then close, and the object is freed when the last of them (and the resolver, which
 * may still be running in the thread pool) has called back. Callbacks that come after the
 * outcome only release what they hold. */
#include "metadata.h"

#include <arpa/inet.h>
#include <errno.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "log.h"

/* Status line and headers of a response at most: the service sends a handful of headers. */
#define RESPONSE_HEAD_MAX 16384
/* Calls waiting on one fetch at most; more are refused as busy rather than queued forever. */
#define WAITERS_MAX 4096
/* Addresses of a name tried in turn, within the one deadline. */
#define ADDRESSES_MAX 8

/* ---- the cache --------------------------------------------------------------------------- */

/* The last outcome. It answers lookups while it is fresh: a body for [metadata] cache, a
 * failure for negative_cache. */
static struct {
    int set, ok;
    char *body;
    size_t len;
    char err[400];
    uint64_t at_ms;
} cache_;

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

static void cache_clear(void)
{
    free(cache_.body);
    memset(&cache_, 0, sizeof(cache_));
}

int exo_metadata_lookup(const exo_config_t *cfg, const char **body, size_t *len, const char **err)
{
    *body = NULL;
    *len = 0;
    *err = NULL;
    if (cfg->metadata_url == NULL || cfg->metadata_url[0] == '\0') {
        *err = "not configured";
        return 1;
    }
    if (!cache_.set) return 0;
    uint64_t age = now_ms() - cache_.at_ms;
    if (cache_.ok && age < cfg->metadata_cache_ms) {
        *body = cache_.body ? cache_.body : "";
        *len = cache_.len;
        return 1;
    }
    if (!cache_.ok && age < cfg->metadata_negative_cache_ms) {
        *err = cache_.err;
        return 1;
    }
    return 0;
}

/* ---- one fetch --------------------------------------------------------------------------- */

typedef struct waiter_s {
    struct waiter_s *next;
    exo_metadata_cb cb;
    void *data;
} waiter_t;

typedef struct fetch_s {
    uv_loop_t *loop;
    exo_url_t url;
    uint32_t timeout_ms, max_bytes;
    uv_timer_t timer;
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    uv_getaddrinfo_t gai;
    struct addrinfo *addrs, *next_addr; /* a name's addresses, tried in turn */
    int tries;
    int open_handles;   /* the timer and the TCP handle, until their close callbacks */
    int resolving;      /* the getaddrinfo request has not called back */
    int tcp_open;       /* the TCP handle is initialised and not closing */
    int done;           /* the outcome is decided */
    int starting;       /* inside exo_metadata_fetch, where no waiter may be called back */
    char deferred[400]; /* a failure met while starting, delivered from the loop */
    llhttp_t parser;
    size_t head_bytes;
    int complete;
    char fail[200]; /* set by a parser callback that refuses the response */
    exo_buf_t request;
    exo_buf_t body;
    waiter_t *waiters, **tail;
    int n_waiters;
} fetch_t;

static fetch_t *inflight_;

static void fetch_free_if_idle(fetch_t *f)
{
    if (!f->done || f->open_handles > 0 || f->resolving) return;
    if (f->addrs) uv_freeaddrinfo(f->addrs);
    exo_buf_free(&f->request);
    exo_buf_free(&f->body);
    free(f);
}

static void on_handle_closed(uv_handle_t *h)
{
    fetch_t *f = h->data;
    f->open_handles--;
    fetch_free_if_idle(f);
}

static void close_tcp(fetch_t *f)
{
    if (!f->tcp_open) return;
    f->tcp_open = 0;
    /* Pending connect and write requests call back with UV_ECANCELED before the close. */
    uv_close((uv_handle_t *)&f->tcp, on_handle_closed);
}

static void on_timeout(uv_timer_t *t);

/* Decides the outcome (err NULL: the body is the document), caches it and hands it to every
 * waiter, then lets the handles close. Only the first call counts. */
static void finish(fetch_t *f, const char *err)
{
    if (f->done) return;
    if (f->starting) {
        /* Delivered by the timer on the loop's next turn, as its contract says. */
        /* Only failures can happen before the fetch has started (no byte was read yet). */
        if (f->deferred[0] == '\0')
            snprintf(f->deferred, sizeof(f->deferred), "%s",
                     err ? err : "the fetch ended before it started");
        uv_timer_start(&f->timer, on_timeout, 0, 0);
        return;
    }
    f->done = 1;
    if (inflight_ == f) inflight_ = NULL;
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, on_handle_closed);
    close_tcp(f);
    if (f->resolving) uv_cancel((uv_req_t *)&f->gai);

    cache_clear();
    cache_.set = 1;
    cache_.ok = err == NULL;
    cache_.at_ms = now_ms();
    if (err == NULL) {
        cache_.body = exo_buf_steal(&f->body, &cache_.len);
        exo_debug("metadata: fetched %zu bytes from %s", cache_.len, f->url.host);
    } else {
        snprintf(cache_.err, sizeof(cache_.err), "%s", err);
        exo_debug("metadata: fetch from %s failed: %s", f->url.host, cache_.err);
    }
    /* Waiters resume their calls, which may look up the cache or start the next fetch. */
    waiter_t *w = f->waiters;
    f->waiters = NULL;
    while (w != NULL) {
        waiter_t *next = w->next;
        w->cb(w->data, cache_.ok ? (cache_.body ? cache_.body : "") : NULL, cache_.len,
              cache_.ok ? NULL : cache_.err);
        free(w);
        w = next;
    }
    fetch_free_if_idle(f);
}

static void on_timeout(uv_timer_t *t)
{
    fetch_t *f = t->data;
    char msg[64];
    if (f->deferred[0] != '\0') {
        finish(f, f->deferred);
        return;
    }
    snprintf(msg, sizeof(msg), "timed out after %u ms", (unsigned)f->timeout_ms);
    finish(f, msg);
}

static void finish_uv(fetch_t *f, const char *what, int status)
{
    char msg[400];
    snprintf(msg, sizeof(msg), "metadata service unreachable: %s%s", what, uv_strerror(status));
    finish(f, msg);
}

/* ---- the response ------------------------------------------------------------------------ */

static int count_head(llhttp_t *p, size_t len)
{
    fetch_t *f = p->data;
    f->head_bytes += len;
    if (f->head_bytes <= RESPONSE_HEAD_MAX) return 0;
    snprintf(f->fail, sizeof(f->fail), "response headers over %d bytes", RESPONSE_HEAD_MAX);
    return -1;
}

static int on_head_data(llhttp_t *p, const char *at, size_t len)
{
    return count_head(p, len);
}

static int on_headers_complete(llhttp_t *p)
{
    fetch_t *f = p->data;
    if (p->status_code != 200) {
        snprintf(f->fail, sizeof(f->fail), "HTTP %d", (int)p->status_code);
        return -1;
    }
    /* A declared length over the cap is refused before any of the body is read. */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > f->max_bytes) {
        snprintf(f->fail, sizeof(f->fail), "response over %u bytes", (unsigned)f->max_bytes);
        return -1;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    fetch_t *f = p->data;
    if (len > f->max_bytes - f->body.len) {
        snprintf(f->fail, sizeof(f->fail), "response over %u bytes", (unsigned)f->max_bytes);
        return -1;
    }
    if (exo_buf_append(&f->body, at, len) < 0) {
        snprintf(f->fail, sizeof(f->fail), "out of memory");
        return -1;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    fetch_t *f = p->data;
    f->complete = 1;
    /* Anything after the one response is ignored. */
    return HPE_PAUSED;
}

static const llhttp_settings_t response_settings = {
    .on_status = on_head_data,
    .on_header_field = on_head_data,
    .on_header_value = on_head_data,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Ends the fetch after the parser stopped with error e. */
static void finish_parse(fetch_t *f, llhttp_errno_t e)
{
    char msg[200];
    if (f->complete) {
        finish(f, NULL);
    } else if (f->fail[0] != '\0') {
        finish(f, f->fail);
    } else if (e == HPE_OK || e == HPE_INVALID_EOF_STATE) {
        finish(f, "the metadata service closed the connection before the response ended");
    } else {
        snprintf(msg, sizeof(msg), "the metadata service sent a malformed response: %s",
                 llhttp_get_error_reason(&f->parser));
        finish(f, msg);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    /* Each read is parsed before the next one, and the loop has one thread. */
    static char scratch[65536];
    buf->base = scratch;
    buf->len = sizeof(scratch);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    fetch_t *f = s->data;
    if (f->done || n == 0) return;
    if (n == UV_EOF) {
        /* A body delimited by the end of the connection is complete now. */
        finish_parse(f, llhttp_finish(&f->parser));
        return;
    }
    if (n < 0) {
        finish_uv(f, "", (int)n);
        return;
    }
    llhttp_errno_t e = llhttp_execute(&f->parser, buf->base, (size_t)n);
    if (e != HPE_OK) finish_parse(f, e);
}

static void on_written(uv_write_t *w, int status)
{
    fetch_t *f = w->data;
    if (f->done || status == 0) return;
    finish_uv(f, "", status);
}

/* ---- connecting -------------------------------------------------------------------------- */

static int build_request(fetch_t *f)
{
    const exo_url_t *u = &f->url;
    char port[8] = "";
    if (u->port != 80) snprintf(port, sizeof(port), ":%u", (unsigned)u->port);
    return exo_buf_printf(&f->request,
                          "GET %s HTTP/1.1\r\nHost: %s%s%s%s\r\nAccept: application/json\r\n"
                          "User-Agent: exosphere-guest-agent/" EXO_VERSION "\r\n"
                          "Connection: close\r\n\r\n",
                          u->path, u->host_kind == EXO_URL_IPV6 ? "[" : "", u->host,
                          u->host_kind == EXO_URL_IPV6 ? "]" : "", port);
}

static void connect_next(fetch_t *f);

static void on_tcp_closed_retry(uv_handle_t *h)
{
    fetch_t *f = h->data;
    f->open_handles--;
    if (f->done) {
        fetch_free_if_idle(f);
        return;
    }
    connect_next(f);
}

static void on_connect(uv_connect_t *req, int status)
{
    fetch_t *f = req->data;
    if (f->done) return;
    if (status < 0) {
        /* The next address of the name, if any, on a fresh handle. */
        if (f->next_addr != NULL && f->tries < ADDRESSES_MAX) {
            f->tcp_open = 0;
            uv_close((uv_handle_t *)&f->tcp, on_tcp_closed_retry);
            return;
        }
        finish_uv(f, "", status);
        return;
    }
    uv_buf_t b = uv_buf_init(f->request.data, (unsigned)f->request.len);
    int rc = uv_write(&f->write_req, (uv_stream_t *)&f->tcp, &b, 1, on_written);
    if (rc == 0) rc = uv_read_start((uv_stream_t *)&f->tcp, on_alloc, on_read);
    if (rc < 0) finish_uv(f, "", rc);
}

static void connect_to(fetch_t *f, const struct sockaddr *sa)
{
    int rc = uv_tcp_init(f->loop, &f->tcp);
    if (rc < 0) {
        finish_uv(f, "", rc);
        return;
    }
    f->tcp.data = f;
    f->connect_req.data = f;
    f->write_req.data = f;
    f->tcp_open = 1;
    f->open_handles++;
    f->tries++;
    rc = uv_tcp_connect(&f->connect_req, &f->tcp, sa, on_connect);
    if (rc < 0) finish_uv(f, "", rc);
}

static void connect_next(fetch_t *f)
{
    struct addrinfo *ai = f->next_addr;
    f->next_addr = ai->ai_next;
    connect_to(f, ai->ai_addr);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    fetch_t *f = req->data;
    f->resolving = 0;
    if (f->done) {
        if (res) uv_freeaddrinfo(res);
        fetch_free_if_idle(f);
        return;
    }
    if (status < 0 || res == NULL) {
        char what[EXO_URL_HOST_MAX + 32];
        snprintf(what, sizeof(what), "cannot resolve %s: ", f->url.host);
        finish_uv(f, what, status < 0 ? status : UV_EAI_NONAME);
        return;
    }
    f->addrs = f->next_addr = res;
    connect_next(f);
}

static void fetch_start(fetch_t *f)
{
    struct sockaddr_storage ss;
    uv_timer_init(f->loop, &f->timer);
    f->timer.data = f;
    f->open_handles = 1;
    uv_update_time(f->loop);
    uv_timer_start(&f->timer, on_timeout, f->timeout_ms, 0);
    if (f->url.host_kind == EXO_URL_IPV4) {
        uv_ip4_addr(f->url.host, f->url.port, (struct sockaddr_in *)&ss);
        connect_to(f, (struct sockaddr *)&ss);
    } else if (f->url.host_kind == EXO_URL_IPV6) {
        uv_ip6_addr(f->url.host, f->url.port, (struct sockaddr_in6 *)&ss);
        connect_to(f, (struct sockaddr *)&ss);
    } else {
        char port[8];
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        snprintf(port, sizeof(port), "%u", (unsigned)f->url.port);
        f->gai.data = f;
        int rc = uv_getaddrinfo(f->loop, &f->gai, on_resolved, f->url.host, port, &hints);
        if (rc < 0) {
            finish_uv(f, "", rc);
            return;
        }
        f->resolving = 1;
    }
}

static int add_waiter(fetch_t *f, exo_metadata_cb cb, void *data)
{
    if (f->n_waiters >= WAITERS_MAX) return -EBUSY;
    waiter_t *w = calloc(1, sizeof(*w));
    if (w == NULL) return -ENOMEM;
    w->cb = cb;
    w->data = data;
    *f->tail = w;
    f->tail = &w->next;
    f->n_waiters++;
    return 0;
}

int exo_metadata_fetch(uv_loop_t *loop, const exo_config_t *cfg, exo_metadata_cb cb, void *data)
{
    if (inflight_ != NULL) return add_waiter(inflight_, cb, data);
    fetch_t *f = calloc(1, sizeof(*f));
    if (f == NULL) return -ENOMEM;
    char why[160];
    int rc = 0;
    f->tail = &f->waiters;
    /* The URL was checked when the configuration loaded; this cannot fail but costs nothing. */
    if (cfg->metadata_url == NULL ||
        exo_url_parse(cfg->metadata_url, &f->url, why, sizeof(why)) < 0)
        rc = -EINVAL;
    if (rc == 0) rc = build_request(f);
    if (rc == 0) rc = add_waiter(f, cb, data);
    if (rc < 0) {
        free(f->waiters);
        exo_buf_free(&f->request);
        free(f);
        return rc;
    }
    f->loop = loop;
    f->timeout_ms = cfg->metadata_timeout_ms;
    f->max_bytes = cfg->metadata_max_bytes;
    llhttp_init(&f->parser, HTTP_RESPONSE, &response_settings);
    f->parser.data = f;
    inflight_ = f;
    /* A failure while starting is delivered from the loop (see finish). */
    f->starting = 1;
    fetch_start(f);
    f->starting = 0;
    return 0;
}

void exo_metadata_shutdown(void)
{
    if (inflight_ != NULL) finish(inflight_, "the agent is stopping");
    cache_clear();
}
