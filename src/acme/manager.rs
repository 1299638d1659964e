//! The one task that decides when to order: it follows the route table,
//! keeps one entry per certificate, and places orders under four gates —
//! the names route now, one order in flight per certificate (and a file
//! lock across processes), a backoff after a failure, and the hourly
//! budget. Orders run as their own tasks ([`super::order`]); their outcome
//! comes back here and is published whole ([`Acme::publish`]):
//! certificates for the handshake, status for the dashboard and
//! `status.json` (written by its own task, off the serving runtime).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::names::{self, Wanted};
use super::order::{self, Ctx, Outcome, load, renew_at};
use super::store::{self, Store};
use super::{Acme, Issued, Published, State, Status};
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
    /// Asked for and all names route now: orders and renewals may be placed.
    routed: bool,
    cert: Option<Arc<Cert>>,
    renew_at: i64,
    failures: u32,
    next_attempt: i64,
    last_error: Option<String>,
    state: State,
    in_flight: bool,
}

impl Entry {
    /// An entry for `names`, holding `cert` if one was stored.
    fn new(names: Vec<String>, on_demand: bool, cert: Option<Arc<Cert>>) -> Self {
        let renew_at = cert.as_deref().map_or(0, renew_at);
        Self {
            names,
            on_demand,
            wanted: !on_demand,
            routed: true,
            state: if cert.is_some() {
                State::Valid
            } else {
                State::Pending
            },
            cert,
            renew_at,
            failures: 0,
            next_attempt: 0,
            last_error: None,
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
            next_attempt: (!matches!(self.state, State::Valid | State::Idle))
                .then_some(self.next_attempt),
            not_after: self.cert.as_ref().map(|c| c.not_after),
            renew_at: self.cert.as_ref().map(|_| self.renew_at),
        }
    }
}

/// The manager: run it once, in the background.
pub struct Manager {
    ctx: Arc<Ctx>,
    routes: Reader,
    requests: mpsc::Receiver<String>,
    entries: BTreeMap<String, Entry>,
    /// Certificates in the state directory no entry holds: served until
    /// they expire.
    kept: HashMap<String, Arc<Cert>>,
    generation: Option<u64>,
    refused: Vec<String>,
    /// The latest `status.json`, for its writer task.
    status_file: watch::Sender<Vec<u8>>,
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
        let m = Self {
            ctx: Arc::new(Ctx::new(acme, store, provider)),
            routes,
            requests,
            entries: BTreeMap::new(),
            kept,
            generation: None,
            refused: Vec::new(),
            status_file: watch::channel(Vec::new()).0,
        };
        m.publish();
        m
    }

    /// Follows the routes and orders until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut orders: JoinSet<Outcome> = JoinSet::new();
        // Which certificate each order task is for, so a task that panics
        // still frees its entry.
        let mut tasks: HashMap<Id, String> = HashMap::new();
        let writer = tokio::spawn(write_status(
            self.ctx.store.status_path(),
            self.status_file.subscribe(),
        ));
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut dirty = false;
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(host) = self.requests.recv() => dirty |= self.request(host),
                Some(done) = orders.join_next_with_id(), if !orders.is_empty() => {
                    let (task, outcome) = match done {
                        Ok((task, outcome)) => (task, outcome),
                        Err(e) => (e.id(), Outcome::Failed(super::client::OrderError::Store(
                            std::io::Error::other(format!("the order task failed: {e}")),
                        ))),
                    };
                    if let Some(id) = tasks.remove(&task) {
                        self.finish(&id, outcome);
                        dirty = true;
                    }
                }
                _ = tick.tick() => {}
            }
            dirty |= self.follow_routes();
            dirty |= self.start_due(&mut orders, &mut tasks);
            if dirty {
                self.publish();
            }
        }
        orders.shutdown().await;
        drop(self.status_file);
        let _ = writer.await;
    }

    /// A handshake asks for `host`: an entry of its own, ordered now
    /// unless it waits for a backoff. Names that are not routed branch
    /// hosts are refused.
    fn request(&mut self, host: String) -> bool {
        if !names::branch_routes(&self.routes.load(), &host)
            || self.entries.values().any(|e| e.names.contains(&host))
            || self.covered(&host)
        {
            return false;
        }
        let id = names::cert_id(&host);
        let cert = self.kept.remove(&id);
        self.entries.insert(id, Entry::new(vec![host], true, cert));
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
        let ctx = self.ctx.clone();
        let settings = &ctx.acme.settings;
        let (wanted, refused) = names::wanted(&snapshot, settings);
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
                let cert = self.adopt(&id, &names);
                self.entries.insert(id, Entry::new(names, false, cert));
            }
        }
        // On-demand certificates from before a restart are renewed while
        // their host routes, as if it had asked again.
        if settings.on_demand() {
            let hosts: Vec<(String, String)> = (self.kept.iter())
                .filter(|(_, c)| c.names.len() == 1 && names::branch_routes(&snapshot, &c.names[0]))
                .map(|(id, c)| (id.clone(), c.names[0].to_string()))
                .collect();
            for (id, host) in hosts {
                let cert = self.kept.remove(&id);
                self.entries.insert(id, Entry::new(vec![host], true, cert));
            }
        }
        for e in self.entries.values_mut() {
            // Kept only while asked for and routed: a label removed, or a
            // branch gone, stops renewals; the certificate serves until it expires.
            let settings = &self.ctx.acme.settings;
            let routed = e.wanted
                && (e.names.iter())
                    .all(|n| names::name_routes(&snapshot, n) || settings.serves_itself(n));
            if routed != e.routed {
                e.routed = routed;
                match (routed, e.state, e.cert.is_some()) {
                    (false, State::Valid, true) => e.state = State::Idle,
                    (true, State::Idle, _) => e.state = State::Valid,
                    _ => {}
                }
            }
        }
        // On-demand names that stopped routing before they were issued are
        // forgotten: what clients asked for never outlives the routes.
        self.entries
            .retain(|_, e| e.routed || e.cert.is_some() || e.in_flight || !e.on_demand);
        true
    }

    /// The stored certificate `id`, if it is for exactly `names`; one for
    /// other names stays kept (served until it expires).
    fn adopt(&mut self, id: &str, names: &[String]) -> Option<Arc<Cert>> {
        let cert = self.kept.remove(id)?;
        if names.iter().all(|n| cert.covers(n)) {
            return Some(cert);
        }
        self.kept.insert(id.to_owned(), cert);
        None
    }

    /// Spawns an order task for every entry that is due.
    fn start_due(
        &mut self,
        orders: &mut JoinSet<Outcome>,
        tasks: &mut HashMap<Id, String>,
    ) -> bool {
        let now = unix_now();
        let mut started = false;
        for (id, e) in &mut self.entries {
            if !e.due(now) {
                continue;
            }
            e.in_flight = true;
            e.state = State::Ordering;
            started = true;
            let task = orders.spawn(order::obtain(
                self.ctx.clone(),
                id.clone(),
                e.names.clone(),
                e.cert.clone(),
            ));
            tasks.insert(task.id(), id.clone());
        }
        started
    }

    fn finish(&mut self, id: &str, outcome: Outcome) {
        let ctx = self.ctx.clone();
        let settings = &ctx.acme.settings;
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        e.in_flight = false;
        let now = unix_now();
        match outcome {
            Outcome::Cert { cert, renew_at } => {
                ctx.acme.count(0, id, &e.names, None);
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
                e.state = if e.routed { State::Valid } else { State::Idle };
            }
            Outcome::Locked => {
                e.state = State::Locked;
                e.next_attempt = now + LOCKED_RETRY;
            }
            Outcome::Budget { until, used } => {
                let max = settings.max_orders_per_hour;
                let msg = format!(
                    "order budget spent: {used} orders in the last hour (--acme-max-orders-per-hour {max}); next order possible in {}s",
                    (until - now).max(0)
                );
                ctx.acme.count(2, id, &e.names, Some(&msg));
                if e.state != State::Budget {
                    warn!(certificate = id, names = ?e.names, "ACME: {msg}");
                }
                e.state = State::Budget;
                e.last_error = Some(msg);
                e.next_attempt = until;
            }
            Outcome::Failed(err) => {
                ctx.acme.count(1, id, &e.names, Some(&err.to_string()));
                e.failures += 1;
                let backoff = backoff(settings.retry, e.failures);
                e.next_attempt = now + backoff as i64;
                e.state = State::Failed;
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
                state: State::Idle,
                last_error: None,
                next_attempt: None,
                not_after: Some(c.not_after),
                renew_at: None,
            });
        }
        if let Ok(json) = serde_json::to_vec_pretty(&status) {
            self.status_file.send_replace(json);
        }
        self.ctx.acme.publish(Published { issued, status });
    }
}

/// Writes the latest `status.json` whenever it changes, on a blocking
/// thread (an atomic write fsyncs), skipping versions superseded meanwhile.
async fn write_status(path: std::path::PathBuf, mut latest: watch::Receiver<Vec<u8>>) {
    while latest.changed().await.is_ok() {
        let json = latest.borrow_and_update().clone();
        let path = path.clone();
        let written =
            tokio::task::spawn_blocking(move || store::write_atomic(&path, &json, store::PUBLIC))
                .await;
        if let Ok(Err(e)) = written {
            warn!(error = %e, "ACME: cannot write the status file");
        }
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
