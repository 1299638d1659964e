//! The request handler: runs the phases in order and turns their outcome
//! into a response.
//!
//! ```text
//! request ─▶ route ─▶ policy ─▶ prepare ─▶ forward ─▶ upstream response (+ policy decoration)
//!              └────────┴─────────┴───────────┴──▶ respond (every synthetic answer)
//! ```
//!
//! `route`, `policy` and `prepare` run under one `load()` of the snapshot;
//! the guard is dropped before the first `.await`. Failures are logged once,
//! by [`ProxyError::log`]; every request's record goes to the sink when its
//! response body ends.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{ACCEPT, CONNECTION, STRICT_TRANSPORT_SECURITY};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::Shared;
use super::body::ProxyBody;
use super::conns::Slot;
use super::error::ProxyError;
use super::forward::{forward, prepare};
use super::listener::{ConnInfo, Scheme};
use super::policy::{Context, Decoration, Https, policy};
use super::record::{RequestRecord, Sink, shown_headers};
use super::respond::{Answer, Reply, respond, wants_json};
use super::route::route;
use crate::acme::challenge::{HTTP01_PREFIX, Http01};
use crate::routes::MAX_HOST_LEN;
use crate::upstream::{Pool, RequestBody, Sent};

/// What every request on one client connection shares: one `Arc` clone per request.
#[derive(Debug)]
pub struct Connection {
    /// State of the whole proxy.
    pub shared: Arc<Shared>,
    /// This connection's client and listener.
    pub info: ConnInfo,
    /// Its place under the connection cap, and whether it is idle.
    pub slot: Slot,
}

/// One request being served. Its connection is not idle until this is
/// dropped: with the response body, or earlier if the request is abandoned.
pub struct Busy(Arc<Connection>);

impl Busy {
    fn new(conn: Arc<Connection>) -> Self {
        conn.slot.begin();
        Self(conn)
    }

    /// Where this request's record goes.
    pub fn sink(&self) -> &dyn Sink {
        &*self.0.shared.sink
    }

    /// The connection it is on.
    pub fn connection(&self) -> &Connection {
        &self.0
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.slot.end();
    }
}

/// A request that passed route and policy, edited for its upstream.
struct Ready {
    /// The route's pool (goes into the record once forwarded).
    pool: Arc<Pool>,
    req: Request<Incoming>,
    upgrade: Option<OnUpgrade>,
    decoration: Decoration,
    /// `Strict-Transport-Security` for every answer on this route.
    hsts: Option<HeaderValue>,
}

/// Serves one request. Never fails: errors become responses.
pub async fn handle(
    connection: Arc<Connection>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let busy = Busy::new(connection);
    let connection = &busy.0;
    let mut record = RequestRecord::start(&req, connection.info.peer.ip());
    if connection.shared.sink.wants_headers() {
        record.headers = Some(shown_headers(req.headers()));
    }
    if (connection.shared.dashboard.as_ref()).is_some_and(|d| d.wants(&req)) {
        return Ok(super::dashboard::serve(req, record, busy).await);
    }
    let json = wants_json(req.headers().get(ACCEPT));
    let http1 = req.version() <= Version::HTTP_11;
    // With a body to upload: whether it has been read in full.
    let body_sent = (!req.body().is_end_stream()).then(|| Arc::new(Sent::default()));

    let mut resp = match decide(connection, req, &mut record, json) {
        Err(reply) => synthetic(reply, record, busy),
        Ok(ready) => {
            let settings = &connection.shared.settings;
            let (parts, body) = ready.req.into_parts();
            let body =
                RequestBody::new(body, settings.client_body_timeout, http1, body_sent.clone());
            let req = Request::from_parts(parts, body);
            let forwarded = forward(
                connection,
                &ready.pool,
                req,
                ready.upgrade,
                body_sent.clone(),
            )
            .await;
            record.pool = Some(ready.pool);
            match forwarded {
                Ok((mut resp, lease)) => {
                    ready.decoration.apply(resp.headers_mut());
                    add_hsts(resp.headers_mut(), ready.hsts.as_ref());
                    record.status = resp.status();
                    record.upstream = lease.as_ref().map(|l| l.upstream().addr);
                    let (parts, body) = resp.into_parts();
                    let read_timeout = settings.upstream_read_timeout;
                    let body = ProxyBody::upstream(body, read_timeout, lease, record, busy);
                    Response::from_parts(parts, body)
                }
                Err(err) => {
                    err.log(connection.info.peer);
                    let mut reply = respond(Answer::Error(err), json);
                    add_hsts(&mut reply.headers, ready.hsts.as_ref());
                    synthetic(reply, record, busy)
                }
            }
        }
    };
    // Any answer that comes before an HTTP/1 request body was read in full
    // (an upstream's early 401 or 413, or one of branchgate's own): hyper
    // would read the rest itself afterwards and go on with what follows, past
    // any framing doubt (see SECURITY.md). Close instead, as nginx does when
    // it has not read a request body. A tunnel owns the connection already.
    let unread = body_sent.as_ref().is_some_and(|s| !s.is_done());
    if http1 && unread && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// Route, policy and prepare, under one load of the snapshot: a request
/// ready to forward, or the rendered answer.
// `Ready` (a whole request) is the larger side; the reply is consumed at once.
#[allow(clippy::result_large_err)]
fn decide(
    connection: &Connection,
    mut req: Request<Incoming>,
    record: &mut RequestRecord,
    json: bool,
) -> Result<Ready, Reply> {
    let shared = &connection.shared;
    let snapshot = shared.routes.load();
    let log = |answer: &Answer<'_>| {
        if let Answer::Error(err) = answer {
            err.log(connection.info.peer);
        }
    };
    if let Some(reply) = http01(shared, &req, json) {
        return Err(reply);
    }
    let mut name = [0; MAX_HOST_LEN];
    let routed = route(&snapshot, &req, &mut name).map_err(|answer| {
        log(&answer);
        respond(answer, json)
    })?;
    // The one clone of the pool per request: it forwards, and its key names
    // the route in the record.
    let pool = routed.pool.clone();
    let scheme = connection.info.scheme;
    // From here on, branchgate's own answers on this route carry its HSTS.
    let hsts = super::policy::hsts(&routed.route.policy, scheme);
    let fail = |answer: Answer<'_>| {
        log(&answer);
        let mut reply = respond(answer, json);
        add_hsts(&mut reply.headers, hsts.as_ref());
        reply
    };
    let cx = policy_context(shared, scheme);
    let ready = policy(&routed.route.policy, &req, routed.name, &cx)
        .map_err(fail)
        .and_then(|decoration| {
            if pool.upstreams().is_empty() {
                return Err(fail(ProxyError::NoUpstream.into()));
            }
            let upgrade = prepare(&mut req, &routed, connection).map_err(|e| fail(e.into()))?;
            Ok((upgrade, decoration))
        });
    match ready {
        Ok((upgrade, decoration)) => Ok(Ready {
            pool,
            req,
            upgrade,
            decoration,
            hsts,
        }),
        Err(reply) => {
            record.pool = Some(pool);
            Err(reply)
        }
    }
}

/// What the policy phase reads of the server for a request over `scheme`.
pub fn policy_context(shared: &Shared, scheme: Scheme) -> Context<'_> {
    Context {
        scheme,
        origins: &shared.settings.cors,
        https: shared.tls.as_ref().map(|t| Https {
            port: t.port,
            certs: &t.selector.certs,
            acme: shared.acme.as_deref(),
        }),
        non_get_redirect: shared.settings.non_get_redirect,
    }
}

/// HTTP-01 before any route or redirect (RFC 8555 8.3). A well-formed
/// token no order waits on goes on (`None`): a backend may run its own ACME
/// client.
pub fn http01<B>(shared: &Shared, req: &Request<B>, json: bool) -> Option<Reply> {
    let acme = shared.acme.as_ref()?;
    let token = req.uri().path().strip_prefix(HTTP01_PREFIX)?;
    match acme.challenges.http01(token) {
        Http01::Unknown => None,
        answer => Some(respond(Answer::Acme(answer), json)),
    }
}

fn synthetic(reply: Reply, mut record: RequestRecord, busy: Busy) -> Response<ProxyBody> {
    record.status = reply.status;
    reply.into_response(|body| ProxyBody::full(body, record, busy))
}

fn add_hsts(headers: &mut http::HeaderMap, hsts: Option<&HeaderValue>) {
    if let Some(v) = hsts {
        headers.insert(STRICT_TRANSPORT_SECURITY, v.clone());
    }
}
