//! branchgate's own HTTP/1 request reader (`proxy::h1`, the body by
//! `upstream::h1::Decoder`): any bytes from a client, read in any pieces,
//! never panic, and read the same whether they arrive at once or a few bytes
//! at a time.
//!
//! The first input byte picks the piece size (1 to 64 bytes) and the head
//! limit (64 KiB, or 64 bytes to reach the limit's edges); the rest is what
//! the client sent. Whole and in pieces must give the same requests (method,
//! target, version, header fields, body bytes, the connection's keep-alive)
//! and the same end: a refusal with the same status, a connection left
//! waiting for more, or one given over to an upgrade. No request holds more
//! body bytes than came.
#![no_main]

use branchgate::proxy::h1::parse_request;
use branchgate::upstream::h1::{Decoded, Decoder};
use bytes::BytesMut;
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
struct Request {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Vec<u8>,
    keep_alive: bool,
}

#[derive(Debug, PartialEq)]
enum End {
    /// Refused, with the status the client would get.
    Refused(StatusCode),
    /// Waiting for more (inside a head or a body).
    Incomplete,
    /// Not kept alive after the last request.
    Closed,
    /// An upgrade or tunnel: what follows is not HTTP.
    Upgraded,
}

/// Reads `input` fed `piece` bytes at a time, as a connection does.
fn read(input: &[u8], piece: usize, limit: usize) -> (Vec<Request>, End) {
    let mut buf = BytesMut::new();
    let mut rest = input;
    let mut feed = |buf: &mut BytesMut| -> bool {
        if rest.is_empty() {
            return false;
        }
        let n = piece.min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        true
    };
    let mut requests = Vec::new();
    loop {
        let head = loop {
            match parse_request(&mut buf, limit) {
                Err(e) => return (requests, End::Refused(e.status())),
                Ok(Some(head)) => break head,
                Ok(None) if feed(&mut buf) => {}
                Ok(None) => return (requests, End::Incomplete),
            }
        };
        let mut decoder = Decoder::request(head.framing);
        let mut body = Vec::new();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(d)) => {
                    assert!(!d.is_empty(), "an empty data frame");
                    body.extend_from_slice(&d);
                }
                Ok(Decoded::End) => break,
                Ok(Decoded::More) if feed(&mut buf) => {}
                Ok(Decoded::More) => return (requests, End::Incomplete),
                Err(_) => return (requests, End::Refused(StatusCode::BAD_REQUEST)),
            }
        }
        assert!(body.len() <= input.len());
        let (keep_alive, upgrade) = (head.keep_alive, head.upgrade);
        requests.push(Request {
            method: head.method,
            uri: head.uri,
            version: head.version,
            headers: head.headers,
            body,
            keep_alive,
        });
        if upgrade {
            return (requests, End::Upgraded);
        }
        if !keep_alive {
            return (requests, End::Closed);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first & 63) + 1;
    let limit = if first & 64 != 0 { 64 } else { 64 * 1024 };
    let whole = read(input, input.len().max(1), limit);
    let pieces = read(input, piece, limit);
    assert_eq!(whole, pieces, "piece size {piece}, limit {limit}");
});
