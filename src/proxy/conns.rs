//! Client connections: the process-wide cap, idle tracking and the idle
//! timeout. Sits between the accept loop and hyper: [`Conns::admit`] decides
//! whether an accepted socket may stay, [`drive`] runs one connection until it
//! ends, idles out, is evicted to make room, or is drained at shutdown.
//!
//! A connection is *idle* while no request of it is being served: from accept
//! until its first request head is complete, and from the end of a response
//! until the next request head is complete. The header timeout counts from
//! there, so a client that never sends a byte is closed like one that sends
//! a byte a second (nginx's `client_header_timeout` + `keepalive_timeout`).
//! At the cap, the connections idle longest are closed first, as nginx reuses
//! its idle connections; only when none is idle is a new one refused.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Idle connections closed at once when a new one finds the cap reached
/// (nginx's `ngx_drain_connections` frees up to 32 too): one scan of the
/// connection set makes room for this many accepts.
const EVICT_BATCH: usize = 32;
/// How long a connection asked to close at its idle timeout may take to do
/// so before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// At most one cap warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(5);
/// Descriptors kept back from the client cap for listeners, the Docker socket,
/// certificate and routes files, logs and the runtime itself.
pub const RESERVED_FDS: u64 = 64;

/// Every open client connection of the process, across worker runtimes.
pub struct Conns {
    cap: usize,
    open: AtomicUsize,
    /// Connections asked to close to make room that have not closed yet; each
    /// one pays for one connection admitted over the cap meanwhile.
    evicting: AtomicUsize,
    next_id: AtomicU64,
    live: DashMap<u64, Arc<ConnState>>,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last cap warning, plus one.
    warned_at: AtomicU64,
    evicted_since_warn: AtomicU64,
    refused_since_warn: AtomicU64,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("cap", &self.cap)
            .field("open", &self.open())
            .finish()
    }
}

/// The live state of one client connection.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    /// Requests whose responses have not ended yet (plus one for a tunnel).
    busy: AtomicU32,
    /// When the connection last became idle, in milliseconds since the epoch.
    idle_since: AtomicU64,
    evict: Notify,
    evicted: AtomicBool,
}

/// A connection's place under the cap; given back when dropped. It lives in
/// the per-connection context, so a WebSocket tunnel keeps holding it.
#[derive(Debug)]
pub struct Slot {
    state: Arc<ConnState>,
    conns: Arc<Conns>,
}

impl Conns {
    /// A connection set that holds at most `cap` connections.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            open: AtomicUsize::new(0),
            evicting: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            live: DashMap::new(),
            epoch: Instant::now(),
            warned_at: AtomicU64::new(0),
            evicted_since_warn: AtomicU64::new(0),
            refused_since_warn: AtomicU64::new(0),
        })
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A slot for a newly accepted connection. At the cap, the connections
    /// idle longest are asked to close; `None` when none is idle (the caller
    /// closes the new socket).
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open.saturating_sub(self.evicting.load(Ordering::Acquire)) >= self.cap {
            let evicted = self.evict_idle(EVICT_BATCH);
            if evicted == 0 {
                self.open.fetch_sub(1, Ordering::AcqRel);
                self.refused_since_warn.fetch_add(1, Ordering::Relaxed);
                self.warn_at_cap();
                return None;
            }
            self.evicted_since_warn
                .fetch_add(evicted as u64, Ordering::Relaxed);
            self.warn_at_cap();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            id,
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
            evicted: AtomicBool::new(false),
        });
        self.live.insert(id, state.clone());
        Some(Slot {
            state,
            conns: self.clone(),
        })
    }

    /// Asks up to `n` of the connections idle longest to close; returns how many.
    fn evict_idle(&self, n: usize) -> usize {
        let mut idle: Vec<(u64, Arc<ConnState>)> = self
            .live
            .iter()
            .filter(|e| e.busy.load(Ordering::Acquire) == 0 && !e.evicted.load(Ordering::Relaxed))
            .map(|e| (e.idle_since.load(Ordering::Relaxed), e.value().clone()))
            .collect();
        if idle.len() > n {
            idle.select_nth_unstable_by_key(n, |(since, _)| *since);
            idle.truncate(n);
        }
        let mut evicted = 0;
        for (_, state) in idle {
            if state
                .evicted
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.evicting.fetch_add(1, Ordering::AcqRel);
                // notify_one keeps a permit if the driver is not waiting yet.
                state.evict.notify_one();
                evicted += 1;
            }
        }
        evicted
    }

    /// Logs that the cap was reached, at most once per [`WARN_EVERY`].
    fn warn_at_cap(&self) {
        let now = self.now_ms() + 1;
        let last = self.warned_at.load(Ordering::Relaxed);
        if last != 0 && now - last < WARN_EVERY.as_millis() as u64 {
            return;
        }
        if self
            .warned_at
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let evicted = self.evicted_since_warn.swap(0, Ordering::Relaxed);
        let refused = self.refused_since_warn.swap(0, Ordering::Relaxed);
        warn!(
            max_connections = self.cap,
            evicted_idle = evicted,
            refused,
            "client connection limit reached (--max-connections): idle connections are closed to make room, new ones refused when none is idle"
        );
    }
}

impl Slot {
    /// This connection's state.
    pub fn state(&self) -> &ConnState {
        &self.state
    }

    /// Marks one request as being served; the connection is not idle until
    /// the returned guard's response has ended.
    pub fn begin(&self) {
        self.state.busy.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks one request's response as ended.
    pub fn end(&self) {
        // The timestamp first: whoever sees the count reach zero sees a fresh
        // start of the idle period, never the previous one.
        self.state
            .idle_since
            .store(self.conns.now_ms(), Ordering::Release);
        self.state.busy.fetch_sub(1, Ordering::AcqRel);
    }

    /// How long the connection has been idle, or `None` while it serves a request.
    fn idle_for(&self) -> Option<Duration> {
        if self.state.busy.load(Ordering::Acquire) != 0 {
            return None;
        }
        let since = self.state.idle_since.load(Ordering::Acquire);
        Some(Duration::from_millis(
            self.conns.now_ms().saturating_sub(since),
        ))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.live.remove(&self.state.id);
        if self.state.evicted.load(Ordering::Acquire) {
            self.conns.evicting.fetch_sub(1, Ordering::AcqRel);
        }
        self.conns.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why [`drive`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// hyper finished the connection (client closed, error, upgrade, or a
    /// graceful close after drain or eviction).
    Done,
    /// Idle longer than the header timeout.
    IdleTimeout,
    /// Still open when the drain's grace period ran out.
    Aborted,
}

/// Runs `conn` to its end. Closes it gracefully (in-flight responses finish,
/// HTTP/2 gets a GOAWAY) when it has been idle for `timeout`, when `drain`
/// fires or when the cap evicts it, and drops it if it is still idle a
/// moment later (a client stuck halfway through a request head); drops it
/// at once when `abort` fires.
pub async fn drive<C>(
    conn: C,
    slot: &Slot,
    timeout: Duration,
    drain: &CancellationToken,
    abort: &CancellationToken,
) -> (End, Result<(), C::Error>)
where
    C: GracefulConnection,
{
    let mut conn = pin!(conn);
    let mut timer = pin!(tokio::time::sleep(timeout));
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            res = conn.as_mut() => return (End::Done, res),
            () = abort.cancelled() => return (End::Aborted, Ok(())),
            () = drain.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = slot.state.evict.notified(), if !closing => {
                debug!("closing an idle connection to make room (--max-connections)");
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = timer.as_mut() => {
                // While a request is served its own timeouts apply; look again later.
                let wait = match slot.idle_for() {
                    // Asked to close before and still here (a half-sent head): drop it.
                    Some(idle) if idle >= timeout && closing => return (End::IdleTimeout, Ok(())),
                    Some(idle) if idle >= timeout => {
                        // Politely first: an idle HTTP/1 connection closes at
                        // once, an HTTP/2 one sends GOAWAY.
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        CLOSE_GRACE
                    }
                    Some(idle) => timeout - idle,
                    None => timeout,
                };
                timer.as_mut().reset(tokio::time::Instant::now() + wait);
            }
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as nginx's
/// `worker_rlimit_nofile` and Go's runtime do, and returns the soft limit now
/// in force (`u64::MAX` when unlimited).
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = getrlimit(Resource::Nofile),
            Err(error) => warn!(%error, "cannot raise RLIMIT_NOFILE to its hard limit"),
        }
    }
    // `None` is RLIM_INFINITY.
    limit.current.unwrap_or(u64::MAX)
}

/// The default `--max-connections` for a descriptor limit: each client
/// connection may hold one upstream connection, and [`RESERVED_FDS`] stay free.
pub fn default_cap(nofile: u64) -> usize {
    let cap = nofile.saturating_sub(RESERVED_FDS) / 2;
    // No process holds more; an "unlimited" limit must not overflow anything.
    cap.clamp(1, 1 << 20) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cap_leaves_room_for_upstreams() {
        assert_eq!(default_cap(256), 96);
        assert_eq!(default_cap(1024), 480);
        assert_eq!(default_cap(10), 1);
        assert_eq!(default_cap(u64::MAX), 1 << 20);
    }

    #[test]
    fn at_the_cap_the_oldest_idle_go_first_and_busy_ones_stay() {
        let conns = Conns::new(3);
        let a = conns.admit().unwrap();
        let b = conns.admit().unwrap();
        let c = conns.admit().unwrap();
        a.begin(); // busy: never evicted
        b.state.idle_since.store(5, Ordering::Relaxed);
        c.state.idle_since.store(1, Ordering::Relaxed);
        let d = conns.admit().expect("room made by evicting an idle one");
        assert!(c.state.evicted.load(Ordering::Relaxed), "the oldest idle");
        assert!(
            b.state.evicted.load(Ordering::Relaxed),
            "batch takes every idle one"
        );
        assert!(!a.state.evicted.load(Ordering::Relaxed));
        assert_eq!(conns.open(), 4);
        drop((b, c));
        assert_eq!(conns.open(), 2);
        assert_eq!(conns.evicting.load(Ordering::Relaxed), 0);
        d.begin();
        let e = conns.admit().expect("below the cap again");
        e.begin();
        assert!(conns.admit().is_none(), "all busy: refused");
        assert_eq!(conns.open(), 3);
        a.end();
        assert!(conns.admit().is_some(), "a is idle again");
    }
}
