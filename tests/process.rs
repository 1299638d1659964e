//! The real `branchgate` binary: routes-file hot reload, graceful shutdown on
//! SIGTERM, memory while streaming 1 GiB, flag errors, access logs, workers.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::net::TcpStream;

use support::client::Conn;
use support::proxy::{route_toml, write_atomically};
use support::{Backend, ProxyProcess, eventually, get};

#[tokio::test]
async fn routes_file_changes_apply_live_and_invalid_ones_are_refused() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let mut p = ProxyProcess::spawn(
        &route_toml("r.foo.bar", &[a.addr], ""),
        &["--access-log", "off"],
    )
    .await;
    let mut conn = Conn::open(p.addr).await;
    assert_eq!(conn.get("r.foo.bar", "/").await.unwrap().backend(), "a");

    // A valid change: live without dropping the open keep-alive connection.
    let changed = Instant::now();
    write_atomically(&p.routes, &route_toml("r.foo.bar", &[b.addr], ""));
    eventually(Duration::from_secs(5), "the new route", || async {
        (get(p.addr, "r.foo.bar", "/").await.backend() == "b").then_some(())
    })
    .await;
    eprintln!(
        "valid routes-file change live after {:?}",
        changed.elapsed()
    );
    assert_eq!(
        conn.get("r.foo.bar", "/").await.unwrap().backend(),
        "b",
        "same connection"
    );

    // An invalid change: one clear error naming file and line; routes stay.
    let bad = format!(
        "{}[[route]]\nhost = \"x.foo.bar\"\nupstreams = [\"not-an-address\"]\n",
        route_toml("r.foo.bar", &[a.addr], "")
    );
    write_atomically(&p.routes, &bad);
    let line = eventually(Duration::from_secs(5), "the error log", || async {
        p.stderr()
            .into_iter()
            .find(|l| l.contains("invalid routes file"))
    })
    .await;
    assert!(
        line.contains("routes.toml:6: route: upstream \\\"not-an-address\\\" is not IP:port"),
        "{line}"
    );
    assert!(line.contains("\"level\":\"ERROR\""), "{line}");
    for _ in 0..3 {
        assert_eq!(
            get(p.addr, "r.foo.bar", "/").await.backend(),
            "b",
            "previous table in force"
        );
    }
    let syntax = "[[route]\nhost = \"r.foo.bar\"\n";
    write_atomically(&p.routes, syntax);
    eventually(Duration::from_secs(5), "the syntax error log", || async {
        p.stderr()
            .into_iter()
            .find(|l| l.contains("invalid routes file") && l.contains("routes.toml:1:"))
    })
    .await;
    assert_eq!(get(p.addr, "r.foo.bar", "/").await.backend(), "b");
    let errors = p
        .stderr()
        .iter()
        .filter(|l| l.contains("invalid routes file"))
        .count();
    assert_eq!(errors, 2, "one error per bad version, not one per poll");
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(10)).await.success());
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let a = Backend::spawn("a").await;
    let mut p = ProxyProcess::spawn(
        &route_toml("g.foo.bar", &[a.addr], ""),
        &["--access-log", "off"],
    )
    .await;
    let addr = p.addr;
    let slow = tokio::spawn(async move { get(addr, "g.foo.bar", "/slow/1500").await });
    a.wait_for_connection().await;
    let started = Instant::now();
    p.signal("TERM");
    // New connections are refused once the listener is closed.
    eventually(Duration::from_secs(5), "the listener to close", || async {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request finished");
    let status = p.wait(Duration::from_secs(9)).await;
    assert!(status.success(), "{status:?}");
    eprintln!("exited {:?} after SIGTERM", started.elapsed());
}

#[tokio::test]
async fn the_grace_period_bounds_shutdown() {
    let a = Backend::spawn("a").await;
    let mut p = ProxyProcess::spawn(
        &route_toml("g.foo.bar", &[a.addr], ""),
        &["--access-log", "off", "--grace-period", "500ms"],
    )
    .await;
    let addr = p.addr;
    let stuck = tokio::spawn(async move {
        let mut c = Conn::open(addr).await;
        c.get("g.foo.bar", "/slow/30000").await
    });
    a.wait_for_connection().await;
    let started = Instant::now();
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(5)).await.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck request was cut at the deadline"
    );
}

fn stream_body(total: u64) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
    let s = futures_util::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            (left > 0).then(|| {
                let n = left.min(chunk.len() as u64);
                (Ok(Frame::data(chunk.slice(..n as usize))), left - n)
            })
        }
    });
    BodyExt::boxed(StreamBody::new(s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1gib_upload_and_download_stream_without_raising_rss() {
    const GIB: u64 = 1 << 30;
    let a = Backend::spawn("a").await;
    let p = ProxyProcess::spawn(
        &route_toml("big.foo.bar", &[a.addr], ""),
        &["--access-log", "off"],
    )
    .await;
    assert_eq!(get(p.addr, "big.foo.bar", "/").await.status, 200);
    let base = p.mem_kib("VmRSS");

    let mut sender = support::client::sender(p.addr).await;
    let started = Instant::now();
    let req = http::Request::post("/upload")
        .header("host", "big.foo.bar")
        .body(stream_body(GIB))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["received"].as_u64(), Some(GIB));
    let up = started.elapsed();

    let started = Instant::now();
    sender.ready().await.unwrap();
    let req = http::Request::get(format!("/bytes/{GIB}"))
        .header("host", "big.foo.bar")
        .body(stream_body(0))
        .unwrap();
    let mut body = sender.send_request(req).await.unwrap().into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        got += f.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(got, GIB);
    let down = started.elapsed();

    let peak = p.mem_kib("VmHWM");
    eprintln!(
        "1 GiB up in {up:?}, down in {down:?}; proxy RSS {} KiB before, peak {} KiB (+{} KiB)",
        base,
        peak,
        peak.saturating_sub(base)
    );
    assert!(
        peak.saturating_sub(base) < 8 * 1024,
        "peak RSS grew by {} KiB",
        peak - base
    );
}

#[tokio::test]
async fn bad_flags_exit_with_one_line_naming_the_flag() {
    let bin = env!("CARGO_BIN_EXE_branchgate");
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 8] = [
        (&["--http", "nope"], &[], "--http"),
        (&["--defer-accept", "later"], &[], "--defer-accept"),
        (&["--connect-timeout", "5x"], &[], "--connect-timeout"),
        (&["--access-log", "loud"], &[], "--access-log"),
        (&[], &[("BRANCHGATE_HTTP", "1.2.3.4")], "--http"),
        (&["--workers", "9999"], &[], "--workers"),
        (&["--docker", "/var/run/docker.sock"], &[], "--docker"),
        (&[], &[("BRANCHGATE_NO_DOCKER", "maybe")], "--no-docker"),
    ];
    for (args, envs, flag) in cases {
        let out = std::process::Command::new(bin)
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {envs:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(flag), "{err}");
    }
    // A routes file that does not load at start-up names the flag, file and line.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.toml");
    std::fs::write(
        &f,
        "[[route]]\nhost = \"a\"\nproto = \"gopher\"\nupstreams = []\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["--http", "127.0.0.1:0", "--https", "off", "--routes"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("r.toml:1: route: proto must be `http` or `https`"),
        "{err}"
    );
    assert!(err.contains("--routes: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");

    // DOCKER_HOST is the default engine address, so it is checked as one.
    let out = std::process::Command::new(bin)
        .args(["--http", "127.0.0.1:0", "--https", "off"])
        .env("DOCKER_HOST", "ftp://engine")
        .env_remove("BRANCHGATE_DOCKER")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DOCKER_HOST=\"ftp://engine\""), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

#[tokio::test]
async fn access_log_in_common_and_json_formats_and_several_workers() {
    let a = Backend::spawn("a").await;
    let routes = route_toml("log.foo.bar", &[a.addr], "");
    let common = ProxyProcess::spawn(&routes, &["--access-log", "common", "--workers", "2"]).await;
    for _ in 0..8 {
        assert_eq!(get(common.addr, "log.foo.bar", "/c?q=1").await.status, 200);
    }
    assert_eq!(get(common.addr, "nope.foo.bar", "/").await.status, 503);
    let line = eventually(Duration::from_secs(5), "a common log line", || async {
        common.stdout().into_iter().find(|l| l.contains("/c?q=1"))
    })
    .await;
    let re = regex::Regex::new(
        r#"^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /c\?q=1 HTTP/1\.1" 200 \d+ "log\.foo\.bar" 127\.0\.0\.1:\d+ \d+\.\d{3}$"#,
    )
    .unwrap();
    assert!(re.is_match(&line), "{line}");
    eventually(Duration::from_secs(5), "the 503 line", || async {
        common
            .stdout()
            .into_iter()
            .find(|l| l.contains("\" 503 ") && l.contains("nope.foo.bar\" - "))
    })
    .await;

    let json = ProxyProcess::spawn(&routes, &["--access-log", "json"]).await;
    assert_eq!(get(json.addr, "log.foo.bar", "/j").await.status, 200);
    let line = eventually(Duration::from_secs(5), "a JSON log line", || async {
        json.stdout().into_iter().find(|l| l.contains("/j"))
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], 200);
    assert_eq!(v["host"], "log.foo.bar");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/j");
    assert_eq!(v["upstream"], a.addr.to_string());
    assert!(v["bytes"].as_u64().unwrap() > 10);
    assert!(v["duration_ms"].as_f64().is_some());
    assert!(v["timestamp"].is_string());
}

#[tokio::test]
async fn a_refused_upstream_is_logged_once_per_request() {
    // A port nothing listens on: bound, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = ProxyProcess::spawn(&route_toml("dead.foo.bar", &[dead], ""), &[]).await;
    assert_eq!(get(p.addr, "dead.foo.bar", "/").await.status, 502);
    // A publish logs after everything the request logged (one stderr, in order).
    write_atomically(&p.routes, &route_toml("marker.foo.bar", &[dead], ""));
    eventually(
        Duration::from_secs(5),
        "the publish after the request",
        || async {
            p.stderr()
                .iter()
                .any(|l| l.contains("route table published") && l.contains("marker.foo.bar"))
                .then_some(())
        },
    )
    .await;
    let lines: Vec<String> = p
        .stderr()
        .into_iter()
        .filter(|l| l.contains(&dead.to_string()))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("\"level\":\"WARN\"") && lines[0].contains("upstream error"),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn unusable_certificate_files_get_one_warning_each_and_the_rest_serve() {
    use support::tls::{self, Ca, Key};
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca.issue("good", &["good.foo.bar"], Key::Ec)
        .write(d, "good.foo.bar");
    let nokey = ca.issue("nokey", &["nokey.foo.bar"], Key::Ec);
    write_atomically(&d.join("nokey.foo.bar.crt"), &nokey.chain);
    let mismatch = ca.issue("mismatch", &["mismatch.foo.bar"], Key::Ec);
    write_atomically(&d.join("mismatch.foo.bar.crt"), &mismatch.chain);
    write_atomically(&d.join("mismatch.foo.bar.key"), &nokey.key);
    ca.issue_expired("expired", &["expired.foo.bar"])
        .write(d, "expired.foo.bar");
    write_atomically(&d.join("garbage.foo.bar.crt"), "not a certificate\n");
    write_atomically(&d.join("garbage.foo.bar.key"), &nokey.key);
    let unreadable = d.join("unreadable.foo.bar.crt");
    std::os::unix::fs::symlink(d.join("dangling"), &unreadable).unwrap();
    let be = Backend::spawn("be").await;
    let hosts = [
        "good",
        "nokey",
        "mismatch",
        "expired",
        "garbage",
        "unreadable",
    ];
    let routes: String = hosts
        .iter()
        .map(|h| route_toml(&format!("{h}.foo.bar"), &[be.addr], ""))
        .collect();
    let p = ProxyProcess::spawn(
        &routes,
        &["--https", "127.0.0.1:0", "--certs", d.to_str().unwrap()],
    )
    .await;
    let https = p.https.unwrap();
    assert_eq!(tls::get(https, "good.foo.bar", "/").await.backend(), "be");
    // Several polls later, still one warning per file.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let warnings: Vec<serde_json::Value> = p
        .stderr()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "certificate skipped")
        .collect();
    for (host, why) in [
        ("nokey", "no nokey.foo.bar.key beside it"),
        ("mismatch", "its .key does not belong to the certificate"),
        ("expired", "expired"),
        ("garbage", "holds no certificate"),
        ("unreadable", "cannot be read"),
    ] {
        let file = d.join(format!("{host}.foo.bar.crt"));
        let mine: Vec<_> = warnings
            .iter()
            .filter(|v| v["fields"]["file"] == file.to_str().unwrap())
            .collect();
        assert_eq!(mine.len(), 1, "{host}: {warnings:#?}");
        let reason = mine[0]["fields"]["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{host}: {reason}");
        let err = tls::Client::new(&format!("{host}.foo.bar"))
            .connect(https)
            .await
            .err()
            .unwrap_or_else(|| panic!("{host} must not be served"));
        assert_eq!(tls::alert(&err), "UnrecognisedName");
    }
    assert_eq!(warnings.len(), 5, "{warnings:#?}");
}

#[tokio::test]
async fn an_https_listener_that_cannot_bind_stops_start_up_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_branchgate"))
        .args(["--http", "127.0.0.1:0", "--https", &addr, "--no-docker"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains(&format!("--https {addr}: cannot listen")),
        "{err}"
    );
    for (args, flag) in [
        (&["--https", "nope"][..], "--https"),
        (&["--non-get-redirect", "200"][..], "--non-get-redirect"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_branchgate"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(flag), "{err}");
    }
}

/// The README's first command, as a user who is not root runs it: loopback
/// ports, a self-signed certificate made at start, two frontend and two
/// backend branches deployed under `localhost` (the matrix at
/// `http://localhost:8080/`), and the dashboard on 127.0.0.1:8081.
#[tokio::test]
async fn demo_defaults_to_loopback_ports_with_a_self_signed_certificate() {
    use support::tls::Client;
    for port in [8080, 8443, 8081] {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            support::skip_unless_ci(
                "demo_defaults_to_loopback_ports_with_a_self_signed_certificate",
                &format!("127.0.0.1:{port} is taken on this machine"),
            );
            return;
        }
    }
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_branchgate"))
        .args(["--demo", "--no-docker", "--workers", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let https: std::net::SocketAddr = "127.0.0.1:8443".parse().unwrap();
    let host = "feature-login.feature-payments.localhost";
    let session = eventually(
        Duration::from_secs(10),
        "the demo's HTTPS listener",
        || async { Client::new(host).connect(https).await.ok() },
    )
    .await;
    assert_eq!(session.cn, "rcgen self signed cert");
    let (r, _) = session.get(host, "/api/hello").await;
    assert_eq!(r.status, http::StatusCode::OK);
    assert_eq!(r.json()["backend"], "demo backend feature/payments");
    let again = Client::new(host).connect(https).await.unwrap();
    let (r, _) = again.get(host, "/").await;
    let page = String::from_utf8_lossy(&r.body).into_owned();
    assert!(page.contains("demo frontend feature/login"), "{page}");

    // Plain HTTP works too (no redirect to a self-signed certificate): the
    // matrix on localhost links every environment, the echo backend on
    // 127.0.0.1 shows what was forwarded.
    let http: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let r = get(http, "localhost:8080", "/").await;
    assert_eq!(r.status, http::StatusCode::OK);
    let matrix = String::from_utf8_lossy(&r.body).into_owned();
    for env in [
        "main.main",
        "main.feature-payments",
        "feature-login.main",
        "feature-login.feature-payments",
    ] {
        assert!(
            matrix.contains(&format!("{env}.localhost:8080")),
            "{env}: {matrix}"
        );
    }
    let r = get(http, "main.main.localhost:8080", "/api/x").await;
    assert_eq!(r.json()["backend"], "demo backend main");
    let r = get(http, "127.0.0.1:8080", "/hello").await;
    assert!(String::from_utf8_lossy(&r.body).contains("GET /hello"));

    // The dashboard's API on the admin port, no token on loopback.
    let admin: std::net::SocketAddr = "127.0.0.1:8081".parse().unwrap();
    let b = get(admin, "admin", "/api/branches").await.json();
    assert_eq!(b["domain"], "localhost");
    assert_eq!(
        (
            b["frontends"].as_array().unwrap().len(),
            b["backends"].as_array().unwrap().len()
        ),
        (2, 2)
    );
    let r = get(admin, "admin", "/").await;
    assert_eq!(r.status, http::StatusCode::OK);
    child.kill().await.unwrap();
}

/// Where the server side of the TCP connection from `client` to `server`
/// is, as /proc/net/tcp lists it: `01` established, `03` SYN_RECV (the
/// handshake is done, but the kernel holds the connection back from
/// `accept`).
fn server_side_state(server: SocketAddr, client: SocketAddr) -> Option<u8> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(a) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(a.ip().octets()),
            a.port()
        ),
        SocketAddr::V6(_) => unreachable!("the test listens on 127.0.0.1"),
    };
    let (server, client) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f[1] == server && f[2] == client).then(|| u8::from_str_radix(f[3], 16).unwrap())
    })
}

#[tokio::test]
async fn new_connections_reach_the_proxy_with_their_first_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const ESTABLISHED: u8 = 0x01;
    const SYN_RECV: u8 = 0x03;
    let b = Backend::spawn("b").await;
    let routes = route_toml("d.foo.bar", &[b.addr], "");
    let deferred = ProxyProcess::spawn(&routes, &["--access-log", "off"]).await;
    let eager =
        ProxyProcess::spawn(&routes, &["--access-log", "off", "--defer-accept=false"]).await;
    let state = |p: &ProxyProcess, c: &TcpStream| {
        let client = c.local_addr().unwrap();
        let server = p.addr;
        async move { server_side_state(server, client) }
    };

    // --defer-accept=false: established at once, whether the client speaks or not.
    let silent = TcpStream::connect(eager.addr).await.unwrap();
    let seen = eventually(Duration::from_secs(5), "the connection", || {
        state(&eager, &silent)
    })
    .await;
    assert_eq!(seen, ESTABLISHED);

    // The default: a silent client's connection stays with the kernel...
    let mut c = TcpStream::connect(deferred.addr).await.unwrap();
    let seen = eventually(Duration::from_secs(5), "the connection", || {
        state(&deferred, &c)
    })
    .await;
    assert_eq!(seen, SYN_RECV, "held back until the client sends");
    // ...until its request arrives, which is answered as ever.
    c.write_all(b"GET / HTTP/1.1\r\nHost: d.foo.bar\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}
