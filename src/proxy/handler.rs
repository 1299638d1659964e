//! The request handler: host + path → pool → upstream, with headers edited in
//! place and bodies streamed. One `ArcSwap::load` per request; the guard is
//! dropped before the first `.await`.

use std::convert::Infallible;
use std::sync::Arc;

use http_body::Body as _;

use http::header::{
    ACCEPT, ACCESS_CONTROL_REQUEST_METHOD, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HOST, ORIGIN,
};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::{debug, info, warn};

use super::Shared;
use super::body::{ProxyBody, RequestBody, RequestBodyError, Sent};
use super::conns::Slot;
use super::cors;
use super::error::{ProxyError, error_response};
use super::headers::{ConnInfo, HeaderRules, join_cookies, prepare_request, prepare_response};
use super::pages::{self, Page};
use super::path::has_dot_segment;
use super::upstream::Lease;
use crate::logging::AccessRecord;
use crate::routes::{Lookup, MAX_HOST_LEN, normalize_host};

/// The longest request target (path and query) accepted, as nginx's default
/// `large_client_header_buffers 4 8k` allows: a longer one answers 414.
pub const MAX_REQUEST_TARGET: usize = 8 * 1024;

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
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.slot.end();
    }
}

/// Serves one request. Never fails: errors become responses.
pub async fn handle(
    connection: Arc<Connection>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let busy = Busy::new(connection);
    let connection = &busy.0;
    let (shared, conn) = (&connection.shared, &connection.info);
    let mut record = shared
        .settings
        .access_log
        .then(|| AccessRecord::new(&req, conn.peer.ip()));
    let read_timeout = shared.settings.upstream_read_timeout;
    let http1 = req.version() <= Version::HTTP_11;
    // With a body to upload: whether it has been read in full.
    let body_sent = (!req.body().is_end_stream()).then(|| Arc::new(Sent::default()));
    let outcome = forward(connection, req, body_sent.clone()).await;
    let mut resp = match outcome {
        Ok(Outcome::Page(page)) => {
            let record = record.map(|mut r| {
                r.status = page.status.as_u16();
                r
            });
            let empty = page.body.is_empty();
            let mut resp = Response::new(ProxyBody::full(page.body, record, busy));
            *resp.status_mut() = page.status;
            let kind = if page.json {
                "application/json"
            } else {
                "text/html; charset=utf-8"
            };
            if !empty {
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
            }
            resp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp.headers_mut().extend(page.headers);
            resp
        }
        Ok(Outcome::Upstream(resp, lease)) => {
            let (parts, body) = resp.into_parts();
            if let Some(r) = &mut record {
                r.status = parts.status.as_u16();
                r.upstream = lease.as_ref().map(|l| l.upstream().addr);
            }
            let body = ProxyBody::upstream(body, read_timeout, lease, record, busy);
            Response::from_parts(parts, body)
        }
        Err(err) => {
            let peer = connection.info.peer;
            if err.is_upstream() {
                warn!(error = %crate::logging::chain(&err), client = %peer, "upstream error");
            } else if err.closes() {
                info!(error = %crate::logging::chain(&err), client = %peer, "client error");
            } else {
                debug!(error = %err, client = %peer, "request refused");
            }
            error_response(&err, record, busy)
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

fn wants_json<B>(req: &Request<B>) -> bool {
    pages::wants_json(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()))
}

fn rewrite(pq: Option<&PathAndQuery>, prefix: &str, dest: &str) -> Option<Uri> {
    let path = pq.map_or("/", PathAndQuery::as_str);
    let rest = path.get(prefix.len()..).unwrap_or("");
    let mut out = String::with_capacity(dest.len() + rest.len() + 1);
    out.push_str(dest);
    if out.is_empty() {
        out.push('/');
    }
    // Join with exactly one `/`.
    let rest = if out.ends_with('/') {
        rest.strip_prefix('/').unwrap_or(rest)
    } else {
        rest
    };
    if !out.ends_with('/') && !rest.is_empty() && !rest.starts_with(['/', '?']) {
        out.push('/');
    }
    out.push_str(rest);
    Uri::try_from(out).ok()
}

/// What a request came to.
enum Outcome {
    /// The upstream's response (and the connection lease to recycle).
    Upstream(Response<Incoming>, Option<Lease>),
    /// A page branchgate answers itself (the branch matrix, a missing branch).
    Page(Page),
}

async fn forward(
    connection: &Arc<Connection>,
    mut req: Request<Incoming>,
    body_sent: Option<Arc<Sent>>,
) -> Result<Outcome, ProxyError> {
    let (shared, conn) = (&*connection.shared, &connection.info);
    if req
        .uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str().len() > MAX_REQUEST_TARGET)
    {
        return Err(ProxyError::UriTooLong);
    }
    if let Some(scheme) = req.uri().scheme()
        && *scheme != Scheme::HTTP
        && *scheme != Scheme::HTTPS
    {
        return Err(ProxyError::BadScheme);
    }
    // Two `Host` lines leave the host in doubt (RFC 9112 3.2): refuse rather than pick.
    let mut hosts = req.headers().get_all(HOST).iter();
    let host_header = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(ProxyError::DuplicateHost);
    }
    // HTTP/2 and absolute-form requests carry the host in the URI, and it wins over `Host`.
    let host_value = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadHost)?,
        None => host_header.ok_or(ProxyError::BadHost)?,
    };
    let mut buf = [0; MAX_HOST_LEN];
    let host = host_value
        .to_str()
        .ok()
        .and_then(|h| normalize_host(h, &mut buf));
    let host = host.ok_or(ProxyError::BadHost)?;

    if has_dot_segment(req.uri().path()) {
        return Err(ProxyError::DotSegments);
    }
    let (pool, new_uri, cors) = {
        let table = shared.table.load();
        match table.lookup(host, req.uri().path()) {
            Lookup::Found(route, _) => (
                route.pool.clone(),
                route
                    .dest
                    .as_deref()
                    .and_then(|d| rewrite(req.uri().path_and_query(), &route.prefix, d)),
                route.cors,
            ),
            Lookup::NoPath => return Err(ProxyError::NoPath),
            Lookup::NoHost => return Err(ProxyError::NoHost),
            Lookup::Matrix(index) => {
                let port = host_value.to_str().ok().and_then(pages::host_port);
                return Ok(Outcome::Page(pages::matrix(index, port, wants_json(&req))));
            }
            Lookup::MissingBranch { index, role, slug } => {
                let port = host_value.to_str().ok().and_then(pages::host_port);
                let page = pages::missing(index, role, slug, port, wants_json(&req));
                return Ok(Outcome::Page(page));
            }
        }
    };
    // CORS routes: (origin, allowed) when the request has an Origin.
    let cors = cors
        .then(|| req.headers().get(ORIGIN).cloned())
        .flatten()
        .map(|o| {
            let allowed = o.to_str().is_ok_and(|s| shared.settings.cors.allows(s));
            (o, allowed)
        });
    if let Some((origin, allowed)) = &cors
        && req.method() == Method::OPTIONS
        && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    {
        return Ok(Outcome::Page(cors::preflight(
            req.headers(),
            origin,
            *allowed,
        )));
    }
    if pool.upstreams().is_empty() {
        return Err(ProxyError::NoUpstream);
    }

    let original_uri = match req.uri().path_and_query() {
        Some(pq) => HeaderValue::from_str(pq.as_str()).unwrap_or(HeaderValue::from_static("/")),
        None => HeaderValue::from_static("/"),
    };
    if let Some(uri) = new_uri {
        *req.uri_mut() = uri;
    } else if req.uri().authority().is_some() {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or(PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
    if req.version() == Version::HTTP_2 {
        join_cookies(req.headers_mut());
    }
    let settings = &shared.settings;
    let http1 = req.version() <= Version::HTTP_11;
    let upgradable = req.version() == Version::HTTP_11;
    let body_length = req.body().size_hint().exact();
    let upgrade = prepare_request(
        req.headers_mut(),
        conn,
        &host_value,
        original_uri,
        HeaderRules {
            trust: settings.trust_downstream_proxy,
            underscores: settings.allow_underscore_headers,
        },
        upgradable,
        body_length,
    );
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    *req.version_mut() = Version::HTTP_11;

    let timeout = settings.response_timeout;
    let body_timeout = settings.client_body_timeout;
    let mut req = Some(req.map(|b| RequestBody::new(b, body_timeout, http1, body_sent.clone())));
    let mut last_err = ProxyError::NoUpstream;
    for upstream in pool.candidates() {
        // A pooled connection the upstream just closed fails before our request
        // is written; hyper hands the request back and one fresh try is safe.
        for attempt in 0..2 {
            let leased = if attempt == 0 {
                upstream.lease().await
            } else {
                upstream.lease_fresh().await
            };
            let mut lease = match leased {
                Ok(lease) => lease,
                Err(e) => {
                    warn!(upstream = %upstream.addr, error = %crate::logging::chain(&e), "upstream connect failed");
                    last_err = ProxyError::Connect(e);
                    break;
                }
            };
            let Some(request) = req.take() else { break };
            let written = body_sent.as_ref().map(|_| lease.written());
            let sent = lease.sender().try_send_request(request);
            // The response timeout starts once the body is sent; while it is
            // sent, the same limit bounds an upstream that stops taking it.
            let deadline = async {
                if let (Some(body_sent), Some(written)) = (&body_sent, &written)
                    && !body_sent.wait(timeout, written).await
                {
                    return ProxyError::UpstreamNotReading(timeout);
                }
                tokio::time::sleep(timeout).await;
                ProxyError::ResponseTimeout(timeout)
            };
            let answer = tokio::select! {
                answer = sent => Ok(answer),
                err = deadline => Err(err),
            };
            match answer {
                Err(err) => return Err(err),
                Ok(Ok(resp)) => {
                    let (mut resp, lease) = respond(resp, lease, client_upgrade, connection)?;
                    if let Some((origin, allowed)) = &cors {
                        cors::decorate(resp.headers_mut(), Some(origin), *allowed);
                    }
                    return Ok(Outcome::Upstream(resp, lease));
                }
                Ok(Err(mut e)) => match e.take_message() {
                    Some(request) => {
                        req = Some(request);
                        last_err = ProxyError::Upstream(e.into_error());
                    }
                    None => return Err(send_error(e.into_error())),
                },
            }
        }
    }
    Err(last_err)
}

/// Tells a failed send apart: the client's request body (stalled, malformed)
/// or the upstream.
fn send_error(e: hyper::Error) -> ProxyError {
    let body = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<RequestBodyError>());
    match body {
        Some(RequestBodyError::Stalled(limit)) => ProxyError::ClientBodyTimeout(*limit),
        Some(RequestBodyError::Client(_) | RequestBodyError::Trailers) => ProxyError::ClientBody(e),
        None => ProxyError::Upstream(e),
    }
}

fn respond(
    mut resp: Response<Incoming>,
    lease: Lease,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    connection: &Arc<Connection>,
) -> Result<(Response<Incoming>, Option<Lease>), ProxyError> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let Some(client_upgrade) = client_upgrade.filter(|_| switching) else {
        if switching {
            // Nobody asked to switch: the upstream connection is in an unknown
            // protocol now. Dropping the lease discards it.
            return Err(ProxyError::UnexpectedUpgrade);
        }
        prepare_response(resp.headers_mut(), false);
        return Ok((resp, Some(lease)));
    };
    prepare_response(resp.headers_mut(), true);
    // The connection now belongs to the tunnel; it never returns to the pool.
    let server_upgrade = hyper::upgrade::on(&mut resp);
    {
        let addr = lease.upstream().addr;
        lease.tunnel();
        // The tunnel keeps the client connection's slot under the cap, and is never idle.
        let connection = connection.clone();
        connection.slot.begin();
        tokio::spawn(async move {
            let _connection = connection;
            match tokio::try_join!(client_upgrade, server_upgrade) {
                Ok((client, server)) => {
                    let mut client = TokioIo::new(client);
                    let mut server = TokioIo::new(server);
                    if let Err(error) =
                        tokio::io::copy_bidirectional(&mut client, &mut server).await
                    {
                        debug!(upstream = %addr, %error, "tunnel ended with an error");
                    }
                }
                Err(error) => debug!(upstream = %addr, %error, "upgrade failed"),
            }
        });
    }
    Ok((resp, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(path: &str, prefix: &str, dest: &str) -> String {
        let pq = PathAndQuery::try_from(path).unwrap();
        rewrite(Some(&pq), prefix, dest).unwrap().to_string()
    }

    #[test]
    fn dest_replaces_the_matched_prefix() {
        assert_eq!(rw("/app1/foo?x=1", "/app1/", "/"), "/foo?x=1");
        assert_eq!(rw("/app1/", "/app1/", "/"), "/");
        assert_eq!(rw("/app1/foo", "/app1/", "/v2/"), "/v2/foo");
        assert_eq!(rw("/app1", "/app1", "/x"), "/x");
        assert_eq!(rw("/app1/a", "/app1", "/x"), "/x/a");
        assert_eq!(rw("/app1?q", "/app1", "/x"), "/x?q");
        assert_eq!(rw("/app1/a", "/app1/", ""), "/a");
        assert_eq!(rw("/app1/a", "/app1", ""), "/a");
        assert_eq!(rw("/app1/a", "/app1", "/"), "/a");
        assert_eq!(rw("/app1", "/app1", ""), "/");
        assert_eq!(rw("/app1?q", "/app1", "/"), "/?q");
    }
}
