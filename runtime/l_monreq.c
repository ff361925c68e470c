/* See l_monreq.h. */
#include "l_monreq.h"

#include <stdlib.h>
#include <string.h>

#include "monclient.h"

int exo_monreq_fail(lua_State *L, const char *code, const char *message)
{
    lua_pushnil(L);
    lua_pushstring(L, code);
    lua_pushstring(L, message);
    return 3;
}

typedef struct pending_s {
    exo_call_t *call;
    uint32_t op;
    exo_monreq_push ok, err;
} pending_t;

static void on_answer(void *data, int status, const exo_priv_msg_t *m)
{
    pending_t p = *(pending_t *)data;
    free(data);
    if (!exo_call_waiting(p.call)) {
        exo_call_abandon(p.call);
        return;
    }
    lua_State *co = exo_call_thread(p.call);
    int n;
    if (status < 0 || m->n < 1) {
        n = exo_monreq_fail(co, "unavailable", status < 0 ? strerror(-status) : "an empty answer");
    } else if (exo_priv_field_is(&m->f[0], "ok")) {
        n = p.ok(co, p.op, m);
        if (n < 0) n = exo_monreq_fail(co, "failed", "the monitor's answer was malformed");
    } else {
        n = p.err(co, p.op, m);
    }
    exo_call_resume(p.call, n);
}

int exo_monreq(lua_State *L, exo_call_t *c, uint32_t op, const exo_priv_field_t *f, size_t n,
               exo_monreq_push ok, exo_monreq_push err)
{
    if (!exo_mon_available())
        return exo_monreq_fail(L, "unavailable", exo_mon_unavailable_reason());
    pending_t *p = malloc(sizeof(*p));
    if (p == NULL) return exo_monreq_fail(L, "failed", "out of memory");
    *p = (pending_t){.call = c, .op = op, .ok = ok, .err = err};
    /* The answer never comes inside exo_mon_request, so waiting may start after it. */
    int rc = exo_mon_request(op, f, n, on_answer, p);
    if (rc < 0) {
        free(p);
        return exo_monreq_fail(L, "unavailable", strerror(-rc));
    }
    exo_call_wait(c);
    return lua_yield(L, 0);
}
