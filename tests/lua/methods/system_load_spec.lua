local setup = require("tests.lua.helpers.setup")
local kit = require("tests.lua.helpers.kit")

local json = setup.json

-- /proc/meminfo as the kernel writes it (values in kB), with the two lines that matter.
local function meminfo(total, available)
  return table.concat({
    ("MemTotal:       %d kB"):format(total),
    "MemFree:          812344 kB",
    ("MemAvailable:   %d kB"):format(available),
    "Buffers:          102400 kB",
    "Cached:          2048000 kB",
    "",
  }, "\n")
end

-- statfs("/") of a 4 KiB-block file system; the numbers are blocks.
local function fs(blocks, bfree, bavail)
  return { bsize = 4096, frsize = 4096, blocks = blocks, bfree = bfree, bavail = bavail,
           files = 655360, ffree = 500000 }
end

local NVIDIA_ARGV = { "nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits" }

describe("system_load.current", function()
  local k

  before_each(function()
    k = kit.new({ files = { "methods/system_load.lua" } })
    k.core.unix_time = 1764072123
    k.core.cpu = 12
    k.core.files["/proc/meminfo"] = meminfo(16000000, 9120000) -- 43 % in use
    k.core.statfs_results["/"] = fs(10000000, 3000000, 2500000) -- df: 7000000 / 9500000 = 73.7 % → 74
  end)

  after_each(setup.restore_string_metatable)

  local function gpus(stdout, exit)
    k.core.programs["nvidia-smi"] = function()
      return { exit = exit or 0, stdout = stdout, stderr = "" }
    end
  end

  it("returns exactly the console line's shape, with [] for a machine without GPUs", function()
    local ok, text = k:rpc_text("system_load.current", {})
    assert.is_true(ok)
    assert.equal('{"cpuPctUsed":12,"epoch":1764072123,"gpuPctUsed":[],"memPctUsed":43,"rootfsPctUsed":74}', text)
    assert.same({}, k:logged("warn"))
  end)

  it("reports each GPU's utilisation from nvidia-smi", function()
    gpus("5\n97\n")
    local ok, text = k:rpc_text("system_load.current")
    assert.is_true(ok)
    assert.equal('{"cpuPctUsed":12,"epoch":1764072123,"gpuPctUsed":[5,97],"memPctUsed":43,"rootfsPctUsed":74}', text)
    assert.same({ argv = NVIDIA_ARGV, opts = { timeout_ms = 5000, max_output = 1048576 } }, k.core.spawned[1])
  end)

  it("accepts padded nvidia-smi lines", function()
    gpus(" 0 \r\n100\n")
    assert.same({ 0, 100 }, k:call_ok("system_load.current").gpuPctUsed)
  end)

  local failures = {
    { "fails", function() gpus("", 9) end, "nvidia-smi failed (exit 9, signal nil)" },
    { "times out", function()
      k.core.programs["nvidia-smi"] = function() return { timed_out = true, signal = 9, stdout = "" } end
    end, "nvidia-smi failed (exit nil, signal 9, timed out)" },
    { "prints something else", function() gpus("[N/A]\n") end, "nvidia-smi gave an unexpected line: [N/A]" },
    { "prints more than 100", function() gpus("101\n") end, "nvidia-smi gave an unexpected line: 101" },
    { "lists no GPU", function() gpus("") end, "nvidia-smi listed no GPUs" },
    { "cannot be started", function()
      k.core.programs["nvidia-smi"] = function() return nil, "EACCES: permission denied" end
    end, "nvidia-smi failed: EACCES: permission denied" },
  }
  for _, case in ipairs(failures) do
    it("gives [] and a warning when nvidia-smi " .. case[1], function()
      case[2]()
      assert.same({}, k:call_ok("system_load.current").gpuPctUsed)
      assert.equal(1, #k:logged("warn", case[3]))
    end)
  end

  it("rounds memory use to the nearest integer", function()
    k.core.files["/proc/meminfo"] = meminfo(1000, 574) -- 42.6 → 43
    assert.equal(43, k:call_ok("system_load.current").memPctUsed)
    k.core.files["/proc/meminfo"] = meminfo(1000, 576) -- 42.4 → 42
    assert.equal(42, k:call_ok("system_load.current").memPctUsed)
    k.core.files["/proc/meminfo"] = meminfo(1000, 0)
    assert.equal(100, k:call_ok("system_load.current").memPctUsed)
  end)

  it("rounds root file system use up, as df does, leaving out reserved blocks", function()
    k.core.statfs_results["/"] = fs(1000, 500, 450) -- 500 / 950 = 52.6 → 53
    assert.equal(53, k:call_ok("system_load.current").rootfsPctUsed)
    k.core.statfs_results["/"] = fs(1000, 500, 500) -- exactly 50
    assert.equal(50, k:call_ok("system_load.current").rootfsPctUsed)
    k.core.statfs_results["/"] = fs(0, 0, 0)
    assert.equal(0, k:call_ok("system_load.current").rootfsPctUsed)
  end)

  it("fails with Unavailable when /proc/meminfo cannot be read or parsed", function()
    k.core.files["/proc/meminfo"] = nil
    local ok, err = k:call("system_load.current")
    assert.is_false(ok)
    assert.same({ code = -32009, message = "cannot read /proc/meminfo: ENOENT: no such file or directory: /proc/meminfo" }, err)
    k.core.files["/proc/meminfo"] = "MemTotal: 1000 kB\n"
    ok, err = k:call("system_load.current")
    assert.same({ false, -32009, "/proc/meminfo has no MemTotal or MemAvailable" }, { ok, err.code, err.message })
  end)

  it("fails with Unavailable when / cannot be examined", function()
    k.core.statfs_results["/"] = nil
    local ok, err = k:call("system_load.current")
    assert.same({ false, -32009 }, { ok, err.code })
    assert.matches("^cannot statfs /: ", err.message)
  end)

  it("needs a logged-in user", function()
    for _, m in ipairs(k.host.discover().methods) do
      if m.name == "system_load.current" then
        assert.equal("user", m["x-permission"])
      end
    end
  end)
end)

-- nvidia-smi answering `stdout` in kit k.
local function gpus_of(k, stdout)
  k.core.programs["nvidia-smi"] = function()
    return { exit = 0, stdout = stdout, stderr = "" }
  end
end

describe("system_load.historical", function()
  local k

  -- Five samples a minute apart, the third on a machine that had a GPU.
  local function samples()
    local list = {}
    for i = 1, 5 do
      list[i] = { epoch = 1764072000 + 60 * (i - 1), cpuPctUsed = i, memPctUsed = 20 + i, rootfsPctUsed = 35,
                  gpuPctUsed = i == 3 and { 5, 97 } or {} }
    end
    return list
  end

  local function epochs(result)
    local out = {}
    for i, s in ipairs(result) do
      out[i] = s.epoch
    end
    return out
  end

  before_each(function()
    k = kit.new({ files = { "methods/system_load.lua" } })
    k.load.samples = samples()
  end)

  after_each(setup.restore_string_metatable)

  it("returns every sample, oldest first, each in the console line's shape", function()
    local ok, text = k:rpc_text("system_load.historical", {})
    assert.is_true(ok)
    assert.equal('[{"cpuPctUsed":1,"epoch":1764072000,"gpuPctUsed":[],"memPctUsed":21,"rootfsPctUsed":35},'
      .. '{"cpuPctUsed":2,"epoch":1764072060,"gpuPctUsed":[],"memPctUsed":22,"rootfsPctUsed":35},'
      .. '{"cpuPctUsed":3,"epoch":1764072120,"gpuPctUsed":[5,97],"memPctUsed":23,"rootfsPctUsed":35},'
      .. '{"cpuPctUsed":4,"epoch":1764072180,"gpuPctUsed":[],"memPctUsed":24,"rootfsPctUsed":35},'
      .. '{"cpuPctUsed":5,"epoch":1764072240,"gpuPctUsed":[],"memPctUsed":25,"rootfsPctUsed":35}]', text)
  end)

  it("keeps from and to inclusive", function()
    assert.same({ 1764072060, 1764072120, 1764072180 },
      epochs(k:call_ok("system_load.historical", { from = 1764072060, to = 1764072180 })))
    assert.same({ 1764072180, 1764072240 }, epochs(k:call_ok("system_load.historical", { from = 1764072170 })))
    assert.same({ 1764072000 }, epochs(k:call_ok("system_load.historical", { to = 1764072000 })))
    assert.same({ 1764072120 },
      epochs(k:call_ok("system_load.historical", { from = 1764072120, to = 1764072120 })))
  end)

  it("keeps the newest samples of the range within limit", function()
    assert.same({ 1764072240 }, epochs(k:call_ok("system_load.historical", { limit = 1 })))
    assert.same({ 1764072120, 1764072180 },
      epochs(k:call_ok("system_load.historical", { to = 1764072180, limit = 2 })))
    assert.same({ 1764072000, 1764072060, 1764072120, 1764072180, 1764072240 },
      epochs(k:call_ok("system_load.historical", { limit = 10080 })))
  end)

  it("takes positional params in the order from, to, limit", function()
    assert.same({ 1764072180 }, epochs(k:call_ok("system_load.historical", json.array({ 1764072060, 1764072180, 1 }))))
  end)

  it("returns an empty array when there is no history, or none in the range", function()
    k.load.samples = {}
    local ok, text = k:rpc_text("system_load.historical", {})
    assert.same({ true, "[]" }, { ok, text })
    k.load.samples = samples()
    ok, text = k:rpc_text("system_load.historical", { from = 1764080000 })
    assert.same({ true, "[]" }, { ok, text })
  end)

  it("refuses to before from, with a clear message", function()
    local ok, err = k:call("system_load.historical", { from = 1764072120, to = 1764072060 })
    assert.is_false(ok)
    assert.same({ code = -32602, message = "Invalid params",
                  data = { path = "params.to", reason = "is 1764072060, before from (1764072120)" } }, err)
    assert.equal(0, k.load.calls)
  end)

  local bad = {
    { { limit = 0 }, "params.limit" },
    { { limit = 10081 }, "params.limit" },
    { { from = -1 }, "params.from" },
    { { from = 1.5 }, "params.from" },
    { { to = "now" }, "params.to" },
    { { since = 1 }, "params.since" }, -- the 2026-12-01 name: unknown to the current version
    { { later = 1 }, "params.later" },
  }
  for _, case in ipairs(bad) do
    it("refuses " .. json.encode(case[1]), function()
      local ok, err = k:call("system_load.historical", case[1])
      assert.same({ false, -32602, case[2] }, { ok, err.code, err.data.path })
    end)
  end

  it("needs a logged-in user and only system.read", function()
    for _, m in ipairs(k.host.discover().methods) do
      if m.name == "system_load.historical" then
        assert.equal("user", m["x-permission"])
      end
    end
    local ok, err = k:call("system_load.historical", {}, { auth = false })
    assert.same({ false, -32001 }, { ok, err.code })
    assert.same({ true }, { (k:call("system_load.historical", {}, { auth = kit.USER })) })
  end)
end)

describe("agent.load_history", function()
  local agent_mod = require("sandbox.agent")

  local function api()
    return agent_mod.build(function() return { api_versions = {}, methods = 0, skipped = {} } end)
  end

  it("checks its arguments, raising at the caller's line", function()
    local a = api()
    local function call(...)
      local args = table.pack(...)
      return pcall(function()
        local r = a.load_history(table.unpack(args, 1, args.n)) -- not a tail call: the line shows
        return r
      end)
    end
    local cases = {
      { { 1.5 }, "since must be an integer" },
      { { nil, "x" }, "until must be an integer" },
      { { 10, 5 }, "until must not be before since" },
      { { nil, nil, 0 }, "limit must be an integer from 1 to 10080" },
      { { nil, nil, 10081 }, "limit must be an integer from 1 to 10080" },
    }
    for _, case in ipairs(cases) do
      local ok, err = call(table.unpack(case[1], 1, 3))
      assert.is_false(ok)
      assert.matches("system_load_spec.lua:%d+: agent.load_history: " .. case[2], err)
    end
  end)
end)

describe("notify.system_load", function()
  after_each(setup.restore_string_metatable)

  it("carries what system_load.current returns, as the runtime emits each sample", function()
    local k = kit.new({ files = { "methods/system_load.lua" } })
    k.core.files["/proc/meminfo"] = meminfo(16000000, 9120000)
    k.core.statfs_results["/"] = fs(10000000, 3000000, 2500000)
    local doc = k.host.discover()
    local note
    for _, n in ipairs(doc["x-notifications"]) do
      if n.name == "notify.system_load" then
        note = n
      end
    end
    assert.equal("notify.system_load", note.name)
    for _, m in ipairs(doc.methods) do
      if m.name == "system_load.current" then
        assert.same(m.result.schema, note.params)
      end
    end
    assert.same({ names = { "notify.system_load" } },
      k:call_ok("notifications.subscribe", { names = { "notify.system_load" } }, { session = 3, auth = kit.USER }))
    -- The sample as runtime/l_load.c pushes it: gpuPctUsed [] without a GPU.
    local sample = k:call_ok("system_load.current")
    assert.equal(1, k.host.emit("notify.system_load", sample))
    local v = json.decode(k.core.sent[3][1])
    assert.equal("notify.system_load", v.method)
    assert.same({ epoch = 1764072000, cpuPctUsed = 0, memPctUsed = 43, rootfsPctUsed = 74, gpuPctUsed = {} }, v.params)
  end)

  it("reaches a session of API version 2026-12-01 with null for no GPU, and the current one with []", function()
    local k = kit.new({ files = { "methods/system_load.lua" } })
    k.core.files["/proc/meminfo"] = meminfo(16000000, 9120000)
    k.core.statfs_results["/"] = fs(10000000, 3000000, 2500000)
    k:call_ok("notifications.subscribe", { names = { "notify.system_load" } },
      { session = 3, auth = kit.USER, api_version = "2026-12-01" })
    k:call_ok("notifications.subscribe", { names = { "notify.system_load" } }, { session = 4, auth = kit.USER })
    local sample = k:call_ok("system_load.current")
    assert.equal(2, k.host.emit("notify.system_load", sample))
    assert.equal(json.null, json.decode(k.core.sent[3][1]).params.gpuPctUsed)
    assert.same({}, json.decode(k.core.sent[4][1]).params.gpuPctUsed)
    -- The shim copies: the sample itself is unchanged for the next subscriber.
    assert.same({}, sample.gpuPctUsed)
    gpus_of(k, "5\n")
    assert.equal(2, k.host.emit("notify.system_load", k:call_ok("system_load.current")))
    assert.same({ 5 }, json.decode(k.core.sent[3][2]).params.gpuPctUsed)
    assert.same({ 5 }, json.decode(k.core.sent[4][2]).params.gpuPctUsed)
  end)
end)

describe("system_load under API version 2026-12-01", function()
  local OLD = { api_version = "2026-12-01" }
  local k
  before_each(function()
    k = kit.new({ files = { "methods/system_load.lua" } })
    k.core.files["/proc/meminfo"] = meminfo(16000000, 9120000)
    k.core.statfs_results["/"] = fs(10000000, 3000000, 2500000)
    k.load.samples = {
      { epoch = 1764072000, cpuPctUsed = 1, memPctUsed = 21, rootfsPctUsed = 35, gpuPctUsed = {} },
      { epoch = 1764072060, cpuPctUsed = 2, memPctUsed = 22, rootfsPctUsed = 35, gpuPctUsed = { 5, 97 } },
      { epoch = 1764072120, cpuPctUsed = 3, memPctUsed = 23, rootfsPctUsed = 35, gpuPctUsed = {} },
    }
  end)
  after_each(setup.restore_string_metatable)

  it("system_load.current gives null without a GPU, and the list with one", function()
    local ok, text = k:rpc_text("system_load.current", {}, OLD)
    assert.is_true(ok)
    assert.equal('{"cpuPctUsed":0,"epoch":1764072000,"gpuPctUsed":null,"memPctUsed":43,"rootfsPctUsed":74}', text)
    gpus_of(k, "5\n97\n")
    assert.same({ 5, 97 }, k:call_ok("system_load.current", {}, OLD).gpuPctUsed)
  end)

  it("system_load.historical takes since and until, by name and by position, and gives null", function()
    local ok, text = k:rpc_text("system_load.historical", { since = 1764072060, ["until"] = 1764072120 }, OLD)
    assert.is_true(ok)
    assert.equal('[{"cpuPctUsed":2,"epoch":1764072060,"gpuPctUsed":[5,97],"memPctUsed":22,"rootfsPctUsed":35},'
      .. '{"cpuPctUsed":3,"epoch":1764072120,"gpuPctUsed":null,"memPctUsed":23,"rootfsPctUsed":35}]', text)
    local r = k:call_ok("system_load.historical", json.array({ 1764072000, 1764072000, 1 }), OLD)
    assert.same({ { epoch = 1764072000, cpuPctUsed = 1, memPctUsed = 21, rootfsPctUsed = 35, gpuPctUsed = json.null } }, r)
  end)

  it("system_load.historical refuses the current version's names, naming them", function()
    local ok, err = k:call("system_load.historical", { from = 1 }, OLD)
    assert.same({ false, -32602, "params.from", "is not a parameter of this method" },
      { ok, err.code, err.data.path, err.data.reason })
  end)

  it("an error that names a renamed param names the older one", function()
    local ok, err = k:call("system_load.historical", { since = 1764072120, ["until"] = 1764072060 }, OLD)
    assert.is_false(ok)
    assert.same({ code = -32602, message = "Invalid params",
                  data = { path = "params.until", reason = "is 1764072060, before since (1764072120)" } }, err)
    assert.equal(0, k.load.calls)
  end)

  it("the document shows the older params, result and examples", function()
    local doc = k.host.discover("2026-12-01")
    assert.equal("2026-12-01", doc.info["x-api-version"])
    for _, m in ipairs(doc.methods) do
      if m.name == "system_load.historical" then
        assert.same({ "since", "until", "limit" }, { m.params[1].name, m.params[2].name, m.params[3].name })
        assert.same({ { name = "since", value = 1764071880 } }, m.examples[1].params)
        assert.equal(json.null, m.examples[1].result.value[1].gpuPctUsed)
      elseif m.name == "system_load.current" then
        assert.same({ "array", "null" }, { m.result.schema.properties.gpuPctUsed.oneOf[1].type,
                                           m.result.schema.properties.gpuPctUsed.oneOf[2].type })
      end
    end
    assert.same(doc, k:call_ok("rpc.discover", {}, OLD))
  end)
end)
