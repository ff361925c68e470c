#!/usr/bin/env bash
# What an older API version costs per call: the agent answers bench.echo (bench/methods) over
# plain HTTP on loopback, with bench/api-versions/ as its version files (four versions, each
# renaming the echoed text field), and wrk calls it as a client of the current version (no
# shim), of the version before it (one request and one result shim) and of the oldest (three
# of each). Plain HTTP keeps TLS out of the comparison. docs/performance.md holds the results.
#
# Usage: bench/versions.sh
#   DURATION=10s  CONNECTIONS=64  THREADS=2  ROUNDS=3 (each number is the median)
#   EXO_AGENT_BIN=...  use this agent binary instead of building build-bench/ (Release)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
for tool in wrk curl; do
    command -v "$tool" >/dev/null || die "$tool is not installed (scripts/deps.sh bench)"
done
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
bench_agent_bin

tmp=$(mktemp -d /tmp/exo-bench-versions.XXXXXX)
chmod 755 "$tmp"
agent_pid=
cleanup() {
    [ -z "$agent_pid" ] || { kill -TERM "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; }
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The worker's user must read the files: copies in the temporary directory.
cp -r "$repo/bench/methods" "$repo/bench/api-versions" "$tmp/"
chmod -R a+rX "$tmp/methods" "$tmp/api-versions"
port=$((20000 + RANDOM % 20000))
cat >"$tmp/agent.conf" <<CONF
[server]
listen = "127.0.0.1:$port"
unix_socket = ""
tls = false
state_dir = "$tmp/state"

[methods]
dirs = "$tmp/methods"
api_versions_dir = "$tmp/api-versions"
operator_dir = ""

[console]
status_line = false

[system_load]
console_line = false
CONF
"$agent_bin" serve --config "$tmp/agent.conf" >"$tmp/log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$tmp/log" >&2; die "the agent did not start"; }

# One case: a version and the name its clients give the echoed text.
run_case() {
    local version=$1 field=$2 body script out
    body="{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"bench.echo\",\"params\":{\"$field\":\"hello\",\"n\":42}}"
    script=$tmp/$version.lua
    printf 'wrk.method = "POST"\nwrk.body = [[%s]]\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Exosphere-Agent-Version"] = "%s"\n' \
        "$body" "$version" >"$script"
    # The answer must be the echo in the version's own shape.
    out=$(curl -sf "http://127.0.0.1:$port/rpc" -H 'Content-Type: application/json' -H "Exosphere-Agent-Version: $version" -d "$body")
    case $out in
        *"\"result\":{\"$field\":\"hello\",\"n\":42}"* | *"\"result\":{\"n\":42,\"$field\":\"hello\"}"*) ;;
        *) die "$version answered $out" ;;
    esac
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$script" "http://127.0.0.1:$port/rpc" >"$tmp/wrk-$version.txt"
    grep -q 'Non-2xx' "$tmp/wrk-$version.txt" && die "non-2xx answers for $version"
    awk '/Requests\/sec/ { print $2 }' "$tmp/wrk-$version.txt"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
declare -A rps
cases=("2027-03-01 message 0" "2027-02-01 text 1" "2026-12-01 words 3")
for ((r = 1; r <= ROUNDS; r++)); do
    for c in "${cases[@]}"; do
        set -- $c
        rps[$1]+="$(run_case "$1" "$2") "
    done
done
printf '%-12s %-6s %12s\n' "version" "shims" "calls/s"
for c in "${cases[@]}"; do
    set -- $c
    printf '%-12s %-6s %12s\n' "$1" "$3" "$(tr ' ' '\n' <<<"${rps[$1]}" | grep . | median)"
done
printf 'rounds %s, %s each, wrk -t%s -c%s; agent %s\n' "$ROUNDS" "$DURATION" "$THREADS" "$CONNECTIONS" "$agent_bin"
