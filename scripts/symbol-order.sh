#!/usr/bin/env bash
# The release binary's code layout: which functions LLD places first in .text
# (build.rs passes link/symbol-order.txt to the linker).
#
#   scripts/symbol-order.sh            # profile the release binary, rewrite link/symbol-order.txt
#   scripts/symbol-order.sh --check    # how much of the list the release binary still defines
#   BG_BIN=path scripts/symbol-order.sh [--check]   # another binary instead of building one
#   TARGET=x86_64-unknown-linux-musl scripts/symbol-order.sh [--check]
#                                      # the image's static build: link/symbol-order-musl.txt
#
# The list comes from callgrind (names as the symbol table has them): the
# functions run while branchgate proxies plain HTTP/1.1 (small and 64 KiB
# bodies, keep-alive and Connection: close) and HTTPS (HTTP/1.1 and h2, full
# handshakes) to an nginx backend, hottest first; then those only start-up
# runs; then those only shutdown runs. Rerun it after a dependency or
# toolchain update (symbol hashes change with them; LLD skips names it does
# not find, so a stale list costs memory, not correctness) — `--check` says
# when: it fails when under MIN_PERCENT (default 60) of the listed names are found.
# Rerun it too when a type on the request path changes (the handler's future,
# the body types): hyper's server code is instantiated for them, and those
# new names are hot but unlisted while the old ones still count as found
# (the request future's rework left 98 % found and 2 MiB more code resident).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
TARGET=${TARGET:-x86_64-unknown-linux-gnu}
case "$TARGET" in
    x86_64-unknown-linux-gnu) ORDER="$ROOT/link/symbol-order.txt" ;;
    x86_64-unknown-linux-musl) ORDER="$ROOT/link/symbol-order-musl.txt" ;;
    *)
        echo "symbol-order.sh: TARGET=$TARGET has no code layout (x86_64-unknown-linux-gnu or -musl)" >&2
        exit 2
        ;;
esac
MIN_PERCENT=${MIN_PERCENT:-60}
MODE=write
case "${1:-}" in
    --check) MODE=check ;;
    '') ;;
    *)
        echo "symbol-order.sh: unknown argument '$1' (expected --check or nothing)" >&2
        exit 2
        ;;
esac

log() { printf '%s\n' "$*" >&2; }
die() {
    log "symbol-order.sh: $*"
    exit 1
}

if [ -z "${BG_BIN:-}" ]; then
    # shellcheck source=scripts/lib/release.sh
    . "$ROOT/scripts/lib/release.sh"
    # As scripts/docker-image.sh and the benches build it (with its profile).
    BG_BIN=$(release_build "$TARGET")
fi
[ -x "$BG_BIN" ] || die "no binary at $BG_BIN"

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# Function symbols the binary defines: "size name".
nm -S -t d --defined-only "$BG_BIN" | awk 'NF == 4 && $3 ~ /^[tT]$/ { print $2 + 0, $4 }' >"$TMP/defined"
[ -s "$TMP/defined" ] || die "$BG_BIN has no symbol table (stripped?)"

if [ "$MODE" = check ]; then
    [ -s "$ORDER" ] || die "$ORDER is missing"
    awk -v min="$MIN_PERCENT" -v list="${ORDER#"$ROOT"/}" '
        FNR == NR { size[$2] = $1; next }
        /^#/ || NF == 0 { next }
        { listed++; if ($1 in size) { found++; bytes += size[$1] } }
        END {
            # The bytes a listed name stood for when the list was written are
            # unknown; the share of names found is the measure.
            pct = listed ? 100 * found / listed : 0
            printf "symbol order (%s): %d of %d listed functions found (%.0f%%), %.0f KiB of code laid out first\n", list, found, listed, pct, bytes / 1024
            if (pct < min) {
                printf "symbol order: below %d%%: rerun scripts/symbol-order.sh (with TARGET= for the musl list) to rewrite it\n", min
                exit 1
            }
        }' "$TMP/defined" "$ORDER"
    exit 0
fi

for tool in valgrind callgrind_control; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (Debian: valgrind)"
done
# shellcheck source=scripts/lib/ports.sh
. "$ROOT/scripts/lib/ports.sh"
# shellcheck source=scripts/lib/workload.sh
. "$ROOT/scripts/lib/workload.sh"
workload_backend

# --dump-instr=no: costs per function are enough. Dump 1 is start-up, dump 2
# the traffic, the final file shutdown.
workload_start valgrind --tool=callgrind --demangle=no --callgrind-out-file="$TMP/cg.out" "$BG_BIN"
sleep 1
callgrind_control -d startup "$BG_PID" >/dev/null
workload_traffic
callgrind_control -d traffic "$BG_PID" >/dev/null
for _ in $(seq 1 100); do
    [ -e "$TMP/cg.out.2" ] && grep -q '^totals:' "$TMP/cg.out.2" && break
    sleep 0.1
done
kill "$BG_PID"
wait "$BG_PID" 2>/dev/null || true
for f in "$TMP/cg.out.1" "$TMP/cg.out.2" "$TMP/cg.out"; do
    grep -q '^totals:' "$f" 2>/dev/null || die "callgrind wrote no complete $f"
done

# Self cost per function of the binary, per dump. Callgrind compresses names:
# "fn=(12) name" once, "fn=(12)" after, ids shared by fn= and cfn= and across
# the dumps of one run; the line after "calls=" is a call's inclusive cost.
awk -v bin="$(readlink -f "$BG_BIN")" '
    FNR == 1 { part++ }
    skip { skip = 0; next }
    /^ob=/ || /^cob=/ {
        id = $0; sub(/^c?ob=\(/, "", id); sub(/\).*/, "", id)
        name = $0; if (sub(/^c?ob=\([0-9]+\) /, "", name)) obj[id] = name
        if ($0 ~ /^ob=/) cur_ob = obj[id]
        next
    }
    /^c?fn=/ {
        id = $0; sub(/^c?fn=\(/, "", id); sub(/\).*/, "", id)
        name = $0; if (sub(/^c?fn=\([0-9]+\) /, "", name)) fn[id] = name
        if ($0 ~ /^fn=/) { cur = fn[id]; mine = (cur_ob == bin) }
        next
    }
    /^calls=/ { skip = 1; next }
    /^[0-9+*-]/ { if (mine && NF >= 2) cost[part, cur] += $2; if (mine) seen[part, cur] = 1 }
    END { for (k in seen) { split(k, a, SUBSEP); print a[1], cost[k], a[2] } }
' "$TMP/cg.out.1" "$TMP/cg.out.2" "$TMP/cg.out" >"$TMP/costs"

# Order: traffic (part 2) by cost, then start-up (1), then shutdown (3); each
# name once, only names the binary defines as functions.
mkdir -p "$(dirname "$ORDER")"
{
    echo "# Functions LLD lays out first in the release binary's .text (see build.rs)."
    echo "# Written by scripts/symbol-order.sh from callgrind; do not edit by hand."
    awk '$1 == 2' "$TMP/costs" | sort -k2,2nr
    awk '$1 == 1' "$TMP/costs" | sort -k2,2nr
    awk '$1 == 3' "$TMP/costs" | sort -k2,2nr
} | awk 'FNR == NR { defined[$2] = 1; next }
         /^#/ { print; next }
         ($3 in defined) && !($3 in done) { done[$3] = 1; print $3 }' "$TMP/defined" - >"$TMP/order"
n=$(grep -vc '^#' "$TMP/order")
[ "$n" -gt 100 ] || die "only $n functions profiled: something went wrong ($TMP kept? see $TMP/bg.log)"
mv "$TMP/order" "$ORDER"
log "symbol-order.sh: wrote $n functions to $ORDER"
