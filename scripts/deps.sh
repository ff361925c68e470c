#!/usr/bin/env bash
# Installs, from Debian's archive, what building and testing the agent needs. Idempotent:
# packages already present are not fetched again. Usage: scripts/deps.sh [build|test|bench]...
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config clang-format liblua5.4-dev lua5.4 libuv1-dev
            libssl-dev libpam0g-dev node-llhttp libwslay-dev libsystemd-dev openssl)
# chromium and nginx: the browser tests (tests/browser/) drive Debian's Chromium headless, through
# nginx set up as Exosphere's proxy.
test_pkgs=(lua-busted curl valgrind nodejs npm ca-certificates procps iproute2 libpam-wrapper
           rpm rpmlint createrepo-c lintian apt-utils debootstrap gnupg gpgv systemd
           systemd-container chromium nginx)
bench_pkgs=(wrk nginx libnginx-mod-http-lua lua-cjson curl hyperfine)

want=()
for set in "${@:-build}"; do
    case "$set" in
        build) want+=("${build_pkgs[@]}") ;;
        test) want+=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
        bench) want+=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
        *) echo "deps.sh: unknown set '$set' (build, test or bench)" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node 20 may come from outside Debian's archive on a developer machine; any node >= 18 does.
if command -v node >/dev/null && command -v npm >/dev/null; then
    missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]}"
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps.sh: missing packages (run as root to install): ${missing[*]}" >&2
        exit 1
    fi
    echo "deps.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
