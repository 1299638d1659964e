//! Proxy errors, each tagged with its [`Source`], which decides in one place
//! how it is logged; [`super::respond`] is the one place that renders them.

use std::time::Duration;

use std::net::SocketAddr;

use http::StatusCode;
use tracing::{debug, error, info, warn};

use crate::upstream::{ConnectError, RequestBodyError, UpstreamError};

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
        super::route::MAX_REQUEST_TARGET
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
    ClientBody(#[source] RequestBodyError),
    /// The upstream switched protocols though the request asked for no upgrade.
    #[error("upstream answered 101 to a request that asked for no upgrade")]
    UnexpectedUpgrade,
    /// No route matches the host and there is no default host.
    #[error("no route for this host")]
    NoHost,
    /// The route is served over HTTPS only (`HTTPS_METHOD=nohttp`).
    #[error("this host is served over HTTPS only")]
    HttpsOnly,
    /// The route is not served over HTTPS (`HTTPS_METHOD=nohttps`).
    #[error("this host is not served over HTTPS")]
    NotOverHttps,
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
    Upstream(#[source] UpstreamError),
    /// The client is not on the route's (or the branch domain's) allow list.
    #[error("client address {0} is not allowed")]
    NotAllowed(std::net::IpAddr),
    /// A wrong `X-Branchgate-Bypass` token.
    #[error("wrong bypass token")]
    WrongBypass,
    /// Too many failed logins from this client lately.
    #[error("too many failed logins; try again in a minute")]
    Throttled,
    /// The request body is larger than the route's `max_body`.
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    /// `VIRTUAL_DEST` produced a request target that is not a valid URI.
    #[error("rewriting the path for the upstream produced an invalid request target")]
    Rewrite,
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
            Self::NoHost | Self::NoUpstream | Self::HttpsOnly | Self::NotOverHttps => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::NoPath => StatusCode::NOT_FOUND,
            Self::NotAllowed(_) | Self::WrongBypass => StatusCode::FORBIDDEN,
            Self::Throttled => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Connect(ConnectError::Timeout(_))
            | Self::ResponseTimeout(_)
            | Self::UpstreamNotReading(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Connect(ConnectError::Io { .. } | ConnectError::Tls { .. })
            | Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Rewrite => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whose fault it is: decides how it is logged.
    pub fn source(&self) -> Source {
        match self {
            Self::Connect(_)
            | Self::ResponseTimeout(_)
            | Self::UpstreamNotReading(_)
            | Self::Upstream(_)
            | Self::UnexpectedUpgrade => Source::Upstream,
            Self::BadHost
            | Self::DuplicateHost
            | Self::BadScheme
            | Self::UriTooLong
            | Self::DotSegments
            | Self::ClientBodyTimeout(_)
            | Self::ClientBody(_)
            | Self::NoHost
            | Self::HttpsOnly
            | Self::NotOverHttps
            | Self::NoPath
            | Self::NoUpstream
            | Self::NotAllowed(_)
            | Self::WrongBypass
            | Self::Throttled
            | Self::BodyTooLarge(_) => Source::Client,
            Self::Rewrite => Source::Internal,
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
            | Self::HttpsOnly
            | Self::NotOverHttps
            | Self::NoPath
            | Self::NoUpstream
            | Self::Connect(_)
            | Self::ResponseTimeout(_)
            | Self::UpstreamNotReading(_)
            | Self::Upstream(_)
            | Self::UnexpectedUpgrade
            | Self::NotAllowed(_)
            | Self::WrongBypass
            | Self::Throttled
            | Self::BodyTooLarge(_)
            | Self::Rewrite => false,
        }
    }

    /// Logs the failure, once, at the level its source calls for:
    /// branchgate's own as errors, an upstream's as warnings, a client's
    /// that closes its connection as information, other refusals (no route,
    /// no upstream up) at debug.
    pub fn log(&self, client: SocketAddr) {
        let chain = crate::logging::Chain(self);
        match self.source() {
            Source::Internal => error!(error = %chain, %client, "internal error"),
            Source::Upstream => warn!(error = %chain, %client, "upstream error"),
            Source::Client if self.closes() => info!(error = %chain, %client, "client error"),
            Source::Client => debug!(error = %chain, %client, "request refused"),
        }
    }
}

/// Who a failure belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The request itself: malformed, unroutable, abandoned.
    Client,
    /// The upstream: refused, reset, too slow, or speaking out of turn.
    Upstream,
    /// branchgate itself.
    Internal,
}
