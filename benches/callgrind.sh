#!/usr/bin/env bash
# User-space instructions per proxied request, branchgate vs nginx, counted by
# callgrind. Instruction counts do not move with the machine's load the way
# CPU time does, so this is the stable companion to benches/load.sh.
#
#   benches/callgrind.sh                # N=20000 requests per scenario
#   N=50000 benches/callgrind.sh
#   KEEP=/tmp/prof benches/callgrind.sh   # keep the callgrind profiles
#   BG_ARGS="--access-log common" benches/callgrind.sh   # branchgate flags (default: --access-log off)
#   AUTH="Basic YmVuY2g6YmVuY2gtcGFzc3dvcmQ=" benches/callgrind.sh   # every request carries this Authorization
#   CLOSE_SECONDS=0 benches/callgrind.sh   # skip the Connection: close row (default 5 s of wrk)
#   CACHE=1 benches/callgrind.sh        # also simulate the caches (--cache-sim=yes): adds
#                                       # L1 instruction and data misses per request
#
# Both proxies run under valgrind in front of the same nginx backend (not under
# valgrind). After a warm-up, counters are zeroed, h2load sends N keep-alive
# HTTP/1.1 requests over 16 connections, and the counters are dumped: Ir / N is
# the user-space instruction count per request (kernel work, about two thirds
# of a proxy's CPU on loopback, is not counted). The `close` row is wrk with
# `Connection: close` over 16 connections for CLOSE_SECONDS (a new client
# connection per request; h2load does not reconnect), divided by the requests
# wrk completed. The top functions of branchgate's profile are printed too.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
N=${N:-20000}
KEEP=${KEEP:-}
CLOSE_SECONDS=${CLOSE_SECONDS:-5}
case "$N" in '' | *[!0-9]*) echo "N must be a whole number" >&2; exit 2 ;; esac
case "$CLOSE_SECONDS" in '' | *[!0-9]*) echo "CLOSE_SECONDS must be a whole number" >&2; exit 2 ;; esac
CACHE=${CACHE:-0}
case "$CACHE" in 0) VG_CACHE=() ;; 1) VG_CACHE=(--cache-sim=yes) ;; *) echo "CACHE must be 0 or 1, got '$CACHE'" >&2; exit 2 ;; esac

for tool in nginx h2load valgrind callgrind_control wrk; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light nghttp2-client valgrind wrk >/dev/null
            break
        fi
        echo "callgrind.sh: $tool is missing" >&2
        exit 1
    fi
done
NGINX=$(command -v nginx)

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$KEEP" ]; then
        mkdir -p "$KEEP" && cp "$TMP"/*.profile "$KEEP"/ 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

log() { printf '%s\n' "$*" >&2; }
die() {
    log "callgrind.sh: $*"
    exit 1
}
# shellcheck source=scripts/lib/ports.sh
. "$ROOT/scripts/lib/ports.sh"
wait_port() { # wait_port PORT
    for _ in $(seq 1 300); do
        ss -ltn "sport = :$1" | grep -q LISTEN && return 0
        sleep 0.1
    done
    echo "callgrind.sh: nothing listens on $1" >&2
    exit 1
}

if [ -z "${BG_BIN:-}" ]; then
    # shellcheck source=scripts/lib/release.sh
    . "$ROOT/scripts/lib/release.sh"
    BG_BIN=$(release_build)
fi

AUTH_HDR=()
[ -z "${AUTH:-}" ] || AUTH_HDR=(-H "authorization: $AUTH")

BACKEND=$(free_port)
mkdir -p "$TMP/www" "$TMP/backend-tmp" "$TMP/proxy-tmp"
head -c 65536 /dev/zero | tr '\0' x >"$TMP/www/64k"
# nginx workers run as nobody: let them read the files they serve.
chmod a+rx "$TMP"
chmod -R a+rX "$TMP/www"
sed -e "s|@DIR@|$TMP|g" -e "s|@PORT@|$BACKEND|g" "$SCRIPT_DIR/load/backend.conf.tmpl" >"$TMP/backend.conf"
"$NGINX" -p "$TMP" -e "$TMP/backend-error.log" -c "$TMP/backend.conf" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$BACKEND"

# Proxy ports; nginx runs as one process (no master) so valgrind sees its work.
BG=$(free_port)
NGX=$(free_port)
printf '[[route]]\nhost = "bench.local"\nupstreams = ["127.0.0.1:%s"]\n' "$BACKEND" >"$TMP/routes.toml"
sed -e "s|@DIR@|$TMP|g" -e "s|@PORT@|$NGX|g" -e "s|@BACKEND@|127.0.0.1:$BACKEND|g" \
    -e 's|^master_process on;|master_process off;|' \
    "$SCRIPT_DIR/load/nginx-proxy.conf.tmpl" >"$TMP/proxy.conf"

valgrind --tool=callgrind "${VG_CACHE[@]}" --callgrind-out-file="$TMP/bg.out" \
    "$BG_BIN" --http "127.0.0.1:$BG" --https off --admin off --routes "$TMP/routes.toml" --workers 1 \
    --log-level warn ${BG_ARGS:---access-log off} >"$TMP/bg.log" 2>&1 &
BG_PID=$!
PIDS+=("$BG_PID")
valgrind --tool=callgrind "${VG_CACHE[@]}" --callgrind-out-file="$TMP/ngx.out" \
    "$NGINX" -p "$TMP" -e "$TMP/proxy-error.log" -c "$TMP/proxy.conf" >"$TMP/ngx.log" 2>&1 &
NGX_PID=$!
PIDS+=("$NGX_PID")
wait_port "$BG"
wait_port "$NGX"

# measure NAME PID PORT PATH -> prints "instructions requests I1-misses D1-misses"
# (the misses 0 without CACHE=1)
measure() {
    local name=$1 pid=$2 port=$3 path=$4 dump requests=$N
    if [ "$path" = close ]; then
        local wrk=(wrk -t1 -c16 -H 'Host: bench.local' -H 'Connection: close' "${AUTH_HDR[@]}")
        "${wrk[@]}" -d1s "http://127.0.0.1:$port/" >/dev/null
        callgrind_control -z "$pid" >/dev/null
        "${wrk[@]}" -d"${CLOSE_SECONDS}s" "http://127.0.0.1:$port/" >"$TMP/wrk-$name.txt"
        if grep -qE "Socket errors|Non-2xx" "$TMP/wrk-$name.txt"; then
            echo "callgrind.sh: $name: wrk reported errors:" >&2
            cat "$TMP/wrk-$name.txt" >&2
            exit 1
        fi
        requests=$(awk '/requests in/ { print $1 }' "$TMP/wrk-$name.txt")
    else
        h2load --h1 -n 2000 -c 16 -H ':authority: bench.local' "${AUTH_HDR[@]}" "http://127.0.0.1:$port$path" >/dev/null
        callgrind_control -z "$pid" >/dev/null
        h2load --h1 -n "$N" -c 16 -H ':authority: bench.local' "${AUTH_HDR[@]}" "http://127.0.0.1:$port$path" >"$TMP/h2load-$name.txt"
        grep -q "succeeded, 0 failed, 0 errored" "$TMP/h2load-$name.txt" || {
            echo "callgrind.sh: $name: h2load reported errors:" >&2
            grep -E "requests:|status codes:" "$TMP/h2load-$name.txt" >&2
            exit 1
        }
    fi
    rm -f "$TMP/$name.out".*
    callgrind_control -d "$pid" >/dev/null
    for _ in $(seq 1 100); do
        dump=$(ls "$TMP/$name.out".* 2>/dev/null | tail -n 1 || true)
        [ -n "$dump" ] && grep -q '^totals:' "$dump" && break
        sleep 0.1
    done
    # totals: in the order of events: (Ir, then with the cache simulation
    # Dr Dw I1mr D1mr D1mw ...).
    awk -v n="$requests" '/^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
        /^totals:/ { print $col["Ir"], n, (col["I1mr"] ? $col["I1mr"] : 0),
            (col["D1mr"] ? $col["D1mr"] + $col["D1mw"] : 0) }' "$dump"
}

# ratio A A_REQUESTS B B_REQUESTS -> (A per request) / (B per request)
ratio() { awk -v a="$1" -v an="$2" -v b="$3" -v bn="$4" 'BEGIN { printf "%.2f", b ? (a / an) / (b / bn) : 0 }'; }

scenarios=("small:/" "64k:/64k")
[ "$CLOSE_SECONDS" = 0 ] || scenarios+=("close:close")
printf '%-22s %14s %14s %8s\n' "scenario" "branchgate" "nginx" "ratio"
for sc in "${scenarios[@]}"; do
    name=${sc%%:*}
    path=${sc#*:}
    # Command substitutions, not `< <(…)`: a failed measure stops the script.
    out=$(measure bg "$BG_PID" "$BG" "$path")
    read -r b bn bi bd <<<"$out"
    cp "$(ls "$TMP"/bg.out.* | tail -n 1)" "$TMP/bg-$name.profile"
    out=$(measure ngx "$NGX_PID" "$NGX" "$path")
    read -r n nn ni nd <<<"$out"
    printf '%-22s %14s %14s %8s\n' "$name (Ir/request)" "$((b / bn))" "$((n / nn))" "$(ratio "$b" "$bn" "$n" "$nn")"
    if [ "$CACHE" = 1 ]; then
        printf '%-22s %14s %14s %8s\n' "$name (I1 misses)" "$((bi / bn))" "$((ni / nn))" "$(ratio "$bi" "$bn" "$ni" "$nn")"
        printf '%-22s %14s %14s %8s\n' "$name (D1 misses)" "$((bd / bn))" "$((nd / nn))" "$(ratio "$bd" "$bn" "$nd" "$nn")"
    fi
done
echo
echo "branchgate, small body: top functions by instructions (inclusive of nothing, self cost)"
callgrind_annotate --inclusive=no --threshold=90 "$TMP/bg-small.profile" 2>/dev/null | grep -E "^ *[0-9,]+ \(" | head -40
