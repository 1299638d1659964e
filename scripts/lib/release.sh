# The release binary as branchgate ships it: `cargo build --release` with the
# code layout of link/symbol-order*.txt (build.rs) and, for the two targets
# that have one, the profile of link/pgo*.profdata (written by scripts/pgo.sh):
# the compiler inlines, lays out and splits hot from cold code by how often
# each branch and call ran under representative traffic. Source it after
# defining `log`, `die` and `ROOT`.
#
#   release_build [TARGET]   builds it (default TARGET x86_64-unknown-linux-gnu)
#                            and prints the binary's absolute path:
#                            $CARGO_TARGET_DIR (default target)/TARGET/release/branchgate;
#                            sets RELEASE_STALE: how many functions rustc said
#                            changed since the profile was written (seen by the
#                            caller when not run in $(...), as pgo.sh --check does)
#
# --target is always given, so the profile goes in through
# CARGO_TARGET_<TRIPLE>_RUSTFLAGS and reaches branchgate and its dependencies
# but not build scripts; target/release (cargo test, cargo bench) is left
# alone. The flag names a copy of the profile named by its content, so a new
# profile is a new flag and rebuilds the dependencies too (cargo does not
# look at the file itself for them). BRANCHGATE_PGO=off builds without it.
# A profile written with another rustc or other dependency versions matches
# nothing (symbol names change with them); `scripts/pgo.sh --check` says so.

# target_dir: cargo's target directory, absolute.
target_dir() {
    local d=${CARGO_TARGET_DIR:-target}
    case "$d" in /*) echo "$d" ;; *) echo "$ROOT/$d" ;; esac
}

# pgo_profile TARGET: the profile file for TARGET (may not exist), or nothing.
pgo_profile() {
    case "$1" in
        x86_64-unknown-linux-gnu) echo "$ROOT/link/pgo.profdata" ;;
        x86_64-unknown-linux-musl) echo "$ROOT/link/pgo-musl.profdata" ;;
        *) echo "" ;;
    esac
}

# musl_cc TARGET: for the musl target, ring's C is compiled with musl-gcc
# (Debian's musl-tools), said outright rather than left to cc-rs's guess, so
# it sees musl's headers, not glibc's.
musl_cc() {
    if [ "$1" = x86_64-unknown-linux-musl ] && command -v musl-gcc >/dev/null 2>&1; then
        export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc}
    fi
}

release_build() {
    local target=${1:-x86_64-unknown-linux-gnu} profile var flag="" dir out rc=0
    # Either would replace the per-target flags below without a word.
    if [ -n "${RUSTFLAGS:-}" ] || [ -n "${CARGO_ENCODED_RUSTFLAGS:-}" ]; then
        die "release build: unset RUSTFLAGS / CARGO_ENCODED_RUSTFLAGS (cargo would ignore the build's own flags)"
    fi
    dir=$(target_dir)
    profile=$(pgo_profile "$target")
    var=CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$target")_RUSTFLAGS
    if [ "${BRANCHGATE_PGO:-on}" = off ] || [ -z "$profile" ] || [ ! -s "$profile" ]; then
        log "release build ($target) without a profile"
    else
        local copy
        copy="$dir/pgo-use/$(sha256sum "$profile" | cut -c1-16).profdata"
        if [ ! -s "$copy" ]; then
            mkdir -p "$dir/pgo-use"
            cp "$profile" "$copy.tmp" && mv "$copy.tmp" "$copy"
        fi
        flag="-Cprofile-use=$copy"
        log "release build ($target) with ${profile#"$ROOT"/}"
    fi
    musl_cc "$target"
    out=$(mktemp)
    (cd "$ROOT" && env "$var=${!var:-}${flag:+ $flag}" \
        cargo build --release --target "$target" --bin branchgate 2>&1) | tee "$out" >&2 || rc=$?
    # rustc warns once per function of branchgate whose code changed since the
    # profile was written (cargo replays a crate's warnings when it is not
    # rebuilt; dependencies are built with --cap-lints allow, silently).
    RELEASE_STALE=$(grep -c 'hash mismatch' "$out" || true)
    rm -f "$out"
    [ "$rc" = 0 ] || die "cargo build --release --target $target failed"
    if [ -n "$flag" ] && [ "$RELEASE_STALE" -gt 0 ]; then
        log "release build ($target): $RELEASE_STALE function(s) changed since ${profile#"$ROOT"/} was written; scripts/pgo.sh rewrites it"
    fi
    echo "$dir/$target/release/branchgate"
}
