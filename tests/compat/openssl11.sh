#!/usr/bin/env bash
# Builds the agent against OpenSSL 1.1.1 and Lua 5.4 of Debian 11 (bullseye) in a chroot, and
# runs the C unit tests and a TLS smoke test there: the runtime must build and work with
# OpenSSL 1.1.1 as well as 3.x. The root file system is cached between runs in
# ${EXO_ROOTFS_CACHE:-/var/cache/exosphere-guest-agent-tests}/bullseye-build.
# Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
top=$PWD
cache=${EXO_ROOTFS_CACHE:-/var/cache/exosphere-guest-agent-tests}
root=$cache/bullseye-build
pkgs=build-essential,cmake,pkg-config,liblua5.4-dev,libuv1-dev,libssl-dev,libpam0g-dev,libwslay-dev,libsystemd-dev,curl,openssl,ca-certificates
passed=0; failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
bad() { failed=$((failed + 1)); echo "not ok - $*"; }

if [ "$(id -u)" -ne 0 ]; then echo "needs root (chroot)"; echo "0 passed, 1 failed"; exit 1; fi
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null

# The cached tree is reused while its stamp names the same package list.
if [ "$(cat "$root/.complete" 2>/dev/null)" != "packages: $pkgs" ]; then
    rm -rf "$root"
    mkdir -p "$cache"
    echo "building the bullseye root file system (cached afterwards)"
    if ! debootstrap --variant=minbase --include="$pkgs" bullseye "$root" http://deb.debian.org/debian \
            >"$cache/bullseye-build.log" 2>&1; then
        tail -20 "$cache/bullseye-build.log"
        bad "debootstrap bullseye"; echo "$passed passed, $failed failed"; exit 1
    fi
    echo "packages: $pkgs" >"$root/.complete"
fi

cleanup() {
    umount -l "$root/proc" 2>/dev/null
    umount -l "$root/src" 2>/dev/null
    umount -l "$root/usr/share/llhttp" 2>/dev/null
    umount -l "$root/usr/share/include/llhttp" 2>/dev/null
}
trap cleanup EXIT
mkdir -p "$root/src" "$root/usr/share/llhttp" "$root/usr/share/include/llhttp"
mount -t proc proc "$root/proc"
mount --bind "$top" "$root/src"
# bullseye has no node-llhttp package: the same C sources are lent from this machine's.
mount --bind /usr/share/llhttp "$root/usr/share/llhttp"
mount --bind /usr/share/include/llhttp "$root/usr/share/include/llhttp"

ver=$(chroot "$root" openssl version)
echo "chroot: $ver"
case "$ver" in OpenSSL\ 1.1.1*) ok "the chroot has OpenSSL 1.1.1" ;; *) bad "expected OpenSSL 1.1.1, got $ver" ;; esac

if chroot "$root" sh -c 'rm -rf /tmp/b && cmake -S /src -B /tmp/b -DEXO_WERROR=ON >/tmp/cmake.log 2>&1 && cmake --build /tmp/b -j2 >>/tmp/cmake.log 2>&1'; then
    ok "builds with warnings as errors against OpenSSL 1.1.1"
else
    tail -30 "$root/tmp/cmake.log"; bad "build"
fi
for t in test_json test_config test_lvm; do
    if chroot "$root" sh -c "cd /src && /tmp/b/$t" >/tmp/compat-$t.log 2>&1; then ok "$t"; else tail -5 /tmp/compat-$t.log; bad "$t"; fi
done

# The agent makes its certificate with OpenSSL 1.1.1 and answers over TLS 1.2 and 1.3.
chroot "$root" sh -c 'rm -rf /tmp/s && mkdir -p /tmp/s && cat >/tmp/s/agent.conf <<CONF
[server]
listen = 127.0.0.1:18449
unix_socket = /tmp/s/agent.sock
state_dir = /tmp/s/state
[methods]
dirs = /src/methods
operator_dir = ""
CONF'
# Started as root, the agent forks its worker as this user.
chroot "$root" sh -c 'id exosphere-guest-agent >/dev/null 2>&1 || useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin exosphere-guest-agent'
chroot "$root" /tmp/b/exosphere-guest-agent serve --config /tmp/s/agent.conf >/tmp/compat-agent.log 2>&1 &
apid=$!
for _ in $(seq 100); do grep -q "ready:" /tmp/compat-agent.log && break; sleep 0.1; done
for v in 1.2 1.3; do
    out=$(chroot "$root" curl -sS --tlsv$v --tls-max $v --cacert /tmp/s/state/tls-cert.pem \
          https://127.0.0.1:18449/rpc -H 'Content-Type: application/json' \
          -d '{"jsonrpc":"2.0","id":7,"method":"agent.info"}' 2>&1)
    case "$out" in *'"id":7,"result":{'*) ok "TLS $v call answered under OpenSSL 1.1.1" ;; *) bad "TLS $v: $out" ;; esac
done
kill -TERM $apid 2>/dev/null; wait $apid
rc=$?
[ $rc -eq 0 ] && ok "SIGTERM exits 0" || { cat /tmp/compat-agent.log | tail -5; bad "agent exit status $rc"; }
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
