//! Listeners: one worker's accept loops and the serving of each connection,
//! HTTP/1.1 and h2 on one port, under the connection cap ([`super::conns`]),
//! with a graceful drain on shutdown.
//!
//! A worker serves a set of listeners, each with its scheme; every accepted
//! stream gets its own task, which runs [`Server::serve_connection`] to the
//! connection's end. It is generic over the stream, so a TLS listener's
//! handshake runs first in that same task and its stream plugs in there,
//! without a second accept loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::Shared;
use super::conns::{End, Slot, Tracked, drive};
use super::handler::{Connection, handle};
use super::listener::{ConnInfo, Listener, Scheme};
use super::proto::{Io, Proto, Serve};

/// What one worker's connections share: the proxy state, the HTTP
/// connection builder and the tracker that the drain waits on.
pub struct Server {
    shared: Arc<Shared>,
    http2: Arc<http2::Builder<TokioExecutor>>,
    tracker: TaskTracker,
}

impl Server {
    /// A server for one worker runtime.
    pub fn new(shared: Arc<Shared>) -> Self {
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30));
        Self {
            shared,
            http2: Arc::new(http2),
            tracker: TaskTracker::new(),
        }
    }

    /// Serves one accepted connection, whatever its stream, until it ends:
    /// as `known` says (TLS ALPN), else as its first bytes say.
    /// Run it in the connection's own task (see [`Server::spawn`]).
    pub async fn serve_connection<IO>(
        self: Arc<Self>,
        io: IO,
        known: Option<Proto>,
        info: ConnInfo,
        slot: Slot,
    ) where
        IO: Io,
    {
        let peer = info.peer;
        let conn = Arc::new(Connection {
            shared: self.shared.clone(),
            info,
            slot,
        });
        let handler = {
            let conn = conn.clone();
            move |req| handle(conn.clone(), req)
        };
        let io = Tracked::new(io, conn.slot.state().clone());
        let tls = conn.info.scheme == Scheme::Https;
        let connection = Serve::new(io, handler, &self.http2, known, tls);
        let (end, res) = drive(connection, &conn.slot).await;
        match (end, res) {
            (End::Dropped, _) => {
                debug!(client = %peer, "connection with a half-sent request head closed");
            }
            (End::SendTimeout, _) => {
                debug!(client = %peer, "client stopped reading its response; closed");
            }
            (_, Err(error)) => {
                debug!(client = %peer, error = %error, "connection ended with an error");
            }
            (End::Done | End::Evicted | End::Aborted, Ok(())) => {}
        }
    }

    /// Runs `task` (a connection's whole life) in a task the drain waits for.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(task);
    }

    /// Accepts on `listener` until `shutdown`.
    async fn accept_loop(self: &Arc<Self>, listener: Listener, shutdown: &CancellationToken) {
        let scheme = listener.scheme;
        let (socket, local) = match listener
            .socket
            .local_addr()
            .and_then(|local| Ok((TcpListener::from_std(listener.socket)?, local)))
        {
            Ok(l) => l,
            Err(error) => {
                error!(%error, "listener cannot be served");
                return;
            }
        };
        let local_port = http::HeaderValue::from(local.port());
        // One wait for the shutdown for the whole loop: a new one per accept
        // registered with and left the token's waiters each time.
        let stop = shutdown.cancelled();
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut stop => return,
                accepted = socket.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Running out of file descriptors or memory is transient:
                    // back off briefly instead of spinning or dying.
                    warn!(%error, %local, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // At the cap with every connection busy: close the new one at once.
            let Some(mut slot) = self.shared.conns.admit() else {
                continue;
            };
            // On Linux the socket has TCP_NODELAY from its listener already.
            #[cfg(not(target_os = "linux"))]
            let _ = stream.set_nodelay(true);
            let info = ConnInfo::new(peer, local_port.clone(), scheme);
            let server = self.clone();
            match (scheme, &self.shared.tls) {
                (Scheme::Https, Some(tls)) => {
                    slot.mark_tls();
                    let tls = tls.clone();
                    self.spawn(async move {
                        // The handshake runs here, in the connection's task.
                        match tls.handshake(stream).await {
                            Ok(stream) => {
                                let known = Proto::from_alpn(stream.get_ref().1.alpn_protocol());
                                server.serve_connection(stream, known, info, slot).await
                            }
                            Err(refused) => {
                                debug!(client = %peer, %refused, "TLS handshake refused");
                            }
                        }
                    });
                }
                // Spawned as it is: a wrapping `async move` block kept its
                // captures beside the future, 200 bytes more per task.
                _ => self.spawn(server.serve_connection(stream, None, info, slot)),
            }
        }
    }

    /// Serves every listener of this worker until `shutdown`, then stops
    /// accepting, asks every connection to finish its in-flight requests,
    /// and returns when they have, or when `grace` is over (closing the rest).
    pub async fn serve(
        self: Arc<Self>,
        listeners: Vec<Listener>,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let loops = listeners
            .into_iter()
            .map(|l| self.accept_loop(l, &shutdown));
        futures_util::future::join_all(loops).await;

        // Every worker drains every connection of the process; asking twice is harmless.
        self.shared.conns.drain();
        self.tracker.close();
        let open = self.tracker.len();
        if open > 0 {
            info!(open, "draining connections");
        }
        tokio::select! {
            () = self.tracker.wait() => debug!("all connections finished"),
            () = tokio::time::sleep(grace) => {
                warn!("grace period over; closing the remaining connections");
                self.shared.conns.abort();
            }
        }
    }
}
