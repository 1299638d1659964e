#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time; fails if any
# target finds a crash (or a leak, timeout or OOM: libFuzzer exits non-zero).
#
#   scripts/fuzz.sh                 # every target, FUZZ_SECONDS each (default 30)
#   FUZZ_SECONDS=300 scripts/fuzz.sh lookup_diff
#
# Without a nightly toolchain it skips (exit 0) unless CI=true, where it
# installs nightly and cargo-fuzz first. Corpora (fuzz/corpus) and crash
# artifacts (fuzz/artifacts) stay out of git; fuzz/dicts/<target>.dict, when
# present, is passed to libFuzzer as a dictionary.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-30}"

skip() {
    echo "================================================================"
    echo "SKIP: $1"
    echo "      fuzz targets were NOT run (set CI=true to install and run)"
    echo "================================================================"
    exit 0
}

if ! rustup toolchain list | grep -q '^nightly'; then
    if [[ "${CI:-}" != "true" ]]; then
        skip "no nightly toolchain"
    fi
    echo "fuzz: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    if [[ "${CI:-}" != "true" ]]; then
        skip "cargo-fuzz is not installed (cargo install cargo-fuzz --locked)"
    fi
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
if [[ ${#targets[@]} -eq 0 ]]; then
    echo "fuzz: no targets found in fuzz/" >&2
    exit 1
fi

# Build every target up front so that FUZZ_SECONDS is spent fuzzing.
cargo +nightly fuzz build

failed=()
for target in "${targets[@]}"; do
    args=("-max_total_time=${seconds}")
    if [[ -f "fuzz/dicts/${target}.dict" ]]; then
        args+=("-dict=${PWD}/fuzz/dicts/${target}.dict")
    fi
    echo "fuzz: ${target} for ${seconds}s"
    if ! cargo +nightly fuzz run "${target}" -- "${args[@]}"; then
        failed+=("${target}")
        echo "fuzz: ${target} FAILED; the reproducer is in fuzz/artifacts/${target}/" >&2
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    echo "fuzz: replay with: cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s) ran ${seconds}s each without a failure"
