-- host.check_files: what `exosphere-guest-agent check FILE...` reports about method files,
-- without serving them.
--
-- Each file loads in a fresh sandbox, exactly as the agent would load it: syntax, the top
-- level (under the same instruction budget), every declaration with its schemas, and every
-- example's params and result against those schemas. Unlike loading, a failing declaration
-- does not stop the file: `method` records the mistake and the file goes on, so a file that
-- declares several methods gets all its mistakes reported in one run. Optionally (opts):
--   operator_capabilities = { names }  report capabilities an operator file may not have;
--   method_dirs = { dirs }             report names that clash with the shipped methods
--                                      (unless allow_override = true).
-- Names that two of the checked files both declare are reported too.

local json = require("exo.json")
local env = require("sandbox.env")
local method = require("sandbox.method")
local notification = require("sandbox.notification")
local loader = require("sandbox.loader")
local capabilities = require("sandbox.capabilities")

local M = {}

local function no_info()
  return { api_versions = {}, current_api_version = "", methods = 0, skipped = {} }
end

-- Names declared by the files of `dirs`, by name -> file (loading them as the agent does).
local function shipped_names(dirs, host)
  local names = {}
  local allow = env.allow_list(host.method_api(method.declare, no_info))
  for _, dir in ipairs(dirs) do
    for _, path in ipairs(host.dir_files(dir)) do
      local list = loader.load_file(path, env.build(allow))
      for _, d in ipairs(list or {}) do
        names[d.name] = names[d.name] or path
      end
    end
  end
  return names
end

local function is_failed(v)
  return v == method.FAILED
end

-- One file's report: { file, ok, errors = [...], methods = [...] }.
local function check_file(path, opts, grants, taken)
  local report = { file = path, errors = json.array(), methods = json.array() }
  local function add_error(msg)
    report.errors[#report.errors + 1] = loader.name_file(path, msg)
  end
  local allow = env.allow_list(opts.host.method_api(method.collecting_declare(add_error), no_info,
    notification.collecting_declare(add_error)))
  local ok, value = loader.run_file(path, env.build(allow))
  local list, err
  if ok then
    list, err = loader.declarations_of(path, value, is_failed)
  else
    err = value
  end
  if err then
    add_error(err)
  end
  for _, d in ipairs(list or {}) do
    report.methods[#report.methods + 1] = d.name
    for _, c in ipairs(d.capabilities) do
      if grants and not grants[c] then
        add_error(("method '%s' declares capability '%s', which is not granted to operator methods; "
          .. "add it to %s to allow it"):format(d.name, c, capabilities.OPERATOR_KEY))
      end
    end
    local other = taken[d.name]
    if other and d.notification then
      add_error(("notification '%s' is already defined in %s"):format(d.name, other.file))
    elseif other and not (other.shipped and opts.allow_override) then
      add_error(("method '%s' is already defined in %s"):format(d.name, other.file))
    else
      taken[d.name] = { file = path }
    end
  end
  report.ok = #report.errors == 0
  return report
end

function M.files(paths, opts, host)
  if type(paths) ~= "table" then
    error("host.check_files: paths must be an array of strings", 3)
  end
  local grants = opts.operator_capabilities
    and capabilities.grant_set(opts.operator_capabilities, "host.check_files: operator_capabilities")
  local taken = {}
  for name, file in pairs(opts.method_dirs and shipped_names(opts.method_dirs, host) or {}) do
    taken[name] = { file = file, shipped = true }
  end
  local reports = json.array()
  for i, path in ipairs(paths) do
    if type(path) ~= "string" then
      error(("host.check_files: paths[%d] must be a string"):format(i), 3)
    end
    reports[i] = check_file(path, { host = host, allow_override = opts.allow_override }, grants, taken)
  end
  return reports
end

return M
