-- Jobs (sandbox/jobs.lua): starting, progress, done, failure, cancel, visibility,
-- notifications to the starting session and to subscribers, idempotency with and without
-- jobs, and the records a new worker restores (running -> interrupted).
local setup = require("tests.lua.helpers.setup")
local kit = require("tests.lua.helpers.kit")
local tmp = require("tests.lua.helpers.tmp")

local json = setup.json

local METHODS = [[
local work = method {
  name = "demo.work", summary = "Works in steps as a job", since = "2026-12-01", stability = "experimental",
  permission = "user", idempotent = true,
  params = T.object({ steps = T.integer({ min = 0, max = 10 }), fail = T.boolean():optional(),
                      cancellable = T.boolean():optional() }),
  result = T.object({ job_id = T.string() }),
  examples = { { name = "three steps", params = { steps = 3 }, result = { job_id = "x" } } },
  handler = function(ctx, params)
    return { job_id = ctx.start_job({ summary = "Work " .. params.steps .. " steps",
      cancellable = params.cancellable ~= false }, function(job)
      for i = 1, params.steps do
        agent.sleep(10)
        job.progress(i * 100 // (params.steps + 1), "step", "step " .. i)
      end
      if params.fail then
        error(errors.Failed("the work failed", { at = params.steps }))
      end
      return { done = params.steps }
    end) }
  end,
}
local count = 0
local bump = method {
  name = "demo.bump", summary = "Counts its calls", since = "2026-12-01", stability = "experimental",
  permission = "user", idempotent = true,
  params = T.object({ fail = T.boolean():optional() }),
  result = T.object({ count = T.integer() }),
  examples = { { name = "one", params = {}, result = { count = 1 } } },
  handler = function(ctx, params)
    count = count + 1
    if params.fail then
      error(errors.Failed("no"))
    end
    return { count = count }
  end,
}
local bad = method {
  name = "demo.bad_job", summary = "Misuses start_job", since = "2026-12-01", stability = "experimental",
  permission = "user", result = T.any(),
  examples = { { name = "x", params = {}, result = 1 } },
  handler = function(ctx) return ctx.start_job({ summary = "" }, function() end) end,
}
local big = method {
  name = "demo.big", summary = "A job with a large result", since = "2026-12-01", stability = "experimental",
  permission = "user", result = T.object({ job_id = T.string() }),
  examples = { { name = "x", params = {}, result = { job_id = "x" } } },
  handler = function(ctx)
    return { job_id = ctx.start_job({ summary = "Big" }, function() return ("x"):rep(7000) end) }
  end,
}
local outlive = method {
  name = "demo.outlive", summary = "A job a new worker goes on with", since = "2026-12-01",
  stability = "experimental", permission = "user",
  params = T.object({ n = T.integer(), data = T.any():optional() }),
  result = T.object({ job_id = T.string() }),
  examples = { { name = "x", params = { n = 1 }, result = { job_id = "x" } } },
  handler = function(ctx, params)
    return { job_id = ctx.start_job({ summary = "Outlives its worker" }, function(job)
      job.resumable(params.data or { n = params.n })
      return { n = params.n, resumed = false }
    end) }
  end,
  resume = function(job, data)
    job.progress(10, "replayed")
    job.progress(50, "followed again")
    return { n = data.n, resumed = true }
  end,
}
local unresumable = method {
  name = "demo.unresumable", summary = "Asks to be resumed without a resume function", since = "2026-12-01",
  stability = "experimental", permission = "user", result = T.object({ job_id = T.string() }),
  examples = { { name = "x", params = {}, result = { job_id = "x" } } },
  handler = function(ctx)
    return { job_id = ctx.start_job({ summary = "No resume" }, function(job) job.resumable({ n = 1 }) end) }
  end,
}
return { work, bump, bad, big, outlive, unresumable }
]]

local ALICE = kit.USER
local BOB = { user = "bob", uid = 1002, gid = 1002, groups = { "bob" }, admin = false, allowed = true, via = "token" }

local function new_kit(opts)
  opts = opts or {}
  opts.files = { tmp.file(METHODS) }
  return kit.new(opts)
end

local function notes(k, session, name)
  local out = {}
  for _, n in ipairs(k:received(session)) do
    if name == nil or n.method == name then
      out[#out + 1] = n
    end
  end
  return out
end

describe("jobs", function()
  after_each(function()
    tmp.cleanup()
    setup.restore_string_metatable()
  end)

  it("start at once, run detached with progress and end with their result", function()
    local k = new_kit()
    local started = k:call_ok("demo.work", { steps = 3 }, { auth = ALICE, session = 7 })
    assert.equal(32, #started.job_id)
    local r = k:call_ok("jobs.get", { job_id = started.job_id }, { auth = ALICE })
    assert.same({ "running", 0, "alice", "demo.work", true, "Work 3 steps" },
      { r.state, r.progress.percent, r.user, r.method, r.cancellable, r.summary })
    assert.equal(1, k:run_jobs())
    r = k:call_ok("jobs.get", { job_id = started.job_id }, { auth = ALICE })
    assert.equal("succeeded", r.state)
    assert.same({ done = 3 }, r.result)
    assert.equal(100, r.progress.percent)
    assert.is_number(r.finished)
    -- The starting session hears of it without subscribing.
    local progress = notes(k, 7, "notify.jobs.progress")
    assert.equal(3, #progress)
    assert.same({ 25, "step", "step 1" }, { progress[1].params.progress.percent, progress[1].params.progress.phase,
      progress[1].params.progress.detail })
    local done = notes(k, 7, "notify.jobs.done")
    assert.equal(1, #done)
    assert.equal("succeeded", done[1].params.state)
    assert.same({ done = 3 }, done[1].params.result)
  end)

  it("record a failure with the method's error", function()
    local k = new_kit()
    local id = k:call_ok("demo.work", { steps = 1, fail = true }, { auth = ALICE }).job_id
    k:run_jobs()
    local r = k:call_ok("jobs.get", { job_id = id }, { auth = ALICE })
    assert.equal("failed", r.state)
    assert.same({ code = -32000, message = "the work failed", data = { at = 1 } }, r.error)
  end)

  it("fail when the runtime ends their call (a deadline) before they finish", function()
    local k = new_kit()
    local id = k:call_ok("demo.work", { steps = 1 }, { auth = ALICE }).job_id
    assert.is_true(k.host.job_ended(id, "deadline exceeded"))
    local r = k:call_ok("jobs.get", { job_id = id }, { auth = ALICE })
    assert.same({ "failed", -32004 }, { r.state, r.error.code })
    assert.is_false(k.host.job_ended(id, "deadline exceeded"))
  end)

  it("are cancelled through the runtime and say so", function()
    local k = new_kit()
    local id = k:call_ok("demo.work", { steps = 2 }, { auth = ALICE, session = 3 }).job_id
    local r = k:call_ok("jobs.cancel", { job_id = id }, { auth = ALICE })
    assert.equal("cancelled", r.state)
    assert.same({ id }, k.core.job_cancels)
    assert.equal(0, k:run_jobs())
    assert.equal("cancelled", notes(k, 3, "notify.jobs.done")[1].params.state)
    -- A second cancel returns the record as it is.
    assert.equal("cancelled", k:call_ok("jobs.cancel", { job_id = id }, { auth = ALICE }).state)
  end)

  it("refuse to cancel a job that is not cancellable", function()
    local k = new_kit()
    local id = k:call_ok("demo.work", { steps = 2, cancellable = false }, { auth = ALICE }).job_id
    local ok, err = k:call("jobs.cancel", { job_id = id }, { auth = ALICE })
    assert.is_false(ok)
    assert.same({ -32008, "not_cancellable" }, { err.code, err.data.reason })
  end)

  it("are seen and cancelled by their user and administrators only", function()
    local k = new_kit()
    local id = k:call_ok("demo.work", { steps = 1 }, { auth = ALICE }).job_id
    local ok, err = k:call("jobs.get", { job_id = id }, { auth = BOB })
    assert.is_false(ok)
    assert.equal(-32003, err.code)
    ok, err = k:call("jobs.cancel", { job_id = id }, { auth = BOB })
    assert.is_false(ok)
    assert.equal(-32003, err.code)
    assert.equal(0, #k:call_ok("jobs.list", {}, { auth = BOB }))
    assert.equal(1, #k:call_ok("jobs.list", {}, { auth = ALICE }))
    assert.equal(1, #k:call_ok("jobs.list", {}, { auth = kit.ADMIN }))
    assert.equal(1, #k:call_ok("jobs.list", { state = "running" }, { auth = ALICE }))
    assert.equal(0, #k:call_ok("jobs.list", { state = "succeeded" }, { auth = ALICE }))
    local ok2, err2 = k:call("jobs.get", { job_id = id }, { auth = false })
    assert.is_false(ok2)
    assert.equal(-32001, err2.code)
  end)

  it("notify the subscribers who may see them, and not the others", function()
    local k = new_kit()
    k:call_ok("notifications.subscribe", { names = { "notify.jobs.done" } }, { session = 1, auth = BOB })
    k:call_ok("notifications.subscribe", { names = { "notify.jobs.done" } }, { session = 2, auth = kit.ADMIN })
    k:call_ok("notifications.subscribe", { names = { "notify.jobs.done" } }, { session = 4, auth = ALICE })
    k:call_ok("demo.work", { steps = 0 }, { auth = ALICE, session = 4 })
    k:run_jobs()
    assert.equal(0, #notes(k, 1))
    assert.equal(1, #notes(k, 2, "notify.jobs.done"))
    -- The starting session, subscribed too, gets it once.
    assert.equal(1, #notes(k, 4, "notify.jobs.done"))
  end)

  it("survive their session going away", function()
    local k = new_kit()
    local id = k:call_ok("demo.work", { steps = 1 }, { auth = ALICE, session = 9 }).job_id
    k.core.closed_sessions[9] = true
    k.host.session_closed(9)
    k:run_jobs()
    assert.equal("succeeded", k:call_ok("jobs.get", { job_id = id }, { auth = ALICE }).state)
  end)

  it("are handed to the monitor when they start and when they end", function()
    local k = new_kit({ jobs_keep_s = 3600 })
    local id = k:call_ok("demo.work", { steps = 0 }, { auth = ALICE }).job_id
    k:run_jobs()
    assert.equal(2, #k.core.job_puts)
    local first, last = k.core.job_puts[1], k.core.job_puts[2]
    assert.same({ id, id }, { first.id, last.id })
    assert.equal("running", json.decode(first.text).record.state)
    local stored = json.decode(last.text)
    assert.equal("succeeded", stored.record.state)
    assert.equal(stored.record.finished + 3600, last.expiry)
  end)

  it("keep a record whose result is over 6 KiB without the result, and send the result once", function()
    local k = new_kit()
    local id = k:call_ok("demo.big", {}, { auth = ALICE, session = 2 }).job_id
    k:run_jobs()
    local last = k.core.job_puts[#k.core.job_puts]
    assert.is_true(#last.text <= 6144)
    local stored = json.decode(last.text).record
    assert.same({ "succeeded", nil, -32007 }, { stored.state, stored.result, stored.error.code })
    assert.equal(7000, #notes(k, 2, "notify.jobs.done")[1].params.result)
    -- The worker's own record still has it.
    assert.equal(7000, #k:call_ok("jobs.get", { job_id = id }, { auth = ALICE }).result)
  end)

  it("refuse misuse of ctx.start_job as a failure of the method", function()
    local k = new_kit({ dev = false })
    local ok, err = k:call("demo.bad_job", {}, { auth = ALICE })
    assert.is_false(ok)
    assert.equal(-32603, err.code)
    assert.equal(1, #k:logged("error", "summary must be a string"))
  end)

  it("are limited to MAX_RUNNING at once", function()
    local k = new_kit()
    local jobs = require("sandbox.jobs")
    for _ = 1, jobs.MAX_RUNNING do
      k:call_ok("demo.work", { steps = 1 }, { auth = ALICE })
    end
    local ok, err = k:call("demo.work", { steps = 1 }, { auth = ALICE })
    assert.is_false(ok)
    assert.equal(-32005, err.code)
  end)

  describe("restored in a new worker", function()
    local function stored(record, idem)
      return json.encode({ record = record, idem = idem })
    end

    it("come back, a running one as interrupted (and stored again so)", function()
      local k = new_kit()
      local t = k.core.unix_time
      local done = { job_id = ("a"):rep(32), method = "demo.work", summary = "s", user = "alice", state = "succeeded",
        cancellable = true, progress = { percent = 100 }, result = { done = 1 }, created = t - 60, finished = t - 50 }
      local running = { job_id = ("b"):rep(32), method = "demo.work", summary = "s", user = "alice", state = "running",
        cancellable = true, progress = { percent = 40 }, created = t - 30 }
      assert.equal(2, k.host.jobs_restore({ stored(done), stored(running), "{not json", stored({ job_id = "x" }) }))
      assert.equal(2, #k:logged("warn", "a stored job record is damaged"))
      assert.same({ done = 1 }, k:call_ok("jobs.get", { job_id = done.job_id }, { auth = ALICE }).result)
      local r = k:call_ok("jobs.get", { job_id = running.job_id }, { auth = ALICE })
      assert.same({ "interrupted", "interrupted" }, { r.state, r.error.data.reason })
      assert.equal(1, #k.core.job_puts)
      assert.equal("interrupted", json.decode(k.core.job_puts[1].text).record.state)
    end)

    it("after a reload, keep a job the runtime still runs as running, until its final record comes", function()
      local k = new_kit()
      local t = k.core.unix_time
      local r = { job_id = ("d"):rep(32), method = "demo.work", summary = "s", user = "alice", state = "running",
        cancellable = true, progress = { percent = 10 }, created = t - 5 }
      k.host.jobs_restore({ stored(r) }, { [r.job_id] = true })
      assert.equal("running", k:call_ok("jobs.get", { job_id = r.job_id }, { auth = ALICE }).state)
      assert.equal(0, #k.core.job_puts)
      r.state, r.finished, r.result, r.progress.percent = "succeeded", t, { done = 2 }, 100
      assert.equal(1, k.host.jobs_restore({ stored(r) }, {}))
      local got = k:call_ok("jobs.get", { job_id = r.job_id }, { auth = ALICE })
      assert.same({ "succeeded", { done = 2 } }, { got.state, got.result })
      -- Such a job is cancelled through the runtime, which runs it.
      local r2 = { job_id = ("e"):rep(32), method = "demo.work", summary = "s", user = "alice", state = "running",
        cancellable = true, progress = { percent = 10 }, created = t - 5 }
      k.host.jobs_restore({ stored(r2) }, { [r2.job_id] = true })
      assert.equal("cancelled", k:call_ok("jobs.cancel", { job_id = r2.job_id }, { auth = ALICE }).state)
      assert.same({ r2.job_id }, k.core.job_cancels)
    end)

    it("go on with a job whose method declares resume, under the same id", function()
      local k = new_kit()
      local id = k:call_ok("demo.outlive", { n = 3 }, { auth = ALICE }).job_id
      k:run_jobs()
      assert.same({ n = 3, resumed = false }, k:call_ok("jobs.get", { job_id = id }, { auth = ALICE }).result)
      -- Stored: running, running with its resume data, succeeded without it.
      local puts = k.core.job_puts
      assert.equal(3, #puts)
      assert.is_nil(json.decode(puts[1].text).resume)
      assert.same({ n = 3 }, json.decode(puts[2].text).resume)
      assert.equal("running", json.decode(puts[2].text).record.state)
      assert.is_nil(json.decode(puts[3].text).resume)
      -- A new worker finds the second one (the first worker died there).
      local k2 = new_kit()
      assert.equal(1, k2.host.jobs_restore({ puts[2].text }))
      assert.equal(1, #k2:logged("info", "resumed after the worker restarted"))
      local r = k2:call_ok("jobs.get", { job_id = id }, { auth = ALICE })
      assert.same({ "running", "alice" }, { r.state, r.user })
      assert.equal(1, k2:run_jobs())
      r = k2:call_ok("jobs.get", { job_id = id }, { auth = ALICE })
      assert.same({ "succeeded", { n = 3, resumed = true } }, { r.state, r.result })
      -- Its subscribers hear of it as of any job.
      k2:call_ok("notifications.subscribe", { names = { "notify.jobs.done" } }, { auth = ALICE, session = 4 })
      local k3 = new_kit()
      k3:call_ok("notifications.subscribe", { names = { "notify.jobs.done" } }, { auth = ALICE, session = 4 })
      k3.host.jobs_restore({ puts[2].text })
      k3:run_jobs()
      local done = notes(k3, 4, "notify.jobs.done")
      assert.same({ id, "succeeded" }, { done[1].params.job_id, done[1].params.state })
      -- Progress never goes back: the stored record was at 30 %, the replay's 10 % is not sent.
      local stored = json.decode(puts[2].text)
      stored.record.progress = { percent = 30, phase = "before" }
      local k4 = new_kit()
      k4:call_ok("notifications.subscribe", { names = { "notify.jobs.progress" } }, { auth = ALICE, session = 5 })
      k4.host.jobs_restore({ json.encode(stored) })
      assert.equal(30, k4:call_ok("jobs.get", { job_id = id }, { auth = ALICE }).progress.percent)
      k4:run_jobs()
      local sent = {}
      for _, n in ipairs(notes(k4, 5, "notify.jobs.progress")) do
        sent[#sent + 1] = n.params.progress.percent
      end
      assert.same({ 50 }, sent)
    end)

    it("mark a job interrupted when it cannot be resumed", function()
      local k = new_kit()
      local t = k.core.unix_time
      local function rec(c, method)
        return { job_id = (c):rep(32), method = method, summary = "s", user = "alice", state = "running",
          cancellable = false, progress = { percent = 5 }, created = t - 5 }
      end
      -- Resume data, but the method declares no resume (or is not loaded): interrupted.
      local texts = {
        json.encode({ record = rec("1", "demo.work"), resume = { n = 1 } }),
        json.encode({ record = rec("2", "site.gone"), resume = { n = 1 } }),
        -- Damaged resume data (not an object).
        json.encode({ record = rec("3", "demo.outlive"), resume = "n=1" }),
      }
      assert.equal(3, k.host.jobs_restore(texts))
      for _, c in ipairs({ "1", "2", "3" }) do
        local r = k:call_ok("jobs.get", { job_id = c:rep(32) }, { auth = ALICE })
        assert.same({ "interrupted", "interrupted" }, { r.state, r.error.data.reason })
      end
      assert.equal(0, #k.core.job_queue)
    end)

    it("refuse resume data that is not a small JSON table, or from a method without resume", function()
      local k = new_kit()
      local bad = {
        { n = 1, data = ("x"):rep(10) },
        { n = 1, data = { blob = ("x"):rep(2000) } },
      }
      for _, params in ipairs(bad) do
        local id = k:call_ok("demo.outlive", params, { auth = ALICE }).job_id
        k:run_jobs()
        assert.equal("failed", k:call_ok("jobs.get", { job_id = id }, { auth = ALICE }).state)
      end
      assert.equal(1, #k:logged("error", "job.resumable: data must be a table of JSON values"))
      assert.equal(1, #k:logged("error", "job.resumable: data must encode to at most 1024 bytes"))
      local id = k:call_ok("demo.unresumable", {}, { auth = ALICE }).job_id
      k:run_jobs()
      assert.equal("failed", k:call_ok("jobs.get", { job_id = id }, { auth = ALICE }).state)
      assert.equal(1, #k:logged("error", "method demo.unresumable declares no resume function"))
    end)

    it("drop records past [jobs] keep", function()
      local k = new_kit({ jobs_keep_s = 60 })
      local t = k.core.unix_time
      local old = { job_id = ("c"):rep(32), method = "demo.work", summary = "s", user = "alice", state = "failed",
        cancellable = true, progress = { percent = 0 }, error = { code = -32000, message = "x" },
        created = t - 200, finished = t - 100 }
      k.host.jobs_restore({ stored(old) })
      assert.is_false((k:call("jobs.get", { job_id = old.job_id }, { auth = ALICE })))
    end)

    it("keep answering a repeat of the call that started them", function()
      local k = new_kit()
      local first = k:call_ok("demo.work", { steps = 0, idempotency_key = "k1" }, { auth = ALICE })
      k:run_jobs()
      local texts = {}
      for i, p in ipairs(k.core.job_puts) do
        texts[i] = p.text
      end
      local k2 = new_kit()
      k2.host.jobs_restore(texts)
      assert.same(first, k2:call_ok("demo.work", { steps = 0, idempotency_key = "k1" }, { auth = ALICE }))
      assert.equal(0, #k2.core.job_queue)
    end)
  end)

  describe("and idempotency keys", function()
    it("answer a repeat with the first result without running the handler", function()
      local k = new_kit()
      assert.same({ count = 1 }, k:call_ok("demo.bump", { idempotency_key = "a" }, { auth = ALICE }))
      assert.same({ count = 1 }, k:call_ok("demo.bump", { idempotency_key = "a" }, { auth = ALICE }))
      -- Another key, another user or no key acts again.
      assert.same({ count = 2 }, k:call_ok("demo.bump", { idempotency_key = "b" }, { auth = ALICE }))
      assert.same({ count = 3 }, k:call_ok("demo.bump", { idempotency_key = "a" }, { auth = BOB }))
      assert.same({ count = 4 }, k:call_ok("demo.bump", {}, { auth = ALICE }))
    end)

    it("answer a repeat with the first job", function()
      local k = new_kit()
      local a = k:call_ok("demo.work", { steps = 1, idempotency_key = "x" }, { auth = ALICE })
      local b = k:call_ok("demo.work", { steps = 5, idempotency_key = "x" }, { auth = ALICE })
      assert.same(a, b)
      assert.equal(1, k:run_jobs())
    end)

    it("do not keep a failure: a repeat acts again", function()
      local k = new_kit()
      assert.is_false((k:call("demo.bump", { fail = true, idempotency_key = "f" }, { auth = ALICE })))
      assert.same({ count = 2 }, k:call_ok("demo.bump", { idempotency_key = "f" }, { auth = ALICE }))
    end)

    it("expire after [jobs] keep", function()
      local k = new_kit({ jobs_keep_s = 10 })
      assert.same({ count = 1 }, k:call_ok("demo.bump", { idempotency_key = "e" }, { auth = ALICE }))
      k.core.unix_time = k.core.unix_time + 11
      assert.same({ count = 2 }, k:call_ok("demo.bump", { idempotency_key = "e" }, { auth = ALICE }))
    end)

    it("are bounded by [jobs] max_records, the oldest forgotten first", function()
      local k = new_kit({ jobs_max_records = 2 })
      k:call_ok("demo.bump", { idempotency_key = "1" }, { auth = ALICE })
      k:call_ok("demo.bump", { idempotency_key = "2" }, { auth = ALICE })
      k:call_ok("demo.bump", { idempotency_key = "3" }, { auth = ALICE })
      assert.same({ count = 4 }, k:call_ok("demo.bump", { idempotency_key = "1" }, { auth = ALICE }))
      assert.same({ count = 3 }, k:call_ok("demo.bump", { idempotency_key = "3" }, { auth = ALICE }))
    end)

    it("are declared in the params and the OpenRPC document of idempotent methods only", function()
      local k = new_kit()
      local ok, err = k:call("demo.bump", { idempotency_key = ("k"):rep(129) }, { auth = ALICE })
      assert.is_false(ok)
      assert.equal("params.idempotency_key", err.data.path)
      ok, err = k:call("demo.bad_job", { idempotency_key = "a" }, { auth = ALICE })
      assert.is_false(ok)
      assert.equal(-32602, err.code)
      for _, m in ipairs(k.host.discover().methods) do
        if m.name == "demo.bump" then
          assert.equal("idempotency_key", m.params[#m.params].name)
        end
      end
    end)

    it("cannot be declared by the method itself", function()
      local k = kit.new({ files = { tmp.file([[return method { name = "demo.x", summary = "x", since = "2026-12-01",
        stability = "stable", permission = "user", idempotent = true,
        params = T.object({ idempotency_key = T.string() }), result = T.any(),
        examples = { { name = "x", params = { idempotency_key = "a" }, result = 1 } },
        handler = function() return 1 end }]]) } })
      assert.matches("the host adds it", k.summary.skipped[1].error)
    end)
  end)
end)
