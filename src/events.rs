//! What happened, for people watching: containers started and stopped,
//! route tables published (hosts added and removed), ACME orders. The
//! providers, the publisher and the ACME manager each push one [`Event`]
//! when something changes; the admin API keeps the last [`KEEP`] and sends
//! new ones to live subscribers (server-sent events). Nothing here is on a
//! request's path, and a slow subscriber only misses events.
//!
//! The same hub counts what the admin's `/metrics` reports about the
//! background work: Docker events seen and reconnects, publish durations.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// How many recent events are kept for a page that opens later.
pub const KEEP: usize = 500;

/// One thing that happened.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Increasing from 1 within one process.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `container`, `publish`, `acme` or `docker`.
    pub kind: &'static str,
    /// One line for people.
    pub message: String,
    /// The details, by kind (container name and action; hosts added and
    /// removed; certificate id and result).
    pub data: serde_json::Value,
}

/// Upper bounds of the publish-duration histogram, in seconds.
pub const PUBLISH_BUCKETS: [f64; 8] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 1.0];

/// Counters of the background work.
#[derive(Debug, Default)]
pub struct Stats {
    /// Container events the Docker provider received.
    pub docker_events: AtomicU64,
    /// Times the Docker provider lost the engine and connected again.
    pub docker_reconnects: AtomicU64,
    /// Route-table publishes, per [`PUBLISH_BUCKETS`] bucket then +Inf.
    pub publish_buckets: [AtomicU64; PUBLISH_BUCKETS.len() + 1],
    /// Sum of publish durations, microseconds.
    pub publish_sum_us: AtomicU64,
}

impl Stats {
    /// Counts one publish that took `took`.
    pub fn publish(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = PUBLISH_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(PUBLISH_BUCKETS.len());
        self.publish_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.publish_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The hub: recent events, live subscribers, counters.
#[derive(Debug)]
pub struct Events {
    recent: Mutex<VecDeque<Arc<Event>>>,
    seq: AtomicU64,
    tx: broadcast::Sender<Arc<Event>>,
    /// Counters of the background work.
    pub stats: Stats,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            recent: Mutex::new(VecDeque::with_capacity(KEEP)),
            seq: AtomicU64::new(0),
            tx: broadcast::channel(256).0,
            stats: Stats::default(),
        }
    }
}

impl Events {
    /// Records one event and sends it to the subscribers.
    pub fn push(&self, kind: &'static str, message: String, data: serde_json::Value) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        // Numbered under the lock, so `recent` and the channel agree on order.
        let event = Arc::new(Event {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            at_ms,
            kind,
            message,
            data,
        });
        if recent.len() == KEEP {
            recent.pop_front();
        }
        recent.push_back(event.clone());
        let _ = self.tx.send(event);
    }

    /// The kept events, oldest first, and a subscription to what follows
    /// them (taken together, so nothing falls in between).
    pub fn subscribe(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        (recent.iter().cloned().collect(), self.tx.subscribe())
    }

    /// The kept events, oldest first.
    pub fn recent(&self) -> Vec<Arc<Event>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_events_in_order_and_sends_new_ones() {
        let events = Events::default();
        for i in 0..KEEP + 3 {
            events.push("container", format!("e{i}"), serde_json::Value::Null);
        }
        let (kept, mut rx) = events.subscribe();
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept[0].message, "e3");
        assert_eq!(kept.last().unwrap().seq, (KEEP + 3) as u64);
        events.push("publish", "next".into(), serde_json::Value::Null);
        let next = rx.try_recv().unwrap();
        assert_eq!((next.seq, next.kind), ((KEEP + 4) as u64, "publish"));
    }

    #[test]
    fn publish_durations_fall_in_their_bucket() {
        let stats = Stats::default();
        stats.publish(Duration::from_micros(50));
        stats.publish(Duration::from_millis(3));
        stats.publish(Duration::from_secs(2));
        let counts: Vec<u64> = stats
            .publish_buckets
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [1, 0, 0, 1, 0, 0, 0, 0, 1]);
    }
}
