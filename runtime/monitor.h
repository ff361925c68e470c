/* The root monitor (DESIGN.md "Processes"): prepares what needs root (state directory, TLS
 * key, token key, listening sockets), forks the unprivileged worker and restarts it when it
 * dies, and serves the worker's requests for privileged operations (privsep.h). It never runs
 * Lua and never reads network input. */
#ifndef EXO_MONITOR_H
#define EXO_MONITOR_H

#include "config.h"

/* Runs the agent as root: returns the exit code when it stops (SIGTERM/SIGINT), or 1 when it
 * cannot start (the message is logged). */
int exo_monitor_run(exo_config_t *cfg, int dev);

#endif
