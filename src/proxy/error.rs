//! Proxy errors and the one place that turns them into responses.

use std::time::Duration;

use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use super::body::ProxyBody;
use super::handler::Busy;
use super::upstream::ConnectError;
use crate::logging::AccessRecord;

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No `Host` header (or `:authority`), or one that is not a host name.
    #[error("request has no valid host")]
    BadHost,
    /// More than one `Host` header (RFC 9112 3.2).
    #[error("request has more than one Host header")]
    DuplicateHost,
    /// An absolute-form request target whose scheme is not http or https.
    #[error("request target has a scheme other than http or https")]
    BadScheme,
    /// The request target is longer than the limit.
    #[error(
        "request target is longer than {} bytes",
        super::handler::MAX_REQUEST_TARGET
    )]
    UriTooLong,
    /// The path has `.` or `..` segments (plain, percent-encoded, behind `\`
    /// or `;`), which an upstream would resolve outside the prefix that was routed.
    #[error("request path has dot segments")]
    DotSegments,
    /// The client stopped sending its request body.
    #[error("client sent no request body data for {0:?}")]
    ClientBodyTimeout(Duration),
    /// The request body was malformed (chunked framing, trailers) or cut short.
    #[error("request body is malformed")]
    ClientBody(#[source] hyper::Error),
    /// The upstream switched protocols though the request asked for no upgrade.
    #[error("upstream answered 101 to a request that asked for no upgrade")]
    UnexpectedUpgrade,
    /// No route matches the host and there is no default host.
    #[error("no route for this host")]
    NoHost,
    /// The host has routes, but none for this path.
    #[error("no route for this path")]
    NoPath,
    /// The route exists but has no upstream.
    #[error("route has no upstream")]
    NoUpstream,
    /// Every upstream refused or failed the connection.
    #[error("no upstream accepted a connection")]
    Connect(#[source] ConnectError),
    /// The upstream took none of the request body for this long.
    #[error("upstream took no request body data for {0:?}")]
    UpstreamNotReading(Duration),
    /// The upstream sent no response headers in time.
    #[error("upstream sent no response within {0:?}")]
    ResponseTimeout(Duration),
    /// The upstream closed or reset the connection before responding.
    #[error("upstream failed before responding")]
    Upstream(#[source] hyper::Error),
}

impl ProxyError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadHost
            | Self::DuplicateHost
            | Self::BadScheme
            | Self::DotSegments
            | Self::ClientBody(_) => StatusCode::BAD_REQUEST,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::ClientBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UnexpectedUpgrade => StatusCode::BAD_GATEWAY,
            Self::NoHost | Self::NoUpstream => StatusCode::SERVICE_UNAVAILABLE,
            Self::NoPath => StatusCode::NOT_FOUND,
            Self::Connect(ConnectError::Timeout(_))
            | Self::ResponseTimeout(_)
            | Self::UpstreamNotReading(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Connect(
                ConnectError::Io { .. } | ConnectError::Tls { .. } | ConnectError::Handshake { .. },
            )
            | Self::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether the upstream is at fault (logged as a warning).
    pub fn is_upstream(&self) -> bool {
        match self {
            Self::Connect(_)
            | Self::ResponseTimeout(_)
            | Self::UpstreamNotReading(_)
            | Self::Upstream(_) => true,
            Self::UnexpectedUpgrade => true,
            Self::BadHost
            | Self::DuplicateHost
            | Self::BadScheme
            | Self::UriTooLong
            | Self::DotSegments
            | Self::ClientBodyTimeout(_)
            | Self::ClientBody(_)
            | Self::NoHost
            | Self::NoPath
            | Self::NoUpstream => false,
        }
    }

    /// Whether the request leaves the client connection in doubt, so the
    /// answer closes it: the next bytes may not be where a request starts.
    pub fn closes(&self) -> bool {
        match self {
            Self::BadHost
            | Self::DuplicateHost
            | Self::BadScheme
            | Self::UriTooLong
            | Self::ClientBodyTimeout(_)
            | Self::ClientBody(_) => true,
            Self::DotSegments
            | Self::NoHost
            | Self::NoPath
            | Self::NoUpstream
            | Self::Connect(_)
            | Self::ResponseTimeout(_)
            | Self::UpstreamNotReading(_)
            | Self::Upstream(_)
            | Self::UnexpectedUpgrade => false,
        }
    }
}

/// Builds the response for an error: a small HTML page, as nginx answers.
pub fn error_response(
    err: &ProxyError,
    record: Option<AccessRecord>,
    busy: Busy,
) -> Response<ProxyBody> {
    let status = err.status();
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>branchgate</center>\r\n</body>\r\n</html>\r\n"
    );
    let record = record.map(|mut r| {
        r.status = code;
        r
    });
    let mut resp = Response::new(ProxyBody::full(body, record, busy));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if err.closes() {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
