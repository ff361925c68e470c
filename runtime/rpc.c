/* The JSON-RPC 2.0 endpoint: envelope validation, batches run in order, notifications, and
 * ids echoed byte for byte from the request text (so integers beyond 2^53 survive). */
#include <errno.h>
#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "auth.h"
#include "log.h"
#include "server.h"
#include "token.h"
#include "ws.h"

typedef struct span_s {
    const char *p;
    size_t len;
} span_t;

struct exo_rpc_s {
    exo_req_t *req;               /* POST /rpc or /auth; NULL for a WebSocket message */
    exo_ws_t *ws;                 /* the session of a WebSocket message */
    exo_rpc_t *ws_prev, *ws_next; /* the session's messages in flight */
    exo_conn_t *conn;
    const char *request_id; /* the request's, or msg_id */
    char msg_id[32];
    exo_buf_t msg;       /* a WebSocket message's text, owned (spans point into it) */
    exo_identity_t *who; /* &identity over HTTP; the session's identity over WebSocket */
    exo_lvm_t *vm;
    int body_ref;
    int batch;
    size_t n, next;
    span_t *spans;
    span_t single;
    exo_call_t *call; /* the entry running now, if it waits */
    span_t cur_id;    /* raw id text of that entry; len 0 for a notification */
    exo_buf_t out;
    int n_responses;
    exo_identity_t identity; /* who calls; a login in the batch changes it for later entries */
    char source[130];        /* the client's address, for login logs */
    char api_version[EXO_API_VERSION_MAX]; /* the request's Exosphere-Agent-Version */
};

static void rpc_free(exo_rpc_t *rpc)
{
    if (rpc->ws) {
        if (rpc->ws_prev)
            rpc->ws_prev->ws_next = rpc->ws_next;
        else
            rpc->ws->rpcs = rpc->ws_next;
        if (rpc->ws_next) rpc->ws_next->ws_prev = rpc->ws_prev;
        rpc->ws->n_rpcs--;
    }
    /* A message may hold a password (authenticate.login). */
    if (rpc->msg.data) OPENSSL_cleanse(rpc->msg.data, rpc->msg.len);
    exo_buf_free(&rpc->msg);
    if (rpc->body_ref != LUA_NOREF)
        luaL_unref(exo_lvm_state(rpc->vm), LUA_REGISTRYINDEX, rpc->body_ref);
    exo_lvm_release(rpc->vm);
    if (rpc->spans != &rpc->single) free(rpc->spans);
    exo_buf_free(&rpc->out);
    exo_identity_clear(&rpc->identity);
    free(rpc);
}

/* The JSON-RPC state of a request (POST /rpc or /auth), on the current VM; NULL after answering
 * 503 when there is no memory for it. */
static exo_rpc_t *rpc_new(exo_req_t *req)
{
    exo_rpc_t *rpc = calloc(1, sizeof(*rpc));
    if (rpc == NULL) {
        exo_http_reply(req, 503, NULL, "out of memory\n", 14);
        return NULL;
    }
    rpc->req = req;
    rpc->conn = req->conn;
    rpc->request_id = req->request_id;
    rpc->who = &rpc->identity;
    rpc->vm = req->conn->srv->vm;
    rpc->body_ref = LUA_NOREF;
    exo_lvm_retain(rpc->vm);
    req->rpc = rpc;
    exo_rpc_source(req, rpc->source, sizeof(rpc->source));
    memcpy(rpc->api_version, req->api_version, sizeof(rpc->api_version));
    return rpc;
}

/* Ends rpc (freed first) with an HTTP answer, or over WebSocket with the answer's frame: 200
 * with body, 204 for notifications only, 503 when memory ran out. */
static void rpc_end(exo_rpc_t *rpc, int status, const char *body, size_t len)
{
    exo_req_t *req = rpc->req;
    exo_ws_t *ws = rpc->ws;
    rpc_free(rpc);
    if (ws) {
        exo_ws_answer(ws, status, body, len);
        return;
    }
    req->rpc = NULL;
    if (status == 503)
        exo_http_reply(req, 503, NULL, "out of memory\n", 14);
    else
        exo_http_reply(req, status, status == 200 ? "application/json" : NULL, body, len);
}

/* What a call of this request runs with. */
static exo_call_info_t call_info(exo_rpc_t *rpc, const char *request_id)
{
    exo_conn_t *conn = rpc->conn;
    return (exo_call_info_t){
        .request_id = request_id,
        .transport = exo_transport_name(conn->transport),
        .peer = conn->peer,
        .source = rpc->ws ? rpc->ws->source : rpc->source,
        .timeout_ms = conn->srv->cfg->call_timeout_ms,
        .identity = rpc->who,
        .session = rpc->ws ? rpc->ws->id : 0,
        .api_version = rpc->ws ? rpc->ws->api_version : rpc->api_version,
        .session_calls = rpc->ws ? rpc->ws->calls : 0,
    };
}

/* Opens one response object in rpc->out: the separator, the version and the id. */
static int open_response(exo_rpc_t *rpc, const char *id, size_t id_len)
{
    int rc = 0;
    if (rpc->n_responses++ > 0) rc |= exo_buf_appendc(&rpc->out, ',');
    rc |= exo_buf_appends(&rpc->out, "{\"jsonrpc\":\"2.0\",\"id\":");
    rc |= exo_buf_append(&rpc->out, id, id_len);
    rc |= exo_buf_appendc(&rpc->out, ',');
    return rc ? -ENOMEM : 0;
}

static int append_error(exo_rpc_t *rpc, const char *id, size_t id_len, int code,
                        const char *message, const char *reason)
{
    if (open_response(rpc, id, id_len) < 0) return -ENOMEM;
    /* reason is one of this file's fixed strings, or a JSON decoder message: neither holds
     * a quote or a backslash, so it is written as is. */
    if (reason)
        return exo_buf_printf(&rpc->out,
                              "\"error\":{\"code\":%d,\"message\":\"%s\",\"data\":{\"reason\":"
                              "\"%s\"}}}",
                              code, message, reason);
    return exo_buf_printf(&rpc->out, "\"error\":{\"code\":%d,\"message\":\"%s\"}}", code, message);
}

static void finish(exo_rpc_t *rpc)
{
    exo_buf_t body = EXO_BUF_INIT;
    int rc = 0;
    if (rpc->n_responses == 0) {
        rpc_end(rpc, 204, NULL, 0);
        return;
    }
    if (rpc->batch) {
        rc |= exo_buf_appendc(&body, '[');
        rc |= exo_buf_append(&body, rpc->out.data, rpc->out.len);
        rc |= exo_buf_appendc(&body, ']');
    } else {
        body = rpc->out;
        rpc->out = (exo_buf_t)EXO_BUF_INIT;
    }
    if (rc)
        rpc_end(rpc, 503, NULL, 0);
    else
        rpc_end(rpc, 200, body.data, body.len);
    exo_buf_free(&body);
}

static int end_call(exo_rpc_t *rpc, exo_call_t *call)
{
    int rc = 0;
    if (rpc->cur_id.len > 0) {
        rc = open_response(rpc, rpc->cur_id.p, rpc->cur_id.len);
        if (rc == 0) rc = exo_call_write_outcome(call, &rpc->out);
        if (rc == 0) rc = exo_buf_appendc(&rpc->out, '}');
    }
    exo_call_release(call);
    return rc;
}

static void run_entries(exo_rpc_t *rpc);
static void recheck_token(exo_identity_t *id);

static void on_call_done(exo_call_t *call, void *data)
{
    exo_rpc_t *rpc = data;
    rpc->call = NULL;
    if (end_call(rpc, call) < 0) {
        rpc_end(rpc, 503, NULL, 0);
        return;
    }
    run_entries(rpc);
}

/* Checks one entry (the value at the top of L) and starts its call. Returns 1 when the entry
 * is answered or ended, 0 when its call waits, or -ENOMEM. Pops the entry. */
static int run_entry(exo_rpc_t *rpc, lua_State *L, size_t i)
{
    static const char null_id[] = "null";
    const span_t *raw = &rpc->spans[i];
    const char *id = null_id;
    size_t id_len = 4;
    int has_id = exo_json_object_member(raw->p, raw->len, "id", &id, &id_len);
    int rc = 1;

    /* stack: entry */
    if (!lua_istable(L, -1) || lua_getmetatable(L, -1)) {
        if (lua_istable(L, -1)) lua_pop(L, 1); /* the array metatable */
        lua_pop(L, 1);
        return append_error(rpc, null_id, 4, -32600, "Invalid Request",
                            "a request must be a JSON object") < 0
                   ? -ENOMEM
                   : 1;
    }
    const char *why = NULL;
    lua_getfield(L, -1, "id");
    int t = lua_type(L, -1);
    if (has_id && t != LUA_TSTRING && t != LUA_TNUMBER && !lua_islightuserdata(L, -1)) {
        why = "id must be a string, a number or null";
        id = null_id;
        id_len = 4;
    }
    lua_getfield(L, -2, "jsonrpc");
    if (!why && (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "2.0") != 0))
        why = "jsonrpc must be exactly \\\"2.0\\\"";
    lua_getfield(L, -3, "method");
    if (!why && lua_type(L, -1) != LUA_TSTRING) why = "method must be a string";
    lua_getfield(L, -4, "params");
    if (!why && !lua_isnil(L, -1) && !lua_istable(L, -1))
        why = "params must be an array or an object";
    /* stack: entry, id, jsonrpc, method, params */
    if (why) {
        lua_pop(L, 5);
        return append_error(rpc, id, id_len, -32600, "Invalid Request", why) < 0 ? -ENOMEM : 1;
    }
    size_t name_len;
    const char *name = lua_tolstring(L, -2, &name_len);
    rpc->cur_id.p = has_id ? id : NULL;
    rpc->cur_id.len = has_id ? id_len : 0;

    char batch_id[64];
    const char *request_id = rpc->request_id;
    if (rpc->batch) {
        snprintf(batch_id, sizeof(batch_id), "%s/%zu", rpc->request_id, i + 1);
        request_id = batch_id;
    }
    if (rpc->ws) recheck_token(rpc->who);
    exo_call_info_t info = call_info(rpc, request_id);
    if (rpc->ws) rpc->ws->calls++;
    exo_call_t *call;
    /* exo_call_start pops params; the name stays valid: the entry table still holds it. */
    int started = exo_call_start(rpc->vm, name, name_len, &info, on_call_done, rpc, &call);
    lua_pop(L, 4);
    if (started < 0)
        return append_error(rpc, id, has_id ? id_len : 4, -32603, "Internal error", NULL) < 0
                   ? -ENOMEM
                   : 1;
    if (started == 0) {
        rpc->call = call;
        return 0;
    }
    if (end_call(rpc, call) < 0) return -ENOMEM;
    return rc;
}

static void run_entries(exo_rpc_t *rpc)
{
    lua_State *L = exo_lvm_state(rpc->vm);
    while (rpc->next < rpc->n) {
        size_t i = rpc->next++;
        lua_rawgeti(L, LUA_REGISTRYINDEX, rpc->body_ref);
        if (rpc->batch) {
            lua_rawgeti(L, -1, (lua_Integer)i + 1);
            lua_remove(L, -2);
        }
        int rc = run_entry(rpc, L, i);
        if (rc == 0) return;
        if (rc < 0) {
            rpc_end(rpc, 503, NULL, 0);
            return;
        }
    }
    finish(rpc);
}

/* The address logs name for the client: the peer, or with a trusted proxy in front the last
 * X-Forwarded-For entry (the one that proxy added) followed by the proxy. */
void exo_rpc_source(const exo_req_t *req, char *out, size_t cap)
{
    exo_conn_t *conn = req->conn;
    if (conn->transport == EXO_TRANSPORT_UNIX) {
        snprintf(out, cap, "%s", conn->peer);
        return;
    }
    const char *ff = req->forwarded_for;
    if (ff[0] && exo_config_is_trusted_proxy(conn->srv->cfg, conn->peer_ip)) {
        const char *last = strrchr(ff, ',');
        last = last ? last + 1 : ff;
        while (*last == ' ' || *last == '\t')
            last++;
        size_t len = strcspn(last, " \t");
        int ok = len > 0 && len <= 45 && strspn(last, "0123456789abcdefABCDEF.:") >= len;
        if (ok) {
            snprintf(out, cap, "%.*s(proxy:%s)", (int)len, last, conn->peer_ip);
            return;
        }
    }
    snprintf(out, cap, "%s", conn->peer_ip[0] ? conn->peer_ip : "?");
}

/* The identity the request starts with: a bearer token, else the Unix socket's peer. */
void exo_rpc_identity(exo_req_t *req, exo_identity_t *id)
{
    if (req->authorization_count > 1) {
        id->error = "more than one Authorization header";
        return;
    }
    if (req->authorization_count == 1) {
        const char *v = req->authorization.data ? req->authorization.data : "";
        size_t len = req->authorization.len;
        while (len > 0 && (*v == ' ' || *v == '\t')) {
            v++;
            len--;
        }
        while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
            len--;
        if (len > 7 && strncasecmp(v, "Bearer ", 7) == 0) {
            v += 7;
            len -= 7;
            while (len > 0 && *v == ' ') {
                v++;
                len--;
            }
            exo_identity_from_token(id, v, len);
        } else {
            id->error = "the Authorization header is not a Bearer token (log in with POST /auth "
                        "or authenticate.login)";
        }
        return;
    }
    exo_conn_t *conn = req->conn;
    if (conn->transport != EXO_TRANSPORT_UNIX || conn->peer_uid == (uid_t)-1) return;
    /* Once per connection: the account databases are not read again for every request. */
    if (conn->peer_identity == NULL) {
        conn->peer_identity = calloc(1, sizeof(*conn->peer_identity));
        if (conn->peer_identity == NULL) {
            id->error = "out of memory";
            return;
        }
        exo_identity_from_uid(conn->peer_identity, conn->peer_uid);
    }
    if (exo_identity_copy(id, conn->peer_identity) < 0) id->error = "out of memory";
}

/* Decodes a request or batch (body, len bytes, kept until rpc ends) and runs its entries. */
static void rpc_run(exo_rpc_t *rpc, const char *body, size_t len)
{
    exo_server_t *srv = rpc->conn->srv;
    lua_State *L = exo_lvm_state(rpc->vm);
    exo_json_err_t jerr;
    int rc = exo_json_decode(L, body ? body : "", len, &jerr);
    if (rc < 0) {
        if (rc == -ENOMEM) {
            rpc_end(rpc, 503, NULL, 0);
            return;
        }
        exo_info("%s: JSON-RPC parse error at byte %zu: %s (request %s)", rpc->conn->peer,
                 jerr.offset, jerr.msg, rpc->request_id);
        char reason[200];
        snprintf(reason, sizeof(reason), "%s at byte %zu", jerr.msg, jerr.offset);
        for (char *p = reason; *p; p++)
            if (*p == '"' || *p == '\\') *p = '\'';
        append_error(rpc, "null", 4, -32700, "Parse error", reason);
        finish(rpc);
        return;
    }
    /* stack: body */
    rpc->batch = exo_json_is_array(L, -1);
    if (!rpc->batch) {
        rpc->single.p = body;
        rpc->single.len = len;
        rpc->spans = &rpc->single;
        rpc->n = 1;
    } else {
        size_t n = lua_rawlen(L, -1);
        const char *why = NULL;
        if (n == 0)
            why = "an empty batch";
        else if (n > srv->cfg->max_batch)
            why = "the batch has more entries than the max_batch setting allows";
        if (why) {
            lua_pop(L, 1);
            rpc->batch = 0;
            append_error(rpc, "null", 4, -32600, "Invalid Request", why);
            finish(rpc);
            return;
        }
        rpc->spans = calloc(n, sizeof(*rpc->spans));
        if (rpc->spans == NULL) {
            lua_pop(L, 1);
            rpc_end(rpc, 503, NULL, 0);
            return;
        }
        size_t pos = 0, k = 0;
        while (k < n && exo_json_array_next(body, len, &pos, &rpc->spans[k].p, &rpc->spans[k].len))
            k++;
        rpc->n = k;
    }
    rpc->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    run_entries(rpc);
}

void exo_rpc_handle(exo_req_t *req)
{
    exo_rpc_t *rpc = rpc_new(req);
    if (rpc == NULL) return;
    exo_rpc_identity(req, &rpc->identity);
    rpc_run(rpc, req->body.data, req->body.len);
}

static void rpc_cancel(exo_rpc_t *rpc)
{
    if (rpc->call) {
        exo_call_cancel(rpc->call);
        exo_call_release(rpc->call);
    }
    rpc_free(rpc);
}

void exo_rpc_cancel(exo_req_t *req)
{
    exo_rpc_t *rpc = req->rpc;
    if (rpc == NULL) return;
    req->rpc = NULL;
    rpc_cancel(rpc);
}

/* ---- WebSocket messages ---------------------------------------------------------------- */

/* A session keeps its identity for hours: before each call its token is checked again, so
 * that one which expired (or was revoked by a logout elsewhere) stops working at once, with
 * the same refusal as over HTTP. */
static void recheck_token(exo_identity_t *id)
{
    if (!id->set || id->token == NULL) return;
    const unsigned char *key = exo_auth_key();
    exo_token_claims_t claims;
    exo_token_status_t st = key ? exo_token_verify(key, id->token, strlen(id->token),
                                                   (int64_t)time(NULL), exo_auth_revoked(), &claims)
                                : EXO_TOKEN_BAD_SIGNATURE;
    if (st == EXO_TOKEN_VALID) return;
    exo_identity_clear(id);
    id->error = exo_token_status_reason(st);
}

void exo_rpc_ws_message(exo_ws_t *ws, const char *text, size_t len)
{
    exo_server_t *srv = ws->conn->srv;
    exo_rpc_t *rpc = calloc(1, sizeof(*rpc));
    if (rpc == NULL) {
        exo_ws_answer(ws, 503, NULL, 0);
        return;
    }
    rpc->ws = ws;
    rpc->conn = ws->conn;
    rpc->who = &ws->identity;
    rpc->ws_next = ws->rpcs;
    if (ws->rpcs) ws->rpcs->ws_prev = rpc;
    ws->rpcs = rpc;
    ws->n_rpcs++;
    snprintf(rpc->msg_id, sizeof(rpc->msg_id), "%s-%llu", srv->id_prefix,
             (unsigned long long)++srv->request_seq);
    rpc->request_id = rpc->msg_id;
    rpc->vm = srv->vm;
    rpc->body_ref = LUA_NOREF;
    exo_lvm_retain(rpc->vm);
    if (exo_buf_append(&rpc->msg, text, len) < 0) {
        rpc_end(rpc, 503, NULL, 0);
        return;
    }
    rpc_run(rpc, rpc->msg.data, rpc->msg.len);
}

void exo_rpc_ws_cancel_all(exo_ws_t *ws)
{
    while (ws->rpcs)
        rpc_cancel(ws->rpcs);
}

/* ---- POST /auth ---------------------------------------------------------------------------- */

/* Answers /auth from the outcome of authenticate.login: the result itself with 200, or
 * {"error": {...}} with the status that says the same thing in HTTP. Never WWW-Authenticate:
 * a browser would prompt for a password. */
static void auth_reply(exo_rpc_t *rpc, exo_call_t *call)
{
    exo_req_t *req = rpc->req;
    exo_buf_t body = EXO_BUF_INIT;
    int status = 500, rc = exo_call_write_outcome(call, &rpc->out);
    exo_call_release(call);
    const char *text = rpc->out.data;
    size_t len = rpc->out.len;
    if (rc == 0 && len > 9 && memcmp(text, "\"result\":", 9) == 0) {
        status = 200;
        rc = exo_buf_append(&body, text + 9, len - 9);
    } else if (rc == 0 && len > 8 && memcmp(text, "\"error\":", 8) == 0) {
        const char *v, *data;
        size_t vlen, dlen;
        long code = 0;
        if (exo_json_object_member(text + 8, len - 8, "code", &v, &vlen))
            code = strtol(v, NULL, 10);
        status = code == -32001                     ? 401
                 : code == -32002                   ? 403
                 : code == -32007                   ? 429
                 : code == -32005 || code == -32009 ? 503
                 : code == -32602                   ? 400
                                                    : 500;
        if (exo_json_object_member(text + 8, len - 8, "data", &data, &dlen) &&
            exo_json_object_member(data, dlen, "retry_after_ms", &v, &vlen)) {
            long ms = strtol(v, NULL, 10);
            req->retry_after_s = ms > 0 ? (unsigned)((ms + 999) / 1000) : 1;
        }
        rc = exo_buf_appends(&body, "{");
        if (rc == 0) rc = exo_buf_append(&body, text, len);
        if (rc == 0) rc = exo_buf_appends(&body, "}");
    } else {
        rc = -ENOMEM;
    }
    rpc_free(rpc);
    req->rpc = NULL;
    if (rc < 0)
        exo_http_reply(req, 503, NULL, "out of memory\n", 14);
    else
        exo_http_reply(req, status, "application/json", body.data, body.len);
    exo_buf_free(&body);
}

static void on_auth_done(exo_call_t *call, void *data)
{
    exo_rpc_t *rpc = data;
    rpc->call = NULL;
    auth_reply(rpc, call);
}

static void auth_refuse(exo_req_t *req, const char *reason)
{
    char body[512];
    int n = snprintf(body, sizeof(body),
                     "{\"error\":{\"code\":-32001,\"message\":\"Not authenticated\","
                     "\"data\":{\"reason\":\"%s\"}}}",
                     reason);
    exo_http_reply(req, 401, "application/json", body, (size_t)n);
}

void exo_rpc_auth(exo_req_t *req)
{
    const char *v = req->authorization.data ? req->authorization.data : "";
    size_t len = req->authorization.len;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (req->authorization_count != 1 || len < 7 || strncasecmp(v, "Basic ", 6) != 0) {
        auth_refuse(req, "POST /auth needs one Authorization: Basic header with user:password");
        return;
    }
    v += 6;
    len -= 6;
    while (len > 0 && *v == ' ') {
        v++;
        len--;
    }
    /* Base64 of at most 1024 + 34 bytes of user:password. */
    unsigned char plain[1500];
    int n = len > 0 && len % 4 == 0 && len <= 4 * ((sizeof(plain) - 1) / 3)
                ? EVP_DecodeBlock(plain, (const unsigned char *)v, (int)len)
                : -1;
    if (n >= 0 && len >= 1 && v[len - 1] == '=') n--;
    if (n >= 0 && len >= 2 && v[len - 2] == '=') n--;
    const unsigned char *colon = n > 0 ? memchr(plain, ':', (size_t)n) : NULL;
    if (colon == NULL) {
        OPENSSL_cleanse(plain, sizeof(plain));
        auth_refuse(req, "the Basic credentials are not base64 of user:password");
        return;
    }
    exo_rpc_t *rpc = rpc_new(req);
    if (rpc == NULL) {
        OPENSSL_cleanse(plain, sizeof(plain));
        return;
    }

    lua_State *L = exo_lvm_state(rpc->vm);
    /* The password splits at the first colon only: passphrases may hold colons and spaces. */
    size_t ulen = (size_t)(colon - plain);
    lua_createtable(L, 0, 2);
    lua_pushlstring(L, (const char *)plain, ulen);
    lua_setfield(L, -2, "username");
    lua_pushlstring(L, (const char *)colon + 1, (size_t)n - ulen - 1);
    lua_setfield(L, -2, "password");
    OPENSSL_cleanse(plain, sizeof(plain));
    exo_call_info_t info = call_info(rpc, req->request_id);
    static const char name[] = "authenticate.login";
    exo_call_t *call;
    int started = exo_call_start(rpc->vm, name, sizeof(name) - 1, &info, on_auth_done, rpc, &call);
    if (started < 0) {
        rpc_free(rpc);
        req->rpc = NULL;
        exo_http_reply(req, 503, NULL, "the login could not start\n", 26);
        return;
    }
    if (started == 0) {
        rpc->call = call;
        return;
    }
    auth_reply(rpc, call);
}
