//! The admin listener (`--admin`, default `127.0.0.1:8081`): health and
//! readiness, and a JSON API over the snapshot, the certificates and ACME's
//! status. Beside the proxy in the flow: it only reads what the proxy
//! publishes (one `load()` per request), on the main runtime, never on a
//! worker's.
//!
//! ```text
//! GET /healthz, /readyz                     no auth (probes)
//! GET /metrics                              Prometheus text format; token with --metrics-auth
//! GET /api/{routes,branches,warnings,certificates}   Bearer --admin-token, if set
//! ```
//!
//! With a token every API request needs `Authorization: Bearer TOKEN`,
//! compared in constant time; a client that fails too often is refused
//! (429) for a while. A non-loopback address needs a token: start-up says so.

pub mod api;
mod auth;
pub mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::acme::Acme;
use crate::routes::Reader;
use crate::tls::CertStore;
use auth::{Auth, Verdict};

/// What the admin API reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The published routes and notes.
    pub routes: Reader,
    /// The `--certs` certificates, when HTTPS is on.
    pub certs: Option<Arc<CertStore>>,
    /// ACME's certificates and status, when ACME runs.
    pub acme: Option<Arc<Acme>>,
    /// The client connections (open count).
    pub conns: Option<Arc<crate::proxy::conns::Conns>>,
    /// The request counters, unless `--metrics off`.
    pub metrics: Option<Arc<metrics::Metrics>>,
    /// `/metrics` needs the token too (`--metrics-auth`).
    pub metrics_auth: bool,
}

/// The admin server: a bound listener and what it serves.
pub struct Admin {
    listener: std::net::TcpListener,
    sources: Sources,
    auth: Arc<Auth>,
}

/// Why the admin listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Reachable from other hosts without a token.
    #[error(
        "--admin {0}: not a loopback address, so it needs --admin-token (or BRANCHGATE_ADMIN_TOKEN)"
    )]
    NeedsToken(SocketAddr),
    /// The token is too short to resist guessing.
    #[error("--admin-token: at least 16 characters")]
    ShortToken,
    /// The address cannot be bound.
    #[error("--admin {0}: cannot listen: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
}

impl Admin {
    /// Binds `addr`; refuses a non-loopback address without a token.
    pub fn bind(
        addr: SocketAddr,
        token: Option<String>,
        sources: Sources,
    ) -> Result<Self, AdminError> {
        match &token {
            None if !addr.ip().is_loopback() => return Err(AdminError::NeedsToken(addr)),
            Some(t) if t.len() < 16 => return Err(AdminError::ShortToken),
            _ => {}
        }
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| AdminError::Bind(addr, e))?;
        Ok(Self {
            listener,
            sources,
            auth: Arc::new(Auth::new(token)),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let listener = match TcpListener::from_std(self.listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable");
                return;
            }
        };
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, auth = self.auth.enabled(), "admin API listening");
        }
        let builder = auto::Builder::new(TokioExecutor::new());
        let state = Arc::new((self.sources, self.auth));
        loop {
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        debug!(error = %e, "admin accept failed");
                        continue;
                    }
                },
            };
            let state = state.clone();
            let builder = builder.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(serve(&state.0, &state.1, peer, req)) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = cancel.cancelled() => {}
                }
            });
        }
    }
}

/// Answers one admin request.
fn serve(
    sources: &Sources,
    auth: &Auth,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match path {
        "/healthz" => return text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            // `bind` publishes the first table before the listeners serve;
            // this listener starts with them.
            return match sources.routes.load().generation() {
                0 => text(StatusCode::SERVICE_UNAVAILABLE, "no route table yet\n"),
                _ => text(StatusCode::OK, "ready\n"),
            };
        }
        _ => {}
    }
    if path == "/metrics" && !sources.metrics_auth {
        return scrape(sources);
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match auth.check(peer.ip(), bearer) {
        Verdict::Allowed => {}
        Verdict::Denied => {
            let mut r = json(
                StatusCode::UNAUTHORIZED,
                &api::error("a valid bearer token is needed"),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"branchgate\""),
            );
            return r;
        }
        Verdict::Throttled => {
            return json(
                StatusCode::TOO_MANY_REQUESTS,
                &api::error("too many failed attempts; try again in a minute"),
            );
        }
    }
    if path == "/metrics" {
        return scrape(sources);
    }
    match api::view(sources, path) {
        Some(body) => json(StatusCode::OK, &body),
        None => json(StatusCode::NOT_FOUND, &api::error("no such API path")),
    }
}

/// `/metrics` in the Prometheus text format (404 with `--metrics off`).
fn scrape(sources: &Sources) -> Response<Full<Bytes>> {
    let Some(m) = &sources.metrics else {
        return json(
            StatusCode::NOT_FOUND,
            &api::error("metrics are off (--metrics off)"),
        );
    };
    let mut r = Response::new(Full::new(Bytes::from(metrics::render(m, sources))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}
