/* The JSON-RPC 2.0 endpoint: envelope validation, batches run in order, notifications, and
 * ids echoed byte for byte from the request text (so integers beyond 2^53 survive). */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "server.h"

typedef struct span_s {
    const char *p;
    size_t len;
} span_t;

struct exo_rpc_s {
    exo_req_t *req;
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
};

static void rpc_free(exo_rpc_t *rpc)
{
    if (rpc->body_ref != LUA_NOREF)
        luaL_unref(exo_lvm_state(rpc->vm), LUA_REGISTRYINDEX, rpc->body_ref);
    exo_lvm_release(rpc->vm);
    if (rpc->spans != &rpc->single) free(rpc->spans);
    exo_buf_free(&rpc->out);
    free(rpc);
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
    exo_req_t *req = rpc->req;
    exo_buf_t body = EXO_BUF_INIT;
    int rc = 0;
    if (rpc->n_responses == 0) {
        rpc_free(rpc);
        exo_http_reply(req, 204, NULL, NULL, 0);
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
    rpc_free(rpc);
    if (rc)
        exo_http_reply(req, 503, NULL, "out of memory\n", 14);
    else
        exo_http_reply(req, 200, "application/json", body.data, body.len);
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

static void on_call_done(exo_call_t *call, void *data)
{
    exo_rpc_t *rpc = data;
    rpc->call = NULL;
    if (end_call(rpc, call) < 0) {
        exo_req_t *req = rpc->req;
        rpc_free(rpc);
        exo_http_reply(req, 503, NULL, "out of memory\n", 14);
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

    exo_req_t *req = rpc->req;
    char batch_id[64];
    const char *request_id = req->request_id;
    if (rpc->batch) {
        snprintf(batch_id, sizeof(batch_id), "%s/%zu", req->request_id, i + 1);
        request_id = batch_id;
    }
    exo_call_info_t info = {
        .request_id = request_id,
        .transport = exo_transport_name(req->conn->transport),
        .peer = req->conn->peer,
        .timeout_ms = req->conn->srv->cfg->call_timeout_ms,
    };
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
            exo_req_t *req = rpc->req;
            rpc_free(rpc);
            exo_http_reply(req, 503, NULL, "out of memory\n", 14);
            return;
        }
    }
    finish(rpc);
}

void exo_rpc_handle(exo_req_t *req)
{
    exo_server_t *srv = req->conn->srv;
    exo_rpc_t *rpc = calloc(1, sizeof(*rpc));
    if (rpc == NULL) {
        exo_http_reply(req, 503, NULL, "out of memory\n", 14);
        return;
    }
    rpc->req = req;
    rpc->vm = srv->vm;
    rpc->body_ref = LUA_NOREF;
    exo_lvm_retain(rpc->vm);
    req->rpc = rpc;

    lua_State *L = exo_lvm_state(rpc->vm);
    exo_json_err_t jerr;
    int rc = exo_json_decode(L, req->body.data ? req->body.data : "", req->body.len, &jerr);
    if (rc < 0) {
        if (rc == -ENOMEM) {
            rpc_free(rpc);
            req->rpc = NULL;
            exo_http_reply(req, 503, NULL, "out of memory\n", 14);
            return;
        }
        exo_info("%s: JSON-RPC parse error at byte %zu: %s (request %s)", req->conn->peer,
                 jerr.offset, jerr.msg, req->request_id);
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
        rpc->single.p = req->body.data;
        rpc->single.len = req->body.len;
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
            rpc_free(rpc);
            req->rpc = NULL;
            exo_http_reply(req, 503, NULL, "out of memory\n", 14);
            return;
        }
        size_t pos = 0, k = 0;
        while (k < n && exo_json_array_next(req->body.data, req->body.len, &pos, &rpc->spans[k].p,
                                            &rpc->spans[k].len))
            k++;
        rpc->n = k;
    }
    rpc->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    run_entries(rpc);
}

void exo_rpc_cancel(exo_req_t *req)
{
    exo_rpc_t *rpc = req->rpc;
    if (rpc == NULL) return;
    req->rpc = NULL;
    if (rpc->call) {
        exo_call_cancel(rpc->call);
        exo_call_release(rpc->call);
    }
    rpc_free(rpc);
}
