#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (run as root) or a dev box:
#   scripts/test.sh
# 1. installs what the suite needs (Debian packages via apt, Rust nightly +
#    cargo-fuzz for the fuzz targets);
# 2. a Docker engine (the running one, else dockerd started here and stopped
#    at exit) and the echo backend image (scripts/docker-engine.sh);
#    DOCKER_TESTS=0 skips both, and no engine is a skip off CI, a failure on it;
#    cargo test (unit + black-box tests over real sockets and containers; the
#    benches are compiled by clippy --all-targets and run in step 4);
# 3. fuzz targets, briefly           (FUZZ_SECONDS, default 30; 0 skips)
# 4. criterion benches, short        (BENCH=0 skips)
# 5. the end-to-end load harness vs nginx and HAProxy, short (LOAD_SECONDS,
#    default 5; 0 skips), then callgrind instructions and strace system calls
#    per request, short, and whether link/symbol-order*.txt and the build
#    profiles link/pgo*.profdata still match the release binaries, and that
#    the profile check fails below its threshold (with BENCH)
# 6. testssl.sh against the HTTPS listener: protocols, ciphers, vulnerabilities,
#    resumption (scripts/testssl.sh; TESTSSL=0 skips)
# 7. start-to-routable latency over 50 real containers (with BENCH and Docker)
# 8. ACME orders and time to certificate against Pebble, briefly: a 3x3 branch
#    matrix, one Docker run (scripts/acme-bench.sh; with BENCH; its Docker
#    part only with Docker)
# and prints one closing line: "summary: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
BENCH=${BENCH:-1}
LOAD_SECONDS=${LOAD_SECONDS:-5}
DOCKER_TESTS=${DOCKER_TESTS:-1}
ci=${CI:-false}

log() { printf '\n==> %s\n' "$*" >&2; }

if [ "$ci" = true ]; then
    # A clean clone builds once: incremental state would only cost disk.
    export CARGO_INCREMENTAL=0
fi
log "disk: $(df -h . | awk 'NR==2 {print $4 " free of " $2}')"

apt_updated=0
need_pkg() { # need_pkg COMMAND PACKAGE...
    command -v "$1" >/dev/null 2>&1 && return 0
    shift
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "WARNING: $* missing and cannot be installed here (not root on Debian)"
        return 1
    fi
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq >/dev/null
        apt_updated=1
    fi
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

log "checking tools"
# Headless Chromium for tests/browser.rs (skipped loudly without it, off CI).
need_pkg chromium chromium || true
# ChromeDriver for tests/dashboard.rs (WebDriver: log in, click, watch live updates).
need_pkg chromedriver chromium-driver || true
# Pebble (ACME test CA) and pebble-challtestsrv for tests/support/pebble.rs (skipped loudly without it, off CI).
need_pkg pebble pebble || true
# knotd (and kdig) for tests/acme_dns.rs: RFC 2136 + TSIG against a real server.
need_pkg knotd knot || true
need_pkg kdig knot-dnsutils || true
if [ "$LOAD_SECONDS" != 0 ]; then
    need_pkg nginx nginx-light
    need_pkg wrk wrk
fi

passed=0
failed=0
status=0
# What failed, by name: printed again just above the closing line, so the tail
# of a long log (all a CI page may show) says what to look at.
failures=()
fail() { # fail NAME: counts one failure and remembers its name
    log "FAILED: $1"
    failures+=("$1")
    failed=$((failed + 1))
    status=1
}
out=$(mktemp)
# shellcheck source=scripts/docker-engine.sh
. scripts/docker-engine.sh
# engine_down sweeps test containers, and stops dockerd if engine_up started it.
trap '[ "$DOCKER_TESTS" = 0 ] || engine_down; rm -f "$out" "$out.fuzz"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$DOCKER_TESTS" = 0 ]; then
    log "SKIPPING Docker tests: DOCKER_TESTS=0"
    export BRANCHGATE_TEST_DOCKER=0
else
    log "Docker engine and echo image"
    if ! engine_up; then # fails only under CI=true
        fail "Docker engine"
    elif [ "$BRANCHGATE_TEST_DOCKER" = 1 ]; then
        build_echo_image || fail "echo image"
        # The Dockerfile's runtime stage around a host-built static binary;
        # tests/docker_image.rs runs it. Prints the image size.
        log "branchgate image (scripts/docker-image.sh)"
        bash scripts/docker-image.sh || fail "branchgate image (scripts/docker-image.sh)"
    fi
fi

log "cargo test"
set +e
cargo test --no-fail-fast --lib --bins --tests --color never 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e
while read -r p f; do
    passed=$((passed + p))
    failed=$((failed + f))
done < <(sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$out")
# Cargo's own list of failed tests ("    name" lines under "failures:" at the
# end of each test binary's output), with the binary they ran in.
mapfile -t -O "${#failures[@]}" failures < <(awk -f scripts/lib/cargo-failures.awk "$out" | sort -u)
if [ "$rc" != 0 ]; then
    status=1
    # A build failure runs no test: count it so the summary cannot read as green.
    if [ "$failed" -eq 0 ]; then
        failed=1
        failures+=("cargo test (exit $rc, no test failed: did it build?)")
    fi
fi

step() { # step NAME COMMAND...: counts a whole step as one pass or failure
    local name=$1
    shift
    log "$name"
    if "$@"; then
        passed=$((passed + 1))
    else
        fail "$name"
    fi
}
# fails_saying TEXT COMMAND...: COMMAND fails, and says TEXT (not just any failure).
fails_saying() {
    local text=$1 said rc=0
    shift
    said=$("$@" 2>&1) || rc=$?
    printf '%s\n' "$said" >&2
    if [ "$rc" = 0 ]; then
        log "expected a failure, but it succeeded"
        return 1
    fi
    case "$said" in
        *"$text"*) ;;
        *) log "it failed (exit $rc), without saying: $text"; return 1 ;;
    esac
}

if [ "$FUZZ_SECONDS" != 0 ]; then
    fuzz_report=$out.fuzz
    step "fuzz targets (${FUZZ_SECONDS}s each)" \
        env FUZZ_SECONDS="$FUZZ_SECONDS" CI="$ci" FUZZ_REPORT="$fuzz_report" bash scripts/fuzz.sh
    if [ -s "$fuzz_report" ]; then
        mapfile -t -O "${#failures[@]}" failures <"$fuzz_report"
    fi
fi
if [ "$BENCH" != 0 ]; then
    step "criterion benches (short)" cargo bench --bench lookup -- --warm-up-time 0.3 --measurement-time 1 --noplot
fi
if [ "$LOAD_SECONDS" != 0 ]; then
    step "load harness (${LOAD_SECONDS}s per run)" env DURATION="$LOAD_SECONDS" bash benches/load.sh
    step "load harness: a route without access control beside one with Basic auth" \
        env DURATION="$LOAD_SECONDS" AUTH=1 ONLY="small-c64" OUT=target/load-results-auth.md \
        BG_VARIANTS="none:@BG_BIN@; basic:@BG_BIN@:--htpasswd @HTPASSWD@" bash benches/load.sh
    step "load harness: access log on, beside nginx's and HAProxy's" \
        env DURATION="$LOAD_SECONDS" PEER_LOG=1 ONLY="small-c64" OUT=target/load-results-log.md \
        BG_VARIANTS="log:@BG_BIN@:--access-log common" bash benches/load.sh
fi
if [ "$BENCH" != 0 ]; then
    step "instructions per request (callgrind, short)" env N=2000 CLOSE_SECONDS=2 CACHE=1 bash benches/callgrind.sh
    step "system calls per request (strace, short)" env N=2000 CLOSE_SECONDS=2 OUT=target/syscalls.md bash benches/syscalls.sh
    step "code layout: link/symbol-order.txt still names the release binary's functions" \
        bash scripts/symbol-order.sh --check
    # The image's musl binary, when the Docker step built it.
    musl_bin=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/release/branchgate
    if [ -x "$musl_bin" ]; then
        step "code layout: link/symbol-order-musl.txt still names the image binary's functions" \
            env TARGET=x86_64-unknown-linux-musl BG_BIN="$musl_bin" bash scripts/symbol-order.sh --check
    fi
    # The profiles the release builds read: how much of each still matches
    # the code (the builds are cached by now: load.sh's, docker-image.sh's).
    step "build profile: link/pgo.profdata still matches the code" bash scripts/pgo.sh --check
    # Its threshold: the same check fails when it asks for more than all.
    step "build profile: the check fails below its threshold (MIN_PERCENT=101)" \
        fails_saying "pgo profile: below 101%" env MIN_PERCENT=101 bash scripts/pgo.sh --check
    if [ -x "$musl_bin" ]; then
        step "build profile: link/pgo-musl.profdata still matches the code" \
            env TARGET=x86_64-unknown-linux-musl bash scripts/pgo.sh --check
    fi
fi
[ "${TESTSSL:-1}" = 0 ] || step "testssl against the HTTPS listener" env CI="$ci" bash scripts/testssl.sh
if [ "$BENCH" != 0 ] && [ "${BRANCHGATE_TEST_DOCKER:-0}" = 1 ]; then
    step "start-to-routable over 50 containers" \
        bash -c 'cargo build --release --bin branchgate && N=50 cargo bench --bench docker_routable'
fi
if [ "$BENCH" != 0 ]; then
    step "ACME orders and time to certificate (3x3, 1 Docker run)" \
        env ACME_BENCH_SIZES=3x3 ACME_BENCH_DOCKER_RUNS=1 BRANCHGATE_TEST_DOCKER="${BRANCHGATE_TEST_DOCKER:-0}" \
        CI="$ci" bash scripts/acme-bench.sh
fi

# Clean up before the closing line so it stays the last thing printed (the
# EXIT trap repeats this harmlessly, and covers an interrupted run).
[ "$DOCKER_TESTS" = 0 ] || engine_down
if [ "${#failures[@]}" -gt 0 ]; then
    echo "failed:"
    printf '  - %s\n' "${failures[@]}"
fi
echo "summary: ${passed} passed, ${failed} failed"
exit "$status"
