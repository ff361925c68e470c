-- The examples of docs/: their specs run with the other specs, so that what the method
-- author's guide shows keeps working, and the copies of the files on the guide's pages must
-- be the files themselves (each copy follows a `<!-- example: PATH -->` line).
local EXAMPLE_SPECS = { "docs/examples/site_motd_spec.lua" }
local GUIDES = { "docs/method-authoring.md" }

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

describe("the examples of docs/", function()
  for _, guide in ipairs(GUIDES) do
    it("are copied exactly into " .. guide, function()
      local text, copies = read(guide), 0
      for path, block in text:gmatch("<!%-%- example: (%S+) %-%->\n```lua\n(.-\n)```\n") do
        assert.equal(read(path), block, path .. " differs from its copy in " .. guide)
        copies = copies + 1
      end
      assert.is_true(copies > 0, "no example copies found in " .. guide)
    end)
  end
end)

for _, path in ipairs(EXAMPLE_SPECS) do
  local chunk = assert(loadfile(path, "t", _ENV))
  chunk()
end
