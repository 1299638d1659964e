//! The forward phase: the request goes to an upstream of its pool, with
//! round-robin and one fresh retry on a pooled connection the upstream just
//! closed, the response timeout (which starts once the body is sent) and the
//! upload bound; a `101` becomes a tunnel. [`prepare`] edits the request for
//! the upstream first (path rewrite, headers), under the table guard.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

use super::body::ClientBody;
use super::error::ProxyError;
use super::h1::serve::OwnUpgrade;
use super::handler::Connection;
use super::headers::{Forwarding, HeaderRules, join_cookies, prepare_request, prepare_response};
use super::proto::Io;
use super::route::Routed;
use crate::upstream::{Outgoing, Pool, RequestBodyError, ResponseBody, Retry, SendError, Sent};

/// Edits `req` for the upstream in place: the matched prefix replaced by
/// `VIRTUAL_DEST`, origin-form target, hop-by-hop headers out. Returns the
/// client's upgrade, when it asked for one, and the forwarding headers the
/// upstream leg writes after the request's own.
pub fn prepare(
    req: &mut Request<ClientBody>,
    routed: &Routed<'_>,
    connection: &Connection,
) -> Result<(Option<ClientUpgrade>, Forwarding), ProxyError> {
    let original_uri = match req.uri().path_and_query() {
        Some(pq) => HeaderValue::from_str(pq.as_str()).unwrap_or(HeaderValue::from_static("/")),
        None => HeaderValue::from_static("/"),
    };
    if let Some(dest) = &routed.route.dest {
        *req.uri_mut() = rewrite(req.uri().path_and_query(), &routed.route.prefix, dest)
            .ok_or(ProxyError::Rewrite)?;
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
    let settings = &connection.shared.settings;
    let upgradable = req.version() == Version::HTTP_11;
    let body_length = http_body::Body::size_hint(req.body()).exact();
    let prepared = prepare_request(
        req.headers_mut(),
        &connection.info,
        &routed.host,
        original_uri,
        HeaderRules {
            trust: settings.trust_downstream_proxy,
            underscores: settings.allow_underscore_headers,
        },
        upgradable,
        body_length,
    );
    let client_upgrade = prepared.upgrade.then(|| ClientUpgrade::on(req));
    *req.version_mut() = Version::HTTP_11;
    Ok((client_upgrade, prepared.forwarding))
}

/// Replaces `prefix` at the start of the path with `dest`, joined by exactly one `/`.
pub fn rewrite(pq: Option<&PathAndQuery>, prefix: &str, dest: &str) -> Option<Uri> {
    let path = pq.map_or("/", PathAndQuery::as_str);
    let rest = path.get(prefix.len()..).unwrap_or("");
    let mut out = String::with_capacity(dest.len() + rest.len() + 1);
    out.push_str(dest);
    if out.is_empty() {
        out.push('/');
    }
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

/// Where the client's socket comes from once a `101` went out: branchgate's
/// own HTTP/1 connection, or hyper's h2 (extended CONNECT).
pub enum ClientUpgrade {
    /// From [`Conn`](super::h1::serve::Conn).
    Own(OwnUpgrade),
    /// From hyper.
    Hyper(hyper::upgrade::OnUpgrade),
}

impl ClientUpgrade {
    /// The upgrade `req` can be switched with (its connection's).
    pub fn on(req: &mut Request<ClientBody>) -> Self {
        match req.extensions_mut().remove::<OwnUpgrade>() {
            Some(own) => Self::Own(own),
            None => Self::Hyper(hyper::upgrade::on(req)),
        }
    }

    /// The client's socket, once switched.
    async fn upgraded(self) -> Result<Box<dyn Io>, String> {
        match self {
            Self::Own(own) => match own.upgraded().await {
                Some(io) => Ok(Box::new(io)),
                None => Err("the client connection ended before switching".to_owned()),
            },
            Self::Hyper(on) => match on.await {
                Ok(io) => Ok(Box::new(TokioIo::new(io))),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

/// The client's request to switch protocols, and its connection, which a
/// tunnel keeps under the cap.
pub struct Upgrade {
    /// Resolves with the client's connection once the `101` went out.
    pub on: ClientUpgrade,
    /// The connection it came on.
    pub connection: Arc<Connection>,
}

/// Sends `out` to an upstream of `pool`; resolves with the outcome and the
/// pool (for the record).
/// `body_sent` is there when the request has a body: the response
/// `timeout` starts once it is sent in full.
///
/// Not an `async fn`: that would hold every argument twice (as passed, and
/// moved into its body), and this future's size is every request's (see
/// [`handle`](super::handler::handle)). The block uses what it captured in place,
/// and lends the request to each attempt instead of moving it there.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice (see above)"
)]
pub fn forward(
    pool: Arc<Pool>,
    mut out: Outgoing,
    upgrade: Option<Upgrade>,
    body_sent: Option<Arc<Sent>>,
    timeout: Duration,
) -> impl Future<
    Output = (
        Result<Response<Option<ResponseBody>>, ProxyError>,
        Arc<Pool>,
    ),
> + Send
+ 'static {
    async move {
        let mut last_err = ProxyError::NoUpstream;
        let outcome = 'sent: {
            for upstream in pool.candidates() {
                if let ProxyError::Connect(e) = &last_err {
                    // Logged here because another upstream gets the request; the
                    // last failure is logged once, with the answer.
                    warn!(error = %crate::logging::Chain(e), "upstream connect failed; trying the next one");
                }
                // A pooled connection the upstream closed just as the request went
                // leaves the request untouched (see `Lease::send`); one fresh try is safe.
                for attempt in 0..2 {
                    // In a block of their own, so that neither the lease
                    // nor the result it came in takes room in this future
                    // beside the send that now owns the lease.
                    let (written, sent) = {
                        let leased = if attempt == 0 {
                            upstream.lease().await
                        } else {
                            upstream.lease_fresh().await
                        };
                        let lease = match leased {
                            Ok(lease) => lease,
                            Err(e) => {
                                last_err = ProxyError::Connect(e);
                                break;
                            }
                        };
                        let written = body_sent.as_ref().map(|_| lease.written());
                        (written, lease.send(&mut out))
                    };
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
                        answer = sent => answer,
                        err = deadline => break 'sent Err(err),
                    };
                    match answer {
                        Ok(resp) => break 'sent accept(resp, upgrade),
                        Err(Err(Retry(e))) => {
                            debug!(upstream = %upstream.addr, error = %crate::logging::Chain(&e),
                                   "pooled upstream connection failed; trying a fresh one");
                            last_err = ProxyError::Upstream(e);
                        }
                        Err(Ok(e)) => break 'sent Err(send_error(e)),
                    }
                }
            }
            Err(last_err)
        };
        (outcome, pool)
    }
}

/// Tells a failed send apart: the client's request body (stalled, malformed)
/// or the upstream.
fn send_error(e: SendError) -> ProxyError {
    match e {
        SendError::Body(RequestBodyError::Stalled(limit)) => ProxyError::ClientBodyTimeout(limit),
        SendError::Body(RequestBodyError::TooLarge(max)) => ProxyError::BodyTooLarge(max),
        SendError::Body(e) => ProxyError::ClientBody(e),
        SendError::Upstream(e) => ProxyError::Upstream(e),
    }
}

/// Takes the upstream's response: hop-by-hop headers out, and a `101` the
/// client asked for becomes a tunnel that owns both connections (the
/// response then has no body of its own).
fn accept(
    mut resp: Response<ResponseBody>,
    upgrade: Option<Upgrade>,
) -> Result<Response<Option<ResponseBody>>, ProxyError> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let Some(Upgrade {
        on: client_upgrade,
        connection,
    }) = upgrade.filter(|_| switching)
    else {
        if switching {
            // Nobody asked to switch: the upstream connection is in an unknown
            // protocol now. Dropping the body closes it.
            return Err(ProxyError::UnexpectedUpgrade);
        }
        prepare_response(resp.headers_mut(), false);
        return Ok(resp.map(Some));
    };
    prepare_response(resp.headers_mut(), true);
    let (parts, body) = resp.into_parts();
    let addr = body.upstream().map(|u| u.addr);
    // The connection now belongs to the tunnel; it never returns to the pool.
    let Some((mut server, early)) = body.into_tunnel() else {
        return Err(ProxyError::UnexpectedUpgrade);
    };
    // The tunnel keeps the client connection's slot under the cap, and is never idle.
    connection.slot.begin();
    tokio::spawn(async move {
        let _connection = connection;
        match client_upgrade.upgraded().await {
            Ok(mut client) => {
                // What the upstream sent right behind its 101 goes first.
                let relayed = match early.is_empty() {
                    true => Ok(()),
                    false => client.write_all(&early).await,
                };
                let copied = match relayed {
                    Ok(()) => tokio::io::copy_bidirectional(&mut client, &mut server)
                        .await
                        .map(drop),
                    Err(e) => Err(e),
                };
                if let Err(error) = copied {
                    debug!(upstream = ?addr, %error, "tunnel ended with an error");
                }
            }
            Err(error) => debug!(upstream = ?addr, %error, "upgrade failed"),
        }
    });
    Ok(Response::from_parts(parts, None))
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
