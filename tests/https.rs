//! HTTPS, black-box: a throw-away CA issues certificates into a `--certs`
//! directory in nginx-proxy's layout, and TLS clients over real sockets check
//! which certificate is served, nginx-proxy's HTTP/HTTPS rules, HSTS, ALPN,
//! WebSockets and the forwarded headers over TLS, and what bad input gets.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use support::tls::{self, Ca, Client, Key, client_hello, exchange};
use support::{Backend, Proxy, eventually, get, get_with};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How soon a change in the certificate directory must serve.
const LIVE: Duration = Duration::from_secs(2);

/// A proxy with an HTTPS listener over `dir`, one backend, and `routes`.
async fn proxy(dir: &Path, routes: &str, extra: &[&str]) -> Proxy {
    let mut b = Proxy::builder()
        .toml(routes)
        .arg("--https")
        .arg("127.0.0.1:0")
        .arg("--certs")
        .arg(dir.to_str().unwrap());
    for a in extra {
        b = b.arg(a);
    }
    b.spawn().await
}

fn route(host: &str, backend: &Backend, extra: &str) -> String {
    support::proxy::route_toml(host, &[backend.addr], extra)
}

/// The common name served to a client sending `sni` (`None`: no SNI).
async fn served(addr: SocketAddr, sni: Option<&str>) -> Result<String, String> {
    let mut c = Client::new("x");
    c.sni = sni.map(str::to_owned);
    match c.connect(addr).await {
        Ok(s) => Ok(s.cn),
        Err(e) => Err(tls::alert(&e)),
    }
}

#[tokio::test]
async fn certificates_are_chosen_own_then_cert_name_then_parent_then_default() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca.issue("own", &["a.foo.bar"], Key::Ec)
        .write(d, "a.foo.bar");
    ca.issue("shared", &["a.foo.bar", "c.foo.bar"], Key::Ec)
        .write(d, "shared");
    ca.issue("parent", &["foo.bar", "*.foo.bar"], Key::Ec)
        .write(d, "foo.bar");
    // A file named for the host whose names do not cover it is never served for it.
    ca.issue("wrong-names", &["other.example"], Key::Ec)
        .write(d, "x.foo.bar");
    ca.issue("default", &["default.invalid"], Key::Ec)
        .write(d, "default");
    let be = Backend::spawn("be").await;
    let routes = [
        route("a.foo.bar", &be, "cert_name = \"shared\""),
        route("c.foo.bar", &be, "cert_name = \"shared\""),
        route("b.foo.bar", &be, ""),
        route("x.foo.bar", &be, ""),
        route("y.foo.bar", &be, "cert_name = \"missing\""),
        route("d.e.foo.bar", &be, ""),
    ]
    .concat();
    let p = proxy(d, &routes, &[]).await;
    let https = p.https.unwrap();
    for (sni, cn) in [
        // Its own file first, even with a CERT_NAME.
        ("a.foo.bar", "own"),
        // CERT_NAME when there is no own file.
        ("c.foo.bar", "shared"),
        // The parent domain's, one level up.
        ("b.foo.bar", "parent"),
        ("x.foo.bar", "parent"),
        ("y.foo.bar", "parent"),
        // `*.foo.bar` does not cover two labels; `e.foo.bar.crt` does not exist.
        ("d.e.foo.bar", "default"),
        // Unknown names get default.crt (and a 503 below).
        ("unknown.example", "default"),
    ] {
        assert_eq!(served(https, Some(sni)).await.as_deref(), Ok(cn), "{sni}");
    }
    assert_eq!(served(https, None).await.as_deref(), Ok("default"));
    // A client that checks names accepts what is served for a covered host.
    let mut strict = Client::new("c.foo.bar");
    strict.ca = Some(ca.pem());
    let session = strict.connect(https).await.expect("a verified handshake");
    assert_eq!(session.get("c.foo.bar", "/").await.0.backend(), "be");
    // An unknown host over HTTPS: 503 after the handshake with default.crt.
    assert_eq!(
        tls::status(https, "unknown.example", "/").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(tls::get(https, "b.foo.bar", "/").await.backend(), "be");
}

#[tokio::test]
async fn without_a_default_certificate_unknown_names_get_unrecognized_name() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    ca.issue("own", &["a.foo.bar"], Key::Ec)
        .write(dir.path(), "a.foo.bar");
    let be = Backend::spawn("be").await;
    let p = proxy(dir.path(), &route("a.foo.bar", &be, ""), &[]).await;
    let https = p.https.unwrap();
    assert_eq!(served(https, Some("a.foo.bar")).await.as_deref(), Ok("own"));
    for sni in [Some("unknown.example"), Some("b.foo.bar"), None] {
        assert_eq!(
            served(https, sni).await,
            Err("UnrecognisedName".into()),
            "{sni:?}"
        );
    }
    // The refused handshakes cost the others nothing.
    assert_eq!(tls::get(https, "a.foo.bar", "/").await.backend(), "be");
}

#[tokio::test]
async fn rsa_and_ecdsa_keys_in_every_format_over_tls_1_2_and_1_3() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let be = Backend::spawn("be").await;
    let mut routes = String::new();
    let kinds = [
        ("rsa-pkcs1", Key::RsaPkcs1),
        ("rsa-pkcs8", Key::Rsa),
        ("ec-sec1", Key::EcSec1),
        ("ec-pkcs8", Key::Ec),
    ];
    for (name, key) in kinds {
        let host = format!("{name}.foo.bar");
        ca.issue(name, &[&host], key).write(dir.path(), &host);
        routes.push_str(&route(&host, &be, ""));
    }
    let p = proxy(dir.path(), &routes, &[]).await;
    let https = p.https.unwrap();
    for (name, _) in kinds {
        let host = format!("{name}.foo.bar");
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let mut c = Client::new(&host);
            c.version = Some(version);
            c.ca = Some(ca.pem());
            let s = c
                .connect(https)
                .await
                .unwrap_or_else(|e| panic!("{host} {:?}: {e}", version.version));
            assert_eq!(s.cn, name);
            assert_eq!(s.version, version.version);
            assert_eq!(s.get(&host, "/").await.0.backend(), "be");
        }
    }
}

#[tokio::test]
async fn sessions_resume_by_ticket_and_by_session_id() {
    use rustls::client::{Resumption, Tls12Resumption};
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    ca.issue("s", &["s.foo.bar"], Key::Ec)
        .write(dir.path(), "s.foo.bar");
    let be = Backend::spawn("be").await;
    let p = proxy(
        dir.path(),
        &route("s.foo.bar", &be, ""),
        &["--workers", "2"],
    )
    .await;
    let https = p.https.unwrap();
    for (version, tls12) in [
        // TLS 1.3: tickets.
        (&rustls::version::TLS13, Tls12Resumption::SessionIdOrTickets),
        // TLS 1.2: tickets, and the server's session cache (session ids).
        (&rustls::version::TLS12, Tls12Resumption::SessionIdOrTickets),
        (&rustls::version::TLS12, Tls12Resumption::SessionIdOnly),
    ] {
        let mut c = Client::new("s.foo.bar");
        c.version = Some(version);
        c.resumption = Resumption::in_memory_sessions(8).tls12_resumption(tls12);
        let connector = c.connector();
        let first = c.connect_via(&connector, https).await.unwrap();
        assert!(!first.resumed);
        // A TLS 1.3 ticket arrives after the handshake: read a response first.
        assert_eq!(first.get("s.foo.bar", "/").await.0.backend(), "be");
        // Tickets and the session cache are shared by the workers.
        for _ in 0..4 {
            let again = c.connect_via(&connector, https).await.unwrap();
            assert!(again.resumed, "{:?} {tls12:?}", version.version);
            assert_eq!(again.get("s.foo.bar", "/").await.0.backend(), "be");
        }
    }
}

#[tokio::test]
async fn certificates_added_replaced_and_removed_are_live_without_a_restart() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let be = Backend::spawn("be").await;
    let routes = [
        route("h.foo.bar", &be, ""),
        route("k.foo.bar", &be, ""),
        route("m.foo.bar", &be, ""),
    ]
    .concat();
    ca.issue("steady", &["k.foo.bar"], Key::Ec)
        .write(d, "k.foo.bar");
    let p = proxy(d, &routes, &[]).await;
    let https = p.https.unwrap();
    let until = |sni: &'static str, want: Result<&'static str, &'static str>| async move {
        let want = want.map(str::to_owned).map_err(str::to_owned);
        eventually(LIVE, &format!("{sni} to serve {want:?}"), || {
            let want = want.clone();
            async move { (served(https, Some(sni)).await == want).then_some(()) }
        })
        .await;
    };
    assert_eq!(
        served(https, Some("h.foo.bar")).await,
        Err("UnrecognisedName".into())
    );
    // Added.
    ca.issue("v1", &["h.foo.bar"], Key::Ec)
        .write(d, "h.foo.bar");
    until("h.foo.bar", Ok("v1")).await;
    // Replaced.
    ca.issue("v2", &["h.foo.bar"], Key::Ec)
        .write(d, "h.foo.bar");
    until("h.foo.bar", Ok("v2")).await;
    // Removed.
    std::fs::remove_file(d.join("h.foo.bar.crt")).unwrap();
    std::fs::remove_file(d.join("h.foo.bar.key")).unwrap();
    until("h.foo.bar", Err("UnrecognisedName")).await;

    // A .crt without its .key is skipped until the key comes.
    let m = ca.issue("m", &["m.foo.bar"], Key::Ec);
    support::proxy::write_atomically(&d.join("m.foo.bar.crt"), &m.chain);
    tokio::time::sleep(LIVE).await;
    assert_eq!(
        served(https, Some("m.foo.bar")).await,
        Err("UnrecognisedName".into())
    );
    support::proxy::write_atomically(&d.join("m.foo.bar.key"), &m.key);
    until("m.foo.bar", Ok("m")).await;
    // A key that does not match: skipped; the certificate it replaced no
    // longer serves, and every other one does.
    let other = ca.issue("other", &["m.foo.bar"], Key::Ec);
    support::proxy::write_atomically(&d.join("m.foo.bar.key"), &other.key);
    until("m.foo.bar", Err("UnrecognisedName")).await;
    assert_eq!(
        served(https, Some("k.foo.bar")).await.as_deref(),
        Ok("steady")
    );
    assert_eq!(tls::get(https, "k.foo.bar", "/").await.backend(), "be");
}

/// The four methods on hosts with their own certificate, with only
/// `default.crt`, and (second proxy, no default) with none at all.
#[tokio::test]
async fn https_method_matrix_over_http_and_https() {
    const METHODS: [&str; 4] = ["redirect", "noredirect", "nohttp", "nohttps"];
    let ca = Ca::new();
    let be = Backend::spawn("be").await;
    let with_default = tempfile::tempdir().unwrap();
    let without_default = tempfile::tempdir().unwrap();
    let mut routes_a = String::new();
    let mut routes_b = String::new();
    for m in METHODS {
        let own = format!("own-{m}.foo.bar");
        let issued = ca.issue(&own, &[&own], Key::Ec);
        issued.write(with_default.path(), &own);
        issued.write(without_default.path(), &own);
        let extra = format!("https_method = \"{m}\"");
        routes_a.push_str(&route(&own, &be, &extra));
        routes_a.push_str(&route(&format!("dflt-{m}.foo.bar"), &be, &extra));
        routes_b.push_str(&route(&own, &be, &extra));
        routes_b.push_str(&route(&format!("none-{m}.foo.bar"), &be, &extra));
    }
    ca.issue("default", &["default.invalid"], Key::Ec)
        .write(with_default.path(), "default");
    let a = proxy(with_default.path(), &routes_a, &[]).await;
    let b = proxy(without_default.path(), &routes_b, &[]).await;

    // (proxy, host, over HTTP, over HTTPS); 0 = the handshake is refused.
    let mut cases = Vec::new();
    for m in METHODS {
        let (http, https) = match m {
            "redirect" => (301, 200),
            "noredirect" => (200, 200),
            "nohttp" => (503, 200),
            _ => (200, 503),
        };
        cases.push((&a, format!("own-{m}.foo.bar"), http, https));
        cases.push((&b, format!("own-{m}.foo.bar"), http, https));
        // default.crt counts as a certificate (TRUST_DEFAULT_CERT=true).
        cases.push((&a, format!("dflt-{m}.foo.bar"), http, https));
        // No certificate at all: served over HTTP, whatever the method
        // (ENABLE_HTTP_ON_MISSING_CERT=true); no handshake.
        cases.push((&b, format!("none-{m}.foo.bar"), 200, 0));
    }
    for (p, host, http, https) in cases {
        let port = p.https.unwrap().port();
        let r = get(p.addr, &host, "/path?q=1").await;
        assert_eq!(r.status.as_u16(), http, "{host} over HTTP");
        match http {
            200 => assert_eq!(r.backend(), "be", "{host}"),
            301 => assert_eq!(
                r.headers["location"],
                format!("https://{host}:{port}/path?q=1").as_str()
            ),
            _ => {}
        }
        assert!(!r.headers.contains_key("strict-transport-security"));
        match Client::new(&host).connect(p.https.unwrap()).await {
            Ok(s) => {
                let (r, _) = s.get(&host, "/").await;
                assert_eq!(r.status.as_u16(), https, "{host} over HTTPS");
                if https == 200 {
                    assert_eq!(r.backend(), "be", "{host}");
                }
            }
            Err(e) => {
                assert_eq!(https, 0, "{host}: handshake failed: {e}");
                assert_eq!(tls::alert(&e), "UnrecognisedName");
            }
        }
    }
}

#[tokio::test]
async fn redirects_keep_the_target_name_the_port_and_use_the_non_get_status() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    ca.issue("r", &["r.foo.bar"], Key::Ec)
        .write(dir.path(), "r.foo.bar");
    let be = Backend::spawn("be").await;
    let routes = route("r.foo.bar", &be, "");
    let plain = proxy(dir.path(), &routes, &[]).await;
    let strict = proxy(dir.path(), &routes, &["--non-get-redirect", "308"]).await;
    for (p, non_get) in [(&plain, 301), (&strict, 308)] {
        let port = p.https.unwrap().port();
        let want = format!("https://r.foo.bar:{port}/a/b?x=1&y=2");
        for (method, status) in [
            ("GET", 301),
            ("HEAD", 301),
            ("POST", non_get),
            ("PUT", non_get),
        ] {
            let mut c = support::client::Conn::open(p.addr).await;
            let req = Request::builder()
                .method(method)
                .uri("/a/b?x=1&y=2")
                .header("host", "R.foo.bar:80")
                .body(Full::new(Bytes::from_static(b"body")))
                .unwrap();
            let r = c.send(req).await.unwrap();
            assert_eq!(r.status.as_u16(), status, "{method}");
            assert_eq!(r.headers["location"], want.as_str(), "{method}");
        }
        // ACME HTTP-01 challenges are never redirected.
        let r = get(p.addr, "r.foo.bar", "/.well-known/acme-challenge/token").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.backend(), "be");
        // JSON clients get the location in the body too.
        let r = get_with(p.addr, "r.foo.bar", "/x", &[("accept", "application/json")]).await;
        assert_eq!(r.json()["detail"], format!("https://r.foo.bar:{port}/x"));
    }
}

#[tokio::test]
async fn hsts_is_sent_over_tls_only_as_configured() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    ca.issue("wild", &["*.foo.bar"], Key::Ec)
        .write(dir.path(), "foo.bar");
    let be = Backend::spawn("be").await;
    let routes = [
        route("default.foo.bar", &be, ""),
        route("off.foo.bar", &be, "hsts = \"off\""),
        route(
            "custom.foo.bar",
            &be,
            "hsts = \"max-age=600; includeSubDomains\"",
        ),
        route("noredirect.foo.bar", &be, "https_method = \"noredirect\""),
        route("nohttp.foo.bar", &be, "https_method = \"nohttp\""),
        // Upstream down: branchgate's own 502 carries the route's HSTS too.
        support::proxy::route_toml("down.foo.bar", &["127.0.0.1:1".parse().unwrap()], ""),
    ]
    .concat();
    let p = proxy(dir.path(), &routes, &[]).await;
    let https = p.https.unwrap();
    for (host, want) in [
        ("default.foo.bar", Some("max-age=31536000")),
        ("off.foo.bar", None),
        ("custom.foo.bar", Some("max-age=600; includeSubDomains")),
        ("noredirect.foo.bar", None),
        ("nohttp.foo.bar", Some("max-age=31536000")),
        ("down.foo.bar", Some("max-age=31536000")),
    ] {
        let r = tls::get(https, host, "/").await;
        let got = r.headers.get("strict-transport-security");
        assert_eq!(got.map(|v| v.to_str().unwrap()), want, "{host}");
        // Never over plain HTTP.
        let r = get(p.addr, host, "/").await;
        assert!(
            !r.headers.contains_key("strict-transport-security"),
            "{host}"
        );
    }
}

#[tokio::test]
async fn alpn_h2_and_http_1_1_and_forwarded_headers_over_tls() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    ca.issue("t", &["t.foo.bar"], Key::Ec)
        .write(dir.path(), "t.foo.bar");
    let be = Backend::spawn("be").await;
    let p = proxy(dir.path(), &route("t.foo.bar", &be, ""), &[]).await;
    let https = p.https.unwrap();
    for (alpn, want_alpn, want_version) in [
        (
            vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Some(&b"h2"[..]),
            Version::HTTP_2,
        ),
        (
            vec![b"http/1.1".to_vec()],
            Some(&b"http/1.1"[..]),
            Version::HTTP_11,
        ),
        (vec![], None, Version::HTTP_11),
    ] {
        let mut c = Client::new("t.foo.bar");
        c.alpn = alpn;
        let s = c.connect(https).await.unwrap();
        assert_eq!(s.alpn.as_deref(), want_alpn);
        let (r, version) = s.get("t.foo.bar", "/").await;
        assert_eq!(version, want_version);
        assert_eq!(r.status, StatusCode::OK);
        // The upstream speaks HTTP/1.1 whatever the client spoke.
        assert_eq!(r.json()["version"], "HTTP/1.1");
        assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(r.seen_header("x-forwarded-ssl").as_deref(), Some("on"));
        let port = https.port().to_string();
        assert_eq!(r.seen_header("x-forwarded-port"), Some(port));
    }
    // Over plain HTTP, what is served (an ACME challenge, never redirected)
    // is forwarded as http.
    let r = get(p.addr, "t.foo.bar", "/.well-known/acme-challenge/x").await;
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(r.seen_header("x-forwarded-ssl").as_deref(), Some("off"));
}

#[tokio::test]
async fn websockets_work_over_tls() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    ca.issue("ws", &["ws.foo.bar"], Key::Ec)
        .write(dir.path(), "ws.foo.bar");
    let be = Backend::spawn("be").await;
    let p = proxy(dir.path(), &route("ws.foo.bar", &be, ""), &[]).await;
    let mut c = Client::new("ws.foo.bar");
    c.alpn = vec![b"http/1.1".to_vec()];
    let s = c.connect(p.https.unwrap()).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://ws.foo.bar/ws", s.stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "over tls"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
}

#[tokio::test]
async fn branch_environments_and_their_pages_work_over_https() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    // `*.foo.bar` cannot cover `fe.be.foo.bar`: each backend branch needs
    // its own wildcard, found as the parent one level up.
    ca.issue("main-wild", &["*.main.foo.bar"], Key::Ec)
        .write(dir.path(), "main.foo.bar");
    ca.issue("apex", &["foo.bar", "*.foo.bar"], Key::Ec)
        .write(dir.path(), "foo.bar");
    let fe = Backend::spawn("fe-login").await;
    let be = Backend::spawn("be-main").await;
    let member = |branch: &str, role: &str, b: &Backend| {
        format!(
            "[[route]]\nbranch = {branch:?}\nrole = \"{role}\"\nupstreams = [\"{}\"]\n",
            b.addr
        )
    };
    let routes = format!(
        "{}{}",
        member("feature/login", "frontend", &fe),
        member("main", "backend", &be)
    );
    let p = proxy(dir.path(), &routes, &["--branch-domain", "foo.bar"]).await;
    let https = p.https.unwrap();
    let port = https.port();
    assert_eq!(
        served(https, Some("feature-login.main.foo.bar"))
            .await
            .as_deref(),
        Ok("main-wild")
    );
    assert_eq!(
        tls::get(https, "feature-login.main.foo.bar", "/")
            .await
            .backend(),
        "fe-login"
    );
    let r = tls::get(https, "feature-login.main.foo.bar", "/api/x").await;
    assert_eq!(r.backend(), "be-main");
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    // The matrix at the domain itself links with the request's port and no scheme.
    let s = Client::new("foo.bar").connect(https).await.unwrap();
    let (r, _) = s.get(&format!("foo.bar:{port}"), "/").await;
    assert_eq!(r.status, StatusCode::OK);
    let page = String::from_utf8_lossy(&r.body);
    assert!(
        page.contains(&format!("//feature-login.main.foo.bar:{port}/")),
        "{page}"
    );
    // The plain-HTTP branch host is redirected to HTTPS like any other.
    let r = get(p.addr, "feature-login.main.foo.bar", "/").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
}

#[tokio::test]
async fn bad_input_on_the_tls_port_is_refused_without_harm_to_others() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    ca.issue("good", &["good.foo.bar"], Key::Ec)
        .write(dir.path(), "good.foo.bar");
    ca.issue("default", &["default.invalid"], Key::Ec)
        .write(dir.path(), "default");
    let be = Backend::spawn("be").await;
    let p = proxy(
        dir.path(),
        &route("good.foo.bar", &be, ""),
        &["--client-header-timeout", "1s"],
    )
    .await;
    let https = p.https.unwrap();
    // A stuck client holds nothing up, and is closed after the handshake timeout.
    let mut stuck = TcpStream::connect(https).await.unwrap();
    let mut half = TcpStream::connect(https).await.unwrap();
    half.write_all(&client_hello(b"good.foo.bar")[..20])
        .await
        .unwrap();

    // Plain HTTP on the HTTPS port: nginx's 400, then close.
    let answer = exchange(https, b"GET / HTTP/1.1\r\nHost: good.foo.bar\r\n\r\n").await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(
        text.contains("The plain HTTP request was sent to HTTPS port"),
        "{text}"
    );
    // TLS garbage, and bytes that are neither: closed.
    let answer = exchange(https, &[0x16, 3, 1, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0]).await;
    assert!(answer.is_empty() || answer[0] == 0x15, "{answer:?}");
    assert!(exchange(https, &[0, 1, 2, 3]).await.is_empty());
    // A crafted hello naming good.foo.bar gets a ServerHello: the crafting works.
    let answer = exchange(https, &client_hello(b"good.foo.bar")).await;
    assert_eq!(answer.first(), Some(&0x16), "{answer:?}");
    // Illegal characters, or an IP address, as SNI: illegal_parameter (47).
    for sni in [&b"bad_name!.foo.bar"[..], b"127.0.0.1", b"::1"] {
        let answer = exchange(https, &client_hello(sni)).await;
        assert!(
            answer.len() >= 7 && answer[0] == 0x15 && answer[5] == 2 && answer[6] == 47,
            "{}: {answer:?}",
            String::from_utf8_lossy(sni)
        );
    }
    // Others were served all along.
    assert_eq!(tls::get(https, "good.foo.bar", "/").await.backend(), "be");
    let mut buf = [0u8; 16];
    for s in [&mut stuck, &mut half] {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a stuck handshake is closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    assert_eq!(tls::get(https, "good.foo.bar", "/").await.backend(), "be");
}

#[tokio::test]
async fn https_off_has_no_listener_and_nothing_redirects() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    ca.issue("o", &["o.foo.bar"], Key::Ec)
        .write(dir.path(), "o.foo.bar");
    let be = Backend::spawn("be").await;
    let p = Proxy::builder()
        .route("o.foo.bar", &[be.addr], "")
        .arg("--https")
        .arg("off")
        .arg("--certs")
        .arg(dir.path().to_str().unwrap())
        .spawn()
        .await;
    assert_eq!(p.https, None);
    let r = get(p.addr, "o.foo.bar", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.backend(), "be");
}
