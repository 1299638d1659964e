//! `--dashboard-host`: the dashboard and admin API on the main listeners
//! for one host, behind the same token and login as the admin listener.
//! Over HTTP it redirects to HTTPS when the host has a certificate there,
//! as any route does, so the token and the session cookie travel
//! encrypted (the cookie is then `Secure`). With ACME on, the host gets a
//! certificate as a routed host would.

use std::sync::Arc;

use http::header::CONNECTION;
use http::{HeaderValue, Request, Response};
use http_body::Body as _;

use super::body::ClientBody;
use super::body::ProxyBody;
use super::handler::{Busy, http01, policy_context};
use super::listener::Scheme;
use super::policy::scheme_rule;
use super::record::RequestRecord;
use super::respond::respond;
use super::route::raw_host;
use crate::admin::Core;
use crate::routes::{MAX_HOST_LEN, Policy, normalize_host};

/// The host, and the admin side it serves.
#[derive(Debug)]
pub struct Dashboard {
    /// Lower case, no port.
    pub host: Box<str>,
    /// Shared with the admin listener.
    pub core: Arc<Core>,
}

impl Dashboard {
    /// Whether `req` names the dashboard's host.
    pub fn wants<B>(&self, req: &Request<B>) -> bool {
        let Some(raw) = raw_host(req) else {
            return false;
        };
        // Most requests are for other hosts: a prefix check before any copy.
        if !raw
            .get(..self.host.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(&self.host))
        {
            return false;
        }
        let mut buf = [0; MAX_HOST_LEN];
        normalize_host(raw, &mut buf) == Some(&*self.host)
    }
}

/// Answers a request [`Dashboard::wants`]: the HTTPS redirect, or the admin
/// side's answer.
pub async fn serve(
    req: Request<ClientBody>,
    mut record: RequestRecord,
    busy: Busy,
) -> Response<ProxyBody> {
    let connection = busy.connection();
    let shared = &connection.shared;
    let Some(dashboard) = &shared.dashboard else {
        unreachable!("called for a request the dashboard wants");
    };
    let scheme = connection.info.scheme;
    let peer = connection.info.peer;
    let cx = policy_context(shared, scheme, peer.ip());
    // Its own certificate's HTTP-01 challenge first, then HTTPS.
    let early = http01(shared, &req, false).or_else(|| {
        scheme_rule(&Policy::default(), &req, &dashboard.host, &cx)
            .err()
            .map(|answer| respond(answer, false))
    });
    if let Some(reply) = early {
        record.status = reply.status;
        return reply.into_response(|body| ProxyBody::full(body, record, busy));
    }
    let core = dashboard.core.clone();
    let unread = !req.body().is_end_stream();
    let resp = core.serve(peer, scheme == Scheme::Https, req).await;
    record.status = resp.status();
    let (mut parts, body) = resp.into_parts();
    if unread {
        // A body the admin side did not read whole: close rather than
        // skip it and read on (see the handler's `close_if_unread`).
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Response::from_parts(parts, ProxyBody::admin(body, record, busy))
}
