//! Parsing a routes file never panics, and every error points into the file.
//!
//! For any text, `providers::file::parse("routes.toml", text)` returns, and
//! when it fails its `Display` is `routes.toml:LINE: …` with
//! `1 <= LINE <= lines in the text + 1` (the `+ 1` is the empty line after a
//! final newline, where an unterminated construct is reported).
#![no_main]

use std::path::Path;

use branchgate::providers::file::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Err(err) = parse(Path::new("routes.toml"), text) else {
        return;
    };
    let shown = err.to_string();
    let rest = shown
        .strip_prefix("routes.toml:")
        .unwrap_or_else(|| panic!("error does not name the file: {shown:?}"));
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let line: usize = rest[..digits]
        .parse()
        .unwrap_or_else(|_| panic!("error has no line number: {shown:?}"));
    assert!(
        rest[digits..].starts_with(": "),
        "line number is not followed by `: `: {shown:?}"
    );
    let lines = text.lines().count();
    assert!(
        (1..=lines + 1).contains(&line),
        "line {line} outside 1..={} in {shown:?}",
        lines + 1
    );
});
