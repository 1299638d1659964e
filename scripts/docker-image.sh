#!/usr/bin/env bash
# Builds the branchgate container image from a binary built here on the host:
#   scripts/docker-image.sh                                  # image branchgate:test
#   IMAGE=branchgate:dev CARGO_BUILD_JOBS=1 scripts/docker-image.sh
# 1. makes sure the musl target (rustup) and musl-gcc (Debian's musl-tools, for
#    ring's C code; installed when root) are there;
# 2. cargo build --release --target x86_64-unknown-linux-musl --bin branchgate
#    with link/pgo-musl.profdata (scripts/lib/release.sh; BRANCHGATE_PGO=off
#    builds without it; cargo itself reads CARGO_BUILD_JOBS and CARGO_TARGET_DIR);
# 3. checks the binary is static, strips its debug info, and builds ONLY the
#    runtime stage of the top-level Dockerfile around it (see the comment at
#    the top of Dockerfile): no base image is pulled, so this works where no
#    registry can be reached;
# 4. checks the image starts (`--version`) and prints one line:
#    "image branchgate:test: 12.3 MB".
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-branchgate:test}
target=x86_64-unknown-linux-musl
marker='# --- runtime stage ---'

log() { printf '\n==> %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

if ! rustup target list --installed | grep -qx "$target"; then
    log "adding the $target target"
    rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing musl-tools"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
    else
        log "WARNING: musl-gcc missing (not root on Debian); ring's C code falls back to cc"
    fi
fi

ROOT=$PWD
# shellcheck source=scripts/lib/release.sh
. scripts/lib/release.sh
start=$SECONDS
bin=$(release_build "$target")
log "musl release build: $((SECONDS - start)) s"

# ldd (libc-bin, always on Debian; `file` may not be) names no library for a static binary.
if ! ldd "$bin" 2>&1 | grep -Eq 'not a dynamic executable|statically linked'; then
    die "$bin is not statically linked: $(ldd "$bin" 2>&1 | head -n 3)"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/branchgate-image.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
ctx=$tmp/context # the binary and the Dockerfile, nothing else
mkdir "$ctx"
cp "$bin" "$ctx/branchgate"
# The release profile keeps line tables (debug = "line-tables-only") for
# profiling on the host; the image drops them (about 37 MB -> 9 MB) but keeps
# the symbol names, so a backtrace still names functions.
if command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$ctx/branchgate"
else
    log "WARNING: no strip (binutils); the image keeps the binary's debug info"
fi
# The runtime stage, its `COPY --from=build SRC /branchgate` made a plain COPY
# of the binary in this context.
sed -n "/^$marker\$/,\$p" Dockerfile |
    sed -E 's#^COPY --from=build [^ ]+ /branchgate$#COPY branchgate /branchgate#' >"$ctx/Dockerfile"
if ! grep -qx 'COPY branchgate /branchgate' "$ctx/Dockerfile" || grep -q -- '--from=' "$ctx/Dockerfile"; then
    die "Dockerfile: no runtime stage after '$marker' with one 'COPY --from=build ... /branchgate' line"
fi

log "docker build -t $IMAGE (runtime stage only)"
# Quiet unless it fails: without buildx the CLI warns on every build.
docker build -q -t "$IMAGE" "$ctx" >"$tmp/build.log" 2>&1 || {
    cat "$tmp/build.log" >&2
    die "docker build failed"
}
# --network none: starting the binary needs no network, and the check should
# not fail because of the engine's bridge.
version=$(docker run --rm --network none "$IMAGE" --version) ||
    die "the image does not start: docker run --rm $IMAGE --version"
log "the image runs: $version"

bytes=$(docker image inspect -f '{{.Size}}' "$IMAGE")
awk -v i="$IMAGE" -v b="$bytes" 'BEGIN { printf "image %s: %.1f MB\n", i, b / 1000000 }'
