//! What a proxy on the public internet meets, over raw sockets against the
//! real binary, with an upstream that records the exact bytes it receives:
//! idle and stalled connections, the connection cap, stalled bodies both
//! ways, spoofable headers, encoded traversal, request and response framing.

mod support;

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::proxy::route_toml;
use support::raw::{RawBackend, exchange, read_until_closed};
use support::{Backend, ProxyProcess, eventually};

const WAIT: Duration = Duration::from_secs(5);

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: s.foo.bar\r\n{extra}\r\n").into_bytes()
}

/// The first 200 bytes of an answer, for assertion messages.
fn start(text: &str) -> &str {
    text.get(..200).unwrap_or(text)
}

/// Log lines (JSON) whose message is `message`.
fn logged(p: &ProxyProcess, message: &str) -> Vec<serde_json::Value> {
    p.stderr()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_at_the_header_timeout() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--client-header-timeout", "600ms", "--access-log", "off"],
    )
    .await;

    // Not a byte: closed once the timeout has passed since accept.
    let start = Instant::now();
    let mut silent = TcpStream::connect(p.addr).await.unwrap();
    let ex = read_until_closed(&mut silent, WAIT).await;
    let took = start.elapsed();
    assert!(ex.closed, "a zero-byte connection stayed open for {WAIT:?}");
    assert!(took >= Duration::from_millis(550), "closed early: {took:?}");
    assert!(ex.text.is_empty(), "nothing is answered: {:?}", ex.text);

    // A byte every 200 ms: the timeout still counts from accept, not from each byte.
    let start = Instant::now();
    let mut slow = TcpStream::connect(p.addr).await.unwrap();
    let trickle = async {
        for b in b"GET / HTTP/1.1\r\nHost: s.foo.bar\r\n" {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(WAIT, trickle).await;
    let ex = read_until_closed(&mut slow, WAIT).await;
    assert!(ex.closed);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a trickling client held its connection for {:?}",
        start.elapsed()
    );

    // Between keep-alive requests: counted from the end of the previous response.
    let mut kept = TcpStream::connect(p.addr).await.unwrap();
    kept.write_all(&get("/one", "")).await.unwrap();
    let start = Instant::now();
    let ex = read_until_closed(&mut kept, WAIT).await;
    assert_eq!(ex.statuses(), [200]);
    assert!(ex.closed, "the idle keep-alive connection was closed");
    assert!(start.elapsed() >= Duration::from_millis(550));
}

/// The header timeout is branchgate's alone: hyper's own head timer (30 s by
/// default once a timer is set) is off, so a longer `--client-header-timeout`
/// holds. Before, a head still incomplete after 30 s was closed by hyper.
#[tokio::test]
async fn a_header_timeout_above_30_s_is_not_cut_short() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--client-header-timeout", "45s", "--access-log", "off"],
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: s.foo.bar\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(32)).await;
    // The rest of the head after 32 s: still answered.
    let _ = s.write_all(b"Connection: close\r\n\r\n").await;
    let ex = read_until_closed(&mut s, WAIT).await;
    assert_eq!(ex.statuses(), [200], "{}", start(&ex.text));
}

#[tokio::test]
async fn the_descriptor_limit_is_raised_to_its_hard_limit() {
    let limit = |field: &str| -> u64 {
        match field {
            "unlimited" => u64::MAX,
            n => n.parse().unwrap(),
        }
    };
    let line = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = line
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let hard = limit(line.split_whitespace().nth(4).unwrap());
    let p = ProxyProcess::spawn_with_nofile("", &["--access-log", "off"], 256, false).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.pid)).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft = limit(line.split_whitespace().nth(3).unwrap());
    assert_eq!(soft, hard, "soft limit raised to the hard one: {line}");
    let cap = &logged(&p, "client connection cap")[0]["fields"];
    assert_eq!(cap["nofile"], hard);
    assert_eq!(
        cap["max_connections"],
        branchgate::proxy::conns::default_cap(hard) as u64
    );
}

#[tokio::test]
async fn at_the_connection_cap_idle_sockets_make_room_and_requests_keep_being_answered() {
    let b = Backend::spawn("b").await;
    // soft = hard = 256: the default cap is (256 - 64) / 2 = 96. Accepted
    // at once, silent sockets too (deferred accept would leave those with
    // the kernel for a second, out of the cap's count: tests/process.rs).
    let p = ProxyProcess::spawn_with_nofile(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--access-log", "off", "--defer-accept=false"],
        256,
        true,
    )
    .await;
    assert_eq!(
        logged(&p, "client connection cap")[0]["fields"]["max_connections"],
        96
    );

    let start = Instant::now();
    let mut idle = Vec::new();
    let mut answered = 0;
    for i in 0..300 {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        if i % 2 == 1 {
            // Half a request head: graceful closing alone never ends these.
            let _ = s.write_all(b"G").await;
        }
        idle.push(s);
        if i % 15 == 0 {
            // A normal client, on a new connection, while hundreds of idle ones are open.
            let r = support::get(p.addr, "s.foo.bar", "/").await;
            assert_eq!(r.status, 200, "request {i} while at the cap");
            answered += 1;
        }
    }
    for _ in 0..20 {
        assert_eq!(support::get(p.addr, "s.foo.bar", "/").await.status, 200);
        answered += 1;
    }
    eprintln!(
        "{answered} requests answered beside 300 idle sockets in {:?}",
        start.elapsed()
    );
    // The oldest idle sockets were closed to make room; the newest are open.
    let first = read_until_closed(&mut idle[0], Duration::from_millis(500)).await;
    assert!(first.closed, "the oldest idle connection was closed");
    let stderr = p.stderr().join("\n");
    assert!(
        !stderr.contains("Too many open files"),
        "the descriptor limit was reached:\n{stderr}"
    );
    let warnings = logged(
        &p,
        "client connection limit reached (--max-connections): idle connections are closed to make room, new ones refused when none is idle",
    );
    let most = start.elapsed().as_secs() / 5 + 1;
    assert!(
        !warnings.is_empty() && warnings.len() as u64 <= most,
        "{} cap warnings in {:?}",
        warnings.len(),
        start.elapsed()
    );
    assert!(warnings[0]["fields"]["evicted_idle"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn when_every_connection_is_busy_new_ones_are_refused() {
    let b = Backend::spawn("b").await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--max-connections", "3", "--access-log", "off"],
    )
    .await;
    let busy: Vec<_> = (0..3)
        .map(|_| {
            let addr = p.addr;
            tokio::spawn(async move { support::get(addr, "s.foo.bar", "/slow/4000").await })
        })
        .collect();
    eventually(WAIT, "three requests in flight", || async {
        (b.connections() >= 3).then_some(())
    })
    .await;
    let refused = exchange(p.addr, &get("/", ""), WAIT).await;
    assert!(refused.closed && refused.text.is_empty(), "{refused:?}");
    for r in busy {
        assert_eq!(r.await.unwrap().status, 200, "busy ones finish");
    }
    // Idle again: there is room.
    eventually(WAIT, "room once the requests ended", || async {
        let ex = exchange(p.addr, &get("/", "Connection: close\r\n"), WAIT).await;
        (ex.statuses() == [200]).then_some(())
    })
    .await;
    let refused = logged(
        &p,
        "client connection limit reached (--max-connections): idle connections are closed to make room, new ones refused when none is idle",
    );
    assert_eq!(refused[0]["fields"]["refused"], 1);
}

#[tokio::test]
async fn a_stalled_upload_is_answered_408_and_both_connections_close() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--client-body-timeout", "500ms", "--access-log", "off"],
    )
    .await;
    let start = Instant::now();
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: s.foo.bar\r\nContent-Length: 100\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'a'; 10]);
    let ex = exchange(p.addr, &req, WAIT).await;
    assert_eq!(ex.statuses(), [408], "{}", ex.text);
    assert!(ex.text.contains("connection: close"), "{}", ex.text);
    assert!(ex.closed, "the client connection closed");
    assert!(start.elapsed() >= Duration::from_millis(450));
    eventually(WAIT, "the upstream connection to close", || async {
        let conns = b.conns();
        (conns.len() == 1 && conns[0].closed).then_some(())
    })
    .await;
    let conn = &b.conns()[0];
    assert!(
        conn.requests.is_empty(),
        "no complete request went upstream"
    );
    assert!(
        conn.bytes.ends_with(&[b'a'; 10]),
        "the 10 bytes were passed on"
    );
}

#[tokio::test]
async fn an_upstream_that_stops_reading_the_upload_gets_504_after_the_response_timeout() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--response-timeout", "1s", "--access-log", "off"],
    )
    .await;
    const SIZE: usize = 64 << 20;
    let s = TcpStream::connect(p.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let upload = tokio::spawn(async move {
        let head =
            format!("POST /no-read HTTP/1.1\r\nHost: s.foo.bar\r\nContent-Length: {SIZE}\r\n\r\n");
        wr.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'u'; 64 * 1024];
        // Blocks once every buffer up to the backend is full; fails once the proxy closes.
        for _ in 0..SIZE / chunk.len() {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = vec![0; 4096];
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut rd, &mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    // The read above ended with the client connection closing, which needs the
    // abandoned upstream connection gone too: its task held the request body.
    upload.abort();
}

#[tokio::test]
async fn a_stalled_upstream_body_is_cut_and_both_connections_close() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--upstream-read-timeout", "500ms", "--access-log", "off"],
    )
    .await;
    let start = Instant::now();
    let ex = exchange(p.addr, &get("/stall-body", ""), WAIT).await;
    assert!(ex.closed, "the client connection was cut");
    assert!(start.elapsed() >= Duration::from_millis(450));
    assert!(ex.text.starts_with("HTTP/1.1 200"), "{}", ex.text);
    assert!(
        ex.text.ends_with(&"x".repeat(10)),
        "10 of 100 bytes: {}",
        ex.text
    );
    eventually(WAIT, "the upstream connection to close", || async {
        b.conns()[0].closed.then_some(())
    })
    .await;
    let cut = logged(
        &p,
        "upstream stopped sending the response body; closing both connections",
    );
    assert_eq!(cut.len(), 1);
}

#[tokio::test]
async fn underscore_and_untrusted_forwarding_headers_never_reach_the_upstream() {
    let b = RawBackend::spawn().await;
    let routes = route_toml("s.foo.bar", &[b.addr], "");
    let spoof = "X_Forwarded_For: 6.6.6.6\r\nx_real_ip: 6.6.6.6\r\nTransfer_Encoding: chunked\r\n\
                 X-Forwarded-Scheme: https\r\nX-Forwarded-Prefix: /admin\r\nX-Original-URL: /admin\r\n\
                 X-Rewrite-URL: /admin\r\nTrue-Client-IP: 6.6.6.6\r\nX-Client-IP: 6.6.6.6\r\n\
                 CF-Connecting-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Kept: yes\r\n";
    let underscored = ["x_forwarded_for", "x_real_ip", "transfer_encoding"];
    let untrusted = [
        "x-forwarded-scheme",
        "x-forwarded-prefix",
        "x-original-url",
        "x-rewrite-url",
        "true-client-ip",
        "x-client-ip",
        "cf-connecting-ip",
        "forwarded",
    ];
    for (flags, keep_underscores, keep_untrusted) in [
        (&["--access-log", "off"][..], false, false),
        (&["--allow-underscore-headers"][..], true, false),
        (&["--trust-downstream-proxy"][..], false, true),
    ] {
        let p = ProxyProcess::spawn(&routes, flags).await;
        let ex = exchange(
            p.addr,
            &get("/h", &format!("{spoof}Connection: close\r\n")),
            WAIT,
        )
        .await;
        assert_eq!(ex.statuses(), [200], "{flags:?}: {}", ex.text);
        let req = b.requests().pop().unwrap();
        for name in underscored {
            assert_eq!(
                !req.header(name).is_empty(),
                keep_underscores,
                "{flags:?}: {name} in {:?}",
                req.headers
            );
        }
        for name in untrusted {
            assert_eq!(
                !req.header(name).is_empty(),
                keep_untrusted,
                "{flags:?}: {name} in {:?}",
                req.headers
            );
        }
        assert_eq!(req.header("x-kept"), ["yes"]);
        if !keep_untrusted {
            assert_eq!(req.header("x-forwarded-for"), ["127.0.0.1"]);
        }
    }
}

#[tokio::test]
async fn encoded_traversal_in_every_form_is_refused() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], "path = \"/api/\""),
        &["--access-log", "off"],
    )
    .await;
    for path in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/..%2fadmin",
        "/api/..%2Fadmin",
        "/api%2F..%2Fadmin",
        "/api/%2F../admin",
        "/api/..;/admin",
        "/api/.;/admin",
        "/api/%5c..%5cadmin",
        "/api/%5C..%5Cadmin",
        "/api/..\\admin",
        "/api/.%2e/admin",
    ] {
        let ex = exchange(p.addr, &get(path, "Connection: close\r\n"), WAIT).await;
        assert_eq!(ex.statuses(), [400], "{path}: {}", ex.text);
    }
    assert!(b.requests().is_empty(), "{:?}", b.requests());
    let ex = exchange(
        p.addr,
        &get("/api/a..b/.well-known", "Connection: close\r\n"),
        WAIT,
    )
    .await;
    assert_eq!(ex.statuses(), [200], "dots inside a segment are fine");
}

#[tokio::test]
async fn request_framing_edges_are_refused_or_made_canonical() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(&route_toml("s.foo.bar", &[b.addr], ""), &[]).await;
    let refused: [(&str, &[u8], u16); 7] = [
        (
            "two Host headers",
            b"GET /two-hosts HTTP/1.1\r\nHost: s.foo.bar\r\nHost: s.foo.bar\r\n\r\nGET /after HTTP/1.1\r\nHost: s.foo.bar\r\n\r\n",
            400,
        ),
        (
            "two trailing dots",
            b"GET /dots HTTP/1.1\r\nHost: s.foo.bar..\r\n\r\n",
            400,
        ),
        (
            "port above 65535",
            b"GET /port HTTP/1.1\r\nHost: s.foo.bar:65536\r\n\r\n",
            400,
        ),
        (
            "absolute-form with another scheme",
            b"GET ftp://s.foo.bar/scheme HTTP/1.1\r\nHost: s.foo.bar\r\n\r\n",
            400,
        ),
        (
            "malformed chunked body",
            b"POST /chunked HTTP/1.1\r\nHost: s.foo.bar\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n",
            400,
        ),
        (
            "a trailer ended by a bare LF swallowing a pipelined request",
            b"POST /first HTTP/1.1\r\nHost: s.foo.bar\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\nGET /second HTTP/1.1\r\nHost: s.foo.bar\r\n\r\nGET /third HTTP/1.1\r\nHost: s.foo.bar\r\n\r\n",
            400,
        ),
        ("request line over the limit", b"", 414),
    ];
    for (name, bytes, status) in refused {
        let long;
        let bytes = if bytes.is_empty() {
            long = get(&format!("/{}", "a".repeat(9 * 1024)), "");
            &long[..]
        } else {
            bytes
        };
        let ex = exchange(p.addr, bytes, WAIT).await;
        assert_eq!(ex.statuses(), [status], "{name}: {}", ex.text);
        assert!(ex.closed, "{name}: the connection is closed after {status}");
    }
    let targets: Vec<String> = b.requests().iter().map(|r| r.target().to_owned()).collect();
    for never in [
        "/two-hosts",
        "/after",
        "/dots",
        "/port",
        "/scheme",
        "/second",
        "/third",
    ] {
        assert!(
            !targets.iter().any(|t| t.ends_with(never)),
            "{never} reached the upstream: {targets:?}"
        );
    }
    // The malformed body is the client's fault: logged so, never as an upstream error.
    let stderr = p.stderr().join("\n");
    assert!(!stderr.contains("upstream error"), "{stderr}");
    assert!(
        logged(&p, "client error")
            .iter()
            .any(|l| l["fields"]["error"].as_str().unwrap().contains("malformed")),
        "{stderr}"
    );

    // Content-Length reaches the upstream in canonical form.
    let ex = exchange(
        p.addr,
        b"POST /zero-length HTTP/1.1\r\nHost: s.foo.bar\r\nContent-Length: 005\r\nConnection: close\r\n\r\nhello",
        WAIT,
    )
    .await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
    assert!(ex.text.ends_with("[\"5\"]"), "{}", ex.text);
}

#[tokio::test]
async fn an_answer_before_the_whole_body_closes_the_client_connection() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--access-log", "off"],
    )
    .await;
    // The upstream answers on the head alone, while the body is still coming;
    // then the body ends with a bare-LF trailer and two pipelined requests.
    // Nothing after the body may be served: hyper would read the rest of the
    // body itself after the response, and read on.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /early HTTP/1.1\r\nHost: s.foo.bar\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0; 4096];
    while !String::from_utf8_lossy(&head).ends_with("ok /early") {
        let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut s, &mut buf))
            .await
            .expect("the early answer")
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    // The rest: the proxy must not read it as requests (the socket may be closed already).
    let _ = s
        .write_all(b"0\r\nX: y\n\nGET /second HTTP/1.1\r\nHost: s.foo.bar\r\n\r\nGET /third HTTP/1.1\r\nHost: s.foo.bar\r\n\r\n")
        .await;
    let ex = read_until_closed(&mut s, WAIT).await;
    assert!(ex.closed);
    assert!(
        ex.statuses().is_empty(),
        "nothing more is answered: {}",
        ex.text
    );
    let targets: Vec<String> = b.requests().iter().map(|r| r.target().to_owned()).collect();
    assert_eq!(targets, ["/early"]);

    // A body that was sent in full before the answer keeps the connection.
    let ex = exchange(
        p.addr,
        b"POST /upload HTTP/1.1\r\nHost: s.foo.bar\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: s.foo.bar\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(ex.statuses(), [200, 200], "{}", ex.text);
}

#[tokio::test]
async fn answers_of_the_proxys_own_to_a_request_with_a_body_close_the_connection() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], "path = \"/api/\""),
        &["--access-log", "off"],
    )
    .await;
    // hyper reads an unread body itself after the answer; a bare-LF trailer
    // would then swallow /second and let /third through.
    let rest = "0\r\nX: y\n\nGET /api/second HTTP/1.1\r\nHost: s.foo.bar\r\n\r\nGET /api/third HTTP/1.1\r\nHost: s.foo.bar\r\n\r\n";
    for (host, path, status) in [
        ("nobody.foo.bar", "/api/x", 503),
        ("s.foo.bar", "/elsewhere", 404),
        ("s.foo.bar", "/api/../x", 400),
    ] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n{rest}"
        );
        let ex = exchange(p.addr, req.as_bytes(), WAIT).await;
        assert_eq!(ex.statuses(), [status], "{host}{path}: {}", ex.text);
        assert!(ex.closed, "{host}{path}");
    }
    assert!(b.requests().is_empty(), "{:?}", b.requests());
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_closed_at_the_send_timeout() {
    let b = Backend::spawn("b").await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--client-send-timeout", "500ms", "--access-log", "off"],
    )
    .await;
    const SIZE: usize = 200 << 20;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&get(&format!("/bytes/{SIZE}"), ""))
        .await
        .unwrap();
    // Read nothing until the socket buffers are long full.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ex = read_until_closed(&mut s, Duration::from_secs(20)).await;
    assert!(ex.closed, "the connection was closed");
    assert!(
        ex.text.len() < SIZE,
        "cut short: {} of {SIZE} bytes",
        ex.text.len()
    );
}

#[tokio::test]
async fn upstream_response_framing_is_repaired_or_refused() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--access-log", "off"],
    )
    .await;

    // Transfer-Encoding and Content-Length: the length goes, the whole body arrives.
    let ex = exchange(p.addr, &get("/te-cl", "Connection: close\r\n"), WAIT).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
    let lower = ex.text.to_ascii_lowercase();
    assert!(!lower.contains("content-length: 2\r\n"), "{}", ex.text);
    assert!(
        ex.text.contains(&"y".repeat(58)),
        "the whole body: {}",
        ex.text
    );

    // A 101 nobody asked for: 502, and that upstream connection is discarded.
    let ex = exchange(p.addr, &get("/switch", "Connection: close\r\n"), WAIT).await;
    assert_eq!(ex.statuses(), [502], "{}", ex.text);
    eventually(
        WAIT,
        "the switched upstream connection to close",
        || async {
            b.conns()
                .iter()
                .find(|c| c.requests.iter().any(|r| r.target() == "/switch"))
                .is_some_and(|c| c.closed)
                .then_some(())
        },
    )
    .await;
    // The next request is served on a connection that never switched.
    let ex = exchange(p.addr, &get("/after", "Connection: close\r\n"), WAIT).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
}

#[tokio::test]
async fn upstream_connections_are_reused_only_after_a_clean_response() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--access-log", "off"],
    )
    .await;
    let get = |target: &str| get(target, "Connection: close\r\n");
    // Which upstream connection served `target`, and whether it is closed.
    let conn_of = |target: &str| {
        b.conns()
            .iter()
            .position(|c| c.requests.iter().any(|r| r.target() == target))
    };

    // Two plain answers in a row share one upstream connection.
    for target in ["/one", "/two"] {
        let ex = exchange(p.addr, &get(target), WAIT).await;
        assert_eq!(ex.statuses(), [200], "{}", ex.text);
    }
    assert_eq!(
        conn_of("/one"),
        conn_of("/two"),
        "the idle connection was reused"
    );

    // An interim 100 is skipped; the final answer comes through.
    let ex = exchange(p.addr, &get("/continue"), WAIT).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
    assert!(ex.text.ends_with("after 100 ok."), "{}", ex.text);

    // A chunked answer with trailers: the body whole, the trailer not
    // forwarded, the connection clean and reused.
    let ex = exchange(p.addr, &get("/trailer"), WAIT).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
    assert!(
        ex.text.contains("with") && ex.text.contains(" trailer"),
        "{}",
        ex.text
    );
    assert!(!ex.text.contains("X-Trailer"), "{}", ex.text);
    let ex = exchange(p.addr, &get("/after-trailer"), WAIT).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
    assert_eq!(conn_of("/trailer"), conn_of("/after-trailer"));

    // Bytes past the end of a response are never read as the next one: that
    // connection is closed, the next request gets a connection of its own.
    let ex = exchange(p.addr, &get("/extra"), WAIT).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
    assert!(ex.text.ends_with("\r\n\r\nok"), "{}", ex.text);
    let ex = exchange(p.addr, &get("/after-extra"), WAIT).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
    assert!(!ex.text.contains("forged"), "{}", ex.text);
    assert!(ex.text.ends_with("ok /after-extra"), "{}", ex.text);
    assert_ne!(conn_of("/extra"), conn_of("/after-extra"));
    let extra = conn_of("/extra").unwrap();
    eventually(WAIT, "the connection with stray bytes to close", || async {
        b.conns()[extra].closed.then_some(())
    })
    .await;

    // A body read until an HTTP/1.0 upstream closes arrives whole, to an
    // HTTP/1.1 client as HTTP/1.1 (chunked, so the client sees its end).
    let ex = exchange(p.addr, &get("/until-close"), WAIT).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
    assert!(ex.text.starts_with("HTTP/1.1 200"), "{}", ex.text);
    assert!(
        ex.text
            .ends_with("\r\n1E\r\nread until the upstream closes\r\n0\r\n\r\n"),
        "{}",
        ex.text
    );

    // An upstream that closes an idle pooled connection: the next request
    // finds it dead when it takes it and goes on a fresh one, no 502.
    let ex = exchange(p.addr, &get("/close-after"), WAIT).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ex = exchange(p.addr, &get("/after-close"), WAIT).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
    assert_ne!(conn_of("/close-after"), conn_of("/after-close"));
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_without_traffic() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--access-log", "off", "--upstream-idle-timeout", "1s"],
    )
    .await;
    let ex = exchange(p.addr, &get("/once", "Connection: close\r\n"), WAIT).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
    // No request comes to take it: the sweep closes it past the idle timeout.
    let started = Instant::now();
    eventually(
        WAIT,
        "the idle upstream connection to be closed",
        || async { b.conns().first().is_some_and(|c| c.closed).then_some(()) },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed before the idle timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn heads_are_bounded_at_64_kib_each_way_and_bodies_stream_through() {
    let b = RawBackend::spawn().await;
    let p = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[b.addr], ""),
        &["--access-log", "off"],
    )
    .await;

    // A request head of 20 KiB passes; one of 200 KiB (past twice the
    // buffer, where the bound is exact) is answered 431 and never reaches
    // the upstream.
    let cookie = format!("Cookie: c={}\r\n", "a".repeat(20 * 1024));
    let ex = exchange(
        p.addr,
        &get("/fits", &format!("{cookie}Connection: close\r\n")),
        WAIT,
    )
    .await;
    assert_eq!(ex.statuses(), [200], "{}", start(&ex.text));
    let cookie = format!("Cookie: c={}\r\n", "a".repeat(200 * 1024));
    let ex = exchange(p.addr, &get("/too-big", &cookie), WAIT).await;
    assert_eq!(ex.statuses(), [431], "{}", start(&ex.text));
    assert!(ex.closed, "the connection closes after the 431");
    assert!(
        !b.requests().iter().any(|r| r.target() == "/too-big"),
        "the oversized request reached the upstream"
    );

    // An upstream response head of 80 KiB: 502, not relayed.
    let ex = exchange(p.addr, &get("/big-head", "Connection: close\r\n"), WAIT).await;
    assert_eq!(ex.statuses(), [502], "{}", start(&ex.text));
    assert!(!ex.text.contains("X-Big"), "the oversized head was relayed");

    // A head larger than the first read of an upstream response (2 KiB)
    // is read whole, twice on one client connection, and leaves the
    // upstream connection reusable.
    let before = b.conns().len();
    let two = [
        get("/head-6k", ""),
        get("/head-6k", "Connection: close\r\n"),
    ]
    .concat();
    let ex = exchange(p.addr, &two, WAIT).await;
    assert_eq!(ex.statuses(), [200, 200], "{}", start(&ex.text));
    assert_eq!(
        ex.text.to_ascii_lowercase().matches("x-field-59: ").count(),
        2,
        "{}",
        start(&ex.text)
    );
    assert_eq!(ex.text.matches(&"v".repeat(88)).count(), 120);
    assert!(ex.text.ends_with("whol"), "{}", ex.text);
    assert!(
        b.conns().len() <= before + 1,
        "the upstream connection was not reused"
    );

    // Bodies of the buffer's size stream through whole, twice on one
    // client connection (the upstream connection is reused between them).
    let two = [get("/64k", ""), get("/64k", "Connection: close\r\n")].concat();
    let ex = exchange(p.addr, &two, WAIT).await;
    assert_eq!(ex.statuses(), [200, 200]);
    assert_eq!(ex.text.matches('z').count(), 2 * 65536);
}
