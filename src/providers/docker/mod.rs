//! Docker provider: watches the engine (bollard) and sends the routes of its
//! running containers to the publisher.
//!
//! ```text
//! engine ──events (since before the list)──▶ ids that changed ──one inspect each──▶ entries
//!        ──list + inspect (on every (re)connect)──────────────────────────────────▶ entries
//! entries ──labels::container_route + Reach::pick──▶ Vec<RouteSpec> by container name ──watch──▶ publisher
//! ```
//!
//! A session subscribes to the event stream from a moment taken *before* it
//! lists the containers, so nothing started in between is missed (an event
//! seen twice only costs a second inspect). When the engine goes away the last
//! routes stay in force; the watcher reconnects with capped backoff and
//! replaces its state whole from a fresh list, so containers that vanished
//! meanwhile are dropped and new ones appear.

pub mod observe;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures_util::{StreamExt as _, stream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use crate::events::Events;
use crate::logging::chain;
use crate::providers::labels::container_route;
use crate::routes::{Desired, Note, NoteKind, Origin, Provided, ProviderId, RouteSpec, Severity};
use observe::{Observed, OwnContainer, Reach, observe};

/// How the provider reaches the engine and the containers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Engine address: `unix:///path`, `tcp://host:port` (TLS when
    /// `DOCKER_TLS_VERIFY` is set, certificates from `DOCKER_CERT_PATH`), `http://`, `https://`.
    pub url: String,
    /// `--network`: use only container addresses on this network.
    pub network: Option<String>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Inspects in flight at once during a full sync.
const INSPECT_CONCURRENCY: usize = 16;
/// Bound on one API call's response headers (the event stream answers at once).
const API_TIMEOUT: Duration = Duration::from_secs(20);

/// Container actions that can change a route; `health_status` comes as
/// `health_status: healthy` and is matched by prefix.
const CONTAINER_ACTIONS: &[&str] = &[
    "start",
    "die",
    "stop",
    "kill",
    "destroy",
    "pause",
    "unpause",
    "rename",
    "update",
    "health_status",
];
const NETWORK_ACTIONS: &[&str] = &["connect", "disconnect"];

/// Why a session with the engine ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot reach the engine at {url}")]
    Connect {
        url: String,
        #[source]
        source: BollardError,
    },
    #[error("{call} failed")]
    Api {
        call: &'static str,
        #[source]
        source: BollardError,
    },
    #[error("the event stream ended")]
    StreamEnded,
}

fn api(call: &'static str) -> impl FnOnce(BollardError) -> SessionError {
    move |source| SessionError::Api { call, source }
}

/// One running container and what it currently contributes.
struct Entry {
    observed: Observed,
    route: Option<RouteSpec>,
    /// The last problem logged for it, so a resync or an unrelated event does not repeat it.
    note: Option<Note>,
}

/// The provider's state: every running container by id.
pub struct Watcher {
    settings: Settings,
    reach: Reach,
    own_id: Option<String>,
    entries: BTreeMap<String, Entry>,
    tx: Arc<watch::Sender<Desired>>,
    events: Option<Arc<Events>>,
}

impl Watcher {
    /// A watcher that publishes on `tx`.
    pub fn new(settings: Settings, tx: Arc<watch::Sender<Desired>>) -> Self {
        let own_id = observe::own_container_id();
        let reach = Reach {
            network: settings.network.clone(),
            own: None,
        };
        Watcher {
            settings,
            reach,
            own_id,
            entries: BTreeMap::new(),
            tx,
            events: None,
        }
    }

    /// Reports containers starting and stopping, engine events and
    /// reconnects to `events`.
    pub fn with_events(mut self, events: Arc<Events>) -> Self {
        self.events = Some(events);
        self
    }

    /// One container started (or was found running) or stopped.
    fn announce(&self, action: &'static str, observed: &Observed, routed: bool) {
        let Some(events) = &self.events else { return };
        let c = &observed.container;
        let label = |k: &str| c.labels.get(k).cloned();
        events.push(
            "container",
            format!("container {} {action}", c.name),
            serde_json::json!({
                "id": c.id,
                "name": c.name,
                "action": action,
                "routed": routed,
                "branch": label("branchgate.branch"),
                "role": label("branchgate.role"),
            }),
        );
    }

    /// Runs until `token` is cancelled, reconnecting with capped backoff.
    pub async fn run(mut self, token: CancellationToken) {
        match &self.own_id {
            Some(id) => {
                info!(container = %short(id), "running in a container; routing over the networks it shares")
            }
            None => debug!("not running in a container"),
        }
        let mut backoff = MIN_BACKOFF;
        let mut failing = false;
        loop {
            let mut synced = false;
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                () = token.cancelled() => return,
                r = self.session(&mut synced) => r,
            };
            if synced {
                failing = false;
                // A session that syncs and then fails at once (an engine or a
                // socket proxy refusing /events) must not retry at full speed.
                if started.elapsed() >= MAX_BACKOFF {
                    backoff = MIN_BACKOFF;
                }
            }
            let error = match result {
                Ok(()) => SessionError::StreamEnded,
                Err(e) => e,
            };
            if let Some(events) = &self.events {
                events
                    .stats
                    .docker_reconnects
                    .fetch_add(1, Ordering::Relaxed);
            }
            // The first failure of a run of them is a warning; retries are quiet.
            if failing {
                debug!(error = %chain(&error), retry_in = ?backoff, "docker still unavailable");
            } else {
                warn!(error = %chain(&error), retry_in = ?backoff, routes = self.routed(),
                      "docker unavailable; keeping the last known routes and reconnecting");
                failing = true;
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn routed(&self) -> usize {
        self.entries.values().filter(|e| e.route.is_some()).count()
    }

    /// Connects, syncs fully, then follows events until the stream fails.
    async fn session(&mut self, synced: &mut bool) -> Result<(), SessionError> {
        let url = &self.settings.url;
        let connect = |source| SessionError::Connect {
            url: url.clone(),
            source,
        };
        let docker = Docker::connect_with_host(url)
            .map_err(connect)?
            .with_timeout(API_TIMEOUT)
            .negotiate_version()
            .await
            .map_err(connect)?;

        let since = docker
            .info()
            .await
            .map_err(api("info"))?
            .system_time
            .as_deref()
            .and_then(unix_seconds)
            // A second early: replays are harmless, a gap is not.
            .map(|s| (s - 1).to_string());
        if since.is_none() {
            warn!("the engine did not report its time; events during the first list may be missed");
        }
        let filters = HashMap::from([
            (
                "type".to_owned(),
                vec!["container".into(), "network".into()],
            ),
            (
                "event".to_owned(),
                CONTAINER_ACTIONS
                    .iter()
                    .chain(NETWORK_ACTIONS)
                    .map(|a| (*a).to_owned())
                    .collect(),
            ),
        ]);
        // bollard sends the request on the first poll: a task polls it now, so
        // the subscription is open before the list (and `since` replays the
        // moment in between); events wait in the channel during the sync.
        let mut events = docker.events(Some(EventsOptions {
            since,
            until: None,
            filters: Some(filters),
        }));
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let _pump = AbortOnDropHandle::new(tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                if events_tx.send(ev).is_err() {
                    return;
                }
            }
        }));
        tokio::task::yield_now().await;

        self.refresh_own(&docker).await?;
        let listed = docker
            .list_containers(Some(ListContainersOptions {
                all: false,
                ..Default::default()
            }))
            .await
            .map_err(api("list containers"))?;
        let ids: BTreeSet<String> = listed.into_iter().filter_map(|c| c.id).collect();
        let found = inspect_all(&docker, ids).await?;
        let mut old = std::mem::take(&mut self.entries);
        for (id, observed) in found {
            if let Some(observed) = observed {
                let before = old.remove(&id);
                let entry = self.entry(observed, before.as_ref().and_then(|e| e.note.clone()));
                if before.is_none() {
                    self.announce("running", &entry.observed, entry.route.is_some());
                }
                self.entries.insert(id, entry);
            }
        }
        for (_, gone) in old {
            info!(container = %gone.observed.container.name, "container went away while docker was unreachable");
            self.announce("gone", &gone.observed, false);
        }
        self.send();
        info!(url = %self.settings.url, running = self.entries.len(), routed = self.routed(), "docker synced");
        *synced = true;

        loop {
            let first = events_rx.recv().await.ok_or(SessionError::StreamEnded)?;
            let mut changed = BTreeSet::new();
            note_event(&first.map_err(api("event stream"))?, &mut changed);
            let mut seen = 1;
            // Take whatever else already arrived: one batch, one publish.
            while let Ok(ev) = events_rx.try_recv() {
                note_event(&ev.map_err(api("event stream"))?, &mut changed);
                seen += 1;
            }
            if let Some(events) = &self.events {
                events
                    .stats
                    .docker_events
                    .fetch_add(seen, Ordering::Relaxed);
            }
            if changed.is_empty() {
                continue;
            }
            let mut dirty = false;
            if self.own_id.as_ref().is_some_and(|id| changed.contains(id)) {
                // branchgate's own networks changed: every address may change.
                self.refresh_own(&docker).await?;
                let ids: Vec<String> = self.entries.keys().cloned().collect();
                for id in ids {
                    let observed = self.entries.get(&id).map(|e| e.observed.clone());
                    dirty |= self.replace(id, observed);
                }
            }
            for (id, observed) in inspect_all(&docker, changed).await? {
                dirty |= self.replace(id, observed);
            }
            // Unrelated events (another project's containers, health checks
            // that change nothing here) publish nothing.
            if dirty {
                self.send();
            }
        }
    }

    /// Puts a container's new state in place; whether its route or its note
    /// changed (notes are published state too).
    fn replace(&mut self, id: String, observed: Option<Observed>) -> bool {
        let (before, note, known) = match self.entries.remove(&id) {
            Some(e) => (e.route, e.note, Some(e.observed)),
            None => (None, None, None),
        };
        let Some(observed) = observed else {
            if before.is_some() {
                debug!(container = %short(&id), "container no longer routed");
            }
            if let Some(known) = &known {
                self.announce("stopped", known, before.is_some());
            }
            return before.is_some() || note.is_some();
        };
        let entry = self.entry(observed, note.clone());
        if known.is_none() {
            self.announce("started", &entry.observed, entry.route.is_some());
        }
        let changed = entry.route != before || entry.note != note;
        self.entries.insert(id, entry);
        changed
    }

    async fn refresh_own(&mut self, docker: &Docker) -> Result<(), SessionError> {
        let Some(id) = &self.own_id else {
            return Ok(());
        };
        let resp = match docker.inspect_container(id, None).await {
            Ok(resp) => resp,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                // A container, but not one of this engine's (a CI job, a
                // remote engine): the host's rules apply.
                warn!(container = %short(id), "branchgate's own container is not on this engine; \
                       routing as if on the host (use --network to choose)");
                self.own_id = None;
                self.reach.own = None;
                return Ok(());
            }
            Err(e) => return Err(api("inspect own container")(e)),
        };
        self.reach.own = observe(resp).map(|o| OwnContainer {
            id: id.clone(),
            networks: o.networks,
            host_network: o.host_network,
        });
        Ok(())
    }

    /// Reads one container's route, logging a problem once per change of it.
    fn entry(&self, mut observed: Observed, last_note: Option<Note>) -> Entry {
        let (route, note) = route_for(&self.reach, &mut observed);
        let name = &observed.container.name;
        if note != last_note {
            match &note {
                Some(n) => n.log(),
                None if last_note.is_some() => {
                    info!(container = %name, "container routes normally again")
                }
                None => {}
            }
        }
        Entry {
            observed,
            route,
            note,
        }
    }

    /// Sends every route, ordered by container name: the documented rule for
    /// which container decides a host's shared settings.
    /// Its notes go with them, ordered the same way.
    fn send(&self) {
        let mut specs: Vec<RouteSpec> = self
            .entries
            .values()
            .filter_map(|e| e.route.clone())
            .collect();
        specs.sort_by(|a, b| a.source.cmp(&b.source));
        let mut notes: Vec<Note> = self
            .entries
            .values()
            .filter_map(|e| e.note.clone())
            .collect();
        notes.sort_by(|a, b| a.source.cmp(&b.source));
        self.tx.send_modify(|d| {
            d.insert(ProviderId::Docker, Arc::new(Provided { specs, notes }));
        });
    }
}

/// A container's route (when it asks for one) and the problem to report, if
/// any: bad settings skip it; unreachable, unhealthy or paused ones keep their
/// hosts with no upstream (503) rather than vanishing into a 404 or another
/// route. Sets the container's chosen address.
pub fn route_for(reach: &Reach, observed: &mut Observed) -> (Option<RouteSpec>, Option<Note>) {
    let picked = reach.pick(observed);
    observed.container.ip = picked.as_ref().ok().copied();
    let name = &observed.container.name;
    let note = |severity, kind, message| Note {
        origin: Origin::Provider(ProviderId::Docker),
        source: name.clone(),
        severity,
        kind,
        message,
    };
    match container_route(&observed.container) {
        Err(e) => {
            let message = format!("skipped: {e}");
            let kind = NoteKind::Invalid {
                key: e.key,
                value: e.value,
            };
            (None, Some(note(Severity::Warning, kind, message)))
        }
        Ok(None) => (None, None),
        Ok(Some(mut spec)) => {
            let note = match (picked, observed.out_of_service()) {
                (Err(why), _) => Some(note(
                    Severity::Warning,
                    NoteKind::Unreachable,
                    format!("container {name} is unreachable: {why}; its hosts answer 503"),
                )),
                (Ok(_), Some(why)) => {
                    spec.upstreams.clear();
                    Some(note(
                        Severity::Info,
                        NoteKind::OutOfService,
                        format!("container {name} is out of its pool: {why}"),
                    ))
                }
                (Ok(_), None) => None,
            };
            (Some(spec), note)
        }
    }
}

/// Adds the container an event is about to `changed`, if it can change a route.
fn note_event(ev: &EventMessage, changed: &mut BTreeSet<String>) {
    let action = ev.action.as_deref().unwrap_or("");
    let Some(actor) = &ev.actor else { return };
    let id = match ev.typ {
        Some(EventMessageTypeEnum::CONTAINER)
            if CONTAINER_ACTIONS.contains(&action) || action.starts_with("health_status") =>
        {
            actor.id.as_deref()
        }
        Some(EventMessageTypeEnum::NETWORK) if NETWORK_ACTIONS.contains(&action) => actor
            .attributes
            .as_ref()
            .and_then(|a| a.get("container"))
            .map(String::as_str),
        _ => None,
    };
    if let Some(id) = id {
        debug!(action, container = %short(id), "docker event");
        changed.insert(id.to_owned());
    }
}

/// Inspects each id once, a few at a time. `None`: gone or not running.
async fn inspect_all(
    docker: &Docker,
    ids: BTreeSet<String>,
) -> Result<Vec<(String, Option<Observed>)>, SessionError> {
    stream::iter(ids)
        .map(|id| async move {
            match docker.inspect_container(&id, None).await {
                Ok(resp) => Ok((id, observe(resp))),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok((id, None)),
                Err(source) => Err(SessionError::Api {
                    call: "inspect container",
                    source,
                }),
            }
        })
        .buffer_unordered(INSPECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Seconds since the epoch of an RFC 3339 time as the engine reports it
/// (`2026-11-23T10:11:12.123456789Z` or with a `+01:00` offset).
fn unix_seconds(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if s.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let rest = s.get(19..)?;
    let zone = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match zone {
        "Z" | "z" => 0,
        z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) => {
            let oh: i64 = z.get(1..3)?.parse().ok()?;
            let om: i64 = z.get(4..6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if z.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    // Days from 1970-01-01 to y-mo-d in the proleptic Gregorian calendar.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

#[cfg(test)]
mod tests;
