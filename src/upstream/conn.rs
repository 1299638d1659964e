//! One upstream and its connections: connect (TCP, TLS for `https`), the
//! per-worker idle queue, passive health, and the [`Lease`] a request holds
//! while it uses a connection (the exchange itself is [`super::exchange`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::Proto;
use super::exchange::{Conn, Stream};
use crate::net::Observed;

/// How long an upstream that refused a connection is skipped by round-robin.
const FAIL_WINDOW: Duration = Duration::from_secs(5);
/// Idle connections kept per upstream and worker.
const MAX_IDLE: usize = 512;

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as worker `id`, so it uses its own idle slot and
/// keeps connections on the runtime that drives them.
pub fn set_worker_id(id: usize) {
    WORKER.with(|w| w.set(id));
}

/// Why a connection to an upstream could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed (refused, unreachable, ...).
    #[error("connect to {addr} failed")]
    Io {
        /// The upstream.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// TCP or TLS connect did not finish in time.
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    /// The TLS handshake with an `https` upstream failed.
    #[error("TLS handshake with {addr} failed")]
    Tls {
        /// The upstream.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Settings every upstream connection uses.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// TCP (+TLS) connect timeout.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
}

/// What every upstream of one registry shares: settings, the TLS connector
/// and the clock that failure times count from.
pub(super) struct Client {
    pub(super) settings: ClientSettings,
    pub(super) tls: tokio_rustls::TlsConnector,
    pub(super) epoch: Instant,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One worker's idle connections to an upstream, and whether a sweep runs
/// over them.
#[derive(Default)]
struct IdleSlot {
    conns: VecDeque<Idle>,
    sweeping: bool,
}

/// One upstream address with its live state.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How to talk to it.
    pub proto: Proto,
    in_flight: AtomicUsize,
    /// Consecutive connect failures.
    failures: AtomicU32,
    /// Milliseconds since the client epoch of the last connect failure, plus one (0 = never).
    failed_at: AtomicU64,
    idle: Box<[Mutex<IdleSlot>]>,
    client: Arc<Client>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .field("proto", &self.proto)
            .field("in_flight", &self.in_flight())
            .field("failures", &self.failures.load(Ordering::Relaxed))
            .finish()
    }
}

impl Upstream {
    /// Requests currently being served by this upstream.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether a connect failed within the last few seconds.
    pub fn recently_failed(&self) -> bool {
        let at = self.failed_at.load(Ordering::Relaxed);
        at != 0
            && self.client.epoch.elapsed().as_millis() as u64 + 1 - at
                < FAIL_WINDOW.as_millis() as u64
    }

    pub(super) fn new(addr: SocketAddr, proto: Proto, workers: usize, client: Arc<Client>) -> Self {
        Self {
            addr,
            proto,
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            failed_at: AtomicU64::new(0),
            idle: (0..workers).map(|_| Mutex::default()).collect(),
            client,
        }
    }

    pub(super) fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let now = self.client.epoch.elapsed().as_millis() as u64 + 1;
        self.failed_at.store(now, Ordering::Relaxed);
    }

    pub(super) fn record_success(&self) {
        if self.failed_at.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.failed_at.store(0, Ordering::Relaxed);
        }
    }

    fn worker(&self) -> usize {
        WORKER.with(|w| w.get()) % self.idle.len()
    }

    /// Leases a ready connection: a pooled idle one if any is alive, else a new one.
    pub async fn lease(self: &Arc<Self>) -> Result<Lease, ConnectError> {
        loop {
            let idle = self.idle[self.worker()]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .conns
                .pop_back();
            let Some(mut idle) = idle else { break };
            // Nobody watches an idle connection: one the upstream closed (or
            // wrote to) meanwhile is readable now, and is dropped here.
            if idle.since.elapsed() <= self.client.settings.idle_timeout && idle.conn.is_alive() {
                return Ok(Lease::new(self.clone(), idle.conn));
            }
        }
        self.lease_fresh().await
    }

    /// Leases a new connection, bypassing the pool.
    pub async fn lease_fresh(self: &Arc<Self>) -> Result<Lease, ConnectError> {
        // Boxed: connecting (TCP, TLS, their timeouts) is a kilobyte of
        // future that most requests, served on a pooled connection, never
        // enter; inline, every request's future (and the connection's slot
        // for it in hyper, kept for the connection's life) would carry it.
        match Box::pin(self.connect()).await {
            Ok(conn) => {
                self.record_success();
                Ok(Lease::new(self.clone(), conn))
            }
            Err(e) => {
                self.record_failure();
                Err(e)
            }
        }
    }

    async fn connect(&self) -> Result<Conn, ConnectError> {
        let addr = self.addr;
        let timeout = self.client.settings.connect_timeout;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(addr))?
            .map_err(|source| ConnectError::Io { addr, source })?;
        // Latency matters more than packet count for proxied requests.
        let _ = stream.set_nodelay(true);
        let written = Arc::new(AtomicU64::new(0));
        // Counts the bytes the upstream takes, so a request can tell an
        // upstream that stopped reading its body from one that reads slowly.
        let stream = Observed::new(stream, written.clone());
        match self.proto {
            Proto::Http => Ok(Conn::new(Stream::Plain(stream), written)),
            Proto::Https => {
                // Like nginx's default (`proxy_ssl_server_name off`), no SNI: the IP is the name.
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let tls = tokio::time::timeout(timeout, self.client.tls.connect(name, stream))
                    .await
                    .map_err(|_| ConnectError::Timeout(addr))?
                    .map_err(|source| ConnectError::Tls { addr, source })?;
                Ok(Conn::new(Stream::Tls(Box::new(tls)), written))
            }
        }
    }

    /// Pools a connection whose last response ended cleanly.
    fn put_back(self: &Arc<Self>, conn: Conn) {
        let now = Instant::now();
        let worker = self.worker();
        let mut slot = self.idle[worker].lock().unwrap_or_else(|e| e.into_inner());
        // Connections are reused last-in first-out, so stale ones collect at the front.
        while slot
            .conns
            .front()
            .is_some_and(|i| now - i.since > self.client.settings.idle_timeout)
        {
            slot.conns.pop_front();
        }
        if slot.conns.len() < MAX_IDLE {
            slot.conns.push_back(Idle { conn, since: now });
        }
        // Nobody watches an idle connection; while some are pooled, a sweep
        // on this worker closes the ones past the idle timeout and the ones
        // the upstream closed, also when no request comes to take them.
        if !slot.sweeping && tokio::runtime::Handle::try_current().is_ok() {
            slot.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(self), worker));
        }
    }
}

/// Sweeps one worker's idle connections to `upstream` until none is left
/// (or the upstream is forgotten).
async fn sweep(upstream: Weak<Upstream>, worker: usize) {
    loop {
        let Some(period) = upstream.upgrade().map(|u| {
            (u.client.settings.idle_timeout / 2)
                .clamp(Duration::from_millis(250), Duration::from_secs(10))
        }) else {
            return;
        };
        tokio::time::sleep(period).await;
        let Some(up) = upstream.upgrade() else { return };
        let limit = up.client.settings.idle_timeout;
        let mut slot = up.idle[worker].lock().unwrap_or_else(|e| e.into_inner());
        slot.conns
            .retain_mut(|i| i.since.elapsed() <= limit && i.conn.is_alive());
        if slot.conns.is_empty() {
            slot.sweeping = false;
            return;
        }
    }
}

/// A connection leased from an upstream; counts as in flight until dropped.
/// [`Lease::send`] hands it to the response body, which gives it back with
/// [`Lease::recycle`] once the response ended cleanly. Dropped otherwise,
/// its connection is closed at once: whatever it was doing (an upload the
/// upstream stopped reading, a response cut short) is abandoned.
pub struct Lease {
    upstream: Arc<Upstream>,
    pub(super) conn: Option<Conn>,
}

impl Lease {
    fn new(upstream: Arc<Upstream>, conn: Conn) -> Self {
        upstream.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            upstream,
            conn: Some(conn),
        }
    }

    /// Bytes the connection's socket has taken so far (its whole life).
    pub fn written(&self) -> Arc<AtomicU64> {
        self.conn
            .as_ref()
            .map_or_else(Default::default, |c| c.written().clone())
    }

    /// Takes the connection out for a tunnel: it is never pooled again.
    pub(super) fn take_conn(&mut self) -> Option<Conn> {
        self.conn.take()
    }

    /// The upstream this lease is on.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// Returns the connection to the idle pool; only for one whose last
    /// response ended cleanly with nothing read past it.
    pub(super) fn recycle(mut self) {
        if let Some(conn) = self.conn.take() {
            Upstream::put_back(&self.upstream, conn);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.upstream.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
