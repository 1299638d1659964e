//! Client connections: the process-wide cap, idle tracking, and the idle and
//! send timeouts. Sits between the accept loop and the HTTP connection: [`Conns::admit`]
//! decides whether an accepted socket may stay, [`Tracked`] watches its
//! writes, [`Conns::sweep`] looks at every connection a few times per timeout
//! and signals those past one, and [`drive`] runs one connection until it
//! ends, idles out, stops reading its response, is evicted to make room, or
//! is drained at shutdown. No connection owns a timer: the hot path pays for
//! none, and a connection's task polls one atomic word besides its connection.
//!
//! A connection is *idle* while no request of it is being served and nothing
//! waits to be written to it: from accept until its first request head is
//! complete, and from the end of a response until the next request head is
//! complete. The header timeout counts from there, so a client that never
//! sends a byte is closed like one that sends a byte a second (nginx's
//! `client_header_timeout` + `keepalive_timeout`). At the cap, the
//! connections idle longest are closed first, as nginx reuses its idle
//! connections; only when none is idle is a new one refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::task::AtomicWaker;
use tracing::warn;

mod drive;
mod nofile;

pub use drive::{End, Graceful, drive};
pub use nofile::{RESERVED_FDS, default_cap, raise_nofile_limit};

/// A client socket that records in its [`ConnState`] when a write waits for
/// the client, so a connection whose response is still going out is never
/// taken for idle, and one whose client stopped reading can be timed out.
pub type Tracked<T> = crate::net::Observed<T, ConnState>;

/// Idle connections closed at once when a new one finds the cap reached
/// (nginx's `ngx_drain_connections` frees up to 32 too): one scan of the
/// connection set makes room for this many accepts. It is also how far over
/// the cap connections that are still closing may take the count.
const EVICT_BATCH: usize = 32;
/// How long a connection asked to close at its idle timeout may take to do
/// so before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// After a scan found no idle connection, accepts at the cap are refused
/// without scanning again for this long: a full set of busy connections
/// must not cost a scan per accept.
const NO_IDLE_BACKOFF_MS: u64 = 10;
/// At most one cap warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// [`ConnState::life`]: open and not asked to close.
const LIVE: u8 = 0;
/// Asked to close to make room, still open.
const EVICTED: u8 = 1;
/// Its slot was given back.
const CLOSED: u8 = 2;

/// [`ConnState::signal`] bits, raised by other tasks and seen by [`drive`]:
/// close to make room under the cap.
const EVICT: u8 = 1;
/// Shutdown: finish what is in flight, then close.
const DRAIN: u8 = 2;
/// The drain's grace period is over: close now.
const ABORT: u8 = 4;
/// Idle for the header timeout: close gracefully.
const IDLE: u8 = 8;
/// Asked to close and still idle a moment later (half a request head): drop.
const DROP: u8 = 16;
/// The client took no response bytes for the send timeout: drop.
const SEND_TIMEOUT: u8 = 32;

/// Every open client connection of the process, across worker runtimes.
pub struct Conns {
    cap: usize,
    timeouts: Timeouts,
    open: AtomicUsize,
    /// Of `open`, those on an HTTPS listener.
    open_tls: AtomicUsize,
    /// Connections asked to close to make room that have not closed yet; each
    /// one pays for one connection admitted over the cap meanwhile.
    evicting: AtomicUsize,
    next_id: AtomicU64,
    live: DashMap<u64, Arc<ConnState>, crate::hash::Fast>,
    epoch: Instant,
    /// Until when (ms since `epoch`) a scan for idle connections is skipped.
    no_idle_until: AtomicU64,
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
    epoch: Instant,
    /// Requests whose responses have not ended yet (plus one for a tunnel).
    busy: AtomicU32,
    /// When the connection last became idle, in milliseconds since the epoch.
    idle_since: AtomicU64,
    /// Since when (ms since the epoch, plus one) a write to the client has
    /// been waiting for the socket; 0 while writes go through.
    write_blocked_since: AtomicU64,
    /// [`LIVE`], [`EVICTED`] or [`CLOSED`].
    life: AtomicU8,
    /// When [`drive`] asked the connection to close gracefully (ms since the
    /// epoch, plus one); 0 while it has not.
    closing_since: AtomicU64,
    /// [`EVICT`], [`DRAIN`], [`ABORT`]: one lock-free word and waker per
    /// connection, so a connection's task checks them without taking a lock
    /// each time it wakes (a `Notify` or a shared `CancellationToken` would).
    signal: AtomicU8,
    waker: AtomicWaker,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn write_blocked(&self) -> bool {
        self.write_blocked_since.load(Ordering::Relaxed) != 0
    }

    /// Idle: serving nothing, and nothing waits to be written.
    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0 && !self.write_blocked()
    }

    /// How long the connection has been idle, or `None` while it is not.
    fn idle_for(&self, now_ms: u64) -> Option<Duration> {
        if !self.is_idle() {
            return None;
        }
        let since = self.idle_since.load(Ordering::Acquire);
        Some(Duration::from_millis(now_ms.saturating_sub(since)))
    }

    /// How long a write to the client has been waiting, if one is.
    fn write_blocked_for(&self, now_ms: u64) -> Option<Duration> {
        let since = self.write_blocked_since.load(Ordering::Relaxed);
        (since != 0).then(|| Duration::from_millis((now_ms + 1).saturating_sub(since)))
    }

    /// How long ago the connection was asked to close, if it was.
    fn closing_for(&self, now_ms: u64) -> Option<Duration> {
        let since = self.closing_since.load(Ordering::Relaxed);
        (since != 0).then(|| Duration::from_millis((now_ms + 1).saturating_sub(since)))
    }

    fn raise(&self, bit: u8) {
        self.signal.fetch_or(bit, Ordering::AcqRel);
        self.waker.wake();
    }

    fn track_write<T>(&self, poll: &Poll<T>) {
        match (poll, self.write_blocked()) {
            (Poll::Pending, false) => self
                .write_blocked_since
                .store(self.now_ms() + 1, Ordering::Relaxed),
            (Poll::Ready(_), true) => self.write_blocked_since.store(0, Ordering::Relaxed),
            _ => {}
        }
    }
}

impl crate::net::WriteObserver for ConnState {
    fn wrote(&self, poll: &Poll<std::io::Result<usize>>) {
        self.track_write(poll);
    }
}

/// A connection's place under the cap; given back when dropped. It lives in
/// the per-connection context, so a WebSocket tunnel keeps holding it.
#[derive(Debug)]
pub struct Slot {
    state: Arc<ConnState>,
    conns: Arc<Conns>,
    tls: bool,
}

impl Conns {
    /// A connection set that holds at most `cap` connections and closes them
    /// past `timeouts` (once [`Conns::sweep`] runs).
    pub fn new(cap: usize, timeouts: Timeouts) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            timeouts,
            open: AtomicUsize::new(0),
            open_tls: AtomicUsize::new(0),
            evicting: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            live: DashMap::default(),
            epoch: Instant::now(),
            no_idle_until: AtomicU64::new(0),
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

    /// Of [`Conns::open`], those on an HTTPS listener.
    pub fn open_tls(&self) -> usize {
        self.open_tls.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A slot for a newly accepted connection. At the cap, the connections
    /// idle longest are asked to close; `None` when none is idle, or when
    /// too many asked before are still closing (the caller closes the new
    /// socket).
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open >= self.cap {
            // Each connection over the cap is paid for by one still closing.
            let paid = open - self.cap < self.evicting.load(Ordering::Acquire);
            let room = open < self.cap + EVICT_BATCH && (paid || self.evict_idle(EVICT_BATCH));
            if !room {
                self.open.fetch_sub(1, Ordering::AcqRel);
                self.refused_since_warn.fetch_add(1, Ordering::Relaxed);
                self.warn_at_cap();
                return None;
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            id,
            epoch: self.epoch,
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            write_blocked_since: AtomicU64::new(0),
            life: AtomicU8::new(LIVE),
            closing_since: AtomicU64::new(0),
            signal: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        });
        self.live.insert(id, state.clone());
        Some(Slot {
            state,
            conns: self.clone(),
            tls: false,
        })
    }

    /// Asks up to `n` of the connections idle longest to close; true if any was.
    fn evict_idle(&self, n: usize) -> bool {
        let now = self.now_ms();
        if now < self.no_idle_until.load(Ordering::Relaxed) {
            return false;
        }
        let mut idle: Vec<(u64, Arc<ConnState>)> = self
            .live
            .iter()
            .filter(|e| e.is_idle() && e.life.load(Ordering::Relaxed) == LIVE)
            .map(|e| (e.idle_since.load(Ordering::Relaxed), e.value().clone()))
            .collect();
        if idle.len() > n {
            idle.select_nth_unstable_by_key(n, |(since, _)| *since);
            idle.truncate(n);
        }
        let mut evicted = 0;
        for (_, state) in idle {
            // Counted before the switch, so a slot given back right after it
            // never takes the count below what was added.
            self.evicting.fetch_add(1, Ordering::AcqRel);
            let switched = state
                .life
                .compare_exchange(LIVE, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if switched {
                state.raise(EVICT);
                evicted += 1;
            } else {
                // Closed meanwhile: it needs no eviction.
                self.evicting.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if evicted == 0 {
            self.no_idle_until
                .store(now + NO_IDLE_BACKOFF_MS, Ordering::Relaxed);
            return false;
        }
        self.evicted_since_warn
            .fetch_add(evicted, Ordering::Relaxed);
        self.warn_at_cap();
        true
    }

    /// Signals every connection past a timeout, a few times per timeout, until
    /// `stop`: [`IDLE`] after the header timeout, [`DROP`] when one asked to
    /// close is still idle a moment later, [`SEND_TIMEOUT`] after the send
    /// timeout.
    pub async fn sweep(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let t = self.timeouts;
        let tick =
            (t.idle.min(t.send) / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = interval.tick() => self.sweep_once(),
            }
        }
    }

    fn sweep_once(&self) {
        self.sweep_at(self.now_ms());
    }

    fn sweep_at(&self, now_ms: u64) {
        let t = self.timeouts;
        for c in self.live.iter() {
            let raised = c.signal.load(Ordering::Relaxed);
            let raise = |bit: u8| {
                if raised & bit == 0 {
                    c.raise(bit);
                }
            };
            if let Some(blocked) = c.write_blocked_for(now_ms) {
                if blocked >= t.send {
                    raise(SEND_TIMEOUT);
                }
                continue;
            }
            let Some(idle) = c.idle_for(now_ms) else {
                continue;
            };
            // Asked to close (idle, drain, eviction) a moment ago and idle now:
            // a half-sent head that a graceful close never ends.
            if c.closing_for(now_ms).is_some_and(|d| d >= CLOSE_GRACE) && idle >= CLOSE_GRACE {
                raise(DROP);
            } else if idle >= t.idle {
                raise(IDLE);
            }
        }
    }

    /// Asks every open connection to finish what is in flight and close.
    pub fn drain(&self) {
        self.live.iter().for_each(|c| c.raise(DRAIN));
    }

    /// Closes every open connection now.
    pub fn abort(&self) {
        self.live.iter().for_each(|c| c.raise(ABORT));
    }

    /// Logs that the cap was reached, at most once per [`WARN_EVERY`].
    fn warn_at_cap(&self) {
        let now = self.now_ms() + 1;
        let last = self.warned_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < WARN_EVERY.as_millis() as u64 {
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
    /// Counts it as an HTTPS connection (for metrics), until it closes.
    pub fn mark_tls(&mut self) {
        if !self.tls {
            self.tls = true;
            self.conns.open_tls.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// This connection's state.
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    /// Marks one request as being served: the connection is not idle until
    /// as many [`Slot::end`]s have followed.
    pub fn begin(&self) {
        self.state.busy.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks one request's response as ended.
    pub fn end(&self) {
        // The timestamp first: whoever sees the count reach zero sees a fresh
        // start of the idle period, never the previous one.
        self.state
            .idle_since
            .store(self.state.now_ms(), Ordering::Release);
        self.state.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.live.remove(&self.state.id);
        if self.state.life.swap(CLOSED, Ordering::AcqRel) == EVICTED {
            self.conns.evicting.fetch_sub(1, Ordering::AcqRel);
        }
        if self.tls {
            self.conns.open_tls.fetch_sub(1, Ordering::Relaxed);
        }
        self.conns.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The timeouts [`Conns::sweep`] applies.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Longest idle period (the header timeout).
    pub idle: Duration,
    /// Longest wait for the client to take response bytes.
    pub send: Duration,
}

#[cfg(test)]
mod tests;
