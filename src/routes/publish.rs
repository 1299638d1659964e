//! The one writer of the route table.
//!
//! Providers send their whole current state into one `watch` channel (latest
//! value wins, no backlog). The publisher waits for a change, lets a burst
//! settle for a few milliseconds, builds a new table from everything (pure),
//! pairs its pools with live ones from the upstream registry, stores the
//! snapshot with one `ArcSwap::store`, and only then forgets the upstreams no
//! route uses. It logs which hosts came and went, and each build note once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::build::{BuildOptions, build};
use super::notes::{Note, Origin};
use super::snapshot::{Reader, Snapshot};
use super::spec::Provided;
use crate::events::Events;
use crate::upstream::Registry;

/// A source of routes. The order of the variants is the documented order in
/// which specs are handed to the builder, so the static file decides
/// conflicts before Docker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProviderId {
    /// `--demo`'s built-in route.
    Demo,
    /// The `--routes` file.
    File,
    /// Docker containers.
    Docker,
}

/// Everything every provider currently says.
pub type Desired = BTreeMap<ProviderId, Arc<Provided>>;

/// How long a burst of updates may keep arriving before one rebuild.
const SETTLE: Duration = Duration::from_millis(3);

/// Builds and publishes snapshots; the only owner of the writable table and
/// of the upstream registry.
pub struct Publisher {
    live: Arc<ArcSwap<Snapshot>>,
    registry: Registry,
    opts: BuildOptions,
    generation: u64,
    events: Option<Arc<Events>>,
}

impl Publisher {
    /// A publisher whose table starts empty.
    pub fn new(registry: Registry, opts: BuildOptions) -> Self {
        Self {
            live: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            registry,
            opts,
            generation: 0,
            events: None,
        }
    }

    /// Reports every publish (hosts added and removed, duration) to `events`.
    pub fn with_events(mut self, events: Arc<Events>) -> Self {
        self.events = Some(events);
        self
    }

    /// A read-only handle on what this publisher stores.
    pub fn reader(&self) -> Reader {
        Reader::new(self.live.clone())
    }

    /// The upstream registry, for tests and the API.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Builds a snapshot from `desired` and stores it.
    pub fn publish(&mut self, desired: &Desired) {
        let started = Instant::now();
        let snapshot = self.prepare(desired);
        self.commit(snapshot, started);
    }

    /// Builds a snapshot with live pools; nothing is stored or forgotten yet.
    pub fn prepare(&mut self, desired: &Desired) -> Snapshot {
        self.generation += 1;
        let specs = desired.values().flat_map(|p| p.specs.iter());
        let built = build(specs, &self.opts, self.generation);
        let mut notes: Vec<Note> = desired
            .values()
            .flat_map(|p| p.notes.iter().cloned())
            .collect();
        notes.extend(built.notes);
        Snapshot::resolve(built.table, &mut self.registry, notes)
    }

    /// Stores `snapshot`, then forgets upstream state it no longer uses.
    pub fn commit(&mut self, snapshot: Snapshot, started: Instant) {
        let snapshot = Arc::new(snapshot);
        let old = self.live.swap(snapshot.clone());
        self.registry.prune(snapshot.pools());
        // Providers log their own notes when they change; the build's are
        // logged here, each once, while it stays in force.
        let before: HashSet<&Note> = old
            .notes()
            .iter()
            .filter(|n| n.origin == Origin::Build)
            .collect();
        for note in snapshot.notes() {
            if note.origin == Origin::Build && !before.contains(note) {
                note.log();
            }
        }
        let (before, after) = (
            old.table().host_patterns(),
            snapshot.table().host_patterns(),
        );
        let added: Vec<&str> = after.difference(&before).copied().collect();
        let removed: Vec<&str> = before.difference(&after).copied().collect();
        let took = started.elapsed();
        info!(
            generation = snapshot.generation(),
            hosts = snapshot.table().host_count(),
            ?added,
            ?removed,
            took_us = took.as_micros() as u64,
            "route table published"
        );
        if let Some(events) = &self.events {
            events.stats.publish(took);
            let (before, after) = (
                old.table().branch_members(),
                snapshot.table().branch_members(),
            );
            let deployed: Vec<&String> = after.difference(&before).collect();
            let gone: Vec<&String> = before.difference(&after).collect();
            let message = format!(
                "route table {} published: hosts +{} −{}, branches +{} −{}",
                snapshot.generation(),
                added.len(),
                removed.len(),
                deployed.len(),
                gone.len(),
            );
            let data = serde_json::json!({
                "generation": snapshot.generation(),
                "added": added,
                "removed": removed,
                "branches_added": deployed,
                "branches_removed": gone,
                "took_us": took.as_micros() as u64,
            });
            events.push("publish", message, data);
        }
    }

    /// Republishes on every change of `rx` until `shutdown`.
    pub async fn run(mut self, mut rx: watch::Receiver<Desired>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
            tokio::time::sleep(SETTLE).await;
            let desired = rx.borrow_and_update().clone();
            self.publish(&desired);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::routes::{HostPattern, Lookup, RouteSpec};
    use crate::upstream::ClientSettings;

    fn spec(host: &str, ports: &[u16]) -> RouteSpec {
        RouteSpec {
            source: host.into(),
            hosts: vec![HostPattern::parse(host).unwrap()],
            path: "/".into(),
            dest: None,
            proto: crate::routes::Proto::Http,
            upstreams: ports
                .iter()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
                .collect(),
            branch: None,
            role: None,
            policy: Default::default(),
        }
    }

    fn publisher() -> Publisher {
        let settings = ClientSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        };
        Publisher::new(Registry::new(settings, 1), BuildOptions::default())
    }

    fn desired(specs: Vec<RouteSpec>) -> Desired {
        Desired::from([(ProviderId::File, Arc::new(Provided::specs(specs)))])
    }

    fn pool_of(snap: &Snapshot, host: &str) -> Arc<crate::upstream::Pool> {
        match snap.table().lookup(host, "/") {
            Lookup::Found(route, _) => snap.pool(route.pool).clone(),
            _ => panic!("no route for {host}"),
        }
    }

    fn next_port(pool: &crate::upstream::Pool) -> u16 {
        pool.candidates().next().unwrap().addr.port()
    }

    #[test]
    fn round_robin_position_and_upstreams_survive_a_publish() {
        let mut p = publisher();
        let reader = p.reader();
        p.publish(&desired(vec![spec("a.foo", &[1, 2, 3])]));
        let before = pool_of(&reader.load(), "a.foo");
        assert_eq!(next_port(&before), 1);
        assert_eq!(next_port(&before), 2);
        // Another host comes: the route to a.foo is rebuilt, its pool is not.
        p.publish(&desired(vec![
            spec("a.foo", &[3, 2, 1]),
            spec("b.foo", &[4]),
        ]));
        let after = pool_of(&reader.load(), "a.foo");
        assert!(Arc::ptr_eq(&before, &after), "the same live pool");
        assert_eq!(next_port(&after), 3, "round-robin goes on where it was");
        assert_eq!(reader.load().generation(), 2);
    }

    #[test]
    fn unused_upstreams_are_pruned_only_after_the_store() {
        let mut p = publisher();
        let reader = p.reader();
        p.publish(&desired(vec![spec("a.foo", &[1]), spec("b.foo", &[2])]));
        let old = reader.load_full();
        let b = pool_of(&old, "b.foo");
        assert_eq!(p.registry().counts(), (2, 2));

        let next = p.prepare(&desired(vec![spec("a.foo", &[1])]));
        assert_eq!(
            p.registry().counts(),
            (2, 2),
            "nothing forgotten before the store"
        );
        assert_eq!(reader.load().generation(), 1, "not stored yet");
        p.commit(next, Instant::now());
        assert_eq!(reader.load().generation(), 2);
        assert_eq!(
            p.registry().counts(),
            (1, 1),
            "b.foo's pool and upstream forgotten"
        );
        // A request still on the old snapshot keeps what it holds.
        assert_eq!(next_port(&b), 2);
        assert!(Arc::ptr_eq(
            &pool_of(&old, "a.foo"),
            &pool_of(&reader.load(), "a.foo")
        ));
    }

    #[test]
    fn provider_and_build_notes_are_published_with_the_table() {
        let mut p = publisher();
        let reader = p.reader();
        let mut a = spec("a.foo", &[1]);
        a.source = "first".into();
        let mut b = spec("a.foo", &[2]);
        b.source = "second".into();
        b.policy.cors = true;
        let note = Note {
            origin: Origin::Provider(ProviderId::File),
            source: "routes.toml:9".into(),
            severity: crate::routes::Severity::Warning,
            kind: crate::routes::NoteKind::FileRejected,
            message: "bad".into(),
        };
        let provided = Provided {
            specs: vec![a, b],
            notes: vec![note.clone()],
        };
        p.publish(&Desired::from([(ProviderId::File, Arc::new(provided))]));
        let snap = reader.load();
        assert_eq!(snap.notes().len(), 2);
        assert_eq!(snap.notes()[0], note);
        assert_eq!(snap.notes()[1].origin, Origin::Build);
        assert_eq!(snap.notes()[1].source, "second");
        assert_eq!(snap.notes()[1].kind, crate::routes::NoteKind::Conflict);
    }

    // Paused time: the clock moves only when every task is idle, so the burst
    // below always falls inside one settle window, however loaded the machine.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_updates_is_one_publish_of_the_latest_state() {
        let publisher = publisher();
        let reader = publisher.reader();
        let (tx, rx) = watch::channel(Desired::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(publisher.run(rx, stop.clone()));
        tokio::task::yield_now().await;
        // Fifty updates, as a burst of container events would send them.
        for i in 0..50 {
            tx.send_modify(|d| {
                let specs = (0..=i)
                    .map(|j| spec(&format!("h{j}.foo.bar"), &[1]))
                    .collect();
                d.insert(ProviderId::File, Arc::new(Provided::specs(specs)));
            });
            // Let the publisher wake mid-burst: only the settle window keeps
            // it from rebuilding after every update.
            tokio::task::yield_now().await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while reader.load().table().host_count() < 50 {
            assert!(Instant::now() < deadline, "the burst was never published");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            reader.load().generation(),
            1,
            "one rebuild for the whole burst"
        );
        stop.cancel();
        task.await.unwrap();
    }
}
