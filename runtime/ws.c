/* WebSocket sessions: the RFC 6455 handshake, wslay's event API over the connection's bytes,
 * pings, limits, the close handshake, and the table of sessions by id. See ws.h. */
#include "ws.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include "cors.h"
#include "log.h"

/* Sessions by id: a fixed table of chains, allocated with the first session. 16384 heads
 * (128 KiB) keep chains short up to max_sessions' range. */
#define WS_TABLE_SIZE 16384

static exo_ws_t **table_;
static int n_sessions_;
static int64_t next_id_;

int exo_ws_count(void)
{
    return n_sessions_;
}

static exo_ws_t **slot(int64_t id)
{
    return &table_[(uint64_t)id & (WS_TABLE_SIZE - 1)];
}

static exo_ws_t *find(int64_t id)
{
    if (table_ == NULL || id <= 0) return NULL;
    for (exo_ws_t *ws = *slot(id); ws; ws = ws->hash_next)
        if (ws->id == id) return ws;
    return NULL;
}

static void table_remove(exo_ws_t *ws)
{
    if (table_ == NULL) return;
    for (exo_ws_t **p = slot(ws->id); *p; p = &(*p)->hash_next)
        if (*p == ws) {
            *p = ws->hash_next;
            ws->hash_next = NULL;
            return;
        }
}

static const exo_config_t *cfg_of(const exo_ws_t *ws)
{
    return ws->conn->srv->cfg;
}

/* ---- sending and closing --------------------------------------------------------------- */

static void on_ws_timer(uv_timer_t *t);

static void set_timer(exo_ws_t *ws, uint64_t ms)
{
    uv_timer_start(&ws->conn->timer, on_ws_timer, ms, 0);
}

/* Hands wslay's queued frames to the connection; once the close handshake is complete in both
 * directions, closes the connection in order. */
static void flush(exo_ws_t *ws)
{
    /* Inside wslay_event_recv's callbacks nothing is sent: exo_ws_feed flushes after it. */
    if (ws->stopped || ws->in_recv) return;
    if (wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx) < 0 && !ws->stopped) {
        exo_conn_abort(ws->conn);
        return;
    }
    if (ws->stopped) return;
    if (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx)) exo_conn_end(ws->conn);
}

/* Starts the close handshake: the close frame goes after what is queued, no further message
 * is run or sent, and a peer that does not answer within pong_timeout is cut off. */
static void close_session(exo_ws_t *ws, uint16_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void close_session(exo_ws_t *ws, uint16_t code, const char *fmt, ...)
{
    if (ws->closing || ws->stopped) return;
    char reason[124];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n >= sizeof(reason) ? sizeof(reason) - 1 : (size_t)n;
    ws->closing = 1;
    ws->close_code = code;
    exo_info("%s: WebSocket session %" PRId64 " closing: %u %s", ws->conn->peer, ws->id,
             (unsigned)code, reason);
    if (wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, len) != 0) {
        exo_conn_abort(ws->conn);
        return;
    }
    set_timer(ws, cfg_of(ws)->ws_pong_timeout_ms);
    flush(ws);
}

/* Queues one text frame, within max_queued. Returns 1 if queued, else 0. */
static int send_text(exo_ws_t *ws, const char *text, size_t len)
{
    if (ws->closing || ws->stopped) return 0;
    size_t unsent = exo_conn_unsent(ws->conn) + wslay_event_get_queued_msg_length(ws->ctx);
    /* One message is always taken when nothing waits, so that an answer larger than the limit
     * still reaches a peer that reads; what bounds memory is the backlog of a peer that
     * does not. */
    if (unsent > 0 && unsent + len > cfg_of(ws)->ws_max_queued) {
        close_session(ws, WSLAY_CODE_POLICY_VIOLATION, "too slow: %zu bytes unsent", unsent);
        return 0;
    }
    struct wslay_event_msg msg = {WSLAY_TEXT_FRAME, (const uint8_t *)text, len};
    if (wslay_event_queue_msg(ws->ctx, &msg) != 0) {
        close_session(ws, WSLAY_CODE_INTERNAL_SERVER_ERROR, "out of memory");
        return 0;
    }
    flush(ws);
    return !ws->stopped;
}

int exo_ws_send(int64_t id, const char *text, size_t len)
{
    exo_ws_t *ws = find(id);
    return ws ? send_text(ws, text, len) : 0;
}

int exo_ws_set_api_version(int64_t id, const char *version, size_t len)
{
    exo_ws_t *ws = find(id);
    if (ws == NULL || len >= sizeof(ws->api_version)) return 0;
    memcpy(ws->api_version, version, len);
    ws->api_version[len] = '\0';
    return 1;
}

int exo_ws_close(int64_t id, uint16_t code, const char *reason, size_t reason_len)
{
    exo_ws_t *ws = find(id);
    if (ws == NULL || ws->closing || ws->stopped) return 0;
    close_session(ws, code, "%.*s", (int)(reason_len > 123 ? 123 : reason_len), reason);
    return 1;
}

void exo_ws_answer(exo_ws_t *ws, int status, const char *text, size_t len)
{
    if (ws->stopped) return;
    if (status == 200)
        send_text(ws, text, len);
    else if (status != 204)
        close_session(ws, WSLAY_CODE_INTERNAL_SERVER_ERROR, "out of memory");
    if (ws->draining && ws->n_rpcs == 0) close_session(ws, WSLAY_CODE_GOING_AWAY, "going away");
}

void exo_ws_drain(exo_ws_t *ws)
{
    ws->draining = 1;
    if (ws->n_rpcs == 0) close_session(ws, WSLAY_CODE_GOING_AWAY, "going away");
}

/* ---- pings ----------------------------------------------------------------------------- */

static void on_ws_timer(uv_timer_t *t)
{
    exo_conn_t *c = t->data;
    exo_ws_t *ws = c->ws;
    const exo_config_t *cfg = cfg_of(ws);
    if (ws->closing) {
        /* The peer did not complete the close handshake: it may be gone. */
        exo_debug("%s: WebSocket session %" PRId64 ": no close frame from the peer", c->peer,
                  ws->id);
        exo_conn_abort(c);
        return;
    }
    if (ws->ping_sent) {
        close_session(ws, WSLAY_CODE_POLICY_VIOLATION, "no pong within %u ms",
                      (unsigned)cfg->ws_pong_timeout_ms);
        return;
    }
    static const uint8_t none[1];
    struct wslay_event_msg ping = {WSLAY_PING, none, 0};
    if (wslay_event_queue_msg(ws->ctx, &ping) != 0) {
        exo_conn_abort(c);
        return;
    }
    ws->ping_sent = uv_now(c->srv->loop);
    set_timer(ws, cfg->ws_pong_timeout_ms);
    flush(ws);
}

/* ---- receiving ------------------------------------------------------------------------- */

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *data)
{
    exo_ws_t *ws = data;
    if (ws->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = ws->in_len < len ? ws->in_len : len;
    memcpy(buf, ws->in, n);
    ws->in += n;
    ws->in_len -= n;
    return (ssize_t)n;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    exo_ws_t *ws = user;
    if (!ws->stopped) exo_conn_send(ws->conn, (const char *)data, len);
    /* Sending may have failed and closed the connection. */
    if (ws->stopped) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static void on_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *data)
{
    exo_ws_t *ws = data;
    /* Refused as soon as the header shows it, before wslay collects the payload. */
    if (arg->opcode == WSLAY_BINARY_FRAME) {
        close_session(ws, WSLAY_CODE_UNSUPPORTED_DATA, "binary frames are not accepted");
        wslay_event_shutdown_read(ctx);
    }
}

static void on_message(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                       void *data)
{
    exo_ws_t *ws = data;
    if (ws->stopped) return;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        /* After a close has started (or while draining) no new message runs. */
        if (ws->closing || ws->draining) return;
        exo_rpc_ws_message(ws, (const char *)arg->msg, arg->msg_length);
        return;
    case WSLAY_BINARY_FRAME:
        close_session(ws, WSLAY_CODE_UNSUPPORTED_DATA, "binary frames are not accepted");
        return;
    case WSLAY_PONG:
        if (ws->ping_sent && !ws->closing) {
            ws->ping_sent = 0;
            set_timer(ws, cfg_of(ws)->ws_ping_interval_ms);
        }
        return;
    case WSLAY_CONNECTION_CLOSE:
        /* wslay has queued the answering close frame. */
        exo_debug("%s: WebSocket session %" PRId64 ": the peer closed with %u", ws->conn->peer,
                  ws->id, (unsigned)arg->status_code);
        ws->closing = 1;
        set_timer(ws, cfg_of(ws)->ws_pong_timeout_ms);
        return;
    default:
        return; /* a ping: wslay answers it */
    }
}

void exo_ws_feed(exo_ws_t *ws, const char *data, size_t len)
{
    if (ws->stopped) return;
    ws->in = data;
    ws->in_len = len;
    ws->in_recv = 1;
    int rc = wslay_event_want_read(ws->ctx) ? wslay_event_recv(ws->ctx) : 0;
    ws->in_recv = 0;
    ws->in_len = 0;
    if (ws->stopped) return;
    if (rc != 0) {
        exo_debug("%s: WebSocket session %" PRId64 ": cannot read: wslay error %d", ws->conn->peer,
                  ws->id, rc);
        exo_conn_abort(ws->conn);
        return;
    }
    /* wslay closes by itself on protocol errors (1002), invalid UTF-8 (1007) and messages over
     * max_message (1009): log why, and bound the close handshake. */
    if (!ws->closing && !wslay_event_get_read_enabled(ws->ctx)) {
        ws->closing = 1;
        uint16_t code = wslay_event_get_status_code_sent(ws->ctx);
        exo_info("%s: WebSocket session %" PRId64 " closing: %u (%s)", ws->conn->peer, ws->id,
                 (unsigned)code,
                 code == WSLAY_CODE_MESSAGE_TOO_BIG              ? "message over max_message"
                 : code == WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA ? "invalid UTF-8 in a text message"
                                                                 : "protocol error");
        set_timer(ws, cfg_of(ws)->ws_pong_timeout_ms);
    }
    flush(ws);
}

/* ---- the handshake --------------------------------------------------------------------- */

/* 1 if the comma-separated header value holds token (case-insensitive). */
static int has_token(const char *value, const char *token)
{
    size_t tlen = strlen(token);
    for (const char *p = value; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m > 0 && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == tlen && strncasecmp(p, token, tlen) == 0) return 1;
        p += n;
    }
    return 0;
}

/* The Sec-WebSocket-Accept value of key (RFC 6455 4.2.2), or -1 if key is not base64 of 16
 * bytes. out holds 29 bytes. */
static int accept_value(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char raw[24];
    size_t klen = strlen(key);
    if (klen != 24 || key[22] != '=' || key[23] != '=' ||
        EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18)
        return -1;
    char text[24 + sizeof(guid)];
    memcpy(text, key, 24);
    memcpy(text + 24, guid, sizeof(guid));
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(text, 24 + sizeof(guid) - 1, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, md, 20) == 28 ? 0 : -1;
}

static exo_ws_t *session_new(exo_conn_t *c)
{
    static const struct wslay_event_callbacks callbacks = {
        .recv_callback = on_recv,
        .send_callback = on_send,
        .on_frame_recv_start_callback = on_frame_start,
        .on_msg_recv_callback = on_message,
    };
    if (table_ == NULL && (table_ = calloc(WS_TABLE_SIZE, sizeof(*table_))) == NULL) return NULL;
    exo_ws_t *ws = calloc(1, sizeof(*ws));
    if (ws == NULL) return NULL;
    if (wslay_event_context_server_init(&ws->ctx, &callbacks, ws) != 0) {
        free(ws);
        return NULL;
    }
    /* wslay buffers a whole message before handing it over; this bounds that buffer, for a
     * single frame and for the sum of a fragmented message's frames alike. */
    wslay_event_config_set_max_recv_msg_length(ws->ctx, c->srv->cfg->ws_max_message);
    ws->conn = c;
    ws->id = ++next_id_;
    return ws;
}

void exo_ws_upgrade(exo_req_t *r)
{
    exo_conn_t *c = r->conn;
    const exo_config_t *cfg = c->srv->cfg;
    char accept[29];
    const char *refusal = NULL;
    int status = 400;
    r->keep_alive = 0; /* a refused upgrade closes: the client's next bytes are not HTTP */
    if (c->srv->draining) {
        status = 503;
        refusal = "the agent is shutting down";
    } else if (!has_token(r->upgrade_hdr, "websocket")) {
        refusal = "only WebSocket upgrades are served (Upgrade: websocket)";
    } else if (!r->upgrade) {
        refusal = "a WebSocket handshake needs Connection: Upgrade";
    } else if (strcmp(r->ws_version, "13") != 0) {
        status = 426;
        refusal = "only WebSocket version 13 is served (Sec-WebSocket-Version: 13)";
    } else if (accept_value(r->ws_key, accept) < 0) {
        refusal = "Sec-WebSocket-Key must be the base64 of 16 bytes";
    } else if (c->head != r || r->next != NULL) {
        refusal = "a WebSocket upgrade cannot follow other requests on one connection";
    } else if (cfg->cors_origins.n > 0 && (r->cors.origins > 0 || r->cors.too_long) &&
               !(r->cors.origins == 1 && !r->cors.too_long &&
                 exo_cors_origin_allowed(cfg, r->cors.origin, r->cors.origin_len))) {
        /* A browser page of an origin that [server] cors_origins does not list (browsers
         * always send Origin; other clients need not). Without the list, origins are not
         * checked: behind Exosphere's proxy it is empty on purpose, and a session has no
         * ambient authority to steal (no cookies: it logs in, or brings a token). */
        status = 403;
        refusal = "this origin is not in [server] cors_origins";
    } else if (n_sessions_ >= (int)cfg->ws_max_sessions) {
        status = 503;
        refusal = "the agent is at its WebSocket session limit ([websocket] max_sessions); retry "
                  "shortly";
    }
    if (refusal) {
        exo_info("%s: refused a request: %d WebSocket upgrade: %s (request %s)", c->peer, status,
                 refusal, r->request_id);
        exo_http_reply_text(r, status, refusal);
        return;
    }
    exo_ws_t *ws = session_new(c);
    if (ws == NULL) {
        exo_http_reply_text(r, 503, "out of memory");
        return;
    }
    exo_rpc_identity(r, &ws->identity);
    exo_rpc_source(r, ws->source, sizeof(ws->source));
    memcpy(ws->api_version, r->api_version, sizeof(ws->api_version));
    char resp[256];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Request-Id: %s\r\n\r\n",
                     accept, r->request_id);
    exo_debug("%s: WebSocket session %" PRId64 " opened (request %s)", c->peer, ws->id,
              r->request_id);
    ws->hash_next = *slot(ws->id);
    *slot(ws->id) = ws;
    n_sessions_++;
    exo_conn_upgrade(r, resp, (size_t)n, ws); /* frees r */
    if (!ws->stopped) set_timer(ws, cfg->ws_ping_interval_ms);
}

/* ---- the end --------------------------------------------------------------------------- */

void exo_ws_stop(exo_ws_t *ws)
{
    if (ws->stopped) return;
    ws->stopped = 1;
    table_remove(ws);
    exo_rpc_ws_cancel_all(ws);
}

void exo_ws_free(exo_ws_t *ws)
{
    exo_server_t *srv = ws->conn->srv;
    exo_debug("%s: WebSocket session %" PRId64 " ended", ws->conn->peer, ws->id);
    n_sessions_--;
    if (srv->vm) exo_lvm_session_closed(srv->vm, ws->id);
    wslay_event_context_free(ws->ctx);
    exo_identity_clear(&ws->identity);
    free(ws);
}
