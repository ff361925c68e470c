#!/usr/bin/env bash
# Makes the signed APT and YUM repositories of the Exosphere Guest Agent from the output of
# build-packages.sh, as static files to serve over HTTPS (docs/packaging.md, "Repositories";
# docs/installing.md for the client side).
#
#   make-repos.sh --in DIST --out REPO (--gpg-home DIR --key-id ID | --generate-key)
#                 [--valid-days N] [--origin NAME]
#
# REPO/apt/      pool/<release>/..., dists/<release>/{Release,InRelease,Release.gpg},
#                dists/<release>/main/binary-amd64/Packages{,.gz}   (one suite per DIST/<release>)
# REPO/yum/      signed rpms, repodata/ (createrepo_c), repodata/repomd.xml.asc,
#                RPM-GPG-KEY-exosphere-guest-agent
# REPO/exosphere-guest-agent-archive-keyring.gpg (binary, for signed-by) and .asc (armored)
# REPO/apt and REPO/yum are made anew on each run.
set -euo pipefail

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}
die() { echo "make-repos.sh: $*" >&2; exit 2; }

in="" out="" gpg_home="" key_id="" generate=0 valid_days="" origin="Exosphere"
while [ $# -gt 0 ]; do
    case "$1" in
    --in) in=${2:?--in needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --gpg-home) gpg_home=${2:?--gpg-home needs a value}; shift 2 ;;
    --key-id) key_id=${2:?--key-id needs a value}; shift 2 ;;
    --generate-key) generate=1; shift ;;
    --valid-days) valid_days=${2:?--valid-days needs a value}; shift 2 ;;
    --origin) origin=${2:?--origin needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
    esac
done
if [ -z "$in" ] || [ -z "$out" ]; then usage >&2; die "--in and --out are required"; fi
[ -d "$in" ] || die "no directory '$in'"
case "$valid_days" in '' | [1-9] | [1-9][0-9] | [1-9][0-9][0-9]) ;; *) die "--valid-days takes 1 to 999" ;; esac
for tool in gpg apt-ftparchive createrepo_c rpmsign; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install gnupg apt-utils createrepo-c rpm)"
done
in=$(cd "$in" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
umask 022

tmp=$(mktemp -d /tmp/exo-repo.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# --- the key -----------------------------------------------------------------------------
if [ "$generate" -eq 1 ]; then
    [ -z "$gpg_home$key_id" ] || die "--generate-key excludes --gpg-home and --key-id"
    export GNUPGHOME=$tmp/gnupg
    mkdir -m 0700 "$GNUPGHOME"
    echo "trust-model always" >"$GNUPGHOME/gpg.conf"
    # RSA, not EdDSA: rpm 4.14 of EL8 verifies RSA signatures only.
    gpg --batch --quiet --passphrase '' \
        --quick-gen-key "Exosphere Guest Agent test archive key (throwaway) <exosphere-test@invalid>" \
        rsa3072 sign 1y 2>/dev/null
    key_id=$(gpg --batch --no-auto-check-trustdb --with-colons --list-secret-keys | awk -F: '$1 == "fpr" {print $10; exit}')
    echo "generated a throwaway signing key: $key_id"
else
    if [ -z "$gpg_home" ] || [ -z "$key_id" ]; then die "give --gpg-home DIR --key-id ID, or --generate-key"; fi
    [ -d "$gpg_home" ] || die "no GnuPG home '$gpg_home'"
    export GNUPGHOME=$gpg_home
    gpg --batch --no-auto-check-trustdb --list-secret-keys "$key_id" >/dev/null 2>&1 || die "no secret key '$key_id' in $gpg_home"
    key_id=$(gpg --batch --no-auto-check-trustdb --with-colons --list-secret-keys "$key_id" | awk -F: '$1 == "fpr" {print $10; exit}')
fi
echo "signing key fingerprint: $key_id"
sign=(gpg --batch --yes --quiet --no-auto-check-trustdb --local-user "$key_id" --digest-algo SHA512)
gpg --batch --no-auto-check-trustdb --export "$key_id" >"$out/exosphere-guest-agent-archive-keyring.gpg"
gpg --batch --no-auto-check-trustdb --armor --export "$key_id" >"$out/exosphere-guest-agent-archive-keyring.asc"

# --- APT -----------------------------------------------------------------------------------
rm -rf "$out/apt"
mkdir -p "$out/apt"
releases=()
for d in "$in"/*/; do
    r=$(basename "$d")
    [ "$r" != rpm ] || continue
    compgen -G "$d*.deb" >/dev/null || continue
    releases+=("$r")
done
[ "${#releases[@]}" -gt 0 ] || echo "make-repos.sh: no DIST/<release>/*.deb: the APT repository has no suite" >&2
for r in "${releases[@]}"; do
    # One pool per release: each release's runtime is a different build of the same version.
    pool=$out/apt/pool/$r/main/e/exosphere-guest-agent
    mkdir -p "$pool" "$out/apt/dists/$r/main/binary-amd64"
    cp "$in/$r"/*.deb "$pool/"
    (cd "$out/apt" && apt-ftparchive --arch amd64 packages "pool/$r") \
        >"$out/apt/dists/$r/main/binary-amd64/Packages"
    gzip -9nk "$out/apt/dists/$r/main/binary-amd64/Packages"
    (cd "$out/apt/dists/$r" && apt-ftparchive \
        -o APT::FTPArchive::Release::Origin="$origin" \
        -o APT::FTPArchive::Release::Label="Exosphere Guest Agent" \
        -o APT::FTPArchive::Release::Suite="$r" \
        -o APT::FTPArchive::Release::Codename="$r" \
        -o APT::FTPArchive::Release::Architectures=amd64 \
        -o APT::FTPArchive::Release::Components=main \
        -o APT::FTPArchive::Release::Description="Exosphere Guest Agent for Debian $r" \
        release .) >"$tmp/Release"
    if [ -n "$valid_days" ]; then
        until=$(date -u -R -d "+$valid_days days")
        sed "/^Date: /a Valid-Until: $until" "$tmp/Release" >"$out/apt/dists/$r/Release"
    else
        cp "$tmp/Release" "$out/apt/dists/$r/Release"
    fi
    "${sign[@]}" --clearsign -o "$out/apt/dists/$r/InRelease" "$out/apt/dists/$r/Release"
    "${sign[@]}" --detach-sign -o "$out/apt/dists/$r/Release.gpg" "$out/apt/dists/$r/Release"
    echo "apt: $r: $(grep -c '^Package: ' "$out/apt/dists/$r/main/binary-amd64/Packages") packages"
done

# --- YUM -----------------------------------------------------------------------------------
rm -rf "$out/yum"
mkdir -p "$out/yum/packages"
gpg --batch --no-auto-check-trustdb --armor --export "$key_id" >"$out/yum/RPM-GPG-KEY-exosphere-guest-agent"
if compgen -G "$in/rpm/*.rpm" >/dev/null; then
    cp "$in"/rpm/*.rpm "$out/yum/packages/"
    rpmsign --define "_gpg_name $key_id" --define "_gpg_path $GNUPGHOME" --define "__gpg $(command -v gpg)" \
        --define "_gpg_digest_algo sha256" --addsign "$out"/yum/packages/*.rpm >"$tmp/rpmsign.log" 2>&1 ||
        { cat "$tmp/rpmsign.log" >&2; die "rpmsign failed"; }
    echo "yum: $(find "$out/yum/packages" -name '*.rpm' | wc -l) packages signed"
else
    echo "make-repos.sh: no DIST/rpm/*.rpm: the YUM repository is empty" >&2
fi
createrepo_c --quiet --no-database "$out/yum" >/dev/null
"${sign[@]}" --armor --detach-sign -o "$out/yum/repodata/repomd.xml.asc" "$out/yum/repodata/repomd.xml"
echo "repositories in $out"
