/* The worker's one source of "the mount table changed".
 *
 * The kernel marks /proc/self/mountinfo with POLLPRI|POLLERR whenever a mount is added, removed
 * or changed in the process's mount namespace. The watcher counts those changes in a
 * generation number (for caches: a cached view is stale once the generation moved) and calls
 * its subscribers (WebSocket notifications, later), at most one round per
 * EXO_MOUNTWATCH_QUIET_MS: a burst of changes gives one round at its start and one after it,
 * and the last change of a burst is never left without a round.
 *
 * It lives in the worker process, not in a Lua VM, so the generation keeps counting across
 * method reloads. */
#ifndef EXO_MOUNTWATCH_H
#define EXO_MOUNTWATCH_H

#include <stdint.h>
#include <uv.h>

#define EXO_MOUNTWATCH_QUIET_MS 100
#define EXO_MOUNTWATCH_MAX_SUBSCRIBERS 64

/* Called with the generation after the changes it reports. */
typedef void (*exo_mountwatch_cb)(void *data, uint64_t generation);

/* Starts watching path (NULL: /proc/self/mountinfo) on loop. Returns 0, or a negative errno
 * when the file cannot be opened or polled; the generation then stays where it is. Starting a
 * watcher that runs already is -EALREADY. Changes are seen from the loop's next turn, when the
 * poll is registered with epoll (the kernel reports an earlier change to the registration
 * itself): the server starts it before it accepts any call, so no view of the mounts can be
 * older than the watch. */
int exo_mountwatch_start(uv_loop_t *loop, const char *path);
/* Stops watching and closes its handles (the loop must run for them to close). Subscriptions
 * are kept; the generation is kept. Harmless when not watching. */
void exo_mountwatch_stop(void);
/* 1 while the watcher runs: only then does the generation move with the mount table. */
int exo_mountwatch_active(void);
/* Changes seen since the process started (0 before the first). */
uint64_t exo_mountwatch_generation(void);
/* Adds cb(data, ...) to the rounds. Returns 0, -EEXIST when that pair is subscribed already,
 * or -ENOSPC past EXO_MOUNTWATCH_MAX_SUBSCRIBERS. A subscriber may unsubscribe itself or others
 * from its callback. */
int exo_mountwatch_subscribe(exo_mountwatch_cb cb, void *data);
/* Removes the pair. Returns 0 or -ENOENT. */
int exo_mountwatch_unsubscribe(exo_mountwatch_cb cb, void *data);

#endif
