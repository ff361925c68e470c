#!/usr/bin/env bash
# Single quotes hold code for chroot and sh -c on purpose; cleanup runs from a trap.
# shellcheck disable=SC2016,SC2317
# Packaging tests (docs/packaging.md, "Tests"): builds the packages for each release (cached
# chroots; see packaging/build-packages.sh), makes signed repositories with a throwaway key,
# and checks them: lintian, rpmlint, .rpm against .deb, APT and YUM signatures, apt itself, and
# dpkg -i / --purge of both .debs in a scratch bookworm chroot without systemd running.
# Prints "ok N - ..." / "not ok N - ..." and "N passed, N failed"; exits non-zero on failure.
#   EXO_PKG_RELEASES="bookworm"  to test fewer releases (default: bullseye bookworm trixie)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
cache=${EXO_ROOTFS_CACHE:-/var/cache/exosphere-guest-agent-tests}
releases=${EXO_PKG_RELEASES:-bullseye bookworm trixie}
host_release=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
lua_level=$(sed -n 's/^set(EXO_LUA_API_LEVEL \([0-9][0-9]*\)).*/\1/p' CMakeLists.txt)
pver=$(sed -n 's/^project(exosphere-guest-agent VERSION \([0-9][0-9.]*\).*/\1/p' CMakeLists.txt)
V=$pver-1
# The runtime .deb of a release carries it (see build-packages.sh); the methods .deb does not.
debnum() { case "$1" in bullseye) echo 11 ;; bookworm) echo 12 ;; trixie) echo 13 ;; esac; }
rtv() { echo "$V~deb$(debnum "$1")"; }

n=0 passed=0 failed=0
ok() { n=$((n + 1)); passed=$((passed + 1)); echo "ok $n - $*"; }
bad() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
check() { # check DESCRIPTION COMMAND...: ok when the command succeeds
    local d=$1; shift
    if "$@" >"$work/check.log" 2>&1; then ok "$d"; else bad "$d"; sed 's/^/#   /' "$work/check.log" | tail -20; fi
}
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

if [ "$(id -u)" -ne 0 ]; then echo "needs root (chroots)"; echo "0 passed, 1 failed"; exit 1; fi
need=()
for t in rpm:rpmbuild rpmlint:rpmlint createrepo-c:createrepo_c lintian:lintian apt-utils:apt-ftparchive \
    debootstrap:debootstrap gnupg:gpg gpgv:gpgv dpkg-dev:dpkg-shlibdeps; do
    command -v "${t#*:}" >/dev/null || need+=("${t%%:*}")
done
if [ "${#need[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/exo-pkgtest.XXXXXX)
scratch=""
cleanup() {
    if [ -n "$scratch" ]; then
        umount "$scratch/proc" 2>/dev/null || umount -l "$scratch/proc" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
dist=$work/dist
repo=$work/repo

# --- build -------------------------------------------------------------------------------
for r in $releases; do
    start=$(date +%s)
    if packaging/build-packages.sh --release "$r" --out "$dist" >"$work/build-$r.log" 2>&1; then
        ok "build-packages.sh --release $r ($(($(date +%s) - start)) s)"
    else
        bad "build-packages.sh --release $r"; tail -20 "$work/build-$r.log" | sed 's/^/#   /'
    fi
    line=$(grep "^glibc: $r: GLIBC_2\.[0-9]*$" "$work/build-$r.log")
    if [ -n "$line" ]; then ok "prints the glibc line: $line"; else bad "no 'glibc: $r: GLIBC_2.x' line"; fi
    echo "# $line"
    for f in "$dist/$r/exosphere-guest-agent_$(rtv "$r")_amd64.deb" "$dist/$r/exosphere-guest-agent-methods_${V}_all.deb"; do
        [ -f "$f" ] || bad "missing $f"
    done
done
[ -f "$dist/$host_release/exosphere-guest-agent_$(rtv "$host_release")_amd64.deb" ] || { bad "no $host_release build: stopping"; finish; }

# Each release's .deb names that release's libraries, from its own dpkg-shlibdeps.
for r in $releases; do
    dep=$(dpkg-deb -f "$dist/$r/exosphere-guest-agent_$(rtv "$r")_amd64.deb" Depends)
    case "$r" in
    bullseye) want='libssl1.1' ;; bookworm) want='libssl3 ' ;; trixie) want='libssl3t64' ;; esac
    case "$dep, " in *"$want"*) ok "$r: Depends names $want ($dep)" ;; *) bad "$r: Depends lacks $want: $dep" ;; esac
done
methods_only_out=$work/dist-methods
if packaging/build-packages.sh --methods-only --version "$pver.1-1" --methods-api-level "$lua_level" \
    --out "$methods_only_out" >"$work/methods-only.log" 2>&1 &&
    [ -f "$methods_only_out/$host_release/exosphere-guest-agent-methods_$pver.1-1_all.deb" ] &&
    [ -f "$methods_only_out/rpm/exosphere-guest-agent-methods-$pver.1-1.noarch.rpm" ] &&
    ! compgen -G "$methods_only_out/rpm/exosphere-guest-agent-$pver*x86_64.rpm" >/dev/null; then
    ok "--methods-only builds the methods packages alone"
else
    bad "--methods-only"; tail -10 "$work/methods-only.log" | sed 's/^/#   /'
fi

# --- lintian -------------------------------------------------------------------------------
for r in $releases; do
    for f in "$dist/$r"/*.deb; do
        lintian --tag-display-limit 0 -I "$f" >"$work/lintian.log" 2>&1
        if grep -q '^E: ' "$work/lintian.log"; then
            bad "lintian: $r/$(basename "$f")"; sed 's/^/#   /' "$work/lintian.log"
        else
            ok "lintian: $r/$(basename "$f"): no errors"
            grep '^[WI]: ' "$work/lintian.log" | sed 's/^/#   /'
        fi
    done
done

# --- repositories ----------------------------------------------------------------------------
if packaging/make-repos.sh --in "$dist" --out "$repo" --generate-key >"$work/repos.log" 2>&1; then
    ok "make-repos.sh --generate-key ($(grep -o 'fingerprint: .*' "$work/repos.log"))"
else
    bad "make-repos.sh"; tail -20 "$work/repos.log" | sed 's/^/#   /'; finish
fi
keyring=$repo/exosphere-guest-agent-archive-keyring.gpg

# --- the .rpm against the .deb ------------------------------------------------------------
rdir=$dist/rpm
ddir=$dist/$host_release
rpm_rt=$rdir/exosphere-guest-agent-$pver-1.x86_64.rpm
rpm_me=$rdir/exosphere-guest-agent-methods-$pver-1.noarch.rpm
deb_rt=$ddir/exosphere-guest-agent_$(rtv "$host_release")_amd64.deb
deb_me=$ddir/exosphere-guest-agent-methods_${V}_all.deb
# Files of a package, directories left out. Family-specific, and allowed to differ:
# - docs: .deb /usr/share/doc/<pkg>/{copyright,changelog.Debian.gz} and lintian overrides;
#   .rpm /usr/share/licenses/<pkg>/copyright (the changelog is in the rpm header)
# - the .rpm's /usr/lib/systemd/system-preset/80-exosphere-guest-agent.preset: Red Hat enables
#   services by preset, Debian in postinst
# (/etc/pam.d/exosphere-guest-agent has the same path and family-specific content.)
family_filter='^/usr/share/doc/|^/usr/share/licenses/|^/usr/share/lintian/overrides/|^/usr/lib/systemd/system-preset/'
deb_files() { dpkg-deb -c "$1" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./|/|' | grep -Ev "$family_filter" | sort; }
rpm_files() { rpm -qp --qf '[%{FILENAMES}\t%{FILEMODES:perms}\n]' "$1" | awk -F'\t' '$2 !~ /^d/ {print $1}' | grep -Ev "$family_filter" | sort; }
deb_dirs() { dpkg-deb -c "$1" | awk '$1 ~ /^d/ {print $6}' | sed 's|^\./|/|; s|/$||' | grep -E '/exosphere-guest-agent' | grep -Ev "$family_filter" | sort; }
rpm_dirs() { rpm -qp --qf '[%{FILENAMES}\t%{FILEMODES:perms}\n]' "$1" | awk -F'\t' '$2 ~ /^d/ {print $1}' | grep -Ev "$family_filter" | sort; }
for pair in "runtime $deb_rt $rpm_rt" "methods $deb_me $rpm_me"; do
    read -r what d r <<<"$pair"
    if diff <(deb_files "$d") <(rpm_files "$r") >"$work/diff.log"; then
        ok "$what: the .rpm and the .deb ship the same files ($(deb_files "$d" | wc -l))"
    else bad "$what: file lists differ"; sed 's/^/#   /' "$work/diff.log"; fi
    if diff <(deb_dirs "$d") <(rpm_dirs "$r") >"$work/diff.log"; then
        ok "$what: and own the same directories of ours"
    else bad "$what: owned directories differ"; sed 's/^/#   /' "$work/diff.log"; fi
done
check "the .rpm's /etc/pam.d file is the Red Hat one, the .deb's the Debian one" \
    sh -c "rpm2cpio '$rpm_rt' | cpio -i --quiet --to-stdout ./etc/pam.d/exosphere-guest-agent | cmp - packaging/pam/exosphere-guest-agent.redhat &&
           dpkg-deb --fsys-tarfile '$deb_rt' | tar -xO ./etc/pam.d/exosphere-guest-agent | cmp - packaging/pam/exosphere-guest-agent.debian"
conf_deb=$(dpkg-deb --ctrl-tarfile "$deb_rt" | tar -xO ./conffiles | sort)
conf_rpm=$(rpm -qp --configfiles "$rpm_rt" | sort)
if [ "$conf_deb" = "$conf_rpm" ]; then ok "the same conffiles / %config(noreplace): $(echo "$conf_deb" | tr '\n' ' ')"
else bad "conffiles differ: deb [$conf_deb] rpm [$conf_rpm]"; fi
check "rpm: %config files are noreplace" sh -c "[ \"\$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' '$rpm_rt' | grep -c '^cn /etc/')\" -eq 2 ]"
prov_deb=$(dpkg-deb -f "$deb_rt" Provides)
check "lua-api provide: .deb '$prov_deb'" test "$prov_deb" = "exosphere-guest-agent-lua-api (= $lua_level)"
check "lua-api provide: .rpm" sh -c "rpm -qp --provides '$rpm_rt' | grep -qx 'exosphere-guest-agent(lua-api) = $lua_level'"
dep_deb=$(dpkg-deb -f "$deb_me" Depends)
check "methods depend on the lua-api: .deb '$dep_deb'" test "$dep_deb" = "exosphere-guest-agent-lua-api (>= $lua_level)"
check "methods depend on the lua-api: .rpm" sh -c "rpm -qp --requires '$rpm_me' | grep -qx 'exosphere-guest-agent(lua-api) >= $lua_level'"
check "architectures: amd64/x86_64 runtime, all/noarch methods" sh -c "
    [ \"\$(dpkg-deb -f '$deb_rt' Architecture)\" = amd64 ] && [ \"\$(dpkg-deb -f '$deb_me' Architecture)\" = all ] &&
    [ \"\$(rpm -qp --qf '%{ARCH}' '$rpm_rt')\" = x86_64 ] && [ \"\$(rpm -qp --qf '%{ARCH}' '$rpm_me')\" = noarch ]"
check "both recommend the methods package" sh -c "dpkg-deb -f '$deb_rt' Recommends | grep -qx exosphere-guest-agent-methods &&
    rpm -qp --recommends '$rpm_rt' | grep -qx exosphere-guest-agent-methods"
# Maintainer scripts: the same actions on both sides (each pattern in the .deb's scripts and
# in the .rpm's scriptlets).
dpkg-deb --ctrl-tarfile "$deb_rt" | tar -xO ./postinst ./prerm ./postrm >"$work/deb-rt.sh"
dpkg-deb --ctrl-tarfile "$deb_me" | tar -xO ./postinst ./postrm >"$work/deb-me.sh"
rpm -qp --scripts "$rpm_rt" >"$work/rpm-rt.sh"
rpm -qp --scripts "$rpm_me" >"$work/rpm-me.sh"
same_action() { # same_action WHAT DEB_PATTERN RPM_PATTERN (runtime scripts)
    if grep -Eq "$2" "$work/deb-rt.sh" && grep -Eq "$3" "$work/rpm-rt.sh"; then ok "runtime scripts, both families: $1"
    else bad "runtime scripts: '$1' missing on a side (deb /$2/, rpm /$3/)"; fi
}
same_action "systemd-sysusers with the shipped file" 'systemd-sysusers /usr/lib/sysusers.d/exosphere-guest-agent.conf' 'systemd-sysusers /usr/lib/sysusers.d/exosphere-guest-agent.conf'
same_action "useradd fallback (home /nonexistent, nologin)" 'useradd --system .*--home-dir /nonexistent' 'useradd --system .*--home-dir /nonexistent'
same_action "records what it created" '>>"\$marker"' '>>"\$marker"'
same_action "systemd-tmpfiles --create" 'systemd-tmpfiles --create /usr/lib/tmpfiles.d/exosphere-guest-agent.conf' 'systemd-tmpfiles --create /usr/lib/tmpfiles.d/exosphere-guest-agent.conf'
same_action "enables the service on installation" 'deb-systemd-helper enable "\$unit"' 'systemctl --no-reload preset exosphere-guest-agent.service'
same_action "starts it on installation" 'action=start' 'systemctl start exosphere-guest-agent.service'
same_action "restarts it on upgrade" 'action=restart' 'systemctl try-restart exosphere-guest-agent.service'
same_action "stops service and socket on removal" 'deb-systemd-invoke stop exosphere-guest-agent.socket exosphere-guest-agent.service' 'systemctl stop exosphere-guest-agent.socket exosphere-guest-agent.service'
same_action "disables them on removal" 'deb-systemd-helper purge \$units' 'systemctl --no-reload disable exosphere-guest-agent.service exosphere-guest-agent.socket'
same_action "only with systemd running" '\[ -d /run/systemd/system \]' '\[ -d /run/systemd/system \]'
check "the socket unit is never enabled by the scripts" sh -c "! grep -E 'enable .*exosphere-guest-agent.socket' '$work/deb-rt.sh' '$work/rpm-rt.sh' &&
    grep -qx 'disable exosphere-guest-agent.socket' packaging/rpm/80-exosphere-guest-agent.preset"
check "methods: reload (never restart) when active, on install/upgrade and removal, both families" sh -c "
    grep -q 'deb-systemd-invoke reload exosphere-guest-agent.service' '$work/deb-me.sh' &&
    grep -q 'systemctl reload exosphere-guest-agent.service' '$work/rpm-me.sh' &&
    [ \"\$(grep -c 'is-active exosphere-guest-agent.service' '$work/deb-me.sh')\" -eq 2 ] &&
    [ \"\$(grep -c 'is-active exosphere-guest-agent.service' '$work/rpm-me.sh')\" -eq 2 ] &&
    grep -q 'posttrans' '$work/rpm-me.sh' && grep -q 'postuninstall' '$work/rpm-me.sh' &&
    ! cat '$work/deb-me.sh' '$work/rpm-me.sh' | grep -v '^ *#' | grep -Eq 'restart|stop|start '"

# --- APT repository ------------------------------------------------------------------------
for r in $releases; do
    d=$repo/apt/dists/$r
    check "apt $r: gpgv InRelease" gpgv --keyring "$keyring" "$d/InRelease"
    check "apt $r: gpgv Release.gpg" gpgv --keyring "$keyring" "$d/Release.gpg" "$d/Release"
    check "apt $r: Release fields" sh -c "grep -qx 'Suite: $r' '$d/Release' && grep -qx 'Codename: $r' '$d/Release' &&
        grep -qx 'Architectures: amd64' '$d/Release' && grep -qx 'Components: main' '$d/Release' && grep -q '^Date: ' '$d/Release'"
    check "apt $r: SHA256 of Packages and Packages.gz match Release" sh -c "
        for f in main/binary-amd64/Packages main/binary-amd64/Packages.gz; do
            want=\$(awk -v f=\"\$f\" '/^SHA256:/{s=1; next} /^[^ ]/{s=0} s && \$3 == f {print \$1 \" \" \$2}' '$d/Release')
            have=\"\$(sha256sum < '$d/'\$f | cut -d' ' -f1) \$(stat -c %s '$d/'\$f)\"
            [ -n \"\$want\" ] && [ \"\$want\" = \"\$have\" ] || exit 1
        done"
    check "apt $r: Packages lists both packages (arch all too)" sh -c "grep -qx 'Package: exosphere-guest-agent' '$d/main/binary-amd64/Packages' &&
        grep -qx 'Package: exosphere-guest-agent-methods' '$d/main/binary-amd64/Packages' && grep -qx 'Architecture: all' '$d/main/binary-amd64/Packages'"
done
# apt itself, unprivileged, in a throwaway directory.
apt_try() { # apt_try REPO_DIR SUITE: apt-get update, then the candidate version of the runtime
    local a=$work/apt-$RANDOM
    mkdir -p "$a/etc/sources.list.d" "$a/etc/preferences.d" "$a/etc/apt.conf.d" "$a/etc/trusted.gpg.d" "$a/state/lists/partial" "$a/cache/archives/partial"
    touch "$a/status"
    echo "deb [signed-by=$keyring] file:$1 $2 main" >"$a/etc/sources.list"
    chown -R _apt "$a" 2>/dev/null || true
    local o=(-o Dir::Etc="$a/etc" -o Dir::State="$a/state" -o Dir::State::status="$a/status" -o Dir::Cache="$a/cache"
        -o Debug::NoLocking=1 -o APT::Architecture=amd64 -o Acquire::Languages=none -o APT::Sandbox::User=root)
    apt-get "${o[@]}" update >"$work/apt.log" 2>&1 || return 1
    grep -Eq '^(W|E): ' "$work/apt.log" && return 1
    apt-cache "${o[@]}" policy exosphere-guest-agent exosphere-guest-agent-methods >>"$work/apt.log" 2>&1
    grep -qx "  Candidate: $(rtv "$2")" "$work/apt.log" && grep -qx "  Candidate: $V" "$work/apt.log"
}
check "runtime versions order by release (a distribution upgrade brings the next release's build)" sh -c \
    "dpkg --compare-versions '$(rtv bullseye)' lt '$(rtv bookworm)' && dpkg --compare-versions '$(rtv bookworm)' lt '$(rtv trixie)' &&
     dpkg --compare-versions '$(rtv trixie)' lt '$pver-2~deb11'"
check "apt-get update accepts the $host_release suite (file:, signed-by) and offers $V" apt_try "$repo/apt" "$host_release"
cp -a "$repo/apt" "$work/apt-tampered"
sed -i 's/^Description: .*/Description: tampered/' "$work/apt-tampered/dists/$host_release/main/binary-amd64/Packages"
rm -f "$work/apt-tampered/dists/$host_release/main/binary-amd64/Packages.gz"
gzip -9nk "$work/apt-tampered/dists/$host_release/main/binary-amd64/Packages"
if apt_try "$work/apt-tampered" "$host_release"; then bad "apt accepted a tampered Packages file"
elif grep -q -i 'hash sum mismatch\|Hashes of expected file' "$work/apt.log"; then ok "apt refuses a tampered Packages file (hash sum mismatch)"
else bad "apt failed on the tampered repository, but not for the hash"; sed 's/^/#   /' "$work/apt.log" | tail -8; fi
cp -a "$repo/apt" "$work/apt-resigned"
if apt_try "$work/apt-resigned" "$host_release" && sed -i 's/^Label: .*/Label: forged/' "$work/apt-resigned/dists/$host_release/InRelease" &&
    ! apt_try "$work/apt-resigned" "$host_release" && grep -q -i 'signature\|NOSPLIT\|not signed\|BADSIG' "$work/apt.log"; then
    ok "apt refuses an InRelease altered after signing"
else bad "apt accepted an altered InRelease"; sed 's/^/#   /' "$work/apt.log" | tail -8; fi

# --- YUM repository ------------------------------------------------------------------------
db=$work/rpmdb
mkdir -p "$db"
check "rpm --import RPM-GPG-KEY into a throwaway rpmdb" rpm --dbpath "$db" --import "$repo/yum/RPM-GPG-KEY-exosphere-guest-agent"
for f in "$repo"/yum/packages/*.rpm; do
    check "rpm -K $(basename "$f"): signed, digests and signature OK" sh -c "rpm --dbpath '$db' -K '$f' | tee /dev/stderr | grep -Eq ': digests signatures OK$'"
done
check "unsigned rpms fail rpm -K against the same rpmdb" sh -c "! rpm --dbpath '$db' -K '$rpm_rt' | grep -q 'signatures OK'"
check "gpg --verify repomd.xml.asc repomd.xml" sh -c "g=\$(mktemp -d '$work/gv.XXXX') && gpg --batch --homedir \"\$g\" --import '$repo/yum/RPM-GPG-KEY-exosphere-guest-agent' 2>/dev/null &&
    gpg --batch --homedir \"\$g\" --verify '$repo/yum/repodata/repomd.xml.asc' '$repo/yum/repodata/repomd.xml'"
check "repodata lists both rpms" sh -c "zcat '$repo'/yum/repodata/*-primary.xml.gz | grep -c '<name>exosphere-guest-agent' | grep -qx 2"

# --- rpmlint (on the signed rpms that the repository serves, key in the throwaway rpmdb) ----
mkdir -p "$work/home"
echo "%_dbpath $db" >"$work/home/.rpmmacros"
for f in "$repo"/yum/packages/*.rpm; do
    HOME=$work/home rpmlint -c packaging/rpm/rpmlint.toml "$f" >"$work/rpmlint.log" 2>&1
    if grep -q ': E: ' "$work/rpmlint.log"; then
        bad "rpmlint: $(basename "$f")"; grep ': [EW]: ' "$work/rpmlint.log" | sed 's/^/#   /'
    else
        ok "rpmlint: $(basename "$f"): no errors"
        grep ': W: ' "$work/rpmlint.log" | sed 's/^/#   /'
    fi
done

# --- dpkg -i / --purge in a scratch bookworm chroot (systemd not running) -------------------
pristine=$cache/pkgtest-bookworm
# The runtime's libraries (dpkg -i does not fetch dependencies).
runtime_libs="libssl3 libuv1 libwslay1"
if [ ! -f "$pristine/.complete" ]; then
    rm -rf "$pristine.tmp"
    if debootstrap --variant=minbase --include="${runtime_libs// /,}" bookworm "$pristine.tmp" "${EXO_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$cache/pkgtest-bookworm.log" 2>&1; then
        touch "$pristine.tmp/.complete"; mv "$pristine.tmp" "$pristine"
    else bad "debootstrap of the scratch bookworm chroot"; tail -5 "$cache/pkgtest-bookworm.log"; finish; fi
fi
# A tree made before a library was added gets it from the archive.
# shellcheck disable=SC2086
if ! chroot "$pristine" dpkg-query -W $runtime_libs >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    chroot "$pristine" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq $runtime_libs >"$work/scratch-deps.log" 2>&1 ||
        { bad "installing $runtime_libs in $pristine"; tail -5 "$work/scratch-deps.log"; finish; }
fi
scratch=$work/scratch
cp -a "$pristine" "$scratch"
mount -t proc proc "$scratch/proc"
cp "$deb_rt" "$deb_me" "$scratch/tmp/"
cp "$methods_only_out/$host_release/exosphere-guest-agent-methods_$pver.1-1_all.deb" "$scratch/tmp/"
in_scratch() { chroot "$scratch" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c "$1"; }
ours() { # every path of ours left in the chroot
    in_scratch 'ls -d /usr/bin/exosphere-guest-agent /usr/lib/systemd/system/exosphere-guest-agent.* /usr/lib/sysusers.d/exosphere-guest-agent.conf \
        /usr/lib/tmpfiles.d/exosphere-guest-agent.conf /usr/share/exosphere-guest-agent /usr/share/doc/exosphere-guest-agent* \
        /etc/exosphere-guest-agent /etc/pam.d/exosphere-guest-agent /var/lib/exosphere-guest-agent /run/exosphere-guest-agent \
        /etc/systemd/system/*/exosphere-guest-agent.* /var/lib/systemd/deb-systemd-helper-*/*exosphere* 2>/dev/null' || true
}
check "dpkg -i of both .debs in a chroot without systemd" in_scratch "dpkg -i /tmp/$(basename "$deb_rt") /tmp/$(basename "$deb_me")"
check "the user exists: system uid, own group, home /nonexistent, nologin" in_scratch '
    e=$(getent passwd exosphere-guest-agent) && g=$(id -gn exosphere-guest-agent) && [ "$g" = exosphere-guest-agent ] &&
    uid=$(id -u exosphere-guest-agent) && [ "$uid" -lt 1000 ] && [ "${e#*:*:*:*:*:}" = "/nonexistent:/usr/sbin/nologin" ]'
check "/var/lib/exosphere-guest-agent is 0700 root, methods.d 0755" in_scratch '
    [ "$(stat -c %a:%U /var/lib/exosphere-guest-agent)" = 700:root ] && [ "$(stat -c %a /etc/exosphere-guest-agent/methods.d)" = 755 ]'
check "the service is enabled (deb-systemd-helper), the socket is not" in_scratch '
    [ -L /etc/systemd/system/multi-user.target.wants/exosphere-guest-agent.service ] && [ ! -e /etc/systemd/system/sockets.target.wants/exosphere-guest-agent.socket ]'
check "the installed binary runs in the chroot" in_scratch 'exosphere-guest-agent version'
check "the installed agent checks the installed methods" in_scratch 'exosphere-guest-agent check /usr/share/exosphere-guest-agent/methods/*.lua'
check "dpkg -i of the runtime again (upgrade path) runs cleanly" in_scratch "dpkg -i /tmp/$(basename "$deb_rt")"
check "dpkg -i of methods $pver.1-1 (upgrade) runs cleanly" in_scratch "dpkg -i /tmp/exosphere-guest-agent-methods_$pver.1-1_all.deb && dpkg-query -W -f='\${Version}' exosphere-guest-agent-methods | grep -qx $pver.1-1"
check "dpkg --remove of both runs cleanly; state and user stay until purge" in_scratch '
    dpkg --remove exosphere-guest-agent-methods exosphere-guest-agent && getent passwd exosphere-guest-agent >/dev/null && [ -d /var/lib/exosphere-guest-agent ] &&
    [ ! -e /etc/systemd/system/multi-user.target.wants/exosphere-guest-agent.service ]'
check "dpkg --purge runs cleanly" in_scratch 'dpkg --purge exosphere-guest-agent-methods exosphere-guest-agent'
check "purge removed the user and group it created" in_scratch '! getent passwd exosphere-guest-agent && ! getent group exosphere-guest-agent'
left=$(ours)
if [ -z "$left" ]; then ok "purge left no file of ours"; else bad "purge left: $(echo "$left" | tr '\n' ' ')"; fi
# Again, with a user made by hand before and an operator method: purge keeps both.
in_scratch 'useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin exosphere-guest-agent'
check "dpkg -i with the user already there" in_scratch "dpkg -i /tmp/$(basename "$deb_rt") /tmp/$(basename "$deb_me") && echo 'return {}' >/etc/exosphere-guest-agent/methods.d/mine.lua"
check "dpkg --purge keeps a user it did not create and the operator's method" in_scratch '
    dpkg --purge exosphere-guest-agent-methods exosphere-guest-agent && getent passwd exosphere-guest-agent >/dev/null &&
    [ -f /etc/exosphere-guest-agent/methods.d/mine.lua ] && [ ! -e /var/lib/exosphere-guest-agent ] && [ ! -e /etc/exosphere-guest-agent/agent.conf ]'

finish
