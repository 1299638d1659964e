//! The per-request record: one for every request, started when it arrives,
//! filled in by the phases (route, upstream, status), completed in one place
//! when its response body ends (bytes, duration, whether it finished), and
//! handed to one [`Sink`]. The access log is the first sink; metrics and a
//! live feed read the same record.
//!
//! Starting a record copies nothing: the method, URI and `Host` header are
//! reference-counted clones of what hyper parsed, and the route is named by
//! the pool the request already holds.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, StatusCode, Version};

use crate::logging::ACCESS_TARGET;
use crate::upstream::Pool;

/// What happened to one request.
#[derive(Debug)]
pub struct RequestRecord {
    /// When it arrived.
    pub start: Instant,
    /// The client's IP.
    pub client: IpAddr,
    /// Request method.
    pub method: Method,
    /// HTTP version the client spoke.
    pub version: Version,
    /// The host it asked for (see [`RequestRecord::host`]) and then its
    /// path and query, copied: nothing here shares the connection's read
    /// buffer, which it can then reuse for its next read instead of
    /// allocating another (what hyper could not: hyper#4060).
    target: Box<str>,
    /// Where the host ends in `target`; `None` without one.
    host_len: Option<usize>,
    /// The pool of the route that took it, if one did; its key names the route.
    pub pool: Option<Arc<Pool>>,
    /// The upstream that answered, if any.
    pub upstream: Option<SocketAddr>,
    /// Response status.
    pub status: StatusCode,
    /// Response body bytes sent (set on completion).
    pub bytes: u64,
    /// From arrival to the end of the response body (set on completion).
    pub duration: Duration,
    /// Whether the response body was sent in full (set on completion).
    pub complete: bool,
    /// The request headers with credentials hidden, taken only while a sink
    /// [wants them](Sink::wants_headers) (someone watches the live feed).
    pub headers: Option<Box<[(http::HeaderName, HeaderValue)]>>,
}

/// What a shown header's value becomes when it carries credentials.
pub const HIDDEN: &str = "[hidden]";

/// Headers whose values are never shown: credentials and session cookies.
fn is_secret(name: &http::HeaderName) -> bool {
    use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
    [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, SET_COOKIE].contains(name)
        || name.as_str() == "x-branchgate-bypass"
}

/// `headers` as they may be shown to people: credential values hidden.
pub fn shown_headers(headers: &http::HeaderMap) -> Box<[(http::HeaderName, HeaderValue)]> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = match is_secret(name) {
                true => HeaderValue::from_static(HIDDEN),
                false => value.clone(),
            };
            (name.clone(), value)
        })
        .collect()
}

impl RequestRecord {
    /// Starts the record of `req` from `client`.
    pub fn start<B>(req: &Request<B>, client: IpAddr) -> Self {
        let host = match req.uri().authority() {
            Some(a) => Some(a.as_str()),
            None => (req.headers().get(http::header::HOST)).and_then(|h| h.to_str().ok()),
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut target = String::with_capacity(host.map_or(0, str::len) + path.len());
        target.push_str(host.unwrap_or_default());
        target.push_str(path);
        let target = target.into_boxed_str();
        Self {
            start: Instant::now(),
            client,
            method: req.method().clone(),
            version: req.version(),
            target,
            host_len: host.map(str::len),
            pool: None,
            upstream: None,
            status: StatusCode::OK,
            bytes: 0,
            duration: Duration::ZERO,
            complete: false,
            headers: None,
        }
    }

    /// The host it asked for: the target's authority (HTTP/2, absolute
    /// form), else the `Host` header.
    pub fn host(&self) -> Option<&str> {
        self.host_len.map(|n| &self.target[..n])
    }

    /// The name of the route that took it.
    pub fn route(&self) -> Option<&str> {
        self.pool.as_ref().map(|p| &**p.key().route())
    }

    /// The path and query, `/` when the target has none.
    pub fn path(&self) -> &str {
        &self.target[self.host_len.unwrap_or(0)..]
    }

    /// Completes the record: the body ended after `bytes`, in full or not.
    pub fn complete(&mut self, bytes: u64, complete: bool) {
        self.bytes = bytes;
        self.complete = complete;
        self.duration = self.start.elapsed();
    }
}

/// Where completed records go.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Takes one completed record. Runs on the request's thread: no blocking.
    fn record(&self, record: &RequestRecord);

    /// Whether records should carry the request headers (credentials
    /// hidden); checked once per request, so it must be cheap.
    fn wants_headers(&self) -> bool {
        false
    }
}

impl<T: Sink + ?Sized> Sink for Arc<T> {
    fn record(&self, record: &RequestRecord) {
        (**self).record(record);
    }

    fn wants_headers(&self) -> bool {
        (**self).wants_headers()
    }
}

/// Drops every record (the access log is off and nothing else listens).
#[derive(Debug)]
pub struct Discard;

impl Sink for Discard {
    fn record(&self, _: &RequestRecord) {}
}

/// The access log: one event per request on the `branchgate::access`
/// target, formatted (text or JSON) and written off the hot path by
/// [`crate::logging`].
#[derive(Debug)]
pub struct AccessLog;

impl Sink for AccessLog {
    fn record(&self, r: &RequestRecord) {
        let host = r.host().unwrap_or("-");
        let upstream = r.upstream.map_or_else(|| "-".to_owned(), |u| u.to_string());
        tracing::info!(
            target: ACCESS_TARGET,
            client = %r.client,
            host = %host,
            method = %r.method,
            path = %r.path(),
            version = ?r.version,
            status = r.status.as_u16(),
            bytes = r.bytes,
            duration_ms = r.duration.as_secs_f64() * 1000.0,
            upstream = %upstream,
            route = %r.route().unwrap_or("-"),
            complete = r.complete,
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_starts_from_the_request_as_sent() {
        let req = Request::get("http://app.foo.bar:8080/x?y=1")
            .body(())
            .unwrap();
        let mut r = RequestRecord::start(&req, [10, 0, 0, 1].into());
        assert_eq!(r.host(), Some("app.foo.bar:8080"));
        assert_eq!(r.path(), "/x?y=1");
        r.complete(42, true);
        assert_eq!((r.bytes, r.complete), (42, true));
        let req = Request::get("/").header("host", "h").body(()).unwrap();
        let r = RequestRecord::start(&req, [10, 0, 0, 1].into());
        assert_eq!((r.host(), r.path(), r.route()), (Some("h"), "/", None));
    }

    #[test]
    fn a_record_keeps_nothing_of_the_buffer_the_head_was_parsed_from() {
        // As the HTTP/1 connection does: the head is split off its read buffer, and the
        // target and header values are slices of it.
        let mut read = bytes::BytesMut::with_capacity(8192);
        read.extend_from_slice(b"/x?y=1app.foo.bar");
        let head = read.split().freeze();
        let uri = http::Uri::from_maybe_shared(head.slice(..6)).unwrap();
        let host = HeaderValue::from_maybe_shared(head.slice(6..)).unwrap();
        drop(head);
        let req = Request::get(uri).header("host", host).body(()).unwrap();
        let r = RequestRecord::start(&req, [10, 0, 0, 1].into());
        assert!(!read.try_reclaim(8192), "the request shares the buffer");
        drop(req);
        // Only the record is left: the buffer can be reused in place.
        assert!(read.try_reclaim(8192), "the record shares the buffer");
        assert_eq!((r.host(), r.path()), (Some("app.foo.bar"), "/x?y=1"));
    }

    #[test]
    fn shown_headers_hide_credentials() {
        let req = Request::get("/")
            .header("authorization", "Bearer secret")
            .header("Cookie", "s=secret")
            .header("proxy-authorization", "Basic c2VjcmV0")
            .header("x-branchgate-bypass", "secret")
            .header("user-agent", "curl/8")
            .body(())
            .unwrap();
        let shown = shown_headers(req.headers());
        assert_eq!(shown.len(), 5);
        for (name, value) in shown.iter() {
            match name.as_str() {
                "user-agent" => assert_eq!(value, "curl/8"),
                _ => assert_eq!(value, HIDDEN, "{name}"),
            }
        }
    }
}
