-- packages.check_updates and packages.update on the fake exo.packages, fed with the recorded
-- output of apt-get and dnf in tests/lua/fixtures/packages/ (README.md there says how each
-- was recorded). Every fixture is used (the last test checks).
local setup = require("tests.lua.helpers.setup")
local fake = setup.packages
local kit = require("tests.lua.helpers.kit")
local json = kit.json

local DIR = "tests/lua/fixtures/packages/"
local used = {}

local function read(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local text = f:read("a")
  f:close()
  return text
end

-- A fixture's recorded bytes without its three comment lines, and its exit line.
local function fixture(path)
  local text = assert(read(DIR .. path), "no fixture " .. path)
  used[path] = true
  local exit
  for _ = 1, 3 do
    local line, rest = text:match("^(# [^\n]*)\n(.*)$")
    assert(line, path .. " lacks its comment lines")
    exit = line:match("^# Exit: (.*)$") or exit
    text = rest
  end
  return text, assert(exit, path .. " has no # Exit: line")
end

-- The run of `name` (apt/install: install.log and, when recorded, install.status).
local function run(name, extra)
  local log, exit = fixture(name .. ".log")
  local r = { log = log, exit = exit, status = "" }
  if read(DIR .. name .. ".status") then
    r.status = fixture(name .. ".status")
  end
  for k, v in pairs(extra or {}) do
    r[k] = v
  end
  return r
end

local function phases_sent(k, session)
  local out = {}
  for _, n in ipairs(k:received(session)) do
    if n.method == "notify.jobs.progress" then
      local p = n.params.progress
      out[#out + 1] = { p.percent, p.phase, p.detail }
    end
  end
  return out
end

local function phase_names(k, session)
  local out = {}
  for _, p in ipairs(phases_sent(k, session)) do
    if out[#out] ~= p[2] then
      out[#out + 1] = p[2]
    end
  end
  return out
end

-- A new worker: the first one's stored job records, and a new kit to restore them in; the
-- fake's operations (the monitor's, which outlive the worker) are carried over.
local function restart(first)
  local texts = {}
  for i, p in ipairs(first.core.job_puts) do
    texts[i] = p.text
  end
  local ops, runs = fake.ops, fake.runs
  local k2 = kit.new({ files = { "methods/packages.lua" } })
  fake.ops, fake.runs = ops, runs
  return k2, texts
end

describe("packages", function()
  local k

  before_each(function()
    k = kit.new({ files = { "methods/packages.lua" } })
    fake.config.allow = { "exo-test-pkg", "exo-test-lib", "exo-test-big", "no-such-package" }
  end)

  after_each(setup.restore_string_metatable)

  -- One test per recorded failure of an update of `package` with `backend`: { fixture, code,
  -- reason, check(data)? }. The job fails with the code and reason, its data names the
  -- backend, and its exit line matches exit_pattern when one is given.
  local function it_fails_updates(backend, package, failures, exit_pattern)
    for _, f in ipairs(failures) do
      it("fails the job with " .. f[3] .. " (" .. f[1] .. ")", function()
        fake.runs.install = run(f[1])
        local _, started = k:rpc("packages.update", { packages = { package } })
        k:run_jobs()
        local r = k:call_ok("jobs.get", { job_id = started.job_id })
        assert.equal("failed", r.state)
        assert.same({ f[2], f[3], backend }, { r.error.code, r.error.data.reason, r.error.data.backend })
        if exit_pattern then
          assert.matches(exit_pattern, r.error.data.exit)
        end
        if f[4] then
          f[4](r.error.data)
        end
      end)
    end
  end

  it("load", function()
    assert.same({}, k.summary.skipped)
  end)

  describe("check_updates with apt", function()
    before_each(function()
      fake.runs.refresh = run("apt/refresh")
    end)

    it("lists a real dist-upgrade's updates with their origins and security flags", function()
      fake.runs.list = run("apt/host-dist-upgrade")
      local ok, r = k:rpc("packages.check_updates", {}, { auth = kit.USER })
      assert.is_true(ok, json.encode(r))
      assert.same({ "apt", true }, { r.backend, r.refreshed })
      assert.equal(107, #r.updates)
      local by_name, security = {}, 0
      for i, u in ipairs(r.updates) do
        by_name[u.name] = u
        security = security + (u.security and 1 or 0)
        if i > 1 then
          assert.is_true(r.updates[i - 1].name < u.name, "sorted by name")
        end
      end
      assert.equal(70, security)
      assert.same({ name = "tzdata", installed = "2025b-0+deb12u2", candidate = "2026f-0+deb12u1",
                    origin = "Debian-Security:12/oldstable-security", security = true }, by_name.tzdata)
      assert.same({ name = "login", installed = "1:4.13+dfsg1-1+deb12u1", candidate = "1:4.13+dfsg1-1+deb12u2",
                    origin = "Debian:12.15/oldstable", security = false }, by_name.login)
      -- "Inst ... [all]) []": apt's trailing marker does not disturb the line
      assert.equal("248+deb12u2", by_name["postgresql-common"].candidate)
      assert.same({ "refresh", "list" }, { fake.calls_of("start")[1][2], fake.calls_of("start")[2][2] })
    end)

    it("restricts the list to the named packages, as the method's example shows", function()
      fake.runs.list = run("apt/host-only-upgrade")
      local ok, r = k:rpc("packages.check_updates", { packages = { "tzdata", "openssh-client" } })
      assert.is_true(ok, json.encode(r))
      local ex = k.host.discover().methods
      local example
      for _, m in ipairs(ex) do
        if m.name == "packages.check_updates" then
          example = m.examples[1].result.value
        end
      end
      assert.same(json.decode(json.encode(example)), r)
      assert.same({ "start", "list", { "tzdata", "openssh-client" } }, fake.calls_of("start")[2])
      assert.is_nil(fake.calls_of("start")[1][3], "refresh takes no names")
    end)

    it("gives null as the installed version of a package the upgrade would newly install", function()
      fake.runs.list = run("apt/host-new-package")
      local ok, r = k:rpc("packages.check_updates", { packages = { "hello" } })
      assert.is_true(ok, json.encode(r))
      assert.same({ { name = "hello", installed = json.null, candidate = "2.10-3", origin = "Debian:12.15/oldstable",
                      security = false } }, r.updates)
    end)

    it("answers no updates for a package that is not installed or up to date", function()
      fake.runs.list = run("apt/host-not-installed")
      local ok, r = k:rpc("packages.check_updates", { packages = { "hello" } })
      assert.is_true(ok, json.encode(r))
      assert.same({}, r.updates)
    end)

    it("lists a local repository's updates (origin without a version)", function()
      for _, name in ipairs({ "apt/list-all", "apt/list-named" }) do
        fake.runs.list = run(name)
        local ok, r = k:rpc("packages.check_updates", {})
        assert.is_true(ok, json.encode(r))
        assert.is_true(#r.updates >= 1)
        for _, u in ipairs(r.updates) do
          assert.same({ "1.0", "1.1", "Exosphere-Tests:stable", false }, { u.installed, u.candidate, u.origin, u.security })
        end
      end
    end)

    it("fails with unknown_package for a name apt does not know", function()
      for _, name in ipairs({ "apt/host-no-such", "apt/list-none" }) do
        fake.runs.list = run(name)
        local ok, err = k:rpc("packages.check_updates", { packages = { "no-such-package" } })
        assert.is_false(ok)
        assert.same({ -32003, "unknown_package", "no-such-package" }, { err.code, err.data.reason, err.data.package })
      end
    end)

    it("lists from the old package lists when the refresh cannot reach a repository", function()
      fake.runs.list = run("apt/list-all")
      for _, name in ipairs({ "apt/refresh-unreachable", "apt/refresh-no-route", "apt/refresh-refused",
                              "apt/refresh-lock-timeout" }) do
        fake.runs.refresh = run(name)
        local ok, r = k:rpc("packages.check_updates", {})
        assert.is_true(ok, json.encode(r))
        assert.is_false(r.refreshed, name)
        assert.equal(3, #r.updates)
      end
      assert.is_true(#k:logged("warn", "refresh failed") >= 4)
    end)

    it("shares refreshes: a refresh that worked counts for a minute, a failed one for nothing", function()
      fake.runs.list = run("apt/list-all")
      local function refreshes()
        local n = 0
        for _, c in ipairs(fake.calls) do
          if c[1] == "start" and c[2] == "refresh" then
            n = n + 1
          end
        end
        return n
      end
      for _ = 1, 3 do
        local ok, r = k:rpc("packages.check_updates", {})
        assert.is_true(ok and r.refreshed, json.encode(r))
      end
      assert.equal(1, refreshes())
      k.core.clock_ms = k.core.clock_ms + 61000
      assert.is_true(select(2, k:rpc("packages.check_updates", {})).refreshed)
      assert.equal(2, refreshes())
      -- A failed refresh is not remembered: the next call tries again.
      k.core.clock_ms = k.core.clock_ms + 61000
      fake.runs.refresh = run("apt/refresh-unreachable")
      assert.is_false(select(2, k:rpc("packages.check_updates", {})).refreshed)
      assert.is_false(select(2, k:rpc("packages.check_updates", {})).refreshed)
      assert.equal(4, refreshes())
    end)

    it("a call joins the refresh that an earlier call left running", function()
      fake.runs.refresh = run("apt/refresh", { polls = 100 })
      fake.runs.list = run("apt/list-all")
      local t0 = k.core.now_ms()
      local ok, r = k:rpc("packages.check_updates", {}, { deadline_ms = t0 + 5000 })
      assert.is_true(ok, json.encode(r))
      assert.is_false(r.refreshed)
      ok, r = k:rpc("packages.check_updates", {}, { deadline_ms = k.core.now_ms() + 60000 })
      assert.is_true(ok and r.refreshed, json.encode(r))
      local starts = 0
      for _, c in ipairs(fake.calls) do
        starts = starts + ((c[1] == "start" and c[2] == "refresh") and 1 or 0)
      end
      assert.equal(1, starts)
    end)

    it("stops waiting for a refresh at 60% of the call's time and lists without it", function()
      fake.runs.refresh = run("apt/refresh", { polls = 1000 })
      fake.runs.list = run("apt/list-all")
      local t0 = k.core.now_ms()
      local ok, r = k:rpc("packages.check_updates", {}, { deadline_ms = t0 + 30000 })
      assert.is_true(ok, json.encode(r))
      assert.is_false(r.refreshed)
      assert.equal(3, #r.updates)
      local waited = k.core.now_ms() - t0
      assert.is_true(waited >= 17000 and waited <= 18500, "waited " .. waited)
    end)

    it("fails with a timeout when the list does not end within the call's time", function()
      fake.runs.list = run("apt/list-all", { polls = 1000 })
      local t0 = k.core.now_ms()
      local ok, err = k:rpc("packages.check_updates", {}, { deadline_ms = t0 + 10000 })
      assert.is_false(ok)
      assert.same({ -32004, "timeout" }, { err.code, err.data.reason })
      assert.is_true(k.core.now_ms() <= t0 + 10000)
    end)

    it("reads output that arrives in slices cut anywhere, sleeping 250 ms when it has caught up", function()
      fake.runs.list = run("apt/host-dist-upgrade", { step = 97 })
      local t0 = k.core.now_ms()
      local ok, r = k:rpc("packages.check_updates", {}, { deadline_ms = t0 + 120000 })
      assert.is_true(ok, json.encode(r))
      assert.equal(107, #r.updates)
      local polls = #fake.calls_of("poll")
      assert.is_true(polls > 150, "polls " .. polls)
      -- (one of the polls is the refresh's, and one the last, after which it does not sleep)
      local slept = k.core.now_ms() - t0
      assert.is_true(slept >= (polls - 3) * 250 and slept <= polls * 250, "slept " .. slept)
    end)

    it("polls without sleeping while it catches up with a file that is already written", function()
      fake.runs.list = run("apt/host-dist-upgrade", { step = 1000000 })
      local t0 = k.core.now_ms()
      local ok, r = k:rpc("packages.check_updates", {})
      assert.is_true(ok, json.encode(r))
      assert.equal(107, #r.updates)
      -- 15 KiB in slices of 3072 bytes: no sleep between them.
      assert.equal(0, k.core.now_ms() - t0)
      assert.is_true(#fake.calls_of("poll") >= 6)
    end)

    it("answers at most 5000 updates", function()
      local lines = { "Reading package lists..." }
      for i = 1, 5001 do
        lines[#lines + 1] = ("Inst pkg%05d [1.0] (1.1 Exosphere-Tests:stable [all])"):format(i)
      end
      fake.runs.list = { log = table.concat(lines, "\n") .. "\n", exit = "exit 0", step = 1000000 }
      local ok, r = k:rpc("packages.check_updates", {})
      assert.is_true(ok)
      assert.equal(5000, #r.updates)
      assert.equal(1, #k:logged("warn", "more than 5000 updates"))
    end)

    it("cuts a line longer than 2048 bytes and reads the next one", function()
      local inst = "Inst exo-test-pkg [1.0] (1.1 Exosphere-Tests:stable [all])"
      fake.runs.list = { log = ("x"):rep(10000) .. "\n" .. inst .. "\n", exit = "exit 0", step = 700 }
      local ok, r = k:rpc("packages.check_updates", {})
      assert.is_true(ok, json.encode(r))
      assert.same({ "exo-test-pkg" }, { r.updates[1].name })
      assert.equal(1, #r.updates)
    end)

    it("maps the monitor's refusals", function()
      fake.start_error = { "failed", "cannot create the operation's directory" }
      local ok, err = k:rpc("packages.check_updates", {})
      assert.same({ false, -32000, "failed" }, { ok, err.code, err.data.reason })
      fake.start_error = nil
      fake.config.backend = "none"
      ok, err = k:rpc("packages.check_updates", {})
      assert.same({ false, -32008, "no_backend" }, { ok, err.code, err.data.reason })
      assert.matches("no package manager the agent drives", err.message, 1, true)
      -- Turned off by the operator: said so.
      fake.config.disabled = true
      ok, err = k:rpc("packages.check_updates", {})
      assert.same({ false, -32008, "no_backend" }, { ok, err.code, err.data.reason })
      assert.matches("turned off on this instance", err.message, 1, true)
      fake.config.disabled = false
      fake.config.backend = "apt"
      fake.files_gone = true
      ok, err = k:rpc("packages.check_updates", {})
      assert.same({ false, -32000, "failed" }, { ok, err.code, err.data.reason })
    end)

    it("refuses bad names before asking anyone", function()
      for _, names in ipairs({ { "-rf" }, { ".hidden" }, { "a b" }, { ("a"):rep(129) }, {} }) do
        local ok, err = k:rpc("packages.check_updates", { packages = names })
        assert.is_false(ok)
        assert.equal(-32602, err.code)
      end
      local many = {}
      for i = 1, 65 do
        many[i] = "p" .. i
      end
      local ok, err = k:rpc("packages.check_updates", { packages = many })
      assert.same({ false, -32602 }, { ok, err.code })
      -- A trailing "-" is apt's "remove": refused by both methods, naming the entry.
      for _, m in ipairs({ "packages.check_updates", "packages.update" }) do
        ok, err = k:rpc(m, { packages = { "exo-test-pkg", "bash-" } })
        assert.same({ false, -32602, "params.packages[2]" }, { ok, err.code, err.data.path }, m)
      end
      assert.same({}, fake.calls_of("start"))
    end)
  end)

  describe("check_updates with dnf", function()
    before_each(function()
      fake.config.backend = "dnf"
      fake.runs.refresh = run("dnf/makecache")
    end)

    it("lists check-update's lines (exit 100) and the obsoleting packages", function()
      for _, name in ipairs({ "dnf/check-update", "dnf/check-update-verbose" }) do
        fake.runs.list = run(name)
        local ok, r = k:rpc("packages.check_updates", {})
        assert.is_true(ok, json.encode(r))
        assert.same({ backend = "dnf", refreshed = true, updates = {
          { name = "exo-test-big", installed = json.null, candidate = "1.1-1", origin = "exo-test", security = json.null },
          { name = "exo-test-lib", installed = json.null, candidate = "1.1-1", origin = "exo-test", security = json.null },
          { name = "exo-test-new", installed = json.null, candidate = "1.1-1", origin = "exo-test", security = json.null },
          { name = "exo-test-pkg", installed = json.null, candidate = "1.1-1", origin = "exo-test", security = json.null },
        } }, r, name)
      end
    end)

    it("skips the metadata expiration line", function()
      fake.runs.list = run("dnf/check-update-cached")
      local ok, r = k:rpc("packages.check_updates", {})
      assert.is_true(ok, json.encode(r))
      local names = {}
      for i, u in ipairs(r.updates) do
        names[i] = u.name
      end
      assert.same({ "exo-test-big", "exo-test-lib", "exo-test-new" }, names)
    end)

    it("lists the named packages; an unknown name has no updates (dnf exits 0)", function()
      fake.runs.list = run("dnf/check-update-named")
      local ok, r = k:rpc("packages.check_updates", { packages = { "exo-test-pkg" } })
      assert.is_true(ok, json.encode(r))
      assert.same({ "exo-test-pkg" }, { r.updates[1].name })
      fake.runs.list = run("dnf/check-update-unknown")
      ok, r = k:rpc("packages.check_updates", { packages = { "no-such-package" } })
      assert.is_true(ok, json.encode(r))
      assert.same({}, r.updates)
    end)

    it("fails with repository_unreachable when the metadata cannot be downloaded", function()
      fake.runs.refresh = run("dnf/makecache-no-route")
      fake.runs.list = run("dnf/check-update-no-route")
      local ok, err = k:rpc("packages.check_updates", {})
      assert.is_false(ok)
      assert.same({ -32009, "repository_unreachable", "dnf" }, { err.code, err.data.reason, err.data.backend })
      assert.equal(1, #k:logged("warn", "refresh failed"))
    end)

    it("lists when an unreachable repository is skipped (skip_if_unavailable)", function()
      fake.runs.list = run("dnf/check-update-unresolved-skip")
      local ok, r = k:rpc("packages.check_updates", {})
      assert.is_true(ok, json.encode(r))
      assert.same({}, r.updates)
    end)
  end)

  describe("update with apt", function()
    it("upgrades an allowed package in a job, with progress and what changed", function()
      fake.runs.install = run("apt/install")
      local ok, started = k:rpc("packages.update", { packages = { "exo-test-pkg" } }, { session = 7, auth = kit.USER })
      assert.is_true(ok, json.encode(started))
      assert.same({}, fake.calls_of("start"), "the job starts the operation")
      assert.equal(1, k:run_jobs())
      assert.same({ "start", "install", { "exo-test-pkg" } }, fake.calls_of("start")[1])
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.equal("succeeded", r.state, json.encode(r))
      assert.is_false(r.cancellable)
      assert.equal("Upgrade exo-test-pkg", r.summary)
      assert.same({ { name = "exo-test-pkg", from = "1.0", to = "1.1" } }, r.result.changed)
      assert.same({ "downloading", "installing", "configuring", "done" }, phase_names(k, 7))
      local sent = phases_sent(k, 7)
      for i = 2, #sent do
        assert.is_true(sent[i][1] >= sent[i - 1][1], "percent never goes back")
      end
      assert.same({ 100, "done" }, { sent[#sent][1], sent[#sent][2] })
      -- The package is the progress's detail while dpkg works on it (none for "Running dpkg").
      local details = {}
      for _, p in ipairs(sent) do
        if p[2] == "installing" or p[2] == "configuring" then
          details[p[3] or "(none)"] = true
        end
      end
      assert.same({ ["exo-test-pkg"] = true, ["(none)"] = true }, details)
    end)

    it("says whether a reboot is required, when the runtime lets it read /run/reboot-required", function()
      fake.runs.install = run("apt/install")
      k.core.files["/run/reboot-required"] = "*** System restart required ***\n"
      local _, started = k:rpc("packages.update", { packages = { "exo-test-pkg" } })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      if require("sandbox.agent").readable("/run/reboot-required") then
        assert.is_true(r.result.reboot_required)
      else
        -- The sandbox (and runtime/l_core.c) let methods read only /proc, /sys and udev's
        -- database: the method cannot tell, and says so.
        assert.equal(json.null, r.result.reboot_required)
        assert.equal(1, #k:logged("warn", "cannot tell whether a reboot is required"))
      end
    end)

    it("reports waiting for the lock, then installs when it is released", function()
      -- The status fd gets its first line once apt has the lock: after the 7 waiting lines.
      fake.runs.install = run("apt/lock-wait", { step = 200, status_delay = 4 })
      local _, started = k:rpc("packages.update", { packages = { "exo-test-lib" } }, { session = 7 })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.equal("succeeded", r.state, json.encode(r))
      assert.same({ { name = "exo-test-lib", from = "1.0", to = "1.1" } }, r.result.changed)
      assert.same({ "waiting for lock", "downloading", "installing", "configuring", "done" }, phase_names(k, 7))
      local first = phases_sent(k, 7)[1]
      assert.equal("Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 51 (perl)...", first[3])
    end)

    local failures = {
      { "apt/lock-timeout", -32005, "lock_timeout", function(d)
        assert.same({ 60, "process 21 (perl)" }, { d.retry_after_s, d.held_by })
      end },
      { "apt/dpkg-lock-timeout", -32005, "lock_timeout", function(d)
        assert.equal("process 42 (dpkg)", d.held_by)
      end },
      { "apt/disk-full", -32007, "disk_full" },
      { "apt/install-no-space", -32007, "disk_full" },
      { "apt/dpkg-interrupted", -32000, "dpkg_interrupted" },
      { "apt/install-unreachable", -32009, "repository_unreachable" },
      { "apt/install-unknown", -32003, "unknown_package", function(d)
        assert.equal("no-such-package", d.package)
      end },
    }
    it_fails_updates("apt", "exo-test-big", failures, "^exit ")

    it("fails with the last lines of the log when nothing explains the failure", function()
      fake.runs.install = run("apt/install", { exit = "signal 9" })
      local _, started = k:rpc("packages.update", { packages = { "exo-test-pkg" } })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.same({ -32000, "failed", "signal 9" }, { r.error.code, r.error.data.reason, r.error.data.exit })
      assert.equal(10, #r.error.data.log_tail)
      assert.equal("exo-test-pkg postinst configure", r.error.data.log_tail[10])
    end)

    it("fails with a timeout when the monitor stopped the tool at [packages] timeout", function()
      fake.runs.install = run("apt/install", { exit = "timeout" })
      local _, started = k:rpc("packages.update", { packages = { "exo-test-pkg" } })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.same({ -32004, "timeout" }, { r.error.code, r.error.data.reason })
    end)

    it("fails the job with busy when another change is running", function()
      fake.start_error = { "busy", "another package operation is running" }
      local _, started = k:rpc("packages.update", { packages = { "exo-test-pkg" } })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.same({ -32005, "busy", 60 }, { r.error.code, r.error.data.reason, r.error.data.retry_after_s })
    end)

    it("upgrades everything for an administrator", function()
      fake.runs.upgrade_all = run("apt/upgrade-all")
      local ok, started = k:rpc("packages.update", { all = true }, { session = 3 })
      assert.is_true(ok, json.encode(started))
      k:run_jobs()
      assert.same({ "start", "upgrade_all" }, fake.calls_of("start")[1])
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.same({ "succeeded", "Upgrade all packages" }, { r.state, r.summary })
      assert.same({ { name = "exo-test-big", from = "1.0", to = "1.1" } }, r.result.changed)
    end)

    it("lets only administrators upgrade everything, and only when allow_all is on", function()
      local ok, err = k:rpc("packages.update", { all = true }, { auth = kit.USER })
      assert.same({ false, -32002, "admin_only" }, { ok, err.code, err.data.reason })
      fake.config.allow_all = false
      ok, err = k:rpc("packages.update", { all = true })
      assert.same({ false, -32002, "disabled" }, { ok, err.code, err.data.reason })
      assert.equal(0, k:run_jobs())
      assert.same({}, fake.calls_of("start"))
    end)

    it("refuses packages that are not on the allow-list, naming them", function()
      local ok, err = k:rpc("packages.update", { packages = { "exo-test-pkg", "openssh-server", "sudo" } })
      assert.same({ false, -32002, "not_allowed" }, { ok, err.code, err.data.reason })
      assert.same({ "openssh-server", "sudo" }, err.data.packages)
      assert.equal(0, k:run_jobs())
    end)

    it("takes exactly one of packages and all = true", function()
      for _, params in ipairs({ {}, { all = false }, { packages = { "exo-test-pkg" }, all = true } }) do
        local ok, err = k:rpc("packages.update", params)
        assert.same({ false, -32602 }, { ok, err.code }, json.encode(params))
      end
    end)

    it("names each package once", function()
      fake.runs.install = run("apt/install")
      k:rpc("packages.update", { packages = { "exo-test-pkg", "exo-test-pkg" } })
      k:run_jobs()
      assert.same({ "exo-test-pkg" }, fake.calls_of("start")[1][3])
    end)

    it("answers a repeated call with the same idempotency key with the same job", function()
      fake.runs.install = run("apt/install")
      local _, a = k:rpc("packages.update", { packages = { "exo-test-pkg" }, idempotency_key = "k1" })
      local _, b = k:rpc("packages.update", { packages = { "exo-test-pkg" }, idempotency_key = "k1" })
      assert.equal(a.job_id, b.job_id)
      assert.equal(1, k:run_jobs())
    end)

    it("reports at most 2000 changed packages", function()
      local lines = {}
      for i = 1, 2001 do
        lines[#lines + 1] = ("Unpacking pkg%05d (1.1) over (1.0) ...\r"):format(i)
      end
      fake.runs.install = { log = table.concat(lines, "\n") .. "\n", exit = "exit 0", step = 1000000 }
      fake.config.allow = { "pkg00001" }
      local _, started = k:rpc("packages.update", { packages = { "pkg00001" } })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.equal("succeeded", r.state)
      assert.equal(2000, #r.result.changed)
      assert.is_true(r.result.changed_truncated)
    end)
  end)

  describe("update with dnf", function()
    before_each(function()
      fake.config.backend = "dnf"
    end)

    it("upgrades a package: the old version from the Cleanup step, no reboot information", function()
      fake.runs.install = run("dnf/upgrade-pkg")
      local _, started = k:rpc("packages.update", { packages = { "exo-test-pkg" } }, { session = 4 })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.equal("succeeded", r.state, json.encode(r))
      assert.same({ changed = { { name = "exo-test-pkg", from = "1.0-1", to = "1.1-1" } }, reboot_required = json.null },
        json.decode(json.encode(r.result)))
      assert.same({ "downloading", "installing", "configuring", "done" }, phase_names(k, 4))
    end)

    it("upgrades everything: upgraded, newly installed and obsoleted packages", function()
      fake.runs.upgrade_all = run("dnf/upgrade-all")
      local _, started = k:rpc("packages.update", { all = true })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.same({
        { name = "exo-test-new", from = json.null, to = "1.1-1" },
        { name = "exo-test-old", from = "1.0-1", to = json.null },
        { name = "exo-test-big", from = "1.0-1", to = "1.1-1" },
      }, json.decode(json.encode(r.result.changed)))
    end)

    it("reports waiting for another process's lock", function()
      fake.runs.install = run("dnf/lock-wait", { step = 300 })
      local _, started = k:rpc("packages.update", { packages = { "exo-test-lib" } }, { session = 4 })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.equal("succeeded", r.state)
      local names = phase_names(k, 4)
      assert.truthy(table.concat(names, ","):find("waiting for lock", 1, true), table.concat(names, ","))
    end)

    it("fails with a lock_timeout when the monitor's deadline ends the wait for the lock", function()
      local log = fixture("dnf/lock-wait.log")
      fake.runs.install = { log = log:match("^(.-Waiting for process with pid %d+ to finish%.\n)"), exit = "timeout" }
      local _, started = k:rpc("packages.update", { packages = { "exo-test-lib" } })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.same({ -32005, "lock_timeout" }, { r.error.code, r.error.data.reason })
    end)

    local failures = {
      { "dnf/disk-full", -32007, "disk_full" },
      { "dnf/upgrade-unknown", -32003, "unknown_package" },
      { "dnf/upgrade-no-route", -32009, "repository_unreachable" },
    }
    it_fails_updates("dnf", "exo-test-big", failures)

    -- Recorded through the agent in the dnf container test (tests/system/packages_dnf.test.mjs).
    describe("as the agent ran it (HTTP repository, signed packages)", function()
      before_each(function()
        fake.config.allow = { "exo-testpkg", "exo-testextra", "exo-nosuchpkg" }
      end)

      local function update(name, action)
        fake.runs[action or "install"] = run(name)
        local params = action == "upgrade_all" and { all = true } or { packages = { "exo-testpkg" } }
        local _, started = k:rpc("packages.update", params, { session = 4 })
        k:run_jobs()
        return k:call_ok("jobs.get", { job_id = started.job_id })
      end

      it("upgrades a package after importing the repository's key: every phase, percentages by step", function()
        local r = update("dnf/agent-upgrade-signed")
        assert.equal("succeeded", r.state, json.encode(r))
        assert.same({ changed = { { name = "exo-testpkg", from = "1.0-1", to = "1.1-1" } }, reboot_required = json.null },
          json.decode(json.encode(r.result)))
        local sent = phases_sent(k, 4)
        assert.same({ 5, "downloading" }, { sent[1][1], sent[1][2] })
        -- The %pre scriptlet, the upgrade, the %post scriptlet: one element of two; the
        -- cleanup of 1.0 the second; then the verification.
        local seen = {}
        for _, p in ipairs(sent) do
          seen[#seen + 1] = ("%d %s"):format(p[1], p[2])
        end
        assert.same({ "5 downloading", "20 downloading", "20 installing", "55 configuring", "55 installing",
                      "55 configuring", "90 installing", "94 configuring", "99 configuring", "100 done" }, seen)
      end)

      it("reports the download of each package with its file name", function()
        fake.runs.install = run("dnf/agent-upgrade-signed", { step = 40 })
        local _, started = k:rpc("packages.update", { packages = { "exo-testpkg" } }, { session = 4 })
        k:run_jobs()
        local details = {}
        for _, p in ipairs(phases_sent(k, 4)) do
          if p[2] == "downloading" and p[3] then
            details[p[3]] = true
          end
        end
        assert.same({ ["exo-testpkg-1.1-1.noarch.rpm"] = true }, details)
        assert.equal("succeeded", k:call_ok("jobs.get", { job_id = started.job_id }).state)
      end)

      it("waits for the rpmdb lock, then upgrades", function()
        local r = update("dnf/agent-lock-wait")
        assert.equal("succeeded", r.state, json.encode(r))
        assert.same({ { name = "exo-testpkg", from = "1.0-1", to = "1.1-1" } }, json.decode(json.encode(r.result.changed)))
        assert.same({ "downloading", "waiting for lock", "installing", "configuring", "installing", "configuring",
                      "installing", "configuring", "done" }, phase_names(k, 4))
      end)

      it("answers nothing changed (an empty array) for a package that is not installed, as with apt", function()
        local r = update("dnf/agent-upgrade-not-installed")
        assert.equal("succeeded", r.state, json.encode(r))
        assert.equal('{"changed":[],"reboot_required":null}', json.encode(r.result))
      end)

      it("fails with unknown_package for a name no repository has", function()
        local r = update("dnf/agent-upgrade-unknown")
        assert.same({ -32003, "unknown_package", "exo-nosuchpkg" }, { r.error.code, r.error.data.reason, r.error.data.package })
      end)

      for _, name in ipairs({ "dnf/agent-download-unreachable", "dnf/agent-metadata-unreachable",
                              "dnf/agent-metadata-unreachable-skip" }) do
        it("fails with repository_unreachable (" .. name .. ")", function()
          local r = update(name)
          assert.equal("failed", r.state)
          assert.same({ -32009, "repository_unreachable", "dnf" }, { r.error.code, r.error.data.reason, r.error.data.backend })
          assert.truthy(r.error.data.detail)
        end)
      end

      it("succeeds with all = true when the skipped repository leaves nothing to do", function()
        local r = update("dnf/agent-metadata-unreachable-skip", "upgrade_all")
        assert.equal("succeeded", r.state, json.encode(r))
        assert.equal(0, #r.result.changed)
      end)

      it("lists check-update's line", function()
        fake.runs.refresh = run("dnf/makecache")
        fake.runs.list = run("dnf/agent-check-update")
        local ok, r = k:rpc("packages.check_updates", {})
        assert.is_true(ok, json.encode(r))
        assert.same({ { name = "exo-testpkg", installed = json.null, candidate = "1.1-1", origin = "exo-test",
                        security = json.null } }, r.updates)
      end)
    end)

    it("succeeds with nothing changed when an unreachable repository is skipped", function()
      fake.runs.upgrade_all = run("dnf/upgrade-unresolved-skip")
      local _, started = k:rpc("packages.update", { all = true })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.equal("succeeded", r.state)
      assert.same({}, r.result.changed)
      -- An empty list, not an object, for clients.
      assert.equal("[]", json.encode(r.result.changed))
    end)
  end)

  describe("update jobs resumed by a new worker", function()

    it("follow the operation again from the start and end the job", function()
      fake.runs.install = run("apt/install")
      local _, started = k:rpc("packages.update", { packages = { "exo-test-pkg" } })
      k:run_jobs()
      local stored = json.decode(k.core.job_puts[2].text)
      assert.same({ op = fake.calls_of("poll")[1][2], backend = "apt", action = "install" }, stored.resume)
      local k2, texts = restart(k)
      -- Only the running record with its resume data: the worker died there.
      assert.equal(1, k2.host.jobs_restore({ texts[2] }))
      assert.equal("running", k2:call_ok("jobs.get", { job_id = started.job_id }).state)
      assert.equal(1, k2:run_jobs())
      assert.same({}, fake.calls_of("start"), "no second operation")
      local r = k2:call_ok("jobs.get", { job_id = started.job_id })
      assert.equal("succeeded", r.state, json.encode(r))
      assert.same({ { name = "exo-test-pkg", from = "1.0", to = "1.1" } }, r.result.changed)
    end)

    it("fail with lost when the operation ended without an exit line", function()
      fake.runs.install = run("apt/install")
      local _, started = k:rpc("packages.update", { packages = { "exo-test-pkg" } })
      k:run_jobs()
      local k2, texts = restart(k)
      fake.runs.install.exit = "lost"
      k2.host.jobs_restore({ texts[2] })
      k2:run_jobs()
      local r = k2:call_ok("jobs.get", { job_id = started.job_id })
      assert.same({ "failed", "lost" }, { r.state, r.error.data.reason })
    end)

    it("fail when the operation's files are gone", function()
      fake.runs.install = run("apt/install")
      local _, started = k:rpc("packages.update", { packages = { "exo-test-pkg" } })
      k:run_jobs()
      local k2, texts = restart(k)
      fake.files_gone = true
      k2.host.jobs_restore({ texts[2] })
      k2:run_jobs()
      local r = k2:call_ok("jobs.get", { job_id = started.job_id })
      assert.same({ "failed", "failed" }, { r.state, r.error.data.reason })
    end)
  end)

  describe("self.check_updates and self.upgrade", function()
    it("list the agent's own packages, with the running version", function()
      fake.runs.refresh = run("apt/refresh")
      fake.runs.list = run("apt/host-not-installed")
      local r = k:call_ok("self.check_updates", {})
      assert.same({ "start", "list", { "exosphere-guest-agent", "exosphere-guest-agent-methods" } },
        fake.calls_of("start")[2])
      assert.same({ "apt", "0.1.0", {}, true }, { r.backend, r.version, r.updates, r.refreshed })
    end)

    it("upgrade the agent in a job that the restarted agent finishes", function()
      fake.runs.self_upgrade = run("apt/install")
      local ok, started = k:rpc("self.upgrade", { idempotency_key = "up-1" }, { session = 3 })
      assert.is_true(ok, json.encode(started))
      k:run_jobs()
      assert.same({ "start", "self_upgrade" }, fake.calls_of("start")[1])
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.equal("Upgrade the Exosphere Guest Agent", r.summary)
      assert.same({ "succeeded", false, "0.1.0" }, { r.state, r.result.restarted, r.result.version })
      assert.same({ { name = "exo-test-pkg", from = "1.0", to = "1.1" } }, r.result.changed)
      -- The agent restarted during the operation: the new one finishes the same job.
      local k2, texts = restart(k)
      k2.core.version = "0.1.1"
      k2.host.jobs_restore({ texts[2] })
      k2:run_jobs()
      r = k2:call_ok("jobs.get", { job_id = started.job_id })
      assert.same({ "succeeded", true, "0.1.1" }, { r.state, r.result.restarted, r.result.version })
      -- A repeat with the key, in the new agent, answers the same job.
      assert.same(started, k2:call_ok("self.upgrade", { idempotency_key = "up-1" }))
    end)

    it("are for administrators, and self.upgrade can be turned off", function()
      local ok, err = k:rpc("self.upgrade", {}, { auth = kit.USER })
      assert.is_false(ok)
      assert.equal(-32002, err.code)
      fake.config.self_upgrade = false
      ok, err = k:rpc("self.upgrade", {})
      assert.is_false(ok)
      assert.same({ -32002, "disabled" }, { err.code, err.data.reason })
      assert.same({}, fake.calls_of("start"))
      fake.config.backend = "none"
      ok, err = k:rpc("self.check_updates", {})
      assert.is_false(ok)
      assert.equal("no_backend", err.data.reason)
    end)
  end)

  describe("with PackageKit", function()
    before_each(function()
      fake.config.backend = "packagekit"
      fake.config.allow = { "exo-testpkg", "exo-testpkg-sec", "exo-nosuchpkg" }
      fake.runs.refresh = run("packagekit/refresh")
    end)

    it("lists the updates with their installed versions, origins and security flags", function()
      fake.runs.list = run("packagekit/list-all")
      local ok, r = k:rpc("packages.check_updates", {}, { auth = kit.USER })
      assert.is_true(ok, json.encode(r))
      assert.same({
        backend = "packagekit", refreshed = true,
        updates = {
          { name = "exo-testpkg", installed = "1.0", candidate = "1.1", origin = "exotest-bookworm-main", security = false },
          -- PackageKit's apt backend calls only Debian's and Ubuntu's archives security ones;
          -- the suite in its origin says so here.
          { name = "exo-testpkg-sec", installed = "2.0", candidate = "2.0+deb12u1",
            origin = "exotest-bookworm-security-main", security = true },
        },
      }, json.decode(json.encode(r)))
    end)

    it("lists the named packages only; an unknown name has no updates", function()
      fake.runs.list = run("packagekit/list-named")
      local ok, r = k:rpc("packages.check_updates", { packages = { "exo-testpkg" } })
      assert.is_true(ok, json.encode(r))
      assert.same({ "exo-testpkg" }, { r.updates[1].name, r.updates[2] })
      assert.same({ "start", "list", { "exo-testpkg" } }, fake.calls_of("start")[2])
      fake.runs.list = run("packagekit/list-none")
      ok, r = k:rpc("packages.check_updates", { packages = { "exo-nosuchpkg" } })
      assert.is_true(ok, json.encode(r))
      assert.same({}, r.updates)
    end)

    it("lists from the old lists (refreshed = false) when the refresh cannot reach the repository", function()
      fake.runs.refresh = run("packagekit/refresh-unreachable")
      fake.runs.list = run("packagekit/list-all")
      local ok, r = k:rpc("packages.check_updates", {})
      assert.is_true(ok, json.encode(r))
      assert.is_false(r.refreshed)
      assert.equal(2, #r.updates)
      assert.equal(1, #k:logged("warn", "refresh failed"))
    end)

    it("a security severity marks an update as a security one", function()
      local list = fixture("packagekit/list-named.status")
      fake.runs.list = { log = "", exit = "exit 0",
        status = list:gsub("severity normal exo%-testpkg", "severity security exo-testpkg") }
      local ok, r = k:rpc("packages.check_updates", { packages = { "exo-testpkg" } })
      assert.is_true(ok, json.encode(r))
      assert.is_true(r.updates[1].security)
    end)

    it("upgrades a package in a job: phases from PackageKit's states, what changed", function()
      fake.runs.install = run("packagekit/install", { step = 300 })
      local _, started = k:rpc("packages.update", { packages = { "exo-testpkg" } }, { session = 5 })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.equal("succeeded", r.state, json.encode(r))
      assert.same({ { name = "exo-testpkg", from = "1.0", to = "1.1" } }, r.result.changed)
      -- /run/reboot-required as with apt (absent here, or unreadable in the sandbox).
      assert.is_not_true(r.result.reboot_required)
      assert.same({ "downloading", "installing", "configuring", "done" }, phase_names(k, 5))
      local sent = phases_sent(k, 5)
      for i = 2, #sent do
        assert.is_true(sent[i][1] >= sent[i - 1][1], "percent never goes back")
      end
      assert.same({ 100, "done" }, { sent[#sent][1], sent[#sent][2] })
    end)

    it("says a reboot is required when PackageKit says so", function()
      local status = fixture("packagekit/install.status")
      fake.runs.install = { log = "", exit = "exit 0",
        status = status:gsub("\ndone\n", "\nrestart system exo-testpkg 1.1 all exotest-bookworm-main\ndone\n") }
      local _, started = k:rpc("packages.update", { packages = { "exo-testpkg" } })
      k:run_jobs()
      assert.is_true(k:call_ok("jobs.get", { job_id = started.job_id }).result.reboot_required)
    end)

    it("succeeds with nothing changed for a package that is up to date", function()
      fake.runs.install = run("packagekit/install-up-to-date")
      local _, started = k:rpc("packages.update", { packages = { "exo-testpkg" } })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.equal("succeeded", r.state, json.encode(r))
      assert.same({}, r.result.changed)
    end)

    it("upgrades everything", function()
      fake.runs.upgrade_all = run("packagekit/upgrade-all")
      local _, started = k:rpc("packages.update", { all = true }, { session = 5 })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.same({
        { name = "exo-testpkg", from = "1.0", to = "1.1" },
        { name = "exo-testpkg-sec", from = "2.0", to = "2.0+deb12u1" },
      }, json.decode(json.encode(r.result.changed)))
      -- Installing and configuring alternate, package by package, as dpkg works.
      assert.same({ "downloading", "installing", "configuring", "installing", "configuring", "done" }, phase_names(k, 5))
    end)

    it("reports waiting for the lock, naming its holder, then installs when it is released", function()
      fake.runs.install = run("packagekit/install-lock-wait", { step = 200 })
      local _, started = k:rpc("packages.update", { packages = { "exo-testpkg" } }, { session = 5 })
      k:run_jobs()
      local r = k:call_ok("jobs.get", { job_id = started.job_id })
      assert.equal("succeeded", r.state, json.encode(r))
      assert.same({ { name = "exo-testpkg", from = "1.0", to = "1.1" } }, r.result.changed)
      assert.same({ "waiting for lock", "downloading", "installing", "configuring", "done" }, phase_names(k, 5))
    end)

    local failures = {
      { "packagekit/install-lock-timeout", -32005, "lock_timeout", function(d)
        assert.equal(60, d.retry_after_s)
        assert.matches("^process %d+ %(perl%)$", d.held_by)
      end },
      { "packagekit/install-unreachable", -32009, "repository_unreachable" },
      { "packagekit/install-unknown", -32003, "unknown_package", function(d)
        assert.equal("exo-nosuchpkg", d.package)
      end },
    }
    it_fails_updates("packagekit", "exo-testpkg", failures)

    -- PackageKit's codes that recorded runs do not show, on a recorded failure's lines.
    local codes = {
      { "no-space-on-device", -32007, "disk_full" },
      { "unfinished-transaction", -32000, "dpkg_interrupted" },
      { "no-network", -32009, "repository_unreachable" },
      { "daemon-gone", -32000, "failed" },
    }
    for _, c in ipairs(codes) do
      it("maps the error " .. c[1] .. " to " .. c[3], function()
        local status = fixture("packagekit/install-unreachable.status")
        status = status:gsub("error package%-download%-failed [^\n]*", "error " .. c[1] .. " something went wrong")
        fake.runs.install = { log = "PackageKit: error " .. c[1] .. ": something went wrong\n", status = status,
                              exit = "exit 1" }
        local _, started = k:rpc("packages.update", { packages = { "exo-testpkg" } })
        k:run_jobs()
        local r = k:call_ok("jobs.get", { job_id = started.job_id })
        assert.same({ c[2], c[3] }, { r.error.code, r.error.data.reason })
        if c[3] == "failed" then
          assert.matches("PackageKit failed", r.error.message)
          assert.same({ "PackageKit: error daemon-gone: something went wrong" }, r.error.data.log_tail)
        end
      end)
    end

    it("an agent package that is not installed is skipped by self_upgrade", function()
      -- Recorded for the monitor's self_upgrade action: nothing to do, success.
      local r = run("packagekit/self-upgrade-not-installed")
      assert.equal("exit 0", r.exit)
      assert.truthy(r.status:find("\nnot-installed exosphere-guest-agent\n", 1, true))
      assert.truthy(r.status:find("\nnot-installed exosphere-guest-agent-methods\ndone\n", 1, true))
      assert.truthy(r.log:find("PackageKit: resolve", 1, true))
    end)
  end)

  describe("on lines of the longest length read (2048 bytes)", function()
    -- Lines shaped to make the parsers' patterns backtrack most: the pattern guard must
    -- never refuse one (it would fail the call with data.limit = "pattern").
    local shapes = {
      ("x"):rep(3000), (" "):rep(3000), ("a.b "):rep(800), ("a "):rep(1500), ("a.b c "):rep(600),
      "Inst a [b] (c " .. ("[d] "):rep(800), "Inst " .. ("a "):rep(1500), "  Upgrading : " .. ("a "):rep(1500),
      "Unpacking a (" .. ("b "):rep(1500), "Waiting for cache lock: It is held by process 1 (" .. ("p "):rep(1500),
      "pmstatus:a:" .. ("1"):rep(3000), "begin update-packages", "package installing " .. ("a "):rep(1500), "dlstatus:" .. (":"):rep(3000), " " .. ("a "):rep(1500),
      "     replacing  " .. ("a.b "):rep(800), "E: Unable to locate package " .. ("a"):rep(3000),
      ("Inst a [1] (2 %s[all])"):format(("[d] "):rep(500)), ("Inst a [1] (2 %s[all])"):format(("x, "):rep(600)),
      ("Inst a [1] (2 x%sy [all])"):format((" "):rep(2000)), ("Inst a (2 %s)"):format((" "):rep(2000)),
      ("Inst a [1] (2 %s/%s [all])"):format(("S:"):rep(500), ("-security"):rep(100)),
    }
    local text = table.concat(shapes, "\n") .. "\n"

    for _, backend in ipairs({ "apt", "dnf", "packagekit" }) do
      it("are parsed or skipped with " .. backend, function()
        fake.config.backend = backend
        fake.runs.refresh = { log = text, status = text, exit = "exit 0" }
        fake.runs.list = { log = text, exit = "exit 0" }
        fake.runs.install = { log = text, status = text, exit = "exit 0" }
        local ok, r = k:rpc("packages.check_updates", {})
        assert.is_true(ok, json.encode(r))
        local started
        ok, started = k:rpc("packages.update", { packages = { "exo-test-pkg" } })
        assert.is_true(ok, json.encode(started))
        k:run_jobs()
        r = k:call_ok("jobs.get", { job_id = started.job_id })
        assert.equal("succeeded", r.state, json.encode(r.error))
      end)
    end
  end)

  it("use every recorded fixture", function()
    local listing = io.popen("cd " .. DIR .. " && ls apt/*.log apt/*.status dnf/*.log packagekit/*.log packagekit/*.status")
    local missing = {}
    for path in listing:lines() do
      if not used[path] and path ~= "dnf/setup-install.log" then
        missing[#missing + 1] = path
      end
    end
    listing:close()
    assert.same({}, missing)
  end)
end)
