//! Listeners: the accept loop and per-connection serving, HTTP/1.1 and h2c on
//! one port, under the connection cap ([`super::conns`]), with a graceful
//! drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::Shared;
use super::conns::{End, Tracked, drive};
use super::handler::{Connection, handle};
use super::headers::ConnInfo;

/// Accepts connections on `listener` until `shutdown` fires, then stops
/// accepting, asks every connection to finish its in-flight requests, and
/// returns when they have, or when `grace` is over (closing the rest).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(error) => {
            warn!(%error, "listener has no local address");
            return;
        }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No hyper header-read timer per request: the header timeout counts from
    // accept or the previous response, and `Conns::sweep` enforces it.
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30));
    let tracker = TaskTracker::new();

    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(error) => {
                // Running out of file descriptors or memory is transient:
                // back off briefly instead of spinning or dying.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // At the cap with every connection busy: close the new one at once.
        let Some(slot) = shared.conns.admit() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Connection {
            shared: shared.clone(),
            info: ConnInfo::new(peer, local, "http"),
            slot,
        });
        let service = {
            let conn = conn.clone();
            service_fn(move |req| handle(conn.clone(), req))
        };
        let io = TokioIo::new(Tracked::new(stream, conn.slot.state().clone()));
        let connection = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        tracker.spawn(async move {
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
        });
    }

    drop(listener);
    // Every worker drains every connection of the process; asking twice is harmless.
    shared.conns.drain();
    tracker.close();
    let open = tracker.len();
    if open > 0 {
        info!(%local, open, "draining connections");
    }
    tokio::select! {
        () = tracker.wait() => debug!(%local, "all connections finished"),
        () = tokio::time::sleep(grace) => {
            warn!(%local, "grace period over; closing the remaining connections");
            shared.conns.abort();
        }
    }
}
