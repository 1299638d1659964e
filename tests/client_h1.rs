//! The client leg's own HTTP/1 connection (src/proxy/h1/serve.rs) over raw
//! sockets against the real binary: what a client sees of `Expect:
//! 100-continue`, pipelined requests with bodies, HTTP/1.0 keep-alive, a
//! streamed response, and a client that leaves mid-request. Framing and
//! smuggling rows are in tests/smuggling.rs, limits and timeouts in
//! tests/hardening.rs.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::ProxyProcess;
use support::proxy::route_toml;
use support::raw::{RawBackend, exchange, read_until_closed};

const WAIT: Duration = Duration::from_secs(5);

async fn proxy(b: &RawBackend) -> ProxyProcess {
    ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--access-log", "off"],
    )
    .await
}

/// Reads from `s` until `want` has arrived (or fails after [`WAIT`]).
async fn read_until(s: &mut TcpStream, want: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(&out).contains(want) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {want:?}: {:?}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {want:?} in {WAIT:?}: {:?}",
            String::from_utf8_lossy(&out)
        )
    });
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn expect_100_continue_is_answered_once_the_body_is_wanted() {
    let b = RawBackend::spawn().await;
    let p = proxy(&b).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: s.foo.bar\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    // Nothing of the body yet: the interim answer comes first, alone.
    let interim = read_until(&mut s, "\r\n\r\n").await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    s.write_all(b"GET /next HTTP/1.1\r\nHost: s.foo.bar\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let ex = read_until_closed(&mut s, WAIT).await;
    assert!(ex.closed, "{:?}", ex.text);
    assert_eq!(ex.statuses(), [200, 200], "{:?}", ex.text);
    let reqs = b.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].body, b"hello");
    assert_eq!(reqs[1].target(), "/next");
}

#[tokio::test]
async fn pipelined_requests_with_bodies_are_answered_in_order_on_one_connection() {
    let b = RawBackend::spawn().await;
    let p = proxy(&b).await;
    let ex = exchange(
        p.addr,
        b"POST /first HTTP/1.1\r\nHost: s.foo.bar\r\nContent-Length: 5\r\n\r\nhello\
          POST /second HTTP/1.1\r\nHost: s.foo.bar\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /third HTTP/1.1\r\nHost: s.foo.bar\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(ex.closed, "{:?}", ex.text);
    assert_eq!(ex.statuses(), [200, 200, 200], "{:?}", ex.text);
    let order: Vec<_> = ex
        .text
        .match_indices("ok /")
        .map(|(i, _)| &ex.text[i..i + 6])
        .collect();
    assert_eq!(order, ["ok /fi", "ok /se", "ok /th"], "{:?}", ex.text);
    let reqs = b.requests();
    let bodies: Vec<&[u8]> = reqs.iter().map(|r| &r.body[..]).collect();
    assert_eq!(bodies, [&b"hello"[..], b"abc", b""]);
}

#[tokio::test]
async fn http_1_0_keeps_its_connection_only_when_it_asks() {
    let b = RawBackend::spawn().await;
    let p = proxy(&b).await;
    // Without keep-alive: answered, then closed. The upstream's answer is
    // chunked; an HTTP/1.0 client gets it delimited by the close instead.
    let ex = exchange(
        p.addr,
        b"GET /trailer HTTP/1.0\r\nHost: s.foo.bar\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(ex.closed, "{:?}", ex.text);
    assert_eq!(ex.statuses(), [200], "{:?}", ex.text);
    assert!(ex.text.ends_with("\r\n\r\nwith trailer"), "{:?}", ex.text);
    assert!(
        !ex.text.to_ascii_lowercase().contains("chunked"),
        "{:?}",
        ex.text
    );
    // With it: the answer says so, and a second request is served.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /first HTTP/1.0\r\nHost: s.foo.bar\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let first = read_until(&mut s, "ok /first").await;
    assert!(
        first
            .to_ascii_lowercase()
            .contains("connection: keep-alive"),
        "{first:?}"
    );
    s.write_all(b"GET /second HTTP/1.0\r\nHost: s.foo.bar\r\n\r\n")
        .await
        .unwrap();
    let ex = read_until_closed(&mut s, WAIT).await;
    assert!(ex.closed && ex.text.contains("ok /second"), "{:?}", ex.text);
}

#[tokio::test]
async fn a_large_response_streams_whole_and_the_connection_is_reused() {
    let b = RawBackend::spawn().await;
    let p = proxy(&b).await;
    let ex = exchange(
        p.addr,
        b"GET /64k HTTP/1.1\r\nHost: s.foo.bar\r\n\r\nGET /first HTTP/1.1\r\nHost: s.foo.bar\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(ex.closed);
    assert_eq!(ex.statuses(), [200, 200]);
    assert_eq!(ex.text.matches('z').count(), 65536);
    assert!(
        ex.text.ends_with("ok /first"),
        "{:?}",
        &ex.text[ex.text.len() - 100..]
    );
}

#[tokio::test]
async fn a_head_that_cannot_be_read_is_answered_and_closed() {
    let b = RawBackend::spawn().await;
    let p = proxy(&b).await;
    let ex = exchange(
        p.addr,
        b"GET /first HTTP/1.1\r\nHost s.foo.bar\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(ex.closed);
    assert_eq!(ex.statuses(), [400], "{:?}", ex.text);
    assert!(ex.text.contains("connection: close"), "{:?}", ex.text);
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: s.foo.bar\r\n\r\n",
        "a".repeat(70_000)
    );
    let ex = exchange(p.addr, long.as_bytes(), WAIT).await;
    assert!(ex.closed);
    assert_eq!(ex.statuses(), [431], "{:?}", ex.text);
    assert!(b.requests().is_empty());
}
