-- Methods for the end-to-end tests: slow, CPU-bound, failing, echoing and nested-params
-- methods. Loaded next to the shipped methods with the harness's methodDirs option.

-- The arguments of an e2e.mounts / e2e.packages call: JSON null stands for nil. Returns them
-- and their count (table.unpack(args, 1, n) passes the nils).
local function call_args(list)
  local args = {}
  for i = 1, #list do
    if list[i] ~= json.null then
      args[i] = list[i]
    end
  end
  return args, #list
end

return {
  method({
    name = "e2e.session",
    summary = "The caller's WebSocket session id (ctx.session), absent over HTTP",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    result = T.object({ session = T.integer():optional() }),
    examples = { { name = "over HTTP", params = {}, result = {} } },
    handler = function(ctx, params)
      return { session = ctx.session }
    end,
  }),
  method({
    name = "e2e.push",
    summary = "Sends text (repeated `repeat` times) to the caller's WebSocket session `times` times",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    params = T.object({
      text = T.string(),
      times = T.integer({ min = 1, max = 100000 }),
      ["repeat"] = T.integer({ min = 1, max = 1000000 }):optional(),
    }),
    param_order = { "text", "times", "repeat" },
    result = T.object({ sent = T.integer() }),
    examples = { { name = "over HTTP nothing is sent", params = { text = "x", times = 1 }, result = { sent = 0 } } },
    handler = function(ctx, params)
      local sent = 0
      local text = params.text:rep(params["repeat"] or 1)
      for _ = 1, params.times do
        if not agent.session_send(text) then
          break
        end
        sent = sent + 1
      end
      return { sent = sent }
    end,
  }),
  method({
    name = "e2e.sleep",
    summary = "Waits ms milliseconds, then answers",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    params = T.object({ ms = T.integer({ min = 0, max = 60000 }) }),
    result = T.object({ slept = T.integer() }),
    examples = { { name = "a short nap", params = { ms = 1 }, result = { slept = 1 } } },
    handler = function(ctx, params)
      agent.sleep(params.ms)
      return { slept = params.ms }
    end,
  }),
  method({
    name = "e2e.spin",
    summary = "Loops forever on the CPU (stopped by the call deadline)",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    result = T.null(),
    examples = { { name = "never answers", params = {}, result = json.null } },
    handler = function(ctx, params)
      local n = 0
      while true do
        n = n + 1
      end
    end,
  }),
  method({
    name = "e2e.spin_pcall",
    summary = "Loops forever on the CPU and catches every error it meets",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    result = T.null(),
    examples = { { name = "never answers", params = {}, result = json.null } },
    handler = function(ctx, params)
      while true do
        pcall(function()
          local n = 0
          while true do
            n = n + 1
          end
        end)
      end
    end,
  }),
  method({
    name = "e2e.hog",
    summary = "Allocates memory until a limit stops it",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    result = T.null(),
    examples = { { name = "never answers", params = {}, result = json.null } },
    handler = function(ctx, params)
      local t = {}
      for i = 1, math.maxinteger do
        t[i] = ("x"):rep(1000) .. i
      end
    end,
  }),
  method({
    name = "e2e.echo",
    summary = "Returns its value",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    params = T.object({ value = T.any() }),
    result = T.any(),
    examples = { { name = "a string", params = { value = "x" }, result = "x" } },
    handler = function(ctx, params)
      return params.value
    end,
  }),
  method({
    name = "e2e.nested",
    summary = "Takes nested parameters and counts the items",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    params = T.object({
      filter = T.object({
        items = T.array(T.object({ name = T.string(), size = T.integer():optional() })),
      }),
    }),
    result = T.integer(),
    examples = {
      { name = "two items", params = { filter = { items = { { name = "a" }, { name = "b", size = 2 } } } }, result = 2 },
    },
    handler = function(ctx, params)
      return #params.filter.items
    end,
  }),
  method({
    name = "e2e.whoami",
    summary = "How the call arrived",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    result = T.object({ transport = T.string(), peer = T.string(), request_id = T.string() }),
    examples = {
      { name = "over the socket", params = {}, result = { transport = "unix", peer = "unix:uid=0,pid=1", request_id = "0-1" } },
    },
    handler = function(ctx, params)
      ctx.log("debug", "whoami from " .. ctx.peer)
      return { transport = ctx.transport, peer = ctx.peer, request_id = ctx.request_id }
    end,
  }),
  method({
    name = "e2e.mounts",
    summary = "Calls one agent.mounts function with the given arguments (null for nil)",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    capabilities = { "mounts.read", "mounts.write" },
    params = T.object({
      fn = T.enum({ "config", "probe", "mkfs", "mount", "unmount", "cephfs_mount" }),
      args = T.array(T.any()),
    }),
    result = T.any(),
    examples = {
      { name = "the settings", params = { fn = "config", args = {} },
        result = { ok = { volume_prefix = "/media/volume", share_prefix = "/media/share", owner = "exouser" } } },
    },
    handler = function(ctx, params)
      local args, n = call_args(params.args)
      local r, code, message, data, truncated = agent.mounts[params.fn](table.unpack(args, 1, n))
      if r == nil then
        return { code = code, message = message, data = data, truncated = truncated }
      end
      return { ok = r }
    end,
  }),
  method({
    name = "e2e.packages",
    summary = "Calls one agent.packages function (null for nil), or runs an operation to its end",
    description = "fn = run starts args[1] with the names args[2] and polls every 100 ms until "
      .. "the operation is done, checking that each slice of a running operation is whole lines",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    capabilities = { "packages.read", "packages.write" },
    params = T.object({
      fn = T.enum({ "config", "start", "poll", "run" }),
      args = T.array(T.any()),
    }),
    result = T.any(),
    examples = {
      { name = "the settings", params = { fn = "config", args = {} },
        result = { ok = { backend = "none", disabled = true, allow = {}, allow_all = true, self_upgrade = true,
          self_packages = { "exosphere-guest-agent", "exosphere-guest-agent-methods" }, lock_timeout_s = 300, timeout_s = 3600 } } },
    },
    handler = function(ctx, params)
      local args, n = call_args(params.args)
      if params.fn ~= "run" then
        local r, code, message = agent.packages[params.fn](table.unpack(args, 1, n))
        if r == nil then
          return { code = code, message = message }
        end
        return { ok = r }
      end
      local op, code, message = agent.packages.start(args[1], args[2])
      if op == nil then
        return { code = code, message = message }
      end
      local log, status, polls, partial = {}, {}, 0, false
      local lo, so = 0, 0
      while true do
        local p, pcode, pmessage = agent.packages.poll(op.id, lo, so)
        if p == nil then
          return { code = pcode, message = pmessage, id = op.id }
        end
        polls = polls + 1
        if p.state == "running" and ((#p.log > 0 and p.log:sub(-1) ~= "\n")
            or (#p.status > 0 and p.status:sub(-1) ~= "\n")) then
          partial = true
        end
        log[#log + 1], status[#status + 1] = p.log, p.status
        lo, so = lo + #p.log, so + #p.status
        if p.state == "done" and lo >= p.log_size and so >= p.status_size then
          local text = table.concat(log)
          return { id = op.id, backend = op.backend, exit = p.exit, log_size = p.log_size,
                   log_read = #text, status_read = #table.concat(status), polls = polls,
                   partial_lines = partial, log_head = text:sub(1, 2000) }
        end
        if p.state == "running" then
          agent.sleep(100)
        end
      end
    end,
  }),
  method({
    name = "e2e.fail",
    summary = "Fails with a Lua error (a bug) or with an agent error",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    params = T.object({ kind = T.enum({ "bug", "not_found" }) }),
    result = T.null(),
    errors = { errors.NotFound },
    examples = { { name = "never succeeds", params = { kind = "bug" }, result = json.null } },
    handler = function(ctx, params)
      if params.kind == "not_found" then
        error(errors.NotFound("no such thing", { thing = "x" }))
      end
      error("e2e.fail: a deliberate bug")
    end,
  }),
  method({
    name = "e2e.metadata",
    summary = "What agent.metadata() returns (the metadata document, or its error)",
    description = "missing = true while the runtime's agent API has no metadata function.",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    capabilities = { "metadata.read" },
    result = T.object({
      body = T.string():optional(),
      error = T.string():optional(),
      missing = T.boolean():optional(),
    }),
    examples = { { name = "no metadata service", params = {}, result = { error = "not configured" } } },
    handler = function(ctx, params)
      if agent.metadata == nil then
        return { missing = true }
      end
      local body, err = agent.metadata()
      return { body = body, error = err }
    end,
  }),
  method({
    name = "e2e.mount_generation",
    summary = "What agent.mount_generation() returns: the mount table's generation",
    description = "missing = true while the runtime's agent API has no mount_generation function.",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    result = T.object({
      generation = T.integer():optional(),
      watching = T.boolean():optional(),
      missing = T.boolean():optional(),
    }),
    examples = { { name = "after two mounts", params = {}, result = { generation = 2, watching = true } } },
    handler = function(ctx, params)
      if agent.mount_generation == nil then
        return { missing = true }
      end
      local generation, watching = agent.mount_generation()
      return { generation = generation, watching = watching }
    end,
  }),
  method({
    name = "e2e.job",
    summary = "Starts a job that reports progress `steps` times, `ms` apart, then answers (or fails)",
    since = "2026-12-01",
    stability = "experimental",
    permission = "user",
    idempotent = true,
    params = T.object({
      steps = T.integer({ min = 0, max = 1000 }),
      ms = T.integer({ min = 0, max = 60000 }),
      fail = T.boolean():optional(),
    }),
    param_order = { "steps", "ms", "fail" },
    result = T.object({ job_id = T.string() }),
    examples = { { name = "three steps", params = { steps = 3, ms = 10 },
                   result = { job_id = "3f2a0c9e7b5d41e8a6c4b2d0f1e3a5c7" } } },
    handler = function(ctx, params)
      return { job_id = ctx.start_job({ summary = ("%d steps of %d ms"):format(params.steps, params.ms), cancellable = true },
        function(job)
          for i = 1, params.steps do
            agent.sleep(params.ms)
            job.progress(i * 100 // (params.steps + 1), "step", ("step %d of %d"):format(i, params.steps))
          end
          if params.fail then
            error(errors.Failed("e2e.job was asked to fail", { steps = params.steps }))
          end
          return { steps = params.steps, user = ctx.auth and ctx.auth.user or json.null }
        end) }
    end,
  }),
}
