//! Host patterns and request-host normalisation.
//!
//! Sits between the providers (which hand us raw `VIRTUAL_HOST`-style strings)
//! and the table (which stores parsed patterns). Patterns are parsed once, at
//! build time; a request host is normalised into a stack buffer so a lookup
//! never allocates.

use std::fmt;

use regex::{Regex, RegexBuilder};

/// Longest host name we accept (RFC 1035 limits a name to 253 octets; the
/// bracketed IPv6 form and a little slack fit too).
pub const MAX_HOST_LEN: usize = 255;

/// One host pattern, in the forms nginx-proxy's `VIRTUAL_HOST` accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `app.foo.bar`, `127.0.0.1`, `[::1]`: matched as a whole.
    Exact(Box<str>),
    /// `*.foo.bar`, stored as `foo.bar`: any host ending in `.foo.bar`, at any depth.
    Suffix(Box<str>),
    /// `www.*`, stored as `www`: any host starting with `www.` followed by at least one label.
    Prefix(Box<str>),
    /// `~^api\d+\.foo\.bar$`: a regular expression over the normalised host.
    Regex(Box<HostRegex>),
}

/// A compiled host regex together with its source, which orders regexes stably
/// and is what makes two of them equal.
#[derive(Clone, Debug)]
pub struct HostRegex {
    /// The pattern as written, without the leading `~`.
    pub source: Box<str>,
    /// The compiled, case-insensitive expression.
    pub regex: Regex,
}

impl PartialEq for HostRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for HostRegex {}

/// Why a host pattern was rejected.
#[derive(Debug, thiserror::Error)]
pub enum HostPatternError {
    /// The pattern is empty after trimming.
    #[error("empty host")]
    Empty,
    /// The pattern is longer than a DNS name may be.
    #[error("host is longer than {MAX_HOST_LEN} characters")]
    TooLong,
    /// A character that cannot appear in a host name.
    #[error("invalid character {0:?} in host")]
    InvalidChar(char),
    /// A `*` anywhere but a leading `*.` or a trailing `.*`.
    #[error("a wildcard must be a whole leading `*.` or trailing `.*` label")]
    BadWildcard,
    /// A `~regex` that does not compile.
    #[error("invalid host regex")]
    Regex(#[source] regex::Error),
}

impl HostPattern {
    /// Parses one pattern (already split from a comma list).
    pub fn parse(raw: &str) -> Result<Self, HostPatternError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(HostPatternError::Empty);
        }
        if let Some(re) = raw.strip_prefix('~') {
            if re.is_empty() {
                return Err(HostPatternError::Empty);
            }
            let regex = RegexBuilder::new(re)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map_err(HostPatternError::Regex)?;
            return Ok(Self::Regex(Box::new(HostRegex {
                source: re.into(),
                regex,
            })));
        }
        if raw.len() > MAX_HOST_LEN {
            return Err(HostPatternError::TooLong);
        }
        let lower = raw.trim_end_matches('.').to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("*.") {
            check_name(rest)?;
            return Ok(Self::Suffix(rest.into()));
        }
        if let Some(rest) = lower.strip_suffix(".*") {
            check_name(rest)?;
            return Ok(Self::Prefix(rest.into()));
        }
        if lower.starts_with('[') {
            return match lower.strip_suffix(']').and_then(|s| s.strip_prefix('[')) {
                Some(inner) if inner.parse::<std::net::Ipv6Addr>().is_ok() => {
                    Ok(Self::Exact(lower.into()))
                }
                _ => Err(HostPatternError::InvalidChar('[')),
            };
        }
        check_name(&lower)?;
        Ok(Self::Exact(lower.into()))
    }

    /// Parses a comma-separated list, ignoring empty entries.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, (String, HostPatternError)> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Self::parse(s).map_err(|e| (s.to_owned(), e)))
            .collect()
    }

    /// True when this pattern matches an already normalised host. Used by the
    /// naive reference model in tests and fuzzing; the table never scans.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => **h == *host,
            Self::Suffix(s) => {
                host.len() > s.len() + 1
                    && host.ends_with(&**s)
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.'
            }
            Self::Prefix(p) => {
                host.len() > p.len() + 1
                    && host.starts_with(&**p)
                    && host.as_bytes()[p.len()] == b'.'
            }
            Self::Regex(r) => r.regex.is_match(host),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(h) => f.write_str(h),
            Self::Suffix(s) => write!(f, "*.{s}"),
            Self::Prefix(p) => write!(f, "{p}.*"),
            Self::Regex(r) => write!(f, "~{}", r.source),
        }
    }
}

fn check_name(name: &str) -> Result<(), HostPatternError> {
    if name.is_empty() {
        return Err(HostPatternError::Empty);
    }
    if name.contains('*') {
        return Err(HostPatternError::BadWildcard);
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        Some(c) => Err(HostPatternError::InvalidChar(c)),
        None => Ok(()),
    }
}

/// Normalises a request's `Host` (or `:authority`) into `buf`: the `:port`
/// suffix and one trailing dot are dropped and ASCII is lowercased. Returns
/// `None` for a host that cannot be routed (empty, too long, a port above
/// 65535, more than one trailing dot, or other malformed input).
pub fn normalize_host<'b>(raw: &str, buf: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b str> {
    let bytes = raw.as_bytes();
    let host = if bytes.first() == Some(&b'[') {
        // `[v6]` or `[v6]:port`: keep the brackets, they are part of the key.
        let end = raw.find(']')?;
        match &raw[end + 1..] {
            "" => &raw[..=end],
            rest if valid_port(rest.strip_prefix(':')?) => &raw[..=end],
            _ => return None,
        }
    } else {
        // One pass for the last `:` and whether it is the only one (`rfind`
        // and `contains` cost a few hundred instructions per request).
        let (mut colons, mut last) = (0, 0);
        for (i, &b) in bytes.iter().enumerate() {
            if b == b':' {
                colons += 1;
                last = i;
            }
        }
        match colons {
            0 => raw,
            1 if valid_port(&raw[last + 1..]) => &raw[..last],
            _ => return None,
        }
    };
    // One trailing dot is the root of a fully qualified name; two are no
    // name at all (nginx answers 400 too).
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN || host.ends_with('.') {
        return None;
    }
    // Only what a DNS name or an IP literal is made of: a `#`, `?`, `@` or `%`
    // would let `evil.com#.foo.bar` match `*.foo.bar` and reach apps that
    // build links from `Host`.
    let bracketed = host.starts_with('[');
    let out = &mut buf[..host.len()];
    for (o, &b) in out.iter_mut().zip(host.as_bytes()) {
        let ok = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_')
            || (bracketed && matches!(b, b'[' | b']' | b':'));
        if !ok {
            return None;
        }
        *o = b.to_ascii_lowercase();
    }
    // Only ASCII bytes above space were copied, so this is valid UTF-8.
    std::str::from_utf8(out).ok()
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Option<String> {
        let mut buf = [0; MAX_HOST_LEN];
        normalize_host(s, &mut buf).map(str::to_owned)
    }

    #[test]
    fn normalises_case_port_and_trailing_dot() {
        assert_eq!(norm("App.Foo.Bar:8080").as_deref(), Some("app.foo.bar"));
        assert_eq!(norm("app.foo.bar.").as_deref(), Some("app.foo.bar"));
        assert_eq!(norm("app.foo.bar.:80").as_deref(), Some("app.foo.bar"));
        assert_eq!(norm("app.foo.bar..").as_deref(), None);
        assert_eq!(norm("app.foo.bar..:80").as_deref(), None);
        assert_eq!(norm("app.foo.bar:65535").as_deref(), Some("app.foo.bar"));
        assert_eq!(norm("app.foo.bar:65536").as_deref(), None);
        assert_eq!(norm("app.foo.bar:99999").as_deref(), None);
        assert_eq!(norm("[::1]:70000").as_deref(), None);
        assert_eq!(norm("..").as_deref(), None);
        assert_eq!(norm("127.0.0.1:80").as_deref(), Some("127.0.0.1"));
        assert_eq!(norm("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(norm("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(norm("").as_deref(), None);
        assert_eq!(norm("a:b:c").as_deref(), None);
        assert_eq!(norm("a b").as_deref(), None);
        for bad in [
            "evil.com#.foo.bar",
            "a?.foo.bar",
            "u@a.foo.bar",
            "a%2e.foo.bar",
            "a\".foo",
            "[::1]x",
        ] {
            assert_eq!(norm(bad).as_deref(), None, "{bad}");
        }
        assert_eq!(norm("host:").as_deref(), None);
        assert_eq!(norm(&"a".repeat(300)).as_deref(), None);
    }

    #[test]
    fn parses_every_form() {
        assert!(
            matches!(HostPattern::parse("A.foo.bar.").unwrap(), HostPattern::Exact(h) if &*h == "a.foo.bar")
        );
        assert!(
            matches!(HostPattern::parse("*.foo.bar").unwrap(), HostPattern::Suffix(h) if &*h == "foo.bar")
        );
        assert!(
            matches!(HostPattern::parse("www.*").unwrap(), HostPattern::Prefix(h) if &*h == "www")
        );
        assert!(matches!(
            HostPattern::parse("~^a\\d$").unwrap(),
            HostPattern::Regex(_)
        ));
        assert!(matches!(
            HostPattern::parse("[::1]").unwrap(),
            HostPattern::Exact(_)
        ));
        assert!(HostPattern::parse("a.*.bar").is_err());
        assert!(HostPattern::parse("~(").is_err());
        assert!(HostPattern::parse("  ").is_err());
        assert!(HostPattern::parse("a/b").is_err());
        assert!(HostPattern::parse("[zz]").is_err());
    }

    #[test]
    fn list_skips_empty_entries() {
        let v = HostPattern::parse_list(" a.b , ,*.c,").unwrap();
        assert_eq!(v.len(), 2);
        let (bad, _) = HostPattern::parse_list("a.b,~(").unwrap_err();
        assert_eq!(bad, "~(");
    }

    #[test]
    fn wildcard_matching_rules() {
        let s = HostPattern::parse("*.foo.bar").unwrap();
        assert!(s.matches("a.foo.bar"));
        assert!(s.matches("a.b.foo.bar"));
        assert!(!s.matches("foo.bar"));
        assert!(!s.matches("xfoo.bar"));
        let p = HostPattern::parse("www.*").unwrap();
        assert!(p.matches("www.a"));
        assert!(p.matches("www.a.b"));
        assert!(!p.matches("www"));
        assert!(!p.matches("www."));
        assert!(!p.matches("wwwx.a"));
    }
}
