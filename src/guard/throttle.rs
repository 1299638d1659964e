//! Failed-login throttling per client address, and the constant-time
//! comparison every secret check uses. Shared by the admin side and the
//! access layer, so a password or token cannot be guessed at network speed.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Clients remembered at most; entries older than the window are dropped
/// past this.
const MAX_CLIENTS: usize = 10_000;

/// Failures per client address in a sliding window.
#[derive(Debug)]
pub struct Throttle {
    failures: DashMap<IpAddr, (u32, Instant)>,
    max: u32,
    window: Duration,
}

impl Throttle {
    /// Refuses a client once it failed `max` times within `window`, until
    /// the window since its first failure ends.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            failures: DashMap::new(),
            max,
            window,
        }
    }

    /// Whether `client` failed too often lately.
    pub fn throttled(&self, client: IpAddr) -> bool {
        self.failures
            .get(&key(client))
            .is_some_and(|f| f.0 >= self.max && f.1.elapsed() < self.window)
    }

    /// Counts a failure of `client`.
    pub fn failed(&self, client: IpAddr) {
        self.count(client, 1);
    }

    /// Counts an attempt before it is checked, so attempts made at once
    /// cannot all pass the check before any fails: `false` (and nothing
    /// counted) when the client may not try now. A right attempt is given
    /// back with [`Throttle::succeeded`].
    pub fn attempt(&self, client: IpAddr) -> bool {
        !self.throttled(client) && self.count(client, 1) <= self.max
    }

    /// Gives back an attempt that turned out right.
    pub fn succeeded(&self, client: IpAddr) {
        if let Some(mut f) = self.failures.get_mut(&key(client)) {
            f.0 = f.0.saturating_sub(1);
        }
    }

    fn count(&self, client: IpAddr, n: u32) -> u32 {
        let now = Instant::now();
        if self.failures.len() >= MAX_CLIENTS {
            self.failures
                .retain(|_, (_, since)| now.duration_since(*since) < self.window);
            if self.failures.len() >= MAX_CLIENTS / 2 {
                // Still full of fresh entries (many addresses): keep the
                // newest half, so the map stays bounded.
                let mut since: Vec<Instant> = self.failures.iter().map(|e| e.1).collect();
                since.sort_unstable();
                let cut = since[since.len() / 2];
                self.failures.retain(|_, (_, s)| *s >= cut);
            }
        }
        let mut f = self.failures.entry(key(client)).or_insert((0, now));
        if now.duration_since(f.1) >= self.window {
            *f = (0, now);
        }
        f.0 += n;
        f.0
    }
}

/// The throttle's key for a client: its address, or for IPv6 its /64 (one
/// host usually holds a whole /64, and could walk it).
fn key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// Equal contents, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_refused_after_max_failures_and_others_are_not() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..2 {
            t.failed(a);
        }
        assert!(!t.throttled(a));
        t.failed(a);
        assert!(t.throttled(a));
        assert!(!t.throttled(b));
        // One IPv6 /64 is one client.
        let v6 = Throttle::new(2, Duration::from_secs(60));
        v6.failed("2001:db8::1".parse().unwrap());
        v6.failed("2001:db8::ffff:2".parse().unwrap());
        assert!(v6.throttled("2001:db8::3".parse().unwrap()));
        assert!(!v6.throttled("2001:db8:0:1::3".parse().unwrap()));
        // Attempts count before they are checked; a right one is given back.
        let t = Throttle::new(2, Duration::from_secs(60));
        assert!(t.attempt(b) && t.attempt(b));
        assert!(!t.attempt(b), "a third at once");
        t.succeeded(b);
        assert!(t.attempt(b));
        let short = Throttle::new(1, Duration::ZERO);
        short.failed(a);
        assert!(!short.throttled(a), "the window ended");
    }

    #[test]
    fn comparison_needs_equal_length_and_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
