//! Branch environments over real sockets: routes-file members (branch + role)
//! with in-process backends, `--branch-domain foo.test`.

mod support;

use std::net::SocketAddr;

use futures_util::{SinkExt as _, StreamExt as _};
use support::{Backend, Proxy, get, get_with};

fn member(branch: &str, role: &str, upstreams: &[SocketAddr]) -> String {
    let ups: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[route]]\nbranch = {branch:?}\nrole = \"{role}\"\nupstreams = [{}]\n",
        ups.join(", ")
    )
}

/// Two frontends, two backends (one of them `main`), one exact host inside the domain.
struct Env {
    proxy: Proxy,
    _backends: Vec<Backend>,
}

async fn env(extra_args: &[&str]) -> Env {
    let fe_login = Backend::spawn("fe-login").await;
    let fe_main = Backend::spawn("fe-main").await;
    let be_main = Backend::spawn("be-main").await;
    let be_pay = Backend::spawn("be-payments").await;
    let exact = Backend::spawn("exact").await;
    let mut b = Proxy::builder()
        .toml(&member("feature/Login_v2", "frontend", &[fe_login.addr]))
        .toml(&member("main", "frontend", &[fe_main.addr]))
        .toml(&member("main", "backend", &[be_main.addr]))
        .toml(&member("payments/V2", "backend", &[be_pay.addr]))
        .route("pinned.main.foo.test", &[exact.addr], "")
        .arg("--branch-domain")
        .arg("foo.test");
    for a in extra_args {
        b = b.arg(a);
    }
    Env {
        proxy: b.spawn().await,
        _backends: vec![fe_login, fe_main, be_main, be_pay, exact],
    }
}

#[tokio::test]
async fn every_row_of_the_routing_table() {
    let e = env(&[]).await;
    let a = e.proxy.addr;
    let cases = [
        // <fe>.<be>.DOMAIN: API paths to the backend branch, the rest to the frontend.
        ("feature-login-v2.payments-v2.foo.test", "/", "fe-login"),
        (
            "feature-login-v2.payments-v2.foo.test",
            "/app/x",
            "fe-login",
        ),
        (
            "feature-login-v2.payments-v2.foo.test",
            "/api",
            "be-payments",
        ),
        (
            "feature-login-v2.payments-v2.foo.test",
            "/api/users?id=1",
            "be-payments",
        ),
        ("feature-login-v2.main.foo.test", "/api/users", "be-main"),
        ("main.payments-v2.foo.test", "/", "fe-main"),
        // Whole segments: /apix is not API.
        ("main.payments-v2.foo.test", "/apix", "fe-main"),
        // <fe>.DOMAIN: API paths go to the default branch's backend.
        ("feature-login-v2.foo.test", "/", "fe-login"),
        ("feature-login-v2.foo.test", "/api/x", "be-main"),
        // Case, port and trailing dot do not matter.
        (
            "Feature-Login-V2.Payments-V2.FOO.test.:8080",
            "/api/x",
            "be-payments",
        ),
        // An exact route wins over branch routing.
        ("pinned.main.foo.test", "/api/x", "exact"),
    ];
    for (host, path, want) in cases {
        let r = get(a, host, path).await;
        assert_eq!(r.status, 200, "{host}{path}");
        assert_eq!(r.backend(), want, "{host}{path}");
    }
    // The backend sees the original host, path and forwarding headers: same origin.
    let r = get(
        a,
        "feature-login-v2.payments-v2.foo.test",
        "/api/users?id=1",
    )
    .await;
    assert_eq!(r.seen_uri(), "/api/users?id=1");
    assert_eq!(
        r.seen_header("host").as_deref(),
        Some("feature-login-v2.payments-v2.foo.test")
    );
    assert_eq!(
        r.seen_header("x-forwarded-host").as_deref(),
        Some("feature-login-v2.payments-v2.foo.test")
    );
    // Deeper than <fe>.<be> is not a branch host.
    assert_eq!(get(a, "x.main.main.foo.test", "/").await.status, 503);
}

#[tokio::test]
async fn api_prefixes_and_default_branch_are_flags() {
    let e = env(&[
        "--api-prefix",
        "/graphql",
        "--api-prefix",
        "/rest/",
        "--default-branch",
        "payments/V2",
    ])
    .await;
    let a = e.proxy.addr;
    assert_eq!(
        get(a, "main.foo.test", "/graphql").await.backend(),
        "be-payments"
    );
    assert_eq!(
        get(a, "main.foo.test", "/rest/v1").await.backend(),
        "be-payments"
    );
    assert_eq!(
        get(a, "main.main.foo.test", "/rest/v1").await.backend(),
        "be-main"
    );
    // /api is no longer an API prefix.
    assert_eq!(
        get(a, "main.main.foo.test", "/api/x").await.backend(),
        "fe-main"
    );
}

#[tokio::test]
async fn a_missing_branch_is_a_404_naming_it_with_links() {
    let e = env(&[]).await;
    let a = e.proxy.addr;
    let r = get(a, "nope.main.foo.test", "/").await;
    assert_eq!(r.status, 404);
    let html = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        html.contains("No frontend branch <code>nope</code>"),
        "{html}"
    );
    assert!(
        html.contains("href=\"//feature-login-v2.foo.test/\""),
        "{html}"
    );
    assert!(html.contains("feature/Login_v2"), "{html}");
    assert!(html.contains("payments/V2"), "{html}");
    assert!(html.contains("href=\"//foo.test/\""), "{html}");

    let r = get(a, "main.gone.foo.test", "/api/x").await;
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("No backend branch <code>gone</code>"));

    let r = get_with(a, "nope.foo.test", "/", &[("accept", "application/json")]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["content-type"], "application/json");
    let v = r.json();
    assert_eq!(v["role"], "frontend");
    assert_eq!(v["branch"], "nope");
    assert_eq!(v["frontends"][0]["slug"], "feature-login-v2");
    assert_eq!(v["frontends"][0]["branch"], "feature/Login_v2");
    assert_eq!(v["backends"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_domain_itself_is_the_environment_matrix() {
    let e = env(&[]).await;
    let a = e.proxy.addr;
    let r = get(a, "foo.test", "/").await;
    assert_eq!(r.status, 200);
    let html = String::from_utf8_lossy(&r.body).into_owned();
    for fe in ["feature-login-v2", "main"] {
        for be in ["main", "payments-v2"] {
            let link = format!("href=\"//{fe}.{be}.foo.test/\"");
            assert!(html.contains(&link), "{link} in {html}");
        }
    }
    for name in ["feature/Login_v2", "payments/V2"] {
        assert!(html.contains(name), "{name} in {html}");
    }
    // Every link of the matrix leads to a working environment.
    for (fe, want_fe) in [("feature-login-v2", "fe-login"), ("main", "fe-main")] {
        for (be, want_be) in [("main", "be-main"), ("payments-v2", "be-payments")] {
            let host = format!("{fe}.{be}.foo.test");
            assert_eq!(get(a, &host, "/").await.backend(), want_fe);
            assert_eq!(get(a, &host, "/api/ping").await.backend(), want_be);
        }
    }
    // Links keep the port the page was asked on.
    let html = String::from_utf8_lossy(&get(a, "foo.test:8080", "/").await.body).into_owned();
    assert!(
        html.contains("href=\"//main.main.foo.test:8080/\""),
        "{html}"
    );
    let r = get_with(a, "foo.test", "/", &[("accept", "application/json")]).await;
    let v = r.json();
    assert_eq!(v["domain"], "foo.test");
    assert_eq!(v["frontends"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn colliding_slugs_serve_neither_and_say_so() {
    let one = Backend::spawn("one").await;
    let two = Backend::spawn("two").await;
    let ok = Backend::spawn("ok").await;
    let long_a = format!("feature/{}", "a".repeat(200));
    let long_b = format!("feature/{}b", "a".repeat(199));
    let p = Proxy::builder()
        .toml(&member("Fix/Bug", "frontend", &[one.addr]))
        .toml(&member("fix-bug", "frontend", &[two.addr]))
        .toml(&member(&long_a, "frontend", &[one.addr]))
        .toml(&member(&long_b, "frontend", &[two.addr]))
        .toml(&member("main", "frontend", &[ok.addr]))
        .arg("--branch-domain")
        .arg("foo.test")
        .spawn()
        .await;
    let r = get(p.addr, "fix-bug.foo.test", "/").await;
    assert_eq!(r.status, 404);
    let html = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        html.contains("Conflict") && html.contains("Fix/Bug") && html.contains("fix-bug"),
        "{html}"
    );
    // 200-character names: cut to 63 with distinct hashes, both served.
    let (sa, sb) = (
        branchgate::routes::slug(&long_a),
        branchgate::routes::slug(&long_b),
    );
    assert_eq!(sa.len(), 63);
    assert_eq!(
        get(p.addr, &format!("{sa}.foo.test"), "/").await.backend(),
        "one"
    );
    assert_eq!(
        get(p.addr, &format!("{sb}.foo.test"), "/").await.backend(),
        "two"
    );
    assert_eq!(get(p.addr, "main.foo.test", "/").await.backend(), "ok");
    let matrix = String::from_utf8_lossy(&get(p.addr, "foo.test", "/").await.body).into_owned();
    assert!(matrix.contains("Conflict"), "{matrix}");
}

#[tokio::test]
async fn a_websocket_under_the_api_prefix_reaches_the_backend() {
    let e = env(&[]).await;
    let url = format!("ws://{}/api/ws", e.proxy.addr);
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    req.headers_mut()
        .insert("host", "main.payments-v2.foo.test".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["x-backend"], "be-payments");
    ws.send("over the api".into()).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap(), "over the api");
}

#[tokio::test]
async fn without_a_branch_domain_branch_members_route_nothing() {
    let fe = Backend::spawn("fe").await;
    let p = Proxy::builder()
        .toml(&member("main", "frontend", &[fe.addr]))
        .spawn()
        .await;
    assert_eq!(get(p.addr, "main.foo.test", "/").await.status, 503);
}

#[tokio::test]
async fn cors_routes_grant_only_the_branch_domain_and_listed_origins() {
    let api = Backend::spawn("api").await;
    let plain = Backend::spawn("plain").await;
    let p = Proxy::builder()
        .route("api.elsewhere.test", &[api.addr], "cors = true\n")
        .route("plain.elsewhere.test", &[plain.addr], "")
        .toml(
            &member("main", "backend", &[api.addr]).replace("upstreams", "cors = true\nupstreams"),
        )
        .arg("--branch-domain")
        .arg("foo.test")
        .arg("--cors-origin")
        .arg("https://app.example.com")
        .spawn()
        .await;
    let a = p.addr;
    let origin_of = |r: &support::Reply| {
        r.headers
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    for origin in [
        "https://fe.be.foo.test",
        "http://foo.test",
        "https://app.example.com",
    ] {
        let r = get_with(a, "api.elsewhere.test", "/x", &[("origin", origin)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(origin_of(&r).as_deref(), Some(origin), "{origin}");
        assert_eq!(r.headers["access-control-allow-credentials"], "true");
        assert!(r.headers.get_all("vary").iter().any(|v| v == "Origin"));
    }
    for origin in ["https://evil.test", "https://foo.test.evil.test", "null"] {
        let r = get_with(a, "api.elsewhere.test", "/x", &[("origin", origin)]).await;
        assert_eq!(r.status, 200, "the request itself is served");
        assert_eq!(origin_of(&r), None, "{origin}");
        assert!(r.headers.get("access-control-allow-credentials").is_none());
    }

    // Preflights are answered by the proxy.
    let preflight = |origin: &'static str| {
        let req = hyper::Request::options("/x")
            .header("host", "api.elsewhere.test")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "content-type, x-token")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        async move {
            support::client::Conn::open(a)
                .await
                .send(req)
                .await
                .unwrap()
        }
    };
    let r = preflight("https://fe.foo.test").await;
    assert_eq!(r.status, 204);
    assert_eq!(origin_of(&r).as_deref(), Some("https://fe.foo.test"));
    assert_eq!(r.headers["access-control-allow-methods"], "PUT");
    assert_eq!(
        r.headers["access-control-allow-headers"],
        "content-type, x-token"
    );
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    assert_eq!(r.backend(), "", "the upstream never sees a preflight");
    let r = preflight("https://evil.test").await;
    assert_eq!(r.status, 403);
    assert_eq!(origin_of(&r), None);

    // A branch backend marked cors is granted the same way at <fe>.<be>.DOMAIN.
    let r = get_with(
        a,
        "x.main.foo.test",
        "/api/x",
        &[("origin", "https://y.foo.test")],
    )
    .await;
    assert_eq!(origin_of(&r).as_deref(), Some("https://y.foo.test"));
    // Routes not marked cors are left alone.
    let r = get_with(
        a,
        "plain.elsewhere.test",
        "/x",
        &[("origin", "https://fe.foo.test")],
    )
    .await;
    assert_eq!(origin_of(&r), None);
    assert!(r.headers.get("vary").is_none());
}
