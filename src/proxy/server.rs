//! Listeners: the accept loop and per-connection serving, HTTP/1.1 and h2c on
//! one port, with a graceful drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Shared;
use super::handler::{Connection, handle};
use super::headers::ConnInfo;

/// Accepts connections on `listener` until `shutdown` fires, then stops
/// accepting, asks every connection to finish its in-flight requests, and
/// returns when they have, or when `grace` is over.
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
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.settings.client_header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30));
    let graceful = GracefulShutdown::new();

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
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Connection {
            shared: shared.clone(),
            info: ConnInfo::new(peer, local, "http"),
        });
        let service = service_fn(move |req| handle(conn.clone(), req));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(client = %peer, error = %error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    let open = graceful.count();
    if open > 0 {
        info!(%local, open, "draining connections");
    }
    tokio::select! {
        () = graceful.shutdown() => debug!(%local, "all connections finished"),
        () = tokio::time::sleep(grace) => warn!(%local, "grace period over; closing the remaining connections"),
    }
}
