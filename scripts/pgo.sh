#!/usr/bin/env bash
# The profile for profile-guided release builds: which branches and calls run
# how often under representative traffic. scripts/lib/release.sh builds with
# it (the benches, scripts/docker-image.sh); the compiler then inlines, lays
# out and splits hot from cold code by it.
#
#   scripts/pgo.sh                                    # rewrites link/pgo.profdata
#   TARGET=x86_64-unknown-linux-musl scripts/pgo.sh   # the image's: link/pgo-musl.profdata
#   scripts/pgo.sh --check    # does the profile still match? Fails when it was
#                             # written with another rustc or Cargo.lock (link/pgo*.stamp;
#                             # then no name matches), or when under MIN_PERCENT (default
#                             # 60) of branchgate's profiled functions are unchanged
#                             # (rustc names each changed one while building as
#                             # scripts/lib/release.sh does)
#
# 1. builds branchgate instrumented (RUSTFLAGS=-Cprofile-generate) in target/pgo-gen;
# 2. runs it under the traffic of scripts/lib/workload.sh (the one
#    scripts/symbol-order.sh profiles: plain HTTP/1.1 small and 64 KiB bodies,
#    keep-alive and Connection: close; HTTPS with HTTP/1.1 and h2; full
#    handshakes) in front of an nginx backend, and stops it with SIGTERM
#    (the counts are written as it exits);
# 3. merges the counts with llvm-profdata (rustup's llvm-tools component,
#    added when missing; it matches the compiler's LLVM), sparse: functions
#    that never ran are left out, and compiled as rarely run; writes the
#    stamp beside it (rustc and LLVM versions, Cargo.lock's hash).
# Rerun it (then scripts/symbol-order.sh, whose list is of the built binary's
# functions) when the request path changes, and after a toolchain or
# dependency update: functions whose code changed since lose their counts. Needs nginx, h2load, wrk, openssl (Debian:
# nginx-light nghttp2-client wrk openssl).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
TARGET=${TARGET:-x86_64-unknown-linux-gnu}
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

# What the profile's names depend on besides the code: the compiler (its
# version is in every symbol's hash, its LLVM reads the file) and the
# dependencies' versions (in their hashes and, through them, branchgate's).
stamp_of() {
    rustc -vV | sed -n 's/^release: /rustc /p; s/^LLVM version: /LLVM /p'
    echo "Cargo.lock $(sha256sum "$ROOT/Cargo.lock" | cut -c1-16)"
}
STAMP=${OUT%.profdata}.stamp

if [ "$MODE" = --check ]; then
    rel=${OUT#"$ROOT"/}
    [ -s "$OUT" ] || die "$rel is missing: run TARGET=$TARGET scripts/pgo.sh"
    if [ "$(stamp_of)" != "$(cat "$STAMP" 2>/dev/null)" ]; then
        echo "pgo profile ($rel): written for $(paste -sd ' ' "$STAMP" 2>/dev/null || echo '(no stamp)'), built now with $(stamp_of | paste -sd ' '): it matches nothing; run TARGET=$TARGET scripts/pgo.sh" >&2
        exit 1
    fi
    # Functions compiled in branchgate's own crates (internal ones are named
    # "branchgate.<hash>-cgu.N;..."); only theirs can change while the stamp
    # holds, and rustc names each one that did.
    ours=$("$profdata" show --all-functions "$OUT" | grep -cE '^  (branchgate\.|[^ ;]*10branchgate).*:$' || true)
    [ "${ours:-0}" -gt 0 ] || die "$rel holds none of branchgate's functions"
    # The release build as the benches and the image get it (cached when
    # they built it already).
    BRANCHGATE_PGO=on release_build "$TARGET" >/dev/null
    kept=$((ours > RELEASE_STALE ? ours - RELEASE_STALE : 0))
    pct=$((100 * kept / ours))
    echo "pgo profile ($rel): $kept of $ours profiled branchgate functions unchanged ($pct%), $(stamp_of | paste -sd ' ')"
    if [ "$pct" -lt "$MIN_PERCENT" ]; then
        echo "pgo profile: below $MIN_PERCENT%: run TARGET=$TARGET scripts/pgo.sh to rewrite it" >&2
        exit 1
    fi
    exit 0
fi

# shellcheck source=scripts/lib/procs.sh
. "$ROOT/scripts/lib/procs.sh"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# A fixed directory for the counts: the same RUSTFLAGS next time, so a rerun
# with unchanged code does not rebuild.
gen_dir="$(target_dir)/pgo-gen"
raw="$gen_dir/profraw-$TARGET"
rm -rf "$raw"
log "instrumented build ($TARGET)"
musl_cc "$TARGET"
(cd "$ROOT" && CARGO_TARGET_DIR="$gen_dir" RUSTFLAGS="-Cprofile-generate=$raw" \
    cargo build --release --target "$TARGET" --bin branchgate >&2)
gen_bin="$gen_dir/$TARGET/release/branchgate"

# shellcheck source=scripts/lib/ports.sh
. "$ROOT/scripts/lib/ports.sh"
# shellcheck source=scripts/lib/workload.sh
. "$ROOT/scripts/lib/workload.sh"
workload_backend
log "training run"
workload_start "$gen_bin"
workload_traffic
# SIGTERM: it shuts down and exits, writing the counts (not if it has to be killed).
stop_pid "$BG_PID"
compgen -G "$raw/*.profraw" >/dev/null ||
    die "the training run wrote no profile to $raw: $(tail -n 5 "$TMP/bg.log")"

"$profdata" merge -sparse -o "$TMP/merged.profdata" "$raw"/*.profraw
mv "$TMP/merged.profdata" "$OUT"
stamp_of >"$STAMP"
log "wrote ${OUT#"$ROOT"/} ($(du -k "$OUT" | cut -f1) KiB) and ${STAMP#"$ROOT"/}"
