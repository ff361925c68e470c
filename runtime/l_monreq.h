/* A binding's monitor request from inside a call (l_mounts.c, l_packages.c): send, yield, and
 * resume the call with what the binding pushes for the answer. Expected failures are the
 * bindings' common convention: nil, code, message. */
#ifndef EXO_L_MONREQ_H
#define EXO_L_MONREQ_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "lvm.h"
#include "privsep.h"

/* Pushes the values of an answer onto co (the call's thread) and returns how many; for "ok"
 * answers a negative return means the answer was malformed. */
typedef int (*exo_monreq_push)(lua_State *co, uint32_t op, const exo_priv_msg_t *m);

/* Pushes nil, code, message and returns 3. */
int exo_monreq_fail(lua_State *L, const char *code, const char *message);

/* Sends op with fields f (copied) for call c and yields. When the answer comes, resumes c with
 * ok(co, op, m) for an "ok" answer, err(co, op, m) for any other, and nil, "unavailable", why
 * when the monitor is gone or answered nothing; a call that stopped waiting meanwhile is
 * abandoned. When the request cannot be sent, returns the failure's 3 results instead (no
 * monitor: "unavailable"; out of memory: "failed"). */
int exo_monreq(lua_State *L, exo_call_t *c, uint32_t op, const exo_priv_field_t *f, size_t n,
               exo_monreq_push ok, exo_monreq_push err);

#endif
