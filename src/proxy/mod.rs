//! The proxy: requests in, answers out. Reads the published
//! [`Snapshot`](crate::routes::Snapshot); forwards through
//! [`crate::upstream`].
//!
//! ```text
//! listener (server) ─▶ handler: route ─▶ policy ─▶ forward ─▶ upstream
//!                                └── respond (every synthetic answer) ──┘
//!                      body end ─▶ request record ─▶ sink (access log)
//! ```
//!
//! [`server`] accepts on a worker's listeners under the connection cap
//! ([`conns`]); [`handler`] runs the phases [`route`], [`policy`],
//! [`forward`] and [`respond`]; [`body`] streams the answer and completes
//! the [`record`].

pub mod body;
pub mod conns;
pub mod cors;
pub mod dashboard;
pub mod error;
pub mod forward;
pub mod gate;
pub mod h1;
pub mod handler;
pub mod headers;
pub mod listener;
pub mod pages;
pub mod path;
pub mod policy;
pub mod proto;
pub mod record;
pub mod respond;
pub mod route;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use crate::routes::Reader;

/// Settings the handler reads on every request.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Keep incoming `X-Forwarded-*` (append to `X-Forwarded-For`).
    pub trust_downstream_proxy: bool,
    /// How long to wait for an upstream's response headers.
    pub response_timeout: Duration,
    /// How long a connection may wait for a complete request head, from
    /// accept or the end of the previous response.
    pub client_header_timeout: Duration,
    /// Longest pause between two reads of a request body.
    pub client_body_timeout: Duration,
    /// Longest wait for a client to take response bytes.
    pub client_send_timeout: Duration,
    /// Longest pause between two reads of an upstream response body.
    pub upstream_read_timeout: Duration,
    /// Forward request headers whose names contain `_`.
    pub allow_underscore_headers: bool,
    /// Origins that `branchgate.cors` routes allow.
    pub cors: cors::CorsPolicy,
    /// The HTTP→HTTPS redirect status for methods other than GET and HEAD.
    pub non_get_redirect: http::StatusCode,
}

/// State every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The published snapshot, read-only.
    pub routes: Reader,
    /// Handler settings.
    pub settings: ProxySettings,
    /// Every open client connection, under the cap.
    pub conns: Arc<conns::Conns>,
    /// Where every request's record goes.
    pub sink: Box<dyn record::Sink>,
    /// Certificates and the TLS configuration, unless `--https off`.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// ACME's challenge answers, while ACME runs.
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// `--dashboard-host`: the admin side on the main listeners.
    pub dashboard: Option<dashboard::Dashboard>,
    /// Allow lists, the branch gate, Basic auth.
    pub access: crate::guard::Access,
}
