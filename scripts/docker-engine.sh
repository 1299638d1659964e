# shellcheck shell=bash
# A Docker engine and the echo backend image for branchgate's Docker tests.
# Sourced, not run (scripts/test.sh does this):
#   . scripts/docker-engine.sh
#   engine_up                        # exports BRANCHGATE_TEST_DOCKER=1, or 0 (skip)
#   build_echo_image                 # when BRANCHGATE_TEST_DOCKER=1
#   ...                              # tests label their containers branchgate-test
#   engine_down                      # in an EXIT trap; sweeps test containers and networks
#
# engine_up uses a running engine if `docker info` answers; else it installs
# docker.io (root on Debian only) and starts dockerd itself, and only then does
# engine_down stop it. No engine at all is a failure under CI=true and a loud
# skip elsewhere, so a dev box without Docker can still run the rest.
#
# Safe under `set -euo pipefail`; every function reports failure by its status.

_de_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_de_dockerd_pid=""    # set only when engine_up started dockerd itself
_de_dockerd_dir=""    # its log and pidfile

_de_log() { printf '\n==> %s\n' "$*" >&2; }

# Answers within 10 s or counts as down: a wedged daemon must not hang the suite.
_de_answers() { timeout 10 docker info >/dev/null 2>&1; }

_de_install() { # installs docker.io when root on Debian; apt_updated is shared with test.sh
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        return 1
    fi
    if [ "${apt_updated:-0}" = 0 ]; then
        apt-get update -qq >/dev/null || return 1
        apt_updated=1
    fi
    _de_log "installing docker.io"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
}

_de_unavailable() { # _de_unavailable REASON
    if [ "${CI:-false}" = true ]; then
        _de_log "ERROR: no Docker engine under CI: $1"
        export BRANCHGATE_TEST_DOCKER=0
        return 1
    fi
    _de_log "SKIPPING Docker tests: $1"
    export BRANCHGATE_TEST_DOCKER=0
    return 0
}

engine_up() {
    if _de_answers; then
        _de_log "using the running Docker engine"
        export BRANCHGATE_TEST_DOCKER=1
        return 0
    fi
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        _de_install || { _de_unavailable "docker/dockerd missing and not installable here (needs root on Debian: apt-get install docker.io)"; return; }
    fi
    # A system dockerd that is only slow to answer: wait for it rather than
    # start a second daemon on the same data root and socket.
    if [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        _de_log "dockerd $(cat /var/run/docker.pid) is running but not answering yet; waiting for it"
        local wait_until=$((SECONDS + 60))
        until _de_answers; do
            if [ "$SECONDS" -ge "$wait_until" ]; then
                _de_unavailable "the running dockerd did not answer within 60 s"
                return
            fi
            sleep 0.5
        done
        export BRANCHGATE_TEST_DOCKER=1
        return 0
    fi
    _de_dockerd_dir=$(mktemp -d "${TMPDIR:-/tmp}/branchgate-dockerd.XXXXXX")
    _de_log "starting dockerd (log: $_de_dockerd_dir/dockerd.log)"
    # vfs works on any filesystem (overlayfs does not nest inside a container).
    dockerd --storage-driver=vfs --pidfile "$_de_dockerd_dir/dockerd.pid" \
        >"$_de_dockerd_dir/dockerd.log" 2>&1 &
    _de_dockerd_pid=$!
    local deadline=$((SECONDS + 60))
    until _de_answers; do
        if ! kill -0 "$_de_dockerd_pid" 2>/dev/null; then
            tail -n 20 "$_de_dockerd_dir/dockerd.log" >&2
            wait "$_de_dockerd_pid" 2>/dev/null || true
            _de_dockerd_pid=""
            rm -rf "$_de_dockerd_dir"
            _de_dockerd_dir=""
            _de_unavailable "dockerd exited at start-up (log above)"
            return
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$_de_dockerd_dir/dockerd.log" >&2
            engine_down
            _de_unavailable "dockerd did not answer within 60 s (log above)"
            return
        fi
        sleep 0.2
    done
    _de_log "dockerd is up (pid $_de_dockerd_pid)"
    export BRANCHGATE_TEST_DOCKER=1
}

engine_down() {
    # Leftovers of any test run, whoever started the engine.
    if command -v docker >/dev/null 2>&1 && _de_answers; then
        local ids
        ids=$(docker ps -aq --filter label=branchgate-test 2>/dev/null || true)
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086 # one id per word
            docker rm -f $ids >/dev/null 2>&1 || _de_log "WARNING: could not remove test containers: $ids"
        fi
        # Networks only after their containers are gone.
        ids=$(docker network ls -q --filter label=branchgate-test 2>/dev/null || true)
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086 # one id per word
            docker network rm $ids >/dev/null 2>&1 || _de_log "WARNING: could not remove test networks: $ids"
        fi
    fi
    [ -n "$_de_dockerd_pid" ] || return 0
    _de_log "stopping dockerd (pid $_de_dockerd_pid)"
    kill -TERM "$_de_dockerd_pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$_de_dockerd_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.2
    done
    if kill -0 "$_de_dockerd_pid" 2>/dev/null; then
        _de_log "WARNING: dockerd ignored SIGTERM for 20 s; killing it"
        kill -KILL "$_de_dockerd_pid" 2>/dev/null || true
    fi
    wait "$_de_dockerd_pid" 2>/dev/null || true
    _de_dockerd_pid=""
    rm -rf "$_de_dockerd_dir"
    _de_dockerd_dir=""
}

# Static echo backend (tests/docker/echo.rs) in a FROM-scratch image with the
# label branchgate-test, so every container made from it is found by engine_down.
build_echo_image() {
    local src="$_de_root/tests/docker/echo.rs"
    local bin="${CARGO_TARGET_DIR:-$_de_root/target}/docker-test/echo"
    local image=branchgate-test-echo:latest
    if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ]; then
        _de_log "compiling $src"
        mkdir -p "$(dirname "$bin")"
        # crt-static: the image has no libc to link against at run time.
        rustc --edition 2021 -O -C target-feature=+crt-static -C strip=debuginfo \
            "$src" -o "$bin.tmp" || return 1
        mv "$bin.tmp" "$bin"
    fi
    # ldd (libc-bin, always there on Debian; `file` may not be) names no library.
    if ! ldd "$bin" 2>&1 | grep -Eq 'not a dynamic executable|statically linked'; then
        _de_log "ERROR: $bin is not statically linked: $(ldd "$bin" 2>&1 | head -n 3)"
        return 1
    fi
    local ctx
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/branchgate-echo.XXXXXX")
    # /bin/sh is the same binary (a hard link, stored once): a CMD-SHELL health
    # check such as `--health-cmd "/echo check"` runs `/bin/sh -c "/echo check"`.
    mkdir -p "$ctx/rootfs/bin"
    cp "$bin" "$ctx/rootfs/echo"
    ln "$ctx/rootfs/echo" "$ctx/rootfs/bin/sh"
    cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
LABEL branchgate-test=1
COPY rootfs/ /
ENTRYPOINT ["/echo"]
EOF
    # Quiet unless it fails: without buildx the CLI warns on every build.
    local rc=0
    docker build -q -t "$image" "$ctx" >"$ctx.log" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        cat "$ctx.log" >&2
        _de_log "ERROR: docker build of $image failed"
    fi
    rm -rf "$ctx" "$ctx.log"
    [ "$rc" = 0 ] || return 1
    local bytes
    bytes=$(docker image inspect -f '{{.Size}}' "$image")
    awk -v i="$image" -v b="$bytes" 'BEGIN { printf "image %s: %.1f MB\n", i, b / 1000000 }'
}
