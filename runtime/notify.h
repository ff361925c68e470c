/* systemd's readiness protocol (sd_notify(3)), without libsystemd: one datagram to the socket
 * named by $NOTIFY_SOCKET. The monitor says READY=1 once its first worker serves, and
 * STOPPING=1 when it drains, so `Type=notify` units start and stop in step with the agent. */
#ifndef EXO_NOTIFY_H
#define EXO_NOTIFY_H

/* Sends `state` ("READY=1", "STATUS=...", ...) if $NOTIFY_SOCKET is set. Returns 1 if sent, 0
 * if there is no socket to send to, or a negative errno. */
int exo_sd_notify(const char *state);

#endif
