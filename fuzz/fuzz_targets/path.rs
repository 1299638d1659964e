//! Encoded traversal: a path `has_dot_segment` accepts never holds a dot
//! segment once decoded the way lenient upstreams decode it.
//!
//! For any string `path`, a naive model decodes every `%2e`, `%2f` and `%5c`
//! (any case) in one pass into a new string, reads `\` as `/`, splits on `/`,
//! cuts each segment at its first `;` (a path parameter, as Tomcat and Jetty
//! do), and looks for a segment that is `.` or `..`. `has_dot_segment` must
//! say yes exactly when the model does: accepting a path the model flags is a
//! traversal past the routed prefix; refusing one it does not is a false 400.
#![no_main]

use branchgate::proxy::path::has_dot_segment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    let model = model_has_dot_segment(path);
    assert_eq!(
        has_dot_segment(path),
        model,
        "{path:?}: the model says dot segment = {model}"
    );
});

fn model_has_dot_segment(path: &str) -> bool {
    let mut decoded = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(c) = rest.chars().next() {
        let escape = rest.get(..3).map(str::to_ascii_lowercase);
        match escape.as_deref() {
            Some("%2e") => decoded.push('.'),
            Some("%2f") => decoded.push('/'),
            Some("%5c") => decoded.push('/'),
            _ => {
                decoded.push(if c == '\\' { '/' } else { c });
                rest = &rest[c.len_utf8()..];
                continue;
            }
        }
        rest = &rest[3..];
    }
    decoded
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or(""))
        .any(|segment| segment == "." || segment == "..")
}
