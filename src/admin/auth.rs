//! The admin token check: constant-time comparison, and a per-client
//! throttle on failures so a token cannot be guessed at network speed.
//!
//! A browser logs in once with the token and gets a session cookie:
//! `admin.EXPIRY.MAC` ([`crate::guard::signed`]) under a key derived
//! from the token, so sessions survive a restart, end when the token
//! changes, and need no server-side store. Verified in constant time.

use std::net::IpAddr;
use std::time::Duration;

use ring::hmac;

use crate::guard::signed;
use crate::guard::throttle::{Throttle, constant_time_eq};

/// Failed attempts a client may make per window before it is refused.
const MAX_FAILURES: u32 = 10;
/// The window, and how long a throttled client waits.
const WINDOW: Duration = Duration::from_secs(60);
/// How long a login lasts.
pub const SESSION: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "branchgate_admin";
/// The payload of an admin session (the signature carries the rest).
const PAYLOAD: &str = "admin";

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
    failures: Throttle,
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
            failures: Throttle::new(MAX_FAILURES, WINDOW),
        }
    }

    /// A session cookie's value, valid for [`SESSION`] from `now` (unix
    /// seconds); `None` without a token.
    pub fn session(&self, now: u64) -> Option<String> {
        let key = self.sessions.as_ref()?;
        Some(signed::sign(key, PAYLOAD, now + SESSION.as_secs()))
    }

    /// Whether `cookie` is a session this token signed that has not expired
    /// at `now` (unix seconds).
    pub fn valid_session(&self, cookie: &str, now: u64) -> bool {
        self.sessions
            .as_ref()
            .and_then(|key| signed::verify(key, cookie, now))
            == Some(PAYLOAD)
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
        if self.failures.throttled(client) {
            return Verdict::Throttled;
        }
        if bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), token)) {
            return Verdict::Allowed;
        }
        self.failures.failed(client);
        Verdict::Denied
    }
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
        let (_, tag) = cookie.rsplit_once('.').unwrap();
        let stretched = format!("admin.{}.{tag}", 1000 + 10 * SESSION.as_secs());
        assert!(!auth.valid_session(&stretched, 1001));
        assert!(!auth.valid_session("x", 1001));
        assert!(!auth.valid_session("1.zz", 0));
        assert!(Auth::new(None).session(0).is_none());
    }
}
