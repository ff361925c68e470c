-- Capabilities: the privileged bindings a method may use (DESIGN.md "The sandbox").
--
-- A method declares what it uses (`capabilities = { "system.read" }`); the declaration is
-- checked against the names below when the file loads. Shipped methods are granted what they
-- declare; an operator method only loads if everything it declares is in the grant list of
-- the configuration (`[methods] operator_capabilities`). At each call the host hands the
-- grants to the runtime (core.set_capabilities), whose bindings check them, and records them
-- here so that the `agent` API checks them too, at the method's own line.

local coroutines = require("sandbox.coroutines")

local M = {}

-- Known capabilities and what they allow. Later releases add names; a
-- method that declares an unknown one is refused, so a typo cannot go unnoticed.
M.KNOWN = {
  ["system.read"] = "read files under /proc and /sys (agent.read_file) and file system usage (agent.statfs)",
  ["process.run"] = "run programs without a shell (agent.run)",
  ["metadata.read"] = "read the OpenStack metadata document from the configured URL (agent.metadata)",
  ["mounts.read"] = "the mount configuration and device probes through the monitor (agent.mounts.config, probe)",
  ["mounts.write"] = "format, mount and unmount volumes and shares through the monitor (agent.mounts.mkfs, mount, unmount, cephfs_mount)",
  ["packages.read"] = "the package settings, refreshing the package lists and listing updates through the monitor, and reading an operation's progress (agent.packages.config, start of refresh and list, poll)",
  ["packages.write"] = "install package updates through the monitor (agent.packages.start of install and upgrade_all)",
}

-- The configuration key that grants capabilities to operator methods, as messages name it.
M.OPERATOR_KEY = "[methods] operator_capabilities"

function M.names()
  local names = {}
  for name in pairs(M.KNOWN) do
    names[#names + 1] = name
  end
  table.sort(names)
  return names
end

-- nil when `name` is a known capability, else the reason it is not.
function M.unknown(name)
  if M.KNOWN[name] then
    return nil
  end
  return ("unknown capability %q (known: %s)"):format(tostring(name), table.concat(M.names(), ", "))
end

-- A grant list from the configuration: a set of names, or raises naming the bad entry.
function M.grant_set(list, what)
  local set = {}
  for i, name in ipairs(list or {}) do
    local why = type(name) ~= "string" and "must be a string" or M.unknown(name)
    if why then
      error(("%s[%d]: %s"):format(what, i, why), 0)
    end
    set[name] = true
  end
  return set
end

-- Call records: the capabilities granted to the call whose thread is the key. Weak keys: a
-- call that the runtime stops is never resumed, and its record goes with its thread.
local granted = setmetatable({}, { __mode = "k" })

-- Records the grants of the call running in the current thread (host.call, at its start).
function M.begin_call(list)
  local set = {}
  for _, name in ipairs(list) do
    set[name] = true
  end
  granted[coroutines.call_thread()] = set
end

function M.end_call()
  granted[coroutines.call_thread()] = nil
end

-- Raises unless the running call was granted `name`. Code outside any call (loading method
-- files, building the document) is not checked here; the runtime's bindings refuse to wait
-- there anyway. `level` is passed to error so the message names the method's line.
function M.require(name, level)
  local set = granted[coroutines.call_thread()]
  if set and not set[name] then
    error(("capability '%s' is not granted to this method"):format(name), level + 1)
  end
end

return M
