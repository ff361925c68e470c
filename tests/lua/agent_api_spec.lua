local setup = require("tests.lua.helpers.setup")
local agent = require("sandbox.agent")

local core = setup.core

-- Calls an agent API function as a call granted every capability would.
local function drive(f, ...)
  return core.drive_with({ "system.read", "process.run" }, f, ...)
end

describe("the agent API", function()
  local api

  before_each(function()
    core.reset()
    api = agent.build(function()
      return { api_versions = { "2026-12-01" }, current_api_version = "2026-12-01", methods = 3,
               skipped = { { file = "/x.lua", error = "/x.lua:1: oops" } } }
    end)
  end)

  describe("read_file", function()
    it("reads under /proc and /sys with a 1 MiB default limit", function()
      core.files["/proc/meminfo"] = "MemTotal: 1 kB\n"
      assert.equal("MemTotal: 1 kB\n", drive(api.read_file, "/proc/meminfo"))
      core.files["/sys/block/vda/size"] = "123456"
      assert.equal("123", drive(api.read_file, "/sys/block/vda/size", 3))
    end)

    it("refuses other paths and ways out of /proc and /sys", function()
      for _, path in ipairs({ "/etc/shadow", "/proc/../etc/shadow", "/sys/./../etc/passwd", "/proc",
                              "/proc/self/root/etc/shadow", "/proc/1/cwd/x", "/proc/self/environ",
                              "/proc/self/fd/3", "/proc/self/task/1/root/etc/passwd", "/proc//meminfo",
                              "proc/meminfo", "/run/reboot-required.pkgs", "/run/reboot-required/x",
                              "/run/udev/data/n3", "/run/udev/data/b8:1/x" }) do
        assert.same({ nil, "not permitted: " .. path }, { api.read_file(path) }, path)
      end
    end)

    it("allows udev's device entries and Debian's reboot flag, and nothing else of /run", function()
      assert.is_true(require("sandbox.agent").readable("/run/udev/data/b8:16"))
      assert.is_true(require("sandbox.agent").readable("/run/reboot-required"))
      assert.is_false(require("sandbox.agent").readable("/run/reboot-required.pkgs"))
      assert.is_false(require("sandbox.agent").readable("/run/user/0/x"))
    end)

    it("passes on the runtime's error", function()
      assert.same({ nil, "ENOENT: no such file or directory: /proc/nope" },
        { drive(api.read_file, "/proc/nope") })
    end)

    it("raises on misuse", function()
      assert.has_error(function() api.read_file(1) end, "agent.read_file: path must be a string")
      assert.has_error(function() api.read_file("/proc/meminfo", 0) end)
      assert.has_error(function() api.read_file("/proc/meminfo", 64 * 1024 * 1024) end)
    end)
  end)

  describe("run", function()
    it("spawns without a shell with default limits", function()
      core.programs["true"] = function() return { exit = 0 } end
      local argv = { "true", "--flag" }
      local res = drive(api.run, argv)
      assert.same({ exit = 0, stdout = "", stderr = "", timed_out = false, truncated = false }, res)
      assert.same({ argv = { "true", "--flag" }, opts = { timeout_ms = 10000, max_output = 1048576 } }, core.spawned[1])
      assert.are_not.equal(argv, core.spawned[1].argv)
    end)

    it("passes options through", function()
      core.programs["cat"] = function(_, opts) return { exit = 0, stdout = opts.stdin } end
      local res = drive(api.run, { "cat" }, { timeout_ms = 5000, max_output = 10, stdin = "hi" })
      assert.equal("hi", res.stdout)
      assert.same({ timeout_ms = 5000, max_output = 10, stdin = "hi" }, core.spawned[1].opts)
    end)

    it("reports a missing program", function()
      assert.same({ nil, "not found: nvidia-smi" }, { drive(api.run, { "nvidia-smi" }) })
    end)

    it("raises on misuse", function()
      assert.has_error(function() api.run("ls -l") end, "agent.run: argv must be a non-empty array of strings")
      assert.has_error(function() api.run({ "ls", 1 }) end, "agent.run: argv[2] must be a string, got number")
      assert.has_error(function() api.run({ "ls" }, { timeout = 1 }) end, "agent.run: bad option 'timeout'")
      assert.has_error(function() api.run({ "ls" }, { timeout_ms = -1 }) end,
        "agent.run: timeout_ms must be a positive integer")
    end)
  end)

  it("sleeps by yielding", function()
    local before = core.now_ms()
    drive(api.sleep, 1500)
    assert.equal(before + 1500, core.now_ms())
    assert.has_error(function() api.sleep(1.5) end, "agent.sleep: ms must be a non-negative integer")
  end)

  it("passes statfs through", function()
    core.statfs_results["/"] = { blocks = 10 }
    assert.same({ blocks = 10 }, drive(api.statfs, "/"))
    assert.same({ nil, "ENOENT: no such file or directory: /nope" }, { drive(api.statfs, "/nope") })
  end)

  it("answers time, clock, host name and CPU from the runtime", function()
    core.cpu, core.host_name = 37, "vm-9"
    assert.same({ 1764072000, 1000000, "vm-9", 37 }, { api.time(), api.now_ms(), api.hostname(), api.cpu_percent() })
  end)

  it("describes the agent, with a copy of the load summary", function()
    local info = api.info()
    assert.same({
      version = "0.1.0", lua_api_level = 2, started = 1764070000, uptime = 2000,
      api_versions = { "2026-12-01" }, current_api_version = "2026-12-01",
      methods = { loaded = 3, skipped = { { file = "/x.lua", error = "/x.lua:1: oops" } } },
      packages_backend = "apt",
    }, info)
    info.methods.skipped[1].file = "changed"
    assert.equal("/x.lua", api.info().methods.skipped[1].file)
  end)

  describe("capabilities", function()
    it("read_file and statfs need system.read, run needs process.run", function()
      core.files["/proc/loadavg"] = "1"
      core.statfs_results["/"] = { blocks = 1 }
      assert.equal("1", core.drive_with({ "system.read" }, api.read_file, "/proc/loadavg"))
      assert.same({ blocks = 1 }, core.drive_with({ "system.read" }, api.statfs, "/"))
      assert.has_error(function() core.drive_with({ "system.read" }, api.run, { "true" }) end,
        "capability 'process.run' is not granted to this method")
      assert.has_error(function() core.drive_with({}, api.read_file, "/proc/loadavg") end,
        "capability 'system.read' is not granted to this method")
    end)

    it("are checked by the runtime's bindings too, outside the agent API", function()
      assert.has_error(function() core.drive_with({ "system.read" }, core.spawn, { "true" }, {}) end,
        "capability 'process.run' is not granted to this method")
      assert.has_error(function()
        core.drive(function()
          core.set_capabilities({})
          core.set_capabilities({ "process.run" })
        end)
      end, "set_capabilities: called twice in one call")
    end)
  end)

  describe("lines", function()
    local function lines(s)
      local out = {}
      for l in api.lines(s) do
        out[#out + 1] = l
      end
      return out
    end

    it("gives each line without its newline, keeping empty ones", function()
      assert.same({ "a", "", "b" }, lines("a\n\nb\n"))
      assert.same({ "a", "b" }, lines("a\r\nb"))
      assert.same({}, lines(""))
      assert.same({ "" }, lines("\n"))
      assert.same({ "x\r" }, lines("x\r"))
    end)

    it("is linear on any text, even where patterns are refused", function()
      local big = ("x"):rep(4 * 1024 * 1024) .. "\n" .. ("y"):rep(10)
      local got = lines(big)
      assert.same({ 4 * 1024 * 1024, "yyyyyyyyyy" }, { #got[1], got[2] })
    end)

    it("raises on misuse", function()
      assert.has_error(function() api.lines(nil) end, "agent.lines: expected a string, got nil")
    end)
  end)

  describe("split", function()
    it("splits on a plain separator, keeping empty fields", function()
      assert.same({ "a", "", "b" }, api.split("a,,b", ","))
      assert.same({ "" }, api.split("", ","))
      assert.same({ "1", "2.5", "" }, api.split("1.%2.5.%", ".%"))
    end)

    it("splits on runs of white space without a separator", function()
      assert.same({ "0.10", "0.20", "0.30", "1/99", "42" }, api.split("0.10 0.20 0.30 1/99 42\n"))
      assert.same({}, api.split("  \t "))
    end)

    it("raises on misuse", function()
      assert.has_error(function() api.split(1) end, "agent.split: expected a string, got number")
      assert.has_error(function() api.split("a", "") end, "agent.split: sep must be a string of 1 to 64 bytes")
    end)
  end)

  it("logs at the given level, and refuses unknown levels", function()
    api.log("warn", "careful")
    assert.same({ "careful" }, core.logged("warn"))
    assert.has_error(function() api.log("loud", "x") end,
      "agent.log: log level must be one of debug, info, warn, error (got loud)")
  end)
end)
