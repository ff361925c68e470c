#!/usr/bin/env bash
# Benchmarks the agent against nginx with its Lua module (one worker) on loopback, both
# answering the same JSON-RPC echo over HTTPS with the same certificate and TLS settings.
# docs/performance.md explains every number and holds the latest results.
#
# Usage: bench/run.sh
#   DURATION=10s      length of each wrk run
#   CONNECTIONS=64    connections of the keep-alive run (wrk -t$THREADS -c$CONNECTIONS)
#   THREADS=2         wrk threads of that run
#   STARTS=10         agent and nginx starts timed for "first response"
#   ROUNDS=1          rounds of the four wrk runs; with more, each number is the median
#   EXO_AGENT_BIN=... use this agent binary instead of building build-bench/ (Release)
#   EXO_BENCH_SKIP_DEPS=1  do not run scripts/deps.sh bench
# Prints a table; it and the raw wrk outputs are also kept in bench/out/run-<time>.txt.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
STARTS=${STARTS:-10}
ROUNDS=${ROUNDS:-1}
BODY='{"jsonrpc":"2.0","id":1,"method":"bench.echo","params":{"message":"hello","n":42}}'

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ---- dependencies and the binary ----------------------------------------------------------

if [ "${EXO_BENCH_SKIP_DEPS:-0}" != 1 ]; then
    "$repo/scripts/deps.sh" bench
    # Two more that the "bench" set of deps.sh does not list (yet): nginx's Lua module (LuaJIT)
    # decodes JSON with cjson for Lua 5.1, from Debian's lua-cjson, which
    # libnginx-mod-http-lua does not depend on; curl checks both answers.
    extra=()
    for p in lua-cjson curl; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || extra+=("$p")
    done
    if [ "${#extra[@]}" -gt 0 ]; then
        [ "$(id -u)" -eq 0 ] || die "missing packages (run as root to install them): ${extra[*]}"
        say "installing ${extra[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${extra[@]}" >/dev/null
    fi
fi
for tool in wrk nginx curl openssl cc; do
    command -v "$tool" >/dev/null || die "$tool is not installed (scripts/deps.sh bench)"
done

# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
bench_agent_bin

# ---- temporary directory, cleanup ---------------------------------------------------------

tmp=$(mktemp -d /tmp/exo-bench.XXXXXX)
pids=()   # the servers
helper="" # wrk or first_response while one runs
cleanup() {
    local pid
    if [ -n "$helper" ]; then
        kill -TERM "$helper" 2>/dev/null || true
        wait "$helper" 2>/dev/null || true
    fi
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -Wall -Wextra -o "$tmp/first_response" "$repo/bench/first_response.c" -lssl -lcrypto

# Sets the variable named $1 to a free loopback port not handed out before in this run.
used_ports=" "
agent_port="" nginx_port="" fr_agent_port="" fr_nginx_port=""
free_port() {
    local p
    for _ in 1 2 3 4 5 6 7 8; do
        p=$("$tmp/first_response" free-port)
        case "$used_ports" in *" $p "*) continue ;; esac
        used_ports+="$p "
        printf -v "$1" '%s' "$p"
        return
    done
    die "no free port"
}

# One self-signed ECDSA P-256 certificate for both servers, so the TLS work is the same.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
chmod 600 "$tmp/key.pem"

# ---- configurations -----------------------------------------------------------------------

agent_conf() { # PORT DIR
    mkdir -p "$2/state"
    cat >"$2/agent.conf" <<EOF
[server]
listen = "127.0.0.1:$1"
unix_socket = ""
tls = true
tls_certificate = "$tmp/cert.pem"
tls_private_key = "$tmp/key.pem"
state_dir = "$2/state"

[methods]
dirs = "$repo/methods", "$repo/bench/methods"

[console]
status_line = false
EOF
}

modules=
for dir in /usr/lib/nginx/modules /usr/share/nginx/modules; do
    if [ -f "$dir/ngx_http_lua_module.so" ]; then
        # Debian's Lua module is built against the NDK module, which must be loaded first.
        [ -f "$dir/ndk_http_module.so" ] && modules="load_module $dir/ndk_http_module.so;"$'\n'
        modules+="load_module $dir/ngx_http_lua_module.so;"
        break
    fi
done
[ -n "$modules" ] || die "ngx_http_lua_module.so not found (libnginx-mod-http-lua)"

nginx_conf() { # PORT DIR
    mkdir -p "$2"
    cat >"$2/nginx.conf" <<EOF
$modules
worker_processes 1;
daemon off;
pid $2/nginx.pid;
error_log $2/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $2/body;
    proxy_temp_path $2/proxy;
    fastcgi_temp_path $2/fastcgi;
    uwsgi_temp_path $2/uwsgi;
    scgi_temp_path $2/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_buffer_size 16k;
    init_by_lua_block { cjson = require("cjson") }
    server {
        listen 127.0.0.1:$1 ssl;
        ssl_certificate $tmp/cert.pem;
        ssl_certificate_key $tmp/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
        ssl_prefer_server_ciphers on;
        location = /healthz {
            default_type application/json;
            return 200 '{"status":"ok"}';
        }
        # The agent's echo, as close as nginx+lua gets: decode the body with cjson, answer
        # with the same members and the same extra headers as the agent.
        location = /rpc {
            content_by_lua_block {
                ngx.req.read_body()
                local ok, req = pcall(cjson.decode, ngx.req.get_body_data() or "")
                local body
                if ok and type(req) == "table" then
                    body = cjson.encode({ jsonrpc = "2.0", result = req.params, id = req.id })
                else
                    body = '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}'
                end
                ngx.header["Content-Type"] = "application/json"
                ngx.header["Content-Length"] = #body
                ngx.header["X-Request-Id"] = ngx.var.request_id
                ngx.header["Cache-Control"] = "no-store"
                ngx.header["X-Content-Type-Options"] = "nosniff"
                ngx.print(body)
            }
        }
    }
}
EOF
}

free_port agent_port
free_port nginx_port
agent_conf "$agent_port" "$tmp/agent"
nginx_conf "$nginx_port" "$tmp/nginx"
nginx -t -p "$tmp/nginx/" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" 2>"$tmp/nginx-t.log" ||
    { cat "$tmp/nginx-t.log" >&2; die "nginx rejects the generated configuration"; }

# ---- start both, check their answers ------------------------------------------------------

wait_healthy() { # NAME PORT PID
    for _ in $(seq 1 200); do
        if ! kill -0 "$3" 2>/dev/null; then
            say "error: $1 exited at start"
            return 1
        fi
        curl -sf --cacert "$tmp/cert.pem" "https://127.0.0.1:$2/healthz" >/dev/null && return
        sleep 0.05
    done
    say "error: $1 did not answer /healthz within 10 s"
    return 1
}

"$agent_bin" serve --config "$tmp/agent/agent.conf" >"$tmp/agent/log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
nginx -p "$tmp/nginx/" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" &
nginx_pid=$!
pids+=("$nginx_pid")
wait_healthy agent "$agent_port" "$agent_pid" || { cat "$tmp/agent/log" >&2; exit 1; }
wait_healthy nginx "$nginx_port" "$nginx_pid" || { cat "$tmp/nginx/error.log" >&2; exit 1; }

# The answer must be a 200 with a JSON body holding the version, the id and the params as
# the result (member order differs: cjson does not keep it), and no error.
check_answer() { # NAME PORT
    local out
    out=$(curl -s --cacert "$tmp/cert.pem" -w '\n%{http_code} %{content_type}' \
        -H 'Content-Type: application/json' --data-binary "$BODY" "https://127.0.0.1:$2/rpc")
    local body=${out%$'\n'*} status=${out##*$'\n'}
    local ok=1 want
    [ "$status" = "200 application/json" ] || ok=0
    for want in '"jsonrpc":"2.0"' '"id":1' '"result":{' '"message":"hello"' '"n":42'; do
        case "$body" in *"$want"*) ;; *) ok=0 ;; esac
    done
    case "$body" in *'"error"'*) ok=0 ;; esac
    [ "$ok" = 1 ] || die "$1 answered the echo wrongly: $status $body"
    say "$1 answers: $body"
}
check_answer agent "$agent_port"
check_answer nginx "$nginx_port"

# ---- memory -------------------------------------------------------------------------------

# Sum of a status field (kB) over the given PIDs.
status_kb() { # FIELD PID...
    local field=$1 sum=0 v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status")
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}
nginx_pids() { echo "$nginx_pid" $(pgrep -P "$nginx_pid"); }
# Proportional set size: shared pages (the libraries, and what a forked child still shares
# with its parent) divided among the processes that map them, so a sum over processes counts
# each page once. RSS sums count them in every process.
pss_kb() { # PID...
    local pid v sum=0
    for pid in "$@"; do
        v=$(awk '$1 == "Pss:" { print $2 }' "/proc/$pid/smaps_rollup")
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

sleep 0.5
# As root the agent is a monitor and its worker: both count, as nginx's master and workers do.
agent_pids() { echo "$agent_pid" $(pgrep -P "$agent_pid"); }
monitor_idle_kb=$(status_kb VmRSS "$agent_pid")
agent_idle_kb=$(status_kb VmRSS $(agent_pids))
agent_idle_pss_kb=$(pss_kb $(agent_pids))
# shellcheck disable=SC2046
nginx_idle_kb=$(status_kb VmRSS $(nginx_pids))
# shellcheck disable=SC2046
nginx_idle_pss_kb=$(pss_kb $(nginx_pids))

# ---- load ---------------------------------------------------------------------------------

# The share of both cores that other processes keep busy (both servers are idle now): the
# numbers below mean little when it is not near 0.
busy_pct() {
    local a b
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        printf "%.0f", (y[2] > x[2]) ? 100 * (y[1] - x[1]) / (y[2] - x[2]) : 0 }'
}
other_load=$(busy_pct)
if [ "$other_load" -gt 10 ]; then
    say "warning: other processes keep ${other_load}% of the CPUs busy; the numbers will be low and noisy"
fi

stamp=$(date -u +%Y%m%d-%H%M%S)
raw=$tmp/raw.txt
: >"$raw"

# Runs a helper in the background and waits for it, so that a signal (and the cleanup) is
# not held up until it ends. Its output is in $tmp/helper.out.
run_helper() {
    "$@" >"$tmp/helper.out" 2>&1 &
    helper=$!
    local rc=0
    wait "$helper" || rc=$?
    helper=""
    return "$rc"
}

# CPU time (user + system, clock ticks) the given PIDs have used so far.
clk_tck=$(getconf CLK_TCK)
cpu_ticks() { # PID...
    local sum=0 v
    for pid in "$@"; do
        v=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
        sum=$((sum + v))
    done
    echo "$sum"
}

# Runs wrk against a server; sets R_RPS, R_P50, R_P99 (ms), R_CPU (the server's CPU time per
# request, microseconds) and R_NOTE (errors wrk reported).
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}
run_wrk() { # NAME PORT THREADS CONNECTIONS SERVER_PID...
    local out c0 c1 n
    c0=$(cpu_ticks "${@:5}")
    run_helper wrk -t"$3" -c"$4" -d"$DURATION" --latency -s "$repo/bench/wrk-echo.lua" \
        "https://127.0.0.1:$2/rpc" || { cat "$tmp/helper.out" >&2; die "wrk failed against $1"; }
    out=$(cat "$tmp/helper.out")
    c1=$(cpu_ticks "${@:5}")
    printf '==== %s: wrk -t%s -c%s -d%s --latency\n%s\n\n' "$1" "$3" "$4" "$DURATION" "$out" >>"$raw"
    R_RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
    R_P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    R_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    n=$(awk '$2 == "requests" && $3 == "in" { print $1 }' <<<"$out")
    R_CPU=$(awk -v t=$((c1 - c0)) -v hz="$clk_tck" -v n="${n:-0}" \
        'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }')
    R_NOTE=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ' | tr '\n' ';' || true)
    [ -n "$R_RPS" ] || die "wrk gave no result for $1:"$'\n'"$out"
    [ -z "$R_NOTE" ] || say "warning: $1: $R_NOTE"
}

# Each result is kept as "rps p50 p99 cpu" lines per case; notes separately.
declare -A results=()
notes=""
keep() { # CASE
    results[$1]+="$R_RPS $R_P50 $R_P99 $R_CPU"$'\n'
    [ -z "$R_NOTE" ] || notes+="$1: $R_NOTE"$'\n'
}
for round in $(seq 1 "$ROUNDS"); do
    say "round $round of $ROUNDS: keep-alive (wrk -t$THREADS -c$CONNECTIONS -d$DURATION) and one" \
        "connection (wrk -t1 -c1), agent then nginx"
    run_wrk agent "$agent_port" "$THREADS" "$CONNECTIONS" $(agent_pids)
    keep agent_ka
    # shellcheck disable=SC2046
    run_wrk nginx "$nginx_port" "$THREADS" "$CONNECTIONS" $(nginx_pids)
    keep nginx_ka
    run_wrk agent "$agent_port" 1 1 $(agent_pids)
    keep agent_one
    # shellcheck disable=SC2046
    run_wrk nginx "$nginx_port" 1 1 $(nginx_pids)
    keep nginx_one
done
# The median of column COL over the rounds of CASE.
med() { # CASE COL
    printf '%s' "${results[$1]}" | awk -v c="$2" 'NF { print $c }' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
medians() { echo "$(med "$1" 1) $(med "$1" 2) $(med "$1" 3) - $(med "$1" 4)"; }
read -r -a agent_ka <<<"$(medians agent_ka)"
read -r -a nginx_ka <<<"$(medians nginx_ka)"
read -r -a agent_one <<<"$(medians agent_one)"
read -r -a nginx_one <<<"$(medians nginx_one)"

agent_peak_kb=$(status_kb VmHWM $(agent_pids))
# shellcheck disable=SC2046
nginx_peak_kb=$(status_kb VmHWM $(nginx_pids))
# The load servers stop here, so that the timed starts below have the machine to themselves.
cleanup_servers() {
    kill -TERM "$agent_pid" "$nginx_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    pids=()
}
cleanup_servers

# ---- start to first response --------------------------------------------------------------

say "first response: $STARTS starts of each"
free_port fr_agent_port
free_port fr_nginx_port
agent_conf "$fr_agent_port" "$tmp/agent-fr"
nginx_conf "$fr_nginx_port" "$tmp/nginx-fr"
fr() { # VAR NAME PORT COMMAND...
    local var=$1 name=$2 port=$3 out
    shift 3
    run_helper "$tmp/first_response" time "$port" "$tmp/cert.pem" "$STARTS" -- "$@" ||
        { cat "$tmp/helper.out" >&2; die "timing the start of $name failed"; }
    out=$(cat "$tmp/helper.out")
    printf '==== %s: start to first response (ms), %s starts\n%s\n\n' "$name" "$STARTS" "$out" >>"$raw"
    printf -v "$var" '%s' "$(awk '$1 == "median" { print $2 }' <<<"$out")"
    printf -v "${var}_cpu" '%s' "$(awk '$1 == "median" { print $8 }' <<<"$out")"
}
agent_fr="" nginx_fr="" agent_fr_cpu="" nginx_fr_cpu=""
fr agent_fr agent "$fr_agent_port" "$agent_bin" serve --config "$tmp/agent-fr/agent.conf"
fr nginx_fr nginx "$fr_nginx_port" nginx -p "$tmp/nginx-fr/" -c "$tmp/nginx-fr/nginx.conf" \
    -e "$tmp/nginx-fr/error.log"

# ---- the table ----------------------------------------------------------------------------

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
row() { printf '%-52s %12s %12s %12s\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"; }
verdict() { if [ "$1" = 1 ]; then echo "met"; else echo "MISSED"; fi; }

agent_ver=$("$agent_bin" version 2>/dev/null | head -1 || echo "?")
{
    echo
    echo "Exosphere Guest Agent vs nginx+lua, HTTPS on loopback, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
        "$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
    echo "agent: $agent_ver ($agent_bin); $(nginx -v 2>&1 | sed 's/^nginx version: //')" \
        "with libnginx-mod-http-lua $(dpkg-query -W -f='${Version}' libnginx-mod-http-lua 2>/dev/null)," \
        "1 worker; $(openssl version | cut -d' ' -f1-2); wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null)"
    echo "each wrk run: $DURATION; rounds: $ROUNDS (medians); body: $BODY"
    echo "CPU busy with other processes just before the runs: ${other_load}%"
    echo
    printf '%-52s %12s %12s %12s\n' "" "agent" "nginx+lua" "agent/nginx"
    row "keep-alive -t$THREADS -c$CONNECTIONS: requests/s" "${agent_ka[0]}" "${nginx_ka[0]}"
    row "keep-alive -t$THREADS -c$CONNECTIONS: p50 latency (ms)" "${agent_ka[1]}" "${nginx_ka[1]}"
    row "keep-alive -t$THREADS -c$CONNECTIONS: p99 latency (ms)" "${agent_ka[2]}" "${nginx_ka[2]}"
    row "keep-alive -t$THREADS -c$CONNECTIONS: server CPU per request (us)" "${agent_ka[4]}" "${nginx_ka[4]}"
    row "one connection -t1 -c1: requests/s" "${agent_one[0]}" "${nginx_one[0]}"
    row "one connection -t1 -c1: p50 latency (ms)" "${agent_one[1]}" "${nginx_one[1]}"
    row "one connection -t1 -c1: p99 latency (ms)" "${agent_one[2]}" "${nginx_one[2]}"
    row "one connection -t1 -c1: server CPU per request (us)" "${agent_one[4]}" "${nginx_one[4]}"
    row "idle RSS (MiB; monitor + worker; nginx: master + worker)" "$(mib "$agent_idle_kb")" "$(mib "$nginx_idle_kb")"
    row "  of which the agent's monitor / nginx's master (MiB)" "$(mib "$monitor_idle_kb")" "-"
    row "idle PSS, all processes (MiB; shared pages counted once)" "$(mib "$agent_idle_pss_kb")" "$(mib "$nginx_idle_pss_kb")"
    row "peak RSS (MiB; both processes each)" "$(mib "$agent_peak_kb")" "$(mib "$nginx_peak_kb")"
    row "start to first response (ms, median of $STARTS)" "$agent_fr" "$nginx_fr"
    row "  CPU time used by then (ms, median)" "$agent_fr_cpu" "$nginx_fr_cpu"
    [ -z "$notes" ] || printf 'wrk reported errors:\n%s' "$notes"
    echo
    echo "targets (2 cores):"
    echo "  keep-alive requests/s >= nginx+lua's:   $(verdict "$(awk -v a="${agent_ka[0]}" -v b="${nginx_ka[0]}" 'BEGIN { print (a >= b) }')")"
    echo "  idle RSS < 8 MiB (PSS of both):         $(verdict "$(awk -v a="$agent_idle_pss_kb" 'BEGIN { print (a < 8192) }')")"
    echo "  first response <= 10 ms after start:    $(verdict "$(awk -v a="$agent_fr" 'BEGIN { print (a <= 10) }')")"
    echo
    echo "raw wrk outputs and start times: bench/out/run-$stamp.txt"
} | tee "$tmp/table.txt"
mkdir -p "$repo/bench/out"
cat "$tmp/table.txt" "$raw" >"$repo/bench/out/run-$stamp.txt"
