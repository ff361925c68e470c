-- packages.*: the instance's package updates (issue 9), through the monitor's package
-- operations (agent.packages; docs/methods.md "Packages").
--
-- The worker never runs a package manager itself. It asks the monitor to start one of four
-- fixed operations (refresh, list, install, upgrade_all), which runs apt-get (or dnf) as root
-- with its output appended to files, and then reads those files back in slices with
-- agent.packages.poll. Everything here is reading that output: apt-get's simulation lines
-- ("Inst NAME [OLD] (NEW ORIGIN [ARCH])"), its status fd (APT::Status-Fd), its log lines and
-- error messages, and dnf's check-update and transaction output. The parsers are local
-- functions that take one line at a time; tests/lua/fixtures/packages/ holds recorded output
-- of both tools for every case they handle.
--
-- With PackageKit the tool process is the agent's own D-Bus client (runtime/pkgop_pk.c): it
-- writes PackageKit's events to the status file, one a line ("begin get-updates", "status
-- download", "package installing NAME VERSION ARCH REPO", "error CODE DETAILS", ...; the format
-- is in runtime/pkgop.h), and a few readable lines to the log.

local POLL_MS = 250
-- A line longer than this is cut there (the rest up to its newline is dropped), so that
-- output without newlines cannot grow the worker's buffer. Real lines are far shorter, but
-- for the one dpkg writes while it reads its database ("(Reading database ... 5%\r..."),
-- which is split at the \r anyway.
local MAX_LINE = 2048
-- The most updates check_updates answers with, and changed packages a job reports: bounds on
-- the answer and the job record (a full upgrade of a large system is a few hundred).
local MAX_UPDATES = 5000
local MAX_CHANGED = 2000
-- The log lines a "failed" error carries (each cut to TAIL_LINE_MAX bytes): enough to see
-- the tool's own error, small enough for the job record (sandbox/jobs.lua keeps 6 KiB).
local TAIL_LINES = 10
local TAIL_LINE_MAX = 200
-- What a lock_timeout error suggests: the holder is usually unattended-upgrades at boot,
-- which takes minutes.
local RETRY_AFTER_S = 60
-- check_updates refreshes for at most this share of the time its call has left, so that the
-- list still fits in the call's deadline; a refresh that takes longer goes on in the
-- monitor, and the list reads the package lists as they are (refreshed = false).
local REFRESH_SHARE = 0.6
-- The part of the call's time the list needs at least, after the refresh.
local LIST_RESERVE_MS = 3000

local NAME_PATTERN = "^[A-Za-z0-9_+][A-Za-z0-9._+-]*$"

--------------------------------------------------------------------------------------------
-- Schemas.

local Name = T.string({ min_len = 1, max_len = 128, pattern = NAME_PATTERN })
  :describe("A package name: letters, digits and . _ + -, not starting with . or -, not ending with -")
local Names = T.array(Name, { min_items = 1, max_items = 64 })

-- apt reads a trailing "-" as "remove this package" (apt-get install bash- removes bash): no
-- package is named so, and no such name may reach the package manager (the monitor refuses it
-- too). The schema's pattern cannot say "not ending with", so it is checked here.
local function check_names(names)
  for i, n in ipairs(names or {}) do
    if n:sub(-1) == "-" then
      error(errors.InvalidParams(("params.packages[%d]"):format(i), "must not end with '-' (apt reads that as 'remove')"))
    end
  end
end

local Update = T.object({
  name = T.string():describe("The package (binary package name; without the architecture)"),
  installed = T.nullable(T.string()):describe("The installed version; null for a package the "
    .. "upgrade would newly install, and with dnf, whose check-update does not say"),
  candidate = T.string():describe("The version the upgrade would install"),
  origin = T.nullable(T.string()):describe("Where the candidate comes from: apt's release "
    .. "(\"Debian-Security:12/bookworm-security\"), dnf's repository id, PackageKit's "
    .. "(\"debian-bookworm-security-main\"); null when unknown"),
  security = T.nullable(T.boolean()):describe("Whether the origin is a security archive "
    .. "(Debian-Security, a -security suite) or PackageKit calls it a security update; null "
    .. "when the backend cannot tell (dnf)"),
})

local Backend = T.enum({ "apt", "dnf", "packagekit" })
-- The backends a stored job may name (resume data).
local BACKENDS = { apt = true, dnf = true, packagekit = true }

local CheckResult = T.object({
  backend = Backend:describe("The package manager the agent drives"),
  updates = T.array(Update):describe("Available updates, sorted by name"),
  refreshed = T.boolean():describe("Whether the package lists were refreshed from the "
    .. "repositories first; false when the refresh failed or did not finish in the call's "
    .. "time (the list then comes from the lists of the last refresh)"),
})

local JobRef = T.object({ job_id = T.string() })
  :describe("The job that installs the updates: follow it with jobs.get or notify.jobs.*")

--------------------------------------------------------------------------------------------
-- Errors: each has a stable data.reason (docs/methods.md "Package errors").

local function fail(kind, reason, message, data)
  data = data or {}
  data.reason = reason
  error(kind(message, data))
end

-- agent.packages' codes (start, poll) as errors.
local function monitor_failed(code, message)
  if code == "invalid" then
    error(errors.InvalidParams("params", message or "refused by the monitor's checks"))
  elseif code == "busy" then
    fail(errors.Busy, "busy", message or "another package operation is running",
      { retry_after_s = RETRY_AFTER_S })
  elseif code == "no_backend" then
    fail(errors.Unsupported, "no_backend", message or "this instance has no package manager the agent drives")
  elseif code == "not_found" then
    fail(errors.Failed, "failed", "the package operation's files are gone: " .. tostring(message))
  end
  fail(errors.Failed, "failed", message or code or "the monitor refused the package operation")
end

-- What a reason found in the output raises, in the order they win when several are found:
-- an interrupted dpkg or a lock explains the failures that follow from them.
local REASON_ORDER = { "dpkg_interrupted", "lock_timeout", "disk_full", "unknown_package",
                       "repository_unreachable" }

-- Plain substrings of apt-get's and dnf's output and the reason each one means.
local MARKERS = {
  { "dpkg was interrupted, you must manually run", "dpkg_interrupted" },
  { "Unable to acquire the dpkg frontend lock", "lock_timeout" },
  { "Unable to lock the administration directory", "lock_timeout" },
  { "Unable to lock directory", "lock_timeout" },
  { "Could not get lock", "lock_timeout" },
  { "No space left on device", "disk_full" },
  { "You don't have enough free space in", "disk_full" },
  { "Disk Requirements:", "disk_full" },
  { "more space needed on the", "disk_full" },
  { "Temporary failure resolving", "repository_unreachable" },
  { "Failed to fetch", "repository_unreachable" },
  { "Could not connect to", "repository_unreachable" },
  { "Cannot initiate the connection", "repository_unreachable" },
  { "Unable to fetch some archives", "repository_unreachable" },
  { "Curl error", "repository_unreachable" },
  { "Errors during downloading metadata for repository", "repository_unreachable" },
  { "Failed to download metadata for repo", "repository_unreachable" },
}

-- "... It is held by process 21 (perl)...": "process 21 (perl)", or nil.
local function lock_holder(line)
  local i = line:find("It is held by process ", 1, true)
  return i and line:match("^It is held by (process %d+ %([^)]*%))", i) or nil
end

-- Collects what a run's output says went wrong: the reasons found, the first package named
-- unknown, what holds a lock, and the last lines.
local function new_problems()
  return { found = {}, tail = {} }
end

local function cut(line)
  return #line > TAIL_LINE_MAX and line:sub(1, TAIL_LINE_MAX) or line
end

-- The reasons a line names, without keeping it for the tail.
local function classify(p, line)
  for _, m in ipairs(MARKERS) do
    if line:find(m[1], 1, true) then
      p.found[m[2]] = p.found[m[2]] or cut(line)
    end
  end
  -- apt: "E: Unable to locate package NAME"; dnf: "No match for argument: NAME"
  local unknown = line:match("^E: Unable to locate package (%S+)") or line:match("^No match for argument: (%S+)")
  if unknown then
    p.found.unknown_package = p.found.unknown_package or cut(line)
    p.unknown = p.unknown or unknown
  end
  p.holder = lock_holder(line) or p.holder
end

local function add_tail(p, line)
  p.tail[#p.tail + 1] = cut(line)
  if #p.tail > TAIL_LINES then
    table.remove(p.tail, 1)
  end
end

local function note_problem(p, line)
  if line:find("^E: ") or line:find("^W: ") or line:find("^Err:") or line:find("^Error") then
    p.errors_seen = true
  end
  classify(p, line)
  add_tail(p, line)
end

-- Raises the error for a run that ended with `exit` (the monitor's exit line) and `p`.
local function run_failed(backend, exit, p, waiting)
  local data = { backend = backend, exit = exit }
  if exit == "lost" then
    fail(errors.Failed, "lost", "the package operation ended without a record of how it ended (its "
      .. "process was killed, or the machine restarted): check the package manager's state", data)
  elseif exit == "timeout" and not waiting then
    fail(errors.Timeout, "timeout", "the package operation ran past [packages] timeout and was stopped", data)
  elseif exit == "timeout" then
    -- dnf waits for its lock without a limit: the monitor's deadline ends the wait.
    p.found.lock_timeout = p.found.lock_timeout or "the lock was still held at [packages] timeout"
  end
  for _, reason in ipairs(REASON_ORDER) do
    local line = p.found[reason]
    if line then
      data.detail = line
      if reason == "lock_timeout" then
        data.retry_after_s = RETRY_AFTER_S
        data.held_by = p.holder
        fail(errors.Busy, reason, "the package manager's lock is held by another process"
          .. (p.holder and " (" .. p.holder .. ")" or "") .. "; try again later", data)
      elseif reason == "unknown_package" then
        data.package = p.unknown
        fail(errors.NotFound, reason, ("no package %s is known to %s"):format(tostring(p.unknown), backend), data)
      elseif reason == "dpkg_interrupted" then
        fail(errors.Failed, reason, "an earlier dpkg run was interrupted: an administrator must run "
          .. "'dpkg --configure -a' first", data)
      elseif reason == "disk_full" then
        fail(errors.LimitExceeded, reason, "not enough disk space for the packages", data)
      end
      fail(errors.Unavailable, reason, "a package repository cannot be reached", data)
    end
  end
  data.log_tail = p.tail
  local tool = backend == "dnf" and "dnf" or backend == "packagekit" and "PackageKit" or "apt-get"
  fail(errors.Failed, "failed", ("%s failed (%s)"):format(tool, tostring(exit)), data)
end

--------------------------------------------------------------------------------------------
-- Reading output line by line across polls: a slice ends anywhere, so the part after its
-- last newline waits for the next one. "\r" ends a line too (dpkg's progress).

local function new_reader()
  return { tail = "", dropping = false }
end

local function feed(r, chunk, on_line)
  if chunk == nil or chunk == "" then
    return
  end
  local text, start = r.tail .. chunk, 1
  while true do
    local i = text:find("[\r\n]", start)
    if not i then
      break
    end
    if not r.dropping and i > start then
      on_line(text:sub(start, i - 1))
    end
    r.dropping = false
    start = i + 1
  end
  r.tail = text:sub(start)
  if #r.tail > MAX_LINE then
    if not r.dropping then
      on_line(r.tail:sub(1, MAX_LINE))
    end
    r.tail, r.dropping = "", true
  end
end

-- The last line, when the output did not end with a newline.
local function flush(r, on_line)
  if r.tail ~= "" and not r.dropping then
    on_line(r.tail)
  end
  r.tail = ""
end

--------------------------------------------------------------------------------------------
-- apt-get's simulation (-s): what an upgrade would install.

-- Where the last `ch` (one plain character) is in s, or nil. Plain finds: patterns like
-- "^(.*)%.[^.]+$" or "/([^/]*)$" backtrack over the whole of a long word.
local function last_index(s, ch)
  local last, pos = nil, 1
  while true do
    local i = s:find(ch, pos, true)
    if not i then
      return last
    end
    last, pos = i, i + 1
  end
end

-- "exo-test-pkg.noarch" -> "exo-test-pkg", or nil without an architecture.
local function without_arch(name_arch)
  local last = last_index(name_arch, ".")
  if not last or last == 1 or last == #name_arch then
    return nil
  end
  return name_arch:sub(1, last - 1)
end

-- Whether one of apt's release strings names a security archive: the label
-- ("Debian-Security:12/bookworm-security") or the suite ("Ubuntu:22.04/jammy-security").
local function apt_security(origin)
  for _, part in ipairs(agent.split(origin, ",")) do
    part = table.concat(agent.split(part), " ")
    local colon = part:find(":", 1, true)
    local label = part:sub(1, (colon or #part + 1) - 1):lower()
    local slash = last_index(part, "/")
    local suite = (slash and part:sub(slash + 1) or colon and part:sub(colon + 1) or ""):lower()
    if label:sub(-9) == "-security" or suite:sub(-9) == "-security" or suite == "security" then
      return true
    end
  end
  return false
end

-- "Inst NAME [OLD] (NEW ORIGIN[, ORIGIN...] [ARCH])[ ...]", or without [OLD] for a package
-- the upgrade installs new. Returns an Update, or nil for any other line.
local function apt_inst_line(line)
  local name, rest = line:match("^Inst (%S+) (.*)$")
  if not name then
    return nil
  end
  local installed, after = rest:match("^%[([^%]]*)%] (.*)$")
  local inner = (after or rest):match("^%(([^)]*)%)")
  if not inner then
    return nil
  end
  -- "NEW ORIGIN[, ORIGIN...] [ARCH]": words, the last one the architecture.
  local words = agent.split(inner)
  if #words == 0 then
    return nil
  end
  local last = #words
  if last > 1 and words[last]:sub(1, 1) == "[" and words[last]:sub(-1) == "]" then
    last = last - 1
  end
  local origin = table.concat(words, " ", 2, last)
  return {
    name = name:match("^[^:]+"),
    installed = installed or json.null,
    candidate = words[1],
    origin = origin ~= "" and origin or json.null,
    security = apt_security(origin),
  }
end

--------------------------------------------------------------------------------------------
-- dnf check-update: "NAME.ARCH  VERSION  REPO" lines, then an "Obsoleting Packages" section
-- whose indented lines are the installed packages being replaced.

local function dnf_check_line(state, line)
  if line == "Obsoleting Packages" then
    state.obsoleting = true
    return nil
  elseif line:find("^%s") then
    -- "    exo-test-old.noarch   1.0-1   @exo-test": what the line before replaces.
    return nil
  end
  local f = agent.split(line)
  local name = #f == 3 and without_arch(f[1])
  if not name then
    return nil
  end
  return { name = name, installed = json.null, candidate = f[2], origin = f[3], security = json.null }
end

--------------------------------------------------------------------------------------------
-- An install's progress and what it changed.
--
-- Phases: "waiting for lock", "downloading", "installing", "configuring", "done". Percent:
-- downloading is 0-20, the package manager's own part 20-99, done 100; never backwards.

-- The phases in their order: the log and the status fd are read separately, a slice of each
-- per poll, so a line of one may be read after a later line of the other; the phase never
-- goes back to an earlier rank (installing and configuring alternate, package by package).
-- Waiting for a lock is said by the tool itself whenever it happens (dnf takes its rpmdb lock
-- after downloading).
local PHASE_RANK = { ["waiting for lock"] = 0, downloading = 1, installing = 2, configuring = 2 }

-- `on_phase(pr)` is told of each change of phase as it happens; percent and detail are
-- reported once per poll (the job's report), so that a long run sends a few notifications a
-- second at most.
local function new_progress(on_phase)
  -- changed is a JSON array even when empty (the job's result is not shaped by a schema).
  return { percent = 0, phase = nil, detail = nil, changed = json.array(), index = {}, problems = new_problems(),
           on_phase = on_phase }
end

local function set(pr, phase, percent, detail)
  if pr.phase and phase ~= "waiting for lock" and PHASE_RANK[phase] < PHASE_RANK[pr.phase] then
    return
  end
  local changed = phase ~= pr.phase
  pr.phase = phase
  if changed then
    pr.detail = nil
  end
  if percent and percent > pr.percent then
    pr.percent = math.min(99, math.floor(percent))
  end
  if detail ~= nil then
    pr.detail = #detail > 200 and detail:sub(1, 200) or detail
  end
  if changed and pr.on_phase then
    pr.on_phase(pr)
  end
end


local function add_changed(pr, name, from, to)
  name = name:match("^[^:]+")
  local c = pr.index[name]
  if c then
    -- dpkg names a package twice when it unpacks and then removes an old one (or the
    -- reverse); the first from and the last to are what changed.
    if to ~= json.null then
      c.to = to
    end
    return
  end
  if #pr.changed >= MAX_CHANGED then
    pr.changed_truncated = true
    return
  end
  c = { name = name, from = from, to = to }
  pr.changed[#pr.changed + 1] = c
  pr.index[name] = c
end

-- apt's status fd: "dlstatus:N:PCT:DESC", "pmstatus:PKG:PCT:DESC", "pmerror:PKG:PCT:MSG",
-- "pmconffile:FILE:PCT:...".
local function apt_status_line(pr, line)
  local kind, what, pct, desc = line:match("^(%a+):([^:]*):([%d.]+):(.*)$")
  pct = tonumber(pct)
  if not kind or not pct then
    return
  end
  if kind == "dlstatus" then
    set(pr, "downloading", pct * 0.2, desc)
  elseif kind == "pmstatus" then
    local phase = "installing"
    if desc:find("^Preparing to configure") or desc:find("^Configuring") or desc:find("^Installed")
        or desc:find("^Running post%-installation trigger") then
      phase = "configuring"
    end
    set(pr, phase, 20 + pct * 0.79, what ~= "dpkg-exec" and what or nil)
  elseif kind == "pmerror" then
    note_problem(pr.problems, desc)
  end
end

-- apt-get's (and dpkg's) log lines.
local function apt_log_line(pr, line)
  local waiting = line:match("^Waiting for cache lock: (.*)$")
  if waiting then
    -- "Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 21 (perl)..."
    pr.problems.holder = lock_holder(waiting) or pr.problems.holder
    set(pr, "waiting for lock", nil, waiting)
    return
  end
  note_problem(pr.problems, line)
  local name, to, from = line:match("^Unpacking (%S+) %(([^)]*)%) over %(([^)]*)%)")
  if name then
    add_changed(pr, name, from, to)
    return
  end
  name, to = line:match("^Unpacking (%S+) %(([^)]*)%)")
  if name then
    add_changed(pr, name, json.null, to)
    return
  end
  name, from = line:match("^Removing (%S+) %(([^)]*)%)")
  if name then
    add_changed(pr, name, from, json.null)
  end
end

-- dnf's transaction output: the table ("Upgrading:", "Installing:", rows " NAME ARCH VERSION
-- REPO SIZE", "     replacing  OLD.ARCH VERSION"), the steps ("  Upgrading : NEVRA  1/2"),
-- "Cleanup : NEVRA" (the version replaced), lock waits.
local DNF_TABLE_SECTIONS = {
  ["Installing:"] = "install", ["Upgrading:"] = "upgrade", ["Reinstalling:"] = "upgrade",
  ["Downgrading:"] = "upgrade", ["Installing dependencies:"] = "install",
  ["Installing weak dependencies:"] = "install", ["Removing:"] = "remove",
  ["Removing dependent packages:"] = "remove", ["Removing unused dependencies:"] = "remove",
}
local DNF_STEP_PHASES = {
  Preparing = "installing", Installing = "installing", Upgrading = "installing",
  Reinstalling = "installing", Downgrading = "installing", Erasing = "installing",
  Cleanup = "installing", Obsoleting = "installing", ["Running scriptlet"] = "configuring",
  Verifying = "configuring",
}

-- "exo-test-pkg-1.0-1.noarch" -> "exo-test-pkg", "1.0-1" (name, version-release), or nil.
local function dnf_split_nevra(nevra)
  local nevr = without_arch(nevra)
  local r = nevr and last_index(nevr, "-")
  local v = r and last_index(nevr:sub(1, r - 1), "-")
  if not v or v == 1 then
    return nil
  end
  return nevr:sub(1, v - 1), nevr:sub(v + 1)
end

local function dnf_log_line(pr, line)
  local pid = line:match("^Waiting for process with pid (%d+) to finish")
  if pid then
    set(pr, "waiting for lock", nil, "held by process " .. pid)
    return
  end
  note_problem(pr.problems, line)
  -- "Package exo-testextra available, but not installed." before its "No match for argument":
  -- dnf upgrade installs nothing new, as apt-get install --only-upgrade, which skips such a
  -- name (exit 0); dnf fails (exit 1) when it is the only one named.
  local absent = line:match("^Package (%S+) available, but not installed%.$")
  local nomatch = line:match("^No match for argument: (%S+)")
  if absent then
    pr.dnf_absent = pr.dnf_absent or {}
    pr.dnf_absent[absent] = true
  elseif nomatch then
    pr.dnf_nomatch = (pr.dnf_nomatch or 0) + 1
    if not (pr.dnf_absent and pr.dnf_absent[nomatch]) then
      pr.dnf_unknown = true
    end
  end
  if line == "Dependencies resolved." then
    pr.dnf_table = true
  elseif line:find("^Transaction Summary") then
    pr.dnf_table, pr.dnf_section = false, nil
  elseif pr.dnf_table and DNF_TABLE_SECTIONS[line] then
    pr.dnf_section = DNF_TABLE_SECTIONS[line]
  elseif pr.dnf_table and pr.dnf_section then
    -- " NAME ARCH VERSION REPO SIZE" (the size is "6.2 k": two words), or
    -- "     replacing  OLD.ARCH VERSION"
    local f = agent.split(line)
    local old = f[1] == "replacing" and #f == 3 and without_arch(f[2])
    local row = line:find("^ %S") and #f >= 5
    if old then
      add_changed(pr, old, f[3], json.null)
    elseif row and pr.dnf_section == "remove" then
      add_changed(pr, f[1], f[3], json.null)
    elseif row then
      add_changed(pr, f[1], json.null, f[3])
      pr.dnf_fetch = (pr.dnf_fetch or 0) + 1
    end
  elseif line == "Downloading Packages:" then
    set(pr, "downloading", 5)
  elseif pr.phase == "downloading" and line:find("^%S+%.rpm%s") then
    -- "exo-testpkg-1.1-1.noarch.rpm   1.2 MB/s | 6.3 kB   00:00": one line per package
    -- downloaded (a package already in dnf's cache has none), out of the table's rows.
    pr.dnf_fetched = (pr.dnf_fetched or 0) + 1
    set(pr, "downloading", 5 + 15 * pr.dnf_fetched / math.max(pr.dnf_fetched, pr.dnf_fetch or 1), line:match("^%S+"))
  elseif line:find("^Ignoring repositories: ") then
    -- skip_if_unavailable=True (Debian's dnf.conf; Fedora's and RHEL's say False): dnf goes on
    -- without the repositories it could not read, and exits 0.
    pr.dnf_ignored = cut(line)
  elseif line == "Running transaction" then
    set(pr, "installing", 20)
  else
    -- "  Upgrading        : exo-test-pkg-1.1-1.noarch      1/2 ", "  Running scriptlet: ..."
    local colon = line:find(":", 1, true)
    local step = colon and colon <= 40 and line:sub(1, colon - 1):match("^%s+(.-)%s*$")
    local f = step and DNF_STEP_PHASES[step] and agent.split(line:sub(colon + 1)) or {}
    local nevra, i, n = f[1], (f[2] or ""):match("^(%d+)/(%d+)$")
    if #f == 2 and i then
      -- The steps count the transaction's elements (an upgrade is two: the new package and
      -- the cleanup of the old one); scriptlets run inside them (a %pre before its package's
      -- step, a %post after it), so they share that count. Verifying counts the packages
      -- again, after the transaction.
      local share = tonumber(i) / math.max(1, tonumber(n))
      set(pr, DNF_STEP_PHASES[step], step == "Verifying" and 90 + 9 * share or 20 + 70 * share, nevra)
      local name, vr = dnf_split_nevra(nevra)
      if step == "Cleanup" and name then
        -- The version an upgrade replaced (one per package; bounded like changed).
        pr.replaced, pr.replaced_n = pr.replaced or {}, pr.replaced_n or 0
        if pr.replaced[name] == nil and pr.replaced_n < MAX_CHANGED then
          pr.replaced[name], pr.replaced_n = vr, pr.replaced_n + 1
        end
      end
    end
  end
end

-- Whether a failed dnf upgrade only named packages that are not installed: nothing to do, as
-- with apt. Any other problem found, or a name no repository has, is a failure.
local function dnf_only_absent(pr, exit)
  if exit ~= "exit 1" or not pr.dnf_nomatch or pr.dnf_unknown then
    return false
  end
  for reason in pairs(pr.problems.found) do
    if reason ~= "unknown_package" then
      return false
    end
  end
  return true
end

-- Upgrades' old versions, from dnf's Cleanup steps.
local function dnf_finish(pr)
  for _, c in ipairs(pr.changed) do
    if c.from == json.null and pr.replaced and pr.replaced[c.name] then
      c.from = pr.replaced[c.name]
    end
  end
end

--------------------------------------------------------------------------------------------
-- PackageKit: the client's status lines (runtime/pkgop.h). Each transaction starts with
-- "begin ROLE"; the lines after it belong to it.

-- PackageKit's error codes and the reasons they mean; the details (apt's own messages) are
-- matched against MARKERS as well.
local PK_ERRORS = {
  ["no-network"] = "repository_unreachable", ["package-download-failed"] = "repository_unreachable",
  ["repo-not-available"] = "repository_unreachable", ["no-more-mirrors-to-try"] = "repository_unreachable",
  ["cannot-fetch-sources"] = "repository_unreachable",
  ["no-space-on-device"] = "disk_full",
  ["package-not-found"] = "unknown_package", ["update-not-found"] = "unknown_package",
  ["unfinished-transaction"] = "dpkg_interrupted",
}

-- "package INFO NAME VERSION ARCH REPO" and the like: the words, "-" read as nil.
local function pk_words(line)
  local w = agent.split(line)
  for i = 1, #w do
    if w[i] == "-" then
      w[i] = nil
    end
  end
  return w
end

-- A line's part of the problems: errors (their code and details), unknown names, the lock
-- timeout. A new transaction forgets what an earlier one found (a Resolve's error says nothing
-- of the update after it; a lock the retry then got is no reason to fail).
local function pk_problem(p, line)
  local kind, rest = line:match("^(%S+) ?(.*)$")
  if kind == "begin" or kind == "retry" then
    p.found = {}
  elseif kind == "error" then
    local code, details = rest:match("^(%S+) ?(.*)$")
    local reason = PK_ERRORS[code]
    if reason then
      p.found[reason] = p.found[reason] or cut(line)
    end
    classify(p, details or "")
  elseif kind == "unknown" then
    p.found.unknown_package = p.found.unknown_package or cut(line)
    p.unknown = p.unknown or rest
  elseif kind == "lock-timeout" then
    p.found.lock_timeout = cut(line)
  end
  return kind, rest
end

-- check_updates: the updates of get-updates, their installed versions from resolve.
local function new_pk_list()
  return { scope = nil, updates = {}, installed = {} }
end

local function pk_security(info, repo)
  if info == "security" then
    return true
  end
  -- PackageKit's apt backend calls only Debian's and Ubuntu's own archives' updates security
  -- ones; its origin ("debian-bookworm-security-main": origin, suite, component) still names
  -- the suite.
  return repo ~= nil and (repo:find("-security-", 1, true) ~= nil or repo:sub(-9) == "-security")
end

local function pk_list_line(st, p, line)
  local kind, rest = pk_problem(p, line)
  if kind == "begin" then
    st.scope = rest
    return nil
  end
  local w = pk_words(rest or "")
  if kind == "package" and st.scope == "get-updates" and w[2] and w[3] then
    local u = { name = w[2], installed = json.null, candidate = w[3], origin = w[5] or json.null,
                security = pk_security(w[1], w[5]) }
    st.updates[w[2]] = st.updates[w[2]] or u
    return u
  elseif kind == "severity" and st.scope == "get-updates" and w[1] == "security" and st.updates[w[2]] then
    st.updates[w[2]].security = true
  elseif kind == "package" and st.scope == "resolve" and w[1] == "installed" and w[2] and w[3] then
    st.installed[w[2]] = w[3]
  end
  return nil
end

-- An update's progress: the phase from the transaction's status and the packages' states;
-- changed from what update-packages unpacks (from: the version resolve found installed).
-- PackageKit's apt backend reports dpkg's steps as package states: preparing (dpkg's
-- "Preparing"), decompressing ("Unpacking"), then preparing again ("Preparing to configure")
-- and installing ("Configuring"): a package seen decompressing is being configured after.
local function pk_update_line(pr, line)
  local kind, rest = pk_problem(pr.problems, line)
  pr.pk = pr.pk or { installed = {}, unpacked = {} }
  local st = pr.pk
  local w = pk_words(rest or "")
  if kind == "begin" then
    st.scope = rest
  elseif kind == "status" and w[1] == "waiting-for-lock" then
    set(pr, "waiting for lock", nil, pr.problems.holder and "held by " .. pr.problems.holder or nil)
  elseif kind == "status" and w[1] == "download" and st.scope == "update-packages" then
    set(pr, "downloading", 5)
  elseif kind == "error" and pr.phase == "waiting for lock" and pr.problems.holder then
    set(pr, "waiting for lock", nil, "held by " .. pr.problems.holder)
  elseif kind == "percent" and st.scope == "update-packages" and (pr.phase == "installing" or pr.phase == "configuring") then
    set(pr, pr.phase, 20 + (tonumber(w[1]) or 0) * 0.79)
  elseif kind == "package" and st.scope == "resolve" and w[1] == "installed" and w[2] then
    st.installed[w[2]] = w[3]
  elseif kind == "package" and st.scope == "update-packages" and w[2] then
    local info, name, version = w[1], w[2], w[3] or json.null
    if info == "downloading" then
      set(pr, "downloading", nil, name)
    elseif info == "decompressing" or info == "updating" or info == "reinstalling" or info == "downgrading" then
      st.unpacked[name] = true
      set(pr, "installing", 20, name)
      add_changed(pr, name, st.installed[name] or json.null, version)
    elseif info == "preparing" or info == "installing" then
      set(pr, st.unpacked[name] and "configuring" or "installing", 20, name)
      if info == "installing" then
        add_changed(pr, name, st.installed[name] or json.null, version)
      end
    elseif info == "removing" or info == "obsoleting" then
      add_changed(pr, name, version, json.null)
    end
  elseif kind == "restart" and (w[1] == "system" or w[1] == "security-system") then
    pr.restart = true
  end
end

--------------------------------------------------------------------------------------------
-- Running an operation.

local function backend_of()
  local cfg = agent.packages.config()
  if cfg.disabled then
    fail(errors.Unsupported, "no_backend", "package management is turned off on this instance ([packages] backend = none)")
  elseif not BACKENDS[cfg.backend] then
    fail(errors.Unsupported, "no_backend", "this instance has no package manager the agent drives "
      .. "(PackageKit, apt-get or dnf)")
  end
  return cfg
end

local function start(action, names)
  local op, code, msg = agent.packages.start(action, names)
  if not op then
    monitor_failed(code, msg)
  end
  return op.id
end

-- Follows operation `id` until it ends, handing each line of its log and status to the
-- functions; between polls it sleeps, unless the last one was still catching up. Returns the
-- exit line, or nil when `until_ms` (agent.now_ms time) came first. `after_poll` runs after
-- each poll that brought something.
local function follow(id, on_log, on_status, until_ms, after_poll)
  local log_r, status_r = new_reader(), new_reader()
  local log_off, status_off = 0, 0
  while true do
    local res, code, msg = agent.packages.poll(id, log_off, status_off)
    if not res then
      monitor_failed(code, msg)
    end
    feed(log_r, res.log, on_log)
    feed(status_r, res.status, on_status)
    local got = #(res.log or "") + #(res.status or "")
    log_off, status_off = log_off + #(res.log or ""), status_off + #(res.status or "")
    local behind = log_off < res.log_size or status_off < res.status_size
    if got > 0 and after_poll then
      after_poll()
    end
    if res.state == "done" and not behind then
      flush(log_r, on_log)
      flush(status_r, on_status)
      return res.exit
    end
    if not (behind and got > 0) then
      if until_ms and agent.now_ms() + POLL_MS > until_ms then
        return nil
      end
      agent.sleep(POLL_MS)
    end
  end
end

--------------------------------------------------------------------------------------------
-- packages.check_updates

-- Refreshes are shared: apt-get update fetches every repository's index, and any user may call
-- check_updates as often as they like. A call joins the refresh an earlier call started while
-- it still runs, and a refresh that succeeded less than REFRESH_FRESH_MS ago counts for the
-- calls after it. (Per worker: a new worker refreshes again.)
local REFRESH_FRESH_MS = 60000
local shared_refresh = { id = nil, ok_at = nil }

-- Refreshes the package lists, waiting at most until `until_ms`: true when it worked.
local function refresh(ctx, until_ms)
  if shared_refresh.ok_at and agent.now_ms() - shared_refresh.ok_at < REFRESH_FRESH_MS then
    return true
  end
  local id = shared_refresh.id
  if not id then
    id = start("refresh", nil)
    shared_refresh.id = id
  end
  local p = new_problems()
  local on_status = function(line) pk_problem(p, line) end
  local done, exit = pcall(follow, id, function(line) note_problem(p, line) end, on_status, until_ms)
  if not done then
    -- The operation cannot be followed (its files are gone): the next call starts another.
    if shared_refresh.id == id then
      shared_refresh.id = nil
    end
    error(exit, 0)
  end
  if exit == nil then
    ctx.log("info", "the package lists' refresh goes on after this call's time; listing without it")
    return false
  end
  if shared_refresh.id == id then
    shared_refresh.id = nil
  end
  -- apt-get update exits 0 when a repository cannot be reached ("W: Failed to fetch"): the
  -- lists of that repository are then the old ones.
  if exit ~= "exit 0" or p.errors_seen then
    ctx.log("warn", ("the package lists' refresh failed (%s): %s"):format(exit, table.concat(p.tail, " | ")))
    return false
  end
  shared_refresh.ok_at = agent.now_ms()
  return true
end

local function list(ctx, cfg, names, until_ms)
  local id = start("list", names)
  local p, updates, seen, dnf_state, pk_state = new_problems(), {}, {}, {}, new_pk_list()
  local truncated = false
  local function add(u)
    if u and not seen[u.name] then
      seen[u.name] = true
      if #updates < MAX_UPDATES then
        updates[#updates + 1] = u
      else
        truncated = true
      end
    end
  end
  local function on_line(line)
    note_problem(p, line)
    if cfg.backend == "apt" then
      add(apt_inst_line(line))
    elseif cfg.backend == "dnf" then
      add(dnf_check_line(dnf_state, line))
    end
  end
  local function on_status(line)
    if cfg.backend == "packagekit" then
      add(pk_list_line(pk_state, p, line))
    end
  end
  local exit = follow(id, on_line, on_status, until_ms)
  for _, u in ipairs(updates) do
    u.installed = pk_state.installed[u.name] or u.installed
  end
  if exit == nil then
    fail(errors.Timeout, "timeout", "listing the updates took longer than the call may take")
  end
  -- dnf check-update: 100 when there are updates, 0 when none.
  local ok = exit == "exit 0" or (cfg.backend == "dnf" and exit == "exit 100")
  if not ok then
    run_failed(cfg.backend, exit, p, false)
  end
  if truncated then
    ctx.log("warn", ("more than %d updates; answered with the first %d"):format(MAX_UPDATES, MAX_UPDATES))
  end
  table.sort(updates, function(a, b) return a.name < b.name end)
  return updates
end

-- The refresh, for its share of the call's time, then the list: updates, refreshed.
local function refresh_and_list(ctx, cfg, names)
  local now = agent.now_ms()
  local left = (ctx.deadline_ms or now + 30000) - now
  local refreshed = refresh(ctx, now + math.max(0, math.min(left * REFRESH_SHARE, left - LIST_RESERVE_MS)))
  return list(ctx, cfg, names, ctx.deadline_ms), refreshed
end

local check_updates = method({
  name = "packages.check_updates",
  summary = "Available package updates",
  description = "Refreshes the package lists (apt-get update, dnf makecache) and lists what an "
    .. "upgrade would install: every update, or those of the named packages. The refresh gets "
    .. "at most 60% of the call's time; when it fails or takes longer, the list comes "
    .. "from the lists as they were and refreshed is false. security says whether the "
    .. "candidate comes from a security archive (apt only).",
  since = "2027-01-15",
  stability = "experimental",
  permission = "user",
  capabilities = { "packages.read" },
  params = T.object({
    packages = Names:optional():describe("Only these packages (installed ones; others are left out)"),
  }),
  result = CheckResult,
  errors = { errors.Unsupported, errors.NotFound, errors.Unavailable, errors.Busy, errors.LimitExceeded,
             errors.Timeout, errors.Failed },
  examples = {
    {
      name = "two updates, one of them a security update",
      params = {},
      result = {
        backend = "apt", refreshed = true,
        updates = {
          { name = "openssh-client", installed = "1:9.2p1-2+deb12u6", candidate = "1:9.2p1-2+deb12u10",
            origin = "Debian:12.15/oldstable", security = false },
          { name = "tzdata", installed = "2025b-0+deb12u2", candidate = "2026f-0+deb12u1",
            origin = "Debian-Security:12/oldstable-security", security = true },
        },
      },
    },
  },
  handler = function(ctx, params)
    check_names(params.packages)
    local cfg = backend_of()
    local updates, refreshed = refresh_and_list(ctx, cfg, params.packages)
    return { backend = cfg.backend, updates = updates, refreshed = refreshed }
  end,
})

--------------------------------------------------------------------------------------------
-- packages.update

-- Whether the machine asks for a reboot after the update: /run/reboot-required (Debian's
-- update-notifier convention) exists. null when the agent cannot tell (dnf for now, or a
-- runtime that does not let methods read that file).
local function reboot_required(backend, pr)
  if backend == "dnf" then
    return json.null
  elseif pr.restart then
    -- PackageKit said an updated package needs the system restarted.
    return true
  end
  local text, err = agent.read_file("/run/reboot-required", 4096)
  if text then
    return true
  elseif tostring(err):find("ENOENT", 1, true) or tostring(err):lower():find("no such file", 1, true) then
    -- The runtime says "no such file or directory" (libuv's text), the kit's fake "ENOENT: ...".
    return false
  end
  agent.log("warn", "cannot tell whether a reboot is required: " .. tostring(err))
  return json.null
end

-- Follows the changing operation `id` of `backend` for a job to its end: progress, and the
-- result {changed, reboot_required}. A job that a new worker resumes (the agent restarted
-- while the operation ran in its own scope) reads the operation's files again from the start.
local function follow_update(job, id, backend, action)
  local reported = {}
  local function report(pr)
    if pr.phase and (pr.phase ~= reported.phase or pr.percent ~= reported.percent
        or pr.detail ~= reported.detail) then
      job.progress(pr.percent, pr.phase, pr.detail)
      reported = { phase = pr.phase, percent = pr.percent, detail = pr.detail }
    end
  end
  local pr = new_progress(report)
  local on_log, on_status = function(line) apt_log_line(pr, line) end, function(line) apt_status_line(pr, line) end
  if backend == "dnf" then
    on_log = function(line) dnf_log_line(pr, line) end
  elseif backend == "packagekit" then
    -- The log has readable copies of the errors: the tail, for a "failed" error.
    on_log, on_status = function(line) add_tail(pr.problems, line) end, function(line) pk_update_line(pr, line) end
  end
  local exit = follow(id, on_log, on_status, nil, function() report(pr) end)
  if exit ~= "exit 0" and not (backend == "dnf" and dnf_only_absent(pr, exit)) then
    run_failed(backend, exit, pr.problems, pr.phase == "waiting for lock")
  end
  if backend == "dnf" then
    dnf_finish(pr)
    -- Named packages and nothing changed, but a repository was left out: the update may
    -- well be in it, so "nothing to do" would not be the truth. (For all = true the other
    -- repositories' updates went in, and a mirror that is down is routine.)
    if action ~= "upgrade_all" and #pr.changed == 0 and pr.dnf_ignored then
      fail(errors.Unavailable, "repository_unreachable", "a package repository cannot be reached",
        { backend = "dnf", exit = exit, detail = pr.problems.found.repository_unreachable or pr.dnf_ignored })
    end
  end
  local result = { changed = pr.changed, reboot_required = reboot_required(backend, pr) }
  if pr.changed_truncated then
    result.changed_truncated = true
  end
  job.progress(100, "done")
  agent.log("info", ("package operation %s ended: %d package(s) changed"):format(id, #pr.changed))
  return result
end

-- What a resumed job gets (job.resumable): the operation, its backend and its action.
local function resume_data(data)
  if type(data) ~= "table" or type(data.op) ~= "string" or not data.op:find("^%x+$")
      or not BACKENDS[data.backend] or type(data.action) ~= "string" then
    fail(errors.Failed, "failed", "the job's stored operation is damaged; it cannot be followed")
  end
  return data.op, data.backend, data.action
end

-- The job: starts the operation, says how a new worker goes on with it, follows it.
local function update_job(cfg, action, names)
  return function(job)
    local id = start(action, names)
    agent.log("info", ("package operation %s (%s) started for job %s"):format(id, action, job.id))
    job.resumable({ op = id, backend = cfg.backend, action = action })
    return follow_update(job, id, cfg.backend, action)
  end
end

local function resume_update(job, data)
  local id, backend, action = resume_data(data)
  agent.log("info", ("following package operation %s again for job %s"):format(id, job.id))
  return follow_update(job, id, backend, action)
end

local function dedupe(names)
  local out, seen = {}, {}
  for _, n in ipairs(names) do
    if not seen[n] then
      seen[n] = true
      out[#out + 1] = n
    end
  end
  return out
end

local update = method({
  name = "packages.update",
  summary = "Install package updates (a job)",
  description = "Upgrades the named packages (each must be on [packages] allow; only installed "
    .. "packages are upgraded, nothing new is installed by name), or with all = true "
    .. "everything (an upgrade like apt-get dist-upgrade; administrators only, and only when "
    .. "[packages] allow_all is on). Answers at once with a job, which reports the phases "
    .. "waiting for lock, downloading, installing, configuring and done (with the package in "
    .. "detail), and whose result is {changed: [{name, from, to}], reboot_required}. The job "
    .. "cannot be cancelled: stopping dpkg halfway would leave the system broken.",
  since = "2027-01-15",
  stability = "experimental",
  permission = "user",
  idempotent = true,
  capabilities = { "packages.read", "packages.write", "system.read" },
  params = T.object({
    packages = Names:optional():describe("Packages to upgrade, each on [packages] allow"),
    all = T.boolean():optional():describe("Upgrade everything (administrators only)"),
  }),
  result = JobRef,
  errors = { errors.NotPermitted, errors.Unsupported, errors.Busy, errors.NotFound, errors.Unavailable,
             errors.LimitExceeded, errors.Timeout, errors.Failed },
  examples = {
    -- Only a named package: the contract suite (tests/contract) sends every example to a
    -- real agent as root on the CI machine, where [packages] allow is empty, so this one is
    -- refused (not_allowed); an example with all = true would upgrade that machine.
    { name = "one package", params = { packages = { "exo-test-pkg" }, idempotency_key = "upgrade-exo-test-pkg-1" },
      result = { job_id = "3f2a0c9e7b5d41e8a6c4b2d0f1e3a5c7" } },
  },
  handler = function(ctx, params)
    check_names(params.packages)
    if (params.packages == nil) == (params.all ~= true) then
      error(errors.InvalidParams("params", "give exactly one of packages and all = true"))
    end
    local cfg = backend_of()
    local action, names, summary
    if params.all then
      if not (ctx.auth and ctx.auth.admin) then
        fail(errors.NotPermitted, "admin_only", "only administrators may upgrade every package")
      elseif not cfg.allow_all then
        fail(errors.NotPermitted, "disabled", "upgrading every package is disabled ([packages] allow_all)")
      end
      action, summary = "upgrade_all", "Upgrade all packages"
    else
      local allowed, refused = {}, {}
      for _, n in ipairs(cfg.allow or {}) do
        allowed[n] = true
      end
      names = dedupe(params.packages)
      for _, n in ipairs(names) do
        if not allowed[n] then
          refused[#refused + 1] = n
        end
      end
      if #refused > 0 then
        fail(errors.NotPermitted, "not_allowed", ("not on [packages] allow: %s"):format(table.concat(refused, ", ")),
          { packages = refused })
      end
      action = "install"
      summary = "Upgrade " .. table.concat(names, " ")
      if #summary > 200 then
        summary = ("Upgrade %d packages"):format(#names)
      end
    end
    return { job_id = ctx.start_job({ summary = summary, cancellable = false }, update_job(cfg, action, names)) }
  end,
  -- The operation runs on in a scope of its own when the agent restarts (docs/decisions/0014):
  -- a new worker follows it to the job's end.
  resume = resume_update,
})

--------------------------------------------------------------------------------------------
-- self.check_updates and self.upgrade: the agent's own packages (exosphere-guest-agent and
-- exosphere-guest-agent-methods; the names are fixed in the runtime, agent.packages.config's
-- self_packages).

local SelfCheckResult = T.object({
  backend = Backend:describe("The package manager the agent drives"),
  version = T.string():describe("The version of the running agent runtime"),
  updates = T.array(Update):describe("Updates of the agent's own packages (empty when it is up to date)"),
  refreshed = T.boolean():describe("Whether the package lists were refreshed first (as in packages.check_updates)"),
})

local self_check_updates = method({
  name = "self.check_updates",
  summary = "Available updates of the agent itself",
  description = "packages.check_updates for the agent's own packages (exosphere-guest-agent, "
    .. "exosphere-guest-agent-methods) from the repositories the instance is configured with: "
    .. "what self.upgrade would install. Only installed packages are listed.",
  since = "2027-01-15",
  stability = "experimental",
  permission = "user",
  capabilities = { "packages.read" },
  params = T.object({}),
  result = SelfCheckResult,
  errors = { errors.Unsupported, errors.Unavailable, errors.Busy, errors.LimitExceeded, errors.Timeout,
             errors.Failed },
  examples = {
    {
      name = "a newer agent is available",
      params = {},
      result = {
        backend = "apt", version = "0.1.0", refreshed = true,
        updates = {
          { name = "exosphere-guest-agent", installed = "0.1.0-1", candidate = "0.1.1-1",
            origin = "Exosphere:stable", security = false },
        },
      },
    },
  },
  handler = function(ctx, params)
    local cfg = backend_of()
    local updates, refreshed = refresh_and_list(ctx, cfg, cfg.self_packages)
    return { backend = cfg.backend, version = agent.info().version, updates = updates, refreshed = refreshed }
  end,
})

-- The self-upgrade's job: as update_job, and its result says whether the agent restarted
-- (the new runtime then finishes the job: it was resumed) and which runtime now runs.
local function self_upgrade_result(result, restarted)
  result.restarted = restarted
  result.version = agent.info().version
  return result
end

local function self_upgrade_job(cfg)
  return function(job)
    local id = start("self_upgrade", nil)
    agent.log("info", ("package operation %s (self_upgrade) started for job %s"):format(id, job.id))
    job.resumable({ op = id, backend = cfg.backend, action = "self_upgrade" })
    return self_upgrade_result(follow_update(job, id, cfg.backend, "self_upgrade"), false)
  end
end

local function resume_self_upgrade(job, data)
  local id, backend, action = resume_data(data)
  agent.log("info", ("following the agent's upgrade (operation %s) after a restart, for job %s"):format(id, job.id))
  return self_upgrade_result(follow_update(job, id, backend, action), true)
end

local self_upgrade = method({
  name = "self.upgrade",
  summary = "Upgrade the agent itself (a job)",
  description = "Upgrades the agent's own packages (exosphere-guest-agent, "
    .. "exosphere-guest-agent-methods; those installed) from the configured repositories, "
    .. "as packages.update does. The package manager runs in a transient systemd scope "
    .. "outside the agent's own control group, so the agent's restart by the new package "
    .. "does not stop it: the connection drops, and the restarted agent finishes the job under "
    .. "the same id. Reconnect and ask jobs.get (or subscribe to notify.jobs.done). The "
    .. "result is packages.update's with restarted (whether the agent restarted during the "
    .. "job) and version (the runtime that finished it). Administrators only; [packages] "
    .. "self_upgrade turns it off.",
  since = "2027-01-15",
  stability = "experimental",
  permission = "admin",
  idempotent = true,
  capabilities = { "packages.read", "packages.write", "system.read" },
  params = T.object({}),
  result = JobRef,
  errors = { errors.NotPermitted, errors.Unsupported, errors.Busy, errors.Unavailable, errors.Failed },
  examples = {
    { name = "upgrade the agent", params = { idempotency_key = "agent-upgrade-2027-01-20" },
      result = { job_id = "9c41d2e07a5b4f86b3e1d0c2a4f6e8b1" } },
  },
  handler = function(ctx, params)
    local cfg = backend_of()
    if not cfg.self_upgrade then
      fail(errors.NotPermitted, "disabled", "the agent's self-upgrade is disabled ([packages] self_upgrade)")
    end
    return { job_id = ctx.start_job({ summary = "Upgrade the Exosphere Guest Agent", cancellable = false },
      self_upgrade_job(cfg)) }
  end,
  resume = resume_self_upgrade,
})

return { check_updates, update, self_check_updates, self_upgrade }
