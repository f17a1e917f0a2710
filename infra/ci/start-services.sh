#!/usr/bin/env bash
# CI services for the tests, idempotent (safe to run on every CI job and by hand):
#   1. apt-get install docker.io bubblewrap debootstrap python3-jsonschema (only what is missing),
#      and Debian's postgresql when no server binaries (initdb, pg_ctl, postgres) are found. The
#      tests start their own throwaway server from those binaries (tests/helpers/postgres.py);
#      the package's 'main' cluster is never used, so it is not started here (a temporary
#      policy-rc.d denies it, unless the machine already has a policy-rc.d of its own);
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

# The same places tests/helpers/postgres.py looks (less its RLSD_TEST_POSTGRES_BINDIR override).
have_postgres() {
    local d
    for d in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin \
        "$(dirname "$(readlink -f "$(command -v initdb || echo /nonexistent)")")"; do
        [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && return 0
    done
    return 1
}

POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0
drop_policy_rc() {
    if [ "$POLICY_RC_OURS" = 1 ]; then
        $SUDO rm -f "$POLICY_RC"
        POLICY_RC_OURS=0
    fi
}
trap drop_policy_rc EXIT

missing=()
for pkg in docker.io bubblewrap debootstrap python3-jsonschema; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
need_postgres=0
have_postgres || need_postgres=1
if [ ${#missing[@]} -gt 0 ] || [ "$need_postgres" = 1 ]; then
    $SUDO apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "start-services.sh: installing ${missing[*]}"
    # env: sudo would drop a DEBIAN_FRONTEND set in front of it
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$need_postgres" = 1 ]; then
    echo "start-services.sh: installing postgresql (server binaries for the tests' own servers)"
    if [ ! -e "$POLICY_RC" ]; then
        # exit 101 = "action forbidden": invoke-rc.d skips starting the package's cluster,
        # which would also fail the install if something already listens on 5432
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY_RC" >/dev/null
        $SUDO chmod 755 "$POLICY_RC"
        POLICY_RC_OURS=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    drop_policy_rc
    if ! have_postgres; then
        echo "start-services.sh: postgresql installed, but no initdb/pg_ctl/postgres found" >&2
        exit 1
    fi
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
