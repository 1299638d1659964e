//! The admin token check: constant-time comparison, and a per-client
//! throttle on failures so a token cannot be guessed at network speed.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Failed attempts a client may make per window before it is refused.
const MAX_FAILURES: u32 = 10;
/// The window, and how long a throttled client waits.
const WINDOW: Duration = Duration::from_secs(60);
/// Clients remembered at most; older entries are dropped past this.
const MAX_CLIENTS: usize = 10_000;

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
    failures: DashMap<IpAddr, (u32, Instant)>,
}

impl Auth {
    /// Checks against `token` (`None`: no auth).
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.map(|t| t.into_bytes().into_boxed_slice()),
            failures: DashMap::new(),
        }
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
    fn comparison_needs_equal_length_and_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
