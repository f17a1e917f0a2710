#!/usr/bin/env bash
# CI services for the verifier sandbox, idempotent (safe to run on every CI job and by hand):
#   1. apt-get install docker.io bubblewrap debootstrap python3-jsonschema (only what is missing);
#   2. start dockerd (--iptables=false --bridge=none --storage-driver=overlay2, logging to
#      $RLSD_DOCKERD_LOG) unless an engine already answers, and wait up to 60 s for `docker info`;
#   3. build the verifier base image (infra/images/build-base.sh; skipped when it exists).
# Needs root. The containers get network mode "none" only (no bridge), which is all they need.
set -euo pipefail
cd "$(dirname "$0")/../.."

LOG="${RLSD_DOCKERD_LOG:-/var/log/rlsd-dockerd.log}"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "start-services.sh: needs root (or sudo)" >&2; exit 1; }
    SUDO="sudo"
fi

missing=()
for pkg in docker.io bubblewrap debootstrap python3-jsonschema; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "start-services.sh: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
    echo "start-services.sh: a Docker engine already answers"
else
    echo "start-services.sh: starting dockerd (log: $LOG)"
    $SUDO mkdir -p "$(dirname "$LOG")"
    $SUDO sh -c "nohup dockerd --iptables=false --bridge=none --storage-driver=overlay2 >>'$LOG' 2>&1 &"
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "start-services.sh: dockerd did not answer within 60 s; last log lines:" >&2
        tail -n 30 "$LOG" >&2 || true
        exit 1
    fi
    echo "start-services.sh: dockerd is up"
fi

$SUDO bash infra/images/build-base.sh
