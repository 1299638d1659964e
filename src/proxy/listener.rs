//! What a listener is and what a connection knows about where it came in:
//! the [`Scheme`] a listener serves and the per-connection [`ConnInfo`].

use std::net::{IpAddr, SocketAddr};

use http::HeaderValue;

/// The scheme a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP/1.1 and h2c.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    /// The scheme as a header value (`X-Forwarded-Proto`).
    pub fn header(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bound socket and the scheme it serves.
#[derive(Debug)]
pub struct Listener {
    /// The socket, bound and listening (non-blocking).
    pub socket: std::net::TcpListener,
    /// What it serves.
    pub scheme: Scheme,
}

/// Per-connection values, computed once at accept so requests only clone them.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's IP as a header value (`X-Real-IP`, `X-Forwarded-For`).
    pub client_ip: HeaderValue,
    /// The port the client connected to (`X-Forwarded-Port`).
    pub local_port: HeaderValue,
    /// The listener's scheme (`X-Forwarded-Proto`).
    pub scheme: Scheme,
}

impl ConnInfo {
    /// Describes a connection accepted on `local` from `peer`.
    pub fn new(peer: SocketAddr, local: SocketAddr, scheme: Scheme) -> Self {
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        Self {
            peer: SocketAddr::new(ip, peer.port()),
            client_ip: HeaderValue::from_str(&ip.to_string()).expect("an IP is a valid header"),
            local_port: HeaderValue::from(local.port()),
            scheme,
        }
    }
}
