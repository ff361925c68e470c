/* The worker's side of the monitor protocol (privsep.h): requests go out on the socketpair
 * the monitor gave the worker, answers come back on the loop and complete their callbacks. */
#ifndef EXO_MONCLIENT_H
#define EXO_MONCLIENT_H

#include <uv.h>

#include "privsep.h"

/* Called with an answer (status 0, m the decoded answer, valid only during the call) or with a
 * negative errno and m NULL when the monitor is gone or the request could not be sent. */
typedef void (*exo_mon_cb)(void *data, int status, const exo_priv_msg_t *m);

/* Starts serving the socket fd on loop; on_lost runs once if the monitor goes away. */
int exo_mon_start(uv_loop_t *loop, int fd, void (*on_lost)(void *), void *lost_data);
/* 1 when there is a monitor to ask (the agent was started as root). */
int exo_mon_available(void);
/* Sends a request; cb runs exactly once, never before this returns. Returns 0 or a negative
 * errno (-ENOTCONN without a monitor; cb is then not called). The fields are copied, and the
 * copy is wiped after sending: requests may hold a password. */
int exo_mon_request(uint32_t op, const exo_priv_field_t *f, size_t n, exo_mon_cb cb, void *data);
/* Fails every request still waiting and closes the socket (at the end of the worker). */
void exo_mon_stop(void);
/* Why privileged operations are refused when exo_mon_available() is 0. */
const char *exo_mon_unavailable_reason(void);

#endif
