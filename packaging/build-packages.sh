#!/usr/bin/env bash
# Builds the two packages of the Exosphere Guest Agent (docs/packaging.md):
#   OUT/<release>/exosphere-guest-agent_<V>_amd64.deb, exosphere-guest-agent-methods_<V>_all.deb
#   OUT/rpm/exosphere-guest-agent-<ver>-<rel>.x86_64.rpm, ...-methods-<ver>-<rel>.noarch.rpm
#     (host release only: the rpm links Debian's libraries and is for structure checks)
# The runtime is compiled for the release: on this machine for its own release, otherwise in
# a debootstrap chroot cached in ${EXO_ROOTFS_CACHE:-/var/cache/exosphere-guest-agent-tests}.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: packaging/build-packages.sh [--release bullseye|bookworm|trixie] [--version V]
                                   [--methods-dir DIR] [--methods-api-level N]
                                   [--methods-only] [--out DIR]
  --release R          Debian release to build for (default: this machine's)
  --version V          package version, Debian style UPSTREAM-REVISION (default: the
                       project version from CMakeLists.txt with revision 1); the rpm gets
                       Version UPSTREAM, Release REVISION. The runtime .deb gets V~debNN
                       (NN: the release's Debian version), the methods .deb V
  --methods-dir DIR    package the methods in DIR instead of the repository's methods/
  --methods-api-level N  Lua API level the methods need (default: EXO_LUA_API_LEVEL)
  --methods-only       build only the methods package (no compiler needed)
  --out DIR            output directory (default: dist/)
USAGE
}

die() { echo "build-packages.sh: $*" >&2; exit 2; }

top=$(cd "$(dirname "$0")/.." && pwd)
here=$top/packaging
cache=${EXO_ROOTFS_CACHE:-/var/cache/exosphere-guest-agent-tests}
mirror=${EXO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
maintainer=${EXO_MAINTAINER:-Exosphere Guest Agent maintainers <maintainers@users.noreply.r-seed-2ab68f48.example>}
build_pkgs=build-essential,cmake,pkg-config,liblua5.4-dev,libuv1-dev,libssl-dev,libpam0g-dev,libwslay-dev,libsystemd-dev,dpkg-dev

host_release=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
release=$host_release
version=""
methods_dir=$top/methods
methods_level=""
methods_only=0
out=$top/dist

while [ $# -gt 0 ]; do
    case "$1" in
    --release) release=${2:?--release needs a value}; shift 2 ;;
    --version) version=${2:?--version needs a value}; shift 2 ;;
    --methods-dir) methods_dir=${2:?--methods-dir needs a value}; shift 2 ;;
    --methods-api-level) methods_level=${2:?--methods-api-level needs a value}; shift 2 ;;
    --methods-only) methods_only=1; shift ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

case "$release" in
bullseye | bookworm | trixie) ;;
*) die "release '$release' is not one of bullseye, bookworm, trixie" ;;
esac
[ -d "$methods_dir" ] || die "no methods directory '$methods_dir'"
methods_dir=$(cd "$methods_dir" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

project_version=$(sed -n 's/^project(exosphere-guest-agent VERSION \([0-9][0-9.]*\).*/\1/p' "$top/CMakeLists.txt")
lua_level=$(sed -n 's/^set(EXO_LUA_API_LEVEL \([0-9][0-9]*\)).*/\1/p' "$top/CMakeLists.txt")
[ -n "$project_version" ] || die "no project(... VERSION ...) in CMakeLists.txt"
[ -n "$lua_level" ] || die "no set(EXO_LUA_API_LEVEL N) in CMakeLists.txt"
methods_level=${methods_level:-$lua_level}
case "$methods_level" in '' | *[!0-9]*) die "--methods-api-level must be an integer" ;; esac
version=${version:-$project_version-1}
case "$version" in
*-*) upstream=${version%-*}; revision=${version##*-} ;;
*) die "version '$version' needs a Debian revision, like $version-1" ;;
esac
case "$upstream$revision" in *[!A-Za-z0-9.+~]*) die "version '$version' has characters rpm does not take" ;; esac

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)}
git_describe=$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)
umask 022

work=$(mktemp -d /tmp/exo-pkg.XXXXXX)
mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "build-packages.sh: $*" >&2; }

# --- the build environment -------------------------------------------------------------
# The chroot for a release other than this machine's: debootstrap once, then reused while
# the package list is the one it was made with (its stamp holds the list: a new build
# dependency makes a new chroot).
ensure_chroot() {
    local root=$1 rel=$2
    [ "$(cat "$root/.complete" 2>/dev/null)" = "packages: $build_pkgs" ] && return 0
    [ "$(id -u)" -eq 0 ] || die "building for $rel needs root (debootstrap, chroot)"
    command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
    log "creating the $rel build chroot $root (cached afterwards; a few minutes)"
    rm -rf "$root.tmp"
    mkdir -p "$cache"
    if ! debootstrap --variant=minbase --include="$build_pkgs" "$rel" "$root.tmp" "$mirror" \
        >"$root.log" 2>&1; then
        tail -20 "$root.log" >&2
        die "debootstrap $rel failed (log: $root.log)"
    fi
    echo "packages: $build_pkgs" >"$root.tmp/.complete"
    rm -rf "$root"
    mv "$root.tmp" "$root"
}

bind() { # bind SRC DEST [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounts+=("$2")
    if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

# Runs a command in the build environment of $release (the host, or its chroot).
in_env() {
    if [ "$release" = "$host_release" ]; then
        sh -c "$1"
    else
        chroot "$root" sh -c "$1"
    fi
}

build_runtime() {
    local cmake_opts="-DCMAKE_BUILD_TYPE=Release -DEXO_TESTS=OFF -DEXO_WERROR=OFF"
    if [ "$release" = "$host_release" ]; then
        src=$top
        # In the checkout (ignored by git): a build directory belongs to one source tree.
        bdir=$top/build-pkg-$release
        mkdir -p "$bdir"
    else
        root=$cache/build-$release
        ensure_chroot "$root" "$release"
        # Sources read-only; llhttp's C sources lent from this machine's node-llhttp, so that
        # every release's binary carries the same HTTP parser (bullseye has no node-llhttp).
        [ -f /usr/share/llhttp/llhttp.c ] || die "node-llhttp is missing on this machine (scripts/deps.sh)"
        bind "$top" "$root/src" ro
        bind /usr/share/llhttp "$root/usr/share/llhttp" ro
        bind /usr/share/include/llhttp "$root/usr/share/include/llhttp" ro
        mount -t proc proc "$root/proc"
        mounts+=("$root/proc")
        src=/src
        # One build directory per checkout: /src is whichever tree is bound there, and make's
        # timestamps must never compare one tree's objects with another's sources.
        bdir=/build/exosphere-guest-agent-$(printf '%s' "$top" | md5sum | cut -c1-12)
    fi
    log "compiling the runtime for $release"
    if ! in_env "mkdir -p $bdir && cmake -S $src -B $bdir $cmake_opts >$bdir/cmake.log 2>&1 &&
                 cmake --build $bdir -j$(nproc) >>$bdir/cmake.log 2>&1"; then
        local hostb=$bdir
        [ "$release" = "$host_release" ] || hostb=$root$bdir
        tail -30 "$hostb/cmake.log" >&2
        die "the $release build failed (log: $hostb/cmake.log)"
    fi
    if [ "$release" = "$host_release" ]; then binary=$bdir/exosphere-guest-agent; else binary=$root$bdir/exosphere-guest-agent; fi
    # The library packages of this release, from its own shlibs files.
    shlibs=$(in_env "d=\$(mktemp -d) && mkdir -p \$d/debian && printf 'Source: exosphere-guest-agent\n\nPackage: exosphere-guest-agent\nArchitecture: any\n' >\$d/debian/control &&
                     cp $bdir/exosphere-guest-agent \$d/bin && cd \$d && dpkg-shlibdeps -O -e bin 2>/dev/null; rc=\$?; rm -rf \$d; exit \$rc") ||
        die "dpkg-shlibdeps failed for the $release binary"
    shlibs=${shlibs#shlibs:Depends=}
    [ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependencies"
    glibc=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -1)
    echo "glibc: $release: $glibc"
}

# --- .deb --------------------------------------------------------------------------------
fill() { # fill TEMPLATE KEY=VALUE...: @KEY@ replaced
    local text kv
    text=$(cat "$1")
    shift
    for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
    printf '%s\n' "$text"
}

deb_docs() { # deb_docs ROOT PACKAGE
    local d=$1/usr/share/doc/$2
    install -d "$d"
    install -m 0644 "$here/debian/copyright" "$d/copyright"
    install -D -m 0644 "$here/debian/lintian-overrides/$2" "$1/usr/share/lintian/overrides/$2"
    fill "$here/debian/changelog.in" PACKAGE="$2" VERSION="$version" DISTRIBUTION="$release" \
        GIT_DESCRIBE="$git_describe" RELEASE="$release" MAINTAINER="$maintainer" \
        DATE="$(date -u -R -d "@$SOURCE_DATE_EPOCH")" | gzip -9n >"$d/changelog.Debian.gz"
    chmod 0644 "$d/changelog.Debian.gz"
}

deb_pack() { # deb_pack ROOT PACKAGE ARCH OUTFILE [KEY=VALUE...] (control from PACKAGE.control.in)
    local rootdir=$1 pkg=$2 arch=$3 outfile=$4 s
    shift 4
    install -d -m 0755 "$rootdir/DEBIAN"
    for s in preinst postinst prerm postrm; do
        if [ -f "$here/debian/$pkg.$s" ]; then install -m 0755 "$here/debian/$pkg.$s" "$rootdir/DEBIAN/$s"; fi
    done
    (cd "$rootdir" && if [ -d etc ]; then find etc -type f | sed 's|^|/|' | LC_ALL=C sort; fi) >"$rootdir/DEBIAN/conffiles"
    [ -s "$rootdir/DEBIAN/conffiles" ] || rm -f "$rootdir/DEBIAN/conffiles"
    (cd "$rootdir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
        xargs -0r md5sum) >"$rootdir/DEBIAN/md5sums"
    local size
    size=$(du -sk --apparent-size --exclude=DEBIAN "$rootdir" | cut -f1)
    fill "$here/debian/$pkg.control.in" VERSION="$version" ARCH="$arch" MAINTAINER="$maintainer" \
        INSTALLED_SIZE="$size" "$@" >"$rootdir/DEBIAN/control"
    chmod 0644 "$rootdir/DEBIAN/control" "$rootdir/DEBIAN/md5sums"
    find "$rootdir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    dpkg-deb --root-owner-group -Zxz --build "$rootdir" "$outfile" >/dev/null
    echo "$outfile"
}

build_debs() {
    local dest=$out/$release
    mkdir -p "$dest"
    if [ "$methods_only" -eq 0 ]; then
        # Each release's runtime is a different build of the same source: its version carries
        # the release (0.1.0-1~deb11 < 0.1.0-1~deb12 < 0.1.0-1~deb13), so that upgrading the
        # distribution replaces the runtime with the next release's build. The methods are
        # one architecture-independent package for every release and keep the plain version.
        local plain=$version debnum
        case "$release" in
        bullseye) debnum=11 ;; bookworm) debnum=12 ;; trixie) debnum=13 ;;
        *) die "no Debian version number known for $release" ;;
        esac
        version=$plain~deb$debnum
        local r=$work/deb-runtime
        "$here/stage-files.sh" runtime debian "$binary" "$r"
        deb_docs "$r" exosphere-guest-agent
        deb_pack "$r" exosphere-guest-agent amd64 "$dest/exosphere-guest-agent_${version}_amd64.deb" \
            SHLIBS_DEPENDS="$shlibs" LUA_API_LEVEL="$lua_level"
        version=$plain
    fi
    local m=$work/deb-methods
    "$here/stage-files.sh" methods "$methods_dir" "$top/api-versions" "$m"
    deb_docs "$m" exosphere-guest-agent-methods
    deb_pack "$m" exosphere-guest-agent-methods all "$dest/exosphere-guest-agent-methods_${version}_all.deb" \
        LUA_API_LEVEL="$methods_level"
}

# --- .rpm --------------------------------------------------------------------------------
build_rpms() {
    command -v rpmbuild >/dev/null || die "rpmbuild is missing (apt-get install rpm)"
    local t=$work/rpmbuild
    mkdir -p "$t" "$out/rpm"
    local args=(--define "_topdir $t" --define "exo_prebuilt 1" --define "exo_srcdir $top"
        --define "exo_version $upstream" --define "exo_release $revision"
        --define "exo_lua_api_level $lua_level" --define "exo_methods_api_level $methods_level"
        --define "exo_methods_dir $methods_dir" --define "_buildhost reproducible"
        --define "use_source_date_epoch_as_buildtime 1" --define "clamp_mtime_to_source_date_epoch 1")
    if [ "$methods_only" -eq 1 ]; then
        args+=(--define "exo_methods_only 1")
    else
        args+=(--define "exo_binary $binary")
    fi
    if ! rpmbuild -bb --nodeps "${args[@]}" "$here/rpm/exosphere-guest-agent.spec" >"$work/rpmbuild.log" 2>&1; then
        tail -30 "$work/rpmbuild.log" >&2
        die "rpmbuild failed"
    fi
    local f
    for f in "$t"/RPMS/*/*.rpm; do
        cp "$f" "$out/rpm/"
        echo "$out/rpm/${f##*/}"
    done
}

if [ "$methods_only" -eq 0 ]; then
    command -v flock >/dev/null || die "flock is missing (util-linux)"
    mkdir -p "$cache"
    # One build per release at a time (the chroot's mounts and build directory are shared).
    exec 9>"$cache/pkg-build-$release.lock"
    flock 9
    build_runtime
fi
build_debs
if [ "$release" = "$host_release" ]; then build_rpms; fi
