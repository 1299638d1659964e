//! Header rules applied to every proxied request and response, edited in
//! place on the incoming `HeaderMap` (no request is rebuilt). Used by the
//! forward phase ([`super::forward`]).

use http::header::{
    CONNECTION, CONTENT_LENGTH, COOKIE, FORWARDED, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::listener::{ConnInfo, Scheme};
use crate::tokens;

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`.
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Forwarded-Ssl`.
pub static X_FORWARDED_SSL: HeaderName = HeaderName::from_static("x-forwarded-ssl");
/// `X-Real-IP`.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Original-URI`.
pub static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// The httpoxy header (CVE-2016-5385); never forwarded.
static PROXY: HeaderName = HeaderName::from_static("proxy");
static X_FORWARDED_SCHEME: HeaderName = HeaderName::from_static("x-forwarded-scheme");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_REWRITE_URL: HeaderName = HeaderName::from_static("x-rewrite-url");
static TRUE_CLIENT_IP: HeaderName = HeaderName::from_static("true-client-ip");
static X_CLIENT_IP: HeaderName = HeaderName::from_static("x-client-ip");
static CF_CONNECTING_IP: HeaderName = HeaderName::from_static("cf-connecting-ip");

/// True when `token` appears in any `Connection` header.
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| tokens::lists(v.as_bytes(), token))
}

/// Headers that never cross the proxy, in bit order for [`scan`]. `Proxy`
/// is last: it is dropped from requests only (httpoxy).
static DROPPED: [&HeaderName; 8] = [
    &CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &TE,
    &TRAILER,
    &TRANSFER_ENCODING,
    &UPGRADE,
    &PROXY,
];
/// Request headers that tell an upstream where a request came from or which
/// path it "really" had, as frameworks read them (Rails, Symfony, Spring, IIS
/// URL rewrite, CDNs). Only a trusted downstream proxy may set them; from
/// anyone else they are dropped. Bit order follows [`DROPPED`].
static UNTRUSTED: [&HeaderName; 8] = [
    &FORWARDED,
    &X_FORWARDED_SCHEME,
    &X_FORWARDED_PREFIX,
    &X_ORIGINAL_URL,
    &X_REWRITE_URL,
    &TRUE_CLIENT_IP,
    &X_CLIENT_IP,
    &CF_CONNECTING_IP,
];
const CONNECTION_BIT: u32 = 1;
const TRANSFER_ENCODING_BIT: u32 = 1 << 5;
const UPGRADE_BIT: u32 = 1 << 6;
const PROXY_BIT: u32 = 1 << 7;
const HOP_BY_HOP: u32 = 0xff & !PROXY_BIT;
const UNTRUSTED_BITS: u32 = 0xff << 8;
/// Some header name holds a `_`.
const UNDERSCORE_BIT: u32 = 1 << 16;

/// `Content-Length` is present (requests only: it may need rewriting).
const CONTENT_LENGTH_BIT: u32 = 1 << 17;

/// The forwarding headers branchgate sets on every request, in the order the
/// upstream leg writes them (nginx-proxy's). A request's own copies are
/// taken out of its map (read first with `--trust-downstream-proxy`), and
/// the values go beside the map in a [`Forwarding`]. Bit order follows
/// [`UNTRUSTED`], from bit 18.
static FORWARDING: [&HeaderName; 7] = [
    &X_REAL_IP,
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &X_FORWARDED_PORT,
    &X_FORWARDED_SSL,
    &X_ORIGINAL_URI,
];
const FORWARDING_SHIFT: u32 = 18;
const FORWARDING_BITS: u32 = 0x7f << FORWARDING_SHIFT;
const XFF_BIT: u32 = 1 << (FORWARDING_SHIFT + 1);
const XF_PROTO_BIT: u32 = 1 << (FORWARDING_SHIFT + 2);
const XF_HOST_BIT: u32 = 1 << (FORWARDING_SHIFT + 3);
const XF_PORT_BIT: u32 = 1 << (FORWARDING_SHIFT + 4);

/// The bit of a [`DROPPED`] or [`UNTRUSTED`] name (in the order of their
/// chained index), of a [`FORWARDING`] name (from bit 18), or of
/// `Content-Length`; 0 for any other. The length picks the candidates, so
/// most names cost one comparison of two integers.
fn known_bit(name: &str) -> u32 {
    let bit = |i: u32| 1 << i;
    match name.len() {
        2 if name == "te" => bit(3),
        5 if name == "proxy" => bit(7),
        7 if name == "trailer" => bit(4),
        7 if name == "upgrade" => bit(6),
        9 if name == "forwarded" => bit(8),
        9 if name == "x-real-ip" => bit(18),
        10 if name == "connection" => bit(0),
        10 if name == "keep-alive" => bit(1),
        11 if name == "x-client-ip" => bit(14),
        13 if name == "x-rewrite-url" => bit(12),
        14 if name == "x-original-url" => bit(11),
        14 if name == "true-client-ip" => bit(13),
        14 if name == "content-length" => CONTENT_LENGTH_BIT,
        14 if name == "x-original-uri" => bit(24),
        15 if name == "x-forwarded-for" => bit(19),
        15 if name == "x-forwarded-ssl" => bit(23),
        16 if name == "x-forwarded-host" => bit(21),
        16 if name == "x-forwarded-port" => bit(22),
        17 if name == "x-forwarded-proto" => bit(20),
        16 if name == "proxy-connection" => bit(2),
        16 if name == "cf-connecting-ip" => bit(15),
        17 if name == "transfer-encoding" => bit(5),
        18 if name == "x-forwarded-scheme" => bit(9),
        18 if name == "x-forwarded-prefix" => bit(10),
        _ => 0,
    }
}

/// One pass over the header names, without hashing: a bit per [`DROPPED`],
/// [`UNTRUSTED`] and [`FORWARDING`] name present, [`CONTENT_LENGTH_BIT`],
/// and with `underscores` also [`UNDERSCORE_BIT`]. Most messages carry none of them,
/// and then nothing else is done.
fn scan(headers: &HeaderMap, underscores: bool) -> u32 {
    let mut found = 0;
    for name in headers.keys() {
        let name = name.as_str();
        match known_bit(name) {
            0 if underscores && name.as_bytes().contains(&b'_') => found |= UNDERSCORE_BIT,
            bit => found |= bit,
        }
    }
    found
}

/// Removes the headers flagged in `found`, and the headers that `Connection`
/// names.
fn remove_found(headers: &mut HeaderMap, found: u32) {
    if found & CONNECTION_BIT != 0 {
        // The usual tokens name nothing further to remove. (A field that is
        // just `keep-alive` or `close`, nearly every message's, never gets
        // here: the HTTP/1 readers keep it out of the map.)
        let usual = |t: &[u8]| {
            [&b"close"[..], b"keep-alive", b"upgrade"]
                .iter()
                .any(|k| t.eq_ignore_ascii_case(k))
        };
        let mut named: Vec<HeaderName> = Vec::new();
        for value in &headers.get_all(CONNECTION) {
            for token in tokens::elements(value.as_bytes()) {
                if !usual(token)
                    && let Ok(name) = HeaderName::from_bytes(token)
                {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    // Only the names found: usually one (`Connection`), never all of them.
    let mut bits = found & (HOP_BY_HOP | PROXY_BIT | UNTRUSTED_BITS | FORWARDING_BITS);
    while bits != 0 {
        let i = bits.trailing_zeros() as usize;
        let name = match i {
            0..8 => DROPPED[i],
            8..16 => UNTRUSTED[i - 8],
            _ => FORWARDING[i - FORWARDING_SHIFT as usize],
        };
        headers.remove(name);
        bits &= bits - 1;
    }
    if found & UNDERSCORE_BIT != 0 {
        let named: Vec<HeaderName> = headers
            .keys()
            .filter(|n| n.as_str().contains('_'))
            .cloned()
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
}

/// What a request's headers may keep.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeaderRules {
    /// `--trust-downstream-proxy`: keep the forwarding headers a client sent.
    pub trust: bool,
    /// `--allow-underscore-headers`: keep header names with `_`.
    pub underscores: bool,
}

/// The values of the [`FORWARDING`] headers for one request, in that order.
/// They stay out of the request's map: the upstream leg writes them after
/// the map's fields ([`Forwarding::fields`]). Setting them in the map cost a
/// hashed insert each, about 2 000 instructions per request for the seven.
#[derive(Debug)]
pub struct Forwarding([HeaderValue; 7]);

impl Forwarding {
    /// Every field, name and value, in the order they go upstream.
    pub fn fields(&self) -> [(&HeaderName, &HeaderValue); 7] {
        std::array::from_fn(|i| (FORWARDING[i], &self.0[i]))
    }

    /// The value set for `name`, if it is one of the [`FORWARDING`] headers.
    #[cfg(test)]
    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        FORWARDING
            .iter()
            .position(|n| *n == name)
            .map(|i| &self.0[i])
    }
}

/// What [`prepare_request`] decided besides editing the map.
#[derive(Debug)]
pub struct Prepared {
    /// The request asks for a protocol upgrade, and it is forwarded.
    pub upgrade: bool,
    /// The forwarding headers to write after the map's.
    pub forwarding: Forwarding,
}

/// Rewrites a request's headers for the upstream, as nginx-proxy does
/// (`Content-Length` made canonical from `body_length`), says whether the
/// request asks for a protocol upgrade (kept only when `upgradable`, i.e.
/// HTTP/1.1: `Upgrade` and `Connection: upgrade` are then forwarded, every
/// other hop-by-hop header still goes), and returns the forwarding headers,
/// which leave the map (see [`Forwarding`]).
///
/// With `trust` (`--trust-downstream-proxy`), incoming `X-Forwarded-Proto`,
/// `-Host` and `-Port` are kept (their first value) and the client IP is
/// appended to `X-Forwarded-For`; without it they are overwritten, and the
/// other [`UNTRUSTED`] forwarding headers dropped, so a client cannot spoof
/// them. `X-Real-IP` and `X-Original-URI` are always branchgate's. Header
/// names with `_` are dropped unless `underscores` (nginx's
/// `underscores_in_headers`): servers that read `_` as `-` would take
/// `X_Forwarded_For` for the real one.
pub fn prepare_request(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    host: &HeaderValue,
    original_uri: HeaderValue,
    rules: HeaderRules,
    upgradable: bool,
    body_length: Option<u64>,
) -> Prepared {
    let HeaderRules { trust, underscores } = rules;
    // Each map operation hashes a name: this path does as few as it can.
    let mut found = scan(headers, !underscores);
    if found & CONTENT_LENGTH_BIT != 0 {
        canonical_content_length(headers, body_length);
        found &= !CONTENT_LENGTH_BIT;
    }
    if trust {
        found &= !UNTRUSTED_BITS;
    }
    let both = CONNECTION_BIT | UPGRADE_BIT;
    let upgrade = (upgradable && found & both == both && connection_has(headers, "upgrade"))
        .then(|| headers.get(UPGRADE).cloned())
        .flatten();
    let is_upgrade = upgrade.is_some();
    let forwarding = forwarding(headers, found, conn, host, original_uri, trust);
    if found != 0 {
        remove_found(headers, found);
    }
    if let Some(protocol) = upgrade {
        headers.insert(UPGRADE, protocol);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // The host that was routed is the host forwarded: for absolute-form and
    // HTTP/2 requests the URI's authority replaces `Host` (RFC 9112 3.2.2).
    headers.insert(HOST, host.clone());
    Prepared {
        upgrade: is_upgrade,
        forwarding,
    }
}

/// The [`FORWARDING`] values: branchgate's own, or with `trust` what a
/// downstream proxy set (read from the map before its copies go; `found`
/// says which are there, so an absent one costs no lookup).
fn forwarding(
    headers: &HeaderMap,
    found: u32,
    conn: &ConnInfo,
    host: &HeaderValue,
    original_uri: HeaderValue,
    trust: bool,
) -> Forwarding {
    let sent = |bit: u32, name: &HeaderName| {
        (trust && found & bit != 0)
            .then(|| headers.get(name).cloned())
            .flatten()
    };
    // Every earlier hop, from every X-Forwarded-For line, then this client.
    let xff = match trust && found & XFF_BIT != 0 {
        false => conn.client_ip.clone(),
        true => {
            let mut chain = Vec::new();
            for prev in headers.get_all(&X_FORWARDED_FOR) {
                chain.extend_from_slice(prev.as_bytes());
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(conn.client_ip.as_bytes());
            HeaderValue::from_bytes(&chain).unwrap_or_else(|_| conn.client_ip.clone())
        }
    };
    let proto = sent(XF_PROTO_BIT, &X_FORWARDED_PROTO).unwrap_or_else(|| conn.scheme.header());
    let ssl = match proto.as_bytes() == Scheme::Https.as_str().as_bytes() {
        true => "on",
        false => "off",
    };
    Forwarding([
        conn.client_ip.clone(),
        xff,
        proto,
        sent(XF_HOST_BIT, &X_FORWARDED_HOST).unwrap_or_else(|| host.clone()),
        sent(XF_PORT_BIT, &X_FORWARDED_PORT).unwrap_or_else(|| conn.local_port.clone()),
        HeaderValue::from_static(ssl),
        original_uri,
    ])
}

/// Writes `Content-Length` in canonical form when it is not (`007`, `5, 5`):
/// hyper reads such values leniently, an upstream may not. `exact` is the
/// length hyper framed the body by.
fn canonical_content_length(headers: &mut HeaderMap, exact: Option<u64>) {
    let Some(value) = headers.get(CONTENT_LENGTH) else {
        return;
    };
    let v = value.as_bytes();
    let canonical =
        !v.is_empty() && v.iter().all(u8::is_ascii_digit) && (v[0] != b'0' || v.len() == 1);
    if !canonical && let Some(n) = exact {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
}

/// Joins the `cookie` fields an HTTP/2 client may split (RFC 9113 8.2.3) into
/// the single `Cookie` header an HTTP/1.1 upstream expects.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

/// Rewrites an upstream response's headers for the client. A `101` keeps its
/// `Upgrade` and `Connection: upgrade`.
///
/// A response framed by both `Transfer-Encoding` and `Content-Length` loses
/// the `Content-Length` (RFC 9112 6.3): the body was read as chunked, and
/// forwarding the length would cut it or leave the client waiting.
pub fn prepare_response(headers: &mut HeaderMap, switching: bool) {
    let upgrade = if switching {
        headers.remove(UPGRADE)
    } else {
        None
    };
    let found = scan(headers, false) & HOP_BY_HOP;
    if found & TRANSFER_ENCODING_BIT != 0 {
        headers.remove(CONTENT_LENGTH);
    }
    if found != 0 {
        remove_found(headers, found);
    }
    if let Some(protocol) = upgrade {
        headers.insert(UPGRADE, protocol);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

#[cfg(test)]
mod tests;
