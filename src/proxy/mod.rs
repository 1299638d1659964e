//! The proxy: listeners accept connections ([`server`]), the handler routes
//! each request through the current route table ([`handler`]) to a pooled
//! upstream connection ([`upstream`]).

pub mod body;
pub mod cors;
pub mod error;
pub mod handler;
pub mod headers;
pub mod pages;
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
    /// How long a client may take to send request headers (and may stay idle
    /// between keep-alive requests).
    pub client_header_timeout: Duration,
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
}
