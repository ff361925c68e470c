-- API version 2026-12-01: the first one. Nothing is older, so it has nothing to translate;
-- the next version's file (2027-01-15.lua) says how its answers look to clients of this one.
return {
  version = "2026-12-01",
  summary = "The first API version: system load and its history, volumes and CephFS shares, "
    .. "WebSocket notifications and jobs",
  changes = {},
}
