//! Header rules, error answers, HTTP/2, HTTPS upstreams, WebSocket tunnels
//! and client timeouts, over real sockets.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use support::{Backend, Proxy, get, get_with, raw};

#[tokio::test]
async fn forwarded_headers_are_overwritten_unless_the_downstream_is_trusted() {
    let b = Backend::spawn("b").await;
    let spoof = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "443"),
        ("x-real-ip", "6.6.6.6"),
        ("x-forwarded-ssl", "on"),
        ("x-original-uri", "/admin"),
    ];
    let untrusted = Proxy::builder()
        .route("h.foo.bar", &[b.addr], "")
        .spawn()
        .await;
    let r = get_with(untrusted.addr, "h.foo.bar", "/a?b=c", &spoof).await;
    let port = untrusted.addr.port().to_string();
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(r.seen_header("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(r.seen_header("x-forwarded-ssl").as_deref(), Some("off"));
    assert_eq!(
        r.seen_header("x-forwarded-host").as_deref(),
        Some("h.foo.bar")
    );
    assert_eq!(
        r.seen_header("x-forwarded-port").as_deref(),
        Some(port.as_str())
    );
    assert_eq!(r.seen_header("x-original-uri").as_deref(), Some("/a?b=c"));

    let trusted = Proxy::builder()
        .route("h.foo.bar", &[b.addr], "")
        .arg("--trust-downstream-proxy")
        .spawn()
        .await;
    let r = get_with(trusted.addr, "h.foo.bar", "/", &spoof).await;
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("6.6.6.6, 127.0.0.1")
    );
    assert_eq!(r.seen_header("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(r.seen_header("x-forwarded-ssl").as_deref(), Some("on"));
    assert_eq!(
        r.seen_header("x-forwarded-host").as_deref(),
        Some("evil.example")
    );
    assert_eq!(r.seen_header("x-forwarded-port").as_deref(), Some("443"));
    // Never the client's, and each once (seen_header joins repeats with '|').
    assert_eq!(r.seen_header("x-original-uri").as_deref(), Some("/"));
    // Trusted, but the client sent none: the proxy's own values.
    let r = get(trusted.addr, "h.foo.bar", "/").await;
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"));
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_host_is_kept_and_proxy_is_stripped() {
    let b = Backend::spawn("b").await;
    let p = Proxy::builder()
        .route("h.foo.bar", &[b.addr], "")
        .spawn()
        .await;
    let req = "GET /hop HTTP/1.1\r\nHost: H.Foo.Bar:8080\r\nConnection: close, X-Hop\r\n\
               X-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n\
               Proxy: http://evil.example/\r\nX-Kept: yes\r\n\r\n";
    let resp = raw(p.addr, req.as_bytes()).await;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Response hop-by-hop headers from the upstream are gone too.
    assert!(head.contains("x-resp-kept: 1"), "{head}");
    assert!(!head.contains("x-resp-hop"), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");

    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let seen: Vec<String> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}: {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()))
        .collect();
    for gone in [
        "x-hop",
        "keep-alive",
        "te",
        "proxy-connection",
        "proxy",
        "connection",
    ] {
        assert!(
            !seen.iter().any(|h| h.starts_with(&format!("{gone}:"))),
            "{gone} in {seen:?}"
        );
    }
    assert!(
        seen.contains(&"host: H.Foo.Bar:8080".to_owned()),
        "{seen:?}"
    );
    assert!(seen.contains(&"x-kept: yes".to_owned()), "{seen:?}");
}

#[tokio::test]
async fn each_error_answers_with_its_status() {
    let ok = Backend::spawn("ok").await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // A listener whose accept queue is full: the kernel drops further SYNs, so
    // a connect hangs until the proxy's connect timeout.
    let blackhole =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    blackhole
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    blackhole.listen(0).unwrap();
    let hole = blackhole.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(hole)).await
        {
            fillers.push(s);
        }
    }

    let p = Proxy::builder()
        .route("ok.foo.bar", &[ok.addr], "")
        .route("empty.foo.bar", &[], "")
        .route("refused.foo.bar", &[refused], "")
        .route("hole.foo.bar", &[hole], "")
        .arg("--response-timeout")
        .arg("300ms")
        .arg("--connect-timeout")
        .arg("300ms")
        .spawn()
        .await;

    let r = get(p.addr, "nobody.foo.baz", "/").await;
    assert_eq!(r.status, 503, "unknown host");
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("<h1>503 Service Unavailable</h1>"), "{body}");
    assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        get(p.addr, "empty.foo.bar", "/").await.status,
        503,
        "no upstream"
    );
    assert_eq!(
        get(p.addr, "refused.foo.bar", "/").await.status,
        502,
        "refused"
    );
    assert_eq!(
        get(p.addr, "ok.foo.bar", "/reset").await.status,
        502,
        "reset before response"
    );
    assert_eq!(
        get(p.addr, "ok.foo.bar", "/slow/2000").await.status,
        504,
        "response timeout"
    );
    assert_eq!(
        get(p.addr, "hole.foo.bar", "/").await.status,
        504,
        "connect timeout"
    );
    assert_eq!(
        get(p.addr, "ok.foo.bar", "/slow/10").await.status,
        200,
        "still fine"
    );

    // Malformed requests: 400 and the connection is closed.
    let resp = raw(p.addr, b"GARBAGE\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = raw(p.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        resp.starts_with("HTTP/1.0 400") || resp.starts_with("HTTP/1.1 400"),
        "{resp}"
    );
    let resp = raw(p.addr, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    // A host with URL syntax in it could match `*.foo.bar` and mislead apps.
    let resp = raw(p.addr, b"GET / HTTP/1.1\r\nHost: evil.com#.foo.bar\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // Dot segments would let an upstream resolve outside the routed prefix.
    for path in ["/a/../b", "/%2e%2e/etc", "/a/./b"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: ok.foo.bar\r\nConnection: close\r\n\r\n");
        let resp = raw(p.addr, req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{path}: {resp}");
    }
    // An absolute-form request is routed by, and forwarded with, the URI's host.
    let req =
        "GET http://ok.foo.bar/abs HTTP/1.1\r\nHost: empty.foo.bar\r\nConnection: close\r\n\r\n";
    let resp = raw(p.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#"["host","ok.foo.bar"]"#), "{resp}");
    assert!(resp.contains(r#""uri":"/abs""#), "{resp}");
    drop(fillers);
}

#[tokio::test]
async fn http2_prior_knowledge_clients_are_served() {
    let b = Backend::spawn("b").await;
    let p = Proxy::builder()
        .route("h2.foo.bar", &[b.addr], "")
        .spawn()
        .await;
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req = http::Request::get(format!("http://h2.foo.bar/x/{i}"))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Full::<Bytes>::default())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // The upstream gets HTTP/1.1 with an origin-form URI and a Host header.
        assert_eq!(v["version"], "HTTP/1.1");
        // Split HTTP/2 cookie fields reach the HTTP/1.1 upstream as one header.
        let cookies: Vec<&serde_json::Value> = v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0] == "cookie")
            .collect();
        assert_eq!(cookies.len(), 1, "{v}");
        assert_eq!(cookies[0][1], "a=1; b=2");
        assert_eq!(v["uri"], format!("/x/{i}"));
        assert!(
            v["headers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h[0] == "host" && h[1] == "h2.foo.bar")
        );
    }
}

/// The first bytes decide between HTTP/1 and h2c, however they trickle in.
#[tokio::test]
async fn the_protocol_is_decided_by_the_first_bytes_even_in_pieces() {
    let b = Backend::spawn("b").await;
    let p = Proxy::builder()
        .route("t.foo.bar", &[b.addr], "")
        .spawn()
        .await;
    let pause = || tokio::time::sleep(Duration::from_millis(30));
    async fn within<F: std::future::Future>(what: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(5), what)
            .await
            .expect("the proxy answers")
    }

    // The h2 preface in three pieces, then an empty SETTINGS frame: the
    // answer is the server's SETTINGS frame (type 4), not an HTTP/1 400.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for piece in [&preface[..2], &preface[2..15], &preface[15..]] {
        s.write_all(piece).await.unwrap();
        pause().await;
    }
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut head = [0u8; 9];
    within(s.read_exact(&mut head)).await.unwrap();
    assert_eq!(head[3], 4, "an h2 SETTINGS frame: {head:?}");

    // An HTTP/1 request whose first read is one byte.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"P").await.unwrap();
    pause().await;
    s.write_all(b"OST /piece HTTP/1.1\r\nHost: t.foo.bar\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
        .await
        .unwrap();
    let mut resp = String::new();
    within(s.read_to_string(&mut resp)).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""uri":"/piece""#), "{resp}");

    // "PRI" that is not the preface is HTTP/1 (an asterisk target is refused).
    let resp = within(raw(
        p.addr,
        b"PRI * HTTP/1.1\r\nHost: t.foo.bar\r\nConnection: close\r\n\r\n",
    ))
    .await;
    assert!(resp.starts_with("HTTP/1.1 4"), "{resp}");

    // Half a preface, then the client closes: the connection ends.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"PRI * HT").await.unwrap();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within(s.read_to_end(&mut rest)).await.unwrap();
}

#[tokio::test]
async fn https_upstreams_are_reached_over_tls() {
    let b = Backend::spawn_tls("tls").await;
    let p = Proxy::builder()
        .route("s.foo.bar", &[b.addr], "proto = \"https\"")
        .spawn()
        .await;
    for _ in 0..3 {
        let r = get(p.addr, "s.foo.bar", "/secure").await;
        assert_eq!((r.status.as_u16(), r.backend().as_str()), (200, "tls"));
    }
    assert_eq!(b.connections(), 1, "TLS connections are pooled too");
}

#[tokio::test]
async fn websocket_and_slow_request_survive_a_table_swap() {
    let b = Backend::spawn("ws").await;
    let p = Proxy::builder()
        .route("ws.foo.bar", &[b.addr], "")
        .spawn()
        .await;

    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.foo.bar/ws", stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    let slow = tokio::spawn(get(p.addr, "ws.foo.bar", "/slow/800"));
    // The upgrade was request 1; the slow one is in flight once it is number 2.
    b.wait_for_requests(2).await;
    // Swap to a table where the host no longer exists at all.
    let before = p.generation();
    p.write_routes("");
    support::eventually(Duration::from_secs(5), "the swap", || async {
        (p.generation() > before).then_some(())
    })
    .await;
    assert_eq!(get(p.addr, "ws.foo.bar", "/").await.status, 503);

    // The open tunnel and the in-flight request are untouched.
    for i in 0..5 {
        let m = format!("after-{i}");
        ws.send(Message::text(m.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(m));
    }
    ws.send(Message::binary(vec![0u8; 100_000])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().len(), 100_000);
    assert_eq!(slow.await.unwrap().status, 200);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let b = Backend::spawn("b").await;
    let p = Proxy::builder()
        .route("h.foo.bar", &[b.addr], "")
        .arg("--client-header-timeout")
        .arg("300ms")
        .spawn()
        .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h.foo").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the proxy closed the slow connection");
    // An idle keep-alive connection is closed the same way.
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: h.foo.bar\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the idle keep-alive connection was closed");
}

#[tokio::test]
async fn the_response_timeout_starts_after_the_upload() {
    let b = Backend::spawn("b").await;
    let p = Proxy::builder()
        .route("up.foo.bar", &[b.addr], "")
        .arg("--response-timeout")
        .arg("300ms")
        .spawn()
        .await;
    // Five chunks, 200 ms apart: a one-second upload, three response timeouts long.
    let chunks = futures_util::stream::unfold(0u8, |i| async move {
        if i == 5 {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let frame = hyper::body::Frame::data(Bytes::from(vec![b'u'; 1000]));
        Some((Ok::<_, std::io::Error>(frame), i + 1))
    });
    let mut sender = support::client::sender(p.addr).await;
    let req = http::Request::post("/upload")
        .header("host", "up.foo.bar")
        .header("content-length", "5000")
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["received"],
        5000
    );
    // A slow answer after a short upload still times out.
    let r = support::client::Conn::open(p.addr)
        .await
        .send(
            http::Request::post("/slow/1000")
                .header("host", "up.foo.bar")
                .body(Full::new(Bytes::from_static(b"tiny")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 504);
}
