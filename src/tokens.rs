//! Comma-separated header lists (RFC 9110 §5.6.1), read as bytes.
//!
//! `Connection: keep-alive` comes on nearly every upstream response and
//! `Connection: close` on many requests; reading such a list through
//! `to_str`, `str::split` and `str::trim` cost about 600 instructions per
//! request (a UTF-8 check, a char searcher, Unicode trimming). Header values
//! are bytes, and the tokens compared here are ASCII: a byte loop does it.

/// The elements of a list-valued header, without the spaces and tabs around
/// them; empty elements (`a, ,b`, a trailing comma) are skipped, as the RFC
/// says a recipient must.
pub fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Whether `value` lists `token` (ASCII case-insensitive).
pub fn lists(value: &[u8], token: &str) -> bool {
    // Nearly always the value is the one token: no split then.
    value.eq_ignore_ascii_case(token.as_bytes())
        || elements(value).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
}

/// `s` without leading and trailing spaces and tabs (optional whitespace).
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// What the `Connection` fields of a message said of its connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionTokens {
    /// Some field lists `close`.
    pub close: bool,
    /// Some field lists `keep-alive`.
    pub keep_alive: bool,
}

impl ConnectionTokens {
    /// A `Connection` field that is just `keep-alive` or `close` (nearly
    /// every one): noted, and true. The readers leave such a field out of
    /// their header maps: it says no more than this, and the proxy, which
    /// never forwards it (hop-by-hop), would only take it out again.
    #[inline(always)]
    pub fn bare(&mut self, name: &[u8], value: &[u8]) -> bool {
        // Called for every field: the length first, inline.
        if name.len() != 10 || !name.eq_ignore_ascii_case(b"connection") {
            return false;
        }
        if value.eq_ignore_ascii_case(b"keep-alive") {
            self.keep_alive = true;
        } else if value.eq_ignore_ascii_case(b"close") {
            self.close = true;
        } else {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &str) -> Vec<&str> {
        elements(v.as_bytes())
            .map(|e| std::str::from_utf8(e).unwrap())
            .collect()
    }

    #[test]
    fn elements_are_trimmed_and_empty_ones_skipped() {
        assert_eq!(list("keep-alive"), ["keep-alive"]);
        assert_eq!(list(" close ,\tUpgrade\t"), ["close", "Upgrade"]);
        assert_eq!(list("a, ,b,"), ["a", "b"]);
        assert_eq!(list(",,, "), Vec::<&str>::new());
        assert_eq!(list(""), Vec::<&str>::new());
        assert_eq!(list("x-foo bar, y"), ["x-foo bar", "y"]);
    }

    #[test]
    fn lists_matches_whole_tokens_ignoring_ascii_case() {
        assert!(lists(b"Keep-Alive", "keep-alive"));
        assert!(lists(b"foo, CLOSE", "close"));
        assert!(!lists(b"closed", "close"));
        assert!(!lists(b"clos", "close"));
        assert!(!lists(b"x, keep-alive-x", "keep-alive"));
        // Bytes outside ASCII are compared as they are, never folded.
        assert!(!lists("clos\u{e9}".as_bytes(), "close"));
        assert!(lists(b"\xff, close", "close"));
    }

    #[test]
    fn trimming_takes_only_spaces_and_tabs() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"\x0ba\x0c"), b"\x0ba\x0c");
        assert_eq!(trim_ows(b"   "), b"");
    }
}
