//! Host parsing and normalisation never panic, and their outputs are canonical.
//!
//! For any string `raw`:
//! - `normalize_host(raw)` either rejects it or returns a host that is
//!   non-empty, at most `MAX_HOST_LEN` bytes, free of ASCII uppercase and of
//!   bytes `<= b' '`, and a fixed point: normalising it again returns it unchanged;
//! - an exact pattern parsed from a normalised host matches that host;
//! - every pattern `HostPattern::parse` (or `parse_list`) accepts prints, via
//!   `Display`, a text that parses back to a pattern with the same `Display`;
//! - `parse_list` reports as bad a trimmed, non-empty entry of its input.
#![no_main]

use branchgate::routes::{HostPattern, MAX_HOST_LEN, normalize_host};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    check_normalize(raw);
    // Compiling a `~regex` dominates the cost of an input, so parse each
    // input once: a list only when there is something to split.
    if !raw.contains(',') {
        if let Ok(pattern) = HostPattern::parse(raw) {
            check_round_trip(&pattern);
        }
        return;
    }
    match HostPattern::parse_list(raw) {
        Ok(patterns) => patterns.iter().for_each(check_round_trip),
        Err((bad, _)) => {
            assert!(!bad.is_empty(), "empty bad entry for {raw:?}");
            assert_eq!(bad, bad.trim(), "untrimmed bad entry for {raw:?}");
            assert!(
                raw.split(',').any(|e| e.trim() == bad),
                "bad entry {bad:?} is not an entry of {raw:?}"
            );
        }
    }
});

fn check_normalize(raw: &str) {
    let mut buf = [0u8; MAX_HOST_LEN];
    let Some(host) = normalize_host(raw, &mut buf) else {
        return;
    };
    assert!(!host.is_empty(), "{raw:?} normalised to an empty host");
    assert!(host.len() <= MAX_HOST_LEN, "{raw:?} normalised too long");
    assert!(
        !host.bytes().any(|b| b.is_ascii_uppercase() || b <= b' '),
        "{raw:?} normalised to {host:?}, which has uppercase or space/control bytes"
    );
    let mut again = [0u8; MAX_HOST_LEN];
    assert_eq!(
        normalize_host(host, &mut again),
        Some(host),
        "normalising {raw:?} is not idempotent"
    );
    if host.starts_with('~') {
        return; // would parse as a regex, not as an exact host
    }
    if let Ok(pattern @ HostPattern::Exact(_)) = HostPattern::parse(host) {
        assert!(
            pattern.matches(host),
            "exact pattern {pattern} parsed from normalised host {host:?} does not match it"
        );
    }
}

fn check_round_trip(pattern: &HostPattern) {
    let text = pattern.to_string();
    let reparsed = HostPattern::parse(&text)
        .unwrap_or_else(|e| panic!("{pattern:?} prints as {text:?}, which fails to parse: {e}"));
    assert_eq!(
        reparsed.to_string(),
        text,
        "{pattern:?} does not round-trip through Display"
    );
}
