#!/usr/bin/env bash
# Build the verifier base image locally: a minimal Debian bookworm with python3 and
# python3-jsonschema, made with debootstrap and loaded with `docker import`. The same tree is kept
# as the local sandbox's root filesystem ($RLSD_CACHE_DIR/verifier-base/<tag>/rootfs, default
# ~/.cache/rlsd), so both backends run the same interpreter and packages.
#
#   infra/images/build-base.sh [--force] [--tag TAG] [--mirror URL] [--rootfs-only]
#
# Idempotent: does nothing when the tag already exists (unless --force). --rootfs-only builds the
# local sandbox's tree alone (no Docker engine needed). Needs root (debootstrap) and the
# `debootstrap` package. No registry is contacted; packages come from the Debian mirror apt
# already uses on this machine (override with --mirror or $RLSD_DEBIAN_MIRROR).
# Production pulls a pinned registry image instead: see infra/images/README.md.
set -euo pipefail

TAG="${RLSD_VERIFIER_BASE:-rlsd/verifier-base:bookworm-1}"
SUITE=bookworm
PACKAGES=python3,python3-jsonschema
FORCE=0
ROOTFS_ONLY=0
MIRROR="${RLSD_DEBIAN_MIRROR:-}"

while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        --tag) TAG="$2"; shift ;;
        --mirror) MIRROR="$2"; shift ;;
        --rootfs-only) ROOTFS_ONLY=1 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "build-base.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

CACHE="${RLSD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rlsd}"
HOME_DIR="$CACHE/verifier-base/$(printf '%s' "$TAG" | sed 's/[^A-Za-z0-9_.-]/_/g')"

if [ "$ROOTFS_ONLY" = 1 ]; then
    if [ "$FORCE" = 0 ] && [ -f "$HOME_DIR/meta.json" ] && [ -e "$HOME_DIR/rootfs/usr/bin/python3" ]; then
        echo "build-base.sh: the root filesystem of $TAG already exists in $HOME_DIR; --force rebuilds"
        exit 0
    fi
else
    if ! docker info >/dev/null 2>&1; then
        echo "build-base.sh: no Docker engine answers (start dockerd first: infra/ci/start-services.sh; or --rootfs-only)" >&2
        exit 1
    fi
    if [ "$FORCE" = 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
        echo "build-base.sh: $TAG already exists ($(docker image inspect -f '{{.Id}}' "$TAG")); --force rebuilds"
        exit 0
    fi
fi

if [ -z "$MIRROR" ]; then
    # The first Debian main-archive URI apt is configured with (deb822 .sources or one-line lists).
    MIRROR="$(
        { cat /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } | awk '/^URIs:/ {print $2}'
        { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
            awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }'
    )"
    MIRROR="$(printf '%s\n' "$MIRROR" | grep -v -e security -e '^$' | grep -i debian | head -n 1 || true)"
    MIRROR="${MIRROR:-http://deb.debian.org/debian}"
fi

command -v debootstrap >/dev/null || { echo "build-base.sh: debootstrap is not installed (apt-get install -y debootstrap)" >&2; exit 1; }

WORK="$(mktemp -d /var/tmp/rlsd-base.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
ROOTFS="$WORK/rootfs"

echo "build-base.sh: debootstrap --variant=minbase $SUITE from $MIRROR (about 1.5 minutes)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 40 "$WORK/debootstrap.log" >&2
    echo "build-base.sh: debootstrap failed" >&2
    exit 1
}

# Smaller and reproducible-ish: no apt lists, caches, logs or docs.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/var/log/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
    "$ROOTFS"/usr/share/locale/* "$ROOTFS"/tmp/* 2>/dev/null || true
chroot "$ROOTFS" /usr/bin/python3 -c 'import jsonschema, json, sqlite3' || {
    echo "build-base.sh: the image has no working python3 with jsonschema and sqlite3" >&2
    exit 1
}

mkdir -p "$ROOTFS/verifier"  # where a verifier's files go, in the image and in the local sandbox
IMAGE_ID=null
if [ "$ROOTFS_ONLY" = 0 ]; then
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    --change 'WORKDIR /tmp' \
    --change 'CMD ["/usr/bin/python3"]' \
    --message "rlsd verifier base: debootstrap minbase $SUITE + $PACKAGES" \
    - "$TAG" >/dev/null
IMAGE_ID="\"$(docker image inspect -f '{{.Id}}' "$TAG")\""
echo "build-base.sh: built $TAG (${IMAGE_ID//\"/})"
fi

# Keep the tree for the local sandbox (replacing an older one), with where it came from.
mkdir -p "$HOME_DIR"
rm -rf "$HOME_DIR/rootfs" "$HOME_DIR/meta.json"
mv "$ROOTFS" "$HOME_DIR/rootfs"
cat >"$HOME_DIR/meta.json" <<META
{"tag": "$TAG", "image_id": $IMAGE_ID, "source": "debootstrap $SUITE ($MIRROR)",
 "env": {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
 "created": "$(date -u +%Y-%m-%dT%H:%M:%S+00:00)"}
META
echo "build-base.sh: kept the root filesystem for the local sandbox in $HOME_DIR/rootfs"
