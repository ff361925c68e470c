-- Temporary method files and directories for specs, removed by M.cleanup() (call it in
-- after_each). Paths are absolute, like the runtime's method_dirs.

local lfs = require("lfs")

local M = {}

local made = {}

local function fresh_name()
  local path = os.tmpname() -- creates an empty file; we only want the unique name
  os.remove(path)
  return path
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- A file holding `text`, named <unique>.lua.
function M.file(text)
  local path = fresh_name() .. ".lua"
  write(path, text)
  made[#made + 1] = path
  return path
end

-- A directory holding files: { ["name.lua"] = text, ... }.
function M.dir(files)
  local dir = fresh_name()
  assert(lfs.mkdir(dir))
  for name, text in pairs(files) do
    write(dir .. "/" .. name, text)
    made[#made + 1] = dir .. "/" .. name
  end
  made[#made + 1] = dir
  return dir
end

function M.cleanup()
  for i = #made, 1, -1 do
    os.remove(made[i])
  end
  made = {}
end

return M
