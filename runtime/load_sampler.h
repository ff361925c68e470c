/* The worker's load sampler (docs/decisions/0007-load-history.md): at each wall-clock multiple
 * of [system_load] interval it runs system_load.current through the host, exactly as a client's
 * call would run, keeps the sample in the worker's ring (served by exo.load, l_load.c), sends
 * it to the monitor (EXO_OP_LOAD_SAMPLE: persisted, and written to the console) and tells the
 * hooks. At start it first fetches the monitor's ring (EXO_OP_LOAD_HISTORY), so the history
 * survives worker and agent restarts. Without a monitor the history lives in the worker only. */
#ifndef EXO_LOAD_SAMPLER_H
#define EXO_LOAD_SAMPLER_H

#include "loadhist.h"

struct exo_server_s;

/* Called on the loop with each sample taken, after it is in the ring. */
typedef void (*exo_load_hook_fn)(const exo_load_sample_t *s, void *data);
#define EXO_LOAD_MAX_HOOKS 8

/* Starts sampling for srv (which must outlive the sampler). Returns 0, or -ENOMEM when the
 * ring cannot be allocated. */
int exo_load_sampler_start(struct exo_server_s *srv);
/* Stops the timer and cancels a sample in flight; calling it again does nothing. */
void exo_load_sampler_stop(void);
/* Adds fn to the hooks called for every sample ("a sample was taken": the WebSocket's
 * notify.system_load). Returns 0, or -ENOSPC past EXO_LOAD_MAX_HOOKS. */
int exo_load_on_sample(exo_load_hook_fn fn, void *data);
/* The worker's ring, oldest first (empty before start). */
const exo_load_ring_t *exo_load_history(void);

#endif
