#!/usr/bin/env bash
# Real Docker for the end-to-end Docker tests (tests/e2e/test_docker.py).
#
# No registry is reachable from these machines, so everything comes from
# Debian's packages: docker.io runs a dockerd of the project's own (no bridge,
# no iptables, on its own socket, data under the cache directory), and
# mmdebstrap makes the Debian base image the test image is built FROM. Every
# step is idempotent; the base image is cached with the daemon's data between
# runs on the same machine.
#
# Storage: overlay2 where the kernel mounts overlayfs on the cache directory,
# else vfs (ENTRYPOINT_SUPERVISOR_STORAGE_DRIVER chooses). vfs works anywhere
# but copies the whole root file system for every layer and every container:
# about 25 s per `docker create` of the test image on a loaded 2-core machine,
# where overlay2 takes 0.1 s.
#
#   .ci/docker.sh [up]   install what is missing, start dockerd, build the base image
#   .ci/docker.sh start  start dockerd if it does not answer (installs nothing)
#   .ci/docker.sh base   build the base image if it is not there yet
#   .ci/docker.sh stop   stop the dockerd started here (on this socket)
#   .ci/docker.sh env    print DOCKER_HOST, DOCKER (the client), BASE_IMAGE and RUN_DIR
#
# Exits non-zero with one line on stderr saying why when a step cannot be done.
# Steps take a lock, so that runs at the same time on one machine neither
# start two daemons nor build the base image twice.
set -euo pipefail

CACHE=${ENTRYPOINT_SUPERVISOR_CACHE:-/var/cache/entrypoint-supervisor}
RUN_DIR=${ENTRYPOINT_SUPERVISOR_RUN:-/run/entrypoint-supervisor}
SOCKET=$RUN_DIR/docker.sock
PIDFILE=$RUN_DIR/dockerd.pid
LOG=$CACHE/dockerd.log
export DOCKER_HOST=unix://$SOCKET

# The base image: Debian's python3 with venv, and nothing else that the
# image does not need (no docs, manuals or translations: vfs copies the
# whole root file system for every layer and every container).
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
RECIPE=(--variant=minbase --include=python3,python3-venv
        --dpkgopt=path-exclude=/usr/share/doc/*
        --dpkgopt=path-include=/usr/share/doc/*/copyright
        --dpkgopt=path-exclude=/usr/share/man/*
        --dpkgopt=path-exclude=/usr/share/info/*
        --dpkgopt=path-exclude=/usr/share/locale/*
        "$SUITE")
RECIPE_ID=$(printf '%s\n' "${RECIPE[@]}" | sha256sum | cut -c1-8)
BASE_REPO=local/python
BASE_IMAGE=$BASE_REPO:3.11-$SUITE-$RECIPE_ID

# overlay2 if an overlay mount works where the daemon keeps its data.
storage_driver() {
    if [ -n "${ENTRYPOINT_SUPERVISOR_STORAGE_DRIVER:-}" ]; then
        echo "$ENTRYPOINT_SUPERVISOR_STORAGE_DRIVER"
        return
    fi
    local probe
    probe=$(mktemp -d "$CACHE/overlay-probe.XXXXXX")
    mkdir "$probe/lower" "$probe/upper" "$probe/work" "$probe/merged"
    if mount -t overlay overlay \
            -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
            "$probe/merged" 2>/dev/null; then
        umount "$probe/merged"
        echo overlay2
    else
        echo vfs
    fi
    rm -rf "$probe"
}

say() { echo "docker.sh: $*" >&2; }
fail() { say "$*"; exit 1; }

# Held until the script exits; fd 9 is closed for dockerd.
lock() {
    [ -z "${LOCKED:-}" ] || return 0
    LOCKED=1
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/lock"
    flock -w 1800 9 || fail "another .ci/docker.sh held $RUN_DIR/lock for 30 minutes"
}

# Debian's client talks to Debian's daemon; another client on PATH may be newer
# than the daemon's API and default to BuildKit, which docker.io lacks.
docker_client() {
    if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else command -v docker || true; fi
}

answers() {
    local docker
    docker=$(docker_client)
    [ -n "$docker" ] && timeout 20 "$docker" info >/dev/null 2>&1
}

install() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || fail "installing ${missing[*]} needs root"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    fi
}

start() {
    lock
    if answers; then
        say "dockerd already answers on $SOCKET"
        return 0
    fi
    command -v dockerd >/dev/null || fail "dockerd is not installed (run .ci/docker.sh up)"
    [ "$(id -u)" = 0 ] || fail "dockerd needs root"
    mkdir -p "$CACHE/docker" "$RUN_DIR/exec"
    if [ -f "$PIDFILE" ]; then
        local old
        old=$(cat "$PIDFILE")
        if [ -n "$old" ] && [ "$(cat "/proc/$old/comm" 2>/dev/null)" = dockerd ]; then
            fail "dockerd $old is running but does not answer on $SOCKET (see $LOG)"
        fi
        rm -f "$PIDFILE"
    fi
    local driver
    driver=$(storage_driver)
    say "starting dockerd ($driver, no bridge, no iptables; data in $CACHE/docker, log in $LOG)"
    # setsid: the daemon outlives this script and any terminal it ran from.
    setsid dockerd \
        --host "$DOCKER_HOST" \
        --data-root "$CACHE/docker" \
        --exec-root "$RUN_DIR/exec" \
        --pidfile "$PIDFILE" \
        --storage-driver "$driver" \
        --bridge none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        </dev/null >"$LOG" 2>&1 9>&- &
    local pid=$! deadline=$((SECONDS + 90))
    until answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 5 "$LOG" >&2 || true
            fail "dockerd exited before it answered (see $LOG)"
        fi
        if [ $SECONDS -ge $deadline ]; then
            kill "$pid" 2>/dev/null || true
            fail "dockerd did not answer within 90 s (see $LOG)"
        fi
        sleep 0.5
    done
    say "dockerd $pid answers on $SOCKET"
}

base() {
    local docker
    docker=$(docker_client)
    lock
    answers || fail "dockerd does not answer on $SOCKET (run .ci/docker.sh start)"
    if "$docker" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "base image $BASE_IMAGE is cached"
        return 0
    fi
    command -v mmdebstrap >/dev/null || fail "mmdebstrap is not installed (run .ci/docker.sh up)"
    mkdir -p "$CACHE"
    local tarball=$CACHE/rootfs-$RECIPE_ID.tar partial=$CACHE/rootfs-$RECIPE_ID.partial.tar
    say "building $BASE_IMAGE with mmdebstrap (a few minutes)"
    # A mirror on the command line: without one mmdebstrap reads sources from stdin.
    if ! mmdebstrap --quiet --format=tar "${RECIPE[@]}" "$partial" "$MIRROR" </dev/null >&2; then
        rm -f "$partial"
        fail "mmdebstrap could not build the $SUITE root file system"
    fi
    mv "$partial" "$tarball"
    "$docker" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$tarball" "$BASE_IMAGE" >/dev/null
    rm -f "$tarball"
    # Base images of an older recipe are no longer used.
    "$docker" image ls --format '{{.Repository}}:{{.Tag}}' "$BASE_REPO" \
        | grep -vxF "$BASE_IMAGE" | xargs -r "$docker" image rm >/dev/null 2>&1 || true
    say "base image $BASE_IMAGE built"
}

stop() {
    lock
    rm -f "$RUN_DIR/started-by-tests"
    [ -f "$PIDFILE" ] || { say "no dockerd was started here"; return 0; }
    local pid
    pid=$(cat "$PIDFILE")
    if [ -z "$pid" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
        rm -f "$PIDFILE"
        return 0
    fi
    kill -TERM "$pid"
    local deadline=$((SECONDS + 30))
    while [ -d "/proc/$pid" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if [ -d "/proc/$pid" ]; then
        kill -KILL "$pid" 2>/dev/null || true
        say "dockerd $pid did not stop within 30 s: killed"
    else
        say "dockerd $pid stopped"
    fi
}

case "${1:-up}" in
    up) install; start; base ;;
    start) start ;;
    base) base ;;
    stop) stop ;;
    env) printf 'DOCKER_HOST=%s\nDOCKER=%s\nBASE_IMAGE=%s\nRUN_DIR=%s\n' \
            "$DOCKER_HOST" "$(docker_client)" "$BASE_IMAGE" "$RUN_DIR" ;;
    *) fail "unknown command ${1} (up, start, base, stop, env)" ;;
esac
