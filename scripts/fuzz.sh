#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time; fails if any
# target finds a crash (or a leak, timeout or OOM: libFuzzer exits non-zero).
#
#   scripts/fuzz.sh                 # every target, FUZZ_SECONDS each (default 30)
#   FUZZ_SECONDS=300 scripts/fuzz.sh lookup_diff
#   FUZZ_REPORT=FILE: a failed target's newest artifact is appended to FILE
#   as one line of base64 (scripts/test.sh prints it at the end of its log)
#
# Without a nightly toolchain it skips (exit 0) unless CI=true, where it
# installs nightly and cargo-fuzz first (a nightly that cannot be installed is
# still a loud skip: the targets run where a nightly toolchain is available). Corpora (fuzz/corpus) and crash
# artifacts (fuzz/artifacts) stay out of git; fuzz/seeds/<target>/ and
# fuzz/dicts/<target>.dict, when present, are committed starting inputs and a
# libFuzzer dictionary.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-30}"
if [[ ! "${seconds}" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz: FUZZ_SECONDS must be a positive whole number, not '${seconds}'" >&2
    exit 2
fi

skip() {
    echo "================================================================"
    echo "SKIP: $1"
    echo "      fuzz targets were NOT run (set CI=true to install and run)"
    echo "================================================================"
    exit 0
}

# Captured first: `grep -q` closing the pipe early would fail it under pipefail.
toolchains="$(rustup toolchain list 2>/dev/null || true)"
if ! grep -q '^nightly' <<<"${toolchains}"; then
    if [[ "${CI:-}" != "true" ]]; then
        skip "no nightly toolchain"
    fi
    echo "fuzz: installing the nightly toolchain"
    # The targets run "when a nightly toolchain is available": one that cannot
    # be installed here is a loud skip, not a failure.
    rustup toolchain install nightly --profile minimal || skip "no nightly toolchain, and it cannot be installed here"
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

# The crate forbids unsafe code, so AddressSanitizer buys little here and
# doubles build time; FUZZ_SANITIZER=address turns it back on.
san=(--sanitizer "${FUZZ_SANITIZER:-none}")

# Build every target up front so that FUZZ_SECONDS is spent fuzzing.
cargo +nightly fuzz build "${san[@]}"

failed=()
for target in "${targets[@]}"; do
    # New inputs go to the first (git-ignored) corpus directory; committed
    # seeds, when present, are read alongside it.
    corpora=("fuzz/corpus/${target}")
    mkdir -p "${corpora[0]}"
    if [[ -d "fuzz/seeds/${target}" ]]; then
        corpora+=("fuzz/seeds/${target}")
    fi
    args=("-max_total_time=${seconds}")
    if [[ -f "fuzz/dicts/${target}.dict" ]]; then
        args+=("-dict=${PWD}/fuzz/dicts/${target}.dict")
    fi
    echo "fuzz: ${target} for ${seconds}s"
    started=$(mktemp)
    if ! cargo +nightly fuzz run "${san[@]}" "${target}" "${corpora[@]}" -- "${args[@]}"; then
        failed+=("${target}")
        echo "fuzz: ${target} FAILED; the reproducer is in fuzz/artifacts/${target}/" >&2
        # The artifact this run wrote, as base64, for a log that outlives the
        # machine (CI's): `base64 -d > crash` and replay it.
        artifact=$(find "fuzz/artifacts/${target}" -type f -newer "${started}" 2>/dev/null | head -n 1 || true)
        if [[ -n "${artifact}" && -n "${FUZZ_REPORT:-}" ]]; then
            size=$(stat -c %s "${artifact}")
            printf 'fuzz %s: %s (%s bytes%s) base64 %s\n' "${target}" "${artifact##*/}" "${size}" \
                "$([[ ${size} -gt 4096 ]] && echo ', first 4096' || true)" \
                "$(head -c 4096 "${artifact}" | base64 -w 0)" >>"${FUZZ_REPORT}"
        fi
    fi
    rm -f "${started}"
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    echo "fuzz: replay with: cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s) ran ${seconds}s each without a failure"
