#!/usr/bin/env bash
# The profile for profile-guided release builds: which branches and calls run
# how often under representative traffic. scripts/lib/release.sh builds with
# it (the benches, scripts/docker-image.sh); the compiler then inlines, lays
# out and splits hot from cold code by it.
#
#   scripts/pgo.sh                                    # rewrites link/pgo.profdata
#   TARGET=x86_64-unknown-linux-musl scripts/pgo.sh   # the image's: link/pgo-musl.profdata
#   scripts/pgo.sh --check    # how much of the profile still matches the code:
#                             # builds as scripts/lib/release.sh does and counts the
#                             # functions rustc says changed; fails under MIN_PERCENT
#                             # (default 60) unchanged
#
# 1. builds branchgate instrumented (RUSTFLAGS=-Cprofile-generate) in target/pgo-gen;
# 2. runs it under the traffic of scripts/lib/workload.sh (the one
#    scripts/symbol-order.sh profiles: plain HTTP/1.1 small and 64 KiB bodies,
#    keep-alive and Connection: close; HTTPS with HTTP/1.1 and h2; full
#    handshakes) in front of an nginx backend, and stops it with SIGTERM
#    (the counts are written as it exits);
# 3. merges the counts with llvm-profdata (rustup's llvm-tools component,
#    added when missing; it matches the compiler's LLVM), sparse: functions
#    that never ran are left out, and compiled as rarely run.
# Rerun it (then scripts/symbol-order.sh, whose list is of the built binary's
# functions) when the request path changes: functions whose code changed since
# lose their counts until then. Needs nginx, h2load, wrk, openssl (Debian:
# nginx-light nghttp2-client wrk openssl).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
TARGET=${TARGET:-x86_64-unknown-linux-gnu}
TARGET_BASE=${CARGO_TARGET_DIR:-$ROOT/target}
MIN_PERCENT=${MIN_PERCENT:-60}
MODE=${1:-write}
if [ "$MODE" != write ] && [ "$MODE" != --check ]; then
    echo "pgo.sh: unknown argument '$MODE' (expected --check or nothing)" >&2
    exit 2
fi

log() { printf '==> pgo: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    log "adding rustup's llvm-tools component (llvm-profdata)"
    rustup component add llvm-tools >&2 || die "rustup component add llvm-tools failed"
fi
[ -x "$profdata" ] || die "no llvm-profdata at $profdata"
# shellcheck source=scripts/lib/release.sh
. "$ROOT/scripts/lib/release.sh"
OUT=$(pgo_profile "$TARGET")
[ -n "$OUT" ] || die "TARGET=$TARGET has no profile (x86_64-unknown-linux-gnu or -musl)"
musl_cc "$TARGET"

if [ "$MODE" = --check ]; then
    [ -s "$OUT" ] || die "${OUT#"$ROOT"/} is missing: run scripts/pgo.sh${TARGET:+ with TARGET=$TARGET}"
    total=$("$profdata" show "$OUT" | sed -n 's/^Total functions: //p')
    [ "${total:-0}" -gt 0 ] || die "${OUT#"$ROOT"/} holds no function"
    # The release build as the benches and the image get it (cached when
    # they built it already): rustc names each function that changed.
    release_build "$TARGET" >/dev/null
    pct=$((100 * (total - RELEASE_STALE) / total))
    echo "pgo profile (${OUT#"$ROOT"/}): $((total - RELEASE_STALE)) of $total profiled functions unchanged ($pct%)"
    if [ "$pct" -lt "$MIN_PERCENT" ]; then
        echo "pgo profile: below $MIN_PERCENT%: rerun scripts/pgo.sh${TARGET:+ with TARGET=$TARGET} to rewrite it" >&2
        exit 1
    fi
    exit 0
fi

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# A fixed directory for the counts: the same RUSTFLAGS next time, so a rerun
# with unchanged code does not rebuild.
raw="$TARGET_BASE/pgo-gen/profraw-$TARGET"
rm -rf "$raw"
log "instrumented build ($TARGET)"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_BASE/pgo-gen" RUSTFLAGS="-Cprofile-generate=$raw" \
    cargo build --release --target "$TARGET" --bin branchgate >&2)
gen_bin="$TARGET_BASE/pgo-gen/$TARGET/release/branchgate"

# shellcheck source=scripts/lib/ports.sh
. "$ROOT/scripts/lib/ports.sh"
# shellcheck source=scripts/lib/workload.sh
. "$ROOT/scripts/lib/workload.sh"
workload_backend
log "training run"
workload_start "$gen_bin"
workload_traffic
kill -TERM "$BG_PID"
wait "$BG_PID" || die "the instrumented branchgate exited with $?: $(tail -n 5 "$TMP/bg.log")"
compgen -G "$raw/*.profraw" >/dev/null || die "the training run wrote no profile to $raw"

"$profdata" merge -sparse -o "$TMP/merged.profdata" "$raw"/*.profraw
mv "$TMP/merged.profdata" "$OUT"
log "wrote ${OUT#"$ROOT"/} ($(du -k "$OUT" | cut -f1) KiB)"
