-- A fake exo.packages (runtime/l_packages.c) for the busted specs, with the interface's API
-- (docs of issue 9, "agent.packages"): config(), start(action, names), poll(id, log_offset,
-- status_offset). setup.lua registers M.module as package.loaded["exo.packages"]; kit.new
-- resets it.
--
-- A spec says what the monitor and the tool do:
--
--   fake.config = { backend = "apt", allow = { "exo-test-pkg" }, allow_all = true, ... }
--   fake.runs.install = { log = "...", status = "...", exit = "exit 0" }   -- per action
--   fake.start_error = { "busy", "another package operation is running" }
--   fake.files_gone = true                                           -- poll answers not_found
--
-- A run's output appears a piece at a time, as a running tool writes it: each poll makes
-- `step` more bytes of each file visible (runs[action].step, default 1000, so slices end in
-- the middle of lines; the status file starts `status_delay` polls later, as apt's status fd
-- stays empty while apt waits for its lock), and the run is "done" once everything is visible and it has been
-- polled `polls` times (default: as many as the output needs). A poll answers at most 3072
-- bytes of each file from the offsets, like the monitor. Every call is recorded in `calls`
-- as { fn, args... }.
--
-- What this assumes of the real binding (for the lead to check against runtime/l_packages.c):
--   * config() does not wait and needs packages.read;
--   * start() and poll() wait (yield) and answer table | nil, code, message;
--   * start() needs packages.read for refresh and list, packages.write for install and
--     upgrade_all, and answers nil, "invalid", why for what the monitor would refuse (the
--     checks below), before asking the monitor;
--   * poll() needs packages.read; log and status are "" (not nil) when there is nothing new;
--     log_size and status_size are integers; exit is "" while running.

local core = require("tests.lua.helpers.fake_core")

local M = {}

M.MAX_SLICE = 3072
M.MAX_NAMES = 64
M.MAX_NAME = 128
M.ACTIONS = { refresh = "packages.read", list = "packages.read", install = "packages.write",
              upgrade_all = "packages.write", self_upgrade = "packages.write" }

function M.reset()
  M.config = { backend = "apt", disabled = false, allow = {}, allow_all = true, self_upgrade = true,
                self_packages = { "exosphere-guest-agent", "exosphere-guest-agent-methods" },
                lock_timeout_s = 300, timeout_s = 3600 }
  M.runs = {}
  M.start_error = nil
  M.files_gone = false
  M.calls = {}
  M.ops = {}
  M.seq = 0
end

local function copy(t)
  local out = {}
  for k, v in pairs(t) do
    out[k] = type(v) == "table" and copy(v) or v
  end
  return out
end

function M.config_fn()
  core.need("packages.config", "packages.read")
  M.calls[#M.calls + 1] = { "config" }
  return copy(M.config)
end

-- The monitor's checks (pkg-interface, EXO_OP_PKG_START), as the binding makes them first.
local function invalid(action, names)
  if not M.ACTIONS[action] then
    return "unknown action " .. tostring(action)
  end
  names = names or {}
  if #names > M.MAX_NAMES then
    return ("at most %d names"):format(M.MAX_NAMES)
  end
  if (action == "refresh" or action == "self_upgrade") and #names > 0 then
    return action .. " takes no names"
  end
  if action == "self_upgrade" and not M.config.self_upgrade then
    return "[packages] self_upgrade is off"
  end
  local allowed = {}
  for _, n in ipairs(M.config.allow or {}) do
    allowed[n] = true
  end
  for _, n in ipairs(names) do
    if type(n) ~= "string" or #n < 1 or #n > M.MAX_NAME or not n:find("^[A-Za-z0-9._+-]+$") or n:find("^[-.]") then
      return "bad package name " .. tostring(n)
    elseif action == "install" and not allowed[n] then
      return n .. " is not on [packages] allow"
    end
  end
  if action == "upgrade_all" and not M.config.allow_all then
    return "[packages] allow_all is off"
  end
  return nil
end

function M.start(action, names)
  core.need("packages.start", M.ACTIONS[action] or "packages.read")
  M.calls[#M.calls + 1] = { "start", action, names and copy(names) or nil }
  local why = invalid(action, names)
  if why then
    return core.yield_with(nil, "invalid", why)
  elseif M.start_error then
    return core.yield_with(nil, M.start_error[1], M.start_error[2])
  elseif M.config.backend == "none" then
    return core.yield_with(nil, "no_backend", "neither apt-get nor dnf is installed")
  end
  local run = M.runs[action]
  if run == nil then
    return core.yield_with(nil, "failed", "the fake has no run for " .. action)
  end
  M.seq = M.seq + 1
  local id = ("%032x"):format(0xabc000 + M.seq)
  M.ops[id] = { action = action, run = run, polls = 0 }
  return core.yield_with({ id = id, backend = M.config.backend })
end

function M.poll(id, log_offset, status_offset)
  core.need("packages.poll", "packages.read")
  M.calls[#M.calls + 1] = { "poll", id, log_offset, status_offset }
  assert(math.type(log_offset) == "integer" and math.type(status_offset) == "integer",
    "poll: the offsets must be integers")
  local op = M.ops[id]
  if op == nil or M.files_gone then
    return core.yield_with(nil, "not_found", "no package operation " .. tostring(id))
  end
  op.polls = op.polls + 1
  local run = op.run
  local log, status = run.log or "", run.status or ""
  local step = run.step or 1000
  local visible_log = math.min(#log, op.polls * step)
  local visible_status = math.min(#status, math.max(0, op.polls - (run.status_delay or 0)) * step)
  local all_visible = visible_log == #log and visible_status == #status
  local done = all_visible and op.polls >= (run.polls or 0)
  assert(log_offset <= visible_log and status_offset <= visible_status, "poll: an offset past the file's end")
  return core.yield_with({
    state = done and "done" or "running",
    exit = done and (run.exit or "exit 0") or "",
    log = log:sub(log_offset + 1, math.min(visible_log, log_offset + M.MAX_SLICE)),
    status = status:sub(status_offset + 1, math.min(visible_status, status_offset + M.MAX_SLICE)),
    log_size = visible_log,
    status_size = visible_status,
  })
end

-- The module as the runtime registers it (M itself is the spec's control: M.config is the
-- configuration the fake answers with).
M.module = { config = M.config_fn, start = M.start, poll = M.poll }

-- The calls of `fn` ("start", "poll"), in order.
function M.calls_of(fn)
  local out = {}
  for _, c in ipairs(M.calls) do
    if c[1] == fn then
      out[#out + 1] = c
    end
  end
  return out
end

M.reset()

return M
