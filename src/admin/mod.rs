//! The admin listener (`--admin`, default `127.0.0.1:8081`): the live
//! dashboard, a JSON API over what the proxy publishes (routes, branch
//! environments, warnings, certificates, events), the live request feed,
//! container logs, health, readiness and Prometheus metrics. Beside the
//! proxy in the flow: it only reads what the others publish, on the main
//! runtime, never on a worker's.
//!
//! ```text
//! GET  /healthz, /readyz                       no auth (probes)
//! GET  /metrics                                Prometheus text; token with --metrics-auth
//! GET  /login, POST /login, POST /logout       the session cookie
//! GET  /, /assets/*                            the dashboard (/ needs a session)
//! GET  /api/{routes,branches,warnings,certificates,containers,events}
//! GET  /api/events (Accept: text/event-stream), /api/requests   SSE
//! GET  /api/containers/{id}/logs?follow=1&tail=N                SSE
//! ```
//!
//! With a token every API request needs `Authorization: Bearer TOKEN` or
//! the session cookie a login sets; compared in constant time, and a
//! client that fails too often is refused (429) for a while. A
//! non-loopback address needs a token: start-up says so.

pub mod api;
mod assets;
mod auth;
pub mod feed;
mod logs;
pub mod metrics;
mod sse;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::acme::Acme;
use crate::guard::form;
use crate::guard::signed::unix_now;
use crate::proxy::pages::esc;
use crate::routes::Reader;
use crate::tls::CertStore;
use auth::{Auth, Verdict};
pub use sse::Body;

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
    /// Containers started and stopped, publishes, ACME orders.
    pub events: Arc<crate::events::Events>,
    /// The live request feed, unless `--metrics off`.
    pub feed: Option<Arc<feed::Feed>>,
    /// The Docker engine's address, for container logs.
    pub docker: Option<String>,
    /// What the providers want routed (container names by upstream).
    pub desired: tokio::sync::watch::Receiver<crate::routes::Desired>,
    /// How branch environments are reached: `http`/`https` and the port
    /// when not the scheme's default.
    pub links: (&'static str, Option<u16>),
}

/// What the admin side serves and who may see it: shared by the admin
/// listener and `--dashboard-host` on the main listeners.
pub struct Core {
    /// What the views read.
    pub sources: Sources,
    /// The token check and sessions.
    pub auth: Auth,
}

impl Core {
    /// Checks the token's length.
    pub fn new(token: Option<String>, sources: Sources) -> Result<Self, AdminError> {
        if token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(AdminError::ShortToken);
        }
        Ok(Self {
            sources,
            auth: Auth::new(token),
        })
    }

    /// Whether a token is required.
    pub fn auth_enabled(&self) -> bool {
        self.auth.enabled()
    }

    /// Answers one request (see [`serve`]).
    pub async fn serve<B>(&self, peer: SocketAddr, tls: bool, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        serve(&self.sources, &self.auth, peer, tls, req).await
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("auth", &self.auth.enabled())
            .finish()
    }
}

/// The admin server: a bound listener and what it serves.
pub struct Admin {
    listener: std::net::TcpListener,
    core: Arc<Core>,
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
    pub fn bind(addr: SocketAddr, core: Arc<Core>) -> Result<Self, AdminError> {
        if !core.auth.enabled() && !addr.ip().is_loopback() {
            return Err(AdminError::NeedsToken(addr));
        }
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| AdminError::Bind(addr, e))?;
        Ok(Self { listener, core })
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
            info!(%addr, auth = self.core.auth.enabled(), "admin API listening");
        }
        let builder = auto::Builder::new(TokioExecutor::new());
        let core = self.core;
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
            let core = core.clone();
            let builder = builder.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let core = core.clone();
                    async move { Ok::<_, Infallible>(core.serve(peer, false, req).await) }
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

/// What a request presented, and what the check made of it.
struct Caller {
    /// Allowed by the token or a session.
    verdict: Verdict,
    /// It presented nothing (a browser before its login).
    anonymous: bool,
}

/// Checks the bearer token, else the session cookie. Only a wrong token
/// counts as a failed attempt: a missing or expired cookie is no guess.
fn caller(auth: &Auth, peer: SocketAddr, headers: &http::HeaderMap) -> Caller {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let verdict = match bearer {
        Some(_) => auth.check(peer.ip(), bearer),
        None if !auth.enabled() => Verdict::Allowed,
        None => match session_cookie(headers) {
            Some(c) if auth.valid_session(c, unix_now()) => Verdict::Allowed,
            _ => Verdict::Denied,
        },
    };
    Caller {
        verdict,
        anonymous: bearer.is_none(),
    }
}

/// Answers one admin request. `tls`: it came over HTTPS (the session
/// cookie is then `Secure`).
async fn serve<B>(
    sources: &Sources,
    auth: &Auth,
    peer: SocketAddr,
    tls: bool,
    req: Request<B>,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::POST, "/login") => return login(auth, peer, tls, req).await,
        (&Method::POST, "/logout") => return logout(tls),
        (m, _) if m != Method::GET && m != Method::HEAD => {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        (_, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (_, "/readyz") => {
            // `bind` publishes the first table before the listeners serve;
            // this listener starts with them.
            return match sources.routes.load().generation() {
                0 => text(StatusCode::SERVICE_UNAVAILABLE, "no route table yet\n"),
                _ => text(StatusCode::OK, "ready\n"),
            };
        }
        (_, "/metrics") if !sources.metrics_auth => return scrape(sources),
        (_, "/login") => {
            return match auth.enabled() {
                true => login_page(StatusCode::OK, "", query_value(req.uri(), "next")),
                false => see_other("/", None),
            };
        }
        (_, p) if p.starts_with("/assets/") => return assets::asset(p),
        (_, "/favicon.ico") => return text(StatusCode::NO_CONTENT, ""),
        _ => {}
    }
    let who = caller(auth, peer, req.headers());
    match who.verdict {
        Verdict::Allowed => {}
        Verdict::Denied if who.anonymous && path == "/" => {
            return see_other("/login", None);
        }
        Verdict::Denied => {
            let mut r = json(
                StatusCode::UNAUTHORIZED,
                &api::error("a valid bearer token or session is needed"),
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
    match path.as_str() {
        "/" => assets::page(),
        "/metrics" => scrape(sources),
        "/api/requests" => match &sources.feed {
            Some(feed) => sse::response(feed.watch(query_value(req.uri(), "host"))),
            None => json(
                StatusCode::NOT_FOUND,
                &api::error("the request feed is off (--metrics off)"),
            ),
        },
        "/api/events" if sse::wanted(req.headers()) => sse::response(events_stream(sources)),
        p if p.starts_with("/api/containers/") => container_logs(sources, p, req.uri().query()),
        p => match api::view(sources, p) {
            Some(body) => json(StatusCode::OK, &body),
            None => json(StatusCode::NOT_FOUND, &api::error("no such API path")),
        },
    }
}

/// The kept events, then each new one, as SSE.
fn events_stream(sources: &Sources) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    let (kept, rx) = sources.events.subscribe();
    let render = |e: &crate::events::Event| {
        sse::message(None, &serde_json::to_string(e).unwrap_or_default())
    };
    let kept: Vec<Bytes> = kept.iter().map(|e| render(e)).collect();
    let live = futures_util::stream::unfold(rx, move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((render(&e), rx)),
                // A slow page misses some; it re-reads the views anyway.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    futures_util::StreamExt::chain(futures_util::stream::iter(kept), live)
}

/// `/api/containers/{id}/logs`.
fn container_logs(sources: &Sources, path: &str, query: Option<&str>) -> Response<Body> {
    let Some(id) = path
        .strip_prefix("/api/containers/")
        .and_then(|rest| rest.strip_suffix("/logs"))
    else {
        return json(StatusCode::NOT_FOUND, &api::error("no such API path"));
    };
    if !logs::valid_id(id) {
        return json(
            StatusCode::BAD_REQUEST,
            &api::error("not a container id or name"),
        );
    }
    let q = match logs::Query::parse(query) {
        Ok(q) => q,
        Err(e) => return json(StatusCode::BAD_REQUEST, &api::error(&e)),
    };
    let Some(url) = &sources.docker else {
        return json(
            StatusCode::NOT_FOUND,
            &api::error("no Docker engine is watched (--docker off)"),
        );
    };
    match logs::connect(url) {
        Ok(docker) => sse::response(logs::stream(docker, id.to_owned(), &q)),
        Err(e) => json(StatusCode::BAD_GATEWAY, &api::error(&e)),
    }
}

/// `POST /login`: the form's token; a session cookie when it is right.
async fn login<B>(auth: &Auth, peer: SocketAddr, tls: bool, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if !auth.enabled() {
        return see_other("/", None);
    }
    let Some(form) = form::read(req.into_body()).await else {
        return login_page(
            StatusCode::BAD_REQUEST,
            "The form did not arrive whole.",
            None,
        );
    };
    let field = |name: &str| form::value(&form, name);
    let next = field("next").filter(|n| form::local_path(n));
    match auth.check(peer.ip(), field("token").as_deref()) {
        Verdict::Allowed => {
            let value = auth.session(unix_now()).expect("a token is set");
            let secure = if tls { "; Secure" } else { "" };
            let cookie = format!(
                "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                auth::COOKIE,
                auth::SESSION.as_secs()
            );
            see_other(next.as_deref().unwrap_or("/"), Some(cookie))
        }
        Verdict::Denied => login_page(StatusCode::UNAUTHORIZED, "Wrong token.", next),
        Verdict::Throttled => login_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed attempts; try again in a minute.",
            next,
        ),
    }
}

/// `POST /logout`: the cookie cleared.
fn logout(tls: bool) -> Response<Body> {
    let secure = if tls { "; Secure" } else { "" };
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
        auth::COOKIE
    );
    see_other("/login", Some(cookie))
}

/// The login form with `message` (plain text; escaped here).
fn login_page(status: StatusCode, message: &str, next: Option<String>) -> Response<Body> {
    let next = next.filter(|n| form::local_path(n));
    let html = assets::LOGIN
        .replace("{{message}}", &esc(message))
        .replace("{{next}}", &esc(next.as_deref().unwrap_or("/")));
    let mut r = assets::html(html);
    *r.status_mut() = status;
    r
}

fn see_other(location: &str, cookie: Option<String>) -> Response<Body> {
    let mut r = Response::new(sse::full(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    let h = r.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| http::HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

/// The session cookie's value, if the request carries one.
fn session_cookie(headers: &http::HeaderMap) -> Option<&str> {
    form::cookie(headers, auth::COOKIE)
}

fn query_value(uri: &http::Uri, name: &str) -> Option<String> {
    form::value(uri.query()?.as_bytes(), name).filter(|v| !v.is_empty())
}

/// `/metrics` in the Prometheus text format (404 with `--metrics off`).
fn scrape(sources: &Sources) -> Response<Body> {
    let Some(m) = &sources.metrics else {
        return json(
            StatusCode::NOT_FOUND,
            &api::error("metrics are off (--metrics off)"),
        );
    };
    let mut r = Response::new(sse::full(metrics::render(m, sources)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(sse::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(sse::full(body.to_string()));
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
