/* The sources of the WebSocket notifications (docs/decisions/0011-notifications.md).
 *
 * Two events of the worker become notifications, sent by the host (sandbox/notify.lua) to the
 * sessions subscribed to them:
 * - each load sample (load_sampler.c's hooks): host.emit("notify.system_load", sample);
 * - each round of the one mount-table watcher (mountwatch.c): when host.mounts_wanted() says a
 *   session listens to notify.mounts.*, mounts.list runs through the host as an internal call
 *   (as the load sampler runs system_load.current) and its result goes to
 *   host.mounts_update(list), which compares it with the list before and emits the
 *   differences. The host asks for a first list (its baseline) with exo.events.mounts_snapshot()
 *   when a first session subscribes. At most one mounts.list runs at a time; a change while it
 *   runs gives one more after it. */
#ifndef EXO_EVENTS_H
#define EXO_EVENTS_H

struct exo_server_s;

/* Starts feeding srv's current VM (srv must outlive the sources). Returns 0, or a negative
 * errno when the mount watcher or the load sampler has no room for another subscriber (then
 * nothing is started). Calling it again while started is -EALREADY. */
int exo_events_start(struct exo_server_s *srv);
/* Stops: no more emits, the mounts.list in flight is cancelled, the timer is closed (the loop
 * must run for it to close). Harmless when not started. */
void exo_events_stop(void);

#endif
