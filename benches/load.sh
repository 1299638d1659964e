#!/usr/bin/env bash
# End-to-end load harness: branchgate vs. nginx as a reverse proxy, in front
# of the same nginx backend, all on 127.0.0.1.
#
#   benches/load.sh                 # DURATION=10 by default
#   DURATION=5 OUT=/tmp/r.md benches/load.sh
#
# Targets: the backend directly (the limit), branchgate
# (release build, one worker) and nginx (one worker) as an equivalent proxy,
# interleaved: every scenario runs against each target in turn.
# The proxy under test runs on core 0; wrk and the backend share core 1.
# For each scenario and target it prints req/s, p50/p99 latency, and for the
# proxies CPU time per request (utime+stime from /proc/PID/stat) and peak RSS
# (VmHWM), then a markdown table, also written to ${OUT:-target/load-results.md}.
#
# Environment:
#   DURATION   seconds per measured wrk run (default 10)
#   WARMUP     seconds of warm-up per target (default 2)
#   ROUNDS     interleaved rounds of every scenario (default 1); the table shows
#              the median of the rounds, so ROUNDS=3 or 5 tames this noisy machine
#   ONLY       space-separated scenarios to run (default: small-c64 small-c256 64k-c64 close-c64)
#   BG_BIN     branchgate binary to measure (default: built here with cargo build --release)
#   BG_VARIANTS several branchgate targets in the same run, interleaved with the
#              others: "LABEL:BINARY[:EXTRA FLAGS]" entries separated by ";", e.g.
#              "before:/tmp/old/branchgate; after:target/release/branchgate;
#              after+log:target/release/branchgate:--access-log common" (default:
#              "branchgate:$BG_BIN"). Each is also compared with the first.
#   OUT        where the markdown table goes (default target/load-results.md)
#   QUIET_WAIT seconds to wait, before each scenario, for other processes on the
#              machine to go quiet (default 60); "other CPU %" in the table
#              shows what other processes used during each run anyway
#   KEEP_TMP=1 keep the temporary directory (configs, logs, wrk output)
#
# Every process is started here and only those PIDs are stopped on exit.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
LOAD_DIR="$SCRIPT_DIR/load"
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-1}
QUIET_WAIT=${QUIET_WAIT:-60}
OUT=${OUT:-target/load-results.md}
HOST_HEADER="Host: bench.local"
PROXY_CPU=0
CLIENT_CPU=1

log() { printf '%s\n' "$*" >&2; }
die() {
    log "load.sh: $*"
    exit 1
}

case "$DURATION" in '' | *[!0-9]*) die "DURATION must be a whole number of seconds, got '$DURATION'" ;; esac
case "$ROUNDS" in '' | *[!0-9]* | 0) die "ROUNDS must be a positive whole number, got '$ROUNDS'" ;; esac
case "$WARMUP" in '' | *[!0-9]*) die "WARMUP must be a whole number of seconds, got '$WARMUP'" ;; esac
case "$QUIET_WAIT" in '' | *[!0-9]*) die "QUIET_WAIT must be a whole number of seconds, got '$QUIET_WAIT'" ;; esac
[ "$DURATION" -ge 1 ] || die "DURATION must be at least 1"
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac

# ---------------------------------------------------------------- tools ---

need_install=()
command -v nginx >/dev/null 2>&1 || need_install+=(nginx)
command -v wrk >/dev/null 2>&1 || need_install+=(wrk)
if [ "${#need_install[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing: ${need_install[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        pkgs=()
        for t in "${need_install[@]}"; do
            case "$t" in
                nginx) pkgs+=(nginx-light) ;;
                *) pkgs+=("$t") ;;
            esac
        done
        if ! apt-get install -y -qq "${pkgs[@]}" >/dev/null; then
            # nginx-light is gone from newer Debian releases.
            pkgs=("${pkgs[@]/nginx-light/nginx}")
            apt-get install -y -qq "${pkgs[@]}" >/dev/null
        fi
    else
        die "missing ${need_install[*]} (run as root on Debian to install them)"
    fi
fi
for t in nginx wrk taskset ss pgrep getconf cargo awk; do
    command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
done
HAVE_CURL=0
command -v curl >/dev/null 2>&1 && HAVE_CURL=1
NGINX=$(command -v nginx)

NCPU=$(getconf _NPROCESSORS_ONLN)
if [ "$NCPU" -lt 2 ]; then
    log "warning: only $NCPU CPU; everything shares core 0"
    CLIENT_CPU=0
fi
CLK_TCK=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------ processes ---

TMP=$(mktemp -d "${TMPDIR:-/tmp}/branchgate-load.XXXXXX")
# nginx workers drop to an unprivileged user when started as root: they must
# be able to read the document root and the temp paths.
chmod 755 "$TMP"
PIDS=()

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        [ "$i" -eq 50 ] || sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Stops an nginx master and, if it left them behind, its workers.
stop_tree() {
    local pid=$1 kids
    kids=$(pgrep -P "$pid" 2>/dev/null || true)
    stop_pid "$pid"
    local k
    for k in $kids; do stop_pid "$k"; done
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_tree "$pid"; done
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

forget_pid() {
    local gone=$1 p keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$gone" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

port_in_use() { [ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]; }

USED_PORTS=" "
free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        if ! port_in_use "$p"; then
            USED_PORTS="$USED_PORTS$p "
            echo "$p"
            return 0
        fi
        : "$i"
    done
    die "no free port found"
}

# wait_listen PID PORT NAME LOGFILE
wait_listen() {
    local pid=$1 port=$2 name=$3 logfile=$4 i
    for i in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) exited during start-up; its log:"
            cat "$logfile" >&2 2>/dev/null || true
            die "$name did not start"
        fi
        port_in_use "$port" && return 0
        sleep 0.1
        : "$i"
    done
    die "$name did not listen on 127.0.0.1:$port within 10 s"
}

render() { # render TEMPLATE OUTFILE KEY=VALUE...
    local tmpl=$1 out=$2 kv args=()
    shift 2
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$tmpl" >"$out"
}

cpu_ticks() { # utime+stime (fields 14, 15), parsed after the ")" of comm
    local rest
    rest=$(cat "/proc/$1/stat" 2>/dev/null) || {
        echo -1
        return
    }
    rest=${rest##*) }
    awk '{ print $12 + $13 }' <<<"$rest"
}

peak_rss_mib() {
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024; found = 1 } END { if (!found) printf "n/a" }' \
        "/proc/$1/status" 2>/dev/null || echo n/a
}

# Resets VmHWM so each scenario reports its own peak (Linux >= 4.0).
reset_peak_rss() { { echo 5 >"/proc/$1/clear_refs"; } 2>/dev/null; }

affinity() { taskset -pc "$1" 2>/dev/null | sed 's/.*: //'; }

# Busy ticks of the whole machine: user+nice+system+steal from /proc/stat
# (irq/softirq left out, as they are from a process's utime+stime).
sys_busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $9; exit }' /proc/stat; }

# CPU of this shell's waited-for children (wrk): cutime+cstime, fields 16, 17.
child_ticks() {
    local rest
    rest=$(cat "/proc/$$/stat")
    rest=${rest##*) }
    awk '{ print $14 + $15 }' <<<"$rest"
}

# Ticks of the backend (master and worker).
backend_ticks() {
    local t=0 p
    for p in "$BACKEND_PID" ${BACKEND_WORKER:+"$BACKEND_WORKER"}; do
        t=$((t + $(cpu_ticks "$p")))
    done
    echo "$t"
}

# Waits (at most QUIET_WAIT seconds) until all processes use less than
# 10% of a core, so a build elsewhere on the machine does not skew a scenario.
wait_quiet() {
    local waited=0 a b pct
    while :; do
        a=$(sys_busy_ticks)
        sleep 1
        b=$(sys_busy_ticks)
        pct=$(((b - a) * 100 / CLK_TCK))
        [ "$pct" -lt 10 ] && return 0
        if [ "$waited" -ge "$QUIET_WAIT" ]; then
            log "  warning: the machine is still busy (${pct}% of a core used by other processes); measuring anyway"
            PROBLEMS+=("machine busy (${pct}% of a core) when a target started, after waiting ${QUIET_WAIT}s")
            return 0
        fi
        [ "$waited" -eq 0 ] && log "  waiting up to ${QUIET_WAIT}s for other processes to go quiet (${pct}% of a core busy)"
        waited=$((waited + 1))
    done
}

# ---------------------------------------------------------------- build ---

if [ -z "${BG_BIN:-}" ]; then
    log "building branchgate (cargo build --release --bin branchgate)"
    (cd "$ROOT" && cargo build --release --bin branchgate)
    BG_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/branchgate"
fi
abs_path() { case "$1" in /*) echo "$1" ;; *) echo "$ROOT/$1" ;; esac; }
# Variants: label -> binary, label -> extra flags, in order.
VARIANTS=()
declare -A V_BIN V_ARGS V_FLAGS
IFS=';' read -r -a _entries <<<"${BG_VARIANTS:-branchgate:$BG_BIN}"
for _e in "${_entries[@]}"; do
    _e=$(sed 's/^[[:space:]]*//; s/[[:space:]]*$//' <<<"$_e")
    [ -n "$_e" ] || continue
    IFS=':' read -r _label _bin _args <<<"$_e"
    [ -n "$_label" ] && [ -n "$_bin" ] || die "BG_VARIANTS: bad entry '$_e' (want LABEL:BINARY[:FLAGS])"
    case "$_label" in backend | nginx) die "BG_VARIANTS: label '$_label' is taken" ;; esac
    V_BIN[$_label]=$(abs_path "$_bin")
    V_ARGS[$_label]=$_args
    [ -x "${V_BIN[$_label]}" ] || die "BG_VARIANTS: no binary at ${V_BIN[$_label]}"
    VARIANTS+=("$_label")
done
[ "${#VARIANTS[@]}" -gt 0 ] || die "BG_VARIANTS names no variant"

# -------------------------------------------------------------- backend ---

BACKEND_PORT=$(free_port)
BG_PORT=$(free_port)
NGX_PORT=$(free_port)
BACKEND="127.0.0.1:$BACKEND_PORT"

mkdir -p "$TMP/www" "$TMP/backend-tmp" "$TMP/proxy-tmp" "$TMP/wrk"
head -c 65536 /dev/zero | tr '\0' 'x' >"$TMP/www/64k"
chmod -R a+rX "$TMP/www"
render "$LOAD_DIR/backend.conf.tmpl" "$TMP/backend.conf" "DIR=$TMP" "PORT=$BACKEND_PORT"
render "$LOAD_DIR/nginx-proxy.conf.tmpl" "$TMP/nginx-proxy.conf" \
    "DIR=$TMP" "PORT=$NGX_PORT" "BACKEND=$BACKEND"
render "$LOAD_DIR/routes.toml.tmpl" "$TMP/routes.toml" "BACKEND=$BACKEND"

for conf in backend nginx-proxy; do
    "$NGINX" -t -q -p "$TMP" -e "$TMP/$conf-check.log" -c "$TMP/$conf.conf" ||
        die "nginx rejects $TMP/$conf.conf"
done

taskset -c "$CLIENT_CPU" "$NGINX" -p "$TMP" -e "$TMP/backend-error.log" -c "$TMP/backend.conf" \
    >"$TMP/backend.out" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
wait_listen "$BACKEND_PID" "$BACKEND_PORT" backend "$TMP/backend-error.log"
BACKEND_WORKER=$(pgrep -P "$BACKEND_PID" | head -n 1 || true)

# ------------------------------------------------------------ measuring ---

read -r -a SCENARIOS <<<"${ONLY:-small-c64 small-c256 64k-c64 close-c64}"
TARGETS=(backend "${VARIANTS[@]}" nginx)
declare -A S_PATH=([small-c64]=/ [small-c256]=/ [64k-c64]=/64k [close-c64]=/)
declare -A S_CONNS=([small-c64]=64 [small-c256]=256 [64k-c64]=64 [close-c64]=64)
declare -A S_CLOSE=([small-c64]=0 [small-c256]=0 [64k-c64]=0 [close-c64]=1)
declare -A S_DESC=(
    [small-c64]="small body, 64 conns"
    [small-c256]="small body, 256 conns"
    [64k-c64]="64 KiB body, 64 conns"
    [close-c64]="Connection: close, 64 conns"
)
declare -A R_RPS R_P50 R_P99 R_CPU R_RSS R_ERR R_NOISE
# Every round's values, space-separated, per scenario/target; the report shows medians.
declare -A L_RPS L_P50 L_P99 L_CPU L_RSS
PROBLEMS=()

# run_wrk PORT PATH CONNS CLOSE SECONDS OUTFILE
run_wrk() {
    local port=$1 path=$2 conns=$3 close=$4 secs=$5 out=$6
    local hdr=(-H "$HOST_HEADER")
    [ "$close" = 1 ] && hdr+=(-H "Connection: close")
    taskset -c "$CLIENT_CPU" wrk -t 1 -c "$conns" -d "${secs}s" --timeout 5s \
        -s "$LOAD_DIR/report.lua" "${hdr[@]}" "http://127.0.0.1:$port$path" >"$out" 2>&1 || true
}

field() { # field NAME FILE -> value from the LOADRESULT line
    sed -n "s/.*LOADRESULT.* $1=\\([0-9-]*\\).*/\\1/p" "$2" | head -n 1
}

check_target() { # check_target NAME PORT
    [ "$HAVE_CURL" = 1 ] || return 0
    local name=$1 port=$2 body size
    body=$(curl -sS --max-time 5 -H "$HOST_HEADER" "http://127.0.0.1:$port/") ||
        die "$name: GET / failed"
    [ "$body" = hello ] || die "$name: GET / returned '$body', expected 'hello'"
    size=$(curl -sS --max-time 5 -o /dev/null -w '%{size_download}' -H "$HOST_HEADER" \
        "http://127.0.0.1:$port/64k") || die "$name: GET /64k failed"
    [ "$size" = 65536 ] || die "$name: GET /64k returned $size bytes, expected 65536"
}

# measure TARGET PORT PID(or empty) SCENARIO
measure() {
    local target=$1 port=$2 pid=$3 sc=$4
    local out="$TMP/wrk/$target-$sc.txt" before=0 after=0
    local sys0 sys1 wrk0 wrk1 be0 be1
    if [ -n "$pid" ]; then
        reset_peak_rss "$pid" || true
        before=$(cpu_ticks "$pid")
    fi
    be0=$(backend_ticks)
    wrk0=$(child_ticks)
    sys0=$(sys_busy_ticks)
    run_wrk "$port" "${S_PATH[$sc]}" "${S_CONNS[$sc]}" "${S_CLOSE[$sc]}" "$DURATION" "$out"
    sys1=$(sys_busy_ticks)
    wrk1=$(child_ticks)
    be1=$(backend_ticks)
    if [ -n "$pid" ]; then after=$(cpu_ticks "$pid"); fi
    # CPU used by anything but the proxy, the backend and wrk, in % of a core.
    local foreign=$(((sys1 - sys0) - (after - before) - (be1 - be0) - (wrk1 - wrk0)))
    R_NOISE[$sc/$target]=$(awk -v f="$foreign" -v hz="$CLK_TCK" -v s="$DURATION" \
        'BEGIN { v = f / hz / s * 100; printf "%.0f", (v < 0 ? 0 : v) }')
    if [ "${R_NOISE[$sc/$target]}" -gt 10 ]; then
        PROBLEMS+=("$target/$sc: other processes used ${R_NOISE[$sc/$target]}% of a core during the run; its numbers are skewed")
    fi

    local req dur p50 p99 econn eread ewrite estatus etimeout
    req=$(field requests "$out")
    if [ -z "$req" ]; then
        log "  $target/$sc: wrk produced no result:"
        sed 's/^/    /' "$out" >&2
        PROBLEMS+=("$target/$sc: wrk produced no result")
        R_RPS[$sc/$target]=n/a R_P50[$sc/$target]=n/a R_P99[$sc/$target]=n/a
        R_CPU[$sc/$target]=n/a R_RSS[$sc/$target]=n/a R_ERR[$sc/$target]=n/a
        return 0
    fi
    dur=$(field duration_us "$out")
    p50=$(field p50_us "$out")
    p99=$(field p99_us "$out")
    econn=$(field err_connect "$out")
    eread=$(field err_read "$out")
    ewrite=$(field err_write "$out")
    estatus=$(field err_status "$out")
    etimeout=$(field err_timeout "$out")

    R_RPS[$sc/$target]=$(awk -v r="$req" -v d="$dur" 'BEGIN { printf "%.0f", (d > 0 ? r / (d / 1e6) : 0) }')
    R_P50[$sc/$target]=$p50
    R_P99[$sc/$target]=$p99
    local errs=$((econn + eread + ewrite + estatus + etimeout))
    if [ "$errs" -eq 0 ]; then
        R_ERR[$sc/$target]=0
    else
        R_ERR[$sc/$target]="c$econn/r$eread/w$ewrite/s$estatus/t$etimeout"
        PROBLEMS+=("$target/$sc: wrk errors connect=$econn read=$eread write=$ewrite non-2xx/3xx=$estatus timeout=$etimeout (of $req requests)")
    fi

    if [ -n "$pid" ]; then
        if [ "$before" -lt 0 ] || [ "$after" -lt 0 ]; then
            R_CPU[$sc/$target]=n/a R_RSS[$sc/$target]=n/a
        else
            R_CPU[$sc/$target]=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v r="$req" \
                'BEGIN { printf "%.2f", (r > 0 ? t / hz * 1e6 / r : 0) }')
            R_RSS[$sc/$target]=$(peak_rss_mib "$pid")
        fi
    else
        R_CPU[$sc/$target]=- R_RSS[$sc/$target]=-
    fi
    printf '  %-12s %-30s %9s req/s  p50 %7s us  p99 %7s us  cpu %7s us/req  peak RSS %6s MiB  errors %s  other CPU %s%%\n' \
        "$target" "${S_DESC[$sc]}" "${R_RPS[$sc/$target]}" "$p50" "$p99" \
        "${R_CPU[$sc/$target]}" "${R_RSS[$sc/$target]}" "${R_ERR[$sc/$target]}" "${R_NOISE[$sc/$target]}"
}

# Targets are interleaved: each scenario runs against every target in turn, so
# slow drift of the machine's speed hits all of them alike.
declare -A T_PORT T_PID
T_PID[backend]=""

# measure_or_skip TARGET SCENARIO
measure_or_skip() {
    local target=$1 sc=$2 pid=${T_PID[$1]}
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        PROBLEMS+=("$target: process $pid is gone before $sc")
        log "  $target: process $pid is gone before $sc"
        R_RPS[$sc/$target]=dead R_P50[$sc/$target]=- R_P99[$sc/$target]=-
        R_CPU[$sc/$target]=- R_RSS[$sc/$target]=- R_ERR[$sc/$target]=- R_NOISE[$sc/$target]=-
        return 0
    fi
    measure "$target" "${T_PORT[$target]}" "$pid" "$sc"
}

echo "branchgate load harness: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $NCPU CPUs, DURATION=${DURATION}s, warm-up ${WARMUP}s"
echo "  $($NGINX -v 2>&1), $(wrk -v 2>&1 | head -n 1 | cut -c1-60)"
echo "  pinning: proxy under test on core $PROXY_CPU (taskset -c $PROXY_CPU); wrk and backend on core $CLIENT_CPU (taskset -c $CLIENT_CPU)"
echo "  backend:    nginx master $BACKEND_PID, worker ${BACKEND_WORKER:-?} on 127.0.0.1:$BACKEND_PORT, affinity $(affinity "${BACKEND_WORKER:-$BACKEND_PID}")"
T_PORT[backend]=$BACKEND_PORT

for v in "${VARIANTS[@]}"; do
    port=$BG_PORT
    [ "$v" = "${VARIANTS[0]}" ] || port=$(free_port)
    err="$TMP/$v.stderr"
    # shellcheck disable=SC2086 # the extra flags are words
    flags="--workers 1 --log-level warn ${V_ARGS[$v]}"
    case " ${V_ARGS[$v]} " in *" --access-log "*) ;; *) flags+=" --access-log off" ;; esac
    case " ${V_ARGS[$v]} " in *" --https "*) ;; *) flags+=" --https off" ;; esac
    V_FLAGS[$v]=$flags
    taskset -c "$PROXY_CPU" "${V_BIN[$v]}" --http "127.0.0.1:$port" --routes "$TMP/routes.toml" \
        $flags >"$TMP/$v.stdout" 2>"$err" &
    pid=$!
    PIDS+=("$pid")
    wait_listen "$pid" "$port" "$v" "$err"
    echo "  $v: pid $pid on 127.0.0.1:$port, affinity $(affinity "$pid"), threads $(awk '/^Threads:/ { print $2 }' "/proc/$pid/status"), flags: $flags"
    T_PORT[$v]=$port
    T_PID[$v]=$pid
done

taskset -c "$PROXY_CPU" "$NGINX" -p "$TMP" -e "$TMP/proxy-error.log" -c "$TMP/nginx-proxy.conf" \
    >"$TMP/proxy.out" 2>&1 &
NGX_PID=$!
PIDS+=("$NGX_PID")
wait_listen "$NGX_PID" "$NGX_PORT" "nginx proxy" "$TMP/proxy-error.log"
NGX_WORKER=""
for _ in $(seq 1 50); do
    NGX_WORKER=$(pgrep -P "$NGX_PID" | head -n 1 || true)
    [ -n "$NGX_WORKER" ] && break
    sleep 0.1
done
[ -n "$NGX_WORKER" ] || die "nginx proxy has no worker process"
echo "  nginx:      master $NGX_PID, worker $NGX_WORKER on 127.0.0.1:$NGX_PORT, affinity $(affinity "$NGX_WORKER")"
T_PORT[nginx]=$NGX_PORT
T_PID[nginx]=$NGX_WORKER

for t in "${TARGETS[@]}"; do
    check_target "$t" "${T_PORT[$t]}"
done
wait_quiet
echo
echo "warm-up: ${WARMUP}s of small bodies at 64 connections per target"
for t in "${TARGETS[@]}"; do
    run_wrk "${T_PORT[$t]}" / 64 0 "$WARMUP" "$TMP/wrk/$t-warmup.txt"
done

for round in $(seq 1 "$ROUNDS"); do
    for sc in "${SCENARIOS[@]}"; do
        echo
        echo "[${S_DESC[$sc]}] round $round/$ROUNDS"
        wait_quiet
        for t in "${TARGETS[@]}"; do
            measure_or_skip "$t" "$sc"
            k="$sc/$t"
            L_RPS[$k]+=" ${R_RPS[$k]}" L_P50[$k]+=" ${R_P50[$k]}" L_P99[$k]+=" ${R_P99[$k]}"
            L_CPU[$k]+=" ${R_CPU[$k]}" L_RSS[$k]+=" ${R_RSS[$k]}"
        done
    done
done

median() { # median "v1 v2 ..." -> the median of the numeric values, or the first value
    local vals
    vals=$(tr ' ' '\n' <<<"$1" | grep -E '^[0-9.]+$' | sort -g || true)
    if [ -z "$vals" ]; then
        printf '%s' "${1# }" | cut -d' ' -f1
        return
    fi
    awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }' <<<"$vals"
}
for k in "${!L_RPS[@]}"; do
    R_RPS[$k]=$(median "${L_RPS[$k]}")
    R_P50[$k]=$(median "${L_P50[$k]}")
    R_P99[$k]=$(median "${L_P99[$k]}")
    R_CPU[$k]=$(median "${L_CPU[$k]}")
    R_RSS[$k]=$(median "${L_RSS[$k]}")
done

for v in "${VARIANTS[@]}"; do
    if ! kill -0 "${T_PID[$v]}" 2>/dev/null; then
        PROBLEMS+=("$v exited under load")
    fi
    if [ -s "$TMP/$v.stderr" ]; then
        PROBLEMS+=("$v wrote to stderr (see below)")
    fi
done
if ! kill -0 "$NGX_WORKER" 2>/dev/null; then
    PROBLEMS+=("the nginx proxy worker exited under load")
fi
for v in "${VARIANTS[@]}"; do
    stop_tree "${T_PID[$v]}"
    forget_pid "${T_PID[$v]}"
done
stop_tree "$NGX_PID"
forget_pid "$NGX_PID"

# --------------------------------------------------------------- report ---

ratio() { # ratio A B -> A/B with 2 decimals, or n/a
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f", a / b; else printf "n/a" }'
}

TABLE="$TMP/table.md"
{
    echo "| scenario | target | req/s | p50 µs | p99 µs | CPU µs/req | peak RSS MiB | wrk errors | other CPU % |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for sc in "${SCENARIOS[@]}"; do
        for t in "${TARGETS[@]}"; do
            k="$sc/$t"
            echo "| ${S_DESC[$sc]} | $t | ${R_RPS[$k]:-n/a} | ${R_P50[$k]:-n/a} | ${R_P99[$k]:-n/a} | ${R_CPU[$k]:-n/a} | ${R_RSS[$k]:-n/a} | ${R_ERR[$k]:-n/a} | ${R_NOISE[$k]:-n/a} |"
        done
    done
    echo
    echo "branchgate / nginx ratios (CPU per request and p99: lower is better; req/s: higher is better):"
    echo
    echo "| scenario | variant | CPU/req | req/s | p99 |"
    echo "|---|---|---:|---:|---:|"
    for sc in "${SCENARIOS[@]}"; do
        for v in "${VARIANTS[@]}"; do
            b="$sc/$v" n="$sc/nginx"
            echo "| ${S_DESC[$sc]} | $v | $(ratio "${R_CPU[$b]:-}" "${R_CPU[$n]:-}") | $(ratio "${R_RPS[$b]:-}" "${R_RPS[$n]:-}") | $(ratio "${R_P99[$b]:-}" "${R_P99[$n]:-}") |"
        done
    done
    if [ "${#VARIANTS[@]}" -gt 1 ]; then
        first=${VARIANTS[0]}
        echo
        echo "each variant / $first (same run):"
        echo
        echo "| scenario | variant | CPU/req | req/s | p99 |"
        echo "|---|---|---:|---:|---:|"
        for sc in "${SCENARIOS[@]}"; do
            for v in "${VARIANTS[@]:1}"; do
                b="$sc/$v" f="$sc/$first"
                echo "| ${S_DESC[$sc]} | $v | $(ratio "${R_CPU[$b]:-}" "${R_CPU[$f]:-}") | $(ratio "${R_RPS[$b]:-}" "${R_RPS[$f]:-}") | $(ratio "${R_P99[$b]:-}" "${R_P99[$f]:-}") |"
            done
        done
    fi
} >"$TABLE"

echo
cat "$TABLE"

mkdir -p "$(dirname "$OUT")"
{
    echo "# branchgate load results"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), $NCPU CPUs, $($NGINX -v 2>&1 | sed 's/.*: //'), wrk -t1, ${DURATION}s per run after a ${WARMUP}s warm-up; median of $ROUNDS interleaved round(s)."
    echo "Proxy on core $PROXY_CPU; wrk and the backend (nginx, 1 worker) on core $CLIENT_CPU."
    for v in "${VARIANTS[@]}"; do
        echo "$v: ${V_BIN[$v]} ${V_FLAGS[$v]}"
    done
    echo "nginx: 1 worker, upstream keepalive 512."
    echo "CPU µs/req: utime+stime of the proxy process (nginx: its worker) over the wrk run / requests."
    echo "wrk errors: connect/read/write/status(non-2xx,3xx)/timeout."
    echo "other CPU %: CPU used during the run by processes other than the proxy, the backend and wrk, in % of one core."
    echo
    cat "$TABLE"
} >"$OUT"
echo
echo "table written to $OUT"

if [ "${#PROBLEMS[@]}" -gt 0 ]; then
    echo
    echo "problems:"
    printf '  - %s\n' "${PROBLEMS[@]}"
fi
for v in "${VARIANTS[@]}"; do
    if [ -s "$TMP/$v.stderr" ]; then
        echo
        echo "$v stderr (last 40 lines):"
        tail -n 40 "$TMP/$v.stderr" | sed 's/^/  /'
    fi
done
for f in backend-error.log proxy-error.log; do
    if [ -s "$TMP/$f" ]; then
        echo
        echo "$f (last 10 lines):"
        tail -n 10 "$TMP/$f" | sed 's/^/  /'
    fi
done
