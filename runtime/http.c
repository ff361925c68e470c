/* Connections and HTTP/1.1 requests: TLS through memory BIOs, llhttp parsing, limits and
 * timeouts, routing, and responses written in request order (pipelining). */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "cors.h"
#include "log.h"
#include "server.h"
#include "tls.h"
#include "ws.h"

/* After an error response the connection stops parsing but keeps reading (and dropping)
 * for this long, so that closing it does not reset the response out of the client's
 * receive buffer while the client is still sending. */
#define EXO_LINGER_MS 2000
/* Connections accepted over max_connections are answered 503; beyond this many more they
 * are closed at once. */
#define EXO_REJECT_EXTRA 64
/* Reading pauses while this much response data waits to be sent to a slow reader. */
#define EXO_WRITE_HIGH_WATER (1024 * 1024)

enum {
    HDR_NONE,
    HDR_CONTENT_TYPE,
    HDR_EXPECT,
    HDR_AUTHORIZATION,
    HDR_FORWARDED_FOR,
    HDR_API_VERSION,
    HDR_UPGRADE,
    HDR_WS_KEY,
    HDR_WS_VERSION,
    HDR_CORS
};

static const char *status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

const char *exo_transport_name(exo_transport_t t)
{
    return t == EXO_TRANSPORT_HTTPS ? "https" : t == EXO_TRANSPORT_HTTP ? "http" : "unix";
}

static void conn_close(exo_conn_t *c);
static void conn_finish(exo_conn_t *c);
static void conn_flush(exo_conn_t *c);
static void conn_feed(exo_conn_t *c, const char *data, size_t len);
static void conn_set_timer(exo_conn_t *c);

/* ---- writing --------------------------------------------------------------------------- */

typedef struct write_req_s {
    uv_write_t w;
    exo_conn_t *conn;
    char data[];
} write_req_t;

static void on_written(uv_write_t *w, int status)
{
    write_req_t *wr = (write_req_t *)w;
    exo_conn_t *c = wr->conn;
    free(wr);
    c->writes_pending--;
    /* Closing, or lingering after the FIN: the linger timer or the peer's EOF closes. */
    if (c->closing || c->shut_down) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->writes_pending == 0 && c->close_after_write) {
        conn_finish(c);
        return;
    }
    /* A slow reader paused the reading; resume once its backlog has drained. */
    if (!c->paused && !c->reading && !c->close_after_write && c->phase != CONN_LINGER &&
        uv_stream_get_write_queue_size(&c->h.stream) < EXO_WRITE_HIGH_WATER)
        conn_flush(c);
}

static void on_linger_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void send_raw(exo_conn_t *c, const char *data, size_t len)
{
    if (len == 0 || c->closing) return;
    /* Written at once when nothing is queued; only what the socket does not take goes
     * through uv_write (uv_try_write refuses while writes are queued, so the order holds).
     * This saves a malloc and a copy per response, a pending callback, and the epoll_ctl
     * that libuv makes after every completed uv_write. */
    uv_buf_t now = uv_buf_init((char *)(uintptr_t)data, (unsigned)len);
    int n = uv_try_write(&c->h.stream, &now, 1);
    if (n > 0) {
        data += n;
        len -= (size_t)n;
        if (len == 0) return;
    } else if (n != UV_EAGAIN && n != UV_ENOSYS) {
        conn_close(c);
        return;
    }
    write_req_t *wr = malloc(sizeof(*wr) + len);
    if (wr == NULL) {
        conn_close(c);
        return;
    }
    memcpy(wr->data, data, len);
    wr->conn = c;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
    if (uv_write(&wr->w, &c->h.stream, &b, 1, on_written) < 0) {
        free(wr);
        conn_close(c);
        return;
    }
    c->writes_pending++;
}

/* Sends what TLS has queued in the write BIO. */
static void tls_flush(exo_conn_t *c)
{
    char *p;
    long n = BIO_get_mem_data(c->wbio, &p);
    if (n > 0) {
        send_raw(c, p, (size_t)n);
        (void)BIO_reset(c->wbio);
    }
}

static void conn_send(exo_conn_t *c, const char *data, size_t len)
{
    if (c->ssl == NULL) {
        send_raw(c, data, len);
        return;
    }
    /* With a memory BIO as the write side, SSL_write never waits: it takes everything. */
    while (len > 0 && !c->closing) {
        int n = SSL_write(c->ssl, data, len > 1u << 30 ? 1 << 30 : (int)len);
        if (n <= 0) {
            ERR_clear_error();
            conn_close(c);
            return;
        }
        data += n;
        len -= (size_t)n;
    }
    tls_flush(c);
}

/* ---- responses ------------------------------------------------------------------------- */

static void req_free(exo_req_t *r)
{
    /* Bodies and Authorization headers may hold passwords. */
    if (r->body.data) OPENSSL_cleanse(r->body.data, r->body.len);
    if (r->authorization.data) OPENSSL_cleanse(r->authorization.data, r->authorization.len);
    exo_buf_free(&r->authorization);
    exo_buf_free(&r->body);
    exo_buf_free(&r->resp);
    free(r);
}

/* Sends every ready response at the head of the queue, in order. */
static void conn_send_ready(exo_conn_t *c)
{
    while (c->head && c->head->ready && !c->closing) {
        exo_req_t *r = c->head;
        c->head = r->next;
        if (c->head == NULL) c->tail = NULL;
        c->n_queued--;
        conn_send(c, r->resp.data, r->resp.len);
        if (!r->keep_alive) c->close_after_write = 1;
        req_free(r);
    }
    if (c->closing) return;
    if (c->close_after_write) {
        if (c->writes_pending == 0) conn_finish(c);
        return;
    }
    conn_set_timer(c);
    conn_flush(c);
}

void exo_http_reply(exo_req_t *r, int status, const char *content_type, const char *body,
                    size_t len)
{
    exo_conn_t *c = r->conn;
    r->rpc = NULL;
    exo_buf_t *o = &r->resp;
    exo_buf_reset(o);
    int closing = !r->keep_alive || c->srv->draining || c->rejecting;
    if (closing) r->keep_alive = 0;
    /* The head is built with appends: printf costs more than the rest of the reply. */
    char code[4] = {(char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10),
                    (char)('0' + status % 10), '\0'};
    int rc = exo_buf_reserve(o, 256 + len);
    rc |= exo_buf_appends(o, "HTTP/1.1 ");
    rc |= exo_buf_appends(o, code);
    rc |= exo_buf_appendc(o, ' ');
    rc |= exo_buf_appends(o, status_text(status));
    rc |= exo_buf_appends(o, "\r\n");
    if (status != 204 && status != 100) {
        char num[24], *p = num + sizeof(num);
        size_t v = len;
        do {
            *--p = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        rc |= exo_buf_appends(o, "Content-Type: ");
        rc |= exo_buf_appends(o, content_type ? content_type : "text/plain; charset=utf-8");
        rc |= exo_buf_appends(o, "\r\nContent-Length: ");
        rc |= exo_buf_append(o, p, (size_t)(num + sizeof(num) - p));
        rc |= exo_buf_appends(o, "\r\n");
    }
    if (status == 405)
        rc |= exo_buf_printf(o, "Allow: %s\r\n",
                             strcmp(r->path, "/rpc") == 0 || strcmp(r->path, "/auth") == 0
                                 ? "POST, OPTIONS"
                                 : "GET, HEAD, OPTIONS");
    if (status == 426) rc |= exo_buf_appends(o, "Sec-WebSocket-Version: 13\r\n");
    if (status == 503 || status == 429)
        rc |= exo_buf_printf(o, "Retry-After: %u\r\n", r->retry_after_s ? r->retry_after_s : 1);
    rc |= exo_buf_appends(o, "X-Request-Id: ");
    rc |= exo_buf_appends(o, r->request_id);
    rc |= exo_buf_appends(o, "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n");
    rc |= exo_cors_append(c->srv->cfg, &r->cors, r->method == HTTP_OPTIONS && status == 204, o);
    if (closing) rc |= exo_buf_appends(o, "Connection: close\r\n");
    rc |= exo_buf_appends(o, "\r\n");
    if (r->method != HTTP_HEAD && status != 204) rc |= exo_buf_append(o, body, len);
    if (rc != 0) {
        conn_close(c);
        return;
    }
    r->ready = 1;
    conn_send_ready(c);
}

static void reply_text(exo_req_t *r, int status, const char *text)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "%s\n", text);
    exo_http_reply(r, status, NULL, body, (size_t)n);
}

/* Answers OPTIONS on a known path: 204, or 403 for a CORS preflight from an origin that the
 * configuration does not list (exo_cors_append adds the preflight headers to the 204). */
static void reply_options(exo_req_t *r)
{
    if (exo_cors_preflight_refused(r->conn->srv->cfg, &r->cors))
        reply_text(r, 403, "this origin is not in [server] cors_origins");
    else
        exo_http_reply(r, 204, NULL, NULL, 0);
}

void exo_http_reply_text(exo_req_t *r, int status, const char *text)
{
    reply_text(r, status, text);
}

/* ---- WebSocket sessions: the connection's side (ws.c does the rest) ------------------- */

void exo_conn_upgrade(exo_req_t *r, const char *resp, size_t len, struct exo_ws_s *ws)
{
    exo_conn_t *c = r->conn;
    /* ws.c upgrades only the connection's one request, so the queue empties. */
    c->head = c->tail = NULL;
    c->n_queued = 0;
    req_free(r);
    c->ws = ws;
    c->phase = CONN_IDLE;
    /* A session is not an HTTP connection: it leaves max_connections for max_sessions, and
     * its timer is ws.c's (pings) rather than the idle timeout. */
    c->srv->n_conns--;
    uv_timer_stop(&c->timer);
    conn_send(c, resp, len);
}

void exo_conn_send(exo_conn_t *c, const char *data, size_t len)
{
    conn_send(c, data, len);
}

size_t exo_conn_unsent(exo_conn_t *c)
{
    return uv_stream_get_write_queue_size(&c->h.stream);
}

void exo_conn_end(exo_conn_t *c)
{
    if (c->closing || c->shut_down) return;
    if (c->writes_pending > 0) {
        c->close_after_write = 1; /* on_written finishes once the queue is out */
        return;
    }
    conn_finish(c);
}

void exo_conn_abort(exo_conn_t *c)
{
    conn_close(c);
}

/* ---- requests -------------------------------------------------------------------------- */

static exo_req_t *req_new(exo_conn_t *c)
{
    exo_req_t *r = calloc(1, sizeof(*r));
    if (r == NULL) return NULL;
    r->conn = c;
    r->keep_alive = 1;
    /* "<prefix>-<sequence>" without printf: this runs for every request. */
    char digits[24], *d = digits + sizeof(digits);
    unsigned long long seq = ++c->srv->request_seq;
    do {
        *--d = (char)('0' + seq % 10);
        seq /= 10;
    } while (seq);
    size_t plen = strnlen(c->srv->id_prefix, sizeof(c->srv->id_prefix));
    size_t dlen = (size_t)(digits + sizeof(digits) - d);
    if (plen + 1 + dlen >= sizeof(r->request_id)) dlen = sizeof(r->request_id) - plen - 2;
    memcpy(r->request_id, c->srv->id_prefix, plen);
    r->request_id[plen] = '-';
    memcpy(r->request_id + plen + 1, d, dlen);
    r->request_id[plen + 1 + dlen] = '\0';
    return r;
}

static void req_enqueue(exo_conn_t *c, exo_req_t *r)
{
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->n_queued++;
}

static int is_json_type(const char *ct)
{
    /* application/json with optional parameters such as charset. */
    size_t n = strlen("application/json");
    if (strncasecmp(ct, "application/json", n) != 0) return 0;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

/* Routes a complete request. Every branch ends in exo_http_reply, now or later. */
static void route(exo_req_t *r)
{
    exo_server_t *srv = r->conn->srv;
    if (r->conn->rejecting) {
        exo_info("%s: refused a request: 503 %s, over max_connections (request %s)", r->conn->peer,
                 status_text(503), r->request_id);
        reply_text(r, 503, "the agent is at its connection limit; retry shortly");
        return;
    }
    int get = r->method == HTTP_GET || r->method == HTTP_HEAD;
    if (strcmp(r->path, "/rpc") == 0) {
        if (r->method == HTTP_GET && (r->upgrade || r->upgrade_hdr[0])) {
            exo_ws_upgrade(r);
        } else if (r->method == HTTP_OPTIONS) {
            reply_options(r);
        } else if (r->method != HTTP_POST) {
            reply_text(r, 405, "use POST for JSON-RPC");
        } else if (!is_json_type(r->content_type)) {
            reply_text(r, 415, "Content-Type must be application/json");
        } else if (srv->draining) {
            exo_info("%s: refused a request: 503 %s, shutting down (request %s)", r->conn->peer,
                     status_text(503), r->request_id);
            reply_text(r, 503, "the agent is shutting down");
        } else {
            exo_rpc_handle(r);
        }
    } else if (strcmp(r->path, "/auth") == 0) {
        if (r->method == HTTP_OPTIONS) {
            reply_options(r);
        } else if (r->method != HTTP_POST) {
            reply_text(r, 405, "use POST with Authorization: Basic");
        } else if (srv->draining) {
            reply_text(r, 503, "the agent is shutting down");
        } else {
            exo_rpc_auth(r);
        }
    } else if (strcmp(r->path, "/openrpc.json") == 0) {
        if (r->method == HTTP_OPTIONS) {
            reply_options(r);
        } else if (!get) {
            reply_text(r, 405, "use GET");
        } else {
            size_t len;
            char err[256];
            const char *doc = exo_lvm_openrpc(srv->vm, r->api_version, &len, err, sizeof(err));
            if (doc == NULL && r->api_version[0] && strncmp(err, "API version ", 12) == 0) {
                /* The client's mistake: the message lists the versions served. */
                reply_text(r, 400, err);
            } else if (doc == NULL) {
                exo_error("cannot build the OpenRPC document: %s (request %s)", err, r->request_id);
                reply_text(r, 500, "the OpenRPC document cannot be built; see the agent's log");
            } else {
                exo_http_reply(r, 200, "application/json", doc, len);
            }
        }
    } else if (strcmp(r->path, "/healthz") == 0) {
        if (r->method == HTTP_OPTIONS) {
            reply_options(r);
        } else if (!get) {
            reply_text(r, 405, "use GET");
        } else if (srv->draining) {
            static const char body[] = "{\"status\":\"draining\"}";
            exo_http_reply(r, 503, "application/json", body, sizeof(body) - 1);
        } else {
            static const char body[] = "{\"status\":\"ok\"}";
            exo_http_reply(r, 200, "application/json", body, sizeof(body) - 1);
        }
    } else {
        reply_text(r, 404, "no such resource");
    }
}

/* ---- llhttp callbacks ------------------------------------------------------------------ */

static int refuse(exo_conn_t *c, int status)
{
    c->error_status = status;
    return -1;
}

static int count_header_bytes(exo_conn_t *c, size_t len)
{
    c->header_bytes += len;
    return c->header_bytes > c->srv->cfg->max_header_size ? refuse(c, 431) : 0;
}

static int on_message_begin(llhttp_t *p)
{
    exo_conn_t *c = p->data;
    c->cur = req_new(c);
    if (c->cur == NULL) return refuse(c, 503);
    c->header_bytes = 0;
    c->field_len = 0;
    c->value_target = HDR_NONE;
    if (c->phase == CONN_IDLE) {
        c->phase = CONN_HEADERS;
        conn_set_timer(c);
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    exo_conn_t *c = p->data;
    if (count_header_bytes(c, len) < 0) return -1;
    size_t have = strlen(c->cur->path);
    if (have + len >= sizeof(c->cur->path)) return refuse(c, 414);
    memcpy(c->cur->path + have, at, len);
    c->cur->path[have + len] = '\0';
    return 0;
}

static void append_value(char *dst, size_t cap, const char *at, size_t len);

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    exo_conn_t *c = p->data;
    if (count_header_bytes(c, len) < 0) return -1;
    for (size_t i = 0; i < len; i++) {
        if (c->field_len + 1 >= sizeof(c->field)) {
            c->field_overflow = 1;
            break;
        }
        char ch = at[i];
        c->field[c->field_len++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
    }
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    exo_conn_t *c = p->data;
    /* The ": " and the CRLF count too, so that many short headers cannot pass a limit meant
     * for the bytes on the wire. */
    if (count_header_bytes(c, 4) < 0) return -1;
    c->field[c->field_len] = '\0';
    c->value_target = HDR_NONE;
    if (!c->field_overflow) {
        if (strcmp(c->field, "content-type") == 0) {
            c->value_target = HDR_CONTENT_TYPE;
            c->cur->content_type[0] = '\0';
        } else if (strcmp(c->field, "expect") == 0) {
            c->value_target = HDR_EXPECT;
        } else if (strcmp(c->field, "authorization") == 0) {
            c->value_target = HDR_AUTHORIZATION;
            c->cur->authorization_count++;
        } else if (strcmp(c->field, "x-forwarded-for") == 0) {
            c->value_target = HDR_FORWARDED_FOR;
            c->cur->forwarded_for[0] = '\0';
        } else if (strcmp(c->field, "exosphere-agent-version") == 0) {
            c->value_target = HDR_API_VERSION;
            if (c->cur->api_version_count++ > 0)
                append_value(c->cur->api_version, sizeof(c->cur->api_version), ",", 1);
        } else if (strcmp(c->field, "upgrade") == 0) {
            c->value_target = HDR_UPGRADE;
        } else if (strcmp(c->field, "sec-websocket-key") == 0) {
            c->value_target = HDR_WS_KEY;
        } else if (strcmp(c->field, "sec-websocket-version") == 0) {
            c->value_target = HDR_WS_VERSION;
        } else if (exo_cors_header_field(&c->cur->cors, c->field)) {
            c->value_target = HDR_CORS;
        }
    }
    c->field_len = 0;
    c->field_overflow = 0;
    return 0;
}

/* Appends a piece of a header value to a fixed field, cut at its size. */
static void append_value(char *dst, size_t cap, const char *at, size_t len)
{
    size_t have = strlen(dst);
    size_t take = len < cap - 1 - have ? len : cap - 1 - have;
    memcpy(dst + have, at, take);
    dst[have + take] = '\0';
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    exo_conn_t *c = p->data;
    if (count_header_bytes(c, len) < 0) return -1;
    exo_req_t *r = c->cur;
    if (c->value_target == HDR_UPGRADE) {
        append_value(r->upgrade_hdr, sizeof(r->upgrade_hdr), at, len);
    } else if (c->value_target == HDR_WS_KEY) {
        append_value(r->ws_key, sizeof(r->ws_key), at, len);
    } else if (c->value_target == HDR_WS_VERSION) {
        append_value(r->ws_version, sizeof(r->ws_version), at, len);
    } else if (c->value_target == HDR_API_VERSION) {
        append_value(r->api_version, sizeof(r->api_version), at, len);
    } else if (c->value_target == HDR_CONTENT_TYPE) {
        char *ct = c->cur->content_type;
        size_t have = strlen(ct);
        size_t take = len < sizeof(c->cur->content_type) - 1 - have
                          ? len
                          : sizeof(c->cur->content_type) - 1 - have;
        memcpy(ct + have, at, take);
        ct[have + take] = '\0';
    } else if (c->value_target == HDR_AUTHORIZATION) {
        if (c->cur->authorization_count == 1 && exo_buf_append(&c->cur->authorization, at, len) < 0)
            return refuse(c, 503);
    } else if (c->value_target == HDR_FORWARDED_FOR) {
        /* Only the last entries matter (the ones a trusted proxy added): keep the tail. */
        char *ff = c->cur->forwarded_for;
        size_t cap = sizeof(c->cur->forwarded_for) - 1, have = strlen(ff);
        if (len >= cap) {
            memcpy(ff, at + len - cap, cap);
            ff[cap] = '\0';
        } else {
            if (have + len > cap) {
                memmove(ff, ff + (have + len - cap), cap - len);
                have = cap - len;
            }
            memcpy(ff + have, at, len);
            ff[have + len] = '\0';
        }
    } else if (c->value_target == HDR_CORS) {
        exo_cors_header_value(&c->cur->cors, at, len);
    } else if (c->value_target == HDR_EXPECT) {
        /* The value may arrive in pieces: it is collected in the field buffer, which is free
         * until the next header name, and checked once complete. */
        size_t take =
            len < sizeof(c->field) - 1 - c->field_len ? len : sizeof(c->field) - 1 - c->field_len;
        memcpy(c->field + c->field_len, at, take);
        c->field_len += take;
    }
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    exo_conn_t *c = p->data;
    if (c->value_target != HDR_EXPECT) return 0;
    while (c->field_len > 0 &&
           (c->field[c->field_len - 1] == ' ' || c->field[c->field_len - 1] == '\t'))
        c->field_len--;
    c->field[c->field_len] = '\0';
    c->field_len = 0;
    if (strcasecmp(c->field, "100-continue") != 0) return refuse(c, 417);
    c->cur->expect_continue = 1;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    exo_conn_t *c = p->data;
    exo_req_t *r = c->cur;
    r->method = (uint8_t)llhttp_get_method(p);
    char *q = strchr(r->path, '?');
    if (q) *q = '\0';
    if (p->upgrade) {
        /* Only a GET may become a WebSocket session (ws.c checks the rest in route); after
         * any other upgrade request the connection's bytes are not HTTP any more. */
        if (r->method != HTTP_GET) return refuse(c, 501);
        r->upgrade = 1;
    }
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->srv->cfg->max_body_size)
        return refuse(c, 413);
    /* POST /auth carries its credentials in a header and usually no body at all (curl -u -X
     * POST sends no Content-Length): RFC 9112 reads that as an empty body. */
    if (r->method == HTTP_POST && !(p->flags & (F_CONTENT_LENGTH | F_CHUNKED)) &&
        strcmp(r->path, "/auth") != 0)
        return refuse(c, 411);
    c->phase = CONN_BODY;
    conn_set_timer(c);
    if (r->expect_continue && c->head == NULL) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        conn_send(c, cont, sizeof(cont) - 1);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    exo_conn_t *c = p->data;
    exo_req_t *r = c->cur;
    if (r->body.len + len > c->srv->cfg->max_body_size) return refuse(c, 413);
    if (exo_buf_append(&r->body, at, len) < 0) return refuse(c, 503);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    exo_conn_t *c = p->data;
    exo_req_t *r = c->cur;
    c->cur = NULL;
    /* After an upgrade request that does not become a session, nothing more is parsed. */
    int keep_alive = r->keep_alive = r->upgrade ? 0 : llhttp_should_keep_alive(p);
    c->phase = CONN_IDLE;
    req_enqueue(c, r);
    /* The header or body timer must not run on while the request is being answered. */
    conn_set_timer(c);
    route(r); /* an answer ready at once is sent, and r freed, before route returns */
    /* A session now: llhttp stops with HPE_PAUSED_UPGRADE and conn_feed hands ws the rest. */
    if (c->ws) return 0;
    /* The callback may have closed the connection; the parser is then not used again. */
    if (c->closing || c->close_after_write) return HPE_PAUSED;
    if (!keep_alive || c->n_queued >= (int)c->srv->cfg->max_pipelined) return HPE_PAUSED;
    return 0;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- reading --------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    exo_conn_t *c = h->data;
    buf->base = c->srv->read_buf;
    buf->len = sizeof(c->srv->read_buf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void start_reading(exo_conn_t *c)
{
    if (!c->reading && !c->closing) {
        if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0) c->reading = 1;
    }
}

static void stop_reading(exo_conn_t *c)
{
    if (c->reading) {
        uv_read_stop(&c->h.stream);
        c->reading = 0;
    }
}

/* The request could not be parsed or was refused: answer it after the ones before it, stop
 * parsing, and close once the answers are out. */
static void fail_request(exo_conn_t *c, int status)
{
    exo_req_t *r = c->cur;
    c->cur = NULL;
    if (r == NULL && (r = req_new(c)) == NULL) {
        conn_close(c);
        return;
    }
    exo_info("%s: refused a request: %d %s%s (request %s)", c->peer, status, status_text(status),
             status != 408              ? ""
             : c->phase == CONN_HEADERS ? ", the headers did not arrive in time"
                                        : ", the body did not arrive in time",
             r->request_id);
    r->keep_alive = 0;
    req_enqueue(c, r);
    c->phase = CONN_LINGER;
    static const char *const texts[] = {
        [400 - 400] = "malformed HTTP request",
        [411 - 400] = "a POST needs Content-Length or chunked transfer encoding",
        [413 - 400] = "request body too large",
        [414 - 400] = "request target too long",
        [417 - 400] = "unsupported Expect header",
        [31] = "request headers too large",
    };
    const char *text = NULL;
    if (status == 431)
        text = texts[31];
    else if (status >= 400 && status < 418)
        text = texts[status - 400];
    reply_text(r, status, text ? text : status_text(status));
}

static void conn_feed(exo_conn_t *c, const char *data, size_t len)
{
    if (c->ws) {
        if (!c->closing && c->phase != CONN_LINGER) exo_ws_feed(c->ws, data, len);
        return;
    }
    if (c->paused || c->phase == CONN_LINGER || c->close_after_write) {
        if (c->phase != CONN_LINGER && !c->close_after_write &&
            exo_buf_append(&c->pending, data, len) < 0)
            conn_close(c);
        return;
    }
    enum llhttp_errno e = llhttp_execute(&c->parser, data, len);
    if (e == HPE_OK) return;
    if (e == HPE_PAUSED_UPGRADE && c->ws) {
        /* Frames that came in the same read as the handshake. */
        const char *stop = llhttp_get_error_pos(&c->parser);
        size_t used = (size_t)(stop - data);
        if (used < len && !c->closing) exo_ws_feed(c->ws, stop, len - used);
        return;
    }
    if (e == HPE_PAUSED) {
        const char *stop = llhttp_get_error_pos(&c->parser);
        size_t used = (size_t)(stop - data);
        c->paused = 1;
        if (!c->closing && used < len && exo_buf_append(&c->pending, stop, len - used) < 0) {
            conn_close(c);
            return;
        }
        stop_reading(c);
        if (!c->closing && !c->close_after_write && c->n_queued == 0) conn_flush(c);
        return;
    }
    if (c->closing) return;
    fail_request(c, c->error_status ? c->error_status : 400);
}

/* Resumes parsing what was held back while the parser was paused, then reading. */
static void conn_flush(exo_conn_t *c)
{
    if (c->closing || c->close_after_write || c->phase == CONN_LINGER) return;
    if (c->paused) {
        if (c->n_queued >= (int)c->srv->cfg->max_pipelined) return;
        c->paused = 0;
        llhttp_resume(&c->parser);
        if (c->pending.len > 0) {
            exo_buf_t held = c->pending;
            c->pending = (exo_buf_t)EXO_BUF_INIT;
            conn_feed(c, held.data, held.len);
            exo_buf_free(&held);
            if (c->paused || c->closing) return;
        }
    }
    if (uv_stream_get_write_queue_size(&c->h.stream) >= EXO_WRITE_HIGH_WATER)
        stop_reading(c);
    else
        start_reading(c);
}

static void tls_read(exo_conn_t *c, const char *data, size_t len)
{
    if (BIO_write(c->rbio, data, (int)len) != (int)len) {
        conn_close(c);
        return;
    }
    if (!SSL_is_init_finished(c->ssl)) {
        int rc = SSL_do_handshake(c->ssl);
        tls_flush(c);
        if (rc <= 0) {
            int e = SSL_get_error(c->ssl, rc);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                char ebuf[200];
                exo_debug("%s: TLS handshake failed: %s", c->peer,
                          exo_tls_strerror(ebuf, sizeof(ebuf)));
                conn_close(c);
            }
            return;
        }
    }
    char plain[16384];
    while (!c->closing) {
        int n = SSL_read(c->ssl, plain, sizeof(plain));
        if (n > 0) {
            conn_feed(c, plain, (size_t)n);
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        tls_flush(c);
        if (e == SSL_ERROR_WANT_READ) return;
        if (e == SSL_ERROR_ZERO_RETURN && c->n_queued > 0) {
            /* The client closed its sending side; answer what it asked, then close. */
            c->close_after_write = 1;
            stop_reading(c);
            return;
        }
        ERR_clear_error();
        conn_close(c);
        return;
    }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    exo_conn_t *c = s->data;
    if (n == 0) return;
    if (n < 0) {
        if (n == UV_EOF && c->n_queued > 0 && c->phase != CONN_LINGER) {
            c->close_after_write = 1;
            stop_reading(c);
            return;
        }
        conn_close(c);
        return;
    }
    if (c->ssl)
        tls_read(c, buf->base, (size_t)n);
    else
        conn_feed(c, buf->base, (size_t)n);
}

static void on_linger_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n < 0) conn_close(s->data);
}

/* ---- timers, closing ------------------------------------------------------------------- */

static void on_conn_timer(uv_timer_t *t)
{
    exo_conn_t *c = t->data;
    if (c->phase == CONN_LINGER || c->n_queued > 0 || c->phase == CONN_IDLE) {
        conn_close(c);
        return;
    }
    fail_request(c, 408);
}

static void conn_set_timer(exo_conn_t *c)
{
    const exo_config_t *cfg = c->srv->cfg;
    uint64_t ms;
    switch (c->phase) {
    case CONN_HEADERS:
        ms = cfg->header_timeout_ms;
        break;
    case CONN_BODY:
        ms = cfg->body_timeout_ms;
        break;
    case CONN_LINGER:
        ms = EXO_LINGER_MS;
        break;
    default:
        /* Time spent running the client's calls is bounded by the call deadline instead. */
        if (c->n_queued > 0) {
            uv_timer_stop(&c->timer);
            return;
        }
        ms = cfg->idle_timeout_ms;
    }
    uv_timer_start(&c->timer, on_conn_timer, ms, 0);
}

static void on_conn_closed(uv_handle_t *h)
{
    exo_conn_t *c = h->data;
    if (--c->closing > 0) return;
    exo_server_t *srv = c->srv;
    if (c->ws)
        exo_ws_free(c->ws); /* counted as a session, not a connection */
    else if (c->rejecting)
        srv->n_rejecting--;
    else
        srv->n_conns--;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->ssl) SSL_free(c->ssl); /* frees both BIOs */
    exo_buf_free(&c->pending);
    if (c->peer_identity) exo_identity_clear(c->peer_identity);
    free(c->peer_identity);
    free(c);
}

static void conn_close(exo_conn_t *c)
{
    if (c->closing) return;
    c->closing = 2;
    if (c->ws) exo_ws_stop(c->ws);
    /* Calls still running for this connection are cancelled: nobody can read their answer. */
    for (exo_req_t *r = c->head; r;) {
        exo_req_t *next = r->next;
        if (r->rpc) exo_rpc_cancel(r);
        req_free(r);
        r = next;
    }
    c->head = c->tail = NULL;
    c->n_queued = 0;
    if (c->cur) {
        req_free(c->cur);
        c->cur = NULL;
    }
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
    uv_close(&c->h.handle, on_conn_closed);
}

/* Every answer is out and the connection is to close. After a refused request the client may
 * still be sending: the connection then sends its FIN (after a TLS close_notify) and keeps
 * reading and dropping input for a moment, so that the close does not reset the answer out
 * of the client's receive buffer. A TLS connection always ends that way, because a client
 * takes a close without close_notify for a truncated answer. A plain one closes at once. */
static void conn_finish(exo_conn_t *c)
{
    if (c->shut_down || (c->phase != CONN_LINGER && c->ssl == NULL)) {
        conn_close(c);
        return;
    }
    c->phase = CONN_LINGER;
    c->shut_down = 1;
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        ERR_clear_error();
        tls_flush(c);
    }
    if (c->closing || uv_shutdown(&c->shutdown_req, &c->h.stream, NULL) != 0) {
        conn_close(c);
        return;
    }
    stop_reading(c);
    if (uv_read_start(&c->h.stream, on_alloc, on_linger_read) == 0) c->reading = 1;
    conn_set_timer(c);
}

void exo_conn_close_idle(exo_server_t *srv)
{
    for (exo_conn_t *c = srv->conns, *next; c; c = next) {
        next = c->next;
        if (c->ws)
            exo_ws_drain(c->ws); /* closes with 1001 once its calls have answered */
        else if (c->n_queued == 0 && c->writes_pending == 0)
            conn_close(c);
    }
}

void exo_conn_close_all(exo_server_t *srv)
{
    for (exo_conn_t *c = srv->conns; c; c = c->next)
        conn_close(c);
}

/* ---- accepting ------------------------------------------------------------------------- */

static void describe_peer(exo_conn_t *c)
{
    if (c->transport == EXO_TRANSPORT_UNIX) {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        uv_os_fd_t fd;
        if (uv_fileno(&c->h.handle, &fd) == 0 &&
            getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
            c->peer_uid = cred.uid;
            snprintf(c->peer, sizeof(c->peer), "unix:uid=%u,pid=%d", (unsigned)cred.uid,
                     (int)cred.pid);
        } else {
            snprintf(c->peer, sizeof(c->peer), "unix:unknown");
        }
        return;
    }
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char host[64] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
            snprintf(c->peer, sizeof(c->peer), "%s:%d", host, port);
            snprintf(c->peer_ip, sizeof(c->peer_ip), "%s", host);
            return;
        }
        uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    snprintf(c->peer_ip, sizeof(c->peer_ip), "%s", host);
    snprintf(c->peer, sizeof(c->peer), "[%s]:%d", host, port);
}

void exo_conn_accept(exo_listener_t *l)
{
    exo_server_t *srv = l->srv;
    exo_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) return;
    c->srv = srv;
    c->transport = l->transport;
    c->peer_uid = (uid_t)-1;
    c->phase = CONN_HEADERS;
    if (l->transport == EXO_TRANSPORT_UNIX)
        uv_pipe_init(srv->loop, &c->h.pipe, 0);
    else
        uv_tcp_init(srv->loop, &c->h.tcp);
    c->h.handle.data = c;
    uv_timer_init(srv->loop, &c->timer);
    c->timer.data = c;
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->n_conns++;
    if (uv_accept(&l->h.stream, &c->h.stream) != 0) {
        conn_close(c);
        return;
    }
    if (srv->n_conns > (int)srv->cfg->max_connections) {
        srv->n_conns--;
        srv->n_rejecting++;
        c->rejecting = 1;
        if (srv->n_rejecting > EXO_REJECT_EXTRA) {
            conn_close(c);
            return;
        }
    }
    if (l->transport == EXO_TRANSPORT_UNIX) {
        describe_peer(c);
    } else {
        uv_tcp_nodelay(&c->h.tcp, 1);
        describe_peer(c);
    }
    if (l->transport == EXO_TRANSPORT_HTTPS) {
        c->ssl = SSL_new(srv->ssl_ctx);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
            BIO_free(c->rbio);
            BIO_free(c->wbio);
            c->rbio = c->wbio = NULL;
            conn_close(c);
            return;
        }
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_accept_state(c->ssl);
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    exo_debug("%s: connected to %s%s", c->peer, l->name,
              c->rejecting ? " (over max_connections)" : "");
    conn_set_timer(c);
    start_reading(c);
}
