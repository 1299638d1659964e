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
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::FutureExt as _;
use http::header::{ACCEPT, CONNECTION, STRICT_TRANSPORT_SECURITY};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body as _;

use super::Shared;
use super::body::ClientBody;
use super::body::ProxyBody;
use super::conns::Slot;
use super::error::ProxyError;
use super::forward::{Upgrade, forward, prepare};
use super::headers::Forwarding;
use super::listener::{ConnInfo, Scheme};
use super::policy::{Context, Decoration, Https, NOINDEX, policy, refused};
use super::record::{RequestRecord, Sink, shown_headers};
use super::respond::{Answer, Reply, respond, wants_json};
use super::route::{Routed, route};
use crate::acme::challenge::{HTTP01_PREFIX, Http01};
use crate::guard::Target;
use crate::routes::{HostMatch, MAX_HOST_LEN, Policy};
use crate::upstream::{Outgoing, Pool, RequestBody, ResponseBody, Sent};

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
    req: Request<ClientBody>,
    upgrade: Option<super::forward::ClientUpgrade>,
    forwarding: Forwarding,
    decoration: Decoration,
    /// Headers every answer on this route carries.
    extra: RouteHeaders,
}

/// Headers every response on a route carries, forwarded or branchgate's
/// own: `Strict-Transport-Security` and `X-Robots-Tag`.
#[derive(Clone, Debug, Default)]
struct RouteHeaders {
    hsts: Option<HeaderValue>,
    noindex: bool,
}

impl RouteHeaders {
    fn add(&self, headers: &mut http::HeaderMap) {
        if let Some(v) = &self.hsts {
            headers.insert(STRICT_TRANSPORT_SECURITY, v.clone());
        }
        if self.noindex {
            headers.insert(X_ROBOTS_TAG, NOINDEX);
        }
    }
}

const X_ROBOTS_TAG: http::HeaderName = http::HeaderName::from_static("x-robots-tag");

/// Serves one request. Never fails: errors become responses.
///
/// Route, policy and prepare run here, before the returned future is
/// polled; the future holds only what the forward phase needs and what
/// finishes the response after it. An HTTP/1 client connection's future
/// holds one of this size for the connection's life (an h2 stream's task
/// holds one too), and every request moves a new one into it: an `async
/// fn` here carried its request twice
/// (argument and local), the phases' results twice, and the rare admin and
/// gate answers inline (4.9 KiB per connection instead of 1.3). The
/// upstream request head is written out here as well ([`Outgoing`]), so
/// that nothing of the request's head, which shares the connection's read
/// buffer, outlives this function.
pub fn handle(
    connection: Arc<Connection>,
    req: Request<ClientBody>,
) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static {
    let busy = Busy::new(connection);
    let connection = &busy.0;
    let mut record = RequestRecord::start(&req, connection.info.peer.ip());
    if connection.shared.sink.wants_headers() {
        record.headers = Some(shown_headers(req.headers()));
    }
    // Boxed: the admin side's and the gate's futures are larger than the
    // proxied path's, and few requests are theirs.
    if (connection.shared.dashboard.as_ref()).is_some_and(|d| d.wants(&req)) {
        return Handled::Boxed {
            fut: Box::pin(super::dashboard::serve(req, record, busy)),
        };
    }
    if super::gate::wants(&connection.shared.access, &req) {
        return Handled::Boxed {
            fut: Box::pin(super::gate::serve(req, record, busy)),
        };
    }
    let json = wants_json(req.headers().get(ACCEPT));
    let http1 = req.version() <= Version::HTTP_11;
    // With a body to upload: whether it has been read in full.
    let body_sent = (!req.body().is_end_stream()).then(|| Arc::new(Sent::default()));
    let ready = match decide(connection, req, &mut record, json) {
        Ok(ready) => ready,
        Err(reply) => {
            let resp = synthetic(reply, record, busy);
            return Handled::Now {
                resp: Some(close_if_unread(resp, http1, body_sent.as_deref())),
            };
        }
    };
    let settings = &connection.shared.settings;
    let Ready {
        pool,
        req,
        upgrade,
        forwarding,
        decoration,
        extra,
    } = ready;
    let (parts, body) = req.into_parts();
    let body = RequestBody::new(body, settings.client_body_timeout, http1, body_sent.clone())
        .limit(decoration.max_body);
    // Written out now: the request's head (which shares the connection's
    // read buffer) and the forwarding headers end with this function instead of
    // living through the exchange (see `Outgoing`).
    let out = Outgoing::new(Request::from_parts(parts, body), &forwarding.fields());
    let timeout = decoration
        .response_timeout
        .unwrap_or(settings.response_timeout);
    let upgrade = upgrade.map(|on| Upgrade {
        on,
        connection: busy.0.clone(),
    });
    let upstream_read_timeout = settings.upstream_read_timeout;
    let forwarded = forward(pool, out, upgrade, body_sent.clone(), timeout);
    let after = After {
        record,
        busy,
        decoration,
        extra,
        json,
        http1,
        body_sent,
        upstream_read_timeout,
    };
    Handled::Forwarding {
        fut: forwarded.map(move |(forwarded, pool)| after.finish(forwarded, pool)),
    }
}

pin_project_lite::pin_project! {
    /// The future [`handle`] returns: an answer known at once, the rare
    /// boxed one, or the forward phase with what finishes its response.
    #[project = HandledProj]
    enum Handled<F> {
        Now { resp: Option<Response<ProxyBody>> },
        Boxed { fut: Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>> },
        Forwarding { #[pin] fut: F },
    }
}

impl<F: Future<Output = Response<ProxyBody>>> Future for Handled<F> {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project() {
            HandledProj::Now { resp } => {
                Poll::Ready(Ok(resp.take().expect("polled after it answered")))
            }
            HandledProj::Boxed { fut } => fut.as_mut().poll(cx).map(Ok),
            HandledProj::Forwarding { fut } => fut.poll(cx).map(Ok),
        }
    }
}

/// What turns the forward phase's outcome into the client's response.
struct After {
    record: RequestRecord,
    busy: Busy,
    decoration: Decoration,
    extra: RouteHeaders,
    json: bool,
    http1: bool,
    body_sent: Option<Arc<Sent>>,
    upstream_read_timeout: std::time::Duration,
}

impl After {
    fn finish(
        self,
        forwarded: Result<Response<Option<ResponseBody>>, ProxyError>,
        pool: Arc<Pool>,
    ) -> Response<ProxyBody> {
        let mut record = self.record;
        record.pool = Some(pool);
        let resp = match forwarded {
            Ok(mut resp) => {
                self.decoration.apply(resp.headers_mut());
                self.extra.add(resp.headers_mut());
                record.status = resp.status();
                record.upstream = resp
                    .body()
                    .as_ref()
                    .and_then(|b| b.upstream())
                    .map(|u| u.addr);
                let (parts, body) = resp.into_parts();
                let body = ProxyBody::upstream(body, self.upstream_read_timeout, record, self.busy);
                Response::from_parts(parts, body)
            }
            Err(err) => {
                err.log(self.busy.connection().info.peer);
                let mut reply = respond(Answer::Error(err), self.json);
                self.extra.add(&mut reply.headers);
                synthetic(reply, record, self.busy)
            }
        };
        close_if_unread(resp, self.http1, self.body_sent.as_deref())
    }
}

/// Any answer that comes before an HTTP/1 request body was read in full
/// (an upstream's early 401 or 413, or one of branchgate's own) says
/// `Connection: close`: the connection closes after it rather than read
/// the rest and go on with what follows, past any framing doubt (see
/// SECURITY.md), as nginx does when it has not read a request body. A
/// tunnel owns the connection already.
fn close_if_unread(
    mut resp: Response<ProxyBody>,
    http1: bool,
    body_sent: Option<&Sent>,
) -> Response<ProxyBody> {
    let unread = body_sent.is_some_and(|s| !s.is_done());
    if http1 && unread && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Route, policy and prepare, under one load of the snapshot: a request
/// ready to forward, or the rendered answer.
// `Ready` (a whole request) is the larger side; the reply is consumed at once.
#[allow(clippy::result_large_err)]
fn decide(
    connection: &Connection,
    mut req: Request<ClientBody>,
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
    let access = &shared.access;
    let peer = connection.info.peer.ip();
    let routed = route(&snapshot, &req, &mut name).map_err(|answer| {
        // The branch domain's own pages (the matrix, a missing branch) are
        // behind its gate and allow list too.
        let branch_page = matches!(answer, Answer::Matrix { .. } | Answer::MissingBranch { .. });
        let target = Target {
            branch: true,
            ..Target::host("")
        };
        let answer = match branch_page {
            true => match access.check(&Policy::default(), &req, &target, peer) {
                Ok(_) => answer,
                Err(refusal) => refused(refusal, &req, &shared.settings.cors),
            },
            false => answer,
        };
        log(&answer);
        let mut reply = respond(answer, json);
        if branch_page && access.noindex {
            reply.headers.insert(X_ROBOTS_TAG, NOINDEX);
        }
        reply
    })?;
    // The one clone of the pool per request: it forwards, and its key names
    // the route in the record.
    let pool = routed.pool.clone();
    let scheme = connection.info.scheme;
    // A host no rule names is served as the default host, under its
    // access rules too (nginx-proxy's default server carries its own).
    let default = match routed.how {
        HostMatch::Default => snapshot.table().default_host().map(|h| &*h.pattern),
        _ => None,
    };
    let target = Target {
        name: default.unwrap_or(routed.name),
        pattern: default
            .unwrap_or_else(|| host_pattern(&snapshot, &routed, access.htpasswd.is_some())),
        prefix: &routed.route.prefix,
        branch: routed.how == HostMatch::Branch,
    };
    // From here on, branchgate's own answers on this route carry these.
    let extra = RouteHeaders {
        hsts: super::policy::hsts(&routed.route.policy, scheme),
        noindex: access.noindex(&target),
    };
    let fail = |answer: Answer<'_>| {
        log(&answer);
        let mut reply = respond(answer, json);
        extra.add(&mut reply.headers);
        reply
    };
    let cx = policy_context(shared, scheme, peer);
    let ready = policy(&routed.route.policy, &req, &target, &cx)
        .map_err(fail)
        .and_then(|decoration| {
            if pool.upstreams().is_empty() {
                return Err(fail(ProxyError::NoUpstream.into()));
            }
            decoration.consumed.strip(req.headers_mut());
            let (upgrade, forwarding) =
                prepare(&mut req, &routed, connection).map_err(|e| fail(e.into()))?;
            Ok((upgrade, forwarding, decoration))
        });
    match ready {
        Ok((upgrade, forwarding, decoration)) => Ok(Ready {
            pool,
            req,
            upgrade,
            forwarding,
            decoration,
            extra,
        }),
        Err(reply) => {
            record.pool = Some(pool);
            Err(reply)
        }
    }
}

/// The host pattern of `routed`'s rule as written, for `--htpasswd` file
/// names: the request's host for exact and branch hosts, else (only when
/// `wanted`) the wildcard or regex that matched.
fn host_pattern<'a>(
    snapshot: &'a crate::routes::Snapshot,
    routed: &Routed<'a>,
    wanted: bool,
) -> &'a str {
    match routed.how {
        HostMatch::Suffix | HostMatch::Prefix | HostMatch::Regex if wanted => snapshot
            .table()
            .find_host(routed.name)
            .map_or(routed.name, |(h, _)| &h.pattern),
        _ => routed.name,
    }
}

/// What the policy phase reads of the server for a request over `scheme`
/// from `peer`.
pub fn policy_context(shared: &Shared, scheme: Scheme, peer: std::net::IpAddr) -> Context<'_> {
    Context {
        scheme,
        access: &shared.access,
        peer,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, F: Future>(_: impl Fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_request_future_fits_in_1536_bytes() {
        // An HTTP/1 connection's future holds one of this size (and an h2
        // stream's task holds one): 4.9 KiB as an `async fn` that moved
        // its request and results into locals, 1.3 KiB now, in the
        // allocator's 1.5 KiB size class.
        let size = future_size(handle);
        assert!(
            size <= 1536 - 16,
            "the request future grew to {size} bytes: is a large value held twice across an await?"
        );
    }
}
