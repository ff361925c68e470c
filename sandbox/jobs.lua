-- Jobs: long work that a method starts and answers for at once with { job_id }
-- (docs/decisions/0012-jobs.md).
--
-- A handler calls ctx.start_job({ summary =, cancellable = }, function(job) ... end). The host
-- keeps the function in its job table and asks the runtime (exo.jobs.start) to run it as a
-- call of its own, detached from any connection: on the loop's next turn the runtime starts
-- an internal call whose ctx.job names the job, and host.call hands that call to M.run, which
-- runs the function in the call's coroutine with the starting method's capabilities. So a job
-- waits on bindings like any handler, under the runtime's deadline ([jobs] max_duration) and
-- budgets, and a client that goes away does not stop it.
--
-- Records ({ job_id, method, summary, user, state, cancellable, progress, result | error,
-- created, finished }) live here; each one that starts or finishes is handed to the monitor
-- (exo.jobs.put), which keeps it across worker restarts for [jobs] keep. A new worker gives
-- them back to M.restore; a record still "running" then is "interrupted", unless the job
-- said how to go on without its closure (job.resumable(data)) and its method declares
-- `resume = function(job, data)`: then the new worker runs that instead, under the same id.
-- That is for work that outlives the worker and even the agent (a package operation in a
-- transient unit of its own, the agent's own upgrade): the job follows it again.
--
-- Idempotency: a method declared `idempotent = true` takes an optional idempotency_key
-- (sandbox/method.lua adds it). A repeat with the same key by the same user of the same
-- method answers what the first call answered (its result, or its { job_id }) without running
-- the handler again.

local core = require("exo.core")
local json = require("exo.json")
local schema = require("sandbox.schema")
local errors = require("sandbox.errors")
local method = require("sandbox.method")
local capabilities = require("sandbox.capabilities")

local T = schema.T

local M = {}

M.STATES = { "running", "succeeded", "failed", "cancelled", "interrupted" }
-- Jobs running at once: each holds a coroutine and its closure's upvalues in the VM.
M.MAX_RUNNING = 64
M.MAX_SUMMARY = 200
M.MAX_PHASE = 64
M.MAX_DETAIL = 512
M.MAX_KEY = 128
-- The monitor keeps a record of at most this many bytes of JSON (EXO_JOB_MAX_BLOB).
M.MAX_RECORD_BYTES = 6144
-- The JSON text of a job's resume data (job.resumable): small, it is kept with the record.
M.MAX_RESUME_BYTES = 1024
-- jobs.list answers at most this many records, newest first.
M.MAX_LIST = 1000
M.ID_PATTERN = "^[0-9a-f][0-9a-f]*$"
M.ID_LEN = 32

-- Set by M.reset: { runtime, keep_s, max_records, failure, emit, jobs = {id -> job},
-- idem = {key -> entry}, idem_order = {keys, oldest first}, seq }.
local state

local function log(level, msg)
  core.log(level, "jobs: " .. msg)
end

local function now()
  return core.time()
end

--------------------------------------------------------------------------------------------
-- Schemas.

local Progress = T.object({
  percent = T.integer({ min = 0, max = 100 }):describe("How far the job is, 0 to 100"),
  phase = T.string({ max_len = M.MAX_PHASE }):optional():describe("The step it is in, like \"formatting\""),
  detail = T.string({ max_len = M.MAX_DETAIL }):optional():describe("A line for people"),
})

local JobError = T.object({
  code = T.integer(),
  message = T.string(),
  data = T.any():optional(),
})

M.Job = T.object({
  job_id = T.string({ min_len = M.ID_LEN, max_len = M.ID_LEN }):describe("The job's id: 128 random bits in hex"),
  method = T.string():describe("The method that started it"),
  summary = T.string({ max_len = M.MAX_SUMMARY }),
  user = T.string():describe("Who started it"),
  state = T.enum(M.STATES):describe("running until it ends; interrupted when the agent's worker stopped while it ran"),
  cancellable = T.boolean(),
  progress = Progress,
  result = T.any():optional():describe("The job's result, once succeeded"),
  error = JobError:optional():describe("Why it failed, was cancelled or interrupted (a JSON-RPC error object)"),
  created = T.integer({ min = 0 }):describe("Unix seconds"),
  finished = T.integer({ min = 0 }):optional():describe("Unix seconds, once it ended"),
}):describe("A job")

M.JobRef = T.object({ job_id = T.string({ min_len = M.ID_LEN, max_len = M.ID_LEN }) })
  :describe("The job the call started: follow it with jobs.get or notify.jobs.*")

local EXAMPLE = {
  job_id = "3f2a0c9e7b5d41e8a6c4b2d0f1e3a5c7", method = "mounts.mount_device",
  summary = "Format and mount /dev/vdb", user = "exouser", state = "running", cancellable = false,
  progress = { percent = 40, phase = "formatting" }, created = 1764072000,
}
M.EXAMPLE = EXAMPLE

--------------------------------------------------------------------------------------------
-- Records.

local function copy_record(r)
  local out = {}
  for k, v in pairs(r) do
    out[k] = v
  end
  out.progress = { percent = r.progress.percent, phase = r.progress.phase, detail = r.progress.detail }
  return out
end

-- The stored form: the record, and the idempotency key that answers with this job.
local function persist(job)
  local rt = state.runtime
  if not (rt and rt.put) then
    return
  end
  local r = job.record
  local ok, text = pcall(json.encode, { record = schema.normalize(M.Job, copy_record(r)), idem = job.idem,
    resume = r.state == "running" and job.resume or nil })
  if not ok then
    log("error", ("job %s not kept: %s"):format(r.job_id, tostring(text)))
    return
  end
  if #text > M.MAX_RECORD_BYTES then
    -- The result alone makes it too large (nothing else in a record is unbounded): the
    -- record is kept without it, and says so.
    local slim = copy_record(r)
    slim.result = nil
    slim.error = slim.error or { code = errors.LimitExceeded.code,
      message = "the job's result is too large to keep; it was only sent in notify.jobs.done" }
    ok, text = pcall(json.encode, { record = schema.normalize(M.Job, slim), idem = job.idem,
      resume = r.state == "running" and job.resume or nil })
    if not ok or #text > M.MAX_RECORD_BYTES then
      log("error", ("job %s not kept: its record is over %d bytes"):format(r.job_id, M.MAX_RECORD_BYTES))
      return
    end
  end
  local expiry = (r.finished or r.created) + state.keep_s
  local sent, err = rt.put(r.job_id, expiry, text)
  -- Logged once until a put works again: without a monitor every job would log twice.
  if not sent and not state.put_failing then
    log("warn", ("job records are kept in this worker only (a restart loses them): %s"):format(tostring(err)))
  end
  state.put_failing = not sent
end

local function running_count()
  local n = 0
  for _, job in pairs(state.jobs) do
    if job.record.state == "running" then
      n = n + 1
    end
  end
  return n
end

-- Finished records past their time go; then the oldest finished ones while there are more
-- than max_records.
local function prune()
  local t, finished = now(), {}
  for id, job in pairs(state.jobs) do
    local r = job.record
    if r.state ~= "running" then
      if r.finished + state.keep_s <= t then
        state.jobs[id] = nil
      else
        finished[#finished + 1] = job
      end
    end
  end
  local over = running_count() + #finished - state.max_records
  if over > 0 then
    table.sort(finished, function(a, b) return a.seq < b.seq end)
    for i = 1, math.min(over, #finished) do
      state.jobs[finished[i].record.job_id] = nil
    end
  end
end

--------------------------------------------------------------------------------------------
-- Notifications: the starting session (without subscribing) and every subscriber who may
-- see the job.

local function may_see(who, job)
  return who ~= nil and (who.admin == true or who.user == job.record.user)
end

local function notify(name, job)
  if state.emit then
    state.emit(name, copy_record(job.record), job.session, function(who) return may_see(who, job) end)
  end
end

local function finish(job, st, result, err)
  local r = job.record
  if r.state ~= "running" then
    return
  end
  r.state, r.finished = st, now()
  if st == "succeeded" then
    r.result = result
    r.progress.percent = 100
  else
    r.error = err
  end
  job.fn, job.resume = nil, nil
  notify("notify.jobs.done", job)
  persist(job)
  prune()
end

--------------------------------------------------------------------------------------------
-- Starting and running.

local function check_opts(opts)
  if type(opts) ~= "table" then
    error("ctx.start_job: the first argument must be a table { summary =, cancellable = }", 3)
  elseif type(opts.summary) ~= "string" or opts.summary == "" or #opts.summary > M.MAX_SUMMARY then
    error(("ctx.start_job: summary must be a string of 1 to %d bytes"):format(M.MAX_SUMMARY), 3)
  elseif opts.cancellable ~= nil and type(opts.cancellable) ~= "boolean" then
    error("ctx.start_job: cancellable must be a boolean", 3)
  end
  for k in pairs(opts) do
    if k ~= "summary" and k ~= "cancellable" then
      error(("ctx.start_job: unknown option %s"):format(schema.quote(tostring(k))), 3)
    end
  end
end

-- ctx.start_job for a call of method d with the host's ctx: returns the new job's id.
function M.start(d, ctx, opts, fn)
  if not state then
    error("ctx.start_job: host.init has not run", 2)
  end
  check_opts(opts)
  if type(fn) ~= "function" then
    error("ctx.start_job: the second argument must be the job's function(job)", 2)
  end
  local rt = state.runtime
  if not (rt and rt.start) then
    error(errors.Unavailable("this agent cannot run jobs (its runtime has no exo.jobs)"))
  end
  if running_count() >= M.MAX_RUNNING then
    error(errors.Busy(("%d jobs are running, the most the agent runs at once; try again later"):format(M.MAX_RUNNING),
      { limit = M.MAX_RUNNING }))
  end
  local id = rt.new_id()
  state.seq = state.seq + 1
  local job = {
    seq = state.seq,
    fn = fn,
    capabilities = { table.unpack(d.capabilities or {}) },
    session = math.type(ctx.session) == "integer" and ctx.session or nil,
    idem = ctx.idempotency_key_of_call,
    resume_fn = d.resume,
    record = {
      job_id = id, method = d.name, summary = opts.summary,
      user = ctx.auth and ctx.auth.user or "(anonymous)",
      state = "running", cancellable = opts.cancellable == true,
      progress = { percent = 0 }, created = now(),
    },
  }
  state.jobs[id] = job
  local ok, err = rt.start(id)
  if not ok then
    state.jobs[id] = nil
    error(errors.Unavailable("the job could not be started: " .. tostring(err)))
  end
  -- The running record goes to the monitor too, so that a worker that dies leaves an
  -- "interrupted" record rather than nothing.
  persist(job)
  return id
end

local function check_progress(percent, phase, detail)
  if math.type(percent) ~= "integer" and not (type(percent) == "number" and percent == percent) then
    error("job.progress: percent must be a number from 0 to 100", 3)
  elseif percent < 0 or percent > 100 then
    error("job.progress: percent must be from 0 to 100", 3)
  elseif phase ~= nil and (type(phase) ~= "string" or #phase > M.MAX_PHASE) then
    error(("job.progress: phase must be a string of at most %d bytes"):format(M.MAX_PHASE), 3)
  elseif detail ~= nil and (type(detail) ~= "string" or #detail > M.MAX_DETAIL) then
    error(("job.progress: detail must be a string of at most %d bytes"):format(M.MAX_DETAIL), 3)
  end
end

-- job.resumable(data): the data a new worker's `resume` gets (a table of JSON values, at most
-- M.MAX_RESUME_BYTES encoded), kept with the running record from now on.
local function set_resumable(job, data)
  if type(data) ~= "table" then
    error("job.resumable: data must be a table of JSON values", 3)
  end
  local ok, text = pcall(json.encode, data)
  if not ok then
    error("job.resumable: data must be a table of JSON values: " .. tostring(text), 3)
  elseif #text > M.MAX_RESUME_BYTES then
    error(("job.resumable: data must encode to at most %d bytes of JSON"):format(M.MAX_RESUME_BYTES), 3)
  elseif not job.resume_fn then
    error(("job.resumable: method %s declares no resume function"):format(job.record.method), 3)
  end
  if job.record.state == "running" then
    job.resume = json.decode(text)
    persist(job)
  end
end

local function handle_of(job)
  return {
    id = job.record.job_id,
    -- Says how a new worker goes on with this job if this one stops (see the top).
    resumable = function(data)
      set_resumable(job, data)
    end,
    -- Reports progress: notify.jobs.progress to the starting session and the subscribers.
    progress = function(percent, phase, detail)
      check_progress(percent, phase, detail)
      if job.record.state ~= "running" then
        return
      elseif job.floor then
        -- A resumed job replays its work's output from the start: what it reports below the
        -- progress its record had already reached is old news, and would go backwards.
        if percent < job.floor then
          return
        end
        job.floor = nil
      end
      job.record.progress = { percent = math.floor(percent), phase = phase, detail = detail }
      notify("notify.jobs.progress", job)
    end,
  }
end

-- The body of the runtime's call for job `id` (host.call with ctx.job): runs the job's
-- function and records how it ended. Returns true, null like a method without a result; the
-- runtime reads nothing from it but failures to start.
function M.run(id, ctx, traceback, pass)
  local job = state and state.jobs[id]
  if not job or not job.fn or job.record.state ~= "running" then
    if core.set_capabilities then
      core.set_capabilities({})
    end
    return false, errors.to_rpc(errors.NotFound("no job " .. tostring(id) .. " to run"))
  end
  if core.set_capabilities then
    core.set_capabilities(job.capabilities)
  end
  capabilities.begin_call(job.capabilities)
  local fn = job.fn
  local ok, result = xpcall(fn, ctx.dev and traceback or pass, handle_of(job))
  capabilities.end_call()
  if ok then
    local encoded = pcall(json.encode, result == nil and json.null or result)
    if encoded then
      finish(job, "succeeded", result == nil and json.null or result)
    else
      log("error", ("job %s of %s returned a result that is not JSON"):format(id, job.record.method))
      finish(job, "failed", nil, errors.internal({ job_id = id, reason = "the result is not JSON" }))
    end
  else
    finish(job, "failed", nil, state.failure(job.record.method, ctx, result))
  end
  return true, json.null
end

-- host.job_ended(id, why): the runtime's call for job id ended without M.run finishing it
-- (a deadline, a limit, a failure of the host). Returns whether it changed the record.
function M.ended(id, why)
  local job = state and state.jobs[id]
  if not job or job.record.state ~= "running" then
    return false
  end
  local kind = tostring(why):find("deadline") and errors.Timeout or errors.Failed
  finish(job, "failed", nil, errors.to_rpc(kind(("the job stopped: %s"):format(tostring(why)),
    { job_id = id, reason = tostring(why) })))
  return true
end

--------------------------------------------------------------------------------------------
-- Restoring the monitor's records in a new worker.

local function valid_record(r)
  if type(r) ~= "table" or type(r.job_id) ~= "string" or not r.job_id:find(M.ID_PATTERN) then
    return false
  end
  local ok = schema.validate(M.Job, schema.normalize(M.Job, r), "record")
  return ok
end

-- Goes on with a restored running job whose stored form has resume data, when its method
-- (loaded in this worker) declares `resume`: the job gets that function as its closure, the
-- method's capabilities, and a new run under the same id. Returns whether it was resumed.
local function resume(job, data)
  local r = job.record
  local d = type(data) == "table" and state.lookup and state.lookup(r.method)
  local rt = state.runtime
  -- (running_count counts this job already.)
  if not (d and type(d.resume) == "function" and rt and rt.start) or running_count() > M.MAX_RUNNING then
    return false
  end
  local fn = d.resume
  job.fn = function(handle) return fn(handle, data) end
  job.capabilities = { table.unpack(d.capabilities or {}) }
  job.resume, job.resume_fn = data, fn
  job.floor = r.progress and r.progress.percent or 0
  local ok, err = rt.start(r.job_id)
  if not ok then
    job.fn, job.resume, job.resume_fn = nil, nil, nil
    log("warn", ("job %s of %s cannot be resumed: %s"):format(r.job_id, r.method, tostring(err)))
    return false
  end
  log("info", ("job %s of %s resumed after the worker restarted"):format(r.job_id, r.method))
  return true
end

-- host.jobs_restore(texts, live): the stored forms the monitor kept (a page of them). Damaged
-- ones are skipped; a job that was running when its worker stopped becomes "interrupted" (and
-- is stored again so), unless `live` (a set of ids) says the runtime still runs it: a job of
-- the VM that a reload replaced, whose later record replaces this one when it ends. Returns
-- how many were taken.
function M.restore(texts, live)
  if not state or type(texts) ~= "table" then
    return 0
  end
  local taken, t = 0, now()
  for _, text in ipairs(texts) do
    local ok, stored = pcall(json.decode, text)
    local r = ok and type(stored) == "table" and stored.record or nil
    local known = ok and type(r) == "table" and state.jobs[r.job_id]
    if known and not known.fn and known.record.state == "running" and valid_record(r)
        and r.state ~= "running" then
      -- A job of another VM ended: its final record replaces the running one.
      known.record = r
      taken = taken + 1
    elseif not valid_record(r) then
      log("warn", "a stored job record is damaged; skipped it")
    elseif not known then
      state.seq = state.seq + 1
      if r.result == json.null then
        r.result = nil
      end
      local job = { seq = state.seq, record = r, idem = type(stored.idem) == "string" and stored.idem or nil }
      state.jobs[r.job_id] = job
      if r.state == "running" and not (type(live) == "table" and live[r.job_id]) and not resume(job, stored.resume) then
        r.state, r.finished = "interrupted", t
        r.error = errors.to_rpc(errors.Failed("the agent's worker stopped while the job ran",
          { job_id = r.job_id, reason = "interrupted" }))
        persist(job)
      end
      local expires = (r.finished or r.created) + state.keep_s
      if job.idem and expires > t and not state.idem[job.idem] then
        state.idem[job.idem] = { value = { job_id = r.job_id }, expires = expires }
        state.idem_order[#state.idem_order + 1] = job.idem
      end
      taken = taken + 1
    end
  end
  prune()
  return taken
end

--------------------------------------------------------------------------------------------
-- Idempotency.

-- The table key of a call's idempotency key: the same user, the same method, the same key.
function M.idem_key(d, ctx, key)
  local user = ctx.auth and ctx.auth.user or ""
  return ("%s\n%s\n%s"):format(user, d.name, key)
end

-- What an earlier call with this key answered, or nil; raises Busy while it still runs.
function M.idem_lookup(k)
  local entry = state and state.idem[k]
  if not entry then
    return nil
  elseif entry.pending then
    error(errors.Busy("a call with this idempotency_key is still running; repeat it once it has answered",
      { reason = "idempotency_key_in_use" }))
  elseif entry.expires <= now() then
    state.idem[k] = nil
    return nil
  end
  return entry.value
end

local function idem_trim()
  -- The oldest keys go first once the table is full; dropped keys are compacted away.
  local order, live = state.idem_order, {}
  for _, k in ipairs(order) do
    if state.idem[k] then
      live[#live + 1] = k
    end
  end
  while #live >= state.max_records do
    state.idem[table.remove(live, 1)] = nil
  end
  state.idem_order = live
end

-- Marks key k as running (a repeat meanwhile is Busy).
function M.idem_begin(k)
  idem_trim()
  state.idem[k] = { pending = true }
  state.idem_order[#state.idem_order + 1] = k
end

-- The call with key k ended: its result is kept for [jobs] keep; a failure is not kept, so
-- that a repeat tries again.
function M.idem_end(k, ok, value)
  if not state.idem[k] then
    return
  end
  if ok then
    state.idem[k] = { value = value, expires = now() + state.keep_s }
  else
    state.idem[k] = nil
  end
end

--------------------------------------------------------------------------------------------
-- The jobs.* methods.

local function find_visible(ctx, id)
  local job = state.jobs[id]
  local who = ctx.auth
  if job and may_see(who, job) then
    return job
  end
  -- A job of another user is "not found" too: its id says nothing about whether it exists.
  error(errors.NotFound(("no job %s"):format(id), { job_id = id }))
end

local IdParams = T.object({ job_id = T.string({ min_len = 1, max_len = 64 }):describe("The id that started it returned") })

local function get_declaration()
  return method.check({
    name = "jobs.get",
    summary = "Read a job",
    description = "The job's record: its state, progress and, once it ended, its result or error. "
      .. "Users see their own jobs; administrators see all.",
    since = "2026-12-01", stability = "experimental", permission = "user",
    params = IdParams,
    result = M.Job,
    errors = { errors.NotFound },
    examples = { { name = "a running job", params = { job_id = EXAMPLE.job_id }, result = EXAMPLE } },
    handler = function(ctx, params)
      prune()
      return copy_record(find_visible(ctx, params.job_id).record)
    end,
  })
end

local function list_declaration()
  return method.check({
    name = "jobs.list",
    summary = "List jobs",
    description = "The jobs the caller may see (an administrator's: all), newest first; finished "
      .. "ones are kept for [jobs] keep (24 hours by default).",
    since = "2026-12-01", stability = "experimental", permission = "user",
    params = T.object({ state = T.enum(M.STATES):optional():describe("Only jobs in this state") }),
    result = T.array(M.Job),
    examples = { { name = "all of mine", params = {}, result = { EXAMPLE } } },
    handler = function(ctx, params)
      prune()
      local list = {}
      for _, job in pairs(state.jobs) do
        if may_see(ctx.auth, job) and (params.state == nil or job.record.state == params.state) then
          list[#list + 1] = job
        end
      end
      table.sort(list, function(a, b) return a.seq > b.seq end)
      local out = json.array()
      for i = 1, math.min(#list, M.MAX_LIST) do
        out[i] = copy_record(list[i].record)
      end
      return out
    end,
  })
end

local function cancel_declaration()
  return method.check({
    name = "jobs.cancel",
    summary = "Cancel a running job",
    description = "Stops a cancellable job where it waits (its code after that wait never runs) and "
      .. "marks it cancelled. A job that already ended is returned as it is. A job started as not "
      .. "cancellable (formatting a disk) fails with Unsupported.",
    since = "2026-12-01", stability = "experimental", permission = "user",
    params = IdParams,
    result = M.Job,
    errors = { errors.NotFound, errors.Unsupported },
    examples = { { name = "cancel", params = { job_id = EXAMPLE.job_id },
      result = { job_id = EXAMPLE.job_id, method = "e2e.job", summary = "Count", user = "exouser",
        state = "cancelled", cancellable = true, progress = { percent = 30 }, created = 1764072000,
        finished = 1764072010, error = { code = -32000, message = "cancelled by exouser" } } } },
    handler = function(ctx, params)
      local job = find_visible(ctx, params.job_id)
      local r = job.record
      if r.state == "running" then
        if not r.cancellable then
          error(errors.Unsupported(("job %s cannot be cancelled: %s"):format(r.job_id, r.summary),
            { job_id = r.job_id, reason = "not_cancellable" }))
        end
        state.runtime.cancel(r.job_id)
        finish(job, "cancelled", nil, errors.to_rpc(errors.Failed("cancelled by " .. tostring(ctx.auth.user),
          { job_id = r.job_id, reason = "cancelled" })))
      end
      return copy_record(r)
    end,
  })
end

function M.declarations()
  return { method.get(get_declaration()), method.get(list_declaration()), method.get(cancel_declaration()) }
end

-- The notify.jobs.* declarations (their params are the job record).
function M.notification_declarations(notification)
  return {
    notification.get(notification.check({
      name = "notify.jobs.progress",
      summary = "A job reported progress",
      description = "Sent to the session that started the job, without subscribing, and to the "
        .. "subscribers who may see the job (its user, administrators).",
      since = "2026-12-01", stability = "experimental", permission = "user",
      params = M.Job,
      examples = { { name = "formatting", params = EXAMPLE } },
    })),
    notification.get(notification.check({
      name = "notify.jobs.done",
      summary = "A job ended",
      description = "The final record (succeeded with its result; failed or cancelled with its "
        .. "error), to the starting session and to the subscribers who may see the job.",
      since = "2026-12-01", stability = "experimental", permission = "user",
      params = M.Job,
      examples = { { name = "mounted", params = {
        job_id = EXAMPLE.job_id, method = EXAMPLE.method, summary = EXAMPLE.summary, user = "exouser",
        state = "succeeded", cancellable = false, progress = { percent = 100, phase = "mounting" },
        result = { mountpoint = "/media/volume/data" }, created = 1764072000, finished = 1764072031,
      } } },
    })),
  }
end

-- Starts afresh for a new registry. opts: runtime = exo.jobs (or a stand-in: new_id, start,
-- cancel, put), keep_s, max_records, failure = function(method name, ctx, e) -> rpc error,
-- emit = function(name, params, session, allow(who)).
function M.reset(opts)
  state = {
    runtime = opts.runtime, keep_s = opts.keep_s or 86400, max_records = opts.max_records or 1000,
    failure = opts.failure, emit = opts.emit, lookup = opts.lookup, jobs = {}, idem = {}, idem_order = {},
    seq = 0,
  }
end

-- The record of job id as jobs.get returns it (for tests and the runtime's logs), or nil.
function M.record(id)
  local job = state and state.jobs[id]
  return job and copy_record(job.record) or nil
end

return M
