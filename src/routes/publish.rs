//! The one writer of the route table.
//!
//! Providers send their whole current state into one `watch` channel (latest
//! value wins, no backlog). The publisher waits for a change, lets a burst
//! settle for a few milliseconds, builds a new table from everything, swaps it
//! in with one `ArcSwap::store` and logs which hosts came and went.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::spec::RouteSpec;
use super::table::{BuildOptions, RouteTable, build};
use crate::proxy::upstream::UpstreamRegistry;

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

/// Everything every provider currently wants routed.
pub type Desired = BTreeMap<ProviderId, Arc<Vec<RouteSpec>>>;

/// How long a burst of updates may keep arriving before one rebuild.
const SETTLE: Duration = Duration::from_millis(3);

/// Builds and publishes route tables.
pub struct Publisher {
    table: Arc<ArcSwap<RouteTable>>,
    registry: Arc<UpstreamRegistry>,
    opts: BuildOptions,
    generation: u64,
}

impl Publisher {
    /// A publisher writing into `table`.
    pub fn new(
        table: Arc<ArcSwap<RouteTable>>,
        registry: Arc<UpstreamRegistry>,
        opts: BuildOptions,
    ) -> Self {
        Self {
            table,
            registry,
            opts,
            generation: 0,
        }
    }

    /// Builds a table from `desired` and swaps it in.
    pub fn publish(&mut self, desired: &Desired) {
        let started = Instant::now();
        self.generation += 1;
        let specs = desired.values().flat_map(|v| v.iter());
        let (table, warnings) = build(specs, &self.opts, &self.registry, self.generation);
        for w in &warnings {
            warn!(source = %w.source, "{}", w.message);
        }
        let table = Arc::new(table);
        let old = self.table.swap(table.clone());
        let (before, after) = (old.host_patterns(), table.host_patterns());
        let added: Vec<&str> = after.difference(&before).copied().collect();
        let removed: Vec<&str> = before.difference(&after).copied().collect();
        info!(
            generation = self.generation,
            hosts = table.host_count(),
            ?added,
            ?removed,
            took_us = started.elapsed().as_micros() as u64,
            "route table published"
        );
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
    use super::*;
    use crate::proxy::upstream::ClientSettings;
    use crate::routes::HostPattern;

    fn spec(host: &str) -> RouteSpec {
        RouteSpec {
            source: host.into(),
            hosts: vec![HostPattern::parse(host).unwrap()],
            path: "/".into(),
            dest: None,
            proto: crate::routes::Proto::Http,
            upstreams: vec!["127.0.0.1:1".parse().unwrap()],
            branch: None,
            role: None,
            cors: false,
        }
    }

    // Paused time: the clock moves only when every task is idle, so the burst
    // below always falls inside one settle window, however loaded the machine.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_updates_is_one_publish_of_the_latest_state() {
        let table = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
        let settings = ClientSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        };
        let registry = Arc::new(UpstreamRegistry::new(settings, 1));
        let publisher = Publisher::new(table.clone(), registry, BuildOptions::default());
        let (tx, rx) = watch::channel(Desired::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(publisher.run(rx, stop.clone()));
        tokio::task::yield_now().await;
        // Fifty updates, as a burst of container events would send them.
        for i in 0..50 {
            tx.send_modify(|d| {
                let specs = (0..=i).map(|j| spec(&format!("h{j}.foo.bar"))).collect();
                d.insert(ProviderId::File, Arc::new(specs));
            });
            // Let the publisher wake mid-burst: only the settle window keeps
            // it from rebuilding after every update.
            tokio::task::yield_now().await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while table.load().host_count() < 50 {
            assert!(Instant::now() < deadline, "the burst was never published");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            table.load().generation(),
            1,
            "one rebuild for the whole burst"
        );
        stop.cancel();
        task.await.unwrap();
    }
}
