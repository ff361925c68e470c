/* WebSocket sessions (RFC 6455, through wslay's event API) on the worker's connections.
 *
 * `GET /rpc` with `Upgrade: websocket` turns an HTTP connection (TLS, plain or the Unix socket)
 * into a session: each text message is one JSON-RPC request or batch, answered in one text
 * frame when its calls end (messages run concurrently; ids tell the answers apart). The session
 * keeps one identity for its lifetime: the upgrade request's, changed by in-band
 * authenticate.login / authenticate.token / authenticate.logout. The agent pings every
 * [websocket] ping_interval and closes peers that do not answer; sizes in and out are bounded
 * by max_message and max_queued. Lua reaches sessions by integer id (exo.core session_send,
 * session_close), and host.session_closed(id) runs when one ends. */
#ifndef EXO_WS_H
#define EXO_WS_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "server.h"

typedef struct exo_ws_s exo_ws_t;

struct exo_ws_s {
    int64_t id; /* the session id Lua sees (ctx.session); never reused in a process */
    exo_conn_t *conn;
    struct wslay_event_context *ctx;
    exo_identity_t identity; /* who the session's calls run as */
    char source[130];        /* the client's address for logs, from the upgrade request */
    exo_rpc_t *rpcs;         /* messages whose calls are running (rpc.c links them) */
    int n_rpcs;
    const char *in; /* the received bytes wslay is reading now */
    size_t in_len;
    uint64_t msg_bytes;  /* bytes of the data message being received so far */
    uint64_t ping_sent;  /* uv_now() of the unanswered ping, 0 when none */
    int closing;         /* a close frame is queued: no more messages in or out */
    int draining;        /* the agent stops: close with 1001 once the calls have answered */
    int stopped;         /* the connection is closing: nothing more is sent */
    int in_recv;         /* inside wslay_event_recv */
    uint16_t close_code; /* the code of the close the agent started, for the log */
    exo_ws_t *hash_next; /* the id table's chain */
    /* The session's API version: the upgrade request's Exosphere-Agent-Version, or what
     * rpc.hello set ("" for the current one). Kept here, not in Lua, so that a methods reload
     * does not change it. */
    char api_version[EXO_API_VERSION_MAX];
    uint64_t calls; /* calls started on the session so far (rpc.hello must be the first) */
};

/* route(): a GET /rpc carrying an Upgrade header. Checks the handshake and either answers it
 * with an HTTP error (400, 426, 503) or sends 101 and makes the connection a session. */
void exo_ws_upgrade(exo_req_t *req);
/* http.c: bytes received on a session's connection (after TLS). */
void exo_ws_feed(exo_ws_t *ws, const char *data, size_t len);
/* http.c: the agent is draining. A session without calls in flight is closed with 1001 "going
 * away" now, the others once their last answer is sent. */
void exo_ws_drain(exo_ws_t *ws);
/* http.c conn_close: the connection is closing; running calls are cancelled and nothing more
 * is sent. The session stays allocated until exo_ws_free. */
void exo_ws_stop(exo_ws_t *ws);
/* http.c, once the connection's handles are closed: runs host.session_closed(id) (never from
 * inside a call) and frees the session. */
void exo_ws_free(exo_ws_t *ws);

/* rpc.c: a message's calls have ended. status 200 sends text as one text frame, 204 sends
 * nothing (only notifications), anything else is an internal failure that closes the session
 * with 1011. */
void exo_ws_answer(exo_ws_t *ws, int status, const char *text, size_t len);
/* rpc.c (exo_rpc_ws_message): starts the calls of one text message of the session. */
void exo_rpc_ws_message(exo_ws_t *ws, const char *text, size_t len);
/* rpc.c: cancels every call running for the session (when it stops). */
void exo_rpc_ws_cancel_all(exo_ws_t *ws);

/* For exo.core. Sends text as one text frame on session id, after everything sent before it.
 * Returns 1, or 0 when there is no such session or it is closing; a send that would leave more
 * than max_queued bytes unsent closes the session with 1008 and returns 0. */
int exo_ws_send(int64_t id, const char *text, size_t len);
/* Starts closing session id with code (1000 or 3000-4999) and a reason of at most 123 bytes.
 * Returns 1, or 0 when there is no such session or it is already closing. */
int exo_ws_close(int64_t id, uint16_t code, const char *reason, size_t reason_len);
/* Sets session id's API version (rpc.hello, which checked it). Returns 0 when the session is
 * gone. */
int exo_ws_set_api_version(int64_t id, const char *version, size_t len);
/* Open sessions in this process. */
int exo_ws_count(void);

#endif
