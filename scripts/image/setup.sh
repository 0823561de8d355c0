#!/usr/bin/env bash
# Set up the container tier of `make test-image`: podman (Debian packages) and the local stand-in for the
# Dockerfile's base image, python:3.11-slim-bookworm, which no registry reachable here serves. Recipe and the
# measurements behind each choice: ../shared/PLATFORMS.md, section "Containers".
#
#   scripts/image/setup.sh          install what is missing, build the base when missing; idempotent
#   scripts/image/setup.sh --check  exit 0 when podman and the base image are ready, 1 when not (changes nothing)
#
# Steps (each skipped when already done):
# 1. apt-get install podman runc and friends, mmdebstrap (needs root);
# 2. .cache/image/<key>/base.tar: Debian bookworm minbase with python3, python3-venv, python3-pip and
#    ca-certificates, from this host's own apt mirror (scripts/debian_sources.py); <key> hashes this script, so a
#    changed recipe builds a new tarball (about 45 s here);
# 3. `podman import` of that tarball as localhost/memmon-base/debian-python:bookworm, then scripts/image/
#    base.Containerfile on top of it tagged docker.io/library/python:3.11-slim-bookworm, the Dockerfile's FROM.
#    The tag carries a label with <key>, so a base of an older recipe is rebuilt.
#
# podman runs with CONTAINERS_CONF=scripts/image/containers.conf (runc; ulimits this machine allows).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CONTAINERS_CONF="$here/containers.conf"
packages="podman runc catatonit slirp4netns fuse-overlayfs uidmap containernetworking-plugins iptables mmdebstrap"
include=python3,python3-venv,python3-pip,ca-certificates
base_tag=docker.io/library/python:3.11-slim-bookworm
raw_tag=localhost/memmon-base/debian-python:bookworm
key="$(cat "${BASH_SOURCE[0]}" "$here/base.Containerfile" | sha256sum | cut -c1-16)"
cache="$repo/.cache/image"
tarball="$cache/$key/base.tar"

say() { echo "image-setup: $*" >&2; }

missing_packages() {
    local p missing=""
    for p in $packages; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    echo "$missing"
}

base_is_current() {
    [ "$(podman image inspect --format '{{index .Labels "io.memmon.base-recipe"}}' "$base_tag" 2>/dev/null)" = "$key" ]
}

if [ "${1:-}" = --check ]; then
    [ -z "$(missing_packages)" ] && base_is_current
    exit $?
elif [ "$#" -gt 0 ]; then
    case "$1" in
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) say "unknown argument: $1 (see --help)"; exit 2 ;;
    esac
fi

missing="$(missing_packages)"
if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null ||
        { say "podman is missing ($missing) and only root can install it with apt-get"; exit 1; }
    say "installing$missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if base_is_current; then
    say "base image $base_tag is current (recipe $key)"
    exit 0
fi

if [ ! -f "$tarball" ]; then
    sources="$("$repo/scripts/debian_sources.py" bookworm)"
    [ -n "$sources" ] || { say "no Debian bookworm source in /etc/apt (needed for mmdebstrap)"; exit 1; }
    mkdir -p "$cache"
    work="$(mktemp -d "$cache/build.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    printf '%s\n' "$sources" >"$work/sources.list"
    say "building the base tarball with mmdebstrap (about a minute; log: $work/build.log)"
    start=$SECONDS
    mmdebstrap --variant=minbase --mode=root --include="$include" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        bookworm "$work/base.tar" "$work/sources.list" >"$work/build.log" 2>&1 ||
        { tail -n 40 "$work/build.log" >&2; say "mmdebstrap failed"; exit 1; }
    mkdir -p "$cache/$key"
    mv "$work/base.tar" "$tarball"
    rm -rf "$work"
    say "base tarball built in $((SECONDS - start)) s: $tarball"
    # Tarballs of older recipes are of no further use (about 150 MB each).
    for old in "$cache"/*; do
        name="$(basename "$old")"
        if [ -d "$old" ] && [ "$name" != "$key" ] && [[ "$name" =~ ^[0-9a-f]{16}$ ]]; then rm -rf "$old"; fi
    done
fi

say "importing $tarball as $raw_tag"
podman import --quiet "$tarball" "$raw_tag" >/dev/null
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir "$context/certs"
# The host's extra CA certificates (update-ca-certificates' input), when it has any.
find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' -exec cp {} "$context/certs/" \; 2>/dev/null || true
podman build --quiet --pull=never --network host --label "io.memmon.base-recipe=$key" \
    -f "$here/base.Containerfile" -t "$base_tag" "$context" >/dev/null
say "base image $base_tag ready (Debian bookworm's python3 $(podman run --rm "$base_tag" python3 -c \
    'import platform; print(platform.python_version())'))"
