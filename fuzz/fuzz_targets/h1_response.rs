//! branchgate's own HTTP/1 response reader (`upstream::h1`): any bytes from
//! an upstream, read in any pieces, never panic, and read the same whether
//! they arrive at once or a few bytes at a time.
//!
//! The first input byte picks the piece size (1 to 32 bytes) and the method
//! (GET or HEAD); the rest is what the upstream sent. Whole and in pieces
//! must give the same outcome: the same status and header fields, the same
//! body bytes, a refusal in both, and the same bytes left past the response
//! (which a reused connection would otherwise take for the next one). The
//! body never holds more bytes than came.
#![no_main]

use branchgate::upstream::h1::{Decoded, Decoder, parse_head};
use bytes::BytesMut;
use http::{HeaderMap, Method, StatusCode};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Outcome {
    Read {
        status: StatusCode,
        headers: HeaderMap,
        body: Vec<u8>,
        left: usize,
    },
    /// Refused (which error may name an earlier byte in pieces).
    Refused,
    /// The input ended inside a head.
    Incomplete,
}

/// Reads `input` fed `piece` bytes at a time, as the exchange does.
fn read(input: &[u8], piece: usize, method: &Method) -> Outcome {
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
    let head = loop {
        match parse_head(&mut buf, method, 64 * 1024) {
            Err(_) => return Outcome::Refused,
            Ok(Some(head)) if head.status.is_informational() && head.status != 101 => {}
            Ok(Some(head)) => break head,
            Ok(None) => {
                if !feed(&mut buf) {
                    return Outcome::Incomplete;
                }
            }
        }
    };
    let mut decoder = Decoder::new(head.framing);
    let mut body = Vec::new();
    loop {
        let decoded = match decoder.decode(&mut buf) {
            Ok(Decoded::More) if feed(&mut buf) => continue,
            Ok(Decoded::More) => decoder.eof(),
            other => other,
        };
        match decoded {
            Ok(Decoded::Data(d)) => {
                assert!(!d.is_empty(), "an empty data frame");
                body.extend_from_slice(&d);
            }
            Ok(Decoded::End) => break,
            Ok(Decoded::More) => unreachable!("eof() never asks for more"),
            Err(_) => return Outcome::Refused,
        }
    }
    assert!(body.len() <= input.len());
    Outcome::Read {
        status: head.status,
        headers: head.headers,
        body,
        left: buf.len() + rest.len(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first & 31) + 1;
    let method = if first & 32 != 0 { Method::HEAD } else { Method::GET };
    let whole = read(input, input.len().max(1), &method);
    let pieces = read(input, piece, &method);
    assert_eq!(whole, pieces, "piece size {piece}");
});
