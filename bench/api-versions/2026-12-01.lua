-- bench/versions.sh only: a chain of API versions for bench.echo (bench/methods/echo.lua),
-- each renaming the text parameter and result field, so that a call of the oldest version
-- passes through three request shims and three result shims.
return { version = "2026-12-01", summary = "bench: echo takes words" }
