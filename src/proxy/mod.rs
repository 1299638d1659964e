//! The proxy: listeners accept connections ([`server`]), the handler routes
//! each request through the current route table ([`handler`]) to a pooled
//! upstream connection ([`upstream`]).

pub mod body;
pub mod conns;
pub mod cors;
pub mod error;
pub mod handler;
pub mod headers;
pub mod pages;
pub mod path;
pub mod server;
mod tls_client;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::routes::RouteTable;

/// Settings the handler reads on every request.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Keep incoming `X-Forwarded-*` (append to `X-Forwarded-For`).
    pub trust_downstream_proxy: bool,
    /// Write an access-log line per request.
    pub access_log: bool,
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
}

/// State every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The published route table.
    pub table: Arc<ArcSwap<RouteTable>>,
    /// Handler settings.
    pub settings: ProxySettings,
    /// Every open client connection, under the cap.
    pub conns: Arc<conns::Conns>,
}
