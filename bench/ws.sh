#!/usr/bin/env bash
# WebSocket benchmark of the agent over TLS on loopback: SESSIONS idle sessions subscribed to
# notify.system_load (the agent's memory with them open, and how long one sample takes to
# reach them all), then the call rate of RATE_SESSIONS busy sessions next to wrk's HTTPS
# keep-alive rate with as many connections. docs/performance.md explains every number and
# holds the latest results. Run as root (the agent's monitor, and the test accounts of
# tests/e2e/lib/accounts.mjs, which the login needs).
#
# Usage: bench/ws.sh
#   SESSIONS=10000    idle sessions (0: skip that part)
#   CLIENTS=4         Node processes the idle sessions are spread over
#   CONCURRENCY=16    TLS handshakes in flight per client process while they open
#   SAMPLES=5         notify.system_load samples timed ([system_load] interval = 1s)
#   IDLE_ROUNDS=1     times the idle sessions are opened, timed and closed on the same agent
#   RATE_SESSIONS=64  sessions of the rate run (0: skip it); also wrk's -c
#   RATE_CLIENTS=2    Node processes of the rate run
#   DEPTH=1           calls in flight per session in the rate run
#   DURATION=10       seconds of the rate run and of the wrk run
#   HTTP_COMPARE=1    0 skips the wrk run
#   EXO_AGENT_BIN=... use this agent binary instead of building build-bench/ (Release)
#   EXO_BENCH_E2E_DIR=...  a tests/e2e directory whose node_modules holds `ws` (default: this
#                     clone's)
# Prints a table on stderr and the summary as one JSON object on stdout; both are also kept in
# bench/out/ws-<time>.json and .txt, with the agent's log in ws-<time>.agent.log.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SESSIONS=${SESSIONS:-10000}
RATE_SESSIONS=${RATE_SESSIONS:-64}
export SESSIONS RATE_SESSIONS

say() { printf 'bench ws: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: the agent's monitor and the test accounts need it"
for tool in node openssl curl cc; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
e2e_dir=${EXO_BENCH_E2E_DIR:-$repo/tests/e2e}
[ -d "$e2e_dir/node_modules/ws" ] || die "$e2e_dir/node_modules/ws is missing (npm ci in tests/e2e, or EXO_BENCH_E2E_DIR)"
if [ "${HTTP_COMPARE:-1}" = 1 ] && ! command -v wrk >/dev/null; then
    say "wrk is not installed (scripts/deps.sh bench): no HTTP keep-alive run for comparison"
    export HTTP_COMPARE=0
fi

# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
bench_agent_bin

# ---- file descriptors ----------------------------------------------------------------------

# Every session is a socket in the agent and one in a client process; the limit set here is
# inherited by both (the agent's monitor passes it on to its worker). The service's own
# LimitNOFILE (16384, packaging/systemd) would do for 10,000 sessions too.
want=$((SESSIONS + RATE_SESSIONS + 1024))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    ulimit -Hn "$want" 2>/dev/null || die "RLIMIT_NOFILE's hard limit is $hard, under the $want needed"
fi
ulimit -n "$want"

# ---- temporary directory, cleanup ----------------------------------------------------------

tmp=$(mktemp -d /tmp/exo-bench-ws.XXXXXX)
chmod 755 "$tmp" # the worker (the agent's own user) reads the configuration's directories
agent_pid=""
node_pid=""
cleanup() {
    if [ -n "$node_pid" ]; then
        kill -TERM "$node_pid" 2>/dev/null || true
        wait "$node_pid" 2>/dev/null || true
    fi
    if [ -n "$agent_pid" ]; then
        kill -TERM "$agent_pid" 2>/dev/null || true
        wait "$agent_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -Wall -Wextra -o "$tmp/first_response" "$repo/bench/first_response.c" -lssl -lcrypto
port=$("$tmp/first_response" free-port)

# The certificate of bench/run.sh: self-signed ECDSA P-256.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
chmod 600 "$tmp/key.pem"

# max_connections bounds connections that have not upgraded yet (a session leaves it); the
# clients keep at most CLIENTS x CONCURRENCY handshakes in flight, under its default. Sessions
# are bounded by max_sessions alone. A sample a second gives several to time.
mkdir -p "$tmp/state"
cat >"$tmp/agent.conf" <<EOF
[server]
listen = "127.0.0.1:$port"
unix_socket = ""
tls = true
tls_certificate = "$tmp/cert.pem"
tls_private_key = "$tmp/key.pem"
state_dir = "$tmp/state"
max_connections = 1024

[methods]
dirs = "$repo/methods", "$repo/bench/methods"
operator_dir = ""

[websocket]
max_sessions = $((SESSIONS + RATE_SESSIONS + 64))

[system_load]
interval = 1s
console_line = false

[metadata]
url = ""

[console]
status_line = false
EOF

# The agent's system user (its worker runs as it) and the test accounts, as the e2e tests make
# them; the client logs in with one.
node --input-type=module -e "import('$repo/tests/e2e/lib/accounts.mjs').then((m) => m.ensureAccounts('$repo'))"

"$agent_bin" serve --config "$tmp/agent.conf" >"$tmp/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 200); do
    kill -0 "$agent_pid" 2>/dev/null || { cat "$tmp/agent.log" >&2; agent_pid=""; die "the agent exited at start"; }
    curl -sf --cacert "$tmp/cert.pem" "https://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.05
done
curl -sf --cacert "$tmp/cert.pem" "https://127.0.0.1:$port/healthz" >/dev/null ||
    { cat "$tmp/agent.log" >&2; die "the agent did not answer /healthz within 10 s"; }
say "agent $agent_pid on 127.0.0.1:$port; RLIMIT_NOFILE $(ulimit -n)"

# ---- the clients ---------------------------------------------------------------------------

# The share of both cores that other processes keep busy (the agent is idle now), as in
# bench/run.sh: the timings mean little when it is not near 0.
busy_pct() {
    local a b
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        printf "%.0f", (y[2] > x[2]) ? 100 * (y[1] - x[1]) / (y[2] - x[2]) : 0 }'
}
other_load=$(busy_pct)
[ "$other_load" -le 10 ] || say "warning: other processes keep ${other_load}% of the CPUs busy; the timings will be noisy"

stamp=$(date -u +%Y%m%d-%H%M%S)
EXO_WS_PORT=$port EXO_WS_CA=$tmp/cert.pem EXO_WS_AGENT_PID=$agent_pid \
    EXO_WS_CLK_TCK=$(getconf CLK_TCK) EXO_WS_INTERVAL_S=1 \
    node "$repo/bench/ws.mjs" >"$tmp/summary.json" 2> >(tee "$tmp/progress.txt" >&2) &
node_pid=$!
rc=0
wait "$node_pid" || rc=$?
node_pid=""
[ "$rc" = 0 ] || { tail -20 "$tmp/agent.log" >&2; die "the client failed ($rc)"; }

kill -TERM "$agent_pid"
wait "$agent_pid" 2>/dev/null || true
agent_pid=""
if grep -qE 'ERROR|error:' "$tmp/agent.log"; then
    say "the agent's log holds errors:"
    grep -E 'ERROR|error:' "$tmp/agent.log" | head -5 >&2
fi

# ---- the table -------------------------------------------------------------------------------

{
    echo "Exosphere Guest Agent, WebSocket over TLS on loopback, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
        "$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
    echo "agent: $("$agent_bin" version 2>/dev/null | head -1) ($agent_bin); node $(node --version);" \
        "$(openssl version | cut -d' ' -f1-2)"
    echo "CPU busy with other processes just before the run: ${other_load}%"
    node "$repo/bench/ws.mjs" table "$tmp/summary.json"
} >"$tmp/table.txt"
mkdir -p "$repo/bench/out"
cp "$tmp/summary.json" "$repo/bench/out/ws-$stamp.json"
cp "$tmp/agent.log" "$repo/bench/out/ws-$stamp.agent.log"
cat "$tmp/table.txt" "$tmp/progress.txt" >"$repo/bench/out/ws-$stamp.txt"
cat "$tmp/table.txt" >&2
cat "$tmp/summary.json"
