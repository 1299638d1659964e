# shellcheck shell=bash
# Helpers shared by the scripts that start servers and tools of their own
# (benches/load.sh, benches/syscalls.sh, scripts/testssl.sh). Source it after
# defining `log` and `die`.

# stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL; reaps it when it is
# this shell's child. Only ever called with PIDs the script started.
stop_pid() {
    local pid=$1 _
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 49); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# render TEMPLATE OUTFILE KEY=VALUE...: the template with every @KEY@ replaced.
render() {
    local tmpl=$1 out=$2 kv args=()
    shift 2
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$tmpl" >"$out"
}

# install_packages PACKAGE...: Debian packages, with apt-get as root; dies
# naming them otherwise. nginx-light falls back to nginx (gone from newer
# Debian releases).
install_packages() {
    [ "$#" -gt 0 ] || return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        die "missing $* (run as root on Debian to install them)"
    fi
    log "installing: $*"
    local pkgs=("$@")
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if ! apt-get install -y -qq "${pkgs[@]}" >/dev/null; then
        pkgs=("${pkgs[@]/nginx-light/nginx}")
        apt-get install -y -qq "${pkgs[@]}" >/dev/null
    fi
}
