-- Runs the specs of the examples in docs/ with the other specs, so that what the method
-- author's guide shows keeps working. Each is an ordinary busted spec file.
for _, path in ipairs({ "docs/examples/site_motd_spec.lua" }) do
  local chunk = assert(loadfile(path, "t", _ENV))
  chunk()
end
