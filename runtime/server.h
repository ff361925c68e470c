/* The serving process: listeners, connections, HTTP requests, and the lifecycle (start,
 * reload, drain). http.c implements connections and requests, server.c listeners and
 * signals, rpc.c the JSON-RPC endpoint. */
#ifndef EXO_SERVER_H
#define EXO_SERVER_H

#include <llhttp.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "buf.h"
#include "config.h"
#include "cors.h"
#include "lvm.h"

typedef struct exo_server_s exo_server_t;
typedef struct exo_conn_s exo_conn_t;
typedef struct exo_req_s exo_req_t;

/* The longest Exosphere-Agent-Version value kept (a version is "YYYY-MM-DD"). */
#define EXO_API_VERSION_MAX 40
typedef struct exo_rpc_s exo_rpc_t;

typedef enum { EXO_TRANSPORT_HTTPS, EXO_TRANSPORT_HTTP, EXO_TRANSPORT_UNIX } exo_transport_t;

/* A listening or connected stream, TCP or Unix, seen as whichever libuv type a call needs. */
typedef union exo_stream_u {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
} exo_stream_u;

/* What the process that starts the agent prepares before any network input is read: the TLS
 * context and the listening sockets. As root the monitor prepares them and every worker it
 * forks inherits them, so the sockets stay open (and queue connections) across a worker
 * restart; without root the one process prepares and serves. */
typedef struct exo_listen_fd_s {
    int fd;
    exo_transport_t transport;
    char name[160];
} exo_listen_fd_t;

typedef struct exo_prepared_s {
    SSL_CTX *ssl_ctx;
    char tls_fingerprint[100];
    exo_listen_fd_t fds[65];
    size_t n_fds;
    char *unix_path; /* the socket file this process created, removed at the end */
} exo_prepared_t;

/* Creates the state directory, loads or makes the TLS certificate, and opens every listening
 * socket of cfg. Returns 0 or a negative errno with a message in err (p is then closed). */
int exo_prepare(const exo_config_t *cfg, exo_prepared_t *p, char *err, size_t errlen);
/* Closes the sockets, removes the Unix socket file and frees the TLS context. */
void exo_prepared_close(exo_prepared_t *p);
/* Runs the serving side (the worker) on the prepared sockets until it stops; monitor_fd is
 * the socket to the monitor, or -1 when there is none. Returns the exit code. */
int exo_worker_run(exo_config_t *cfg, int dev, exo_prepared_t *p, int monitor_fd);

typedef struct exo_listener_s {
    exo_stream_u h;
    exo_server_t *srv;
    exo_transport_t transport;
    char name[160];
} exo_listener_t;

struct exo_server_s {
    uv_loop_t *loop;
    exo_config_t *cfg;
    int dev;
    SSL_CTX *ssl_ctx; /* borrowed from the exo_prepared_t */
    const char *tls_fingerprint;
    exo_lvm_t *vm; /* the current VM; new calls start on it */
    exo_runtime_info_t rt;
    exo_listener_t *listeners;
    size_t n_listeners;
    exo_conn_t *conns; /* every open connection, for draining */
    int n_conns;       /* connections served normally */
    int n_rejecting;   /* connections over the limit, answered 503 */
    int draining;
    int handles_ready; /* signals and timers were initialised */
    int exit_code;
    uint64_t request_seq;
    char id_prefix[12];
    char read_buf[65536]; /* shared: every read is consumed before the next one */
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t drain_timer, cpu_timer, watch_timer;
    uv_fs_event_t watches[17]; /* --dev: the method directories */
    size_t n_watches;
    uint64_t ready_ms; /* uv_now() when listening started */
};

typedef enum { CONN_HEADERS, CONN_BODY, CONN_IDLE, CONN_LINGER } exo_conn_phase_t;

struct exo_conn_s {
    exo_stream_u h;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    exo_server_t *srv;
    exo_conn_t *prev, *next;
    exo_transport_t transport;
    SSL *ssl;
    BIO *rbio, *wbio;
    llhttp_t parser;
    exo_req_t *cur;         /* the request being parsed */
    exo_req_t *head, *tail; /* parsed requests, answered in this order */
    int n_queued;
    exo_buf_t pending; /* received bytes not parsed yet (parser paused) */
    exo_conn_phase_t phase;
    size_t header_bytes;
    char field[64]; /* the header name being read, lower case */
    size_t field_len;
    int field_overflow;
    int value_target; /* which header the value belongs to, see http.c */
    int error_status; /* set by a parser callback that refuses the request */
    int writes_pending;
    int paused, reading, closing, close_after_write, rejecting, shut_down;
    char peer[72];
    char peer_ip[64]; /* TCP peers: the address alone, as text */
    uid_t peer_uid;   /* Unix socket peers only, else (uid_t)-1 */
    /* The Unix socket peer's identity, looked up (passwd, groups) at its first request. */
    struct exo_identity_s *peer_identity;
    struct exo_ws_s *ws; /* set once the connection is a WebSocket session (ws.c) */
};

struct exo_req_s {
    exo_req_t *next;
    exo_conn_t *conn;
    uint8_t method;
    int keep_alive;
    int ready;
    int expect_continue;
    char path[256];
    char content_type[96];
    char request_id[32];
    exo_buf_t body;
    exo_buf_t authorization; /* the Authorization header's value; wiped when freed */
    int authorization_count;
    char forwarded_for[256]; /* the tail of X-Forwarded-For */
    unsigned retry_after_s;  /* Retry-After of a 429 or 503 answer; 0 means 1 */
    exo_buf_t resp;          /* the whole response, once ready */
    exo_rpc_t *rpc;          /* in flight on /rpc */
    exo_cors_req_t cors;     /* the request's Origin and whether it is a CORS preflight */
    int upgrade;             /* llhttp saw Connection: upgrade with an Upgrade header */
    char upgrade_hdr[32];    /* the Upgrade header's value (cut) */
    char ws_key[32];         /* Sec-WebSocket-Key (cut: a valid one has 24 characters) */
    char ws_version[8];      /* Sec-WebSocket-Version */
    /* Exosphere-Agent-Version (cut; repeated headers joined by ",", which no version matches) */
    char api_version[EXO_API_VERSION_MAX];
    int api_version_count;
};

/* Server lifecycle (server.c). exo_server_start returns 0 or a negative errno with a message
 * in err; exo_server_run runs the loop until a drain ends and returns the exit code. */
int exo_server_start(exo_server_t *srv, uv_loop_t *loop, exo_config_t *cfg, int dev,
                     exo_prepared_t *p, char *err, size_t errlen);
int exo_server_run(exo_server_t *srv);
void exo_server_close(exo_server_t *srv);
/* Builds a new VM from the method directories and, if it loads, makes it current. */
int exo_server_reload(exo_server_t *srv);

/* Connections (http.c). */
void exo_conn_accept(exo_listener_t *l);
/* Closes connections that have no request in flight (used when draining). */
void exo_conn_close_idle(exo_server_t *srv);
/* Closes every connection, cancelling the calls still running for them. */
void exo_conn_close_all(exo_server_t *srv);
/* Completes req with a response; the body is copied. Responses leave in request order. */
void exo_http_reply(exo_req_t *req, int status, const char *content_type, const char *body,
                    size_t len);
/* Completes req with a short plain-text body (a newline is added). */
void exo_http_reply_text(exo_req_t *req, int status, const char *text);
const char *exo_transport_name(exo_transport_t t);
/* For WebSocket sessions (ws.c). exo_conn_upgrade sends the 101 response, frees req (the only
 * request of c) and hands the connection's input to ws. exo_conn_send sends bytes (through TLS
 * when there is TLS); exo_conn_unsent says how many wait in the write queue; exo_conn_end
 * closes in order once they are written (TLS close_notify, FIN); exo_conn_abort closes now. */
void exo_conn_upgrade(exo_req_t *req, const char *resp, size_t len, struct exo_ws_s *ws);
void exo_conn_send(exo_conn_t *c, const char *data, size_t len);
size_t exo_conn_unsent(exo_conn_t *c);
void exo_conn_end(exo_conn_t *c);
void exo_conn_abort(exo_conn_t *c);

/* The JSON-RPC endpoint (rpc.c): handles req's body and eventually calls exo_http_reply. */
void exo_rpc_handle(exo_req_t *req);
/* POST /auth: a login with the Basic credentials of the Authorization header. */
void exo_rpc_auth(exo_req_t *req);
/* The connection went away: stops the calls of req; exo_http_reply will not be called. */
void exo_rpc_cancel(exo_req_t *req);
/* The identity a request starts with (a Bearer token, else the Unix socket's peer), and the
 * client's address as logs name it (the peer, or X-Forwarded-For from a trusted proxy). */
void exo_rpc_identity(exo_req_t *req, struct exo_identity_s *id);
void exo_rpc_source(const exo_req_t *req, char *out, size_t cap);

#endif
