//! The admin token check: constant-time comparison, and a per-client
//! throttle on failures so a token cannot be guessed at network speed.
//!
//! A browser logs in once with the token and gets a session cookie:
//! `EXPIRY.MAC`, the MAC an HMAC-SHA256 of the expiry under a key derived
//! from the token, so sessions survive a restart, end when the token
//! changes, and need no server-side store. Verified in constant time.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ring::hmac;

/// Failed attempts a client may make per window before it is refused.
const MAX_FAILURES: u32 = 10;
/// The window, and how long a throttled client waits.
const WINDOW: Duration = Duration::from_secs(60);
/// Clients remembered at most; older entries are dropped past this.
const MAX_CLIENTS: usize = 10_000;
/// How long a login lasts.
pub const SESSION: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "branchgate_admin";

/// What the check says.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No token configured, or the right one.
    Allowed,
    /// Missing or wrong token.
    Denied,
    /// Too many failures from this client lately.
    Throttled,
}

/// The token, and failures per client.
#[derive(Debug)]
pub struct Auth {
    token: Option<Box<[u8]>>,
    /// Signs session cookies; derived from the token.
    sessions: Option<hmac::Key>,
    failures: DashMap<IpAddr, (u32, Instant)>,
}

impl Auth {
    /// Checks against `token` (`None`: no auth).
    pub fn new(token: Option<String>) -> Self {
        let sessions = token.as_ref().map(|t| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, t.as_bytes());
            let derived = hmac::sign(&key, b"branchgate admin session key v1");
            hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
        });
        Self {
            token: token.map(|t| t.into_bytes().into_boxed_slice()),
            sessions,
            failures: DashMap::new(),
        }
    }

    /// A session cookie's value, valid for [`SESSION`] from `now` (unix
    /// seconds); `None` without a token.
    pub fn session(&self, now: u64) -> Option<String> {
        let key = self.sessions.as_ref()?;
        let expiry = (now + SESSION.as_secs()).to_string();
        let tag = hmac::sign(key, expiry.as_bytes());
        Some(format!("{expiry}.{}", hex(tag.as_ref())))
    }

    /// Whether `cookie` is a session this token signed that has not expired
    /// at `now` (unix seconds).
    pub fn valid_session(&self, cookie: &str, now: u64) -> bool {
        let Some(key) = &self.sessions else {
            return false;
        };
        let Some((expiry, tag)) = cookie.split_once('.') else {
            return false;
        };
        let (Ok(until), Some(tag)) = (expiry.parse::<u64>(), unhex(tag)) else {
            return false;
        };
        now < until && hmac::verify(key, expiry.as_bytes(), &tag).is_ok()
    }

    /// Whether a token is required.
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a request from `client` that presented `bearer`.
    pub fn check(&self, client: IpAddr, bearer: Option<&str>) -> Verdict {
        let Some(token) = &self.token else {
            return Verdict::Allowed;
        };
        let now = Instant::now();
        if let Some(f) = self.failures.get(&client)
            && f.0 >= MAX_FAILURES
            && now.duration_since(f.1) < WINDOW
        {
            return Verdict::Throttled;
        }
        if bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), token)) {
            return Verdict::Allowed;
        }
        if self.failures.len() >= MAX_CLIENTS {
            self.failures
                .retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        }
        let mut f = self.failures.entry(client).or_insert((0, now));
        if now.duration_since(f.1) >= WINDOW {
            *f = (0, now);
        }
        f.0 += 1;
        Verdict::Denied
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Equal contents, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_tokens_are_denied_then_throttled_per_client() {
        let auth = Auth::new(Some("0123456789abcdef".into()));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(auth.check(a, Some("0123456789abcdef")), Verdict::Allowed);
        assert_eq!(auth.check(a, None), Verdict::Denied);
        for _ in 1..MAX_FAILURES {
            assert_eq!(auth.check(a, Some("nope")), Verdict::Denied);
        }
        // Even the right token waits out the window once throttled.
        assert_eq!(auth.check(a, Some("0123456789abcdef")), Verdict::Throttled);
        assert_eq!(auth.check(b, Some("0123456789abcdef")), Verdict::Allowed);
        assert!(Auth::new(None).check(a, None) == Verdict::Allowed);
    }

    #[test]
    fn sessions_are_signed_by_the_token_and_expire() {
        let auth = Auth::new(Some("0123456789abcdef".into()));
        let cookie = auth.session(1000).unwrap();
        assert!(auth.valid_session(&cookie, 1001));
        assert!(!auth.valid_session(&cookie, 1000 + SESSION.as_secs()));
        // Another token's session, a changed expiry, garbage: refused.
        let other = Auth::new(Some("fedcba9876543210".into()));
        assert!(!other.valid_session(&cookie, 1001));
        let (_, tag) = cookie.split_once('.').unwrap();
        let stretched = format!("{}.{tag}", 1000 + 10 * SESSION.as_secs());
        assert!(!auth.valid_session(&stretched, 1001));
        assert!(!auth.valid_session("x", 1001));
        assert!(!auth.valid_session("1.zz", 0));
        assert!(Auth::new(None).session(0).is_none());
    }

    #[test]
    fn comparison_needs_equal_length_and_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
