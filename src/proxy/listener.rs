//! What a listener is and what a connection knows about where it came in:
//! the [`Scheme`] a listener serves and the per-connection [`ConnInfo`].

use std::cell::RefCell;
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
    /// Describes a connection accepted from `peer` on a listener whose port,
    /// as a header value, is `local_port` (built once per listener: a clone
    /// is a reference count, where building it allocated per connection).
    pub fn new(peer: SocketAddr, local_port: HeaderValue, scheme: Scheme) -> Self {
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        Self {
            peer: SocketAddr::new(ip, peer.port()),
            client_ip: LAST_CLIENT.with(|last| last.value(ip)),
            local_port,
            scheme,
        }
    }
}

thread_local! {
    /// The client address a connection on this worker thread came from last.
    static LAST_CLIENT: LastClient = const { LastClient(RefCell::new(None)) };
}

/// The last client address and its header value: connections come in runs
/// from one address (a browser opens several, a NAT, a load balancer or
/// Docker's proxy sends all of them), and then the value is a reference
/// count instead of an allocation and a validated copy (about 350
/// instructions, 1 % of a `Connection: close` request).
struct LastClient(RefCell<Option<(IpAddr, HeaderValue)>>);

impl LastClient {
    fn value(&self, ip: IpAddr) -> HeaderValue {
        let mut last = self.0.borrow_mut();
        match &*last {
            Some((seen, value)) if *seen == ip => value.clone(),
            _ => {
                let value = ip_header(ip);
                *last = Some((ip, value.clone()));
                value
            }
        }
    }
}

/// `ip` as a header value. IPv4 (nearly every client) is written by hand:
/// through `Display` it cost about 1 500 instructions per connection, a
/// measurable part of a `Connection: close` request.
fn ip_header(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).expect("an IP is a valid header");
    };
    let mut out = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out[n] = b'.';
            n += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = match octet {
            100.. => 0,
            10.. => 1,
            _ => 2,
        };
        for d in &digits[skip..] {
            out[n] = b'0' + d;
            n += 1;
        }
    }
    HeaderValue::from_bytes(&out[..n]).expect("digits and dots are a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_address_seen_last_gets_its_own_value() {
        let port = HeaderValue::from_static("80");
        let info = |ip: &str| {
            let peer = SocketAddr::new(ip.parse().unwrap(), 40000);
            ConnInfo::new(peer, port.clone(), Scheme::Http).client_ip
        };
        let first = info("10.0.0.1");
        let again = info("10.0.0.1");
        assert_eq!(again, "10.0.0.1");
        // The same bytes, not a new copy: the value was reused.
        assert_eq!(first.as_bytes().as_ptr(), again.as_bytes().as_ptr());
        let other = info("10.0.0.2");
        assert_eq!(other, "10.0.0.2");
        assert_ne!(first.as_bytes().as_ptr(), other.as_bytes().as_ptr());
        assert_eq!(info("::ffff:10.0.0.2"), "10.0.0.2");
        assert_eq!(info("2001:db8::7"), "2001:db8::7");
        assert_eq!(info("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn ip_headers_read_as_display_writes_them() {
        let mut ips: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "127.0.0.1",
            "::1",
            "2001:db8::7",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        // Every octet value in every position.
        ips.extend((0..=255u8).map(|o| IpAddr::from([o, 255 - o, o / 3, o.wrapping_mul(7)])));
        for ip in ips {
            assert_eq!(ip_header(ip).to_str().unwrap(), ip.to_string());
        }
    }
}
