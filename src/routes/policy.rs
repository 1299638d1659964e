//! Per-route policy: what a route demands of a request before it is
//! forwarded (CORS today; HTTPS redirects, HSTS, certificates next; auth,
//! allow lists and limits later). Plain data, carried from the provider's
//! [`RouteSpec`](super::RouteSpec) into the built route, read by the proxy's
//! policy phase.
//!
//! Labels, env vars and the routes file all parse their values here, so a bad
//! value reads the same whichever way it was written.
//!
//! **When specs sharing a host and path disagree** (or branch members of one
//! branch and role), [`Policy::merge`] decides, one rule per setting:
//!
//! | setting | rule |
//! |---|---|
//! | `https_method` | the strictest: `nohttp` > `redirect` (also the default) > `noredirect` > `nohttps` |
//! | `hsts` | the strictest: on beats `off`; the longer `max-age` wins, then `includeSubDomains`, then `preload` (unset counts as `max-age=31536000`) |
//! | `acme_host` | the union |
//! | `auth_basic`, `allow` | set beats unset (a restriction one spec asks for holds); both set: the first spec |
//! | `max_body` | the smallest |
//! | `cors`, `cert_name`, `acme_email`, `response_timeout` | the first spec in provider order (routes file by line, then containers by name) |
//!
//! Every disagreement is reported as a note naming both sources.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::host::HostPattern;
pub use crate::guard::{AllowList, BasicUsers};

/// nginx-proxy's `HTTPS_METHOD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HttpsMethod {
    /// HTTP only.
    NoHttps,
    /// Serve both, no redirect.
    NoRedirect,
    /// Redirect HTTP to HTTPS (the default when a certificate exists).
    Redirect,
    /// HTTPS only; plain HTTP is refused.
    NoHttp,
}

impl FromStr for HttpsMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "redirect" => Ok(Self::Redirect),
            "noredirect" => Ok(Self::NoRedirect),
            "nohttp" => Ok(Self::NoHttp),
            "nohttps" => Ok(Self::NoHttps),
            _ => Err("must be redirect, noredirect, nohttp or nohttps".into()),
        }
    }
}

impl fmt::Display for HttpsMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoHttps => "nohttps",
            Self::NoRedirect => "noredirect",
            Self::Redirect => "redirect",
            Self::NoHttp => "nohttp",
        })
    }
}

/// nginx-proxy's `HSTS`: unset (the default header), `off`, or a header value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Hsts {
    /// Not set: `max-age=31536000` once HTTPS is served.
    #[default]
    Default,
    /// `off`: no `Strict-Transport-Security` header.
    Off,
    /// This `Strict-Transport-Security` value.
    Value(Box<str>),
}

/// The `max-age` of [`Hsts::Default`], as nginx-proxy sends it.
pub const DEFAULT_HSTS_MAX_AGE: u64 = 31_536_000;

impl FromStr for Hsts {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        let bad = || {
            "must be off or a Strict-Transport-Security value such as max-age=31536000 \
             (each directive once)"
                .to_owned()
        };
        if http::HeaderValue::from_str(s).is_err() {
            return Err(bad());
        }
        hsts_strictness(s).ok_or_else(bad)?;
        Ok(Self::Value(s.into()))
    }
}

/// (on, max-age, includeSubDomains, preload) of a `Strict-Transport-Security`
/// value; `None` unless it has a numeric `max-age` and no directive twice
/// (a browser ignores such a header, RFC 6797 6.1).
fn hsts_strictness(s: &str) -> Option<(bool, u64, bool, bool)> {
    let mut seen = std::collections::HashSet::new();
    let (mut max_age, mut sub, mut preload) = (None, false, false);
    for d in s.split(';') {
        let (name, value) = match d.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (d.trim(), None),
        };
        if name.is_empty() {
            continue;
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return None;
        }
        if name.eq_ignore_ascii_case("max-age") {
            max_age = Some(value?.parse::<u64>().ok()?);
        } else if name.eq_ignore_ascii_case("includesubdomains") {
            sub = true;
        } else if name.eq_ignore_ascii_case("preload") {
            preload = true;
        }
    }
    Some((true, max_age?, sub, preload))
}

impl Hsts {
    /// The `Strict-Transport-Security` value to send, if any.
    pub fn header(&self) -> Option<http::HeaderValue> {
        match self {
            Self::Default => Some(http::HeaderValue::from_static("max-age=31536000")),
            Self::Off => None,
            Self::Value(v) => http::HeaderValue::from_str(v).ok(),
        }
    }

    /// How much this protects, compared field by field: (on, max-age,
    /// includeSubDomains, preload).
    fn strictness(&self) -> (bool, u64, bool, bool) {
        match self {
            Self::Off => (false, 0, false, false),
            Self::Default => (true, DEFAULT_HSTS_MAX_AGE, false, false),
            // Parsed (and so valid) when made; a hand-made bad one protects nothing.
            Self::Value(v) => hsts_strictness(v).unwrap_or((false, 0, false, false)),
        }
    }
}

impl fmt::Display for Hsts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => write!(f, "max-age={DEFAULT_HSTS_MAX_AGE} (default)"),
            Self::Off => f.write_str("off"),
            Self::Value(v) => f.write_str(v),
        }
    }
}

/// Parses `LETSENCRYPT_HOST` / `acme_host`: a comma list of host names a
/// certificate can be issued for, lowercased, sorted, without repeats.
pub fn parse_acme_hosts(s: &str) -> Result<Vec<Box<str>>, String> {
    let list: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    if let Some(bad) = list
        .iter()
        .find(|h| !matches!(HostPattern::parse(h), Ok(HostPattern::Exact(_))))
    {
        return Err(format!(
            "{bad:?} is not a host name a certificate can be issued for"
        ));
    }
    let mut list: Vec<Box<str>> = list.into_iter().map(Into::into).collect();
    list.sort_unstable();
    list.dedup();
    Ok(list)
}

/// Parses `CERT_NAME` / `cert_name`: a certificate file base name.
pub fn parse_cert_name(s: &str) -> Result<Option<Box<str>>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.contains(['/', '\\']) || s.starts_with('.') || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("must be a file base name (no `/`, no leading `.`, no spaces)".into());
    }
    Ok(Some(s.into()))
}

/// Everything a route demands beyond where it goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Answer CORS for allowed origins (`branchgate.cors`).
    pub cors: bool,
    /// `HTTPS_METHOD`; `None` is the default (`redirect` once a certificate exists).
    pub https_method: Option<HttpsMethod>,
    /// `HSTS`.
    pub hsts: Hsts,
    /// `CERT_NAME`: the certificate file base name to serve.
    pub cert_name: Option<Box<str>>,
    /// `LETSENCRYPT_HOST`: hosts to obtain certificates for, sorted.
    pub acme_hosts: Vec<Box<str>>,
    /// `LETSENCRYPT_EMAIL`: the ACME account contact.
    pub acme_email: Option<Box<str>>,
    /// `branchgate.auth.basic`: users who may pass (HTTP Basic).
    pub basic_auth: Option<BasicUsers>,
    /// `branchgate.allow`: client addresses that may pass; 403 for others.
    pub allow: Option<AllowList>,
    /// `branchgate.max_body`: the largest request body in bytes; 413 above.
    pub max_body: Option<u64>,
    /// `branchgate.response_timeout`: overrides `--response-timeout`.
    pub response_timeout: Option<Duration>,
}

/// Parses `branchgate.max_body` as nginx's `client_max_body_size`: bytes,
/// or a number with `k`, `m` or `g` (binary units); `0` means no limit.
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let bad = || format!("{s:?} is not a size (bytes, or a number with k, m or g; 0 for no limit)");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(scale).ok_or_else(bad)?;
    Ok((bytes > 0).then_some(bytes))
}

fn https_rank(m: Option<HttpsMethod>) -> HttpsMethod {
    m.unwrap_or(HttpsMethod::Redirect)
}

/// A setting of a [`Policy`] that one value decides, as named in the routes
/// file (`acme_host` is not one: every spec's hosts count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// `cors`.
    Cors,
    /// `https_method`.
    HttpsMethod,
    /// `hsts`.
    Hsts,
    /// `cert_name`.
    CertName,
    /// `acme_email`.
    AcmeEmail,
    /// `auth_basic`.
    AuthBasic,
    /// `allow`.
    Allow,
    /// `max_body`.
    MaxBody,
    /// `response_timeout`.
    ResponseTimeout,
}

impl Setting {
    /// Every setting, in note order.
    pub const ALL: [Setting; 9] = [
        Self::HttpsMethod,
        Self::Hsts,
        Self::Cors,
        Self::CertName,
        Self::AcmeEmail,
        Self::AuthBasic,
        Self::Allow,
        Self::MaxBody,
        Self::ResponseTimeout,
    ];

    /// The rule that decides it, for notes.
    pub fn rule(self) -> &'static str {
        match self {
            Self::HttpsMethod | Self::Hsts => "the strictest wins",
            Self::AuthBasic | Self::Allow => "set beats unset, then the first spec decides",
            Self::MaxBody => "the smallest wins",
            Self::Cors | Self::CertName | Self::AcmeEmail | Self::ResponseTimeout => {
                "the first spec decides"
            }
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cors => "cors",
            Self::HttpsMethod => "https_method",
            Self::Hsts => "hsts",
            Self::CertName => "cert_name",
            Self::AcmeEmail => "acme_email",
            Self::AuthBasic => "auth_basic",
            Self::Allow => "allow",
            Self::MaxBody => "max_body",
            Self::ResponseTimeout => "response_timeout",
        })
    }
}

impl Policy {
    /// Whether the route restricts who may pass (Basic users, an allow list).
    #[inline]
    pub fn restricts(&self) -> bool {
        self.basic_auth.is_some() || self.allow.is_some()
    }

    /// Folds `other` (a later spec for the same route) into `self` by the
    /// documented rule: the strictest `https_method` and `hsts` (on a tie
    /// the earlier value stays), every ACME host, and the earlier value of
    /// everything else.
    pub fn merge(&mut self, other: &Policy) {
        if https_rank(other.https_method) > https_rank(self.https_method) {
            self.https_method = other.https_method;
        }
        if other.hsts.strictness() > self.hsts.strictness() {
            self.hsts = other.hsts.clone();
        }
        self.acme_hosts.extend(other.acme_hosts.iter().cloned());
        self.acme_hosts.sort_unstable();
        self.acme_hosts.dedup();
        if self.basic_auth.is_none() {
            self.basic_auth = other.basic_auth.clone();
        }
        if self.allow.is_none() {
            self.allow = other.allow.clone();
        }
        self.max_body = match (self.max_body, other.max_body) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Whether `self` says the same as `other` for `setting`: equal in
    /// effect (an unset `https_method` is `redirect`, an unset `hsts` is
    /// `max-age=31536000`), not only in spelling.
    pub fn same(&self, setting: Setting, other: &Policy) -> bool {
        match setting {
            Setting::Cors => self.cors == other.cors,
            Setting::HttpsMethod => https_rank(self.https_method) == https_rank(other.https_method),
            Setting::Hsts => self.hsts.strictness() == other.hsts.strictness(),
            Setting::CertName => self.cert_name == other.cert_name,
            Setting::AcmeEmail => self.acme_email == other.acme_email,
            Setting::AuthBasic => self.basic_auth == other.basic_auth,
            Setting::Allow => self.allow == other.allow,
            Setting::MaxBody => self.max_body == other.max_body,
            Setting::ResponseTimeout => self.response_timeout == other.response_timeout,
        }
    }

    /// The value of `setting` as text, for notes.
    pub fn show(&self, setting: Setting) -> String {
        let or_none = |v: &Option<Box<str>>| v.as_deref().unwrap_or("-").to_owned();
        match setting {
            Setting::Cors => self.cors.to_string(),
            Setting::CertName => or_none(&self.cert_name),
            Setting::AcmeEmail => or_none(&self.acme_email),
            Setting::HttpsMethod => self
                .https_method
                .map_or_else(|| "redirect (default)".to_owned(), |m| m.to_string()),
            Setting::Hsts => self.hsts.to_string(),
            Setting::AuthBasic => self
                .basic_auth
                .as_ref()
                .map_or_else(|| "-".to_owned(), |b| b.to_string()),
            Setting::Allow => self
                .allow
                .as_ref()
                .map_or_else(|| "-".to_owned(), |a| a.to_string()),
            Setting::MaxBody => self
                .max_body
                .map_or_else(|| "-".to_owned(), |b| format!("{b} bytes")),
            Setting::ResponseTimeout => self
                .response_timeout
                .map_or_else(|| "-".to_owned(), |t| format!("{t:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(https: Option<&str>, hsts: Option<&str>) -> Policy {
        Policy {
            https_method: https.map(|m| m.parse().unwrap()),
            hsts: hsts.map_or(Hsts::Default, |h| h.parse().unwrap()),
            ..Policy::default()
        }
    }

    #[test]
    fn the_strictest_https_method_wins_in_any_order() {
        let order = [
            None,
            Some("nohttps"),
            Some("noredirect"),
            Some("redirect"),
            Some("nohttp"),
        ];
        for a in order {
            for b in order {
                let (mut ab, mut ba) = (with(a, None), with(b, None));
                ab.merge(&with(b, None));
                ba.merge(&with(a, None));
                assert_eq!(
                    https_rank(ab.https_method),
                    https_rank(ba.https_method),
                    "{a:?} + {b:?}"
                );
                let want = https_rank(with(a, None).https_method)
                    .max(https_rank(with(b, None).https_method));
                assert_eq!(https_rank(ab.https_method), want, "{a:?} + {b:?}");
            }
        }
        let mut p = with(Some("noredirect"), None);
        p.merge(&with(Some("nohttp"), None));
        assert_eq!(p.https_method, Some(HttpsMethod::NoHttp));
        // Unset is the default, `redirect`: the same, not a conflict.
        assert!(with(None, None).same(Setting::HttpsMethod, &with(Some("redirect"), None)));
    }

    #[test]
    fn the_strictest_hsts_wins_in_any_order() {
        let values = [
            None,
            Some("off"),
            Some("max-age=300"),
            Some("max-age=31536000"),
            Some("max-age=31536000; includeSubDomains"),
            Some("max-age=63072000; preload"),
        ];
        for a in values {
            for b in values {
                let (mut ab, mut ba) = (with(None, a), with(None, b));
                ab.merge(&with(None, b));
                ba.merge(&with(None, a));
                assert!(ab.same(Setting::Hsts, &ba), "{a:?} + {b:?}");
                let stricter = with(None, a)
                    .hsts
                    .strictness()
                    .max(with(None, b).hsts.strictness());
                assert_eq!(ab.hsts.strictness(), stricter, "{a:?} + {b:?}");
            }
        }
        assert!(with(None, None).same(Setting::Hsts, &with(None, Some("max-age=31536000"))));
    }

    #[test]
    fn the_strictest_hsts_wins() {
        let mut p = with(None, Some("off"));
        p.merge(&with(None, Some("max-age=300")));
        assert_eq!(p.hsts, Hsts::Value("max-age=300".into()), "on beats off");
        p.merge(&with(None, None));
        assert_eq!(p.hsts, Hsts::Default, "the default's year beats 300 s");
        p.merge(&with(None, Some("max-age=31536000; includeSubDomains")));
        assert_eq!(
            p.hsts,
            Hsts::Value("max-age=31536000; includeSubDomains".into())
        );
        p.merge(&with(None, Some("off")));
        assert_eq!(
            p.hsts,
            Hsts::Value("max-age=31536000; includeSubDomains".into()),
            "off never wins"
        );
    }

    #[test]
    fn acme_hosts_join_and_first_wins_elsewhere() {
        let mut a = Policy {
            cert_name: Some("a".into()),
            acme_hosts: vec!["x.foo".into()],
            ..Policy::default()
        };
        let b = Policy {
            cors: true,
            cert_name: Some("b".into()),
            acme_hosts: vec!["w.foo".into(), "x.foo".into()],
            ..Policy::default()
        };
        a.merge(&b);
        assert_eq!((a.cors, a.cert_name.as_deref()), (false, Some("a")));
        assert!(!a.same(Setting::Cors, &b) && !a.same(Setting::CertName, &b));
        assert_eq!(a.acme_hosts, [Box::from("w.foo"), Box::from("x.foo")]);
    }

    #[test]
    fn values_are_validated_with_one_message() {
        assert_eq!("NoHttp".parse::<HttpsMethod>(), Ok(HttpsMethod::NoHttp));
        assert_eq!(
            "maybe".parse::<HttpsMethod>().unwrap_err(),
            "must be redirect, noredirect, nohttp or nohttps"
        );
        assert_eq!("OFF".parse::<Hsts>(), Ok(Hsts::Off));
        assert!("max-age=60; preload".parse::<Hsts>().is_ok());
        for bad in [
            "yes",
            "max-age=abc",
            "includeSubDomains",
            "max-age=1;\u{1}x",
        ] {
            assert!(bad.parse::<Hsts>().is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_acme_hosts(" A.foo.bar, ,b.foo.bar").unwrap(),
            [Box::from("a.foo.bar"), Box::from("b.foo.bar")]
        );
        assert!(parse_acme_hosts("*.foo.bar").is_err());
        assert_eq!(
            parse_cert_name("shared").unwrap().as_deref(),
            Some("shared")
        );
        assert_eq!(parse_cert_name(" ").unwrap(), None);
        assert!(parse_cert_name("../etc/x").is_err());
        assert_eq!(parse_size("10m"), Ok(Some(10 << 20)));
        assert_eq!(parse_size("512K"), Ok(Some(512 << 10)));
        assert_eq!(parse_size("1000"), Ok(Some(1000)));
        assert_eq!(parse_size("0"), Ok(None));
        for bad in ["", "10mb", "-1", "1.5m", "99999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn restrictions_hold_when_any_spec_asks_and_the_smallest_body_wins() {
        let open = Policy::default();
        let guarded = Policy {
            allow: Some("10.0.0.0/8".parse().unwrap()),
            max_body: Some(1 << 20),
            ..Policy::default()
        };
        let mut a = open.clone();
        a.merge(&guarded);
        assert_eq!(a.allow, guarded.allow, "set beats unset");
        let mut b = guarded.clone();
        b.merge(&Policy {
            max_body: Some(1000),
            allow: Some("192.168.0.0/16".parse().unwrap()),
            ..Policy::default()
        });
        assert_eq!(b.max_body, Some(1000), "the smallest wins");
        assert_eq!(b.allow, guarded.allow, "both set: the first");
    }
}
