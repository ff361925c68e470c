#!/usr/bin/env bash
# README command 1: installs what is missing, builds, and runs the agent in the foreground on
# loopback, ready to try: HTTPS on 127.0.0.1:8443 and [::1]:8443 with a self-signed
# certificate made at first start (kept in run/state), plus the Unix socket run/agent.sock.
# Ctrl-C stops it (after draining calls in flight).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
scripts/deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
mkdir -p run/state
cat >run/agent.conf <<CONF
# Written by scripts/try.sh: the agent on loopback only, state kept in run/.
[server]
listen = 127.0.0.1:8443, [::1]:8443
unix_socket = $top/run/agent.sock
state_dir = $top/run/state

[methods]
dirs = $top/methods
CONF
cat <<MSG

The agent starts below (Ctrl-C stops it). From another terminal, try:

  curl -sk https://127.0.0.1:8443/healthz
  curl -sk https://127.0.0.1:8443/openrpc.json | head -c 300; echo
  curl -sk https://127.0.0.1:8443/rpc -H 'Content-Type: application/json' \\
       -d '{"jsonrpc":"2.0","id":1,"method":"agent.info"}'
  curl -sk https://[::1]:8443/rpc -H 'Content-Type: application/json' \\
       -d '{"jsonrpc":"2.0","id":2,"method":"system_load.current"}'
  curl -s --unix-socket $top/run/agent.sock http://localhost/rpc \\
       -H 'Content-Type: application/json' -d '[{"jsonrpc":"2.0","id":1,"method":"agent.info"},{"jsonrpc":"2.0","id":2,"method":"rpc.discover"}]' | head -c 300; echo
  $top/build/exosphere-guest-agent call system_load.current --socket $top/run/agent.sock
  openssl s_client -connect 127.0.0.1:8443 </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256

MSG
exec build/exosphere-guest-agent serve --config run/agent.conf
