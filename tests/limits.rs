//! Per-route limits (issue 16): `max_body` answered 413 before the body is
//! read when `Content-Length` says so and cut with 413 when a chunked body
//! crosses it; `response_timeout` per route.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use support::client::Conn;
use support::{Backend, Proxy, get};

fn upload(host: &str, len: usize) -> Request<Full<Bytes>> {
    Request::post("/upload")
        .header("host", host)
        .body(Full::new(Bytes::from(vec![b'x'; len])))
        .unwrap()
}

#[tokio::test]
async fn a_body_over_max_body_is_refused_with_413() {
    let up = Backend::spawn("up").await;
    let p = Proxy::builder()
        .route("small.example", &[up.addr], "max_body = \"1k\"")
        .route("big.example", &[up.addr], "")
        .spawn()
        .await;
    // Content-Length says so: refused before the body is read, and the
    // connection closed (the rest of the body is never read).
    let r = Conn::open(p.addr)
        .await
        .send(upload("small.example", 2000))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.headers["connection"], "close");
    assert_eq!(up.requests(), 0, "the upstream never saw it");
    // Within the limit (exactly 1 KiB), and on a route without one.
    let r = Conn::open(p.addr)
        .await
        .send(upload("small.example", 1024))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["received"].as_u64()),
        (StatusCode::OK, Some(1024))
    );
    let r = Conn::open(p.addr)
        .await
        .send(upload("big.example", 200_000))
        .await
        .unwrap();
    assert_eq!(r.json()["received"].as_u64(), Some(200_000));

    // Chunked: nobody knows the size up front; the upload is cut once it crosses.
    let chunked = |host: &str, chunks: usize| {
        let frames =
            (0..chunks).map(|_| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'y'; 512]))));
        Request::post("/upload")
            .header("host", host)
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .unwrap()
    };
    let mut s = support::client::sender(p.addr).await;
    let resp = s.send_request(chunked("small.example", 8)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let mut s = support::client::sender(p.addr).await;
    let resp = s.send_request(chunked("small.example", 2)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"received":1024}"#);
}

#[tokio::test]
async fn response_timeout_per_route() {
    let up = Backend::spawn("up").await;
    let p = Proxy::builder()
        .route("quick.example", &[up.addr], "response_timeout = \"300ms\"")
        .route("patient.example", &[up.addr], "")
        .spawn()
        .await;
    let start = Instant::now();
    let r = get(p.addr, "quick.example", "/slow/3000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let r = get(p.addr, "patient.example", "/slow/800").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the global 60 s applies elsewhere"
    );
}
