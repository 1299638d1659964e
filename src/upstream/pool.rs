//! A route's upstreams, balanced round-robin. A [`Pool`] is live state like
//! its upstreams: the registry hands out one per [`PoolKey`] (a route and
//! its upstream set), so its round-robin position carries over every publish
//! that keeps the key. Each route balances on its own, as before pools were
//! live state; routes over the same upstreams share those [`Upstream`]s
//! (health, idle connections), not a position.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{Proto, Upstream};

/// What a pool is: the route it serves, a protocol and a set of addresses
/// (sorted, no duplicates). Plain data; a table build produces these without
/// touching any live state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    route: Arc<str>,
    proto: Proto,
    addrs: Box<[SocketAddr]>,
}

impl PoolKey {
    /// The pool of `route` over `addrs` spoken to over `proto`; order and
    /// repeats of the addresses do not matter.
    pub fn new(
        route: impl Into<Arc<str>>,
        proto: Proto,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Self {
        let mut addrs: Vec<SocketAddr> = addrs.into_iter().collect();
        addrs.sort_unstable();
        addrs.dedup();
        Self {
            route: route.into(),
            proto,
            addrs: addrs.into(),
        }
    }

    /// The route this pool serves (`app.foo.bar/api/`, `frontend main`).
    pub fn route(&self) -> &Arc<str> {
        &self.route
    }

    /// The protocol.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// The addresses, sorted.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

/// The upstreams of one [`PoolKey`], balanced round-robin.
#[derive(Debug)]
pub struct Pool {
    key: PoolKey,
    upstreams: Box<[Arc<Upstream>]>,
    next: AtomicUsize,
    /// When it last completed a request (unix ms; 0: never), while metrics
    /// are on.
    last_request_ms: AtomicU64,
}

impl Pool {
    pub(super) fn new(key: PoolKey, upstreams: Box<[Arc<Upstream>]>) -> Self {
        Self {
            key,
            upstreams,
            next: AtomicUsize::new(0),
            last_request_ms: AtomicU64::new(0),
        }
    }

    /// Notes a request completed at `unix_ms`.
    pub fn touch(&self, unix_ms: u64) {
        self.last_request_ms.store(unix_ms, Ordering::Relaxed);
    }

    /// When it last completed a request (unix ms), if it has since start.
    pub fn last_request_ms(&self) -> Option<u64> {
        Some(self.last_request_ms.load(Ordering::Relaxed)).filter(|ms| *ms != 0)
    }

    /// What the pool is made of.
    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// The upstreams in this pool.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Upstreams to try for one request, in order: round-robin, skipping those
    /// that just refused a connection, which are still tried last.
    pub fn candidates(&self) -> Candidates<'_> {
        let n = self.upstreams.len();
        let start = if n > 1 {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        } else {
            0
        };
        Candidates {
            pool: self,
            start,
            i: 0,
            skipped: Vec::new(),
        }
    }
}

/// Iterator returned by [`Pool::candidates`]: each upstream at most once.
pub struct Candidates<'a> {
    pool: &'a Pool,
    start: usize,
    i: usize,
    /// Upstreams passed over as recently failed, tried after all healthy ones.
    /// Stays unallocated while every upstream is healthy.
    skipped: Vec<usize>,
}

impl Iterator for Candidates<'_> {
    type Item = Arc<Upstream>;
    fn next(&mut self) -> Option<Arc<Upstream>> {
        let n = self.pool.upstreams.len();
        while self.i < n {
            let idx = (self.start + self.i) % n;
            self.i += 1;
            let u = &self.pool.upstreams[idx];
            if !u.recently_failed() {
                return Some(u.clone());
            }
            self.skipped.push(idx);
        }
        // Every healthy one failed: give the recently failed ones a chance, in order.
        if self.skipped.is_empty() {
            return None;
        }
        Some(self.pool.upstreams[self.skipped.remove(0)].clone())
    }
}
