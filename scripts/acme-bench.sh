#!/usr/bin/env bash
# ACME numbers for BENCHMARKS.md (issue 14): runs the #[ignore]d measurements
# of tests/acme_orders.rs (the real binary against Debian's Pebble, and Knot
# for DNS-01, on loopback; a Docker engine for the start-to-certificate part)
# and prints their ACME-BENCH lines as tables.
#
#   scripts/acme-bench.sh
#   ACME_BENCH_SIZES=3x3 ACME_BENCH_DOCKER_RUNS=1 scripts/acme-bench.sh   # CI
#
# Measures, per size NxM (N frontend branches, M backend branches):
# - DNS-01: orders placed (counted by Pebble) and seconds from the proxy's
#   start until every fe.be, fe and bare branch-domain host is served a chain
#   that verifies against Pebble's root;
# - on demand (no DNS-01): the same with every host handshaken once, 8 at a
#   time; sizes needing more than 300 orders (the flag's maximum per hour) are
#   computed, not run, and marked so;
# - Docker (ACME_BENCH_DOCKER_RUNS starts each, after one warm-up): from a
#   container's start event to its first HTTPS answer over a verified chain,
#   for a LETSENCRYPT_HOST container, a new frontend beside a backend whose
#   DNS-01 wildcard is held, and a new frontend ordered on demand.
#
# Environment:
#   ACME_BENCH_SIZES        comma list of NxM (default 10x10,50x50)
#   ACME_BENCH_DOCKER_RUNS  starts per Docker scenario (default 5)
#   DOCKER_TESTS=0 or BRANCHGATE_TEST_DOCKER=0   skip the Docker part (loudly)
#   CI=true                 a missing Pebble, Knot or engine fails instead of skipping
#
# Uses the running Docker engine if one answers; if scripts/docker-engine.sh
# has to start dockerd, that dockerd (and only it) is stopped on exit.
# Results also go to target/acme-bench.jsonl, one JSON object per line.
set -euo pipefail
cd "$(dirname "$0")/.."

export ACME_BENCH_SIZES=${ACME_BENCH_SIZES:-10x10,50x50}
export ACME_BENCH_DOCKER_RUNS=${ACME_BENCH_DOCKER_RUNS:-5}

log() { printf '\n==> %s\n' "$*" >&2; }

out=$(mktemp)
docker_on=1
# shellcheck source=scripts/docker-engine.sh
. scripts/docker-engine.sh
# _de_dockerd_pid is set only when engine_up started dockerd itself: only then
# is the engine ours to sweep and stop.
trap '[ -z "$_de_dockerd_pid" ] || engine_down; rm -f "$out"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "${DOCKER_TESTS:-1}" = 0 ] || [ "${BRANCHGATE_TEST_DOCKER:-1}" = 0 ]; then
    docker_on=0
elif ! engine_up; then # fails only under CI=true
    exit 1
elif [ "$BRANCHGATE_TEST_DOCKER" != 1 ]; then
    docker_on=0
fi
skip=()
if [ "$docker_on" = 0 ]; then
    log "SKIPPING the Docker part (start to certificate): no Docker engine (DOCKER_TESTS=0 or none answers)"
    skip=(--skip docker_)
fi

log "ACME measurements: sizes $ACME_BENCH_SIZES, $ACME_BENCH_DOCKER_RUNS Docker run(s) each"
set +e
cargo test --test acme_orders --color never -- --ignored --nocapture --test-threads 1 "${skip[@]}" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e

mkdir -p target
grep -o 'ACME-BENCH {.*}' "$out" | sed 's/^ACME-BENCH //' >target/acme-bench.jsonl || true
if [ ! -s target/acme-bench.jsonl ]; then
    log "no ACME-BENCH results (Pebble or Knot missing? see above)"
    exit "$rc"
fi

if ! command -v python3 >/dev/null 2>&1; then
    log "python3 missing: raw results in target/acme-bench.jsonl"
    cat target/acme-bench.jsonl
    exit "$rc"
fi

log "results ($(nproc) cores, $(date -u +%Y-%m-%d))"
python3 - target/acme-bench.jsonl <<'EOF'
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
matrix = [r for r in rows if r["scenario"] in ("dns01", "on-demand")]
starts = [r for r in rows if r["scenario"].startswith("docker-")]

if matrix:
    print("| scenario | fe x be | orders | orders are | all issued (CA) | all hosts verified "
          "| first handshake median / max | hours at 20/h | hours at 300/h | LE weeks (50/domain/week) |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in matrix:
        size = f'{r["fe"]} x {r["be"]}'
        if r["measured"]:
            orders, kind = r["orders"], "measured"
            issued = f'{r["all_issued_seconds"]:.2f} s'
            took = f'{r["seconds"]:.2f} s ({r["hosts_verified"]} hosts)'
        else:
            orders, kind, issued, took = r["expected"], "computed", "-", "-"
        fh = r.get("first_handshake_ms")
        fh = f'{fh["median"]:.0f} / {fh["max"]:.0f} ms' if fh else "-"
        c = r.get("computed")
        if r["scenario"] == "dns01":
            o = r["orders"]
            c = {"hours_at_default_20_per_hour": o / 20, "hours_at_300_per_hour": o / 300,
                 "weeks_at_le_50_certs_per_domain_week": o / 50}
        print(f'| {r["scenario"]} | {size} | {orders} | {kind} | {issued} | {took} | {fh} '
              f'| {c["hours_at_default_20_per_hour"]:.2f} | {c["hours_at_300_per_hour"]:.2f} '
              f'| {c["weeks_at_le_50_certs_per_domain_week"]:.2f} |')
    print()

if starts:
    print("| start to verified HTTPS answer | runs | median | max | orders during runs | challenges (whole test) |")
    print("|---|---:|---:|---:|---:|---|")
    for r in starts:
        kinds = ", ".join(sorted(r["acme"]["orders_by_challenge"])) or "-"
        print(f'| {r["scenario"]} | {r["runs"]} | {r["median_ms"]:.1f} ms | {r["max_ms"]:.1f} ms '
              f'| {r["orders_during_runs"]} | {kinds} |')
EOF
exit "$rc"
