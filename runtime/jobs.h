/* The worker's side of jobs (docs/decisions/0012-jobs.md).
 *
 * The host (sandbox/jobs.lua) keeps each job's function and record; this module gives it the
 * Lua module "exo.jobs":
 * - new_id() -> 32 hex digits of RAND_bytes;
 * - start(id) -> true or nil, err: on the loop's next turn (no call may start inside another),
 *   an internal call whose ctx.job is id runs on the VM that started it, as the agent's
 *   internal identity, with [jobs] max_duration as its deadline and tied to no connection;
 *   when it ends, host.job_ended(id, why) records an end the job itself could not (a deadline,
 *   a limit);
 * - cancel(id) -> true, or false for a job the runtime does not run: stops that call (the
 *   runtime's cancel path: its coroutine is never resumed);
 * - put(id, expiry, text) -> true or nil, err: hands the record to the monitor
 *   (EXO_OP_JOB_PUT), and to the current VM's host when a VM replaced by a reload sends it.
 * At start, and after a reload, the monitor's records are fetched (EXO_OP_JOB_LIST, page by
 * page) into the current VM's host.jobs_restore(texts, live ids). */
#ifndef EXO_JOBS_H
#define EXO_JOBS_H

struct exo_server_s;

/* Starts (srv must outlive the module) and fetches the records. 0 or a negative errno. */
int exo_jobs_start(struct exo_server_s *srv);
/* srv->vm changed (a reload): the new host gets the records too. */
void exo_jobs_vm_changed(void);
/* Stops every job call (their records stay "running" at the monitor, so the next worker marks
 * them interrupted) and closes the timer. Harmless when not started. */
void exo_jobs_stop(void);

#endif
