//! The route phase: a request and the snapshot in force in, a route or a
//! synthetic answer out. Synchronous, run under the table guard: the request
//! target and host are checked, the host normalised on the stack and looked
//! up with the path.

use std::sync::Arc;

use http::header::HOST;
use http::uri::Scheme;
use http::{HeaderValue, Request};

use super::error::ProxyError;
use super::pages::host_port;
use super::path::has_dot_segment;
use super::respond::Answer;
use crate::routes::{HostMatch, Lookup, MAX_HOST_LEN, PathRoute, Snapshot, normalize_host};
use crate::upstream::Pool;

/// The longest request target (path and query) accepted, as nginx's default
/// `large_client_header_buffers 4 8k` allows: a longer one answers 414.
pub const MAX_REQUEST_TARGET: usize = 8 * 1024;

/// The host `req` names as sent, unnormalised: `:authority` (HTTP/2,
/// absolute form) wins over `Host`. For checks made before routing (the
/// dashboard host, the branch gate's pages); routing itself also refuses
/// two `Host` lines.
pub fn raw_host<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req.headers().get(HOST)?.to_str().ok(),
    }
}

/// Where a request goes, borrowed from the snapshot (and the host name from
/// the caller's buffer).
#[derive(Debug)]
pub struct Routed<'a> {
    /// The route.
    pub route: &'a PathRoute,
    /// Its live pool.
    pub pool: &'a Arc<Pool>,
    /// Which rule found the host.
    pub how: HostMatch,
    /// The host the request named, as sent (`Host`, or `:authority`).
    pub host: HeaderValue,
    /// That host normalised: lower case, no port, no trailing dot.
    pub name: &'a str,
}

/// Routes `req` through `snapshot`, normalising its host into `buf`. The
/// route borrows only the snapshot and `buf`, so the request can be edited
/// for its upstream while it is held.
pub fn route<'a, 't, 's: 'a + 't, 'r: 'a, 'b: 't, B>(
    snapshot: &'s Snapshot,
    req: &'r Request<B>,
    buf: &'b mut [u8; MAX_HOST_LEN],
) -> Result<Routed<'t>, Answer<'a>> {
    let uri = req.uri();
    if uri
        .path_and_query()
        .is_some_and(|pq| pq.as_str().len() > MAX_REQUEST_TARGET)
    {
        return Err(ProxyError::UriTooLong.into());
    }
    if let Some(scheme) = uri.scheme()
        && *scheme != Scheme::HTTP
        && *scheme != Scheme::HTTPS
    {
        return Err(ProxyError::BadScheme.into());
    }
    // Two `Host` lines leave the host in doubt (RFC 9112 3.2): refuse rather than pick.
    let mut hosts = req.headers().get_all(HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::DuplicateHost.into());
    }
    // HTTP/2 and absolute-form requests carry the host in the URI, and it wins over `Host`.
    let host = match uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadHost)?,
        None => host_header.ok_or(ProxyError::BadHost)?.clone(),
    };
    let name = host
        .to_str()
        .ok()
        .and_then(|h| normalize_host(h, buf))
        .ok_or(ProxyError::BadHost)?;
    if has_dot_segment(uri.path()) {
        return Err(ProxyError::DotSegments.into());
    }
    // The port the client named, for links on the branch pages.
    let port = || {
        let named = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| host_header?.to_str().ok());
        named.and_then(host_port)
    };
    match snapshot.table().lookup(name, uri.path()) {
        Lookup::Found(route, how) => Ok(Routed {
            route,
            pool: snapshot.pool(route.pool),
            how,
            host,
            name,
        }),
        Lookup::NoPath => Err(ProxyError::NoPath.into()),
        Lookup::NoHost => Err(ProxyError::NoHost.into()),
        Lookup::Matrix(index) => Err(Answer::Matrix {
            index,
            port: port(),
        }),
        Lookup::MissingBranch { index, role, slug } => Err(Answer::MissingBranch {
            index,
            role,
            slug: slug.into(),
            port: port(),
        }),
    }
}

#[cfg(test)]
mod tests;
