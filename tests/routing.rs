//! Host patterns, precedence, paths, dest rewrite, load balancing and
//! connection reuse, over real sockets.

mod support;

use std::time::Duration;

use support::{Backend, Proxy, get};

#[tokio::test]
async fn every_host_pattern_and_the_precedence_between_them() {
    let names = [
        "exact",
        "suffix",
        "long-suffix",
        "prefix",
        "long-prefix",
        "regex-a",
        "regex-b",
        "ipv4",
        "ipv6",
    ];
    let mut b = Vec::new();
    for n in names {
        b.push(Backend::spawn(n).await);
    }
    let p = Proxy::builder()
        .route("app.foo.bar", &[b[0].addr], "")
        .route("*.foo.bar", &[b[1].addr], "")
        .route("*.x.foo.bar", &[b[2].addr], "")
        .route("app.*", &[b[3].addr], "")
        .route("app.long.*", &[b[4].addr], "")
        // Two regexes that both match `re1.foo.baz`: the one whose text sorts
        // first wins, and `^re1\.` sorts before `^re\d+` ('1' < '\\').
        .route("~^re\\\\d+\\\\.foo\\\\.baz$", &[b[5].addr], "")
        .route("~^re1\\\\.", &[b[6].addr], "")
        .route("127.0.0.1", &[b[7].addr], "")
        .route("[::1]", &[b[8].addr], "")
        .spawn()
        .await;

    let cases = [
        ("app.foo.bar", "exact"),
        ("APP.Foo.BAR", "exact"),
        ("app.foo.bar.", "exact"),
        ("app.foo.bar:8080", "exact"),
        ("www.foo.bar", "suffix"),
        ("a.b.c.foo.bar", "suffix"),
        ("q.x.foo.bar", "long-suffix"),
        ("y.q.x.foo.bar", "long-suffix"),
        ("app.example.org", "prefix"),
        ("app.x", "prefix"),
        ("app.long.example", "long-prefix"),
        ("re22.foo.baz", "regex-a"),
        ("re1.foo.baz", "regex-b"),
        ("re1.other", "regex-b"),
        // Suffix beats prefix, prefix beats regex.
        ("app.y.foo.bar", "suffix"),
        ("app.re1.z", "prefix"),
        ("127.0.0.1", "ipv4"),
        ("127.0.0.1:80", "ipv4"),
        ("[::1]:8080", "ipv6"),
        ("[::1]", "ipv6"),
    ];
    for (host, want) in cases {
        let r = get(p.addr, host, "/").await;
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(r.backend(), want, "{host}");
    }
    // Wildcards need at least one more label.
    for host in ["foo.bar", "app", "unknown.example"] {
        let r = get(p.addr, host, "/").await;
        assert_eq!(r.status, 503, "{host}");
        assert!(String::from_utf8_lossy(&r.body).contains("503"));
    }
}

#[tokio::test]
async fn default_host_serves_unknown_hosts() {
    let main = Backend::spawn("main").await;
    let other = Backend::spawn("other").await;
    let p = Proxy::builder()
        .route("main.foo.bar", &[main.addr], "")
        .route("other.foo.bar", &[other.addr], "")
        .arg("--default-host")
        .arg("main.foo.bar")
        .spawn()
        .await;
    assert_eq!(get(p.addr, "nobody.example", "/").await.backend(), "main");
    assert_eq!(get(p.addr, "other.foo.bar", "/").await.backend(), "other");
}

#[tokio::test]
async fn longest_path_prefix_wins_and_dest_rewrites_it() {
    let root = Backend::spawn("root").await;
    let app1 = Backend::spawn("app1").await;
    let deep = Backend::spawn("deep").await;
    let api = Backend::spawn("api").await;
    let p = Proxy::builder()
        .route("p.foo.bar", &[root.addr], "")
        .route("p.foo.bar", &[app1.addr], "path = \"/app1/\"\ndest = \"/\"")
        .route("p.foo.bar", &[deep.addr], "path = \"/app1/deep/\"")
        .route(
            "only-api.foo.bar",
            &[api.addr],
            "path = \"/api/\"\ndest = \"/v2/\"",
        )
        .spawn()
        .await;

    let r = get(p.addr, "p.foo.bar", "/app1/foo?x=1").await;
    assert_eq!(
        (r.backend().as_str(), r.seen_uri().as_str()),
        ("app1", "/foo?x=1")
    );
    assert_eq!(
        r.seen_header("x-original-uri").as_deref(),
        Some("/app1/foo?x=1")
    );
    let r = get(p.addr, "p.foo.bar", "/app1/deep/x").await;
    assert_eq!(
        (r.backend().as_str(), r.seen_uri().as_str()),
        ("deep", "/app1/deep/x")
    );
    let r = get(p.addr, "p.foo.bar", "/app1").await;
    assert_eq!(
        (r.backend().as_str(), r.seen_uri().as_str()),
        ("root", "/app1")
    );
    let r = get(p.addr, "p.foo.bar", "/").await;
    assert_eq!(r.backend(), "root");
    let r = get(p.addr, "only-api.foo.bar", "/api/users").await;
    assert_eq!(
        (r.backend().as_str(), r.seen_uri().as_str()),
        ("api", "/v2/users")
    );
    // The host is known but no path matches.
    assert_eq!(get(p.addr, "only-api.foo.bar", "/other").await.status, 404);
}

#[tokio::test]
async fn several_upstreams_alternate_and_connections_are_reused() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let p = Proxy::builder()
        .route("lb.foo.bar", &[a.addr, b.addr], "")
        .spawn()
        .await;
    let mut seen = Vec::new();
    let mut conn = support::client::Conn::open(p.addr).await;
    for _ in 0..20 {
        let r = conn.get("lb.foo.bar", "/").await.unwrap();
        assert_eq!(r.status, 200);
        seen.push(r.backend());
    }
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "round-robin alternates: {seen:?}");
    }
    // Twenty sequential requests need one keep-alive connection per upstream.
    assert_eq!((a.connections(), b.connections()), (1, 1));
}

#[tokio::test]
async fn a_refused_connect_is_retried_on_the_next_upstream_and_then_skipped() {
    let live = Backend::spawn("live").await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let p = Proxy::builder()
        .route("h.foo.bar", &[dead, live.addr], "")
        .spawn()
        .await;
    for _ in 0..10 {
        let r = get(p.addr, "h.foo.bar", "/").await;
        assert_eq!((r.status.as_u16(), r.backend().as_str()), (200, "live"));
    }
    let snapshot = p.table.load();
    let (routes, _) = snapshot.table().find_host("h.foo.bar").unwrap();
    let ups = snapshot.pool(routes.paths()[0].pool).upstreams();
    let dead_up = ups.iter().find(|u| u.addr == dead).unwrap();
    assert!(
        dead_up.recently_failed(),
        "the refused upstream is marked down"
    );
    assert_eq!(dead_up.in_flight(), 0);
}

#[tokio::test]
async fn table_swaps_keep_upstream_state_and_idle_connections() {
    let a = Backend::spawn("a").await;
    let p = Proxy::builder()
        .route("s.foo.bar", &[a.addr], "")
        .spawn()
        .await;
    assert_eq!(get(p.addr, "s.foo.bar", "/").await.status, 200);
    let before = p.generation();
    p.write_routes(&format!(
        "{}{}",
        support::proxy::route_toml("s.foo.bar", &[a.addr], ""),
        support::proxy::route_toml("t.foo.bar", &[a.addr], "")
    ));
    support::eventually(Duration::from_secs(5), "the new table", || async {
        (p.generation() > before).then_some(())
    })
    .await;
    assert_eq!(get(p.addr, "t.foo.bar", "/").await.status, 200);
    // The idle connection from before the swap was reused.
    assert_eq!(a.connections(), 1);
}

#[tokio::test]
async fn round_robin_goes_on_where_it_was_across_a_table_swap() {
    let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
    let p = Proxy::builder()
        .route("rr.foo.bar", &[a.addr, b.addr], "")
        .spawn()
        .await;
    let first = get(p.addr, "rr.foo.bar", "/").await.backend();
    let before = p.generation();
    p.write_routes(&format!(
        "{}{}",
        support::proxy::route_toml("rr.foo.bar", &[b.addr, a.addr], ""),
        support::proxy::route_toml("other.foo.bar", &[a.addr], "")
    ));
    support::eventually(Duration::from_secs(5), "the new table", || async {
        (p.generation() > before).then_some(())
    })
    .await;
    // The pool was rebuilt from the same upstreams: its position carried over.
    let second = get(p.addr, "rr.foo.bar", "/").await.backend();
    assert_ne!(first, second, "the swap restarted round-robin");
    let third = get(p.addr, "rr.foo.bar", "/").await.backend();
    assert_eq!(third, first);
}

#[tokio::test]
async fn a_request_never_waits_behind_another_clients_upload() {
    let a = Backend::spawn("a").await;
    let p = Proxy::builder()
        .route("u.foo.bar", &[a.addr], "")
        .spawn()
        .await;
    // A slow upload that the upstream answers before reading it all.
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>(1);
    let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let mut sender = support::client::sender(p.addr).await;
    let req = http::Request::post("/early")
        .header("host", "u.foo.bar")
        .header("content-length", (1u64 << 20).to_string())
        .body(body)
        .unwrap();
    tx.send(Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![
        b'x';
        1024
    ]))))
    .await
    .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    // The upload is still open; the next request must not queue behind it.
    let next =
        tokio::time::timeout(Duration::from_secs(5), get(p.addr, "u.foo.bar", "/next")).await;
    assert_eq!(next.expect("the second request was not stuck").status, 200);
    drop(tx);
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_rejected_routes_file_is_a_published_note_until_it_is_fixed() {
    use branchgate::routes::{NoteKind, Origin, ProviderId};
    let a = Backend::spawn("a").await;
    let good = support::proxy::route_toml("n.foo.bar", &[a.addr], "");
    let p = Proxy::builder().toml(&good).spawn().await;
    assert!(p.table.load().notes().is_empty());
    p.write_routes(&format!(
        "{good}[[route]]\nhost = \"x.foo.bar\"\nhsts = \"forever\"\n"
    ));
    let note = support::eventually(Duration::from_secs(5), "the note", || async {
        p.table.load().notes().first().cloned()
    })
    .await;
    assert_eq!(
        (note.origin, &note.kind),
        (Origin::Provider(ProviderId::File), &NoteKind::FileRejected)
    );
    assert!(
        note.message
            .contains(": route: hsts = \"forever\": must be off"),
        "{}",
        note.message
    );
    assert_eq!(
        get(p.addr, "n.foo.bar", "/").await.status,
        200,
        "the routes in force stay"
    );
    let fixed = good.replace("n.foo.bar", "m.foo.bar");
    p.write_routes(&fixed);
    support::eventually(Duration::from_secs(5), "the fix", || async {
        let snapshot = p.table.load();
        (snapshot.notes().is_empty() && snapshot.table().find_host("m.foo.bar").is_some())
            .then_some(())
    })
    .await;
    // Gone: a note, the routes stay. Back with the same text: the note goes.
    std::fs::remove_file(&p.routes).unwrap();
    let note = support::eventually(Duration::from_secs(5), "the unreadable note", || async {
        p.table.load().notes().first().cloned()
    })
    .await;
    assert!(
        note.message.starts_with("cannot be read"),
        "{}",
        note.message
    );
    assert_eq!(get(p.addr, "m.foo.bar", "/").await.status, 200);
    p.write_routes(&fixed);
    support::eventually(Duration::from_secs(5), "the note to go", || async {
        p.table.load().notes().is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn specs_that_disagree_are_resolved_by_the_rule_and_noted() {
    use branchgate::routes::{HttpsMethod, Lookup, NoteKind};
    let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
    let p = Proxy::builder()
        .route(
            "c.foo.bar",
            &[a.addr],
            "https_method = \"noredirect\"\nhsts = \"off\"",
        )
        .route(
            "c.foo.bar",
            &[b.addr],
            "https_method = \"nohttp\"\nhsts = \"max-age=600\"",
        )
        .spawn()
        .await;
    let snapshot = p.table.load();
    let Lookup::Found(route, _) = snapshot.table().lookup("c.foo.bar", "/") else {
        panic!("no route")
    };
    assert_eq!(
        route.policy.https_method,
        Some(HttpsMethod::NoHttp),
        "the strictest"
    );
    assert_eq!(route.policy.hsts.to_string(), "max-age=600");
    let conflicts: Vec<&str> = snapshot
        .notes()
        .iter()
        .filter(|n| n.kind == NoteKind::Conflict)
        .map(|n| n.message.as_str())
        .collect();
    assert_eq!(conflicts.len(), 2, "{conflicts:?}");
    assert!(
        conflicts.iter().all(|m| m.starts_with("c.foo.bar/: ")),
        "{conflicts:?}"
    );
    // Both upstreams serve the route.
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..4 {
        seen.push(get(p.addr, "c.foo.bar", "/").await.backend());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["a", "b"]);
}

#[tokio::test]
async fn every_address_answers_on_two_workers_and_everything_stops() {
    let a = Backend::spawn("a").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        support::proxy::route_toml("l.foo.bar", &[a.addr], "https_method = \"noredirect\""),
    )
    .unwrap();
    let argv = [
        "branchgate",
        "--http",
        "127.0.0.1:0,127.0.0.2:0",
        "--http",
        "127.0.0.3:0",
        "--https",
        "127.0.0.1:0",
        "--workers",
        "2",
        // Every kind of background task runs, and must stop with the rest:
        // a Docker watcher retrying an engine that is not there, the demo.
        "--docker",
        "unix:///nonexistent/docker.sock",
        "--demo",
        "--access-log",
        "off",
        "--routes",
        routes.to_str().unwrap(),
    ];
    let config = <branchgate::Config as clap::Parser>::try_parse_from(argv).unwrap();
    let bound = branchgate::bind(config).await.unwrap();
    let addrs = bound.http_addrs();
    assert_eq!(addrs.len(), 3);
    let demo_http = bound.http_addr();
    let bound_https = bound.https_addrs();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(bound.run(stop.clone()));
    for addr in &addrs {
        // Each address has one socket per worker (SO_REUSEPORT); the kernel
        // picks which one takes a connection.
        for _ in 0..4 {
            let r = get(*addr, "l.foo.bar", "/").await;
            assert_eq!(
                (r.status.as_u16(), r.backend().as_str()),
                (200, "a"),
                "{addr}"
            );
        }
    }
    // Over HTTPS too, on every worker, with the demo's certificate.
    let https = bound_https[0];
    for _ in 0..4 {
        assert_eq!(
            support::tls::get(https, "l.foo.bar", "/").await.backend(),
            "a"
        );
    }
    let demo = support::tls::get(https, "localhost", "/").await;
    assert_eq!(
        demo.status, 200,
        "the demo backend answers through the proxy"
    );
    // Over plain HTTP the demo is not redirected to its self-signed
    // certificate (a browser would stop at a warning).
    let r = get(demo_http, "127.0.0.1", "/").await;
    assert_eq!(r.status, 200);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("every worker and background task stopped")
        .unwrap()
        .unwrap();
}
