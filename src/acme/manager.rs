//! The one task that decides when to order: it follows the route table,
//! keeps one entry per certificate, and places orders under four gates —
//! the names route now, one order in flight per certificate (and a file
//! lock across processes), a backoff after a failure, and the hourly
//! budget. Orders run as their own tasks; their outcome comes back here and
//! is published whole ([`Acme::publish`]): certificates for the handshake,
//! status for the dashboard and `status.json`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use instant_acme::Account;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::{self, Kind, OrderError, Solvers};
use super::names::{self, Wanted};
use super::store::{self, Store};
use super::{Acme, Issued, Status};
use crate::routes::Reader;
use crate::tls::Cert;
use crate::tls::certs::unix_now;

/// The longest wait between two attempts for one certificate.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// How often the route table is looked at for changes.
const TICK: Duration = Duration::from_millis(250);

/// How long to wait for another process that holds a certificate's lock.
const LOCKED_RETRY: i64 = 2;

/// One certificate the manager looks after.
#[derive(Debug)]
struct Entry {
    names: Vec<String>,
    /// Asked for by a handshake (kept while it routes), not by the routes' labels.
    on_demand: bool,
    /// The routes ask for it (labels, `--acme-all-hosts`, branch wildcards).
    wanted: bool,
    /// All names route now: orders and renewals may be placed.
    routed: bool,
    cert: Option<Arc<Cert>>,
    renew_at: i64,
    failures: u32,
    next_attempt: i64,
    last_error: Option<String>,
    state: &'static str,
    in_flight: bool,
}

impl Entry {
    fn new(names: Vec<String>, on_demand: bool) -> Self {
        Self {
            names,
            on_demand,
            wanted: !on_demand,
            routed: true,
            cert: None,
            renew_at: 0,
            failures: 0,
            next_attempt: 0,
            last_error: None,
            state: "pending",
            in_flight: false,
        }
    }

    fn due(&self, now: i64) -> bool {
        self.routed
            && !self.in_flight
            && now >= self.next_attempt
            && self.cert.as_ref().is_none_or(|_| now >= self.renew_at)
    }

    fn status(&self) -> Status {
        Status {
            names: self.names.clone(),
            state: self.state,
            last_error: self.last_error.clone(),
            next_attempt: (self.state != "valid" && self.state != "idle")
                .then_some(self.next_attempt),
            not_after: self.cert.as_ref().map(|c| c.not_after),
            renew_at: self.cert.as_ref().map(|_| self.renew_at),
        }
    }
}

/// How an order task ended.
enum Outcome {
    /// Issued now, or found stored by another process.
    Cert { cert: Arc<Cert>, renew_at: i64 },
    /// Another process holds the lock.
    Locked,
    /// The hourly budget is spent until then.
    Budget { until: i64, used: usize },
    /// Failed.
    Failed(OrderError),
}

/// What every order task shares.
struct Ctx {
    acme: Arc<Acme>,
    store: Store,
    provider: Arc<CryptoProvider>,
    account: Mutex<Option<Account>>,
    /// Serialises the budget check with recording the order.
    budget: Mutex<()>,
}

/// The manager: run it once, in the background.
pub struct Manager {
    ctx: Arc<Ctx>,
    routes: Reader,
    requests: mpsc::Receiver<String>,
    entries: BTreeMap<String, Entry>,
    /// Certificates in the state directory that no route asks for now:
    /// served until they expire.
    kept: HashMap<String, Arc<Cert>>,
    generation: Option<u64>,
    refused: Vec<String>,
}

impl Manager {
    /// A manager for `acme`, storing in `store`; loads what the state
    /// directory holds so a restart orders nothing that is still valid.
    pub fn new(
        acme: Arc<Acme>,
        requests: mpsc::Receiver<String>,
        store: Store,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        let routes = acme.routes.clone();
        let mut kept = HashMap::new();
        for id in store.cert_ids().unwrap_or_default() {
            match load(&store, &id, &provider) {
                Ok(Some(cert)) => {
                    kept.insert(id, cert);
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(id, error = %e, "ACME: a stored certificate cannot be used; it will be ordered again if wanted")
                }
            }
        }
        if !kept.is_empty() {
            info!(certificates = kept.len(), dir = %store.root().display(), "ACME certificates loaded from the state directory");
        }
        let ctx = Arc::new(Ctx {
            acme,
            store,
            provider,
            account: Mutex::new(None),
            budget: Mutex::new(()),
        });
        let m = Self {
            ctx,
            routes,
            requests,
            entries: BTreeMap::new(),
            kept,
            generation: None,
            refused: Vec::new(),
        };
        m.publish();
        m
    }

    /// Follows the routes and orders until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut orders: JoinSet<(String, Outcome)> = JoinSet::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut dirty = false;
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(host) = self.requests.recv() => dirty |= self.request(host),
                Some(done) = orders.join_next(), if !orders.is_empty() => {
                    if let Ok((id, outcome)) = done {
                        self.finish(&id, outcome);
                        dirty = true;
                    }
                }
                _ = tick.tick() => {}
            }
            dirty |= self.follow_routes();
            dirty |= self.start_due(&mut orders);
            if dirty {
                self.publish();
            }
        }
        orders.shutdown().await;
    }

    /// A handshake asks for `host`: an entry of its own, ordered now
    /// unless it waits for a backoff. Names that do not route are refused.
    fn request(&mut self, host: String) -> bool {
        let snapshot = self.routes.load();
        if !names::under_branch_domain(&self.ctx.acme.settings, &host)
            || !names::routes_now(&snapshot, &host)
        {
            return false;
        }
        let id = names::cert_id(&host);
        if self.entries.contains_key(&id) || self.covered(&host) {
            return false;
        }
        let mut entry = Entry::new(vec![host], true);
        entry.cert = self.kept.remove(&id);
        if let Some(c) = &entry.cert {
            entry.renew_at = renew_at(c);
            entry.state = "valid";
        }
        self.entries.insert(id, entry);
        true
    }

    /// Whether a held certificate already covers `host`.
    fn covered(&self, host: &str) -> bool {
        let now = unix_now();
        self.entries
            .values()
            .filter_map(|e| e.cert.as_ref())
            .chain(self.kept.values())
            .any(|c| c.covers(host) && !c.expired_at(now))
    }

    /// Re-reads what the routes ask for when the table changed.
    fn follow_routes(&mut self) -> bool {
        let snapshot = self.routes.load();
        let generation = snapshot.table().generation();
        if self.generation == Some(generation) {
            return false;
        }
        self.generation = Some(generation);
        let (wanted, refused) = names::wanted(&snapshot, &self.ctx.acme.settings);
        if refused != self.refused {
            for r in &refused {
                warn!("ACME: {r}; no certificate is ordered for it");
            }
            self.refused = refused;
        }
        for (id, e) in &mut self.entries {
            e.wanted = e.on_demand || wanted.contains_key(id);
        }
        for (id, Wanted { names, .. }) in wanted {
            if !self.entries.contains_key(&id) {
                let mut entry = Entry::new(names, false);
                if let Some(c) = self.kept.remove(&id)
                    && entry.names.iter().all(|n| c.covers(n))
                {
                    entry.renew_at = renew_at(&c);
                    entry.state = "valid";
                    entry.cert = Some(c);
                }
                self.entries.insert(id, entry);
            }
        }
        for e in self.entries.values_mut() {
            // Kept only while asked for and routed: a label removed, or a
            // branch gone, stops renewals; the certificate serves until it expires.
            let routed = e.wanted && e.names.iter().all(|n| names::name_routes(&snapshot, n));
            if routed != e.routed {
                e.routed = routed;
                if !routed && e.cert.is_some() && e.state == "valid" {
                    e.state = "idle";
                } else if routed && e.state == "idle" {
                    e.state = "valid";
                }
            }
        }
        true
    }

    /// Spawns an order task for every entry that is due.
    fn start_due(&mut self, orders: &mut JoinSet<(String, Outcome)>) -> bool {
        let now = unix_now();
        let mut started = false;
        for (id, e) in &mut self.entries {
            if !e.due(now) {
                continue;
            }
            e.in_flight = true;
            e.state = "ordering";
            started = true;
            let ctx = self.ctx.clone();
            let id = id.clone();
            let names = e.names.clone();
            let old = e.cert.clone();
            orders.spawn(async move {
                let outcome = obtain(&ctx, &id, &names, old).await;
                (id, outcome)
            });
        }
        started
    }

    fn finish(&mut self, id: &str, outcome: Outcome) {
        let retry = self.ctx.acme.settings.retry;
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        e.in_flight = false;
        let now = unix_now();
        match outcome {
            Outcome::Cert { cert, renew_at } => {
                info!(
                    certificate = id,
                    names = ?e.names,
                    not_after = cert.not_after,
                    renew_at,
                    "ACME certificate in force"
                );
                e.cert = Some(cert);
                e.renew_at = renew_at;
                e.failures = 0;
                e.last_error = None;
                e.next_attempt = 0;
                e.state = if e.routed { "valid" } else { "idle" };
            }
            Outcome::Locked => {
                e.state = "locked";
                e.next_attempt = now + LOCKED_RETRY;
            }
            Outcome::Budget { until, used } => {
                let max = self.ctx.acme.settings.max_orders_per_hour;
                let msg = format!(
                    "order budget spent: {used} orders in the last hour (--acme-max-orders-per-hour {max}); next order possible in {}s",
                    (until - now).max(0)
                );
                if e.state != "budget" || e.last_error.as_deref() != Some(msg.as_str()) {
                    warn!(certificate = id, names = ?e.names, "ACME: {msg}");
                }
                e.state = "budget";
                e.last_error = Some(msg);
                e.next_attempt = until;
            }
            Outcome::Failed(err) => {
                e.failures += 1;
                let backoff = backoff(retry, e.failures);
                e.next_attempt = now + backoff as i64;
                e.state = "failed";
                e.last_error = Some(err.to_string());
                warn!(
                    certificate = id,
                    names = ?e.names,
                    error = %err,
                    failures = e.failures,
                    retry_in_s = backoff,
                    served = e.cert.is_some(),
                    "ACME order failed"
                );
            }
        }
    }

    fn publish(&self) {
        let now = unix_now();
        let mut issued = Issued::new();
        let mut add = |c: &Arc<Cert>| {
            if c.expired_at(now) {
                return;
            }
            for n in c.names.iter() {
                let keep = issued.get(n).is_some_and(|o| o.not_after >= c.not_after);
                if !keep {
                    issued.insert(n.clone(), c.clone());
                }
            }
        };
        self.kept.values().for_each(&mut add);
        self.entries
            .values()
            .filter_map(|e| e.cert.as_ref())
            .for_each(&mut add);
        let mut status: BTreeMap<String, Status> = self
            .entries
            .iter()
            .map(|(id, e)| (id.clone(), e.status()))
            .collect();
        for (id, c) in &self.kept {
            status.entry(id.clone()).or_insert_with(|| Status {
                names: c.names.iter().map(|n| n.to_string()).collect(),
                state: "idle",
                last_error: None,
                next_attempt: None,
                not_after: Some(c.not_after),
                renew_at: None,
            });
        }
        if let Ok(json) = serde_json::to_vec_pretty(&status)
            && let Err(e) = store::write_atomic(&self.ctx.store.status_path(), &json, store::PUBLIC)
        {
            warn!(error = %e, "ACME: cannot write the status file");
        }
        self.ctx.acme.publish(issued, status);
    }
}

/// `retry` doubled per failure after the first, at most [`MAX_BACKOFF`],
/// in whole seconds (at least one).
fn backoff(retry: Duration, failures: u32) -> u64 {
    let factor = 1u64 << failures.saturating_sub(1).min(20);
    (retry.as_secs().max(1))
        .saturating_mul(factor)
        .min(MAX_BACKOFF.as_secs())
}

/// When a certificate is renewed without ARI: at two thirds of its
/// lifetime, up to a twentieth of the lifetime earlier at random so
/// certificates issued together do not renew together.
fn renew_at(cert: &Cert) -> i64 {
    let lifetime = (cert.not_after - cert.not_before).max(0);
    cert.not_before + lifetime * 2 / 3 - super::jitter((lifetime / 20) as u64) as i64
}

/// Reads a stored certificate (`None`: not stored or expired).
fn load(store: &Store, id: &str, provider: &CryptoProvider) -> Result<Option<Arc<Cert>>, String> {
    let Some((chain, key)) = store.read_cert(id).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let (crt, _) = store.cert_paths(id);
    match Cert::parse(&crt, &chain, &key, provider) {
        Ok(c) => Ok(Some(Arc::new(c))),
        Err(e) if e.starts_with("expired") => Ok(None),
        Err(e) => Err(format!("{}: {e}", crt.display())),
    }
}

/// One order task: the lock, what another process may have stored, the
/// budget, then the challenges in `--acme-challenge` order.
async fn obtain(ctx: &Ctx, id: &str, names: &[String], old: Option<Arc<Cert>>) -> Outcome {
    let _lock = match ctx.store.try_lock(id) {
        Ok(Some(lock)) => lock,
        Ok(None) => return Outcome::Locked,
        Err(e) => return Outcome::Failed(OrderError::Store(e)),
    };
    // Another process may have stored a newer one while we waited.
    if let Ok(Some(stored)) = load(&ctx.store, id, &ctx.provider) {
        let newer = old.as_ref().is_none_or(|o| stored.not_after > o.not_after);
        let renew = renew_at(&stored);
        if newer && names.iter().all(|n| stored.covers(n)) && unix_now() < renew {
            return Outcome::Cert {
                cert: stored,
                renew_at: renew,
            };
        }
    }
    let settings = &ctx.acme.settings;
    let kinds: Vec<Kind> = if names.iter().any(|n| n.starts_with("*.")) {
        vec![Kind::Dns01]
    } else {
        settings
            .challenges
            .iter()
            .copied()
            .filter(|k| *k != Kind::Dns01 || settings.dns.is_some())
            .collect()
    };
    let account = match account(ctx).await {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e),
    };
    let replaces = old
        .as_ref()
        .and_then(|c| c.key.cert.first())
        .and_then(client::cert_identifier);
    let solvers = Solvers {
        challenges: &ctx.acme.challenges,
        dns: settings.dns.as_ref(),
        provider: &ctx.provider,
    };
    let mut last = OrderError::NoDns(names[0].clone());
    for kind in kinds {
        if let Some(spent) = spend_budget(ctx).await {
            return spent;
        }
        info!(certificate = id, names = ?names, challenge = kind.name(), "ACME order");
        let result = client::order(&account, names, kind, &solvers, replaces.clone()).await;
        let issued = match result {
            Ok(issued) => issued,
            Err(e) if e.is_validation() => {
                warn!(certificate = id, challenge = kind.name(), error = %e, "ACME challenge failed; trying the next one, if any");
                last = e;
                continue;
            }
            Err(e) => {
                if e.account_gone() {
                    forget_account(ctx).await;
                }
                return Outcome::Failed(e);
            }
        };
        let (crt, _) = ctx.store.cert_paths(id);
        let cert = match Cert::parse(
            &crt,
            issued.chain.as_bytes(),
            issued.key.as_bytes(),
            &ctx.provider,
        ) {
            Ok(c) => Arc::new(c),
            Err(e) => return Outcome::Failed(OrderError::Unusable(e)),
        };
        if let Err(e) = ctx
            .store
            .save_cert(id, issued.chain.as_bytes(), issued.key.as_bytes())
        {
            return Outcome::Failed(OrderError::Store(e));
        }
        let leaf: Option<&CertificateDer<'_>> = cert.key.cert.first();
        let ari = match leaf.and_then(client::cert_identifier) {
            Some(cid) => client::ari_renewal(&account, &cid).await,
            None => None,
        };
        let renew = ari.unwrap_or_else(|| renew_at(&cert));
        return Outcome::Cert {
            cert,
            renew_at: renew,
        };
    }
    Outcome::Failed(last)
}

/// Counts an order against the hourly budget, or says until when it is spent.
async fn spend_budget(ctx: &Ctx) -> Option<Outcome> {
    let _one = ctx.budget.lock().await;
    let now = unix_now();
    let max = ctx.acme.settings.max_orders_per_hour as usize;
    let recent = ctx.store.orders_since(now - 3600);
    if recent.len() >= max {
        let oldest = recent.iter().copied().min().unwrap_or(now);
        return Some(Outcome::Budget {
            until: oldest + 3600,
            used: recent.len(),
        });
    }
    if let Err(e) = ctx.store.record_order(now, now - 3600) {
        return Some(Outcome::Failed(OrderError::Store(e)));
    }
    None
}

/// The CA no longer knows the stored account (its database was reset, as
/// Pebble's is on restart): set the credentials aside so the next attempt
/// registers again. Never done for any other error.
async fn forget_account(ctx: &Ctx) {
    *ctx.account.lock().await = None;
    let path = ctx.store.account_path();
    let aside = path.with_extension(format!("json.unknown-{}", unix_now()));
    match std::fs::rename(&path, &aside) {
        Ok(()) => warn!(
            moved_to = %aside.display(),
            "ACME: the CA does not know the stored account; a new one is registered at the next order"
        ),
        Err(e) => warn!(error = %e, "ACME: cannot set the unknown account aside"),
    }
}

/// The account, restored or created once per process.
async fn account(ctx: &Ctx) -> Result<Account, OrderError> {
    let mut slot = ctx.account.lock().await;
    if let Some(a) = &*slot {
        return Ok(a.clone());
    }
    let s = &ctx.acme.settings;
    let a = client::account(
        &ctx.store,
        &s.directory,
        s.email.as_deref(),
        s.ca_root.as_deref(),
    )
    .await?;
    *slot = Some(a.clone());
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_day() {
        let r = Duration::from_secs(60);
        assert_eq!(backoff(r, 1), 60);
        assert_eq!(backoff(r, 2), 120);
        assert_eq!(backoff(r, 5), 960);
        assert_eq!(backoff(r, 40), MAX_BACKOFF.as_secs());
    }
}
