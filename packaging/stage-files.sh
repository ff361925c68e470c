#!/usr/bin/env bash
# Lays out the files of the two packages under a destination directory, for one family.
# Shared by build-packages.sh (.deb and .rpm) and by the rpm spec's %install when the spec
# builds from source in an EL build root, so that both families ship the same files.
#
#   stage-files.sh runtime debian|redhat BINARY DEST
#   stage-files.sh methods METHODS_DIR API_VERSIONS_DIR DEST
#
# The binary is copied stripped (symbols go nowhere yet; see docs/packaging.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
umask 022

die() { echo "stage-files.sh: $*" >&2; exit 2; }

stage_runtime() {
    local family=$1 binary=$2 dest=$3
    [ -x "$binary" ] || die "no executable at $binary"
    case "$family" in debian | redhat) ;; *) die "family must be debian or redhat, not '$family'" ;; esac
    install -d "$dest/usr/bin" "$dest/usr/lib/systemd/system" "$dest/usr/lib/sysusers.d" \
        "$dest/usr/lib/tmpfiles.d" "$dest/usr/share/man/man1" "$dest/etc/pam.d" \
        "$dest/etc/exosphere-guest-agent/methods.d"
    install -m 0755 "$binary" "$dest/usr/bin/exosphere-guest-agent"
    # As dh_strip does: keep only what the dynamic linker needs.
    strip --remove-section=.comment --remove-section=.note --strip-unneeded \
        "$dest/usr/bin/exosphere-guest-agent"
    install -m 0644 "$here/systemd/exosphere-guest-agent.service" \
        "$here/systemd/exosphere-guest-agent.socket" "$dest/usr/lib/systemd/system/"
    install -m 0644 "$here/sysusers.d/exosphere-guest-agent.conf" "$dest/usr/lib/sysusers.d/"
    install -m 0644 "$here/tmpfiles.d/exosphere-guest-agent.conf" "$dest/usr/lib/tmpfiles.d/"
    install -m 0644 "$here/pam/exosphere-guest-agent.$family" "$dest/etc/pam.d/exosphere-guest-agent"
    install -m 0644 "$here/agent.conf" "$dest/etc/exosphere-guest-agent/agent.conf"
    gzip -9n <"$here/exosphere-guest-agent.1" >"$dest/usr/share/man/man1/exosphere-guest-agent.1.gz"
    chmod 0644 "$dest/usr/share/man/man1/exosphere-guest-agent.1.gz"
    if [ "$family" = redhat ]; then
        # Red Hat's default preset disables services it does not know; this one says enable
        # the service, not the socket. Debian does not use presets (postinst enables).
        install -d "$dest/usr/lib/systemd/system-preset"
        install -m 0644 "$here/rpm/80-exosphere-guest-agent.preset" "$dest/usr/lib/systemd/system-preset/"
    fi
}

stage_methods() {
    local methods=$1 apis=$2 dest=$3 f n=0
    [ -d "$methods" ] || die "no methods directory $methods"
    install -d "$dest/usr/share/exosphere-guest-agent/methods" "$dest/usr/share/exosphere-guest-agent/api-versions"
    for f in "$methods"/*.lua; do
        [ -e "$f" ] || continue
        install -m 0644 "$f" "$dest/usr/share/exosphere-guest-agent/methods/"
        n=$((n + 1))
    done
    [ "$n" -gt 0 ] || die "no *.lua in $methods"
    if [ -d "$apis" ]; then
        for f in "$apis"/*.lua; do
            [ -e "$f" ] || continue
            install -m 0644 "$f" "$dest/usr/share/exosphere-guest-agent/api-versions/"
        done
    fi
}

case "${1:-}" in
runtime) [ $# -eq 4 ] || die "usage: stage-files.sh runtime debian|redhat BINARY DEST"; stage_runtime "$2" "$3" "$4" ;;
methods) [ $# -eq 4 ] || die "usage: stage-files.sh methods METHODS_DIR API_VERSIONS_DIR DEST"; stage_methods "$2" "$3" "$4" ;;
*) die "usage: stage-files.sh runtime|methods ..." ;;
esac
