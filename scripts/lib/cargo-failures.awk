# The failures in `cargo test --no-fail-fast` output, one line each, for
# scripts/test.sh's closing list (tests/scripts.rs runs it on real output):
#   cargo test BINARY: TEST               a test that failed, with its binary
#   cargo test target failed: `--test X`  a test binary that failed (one that
#                                         crashed has no list of its own)
# Lines may repeat (cargo names a failed target twice): sort -u after it.

# Where the tests below ran: "Running unittests src/lib.rs (...)" or
# "Running tests/x.rs (...)".
/^     Running / { bin = ($2 == "unittests" ? $3 : $2) }
# Each binary's summary list: "failures:" then "    name" lines. The first
# "failures:" (followed by a blank line, then each test's output) names none.
/^failures:$/ { in_list = 1; next }
in_list && /^    [^ ]/ { sub(/^    /, ""); print "cargo test " bin ": " $0; next }
in_list && !/^    / { in_list = 0 }
/^error: test failed, to rerun pass / {
    sub(/^error: test failed, to rerun pass /, "")
    print "cargo test target failed: " $0
}
# --no-fail-fast's closing list: "error: N targets failed:" then "    `--test x`".
/^error: [0-9]+ targets? failed:$/ { targets = 1; next }
targets && /^    `/ { sub(/^    /, ""); print "cargo test target failed: " $0; next }
targets { targets = 0 }
