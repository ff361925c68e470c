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
# As root the agent is a monitor and an unprivileged worker: the worker's system user and the
# PAM service the packages install are made here when missing (idempotent).
if [ "$(id -u)" -eq 0 ]; then
    id exosphere-guest-agent >/dev/null 2>&1 ||
        useradd --system --user-group --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin exosphere-guest-agent
    [ -e /etc/pam.d/exosphere-guest-agent ] ||
        install -m 0644 packaging/pam/exosphere-guest-agent.debian /etc/pam.d/exosphere-guest-agent
    if ! runuser -u exosphere-guest-agent -- test -r "$top/methods/agent.lua"; then
        # A clone the worker's user cannot reach (under /root): serve a copy of the methods.
        rm -rf run/methods run/api-versions && cp -r methods run/methods && cp -r api-versions run/api-versions &&
            chmod -R a+rX run/methods run/api-versions
        methods_dir=$top/run/methods
        api_versions_dir=$top/run/api-versions
        echo "try.sh: $top is not readable by exosphere-guest-agent; serving a copy of methods/ and api-versions/ from run/" >&2
    fi
fi
methods_dir=${methods_dir:-$top/methods}
api_versions_dir=${api_versions_dir:-$top/api-versions}
cat >run/agent.conf <<CONF
# Written by scripts/try.sh: the agent on loopback only, state kept in run/.
[server]
listen = 127.0.0.1:8443, [::1]:8443
unix_socket = $top/run/agent.sock
state_dir = $top/run/state

[methods]
dirs = $methods_dir
api_versions_dir = $api_versions_dir
CONF
cat <<MSG

The agent starts below (Ctrl-C stops it). From another terminal, try:

  curl -sk https://127.0.0.1:8443/healthz
  curl -sk https://127.0.0.1:8443/openrpc.json | head -c 300; echo
  curl -sk https://127.0.0.1:8443/rpc -H 'Content-Type: application/json' \\
       -d '{"jsonrpc":"2.0","id":1,"method":"agent.info"}'
  # system_load.current needs a login: any local user with a password (PAM), for example
  TOKEN=\$(curl -sk -u 'USER:PASSWORD' -X POST https://127.0.0.1:8443/auth | sed 's/.*"token":"\\([^"]*\\)".*/\\1/')
  curl -sk https://[::1]:8443/rpc -H 'Content-Type: application/json' -H "Authorization: Bearer \$TOKEN" \\
       -d '{"jsonrpc":"2.0","id":2,"method":"system_load.current"}'
  curl -s --unix-socket $top/run/agent.sock http://localhost/rpc \\
       -H 'Content-Type: application/json' -d '[{"jsonrpc":"2.0","id":1,"method":"agent.info"},{"jsonrpc":"2.0","id":2,"method":"rpc.discover"}]' | head -c 300; echo
  # Over the Unix socket, root is known by its peer credentials (an administrator):
  $top/build/exosphere-guest-agent call system_load.current --socket $top/run/agent.sock
  openssl s_client -connect 127.0.0.1:8443 </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256

MSG
exec build/exosphere-guest-agent serve --config run/agent.conf
