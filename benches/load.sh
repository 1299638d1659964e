#!/usr/bin/env bash
# End-to-end load harness: branchgate vs. nginx and HAProxy as reverse
# proxies, in front of the same nginx backend, all on 127.0.0.1.
#
#   benches/load.sh                 # DURATION=10 by default
#   DURATION=5 OUT=/tmp/r.md benches/load.sh
#   PEERS=haproxy benches/load.sh   # branchgate vs. HAProxy only
#
# Targets: the backend directly (the limit), branchgate (release build, one
# worker), and as equivalent proxies (the peers) nginx (one worker,
# load/nginx-proxy*.conf.tmpl) and HAProxy (one process, nbthread 1,
# load/haproxy.cfg.tmpl), interleaved: every scenario runs against each
# target in turn. The proxy under test runs on core 0; wrk and the backend
# share core 1. For each scenario and target it prints req/s, p50/p99
# latency, and for the proxies CPU time per request (utime+stime from
# /proc/PID/stat: branchgate's process, nginx's worker, HAProxy's only
# process, run in the foreground without a master) and peak RSS (VmHWM), then
# a markdown table with branchgate's ratios to each peer and to the better of
# them, also written to ${OUT:-target/load-results.md}.
#
# TLS scenarios run branchgate (--https, --certs in nginx-proxy's layout),
# nginx (ssl) and HAProxy (bind ... ssl, ALPN http/1.1) with the same
# throw-away ECDSA P-256 certificate, made here with openssl; wrk connects to
# https://bench.local:PORT (report.lua resolves every name to 127.0.0.1), so
# the SNI is the routed host (wrk sends the URL's host as SNI even when it is
# an IP address, which branchgate refuses, as RFC 6066 asks). The backend
# has no TLS listener: its TLS rows are "-".
#   tls-c64        keep-alive HTTP/1.1 over TLS, 64 connections
#   handshake-c64  Connection: close over TLS: one full handshake per request.
#                  Debian's wrk resumes the previous session on every reconnect
#                  (its SSL_clear keeps it), so wrk runs with LD_PRELOAD of
#                  load/noresume.c (built here with cc), which drops it; before
#                  measuring, nginx's $ssl_session_reused confirms that no
#                  handshake was resumed. req/s is handshakes/s, CPU µs/req is
#                  CPU per handshake.
#   resume-c64     the same with wrk's own resumption (tickets, TLS 1.3 PSK)
# The resumption check goes through nginx, so with TLS scenarios nginx runs
# even when PEERS leaves it out (then it is not measured).
#
# Environment:
#   DURATION   seconds per measured wrk run (default 10)
#   WARMUP     seconds of warm-up per target (default 2)
#   ROUNDS     interleaved rounds of every scenario (default 1); the table shows
#              the median of the rounds, so ROUNDS=3 or 5 tames this noisy machine
#   ONLY       space-separated scenarios to run (default: small-c64 small-c256 64k-c64 close-c64
#              tls-c64 handshake-c64; also resume-c64)
#   BG_BIN     branchgate binary to measure (default: the release build, with its
#              profile, built here by scripts/lib/release.sh)
#   BG_VARIANTS several branchgate targets in the same run, interleaved with the
#              others: "LABEL:BINARY[:EXTRA FLAGS]" entries separated by ";", e.g.
#              "before:/tmp/old/branchgate; after:@BG_BIN@;
#              after+log:@BG_BIN@:--access-log common" (default:
#              "branchgate:$BG_BIN"). Each is also compared with the first.
#              In an entry, @BG_BIN@ is the binary built here (or BG_BIN) and
#              @HTPASSWD@ a directory holding an htpasswd file for bench.local
#              (one bcrypt entry, cost 10), e.g.
#              "none:@BG_BIN@; basic:@BG_BIN@:--htpasswd @HTPASSWD@".
#   PEERS      the proxies branchgate is compared with, space-separated, in
#              table order (default "nginx haproxy"; "" for none)
#   PEER_DEFER=0 nginx and HAProxy accept at the handshake, their default (default 1:
#              nginx's "listen ... deferred", HAProxy's "defer-accept": TCP_DEFER_ACCEPT,
#              as branchgate's --defer-accept, on by default)
#   PEER_LOG=1 nginx and HAProxy write an access log (to files; default: off,
#              as branchgate's default variant: --access-log off); pair it with a
#              variant such as "log:@BG_BIN@:--access-log common"
#   AUTH=1     every request (wrk and the checks) carries that user's
#              `Authorization: Basic`; targets that do not ask for it ignore it.
#   OUT        where the markdown table goes (default target/load-results.md)
#   QUIET_WAIT seconds to wait, before each scenario, for other processes on the
#              machine to go quiet (default 60); "other CPU %" in the table
#              shows what other processes used during each run anyway
#   KEEP_TMP=1 keep the temporary directory (configs, logs, wrk output)
#
# nginx, wrk, openssl, HAProxy (when a peer) and cc (for handshake-c64) are
# installed with apt-get when missing and run as root on Debian.
# Every process is started here and only those PIDs are stopped on exit.
# branchgate always gets an HTTPS listener (unless a variant's flags name
# --https); the bench route says https_method = "noredirect", so plain HTTP
# is proxied, not redirected, although a certificate exists for it.

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
# bench:bench-password, and its bcrypt hash (htpasswd -nbB -C 10 bench bench-password).
AUTH_HEADER="Authorization: Basic YmVuY2g6YmVuY2gtcGFzc3dvcmQ="
# shellcheck disable=SC2016 # the $ are the hash's own
AUTH_ENTRY='bench:$2y$10$WFUF0jtUeYwdJdaZr3Rc/.vhIdJmeO89gKPp2oahJf/6KgP0evJwK'
AUTH=${AUTH:-0}
PEER_LOG=${PEER_LOG:-0}
PEER_DEFER=${PEER_DEFER:-1}
PROXY_CPU=0
CLIENT_CPU=1

log() { printf '%s\n' "$*" >&2; }
die() {
    log "load.sh: $*"
    exit 1
}

case "$DURATION" in '' | *[!0-9]*) die "DURATION must be a whole number of seconds, got '$DURATION'" ;; esac
case "$ROUNDS" in '' | *[!0-9]* | 0) die "ROUNDS must be a positive whole number, got '$ROUNDS'" ;; esac
case "$PEER_DEFER" in 0 | 1) ;; *) die "PEER_DEFER must be 0 or 1, got '$PEER_DEFER'" ;; esac
case "$WARMUP" in '' | *[!0-9]*) die "WARMUP must be a whole number of seconds, got '$WARMUP'" ;; esac
case "$QUIET_WAIT" in '' | *[!0-9]*) die "QUIET_WAIT must be a whole number of seconds, got '$QUIET_WAIT'" ;; esac
[ "$DURATION" -ge 1 ] || die "DURATION must be at least 1"
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac

# ------------------------------------------------------------ scenarios ---

read -r -a SCENARIOS <<<"${ONLY:-small-c64 small-c256 64k-c64 close-c64 tls-c64 handshake-c64}"
declare -A S_PATH=([small-c64]=/ [small-c256]=/ [64k-c64]=/64k [close-c64]=/
    [tls-c64]=/ [handshake-c64]=/ [resume-c64]=/)
declare -A S_CONNS=([small-c64]=64 [small-c256]=256 [64k-c64]=64 [close-c64]=64
    [tls-c64]=64 [handshake-c64]=64 [resume-c64]=64)
declare -A S_CLOSE=([small-c64]=0 [small-c256]=0 [64k-c64]=0 [close-c64]=1
    [tls-c64]=0 [handshake-c64]=1 [resume-c64]=1)
# Over TLS; and with wrk's session resumption taken away (noresume.c).
declare -A S_TLS=([tls-c64]=1 [handshake-c64]=1 [resume-c64]=1)
declare -A S_NORESUME=([handshake-c64]=1)
declare -A S_DESC=(
    [small-c64]="small body, 64 conns"
    [small-c256]="small body, 256 conns"
    [64k-c64]="64 KiB body, 64 conns"
    [close-c64]="Connection: close, 64 conns"
    [tls-c64]="TLS keep-alive, 64 conns"
    [handshake-c64]="TLS full handshake per request, 64 conns"
    [resume-c64]="TLS resumed handshake per request, 64 conns"
)
WANT_TLS=0 WANT_NORESUME=0
for sc in "${SCENARIOS[@]}"; do
    [ -n "${S_DESC[$sc]:-}" ] || die "ONLY: unknown scenario '$sc' (known: ${!S_DESC[*]})"
    [ "${S_TLS[$sc]:-0}" = 1 ] && WANT_TLS=1
    [ "${S_NORESUME[$sc]:-0}" = 1 ] && WANT_NORESUME=1
done

# The proxies compared with branchgate; "PEERS=" (empty) is none.
read -r -a PEER_LIST <<<"${PEERS-nginx haproxy}"
_seen=" "
for p in "${PEER_LIST[@]}"; do
    case "$p" in nginx | haproxy) ;; *) die "PEERS: unknown peer '$p' (known: nginx haproxy)" ;; esac
    case "$_seen" in *" $p "*) die "PEERS names $p twice" ;; esac
    _seen+="$p "
done
is_peer() { case " ${PEER_LIST[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac }
# nginx also serves the TLS session resumption check (see resume_check).
RUN_NGINX=0
if is_peer nginx || [ "$WANT_TLS" = 1 ]; then RUN_NGINX=1; fi

# ---------------------------------------------------------------- tools ---

# shellcheck source=scripts/lib/procs.sh
. "$ROOT/scripts/lib/procs.sh"

pkgs=()
command -v nginx >/dev/null 2>&1 || pkgs+=(nginx-light)
command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
# Debian puts haproxy in /usr/sbin, which a user's PATH may lack.
haproxy_path() { command -v haproxy 2>/dev/null || echo /usr/sbin/haproxy; }
is_peer haproxy && ! [ -x "$(haproxy_path)" ] && pkgs+=(haproxy)
[ "$WANT_NORESUME" = 1 ] && ! command -v cc >/dev/null 2>&1 && pkgs+=(gcc libc6-dev)
install_packages "${pkgs[@]}"
HAPROXY=$(haproxy_path)
if is_peer haproxy; then
    [ -x "$HAPROXY" ] || die "missing tool: haproxy"
fi
for t in nginx wrk openssl taskset ss pgrep getconf cargo awk; do
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

# shellcheck source=scripts/lib/ports.sh
. "$ROOT/scripts/lib/ports.sh"

user_sys_ticks() { # "utime stime" (fields 14, 15), parsed after the ")" of comm; "-1 -1" if gone
    local rest
    rest=$(cat "/proc/$1/stat" 2>/dev/null) || {
        echo "-1 -1"
        return
    }
    rest=${rest##*) }
    awk '{ print $12, $13 }' <<<"$rest"
}

sum_ticks() { # "utime stime" -> their sum; -1 for "-1 -1"
    awk '{ print ($1 < 0 ? -1 : $1 + $2) }' <<<"$1"
}

cpu_ticks() { sum_ticks "$(user_sys_ticks "$1")"; }

peak_rss_mib() {
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024; found = 1 } END { if (!found) printf "n/a" }' \
        "/proc/$1/status" 2>/dev/null || echo n/a
}

# Resident memory now, split: "anonymous+file" MiB (file: the binary, shared
# libraries; the peak column is their sum at its highest).
rss_split_mib() {
    awk '/^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 }
         END { if (a == "" || f == "") printf "n/a"; else printf "%.1f+%.1f", a / 1024, f / 1024 }' \
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

# Built only when some variant needs it (no BG_VARIANTS, or one naming @BG_BIN@).
if [ -z "${BG_BIN:-}" ] && { [ -z "${BG_VARIANTS:-}" ] || [[ "$BG_VARIANTS" == *@BG_BIN@* ]]; }; then
    # shellcheck source=scripts/lib/release.sh
    . "$ROOT/scripts/lib/release.sh"
    BG_BIN=$(release_build)
fi
abs_path() { case "$1" in /*) echo "$1" ;; *) echo "$ROOT/$1" ;; esac; }
# Variants: label -> binary, label -> extra flags, in order.
VARIANTS=()
declare -A V_BIN V_ARGS V_FLAGS
IFS=';' read -r -a _entries <<<"${BG_VARIANTS:-branchgate:${BG_BIN:-}}"
for _e in "${_entries[@]}"; do
    _e=$(sed 's/^[[:space:]]*//; s/[[:space:]]*$//' <<<"$_e")
    [ -n "$_e" ] || continue
    IFS=':' read -r _label _bin _args <<<"$_e"
    _bin=${_bin//@BG_BIN@/${BG_BIN:-}}
    if [ -z "$_label" ] || [ -z "$_bin" ]; then
        die "BG_VARIANTS: bad entry '$_e' (want LABEL:BINARY[:FLAGS])"
    fi
    case "$_label" in backend | nginx | haproxy) die "BG_VARIANTS: label '$_label' is taken" ;; esac
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
NGX_TLS_PORT=$(free_port)
HAP_PORT=$(free_port)
HAP_TLS_PORT=$(free_port)
BACKEND="127.0.0.1:$BACKEND_PORT"

mkdir -p "$TMP/www" "$TMP/backend-tmp" "$TMP/proxy-tmp" "$TMP/wrk" "$TMP/certs" "$TMP/htpasswd"
# For variants that ask for Basic auth (@HTPASSWD@).
echo "$AUTH_ENTRY" >"$TMP/htpasswd/bench.local"
CURL_AUTH=()
[ "$AUTH" = 0 ] || CURL_AUTH=(-H "$AUTH_HEADER")
head -c 65536 /dev/zero | tr '\0' 'x' >"$TMP/www/64k"
chmod -R a+rX "$TMP/www"

# One throw-away ECDSA P-256 certificate for bench.local, served by every
# proxy (branchgate: default.crt/.key in nginx-proxy's layout), made
# whatever the scenarios: every proxy always listens for TLS too.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.local -addext subjectAltName=DNS:bench.local \
    -keyout "$TMP/certs/default.key" -out "$TMP/certs/default.crt" >"$TMP/openssl.log" 2>&1 ||
    die "openssl could not make the certificate: $(cat "$TMP/openssl.log")"
# HAProxy wants certificate and key in one file; kept out of certs/, which
# branchgate watches.
cat "$TMP/certs/default.crt" "$TMP/certs/default.key" >"$TMP/haproxy.pem"
# nginx before 1.25.1 turns HTTP/2 on with a listen parameter, later with a directive.
NGX_VERSION=$("$NGINX" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
if [ "$(printf '%s\n' "$NGX_VERSION" 1.25.1 | sort -V | head -n 1)" = 1.25.1 ]; then
    HTTP2_LISTEN="" HTTP2_ON="http2 on;"
else
    HTTP2_LISTEN=http2 HTTP2_ON=""
fi
render "$LOAD_DIR/backend.conf.tmpl" "$TMP/backend.conf" "DIR=$TMP" "PORT=$BACKEND_PORT"
render "$LOAD_DIR/nginx-proxy.conf.tmpl" "$TMP/nginx-proxy.conf" \
    "DIR=$TMP" "PORT=$NGX_PORT" "BACKEND=$BACKEND"
# Included by nginx-proxy.conf from $TMP.
render "$LOAD_DIR/nginx-proxy-tls.conf.tmpl" "$TMP/nginx-proxy-tls.conf" \
    "DIR=$TMP" "TLS_PORT=$NGX_TLS_PORT" "HTTP2_LISTEN=$HTTP2_LISTEN" "HTTP2_ON=$HTTP2_ON"
render "$LOAD_DIR/routes.toml.tmpl" "$TMP/routes.toml" "BACKEND=$BACKEND"
render "$LOAD_DIR/haproxy.cfg.tmpl" "$TMP/haproxy.cfg" \
    "PORT=$HAP_PORT" "TLS_PORT=$HAP_TLS_PORT" "PEM=$TMP/haproxy.pem" "BACKEND=$BACKEND"
# PEER_DEFER=0: the peers accept as they do by default, at the handshake
# (branchgate's --defer-accept stays as its variants' flags say).
if [ "$PEER_DEFER" = 0 ]; then
    sed -i 's/ deferred;/;/' "$TMP/nginx-proxy.conf" "$TMP/nginx-proxy-tls.conf"
    sed -i 's/ defer-accept\( \|$\)/\1/' "$TMP/haproxy.cfg"
fi
# PEER_LOG=1: the peers write an access log line per request, to a file
# (nginx: its default combined format, unbuffered; HAProxy: its HTTP log
# format, to stdout, which goes to a file), to compare with a branchgate
# variant run with --access-log.
HAP_OUT="$TMP/haproxy.log"
if [ "$PEER_LOG" = 1 ]; then
    sed -i "s|access_log off;|access_log $TMP/nginx-access.log;|" "$TMP/nginx-proxy.conf"
    sed -i -e 's|^global$|global\n    log stdout format raw local0 info|' \
        -e 's|^defaults$|defaults\n    log global\n    option httplog|' "$TMP/haproxy.cfg"
    HAP_OUT="$TMP/haproxy-access.log"
fi

# Every connection a full handshake: see load/noresume.c.
if [ "$WANT_NORESUME" = 1 ]; then
    cc -O2 -shared -fPIC -o "$TMP/noresume.so" "$LOAD_DIR/noresume.c" -ldl >"$TMP/cc.log" 2>&1 ||
        die "cc could not build load/noresume.c: $(cat "$TMP/cc.log")"
fi

for conf in backend nginx-proxy; do
    "$NGINX" -t -q -p "$TMP" -e "$TMP/$conf-check.log" -c "$TMP/$conf.conf" ||
        die "nginx rejects $TMP/$conf.conf"
done
if is_peer haproxy; then
    "$HAPROXY" -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1 ||
        die "haproxy rejects $TMP/haproxy.cfg: $(cat "$TMP/haproxy-check.log")"
fi

taskset -c "$CLIENT_CPU" "$NGINX" -p "$TMP" -e "$TMP/backend-error.log" -c "$TMP/backend.conf" \
    >"$TMP/backend.out" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
wait_listen "$BACKEND_PID" "$BACKEND_PORT" backend "$TMP/backend-error.log"
BACKEND_WORKER=$(pgrep -P "$BACKEND_PID" | head -n 1 || true)

# ------------------------------------------------------------ measuring ---

TARGETS=(backend "${VARIANTS[@]}" "${PEER_LIST[@]}")
declare -A R_RPS R_P50 R_P99 R_CPU R_RSS R_ERR R_NOISE
# Every round's values, space-separated, per scenario/target; the report shows medians.
declare -A L_RPS L_P50 L_P99 L_CPU L_RSS
PROBLEMS=()

# run_wrk URL CONNS CLOSE NORESUME SECONDS OUTFILE
run_wrk() {
    local url=$1 conns=$2 close=$3 noresume=$4 secs=$5 out=$6
    local hdr=(-H "$HOST_HEADER") env=()
    [ "$close" = 1 ] && hdr+=(-H "Connection: close")
    [ "$AUTH" = 0 ] || hdr+=(-H "$AUTH_HEADER")
    [ "$noresume" = 1 ] && env=("LD_PRELOAD=$TMP/noresume.so")
    env "${env[@]}" taskset -c "$CLIENT_CPU" wrk -t 1 -c "$conns" -d "${secs}s" --timeout 5s \
        -s "$LOAD_DIR/report.lua" "${hdr[@]}" "$url" >"$out" 2>&1 || true
}

# target_url TARGET SCENARIO -> the URL wrk asks, or nothing when TARGET has
# no listener for it. Over TLS the URL names the routed host, so that it is
# the SNI; report.lua resolves it to 127.0.0.1.
target_url() {
    local t=$1 sc=$2
    if [ "${S_TLS[$sc]:-0}" = 1 ]; then
        [ -z "${T_TLS_PORT[$t]}" ] || echo "https://${HOST_HEADER#Host: }:${T_TLS_PORT[$t]}${S_PATH[$sc]}"
    else
        echo "http://127.0.0.1:${T_PORT[$t]}${S_PATH[$sc]}"
    fi
}

field() { # field NAME FILE -> value from the LOADRESULT line
    sed -n "s/.*LOADRESULT.* $1=\\([0-9-]*\\).*/\\1/p" "$2" | head -n 1
}

check_target() { # check_target NAME PORT [TLS_PORT]
    local name=$1 port=$2 tls_port=${3:-} body size host=${HOST_HEADER#Host: } hs
    if [ "$HAVE_CURL" = 1 ]; then
        body=$(curl -sS --max-time 5 -H "$HOST_HEADER" "${CURL_AUTH[@]}" "http://127.0.0.1:$port/") ||
            die "$name: GET / failed"
        [ "$body" = hello ] || die "$name: GET / returned '$body', expected 'hello'"
        size=$(curl -sS --max-time 5 -o /dev/null -w '%{size_download}' -H "$HOST_HEADER" "${CURL_AUTH[@]}" \
            "http://127.0.0.1:$port/64k") || die "$name: GET /64k failed"
        [ "$size" = 65536 ] || die "$name: GET /64k returned $size bytes, expected 65536"
    fi
    [ -n "$tls_port" ] || return 0
    if [ "$HAVE_CURL" = 1 ]; then
        # curl offers h2 by ALPN (wrk offers no ALPN: HTTP/1.1).
        body=$(curl -sS --max-time 5 --cacert "$TMP/certs/default.crt" "${CURL_AUTH[@]}" \
            --resolve "$host:$tls_port:127.0.0.1" "https://$host:$tls_port/") ||
            die "$name: GET https://$host:$tls_port/ failed"
        [ "$body" = hello ] || die "$name: GET / over TLS returned '$body', expected 'hello'"
    fi
    # What a default OpenSSL client (as wrk is) negotiates.
    hs=$(openssl s_client -brief -connect "127.0.0.1:$tls_port" -servername "$host" \
        -CAfile "$TMP/certs/default.crt" </dev/null 2>&1 | awk -F': ' '
            /^Protocol version/ { p = $2 } /^Ciphersuite/ { c = $2 }
            /^(Server|Peer) Temp Key/ { split($2, k, ","); t = k[1] }
            /^Verification: OK/ { ok = 1 }
            END { if (p != "") printf "%s %s %s%s", p, c, t, (ok ? "" : " (certificate not verified)") }' || true)
    [ -n "$hs" ] || die "$name: no TLS handshake on 127.0.0.1:$tls_port"
    T_TLS_INFO[$name]=$hs
}

# measure TARGET URL PID(or empty) SCENARIO
measure() {
    local target=$1 url=$2 pid=$3 sc=$4
    local out="$TMP/wrk/$target-$sc.txt" before=0 after=0 us0="0 0" us1="0 0"
    local sys0 sys1 wrk0 wrk1 be0 be1
    if [ -n "$pid" ]; then
        reset_peak_rss "$pid" || true
        us0=$(user_sys_ticks "$pid")
        before=$(sum_ticks "$us0")
    fi
    be0=$(backend_ticks)
    wrk0=$(child_ticks)
    sys0=$(sys_busy_ticks)
    run_wrk "$url" "${S_CONNS[$sc]}" "${S_CLOSE[$sc]}" "${S_NORESUME[$sc]:-0}" "$DURATION" "$out"
    sys1=$(sys_busy_ticks)
    wrk1=$(child_ticks)
    be1=$(backend_ticks)
    if [ -n "$pid" ]; then
        us1=$(user_sys_ticks "$pid")
        after=$(sum_ticks "$us1")
    fi
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
    local split=- usersys=-
    [ -z "$pid" ] || split=$(rss_split_mib "$pid")
    # The CPU's split, user / system µs per request (in the log only).
    [ -z "$pid" ] || [ "$before" -lt 0 ] || [ "$after" -lt 0 ] || usersys=$(awk -v a="$us0" -v b="$us1" -v hz="$CLK_TCK" -v r="$req" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        if (r > 0) printf "%.1f/%.1f", (y[1] - x[1]) / hz * 1e6 / r, (y[2] - x[2]) / hz * 1e6 / r; else printf "-" }')
    # What the run cost the client core (wrk + backend), µs per request: where
    # that core is the limit (full handshakes, `Connection: close`), req/s
    # follows it, not the proxy's own CPU.
    local client
    client=$(awk -v w=$((wrk1 - wrk0)) -v b=$((be1 - be0)) -v hz="$CLK_TCK" -v r="$req" \
        'BEGIN { if (r > 0) printf "%.1f+%.1f", w / hz * 1e6 / r, b / hz * 1e6 / r; else printf "-" }')
    # The tail's shape (p95 / p98 / p99.9), in the log only.
    local tail
    tail="$(field p95_us "$out")/$(field p98_us "$out")/$(field p999_us "$out")"
    printf '  %-12s %-30s %9s req/s  p50 %7s us  p99 %7s us  (p95/p98/p99.9 %s)  cpu %7s us/req (user/sys %s)  peak RSS %6s MiB (now anon+file %s)  errors %s  other CPU %s%%  client core (wrk+backend) %s us/req\n' \
        "$target" "${S_DESC[$sc]}" "${R_RPS[$sc/$target]}" "$p50" "$p99" "$tail" \
        "${R_CPU[$sc/$target]}" "$usersys" "${R_RSS[$sc/$target]}" "$split" "${R_ERR[$sc/$target]}" "${R_NOISE[$sc/$target]}" "$client"
}

# Targets are interleaved: each scenario runs against every target in turn, so
# slow drift of the machine's speed hits all of them alike.
declare -A T_PORT T_TLS_PORT T_PID T_TLS_INFO
T_PID[backend]=""
# The backend has no TLS listener.
T_TLS_PORT[backend]=""

# measure_or_skip TARGET SCENARIO
measure_or_skip() {
    local target=$1 sc=$2 pid=${T_PID[$1]} url
    url=$(target_url "$target" "$sc")
    if [ -z "$url" ]; then
        # No listener for this scenario (the backend has no TLS): not measured.
        R_RPS[$sc/$target]=- R_P50[$sc/$target]=- R_P99[$sc/$target]=-
        R_CPU[$sc/$target]=- R_RSS[$sc/$target]=- R_ERR[$sc/$target]=- R_NOISE[$sc/$target]=-
        return 0
    fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        PROBLEMS+=("$target: process $pid is gone before $sc")
        log "  $target: process $pid is gone before $sc"
        R_RPS[$sc/$target]=dead R_P50[$sc/$target]=- R_P99[$sc/$target]=-
        R_CPU[$sc/$target]=- R_RSS[$sc/$target]=- R_ERR[$sc/$target]=- R_NOISE[$sc/$target]=-
        return 0
    fi
    measure "$target" "$url" "$pid" "$sc"
}

echo "branchgate load harness: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $NCPU CPUs, DURATION=${DURATION}s, warm-up ${WARMUP}s"
HAP_VERSION=""
is_peer haproxy && HAP_VERSION="HAProxy $("$HAPROXY" -v | awk 'NR == 1 { print $3 }')"
echo "  $($NGINX -v 2>&1)${HAP_VERSION:+, $HAP_VERSION}, $(wrk -v 2>&1 | head -n 1 | cut -c1-60)"
echo "  pinning: proxy under test on core $PROXY_CPU (taskset -c $PROXY_CPU); wrk and backend on core $CLIENT_CPU (taskset -c $CLIENT_CPU)"
echo "  backend:    nginx master $BACKEND_PID, worker ${BACKEND_WORKER:-?} on 127.0.0.1:$BACKEND_PORT, affinity $(affinity "${BACKEND_WORKER:-$BACKEND_PID}")"
T_PORT[backend]=$BACKEND_PORT

for v in "${VARIANTS[@]}"; do
    port=$BG_PORT
    [ "$v" = "${VARIANTS[0]}" ] || port=$(free_port)
    err="$TMP/$v.stderr"
    flags="--workers 1 --log-level warn ${V_ARGS[$v]//@HTPASSWD@/$TMP/htpasswd}"
    case " ${V_ARGS[$v]} " in *" --access-log "*) ;; *) flags+=" --access-log off" ;; esac
    # An HTTPS listener with the bench certificate, unless the variant's own
    # flags say otherwise (e.g. "--https off" for a binary from before HTTPS:
    # its TLS rows are then "-").
    tls_port=""
    case " ${V_ARGS[$v]} " in
        *" --https "*) ;;
        *)
            tls_port=$(free_port)
            flags+=" --https 127.0.0.1:$tls_port --certs $TMP/certs"
            ;;
    esac
    # No admin listener or ACME for the measured proxies (several run at
    # once; their defaults are a fixed port and /data), where the binary knows them.
    if "${V_BIN[$v]}" --help 2>/dev/null | grep -q -- '--admin '; then
        flags+=" --admin off --acme off"
    fi
    V_FLAGS[$v]=$flags
    # shellcheck disable=SC2086 # the flags are words
    taskset -c "$PROXY_CPU" "${V_BIN[$v]}" --http "127.0.0.1:$port" --routes "$TMP/routes.toml" \
        $flags >"$TMP/$v.stdout" 2>"$err" &
    pid=$!
    PIDS+=("$pid")
    wait_listen "$pid" "$port" "$v" "$err"
    [ -z "$tls_port" ] || wait_listen "$pid" "$tls_port" "$v" "$err"
    echo "  $v: pid $pid on 127.0.0.1:$port${tls_port:+ and TLS on 127.0.0.1:$tls_port}, affinity $(affinity "$pid"), threads $(awk '/^Threads:/ { print $2 }' "/proc/$pid/status"), flags: $flags"
    T_PORT[$v]=$port
    T_TLS_PORT[$v]=$tls_port
    T_PID[$v]=$pid
done

if [ "$RUN_NGINX" = 1 ]; then
    taskset -c "$PROXY_CPU" "$NGINX" -p "$TMP" -e "$TMP/proxy-error.log" -c "$TMP/nginx-proxy.conf" \
        >"$TMP/proxy.out" 2>&1 &
    NGX_PID=$!
    PIDS+=("$NGX_PID")
    wait_listen "$NGX_PID" "$NGX_PORT" "nginx proxy" "$TMP/proxy-error.log"
    wait_listen "$NGX_PID" "$NGX_TLS_PORT" "nginx proxy" "$TMP/proxy-error.log"
    NGX_WORKER=""
    for _ in $(seq 1 50); do
        NGX_WORKER=$(pgrep -P "$NGX_PID" | head -n 1 || true)
        [ -n "$NGX_WORKER" ] && break
        sleep 0.1
    done
    [ -n "$NGX_WORKER" ] || die "nginx proxy has no worker process"
    is_peer nginx || ngx_note=" (not measured: only for the resumption check)"
    echo "  nginx:      master $NGX_PID, worker $NGX_WORKER on 127.0.0.1:$NGX_PORT and TLS on 127.0.0.1:$NGX_TLS_PORT, affinity $(affinity "$NGX_WORKER")${ngx_note:-}"
    T_PORT[nginx]=$NGX_PORT
    T_TLS_PORT[nginx]=$NGX_TLS_PORT
    T_PID[nginx]=$NGX_WORKER
fi

# One process in the foreground (-db: no daemon, no master), so the PID
# started here is the one that proxies.
if is_peer haproxy; then
    taskset -c "$PROXY_CPU" "$HAPROXY" -db -f "$TMP/haproxy.cfg" >"$HAP_OUT" 2>>"$TMP/haproxy.log" &
    HAP_PID=$!
    PIDS+=("$HAP_PID")
    wait_listen "$HAP_PID" "$HAP_PORT" haproxy "$TMP/haproxy.log"
    wait_listen "$HAP_PID" "$HAP_TLS_PORT" haproxy "$TMP/haproxy.log"
    echo "  haproxy:    pid $HAP_PID on 127.0.0.1:$HAP_PORT and TLS on 127.0.0.1:$HAP_TLS_PORT, affinity $(affinity "$HAP_PID"), threads $(awk '/^Threads:/ { print $2 }' "/proc/$HAP_PID/status")"
    T_PORT[haproxy]=$HAP_PORT
    T_TLS_PORT[haproxy]=$HAP_TLS_PORT
    T_PID[haproxy]=$HAP_PID
fi

for t in "${TARGETS[@]}"; do
    check_target "$t" "${T_PORT[$t]}" "${T_TLS_PORT[$t]}"
    [ -z "${T_TLS_INFO[$t]:-}" ] || echo "  $t TLS (openssl s_client): ${T_TLS_INFO[$t]}"
done

# Does wrk resume TLS sessions? nginx logs $ssl_session_reused for
# /resume-check: 1 s of Connection: close handshakes, with and without
# noresume.so. handshake-c64 is only valid when none was resumed with it.
# Each check counts only its own lines (?run=, logged last): requests still
# in flight when a wrk run stops are logged later, maybe during the next.
resume_check() { # resume_check NORESUME -> "REUSED TOTAL"
    local out="$TMP/wrk/resume-check-$1.txt"
    : >"$TMP/resume-check.log"
    run_wrk "https://${HOST_HEADER#Host: }:$NGX_TLS_PORT/resume-check?run=$1" 8 1 "$1" 1 "$out"
    awk -v run="$1" '$NF == run { n++; if ($1 == "r") r++ } END { printf "%d %d", r, n }' "$TMP/resume-check.log"
}
RESUME_NOTE=""
if [ "$WANT_TLS" = 1 ]; then
    read -r reused total <<<"$(resume_check 0)"
    RESUME_NOTE="wrk alone resumed $reused of $total handshakes (nginx \$ssl_session_reused)"
    if [ "$total" -eq 0 ]; then
        die "the resumption check made no request through nginx; see $TMP/wrk/resume-check-0.txt"
    fi
    case " ${SCENARIOS[*]} " in
        *" resume-c64 "*) [ "$reused" -gt 0 ] || PROBLEMS+=("resume-c64: wrk resumed no session in the check; it measured full handshakes") ;;
    esac
    if [ "$WANT_NORESUME" = 1 ]; then
        read -r reused total <<<"$(resume_check 1)"
        [ "$total" -gt 0 ] || die "the resumption check with noresume.so made no request; see $TMP/wrk/resume-check-1.txt"
        [ "$reused" -eq 0 ] ||
            die "wrk with noresume.so still resumed $reused of $total handshakes: handshake-c64 would not measure full handshakes"
        RESUME_NOTE+=", with noresume.so $reused of $total"
    fi
    echo "  session resumption check: $RESUME_NOTE"
fi

wait_quiet
echo
if [ "$WANT_TLS" = 1 ]; then
    echo "warm-up: ${WARMUP}s of small bodies at 64 connections per target, in plain HTTP and over TLS"
else
    echo "warm-up: ${WARMUP}s of small bodies at 64 connections per target"
fi
for t in "${TARGETS[@]}"; do
    run_wrk "http://127.0.0.1:${T_PORT[$t]}/" 64 0 0 "$WARMUP" "$TMP/wrk/$t-warmup.txt"
    if [ "$WANT_TLS" = 1 ] && [ -n "${T_TLS_PORT[$t]}" ]; then
        run_wrk "$(target_url "$t" tls-c64)" 64 0 0 "$WARMUP" "$TMP/wrk/$t-warmup-tls.txt"
    fi
done

ratio() { # ratio A B -> A/B with 2 decimals, or n/a
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f", a / b; else printf "n/a" }'
}

# Each round starts one target later: running second or third in a round
# costs a few percent here (seen: the same binary 4-8 % apart by position),
# so rotating spreads that evenly instead of charging it to one target.
declare -A L_PAIR=()
for round in $(seq 1 "$ROUNDS"); do
    shift_by=$(( (round - 1) % ${#TARGETS[@]} ))
    ORDER=("${TARGETS[@]:$shift_by}" "${TARGETS[@]:0:$shift_by}")
    for sc in "${SCENARIOS[@]}"; do
        echo
        echo "[${S_DESC[$sc]}] round $round/$ROUNDS: ${ORDER[*]}"
        wait_quiet
        for t in "${ORDER[@]}"; do
            measure_or_skip "$t" "$sc"
            k="$sc/$t"
            L_RPS[$k]+=" ${R_RPS[$k]}" L_P50[$k]+=" ${R_P50[$k]}" L_P99[$k]+=" ${R_P99[$k]}"
            L_CPU[$k]+=" ${R_CPU[$k]}" L_RSS[$k]+=" ${R_RSS[$k]}"
        done
        # Each variant's CPU per request over the first variant's, this round.
        for v in "${VARIANTS[@]:1}"; do
            L_PAIR[$sc/$v]+=" $(ratio "${R_CPU[$sc/$v]:-}" "${R_CPU[$sc/${VARIANTS[0]}]:-}")"
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
if is_peer nginx && ! kill -0 "$NGX_WORKER" 2>/dev/null; then
    PROBLEMS+=("the nginx proxy worker exited under load")
fi
if is_peer haproxy && ! kill -0 "$HAP_PID" 2>/dev/null; then
    PROBLEMS+=("haproxy exited under load")
fi
for v in "${VARIANTS[@]}"; do
    stop_tree "${T_PID[$v]}"
    forget_pid "${T_PID[$v]}"
done
for pid in ${NGX_PID:+"$NGX_PID"} ${HAP_PID:+"$HAP_PID"}; do
    stop_tree "$pid"
    forget_pid "$pid"
done

# --------------------------------------------------------------- report ---

# result ARRAY KEY -> ${ARRAY[KEY]} (ARRAY: R_CPU, R_RPS, R_P99), or nothing.
result() {
    local -n _vals=$1
    printf '%s' "${_vals[$2]:-}"
}

# better_peer ARRAY min|max SCENARIO -> the peer with the lowest (min) or
# highest (max) value of ARRAY in SCENARIO, or nothing when no peer has a
# number there.
better_peer() {
    local arr=$1 how=$2 sc=$3 p v best="" best_v=""
    for p in "${PEER_LIST[@]}"; do
        v=$(result "$arr" "$sc/$p")
        [[ $v =~ ^[0-9.]+$ ]] || continue
        if [ -z "$best" ] || awk -v a="$v" -v b="$best_v" -v how="$how" \
            'BEGIN { exit !(how == "min" ? a + 0 < b + 0 : a + 0 > b + 0) }'; then
            best=$p best_v=$v
        fi
    done
    echo "$best"
}

# Each variant over each peer, and with several peers over the better one,
# for CPU/req, req/s and p99 in turn.
ratio_table() {
    local metrics=("R_CPU min CPU/req" "R_RPS max req/s" "R_P99 min p99")
    local m arr how label p sc v mine best row head="| scenario | variant |" rule="|---|---|"
    for m in "${metrics[@]}"; do
        read -r arr how label <<<"$m"
        for p in "${PEER_LIST[@]}"; do
            head+=" $label vs $p |" rule+="---:|"
        done
        if [ "${#PEER_LIST[@]}" -gt 1 ]; then
            head+=" $label vs better peer |" rule+="---:|"
        fi
    done
    echo "$head"
    echo "$rule"
    for sc in "${SCENARIOS[@]}"; do
        for v in "${VARIANTS[@]}"; do
            row="| ${S_DESC[$sc]} | $v |"
            for m in "${metrics[@]}"; do
                read -r arr how label <<<"$m"
                mine=$(result "$arr" "$sc/$v")
                for p in "${PEER_LIST[@]}"; do
                    row+=" $(ratio "$mine" "$(result "$arr" "$sc/$p")") |"
                done
                if [ "${#PEER_LIST[@]}" -gt 1 ]; then
                    best=$(better_peer "$arr" "$how" "$sc")
                    if [ -n "$best" ]; then
                        row+=" $(ratio "$mine" "$(result "$arr" "$sc/$best")") ($best) |"
                    else
                        row+=" n/a |"
                    fi
                fi
            done
            echo "$row"
        done
    done
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
    if [ "${#PEER_LIST[@]}" -gt 0 ]; then
        echo
        if [ "${#PEER_LIST[@]}" -gt 1 ]; then
            echo "branchgate / peer ratios (CPU per request and p99: lower is better; req/s: higher is better);" \
                "\"better peer\" is, per column, whichever of ${PEER_LIST[*]} did better (lower CPU/req, higher req/s, lower p99), named in brackets:"
        else
            echo "branchgate / ${PEER_LIST[0]} ratios (CPU per request and p99: lower is better; req/s: higher is better):"
        fi
        echo
        ratio_table
    fi
    if [ "${#VARIANTS[@]}" -gt 1 ]; then
        first=${VARIANTS[0]}
        echo
        echo "each variant / $first (same run):"
        echo
        echo "| scenario | variant | CPU/req | CPU/req, median of per-round ratios (each round) | req/s | p99 |"
        echo "|---|---|---:|---:|---:|---:|"
        for sc in "${SCENARIOS[@]}"; do
            for v in "${VARIANTS[@]:1}"; do
                b="$sc/$v" f="$sc/$first"
                echo "| ${S_DESC[$sc]} | $v | $(ratio "${R_CPU[$b]:-}" "${R_CPU[$f]:-}") | $(median "${L_PAIR[$b]:-}") (${L_PAIR[$b]# }) | $(ratio "${R_RPS[$b]:-}" "${R_RPS[$f]:-}") | $(ratio "${R_P99[$b]:-}" "${R_P99[$f]:-}") |"
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
    echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), $NCPU CPUs, $($NGINX -v 2>&1 | sed 's/.*: //')${HAP_VERSION:+, $HAP_VERSION}, wrk -t1, ${DURATION}s per run after a ${WARMUP}s warm-up; median of $ROUNDS interleaved round(s)."
    echo "Proxy on core $PROXY_CPU; wrk and the backend (nginx, 1 worker) on core $CLIENT_CPU."
    for v in "${VARIANTS[@]}"; do
        echo "$v: ${V_BIN[$v]} ${V_FLAGS[$v]}"
    done
    peer_defer=$([ "$PEER_DEFER" = 0 ] && echo "accepting at the handshake (PEER_DEFER=0)" || echo "deferred accept (TCP_DEFER_ACCEPT)")
    is_peer nginx && echo "nginx: 1 worker, upstream keepalive 512, $peer_defer (benches/load/nginx-proxy.conf.tmpl)."
    is_peer haproxy && echo "haproxy: 1 process (-db), nbthread 1, http-reuse always, pool-max-conn 512, $peer_defer (benches/load/haproxy.cfg.tmpl)."
    if [ "$WANT_TLS" = 1 ]; then
        hap_tls=""
        is_peer haproxy && hap_tls="; haproxy: ssl-min-ver TLSv1.2, tickets on, tune.ssl.cachesize 4096, ALPN http/1.1"
        echo "TLS: one ECDSA P-256 certificate for all; nginx ssl_protocols TLSv1.2 TLSv1.3, ssl_session_tickets on, ssl_session_cache builtin:4096 (branchgate: rustls tickets and a 4096-session cache$hap_tls); wrk sends SNI ${HOST_HEADER#Host: } and no ALPN (HTTP/1.1)."
        for t in "${TARGETS[@]}"; do
            [ -z "${T_TLS_INFO[$t]:-}" ] || echo "$t negotiates (openssl s_client): ${T_TLS_INFO[$t]}."
        done
        echo "Session resumption check: $RESUME_NOTE."
    fi
    if [ "$WANT_NORESUME" = 1 ]; then
        echo "TLS full handshake: every request a new connection and a full handshake (wrk with LD_PRELOAD=load/noresume.c); req/s = handshakes/s, CPU µs/req = CPU per handshake."
    fi
    echo "CPU µs/req: utime+stime of the proxy process (nginx: its worker; haproxy: its only process) over the wrk run / requests."
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
for f in backend-error.log proxy-error.log haproxy.log; do
    if [ -s "$TMP/$f" ]; then
        echo
        echo "$f (last 10 lines):"
        tail -n 10 "$TMP/$f" | sed 's/^/  /'
    fi
done
