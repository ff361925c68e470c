-- wrk script of bench/run.sh: every request is the same JSON-RPC call of the echo method,
-- so the agent (bench/methods/echo.lua) and nginx+lua (the location run.sh generates) do
-- the same work: decode the body, answer {"jsonrpc":"2.0","result":<params>,"id":<id>}.
-- ASCII only and without escapes, so the JSON codecs' string fast paths are what is measured.
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"bench.echo","params":{"message":"hello","n":42}}'
wrk.headers["Content-Type"] = "application/json"
