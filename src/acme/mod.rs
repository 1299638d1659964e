//! ACME: certificates obtained and renewed by branchgate itself. Sits beside
//! [`crate::tls`]: it feeds the certificates the handshake selects from, and
//! answers the challenges the listeners see.
//!
//! ```text
//! Snapshot ──(generation changed)──▶ names::wanted ──▶ manager (one task) ──spawn──▶ client::order
//!   LETSENCRYPT_HOST, branchgate.tls=acme,           gates: routes now · one order   │ HTTP-01 / TLS-ALPN-01 → Challenges
//!   --acme-all-hosts, branch domain (DNS-01)          per name · backoff · budget     │ DNS-01 → dns (RFC 2136 / exec)
//! handshake for a routed branch host ──request──▶ manager      ▲                      ▼
//!   (no certificate yet: waits, bounded)                        └── Outcome ◀── store (state dir, atomic, locked)
//! manager ──ArcSwap::store──▶ Issued (name → certificate), Status ──▶ tls::Selector, status.json
//! ```
//!
//! A certificate already held is always served: orders, failures and the
//! budget only ever delay names that have none (or renewals, while the old
//! certificate serves).

pub mod challenge;
pub mod client;
pub mod dns;
pub mod manager;
pub mod names;
pub mod order;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::routes::{MAX_HOST_LEN, Reader};
use crate::tls::Cert;
pub use challenge::Challenges;
pub use client::Kind;

/// Let's Encrypt's production directory (the default).
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`--acme-staging`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How many on-demand requests may wait for the manager at once; more are
/// dropped (their handshakes time out as if the CA were slow).
const REQUEST_QUEUE: usize = 1024;

/// Everything ACME is told at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The ACME directory URL.
    pub directory: String,
    /// The account contact.
    pub email: Option<String>,
    /// Extra root certificates (PEM) for the ACME server's HTTPS.
    pub ca_root: Option<Vec<u8>>,
    /// The state directory.
    pub state: PathBuf,
    /// The challenges to try for names that are not wildcards, in order.
    pub challenges: Vec<Kind>,
    /// DNS-01 may be used for wildcards (`--acme-dns`, and not excluded by
    /// `--acme-challenge`): branch environments get wildcard certificates.
    pub wildcards: bool,
    /// DNS-01's solver.
    pub dns: Option<dns::DnsSolver>,
    /// A certificate for every exact host that routes.
    pub all_hosts: bool,
    /// How long a first handshake waits for its certificate.
    pub on_demand_timeout: Duration,
    /// New orders allowed in any hour.
    pub max_orders_per_hour: u32,
    /// The wait after a first failure; doubled per failure up to [`manager::MAX_BACKOFF`].
    pub retry: Duration,
    /// The branch domain, if branch environments are on.
    pub branch_domain: Option<String>,
    /// `--dashboard-host`: served by branchgate itself, so it gets a
    /// certificate although no route names it.
    pub dashboard_host: Option<String>,
}

impl Settings {
    /// Whether `name` is served by branchgate itself (the dashboard host).
    pub fn serves_itself(&self, name: &str) -> bool {
        self.dashboard_host.as_deref() == Some(name)
    }

    /// Whether branch hosts get certificates at their first handshake
    /// (no DNS-01: no wildcards).
    pub fn on_demand(&self) -> bool {
        self.branch_domain.is_some() && !self.wildcards()
    }

    /// Whether the branch domain is covered by wildcards (DNS-01 is set up).
    pub fn wildcards(&self) -> bool {
        self.wildcards && self.dns.is_some()
    }
}

/// Where a managed certificate stands.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Asked for, no order yet.
    Pending,
    /// An order is in flight.
    Ordering,
    /// Held and in force.
    Valid,
    /// The last order failed; retried at `next_attempt`.
    Failed,
    /// Waiting for the hourly budget.
    Budget,
    /// Another process sharing the state directory orders it.
    Locked,
    /// Held, no longer asked for or routed: served until it expires, not renewed.
    Idle,
}

/// What one managed certificate is doing, for logs, `status.json` and the dashboard.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    /// The SANs asked for.
    pub names: Vec<String>,
    /// Where it stands.
    pub state: State,
    /// The last failure, kept until the next success.
    pub last_error: Option<String>,
    /// When the next order may be placed (unix seconds).
    pub next_attempt: Option<i64>,
    /// The held certificate's `notAfter` (unix seconds).
    pub not_after: Option<i64>,
    /// When the held certificate will be renewed (unix seconds).
    pub renew_at: Option<i64>,
}

/// Name → certificate for every certificate ACME holds (each SAN a key).
pub type Issued = HashMap<Box<str>, Arc<Cert>>;

/// What the manager publishes, whole: the certificates and their status
/// agree because they are one value.
#[derive(Debug, Default)]
pub struct Published {
    /// The certificates in force.
    pub issued: Issued,
    /// Every managed certificate's status, by id.
    pub status: BTreeMap<String, Status>,
}

/// The ACME side as the listeners see it: certificates, challenge answers,
/// status, and on-demand requests to the manager.
#[derive(Debug)]
pub struct Acme {
    /// Challenge answers in force.
    pub challenges: Challenges,
    published: ArcSwap<Published>,
    /// Bumped whenever `published` changes.
    changed: watch::Sender<u64>,
    /// Order attempts that ended issued, failed, or refused by the budget.
    outcomes: [std::sync::atomic::AtomicU64; 3],
    requests: mpsc::Sender<String>,
    settings: Settings,
    routes: Reader,
    events: Option<Arc<crate::events::Events>>,
}

impl Acme {
    /// The handle, and the receiving end of on-demand requests for the manager.
    /// Order results go to `events`, when given.
    pub fn new(
        settings: Settings,
        routes: Reader,
        events: Option<Arc<crate::events::Events>>,
    ) -> (Arc<Self>, mpsc::Receiver<String>) {
        let (requests, rx) = mpsc::channel(REQUEST_QUEUE);
        let acme = Arc::new(Self {
            challenges: Challenges::default(),
            published: ArcSwap::default(),
            changed: watch::channel(0).0,
            outcomes: Default::default(),
            requests,
            settings,
            routes,
            events,
        });
        (acme, rx)
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The in-date certificate ACME holds for `host` (lower case): one
    /// naming it, else one whose wildcard covers it.
    pub fn cert_for(&self, host: &str) -> Option<Arc<Cert>> {
        let published = self.published.load();
        let now = crate::tls::certs::unix_now();
        let usable = |c: &&Arc<Cert>| c.covers(host) && !c.expired_at(now);
        if let Some(c) = published.issued.get(host).filter(usable) {
            return Some(c.clone());
        }
        // `*.parent`, spelled on the stack: this runs per handshake.
        let (_, parent) = host.split_once('.')?;
        let mut buf = [0u8; MAX_HOST_LEN + 2];
        let wildcard = buf.get_mut(..parent.len() + 2)?;
        wildcard[..2].copy_from_slice(b"*.");
        wildcard[2..].copy_from_slice(parent.as_bytes());
        let wildcard = std::str::from_utf8(wildcard).ok()?;
        published.issued.get(wildcard).filter(usable).cloned()
    }

    /// The certificates and every managed certificate's status, by id (the
    /// dashboard's source).
    pub fn published(&self) -> Arc<Published> {
        self.published.load_full()
    }

    /// Whether a handshake for `host` without a certificate should wait for
    /// one to be ordered: on-demand is on and `host` is a branch host whose
    /// branches are deployed (never a name a wildcard or regex rule matches:
    /// those would let any SNI place an order).
    pub fn wants_on_demand(&self, host: &str) -> bool {
        self.settings.on_demand() && names::branch_routes(&self.routes.load(), host)
    }

    /// Asks for a certificate for `host` and waits, at most the on-demand
    /// timeout, until one is held (`true`) or its order failed (`false`).
    /// Every handshake for the name waits on the same single order.
    pub async fn on_demand(&self, host: &str) -> bool {
        let mut changed = self.changed.subscribe();
        // A full queue drops the request: the wait times out below.
        let _ = self.requests.try_send(host.to_owned());
        let id = names::cert_id(host);
        let wait = async {
            loop {
                if self.cert_for(host).is_some() {
                    return true;
                }
                // The negative cache: a failed order waits for its backoff.
                let published = self.published.load();
                if let Some(s) = published.status.get(&id)
                    && matches!(s.state, State::Failed | State::Budget)
                    && s.next_attempt
                        .is_some_and(|t| t > crate::tls::certs::unix_now())
                {
                    return false;
                }
                drop(published);
                if changed.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(self.settings.on_demand_timeout, wait)
            .await
            .unwrap_or(false)
    }

    /// Order attempts so far by result (`issued`, `failed`, `budget`), for metrics.
    pub fn orders(&self) -> [(&'static str, u64); 3] {
        let n = |i: usize| self.outcomes[i].load(std::sync::atomic::Ordering::Relaxed);
        [("issued", n(0)), ("failed", n(1)), ("budget", n(2))]
    }

    /// Counts one order attempt's outcome (0 issued, 1 failed, 2 budget)
    /// and reports it as an event.
    fn count(&self, outcome: usize, id: &str, names: &[String], detail: Option<&str>) {
        self.outcomes[outcome].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(events) = &self.events {
            let result = ["issued", "failed", "budget"][outcome];
            let message = match detail {
                Some(d) => format!("ACME order for {} {result}: {d}", names.join(", ")),
                None => format!("ACME order for {} {result}", names.join(", ")),
            };
            let data = serde_json::json!({ "certificate": id, "names": names, "result": result, "error": detail });
            events.push("acme", message, data);
        }
    }

    fn publish(&self, published: Published) {
        self.published.store(Arc::new(published));
        self.changed.send_modify(|g| *g += 1);
    }
}

/// A uniformly random whole number of seconds in `0..=max`.
pub fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let mut b = [0u8; 8];
    // SystemRandom only fails where there is no OS randomness at all.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_le_bytes(b) % (max + 1)
}
