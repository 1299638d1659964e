#!/usr/bin/env bash
# System calls per proxied request, branchgate vs nginx vs HAProxy, counted
# by strace -c. The companion of benches/callgrind.sh (user-space
# instructions) for the kernel side: on loopback most of a proxy's CPU is in
# system calls, and their number per request is what a proxy can change.
#
#   benches/syscalls.sh                 # N=20000 requests per scenario
#   N=50000 benches/syscalls.sh
#   BG_ARGS="--access-log common" benches/syscalls.sh   # branchgate flags (default: --access-log off)
#   OUT=/tmp/sys.md benches/syscalls.sh                 # the markdown table (default target/syscalls.md)
#   CLOSE_SECONDS=0 benches/syscalls.sh                 # skip the Connection: close row (default 5 s of wrk)
#
# All three proxies run in front of the same nginx backend (not traced):
# branchgate with one worker, plain HTTP only, no admin listener, no Docker
# (--no-docker where the binary knows it: no reconnect loop in the counts);
# nginx as one process (master_process off); HAProxy as one process, one
# thread, in the foreground (load/haproxy.cfg.tmpl without its TLS bind).
# For each proxy and path (small body `/`, 64 KiB body `/64k`): a warm-up
# (h2load, 2000 requests over 16 connections), then strace -c -f attaches to
# the proxy (with -f, -p PID attaches every thread of the process, and
# threads started later are followed; the script checks that every thread
# is traced), h2load sends N keep-alive HTTP/1.1 requests over 16
# connections, and strace is detached (SIGINT). Calls / N is the number of
# system calls per request, failed ones (EAGAIN) included; the connection
# set-up of the 16 connections and whatever the proxy does while idle are
# spread over the N requests. The `close` row is wrk with `Connection: close`
# over 16 connections for CLOSE_SECONDS (a new client connection per request:
# accept, set-up and close counted), divided by the requests wrk completed.
#
# strace stops the traced process at every system call, so the proxy runs
# several times slower: calls that depend on timing (how many events one
# epoll_wait returns, how often a thread parks on a futex) may come out
# different than at full speed. The counts are comparable between proxies
# measured alike, not a profile of the production run.
#
# The proxies run on core 0; the backend and h2load on core 1 (as in
# benches/load.sh), strace wherever the scheduler puts it.
#
# Environment:
#   N          keep-alive requests per proxy and body (default 20000)
#   BG_BIN     branchgate binary (default: the release build, built here by scripts/lib/release.sh)
#   BG_ARGS    branchgate's extra flags (default: --access-log off)
#   OUT        where the markdown table goes (default target/syscalls.md)
#   KEEP_TMP=1 keep the temporary directory (configs, logs, strace's
#              summaries, h2load's output)
#
# nginx, h2load, strace and haproxy are installed with apt-get when missing
# (as root on Debian). Every process is started here and only those PIDs are
# stopped on exit.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
LOAD_DIR="$SCRIPT_DIR/load"
N=${N:-20000}
CLOSE_SECONDS=${CLOSE_SECONDS:-5}
OUT=${OUT:-target/syscalls.md}
BG_ARGS=${BG_ARGS:---access-log off}
PROXY_CPU=0
CLIENT_CPU=1

log() { printf '%s\n' "$*" >&2; }
die() {
    log "syscalls.sh: $*"
    exit 1
}

case "$N" in '' | *[!0-9]* | 0) die "N must be a positive whole number, got '$N'" ;; esac
case "$CLOSE_SECONDS" in '' | *[!0-9]*) die "CLOSE_SECONDS must be a whole number, got '$CLOSE_SECONDS'" ;; esac
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac

# ---------------------------------------------------------------- tools ---

# Debian puts haproxy and nginx in /usr/sbin, which a user's PATH may lack.
tool_path() { command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"; }
declare -A PACKAGE=([nginx]=nginx-light [h2load]=nghttp2-client [strace]=strace [haproxy]=haproxy [wrk]=wrk)
# shellcheck source=scripts/lib/procs.sh
. "$ROOT/scripts/lib/procs.sh"
pkgs=()
for t in nginx h2load strace haproxy wrk; do
    [ -x "$(tool_path "$t")" ] || pkgs+=("${PACKAGE[$t]}")
done
install_packages "${pkgs[@]}"
for t in nginx h2load strace haproxy wrk taskset ss getconf awk; do
    [ -x "$(tool_path "$t")" ] || die "missing tool: $t"
done
NGINX=$(tool_path nginx)
HAPROXY=$(tool_path haproxy)
if [ "$(getconf _NPROCESSORS_ONLN)" -lt 2 ]; then
    log "warning: one CPU; everything shares core 0"
    CLIENT_CPU=0
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------ processes ---

TMP=$(mktemp -d "${TMPDIR:-/tmp}/branchgate-syscalls.XXXXXX")
# nginx workers drop to an unprivileged user when started as root (the
# backend keeps its master): they must read the document root.
chmod 755 "$TMP"
PIDS=()

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    # Last started first: a tracer goes before its tracee.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=scripts/lib/ports.sh
. "$ROOT/scripts/lib/ports.sh"


if [ -z "${BG_BIN:-}" ]; then
    # shellcheck source=scripts/lib/release.sh
    . "$ROOT/scripts/lib/release.sh"
    BG_BIN=$(release_build)
fi
case "$BG_BIN" in /*) ;; *) BG_BIN="$ROOT/$BG_BIN" ;; esac
[ -x "$BG_BIN" ] || die "no branchgate binary at $BG_BIN"

BACKEND_PORT=$(free_port)
BACKEND="127.0.0.1:$BACKEND_PORT"
declare -A PORT=([branchgate]=$(free_port) [nginx]=$(free_port) [haproxy]=$(free_port))
PROXIES=(branchgate nginx haproxy)
declare -A PID

mkdir -p "$TMP/www" "$TMP/backend-tmp" "$TMP/proxy-tmp"
head -c 65536 /dev/zero | tr '\0' x >"$TMP/www/64k"
chmod -R a+rX "$TMP/www"
render "$LOAD_DIR/backend.conf.tmpl" "$TMP/backend.conf" "DIR=$TMP" "PORT=$BACKEND_PORT"
render "$LOAD_DIR/routes.toml.tmpl" "$TMP/routes.toml" "BACKEND=$BACKEND"
# One process: the one strace attaches to is the one that proxies.
render "$LOAD_DIR/nginx-proxy.conf.tmpl" "$TMP/nginx-proxy.conf" \
    "DIR=$TMP" "PORT=${PORT[nginx]}" "BACKEND=$BACKEND"
sed -i 's|^master_process on;|master_process off;|' "$TMP/nginx-proxy.conf"
# Plain HTTP only, as the other two here.
sed '/@TLS_PORT@/d' "$LOAD_DIR/haproxy.cfg.tmpl" >"$TMP/haproxy.cfg.tmpl"
render "$TMP/haproxy.cfg.tmpl" "$TMP/haproxy.cfg" "PORT=${PORT[haproxy]}" "BACKEND=$BACKEND"
"$NGINX" -t -q -p "$TMP" -e "$TMP/nginx-check.log" -c "$TMP/nginx-proxy.conf" ||
    die "nginx rejects $TMP/nginx-proxy.conf"
"$HAPROXY" -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1 ||
    die "haproxy rejects $TMP/haproxy.cfg: $(cat "$TMP/haproxy-check.log")"

taskset -c "$CLIENT_CPU" "$NGINX" -p "$TMP" -e "$TMP/backend-error.log" -c "$TMP/backend.conf" \
    >"$TMP/backend.out" 2>&1 &
PIDS+=("$!")
wait_listen "$!" "$BACKEND_PORT" backend "$TMP/backend-error.log"

bg_flags="--workers 1 --https off --admin off --log-level warn"
"$BG_BIN" --help 2>/dev/null | grep -q -- '--no-docker' && bg_flags+=" --no-docker"
# shellcheck disable=SC2086 # the flags are words
taskset -c "$PROXY_CPU" "$BG_BIN" --http "127.0.0.1:${PORT[branchgate]}" --routes "$TMP/routes.toml" \
    $bg_flags $BG_ARGS >"$TMP/branchgate.log" 2>&1 &
PID[branchgate]=$!
taskset -c "$PROXY_CPU" "$NGINX" -p "$TMP" -e "$TMP/proxy-error.log" -c "$TMP/nginx-proxy.conf" \
    >"$TMP/nginx.log" 2>&1 &
PID[nginx]=$!
taskset -c "$PROXY_CPU" "$HAPROXY" -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
PID[haproxy]=$!
PIDS+=("${PID[branchgate]}" "${PID[nginx]}" "${PID[haproxy]}")
wait_listen "${PID[branchgate]}" "${PORT[branchgate]}" branchgate "$TMP/branchgate.log"
wait_listen "${PID[nginx]}" "${PORT[nginx]}" nginx "$TMP/proxy-error.log"
wait_listen "${PID[haproxy]}" "${PORT[haproxy]}" haproxy "$TMP/haproxy.log"

# ------------------------------------------------------------ measuring ---

# h2load_run PORT PATH COUNT OUTFILE: COUNT keep-alive requests over 16
# connections; dies unless every one is answered 2xx.
h2load_run() {
    local port=$1 path=$2 count=$3 out=$4
    taskset -c "$CLIENT_CPU" h2load --h1 -n "$count" -c 16 -H ':authority: bench.local' \
        "http://127.0.0.1:$port$path" >"$out" 2>&1 || true
    if ! grep -q "$count succeeded, 0 failed, 0 errored" "$out" ||
        ! grep -q "status codes: $count 2xx" "$out"; then
        log "h2load to 127.0.0.1:$port$path did not get $count 2xx answers:"
        grep -E "requests:|status codes:" "$out" >&2 || cat "$out" >&2
        die "h2load failed"
    fi
}

# wrk_close PORT SECONDS OUTFILE: `Connection: close` requests over 16
# connections for SECONDS; prints how many were answered, dies on any error.
wrk_close() {
    local port=$1 seconds=$2 out=$3
    taskset -c "$CLIENT_CPU" wrk -t1 -c16 -d"${seconds}s" --timeout 10s -H 'Host: bench.local' \
        -H 'Connection: close' "http://127.0.0.1:$port/" >"$out" 2>&1 || true
    if grep -qE "Socket errors|Non-2xx" "$out" || ! grep -q "requests in" "$out"; then
        log "wrk (Connection: close) to 127.0.0.1:$port failed:"
        cat "$out" >&2
        die "wrk failed"
    fi
    awk '/requests in/ { print $1 }' "$out"
}

# all_traced PID TRACER: every thread of PID is traced by TRACER.
all_traced() {
    local task
    for task in /proc/"$1"/task/*; do
        [ "$(awk '/^TracerPid:/ { print $2 }' "$task/status" 2>/dev/null)" = "$2" ] || return 1
    done
}

# measure NAME PATH KEY: counts NAME's system calls over N requests to PATH
# into $TMP/strace-KEY.txt.
measure() {
    local name=$1 path=$2 key=$3 pid=${PID[$1]} port=${PORT[$1]} strace_pid i
    kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) is gone"
    if [ "$path" = close ]; then
        wrk_close "$port" 1 "$TMP/wrk-$key-warmup.txt" >/dev/null
    else
        h2load_run "$port" "$path" 2000 "$TMP/h2load-$key-warmup.txt"
    fi
    strace -c -f -p "$pid" -o "$TMP/strace-$key.txt" 2>"$TMP/strace-$key.err" &
    strace_pid=$!
    PIDS+=("$strace_pid")
    for i in $(seq 1 100); do
        all_traced "$pid" "$strace_pid" && break
        kill -0 "$strace_pid" 2>/dev/null || die "strace could not attach to $name: $(cat "$TMP/strace-$key.err")"
        [ "$i" -lt 100 ] || die "strace did not attach to every thread of $name within 10 s"
        sleep 0.1
    done
    THREADS[$key]=$(find /proc/"$pid"/task -mindepth 1 -maxdepth 1 | wc -l)
    if [ "$path" = close ]; then
        REQS[$key]=$(wrk_close "$port" "$CLOSE_SECONDS" "$TMP/wrk-$key.txt")
    else
        h2load_run "$port" "$path" "$N" "$TMP/h2load-$key.txt"
        REQS[$key]=$N
    fi
    # strace prints its summary when it detaches.
    kill -INT "$strace_pid"
    wait "$strace_pid" 2>/dev/null || true
    PIDS=("${PIDS[@]:0:${#PIDS[@]}-1}")
    grep -q '^100.00 ' "$TMP/strace-$key.txt" || die "strace wrote no summary for $name: $(cat "$TMP/strace-$key.err")"
}

# calls KEY -> "SYSCALL CALLS ERRORS" lines of strace's summary, most calls first.
calls() {
    awk '/^------/ { rule++; next }
         rule == 1 && NF >= 5 { print $NF, $4, (NF == 6 ? $5 : 0) }' "$TMP/strace-$1.txt" |
        sort -k2,2nr -k1,1
}

# per_request KEY SYSCALL... -> calls of those system calls per request.
per_request() {
    local key=$1
    shift
    calls "$key" | awk -v n="${REQS[$key]}" -v names=" $* " '
        index(names, " " $1 " ") { c += $2 }
        END { printf "%.2f", c / n }'
}

SCENARIOS=("small:/" "64k:/64k")
[ "$CLOSE_SECONDS" = 0 ] || SCENARIOS+=("close:close")
declare -A THREADS REQS
echo "system calls per request (strace -c -f), $N keep-alive HTTP/1.1 requests over 16 connections after a warm-up of 2000;"
echo "  close: wrk, Connection: close, 16 connections, ${CLOSE_SECONDS} s after a 1 s warm-up, per request answered"
echo "  branchgate: $BG_BIN $bg_flags $BG_ARGS"
echo "  $("$NGINX" -v 2>&1 | sed 's/.*: //') (master_process off), HAProxy $("$HAPROXY" -v | awk 'NR == 1 { print $3 }') (-db, nbthread 1)"
for sc in "${SCENARIOS[@]}"; do
    for p in "${PROXIES[@]}"; do
        log "  $p ${sc#*:}"
        measure "$p" "${sc#*:}" "$p-${sc%%:*}"
    done
done
for p in "${PROXIES[@]}"; do
    kill -0 "${PID[$p]}" 2>/dev/null || die "$p exited during the run"
done

# --------------------------------------------------------------- report ---

# The columns: system calls grouped by what they do.
READS=(read readv recvfrom recvmsg recvmmsg)
WRITES=(write writev sendto sendmsg sendmmsg sendfile splice)
WAITS=(epoll_wait epoll_pwait epoll_pwait2)
KNOWN="${READS[*]} ${WRITES[*]} ${WAITS[*]} epoll_ctl futex"
TABLE="$TMP/table.md"
{
    echo "| body | proxy | threads | syscalls/req | failed/req | read, recv* | write, send* | epoll_wait | epoll_ctl | futex | other | top system calls per request |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for sc in "${SCENARIOS[@]}"; do
        name=${sc%%:*}
        for p in "${PROXIES[@]}"; do
            key="$p-$name"
            n=${REQS[$key]}
            read -r total failed <<<"$(calls "$key" | awk -v n="$n" '{ c += $2; e += $3 } END { printf "%.2f %.2f", c / n, e / n }')"
            other=$(calls "$key" | awk -v n="$n" -v names=" $KNOWN " '
                !index(names, " " $1 " ") { c += $2 } END { printf "%.2f", c / n }')
            top=$(calls "$key" | awk -v n="$n" 'NR <= 8 { printf "%s%s %.2f", (NR > 1 ? ", " : ""), $1, $2 / n }')
            echo "| ${sc#*:} | $p | ${THREADS[$key]} | $total | $failed |" \
                "$(per_request "$key" "${READS[@]}") | $(per_request "$key" "${WRITES[@]}") |" \
                "$(per_request "$key" "${WAITS[@]}") | $(per_request "$key" epoll_ctl) |" \
                "$(per_request "$key" futex) | $other | $top |"
        done
    done
} >"$TABLE"

echo
cat "$TABLE"
mkdir -p "$(dirname "$OUT")"
{
    echo "# System calls per proxied request"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), benches/syscalls.sh: strace -c -f attached after a warm-up, $N keep-alive HTTP/1.1 requests (h2load --h1, 16 connections), calls / $N."
    echo "branchgate: $BG_BIN $bg_flags $BG_ARGS; $("$NGINX" -v 2>&1 | sed 's/.*: //') (one process, load/nginx-proxy.conf.tmpl); HAProxy $("$HAPROXY" -v | awk 'NR == 1 { print $3 }') (one process, nbthread 1, load/haproxy.cfg.tmpl); one nginx backend."
    echo "failed/req: calls that returned an error (EAGAIN mostly), counted in syscalls/req too. threads: threads traced. Under strace a proxy runs slower, which can change how many events an epoll_wait returns."
    echo
    cat "$TABLE"
} >"$OUT"
echo
echo "table written to $OUT"
