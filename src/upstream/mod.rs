//! Upstreams: the live state behind every route, below both [`crate::routes`]
//! and [`crate::proxy`] in the data flow.
//!
//! ```text
//! publisher ──PoolKey──▶ Registry::resolve ──Arc<Pool>──▶ Snapshot (route table + pools)
//! proxy::forward ──Pool::candidates──▶ Upstream::lease ──Lease::send──▶ ResponseBody (owns the lease)
//! ```
//!
//! An [`Upstream`] (address + protocol) holds its idle connections and its
//! passive health; a [`Pool`] (a set of upstreams) holds its round-robin
//! position. The [`Registry`] hands out one of each per key and is owned by
//! the publisher alone, so both carry over every publish that keeps them and
//! are forgotten only once a stored table no longer uses them.

mod body;
mod conn;
mod exchange;
pub mod h1;
mod pool;
pub mod tls;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

pub use body::{RequestBody, RequestBodyError, Sent};
pub use conn::{ClientSettings, ConnectError, Lease, Upstream, set_worker_id};
pub use exchange::{Outgoing, ResponseBody, Retry, SendError, UpstreamError};
pub use pool::{Candidates, Pool, PoolKey};

use conn::Client;

/// Protocol spoken to an upstream (`VIRTUAL_PROTO`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// Plain HTTP/1.1.
    #[default]
    Http,
    /// HTTP/1.1 over TLS. Like nginx's default, the upstream's certificate is
    /// not verified: containers on a private network rarely have a public one.
    Https,
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http" => Ok(Self::Http),
            "https" => Ok(Self::Https),
            other => Err(format!("proto must be `http` or `https`, not {other:?}")),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Https => "https",
        })
    }
}

/// Every live upstream and pool, by key. Only the publisher holds it.
pub struct Registry {
    upstreams: HashMap<(SocketAddr, Proto), Arc<Upstream>>,
    pools: HashMap<PoolKey, Arc<Pool>>,
    client: Arc<Client>,
    workers: usize,
}

impl Registry {
    /// A registry whose upstreams keep one idle queue per worker runtime.
    pub fn new(settings: ClientSettings, workers: usize) -> Self {
        Self {
            upstreams: HashMap::new(),
            pools: HashMap::new(),
            client: Arc::new(Client {
                settings,
                tls: tokio_rustls::TlsConnector::from(Arc::new(tls::config())),
                epoch: Instant::now(),
            }),
            workers: workers.max(1),
        }
    }

    /// The live pool for `key`: the one already in use if any (same
    /// round-robin position, same upstreams), else a new one.
    pub fn resolve(&mut self, key: &PoolKey) -> Arc<Pool> {
        if let Some(pool) = self.pools.get(key) {
            return pool.clone();
        }
        let upstreams = key
            .addrs()
            .iter()
            .map(|&addr| {
                let (client, workers) = (&self.client, self.workers);
                self.upstreams
                    .entry((addr, key.proto()))
                    .or_insert_with(|| {
                        Arc::new(Upstream::new(addr, key.proto(), workers, client.clone()))
                    })
                    .clone()
            })
            .collect();
        let pool = Arc::new(Pool::new(key.clone(), upstreams));
        self.pools.insert(key.clone(), pool.clone());
        pool
    }

    /// Forgets every pool not in `in_use` and every upstream none of those
    /// pools contains. Call it only after the table holding `in_use` is
    /// stored: a request still on an older table keeps what it leased (an
    /// `Arc`), but a pool forgotten before the store would be recreated
    /// fresh by the next resolve while the old one still serves.
    pub fn prune(&mut self, in_use: &[Arc<Pool>]) {
        let keep: std::collections::HashSet<&PoolKey> = in_use.iter().map(|p| p.key()).collect();
        self.pools.retain(|k, _| keep.contains(k));
        let used: std::collections::HashSet<(SocketAddr, Proto)> = in_use
            .iter()
            .flat_map(|p| p.upstreams().iter().map(|u| (u.addr, u.proto)))
            .collect();
        self.upstreams.retain(|k, _| used.contains(k));
    }

    /// How many pools and upstreams are live, for tests and the API.
    pub fn counts(&self) -> (usize, usize) {
        (self.pools.len(), self.upstreams.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn registry() -> Registry {
        Registry::new(
            ClientSettings {
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
            },
            1,
        )
    }

    fn key(n: u16) -> PoolKey {
        PoolKey::new(
            "r",
            Proto::Http,
            (1..=n).map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
        )
    }

    fn order(pool: &Pool) -> Vec<u16> {
        pool.candidates().map(|u| u.addr.port()).collect()
    }

    #[test]
    fn candidates_rotate_and_yield_each_upstream_once() {
        let pool = registry().resolve(&key(3));
        assert_eq!(order(&pool), [1, 2, 3]);
        assert_eq!(order(&pool), [2, 3, 1]);
        let single = registry().resolve(&key(1));
        single.upstreams()[0].record_failure();
        assert_eq!(
            order(&single),
            [1],
            "a failed upstream is still tried, once"
        );
    }

    #[test]
    fn recently_failed_upstreams_come_last() {
        let pool = registry().resolve(&key(3));
        pool.upstreams()[0].record_failure();
        assert_eq!(order(&pool), [2, 3, 1]);
        assert_eq!(order(&pool), [2, 3, 1]);
        pool.upstreams()[0].record_success();
        assert_eq!(order(&pool), [3, 1, 2]);
    }

    #[test]
    fn a_key_resolves_to_the_same_pool_until_pruned() {
        let mut r = registry();
        let a = r.resolve(&key(2));
        assert_eq!(order(&a), [1, 2]);
        // Same addresses in another order: the same pool, its position kept.
        let again = r.resolve(&PoolKey::new(
            "r",
            Proto::Http,
            [([127, 0, 0, 1], 2).into(), ([127, 0, 0, 1], 1).into()],
        ));
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(order(&again), [2, 1]);
        // Another route over the same upstreams: its own position, the same
        // upstreams (health, idle connections).
        let other = r.resolve(&PoolKey::new(
            "s",
            Proto::Http,
            a.key().addrs().iter().copied(),
        ));
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(order(&other), [1, 2]);
        assert!(Arc::ptr_eq(&a.upstreams()[1], &other.upstreams()[1]));
        r.prune(&[a.clone(), other]);
        let b = r.resolve(&key(1));
        assert!(Arc::ptr_eq(&a.upstreams()[0], &b.upstreams()[0]));
        assert_eq!(r.counts(), (3, 2));
        r.prune(std::slice::from_ref(&b));
        assert_eq!(
            r.counts(),
            (1, 1),
            "the other pools and upstream :2 forgotten"
        );
        assert!(
            !Arc::ptr_eq(&a, &r.resolve(&key(2))),
            "a new pool after the prune"
        );
        assert!(Arc::ptr_eq(
            &b.upstreams()[0],
            &r.resolve(&key(2)).upstreams()[0]
        ));
    }
}
