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

  it("returns exactly the console line's shape, with null for a machine without GPUs", function()
    local ok, text = k:rpc_text("system_load.current", {})
    assert.is_true(ok)
    assert.equal('{"cpuPctUsed":12,"epoch":1764072123,"gpuPctUsed":null,"memPctUsed":43,"rootfsPctUsed":74}', text)
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
    it("gives null and a warning when nvidia-smi " .. case[1], function()
      case[2]()
      assert.equal(json.null, k:call_ok("system_load.current").gpuPctUsed)
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
