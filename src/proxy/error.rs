//! Proxy errors and the one place that turns them into responses.

use std::time::Duration;

use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use super::body::ProxyBody;
use super::upstream::ConnectError;
use crate::logging::AccessRecord;

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No `Host` header (or `:authority`), or one that is not a host name.
    #[error("request has no valid host")]
    BadHost,
    /// The path has `.` or `..` segments (plain or percent-encoded), which an
    /// upstream would resolve outside the prefix that was routed.
    #[error("request path has dot segments")]
    DotSegments,
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
            Self::BadHost | Self::DotSegments => StatusCode::BAD_REQUEST,
            Self::NoHost | Self::NoUpstream => StatusCode::SERVICE_UNAVAILABLE,
            Self::NoPath => StatusCode::NOT_FOUND,
            Self::Connect(ConnectError::Timeout(_)) | Self::ResponseTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::Connect(
                ConnectError::Io { .. } | ConnectError::Tls { .. } | ConnectError::Handshake { .. },
            )
            | Self::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Builds the response for an error: a small HTML page, as nginx answers.
pub fn error_response(err: &ProxyError, record: Option<AccessRecord>) -> Response<ProxyBody> {
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
    let mut resp = Response::new(ProxyBody::full(body, record));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if matches!(err, ProxyError::BadHost) {
        // A malformed request leaves the connection in doubt: close it.
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
