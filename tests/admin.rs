//! The admin listener over real sockets: probes without auth, the JSON API
//! behind a bearer token (constant-time, throttled), refusal to start on a
//! non-loopback address without a token, and views that follow the routes.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::tls::{Ca, Key};
use support::{Backend, Proxy, eventually, get, get_with};

const TOKEN: &str = "s3cret-admin-token-0123";

/// `builder` with the admin listener on a free loopback port and [`TOKEN`].
fn with_token(builder: support::proxy::ProxyBuilder) -> support::proxy::ProxyBuilder {
    builder
        .arg("--admin")
        .arg("127.0.0.1:0")
        .arg("--admin-token")
        .arg(TOKEN)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn probes_are_open_and_the_api_needs_the_token() {
    let be = Backend::spawn("be").await;
    let limits = "allow = \"10.0.0.0/8\"\nmax_body = \"1m\"\nauth_basic = \"ann:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\"";
    let p = with_token(Proxy::builder().route("app.foo.bar", &[be.addr], limits))
        .spawn()
        .await;
    let admin = p.admin.unwrap();
    assert_eq!(get(admin, "admin", "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(admin, "admin", "/readyz").await.status, StatusCode::OK);

    let r = get(admin, "admin", "/api/routes").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let wrong = format!("Bearer {}x", TOKEN);
    let r = get_with(admin, "admin", "/api/routes", &[("authorization", &wrong)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    let r = get_with(admin, "admin", "/api/routes", &auth).await;
    assert_eq!(r.status, StatusCode::OK);
    let routes = json(&r.body);
    assert_eq!(routes["routes"][0]["host"], "app.foo.bar");
    assert_eq!(
        routes["routes"][0]["paths"][0]["upstreams"][0]["addr"],
        be.addr.to_string()
    );
    // The route's access settings, user names only (never a hash).
    let path = &routes["routes"][0]["paths"][0];
    assert_eq!(path["allow"], "10.0.0.0/8");
    assert_eq!(path["max_body"], 1 << 20);
    assert_eq!(path["auth_basic"], "users ann");
    assert!(!r.body.windows(5).any(|w| w == b"{SHA}"));
    assert_eq!(
        get_with(admin, "admin", "/api/nope", &auth).await.status,
        StatusCode::NOT_FOUND
    );

    // Guessing is throttled per client: after 10 wrong tokens (one above)
    // even the right token waits out the minute. No token at all is no
    // guess and does not count.
    for _ in 0..9 {
        let r = get_with(
            admin,
            "admin",
            "/api/routes",
            &[("authorization", "Bearer guess")],
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = get_with(admin, "admin", "/api/routes", &auth).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Probes stay open.
    assert_eq!(get(admin, "admin", "/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn views_follow_the_routes_warnings_and_certificates() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    ca.issue("app", &["app.foo.bar"], Key::Ec)
        .write(dir.path(), "app.foo.bar");
    let be = Backend::spawn("be").await;
    let p = Proxy::builder()
        .route("app.foo.bar", &[be.addr], "")
        .arg("--admin")
        .arg("127.0.0.1:0")
        .arg("--https")
        .arg("127.0.0.1:0")
        .arg("--certs")
        .arg(dir.path().to_str().unwrap())
        .arg("--branch-domain")
        .arg("foo.bar")
        .spawn()
        .await;
    let admin = p.admin.unwrap();
    // Loopback without a token: open.
    let certs = json(&get(admin, "admin", "/api/certificates").await.body);
    assert_eq!(certs["files"][0]["name"], "app.foo.bar");
    assert_eq!(
        certs["files"][0]["names"],
        serde_json::json!(["app.foo.bar"])
    );
    assert!(certs["files"][0]["not_after"].as_i64().unwrap() > 0);
    assert!(certs["acme"].is_null(), "ACME is off here");

    // A branch member appears; a bad routes file leaves the routes in force
    // and shows up as a warning with its reason.
    let branch = format!(
        "[[route]]\nbranch = \"feature/login\"\nrole = \"frontend\"\nupstreams = [\"{}\"]\n",
        be.addr
    );
    p.write_routes(&(support::proxy::route_toml("app.foo.bar", &[be.addr], "") + &branch));
    let branches = eventually(Duration::from_secs(5), "the branch in the API", || async {
        let b = json(&get(admin, "admin", "/api/branches").await.body);
        (b["frontends"][0]["slug"] == "feature-login").then_some(b)
    })
    .await;
    assert_eq!(branches["domain"], "foo.bar");
    assert_eq!(branches["frontends"][0]["branch"], "feature/login");

    p.write_routes("[[route]]\nhost = \"x.foo.bar\"\nupstreams = [\"not an address\"]\n");
    let warning = eventually(
        Duration::from_secs(5),
        "the rejected file in the API",
        || async {
            let w = json(&get(admin, "admin", "/api/warnings").await.body);
            w["warnings"]
                .as_array()?
                .iter()
                .find(|n| n["kind"] == "file_rejected")
                .cloned()
        },
    )
    .await;
    assert_eq!(warning["severity"], "warning");
    assert!(!warning["message"].as_str().unwrap().is_empty());
    // The routes in force stay.
    let routes = json(&get(admin, "admin", "/api/routes").await.body);
    assert_eq!(routes["routes"][0]["host"], "app.foo.bar");
}

#[tokio::test]
async fn a_non_loopback_admin_address_needs_a_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_branchgate"))
        .args([
            "--no-docker",
            "--http",
            "127.0.0.1:0",
            "--https",
            "off",
            "--admin",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admin 0.0.0.0:0") && err.contains("--admin-token"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_branchgate"))
        .args([
            "--no-docker",
            "--http",
            "127.0.0.1:0",
            "--https",
            "off",
            "--admin",
            "127.0.0.1:0",
            "--admin-token",
            "short",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-token"));
}

/// `/metrics` parsed as Prometheus would: request counters by route, code
/// and method move with requests; unrouted hosts and odd methods fold into
/// `_other` and `OTHER`; the histogram counts every request.
#[tokio::test]
async fn metrics_parse_and_move_with_requests() {
    use prometheus_parse::{Scrape, Value};
    let be = Backend::spawn("be").await;
    let p = with_token(Proxy::builder().route("app.foo.bar", &[be.addr], ""))
        .spawn()
        .await;
    let admin = p.admin.unwrap();
    let scrape = || async {
        let r = get(admin, "admin", "/metrics").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "open without the token by default"
        );
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
    };
    let count = |s: &Scrape, host: &str, code: &str, method: &str| -> f64 {
        s.samples
            .iter()
            .find(|x| {
                x.metric == "branchgate_requests_total"
                    && x.labels.get("host") == Some(host)
                    && x.labels.get("code") == Some(code)
                    && x.labels.get("method") == Some(method)
            })
            .map_or(0.0, |x| match x.value {
                Value::Counter(v) => v,
                _ => panic!("a counter"),
            })
    };
    let before = scrape().await;
    for _ in 0..3 {
        assert_eq!(
            get(p.addr, "app.foo.bar", "/x").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        get(p.addr, "random-1.example", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(p.addr, "random-2.example", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let purge = support::client::raw(
        p.addr,
        b"PURGE /x HTTP/1.1\r\nHost: app.foo.bar\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!purge.is_empty());
    let after = eventually(Duration::from_secs(5), "the counters", || async {
        let s = scrape().await;
        (count(&s, "app.foo.bar/", "200", "GET")
            == count(&before, "app.foo.bar/", "200", "GET") + 3.0)
            .then_some(s)
    })
    .await;
    assert_eq!(
        count(&after, "_other", "503", "GET"),
        2.0,
        "hosts that route nowhere fold into _other"
    );
    assert!(
        count(&after, "app.foo.bar/", "200", "OTHER") >= 1.0,
        "PURGE is OTHER"
    );
    let requests = histogram_count(&after, "branchgate_request_duration_seconds");
    assert!(requests >= 6.0, "{requests}");
    let up = after
        .samples
        .iter()
        .find(|x| x.metric == "branchgate_backend_up")
        .expect("backend_up");
    assert_eq!(
        up.labels.get("upstream"),
        Some(be.addr.to_string().as_str())
    );
    assert!(
        after
            .samples
            .iter()
            .any(|x| x.metric == "branchgate_route_table_updates_total")
    );
    // A connection held open shows under its scheme.
    let mut held = support::client::Conn::open(p.addr).await;
    assert_eq!(
        held.get("app.foo.bar", "/").await.unwrap().status,
        StatusCode::OK
    );
    let gauge = |s: &Scrape, scheme: &str| -> f64 {
        s.samples
            .iter()
            .find(|x| {
                x.metric == "branchgate_open_connections" && x.labels.get("scheme") == Some(scheme)
            })
            .map_or(-1.0, |x| match x.value {
                Value::Gauge(v) => v,
                _ => panic!("a gauge"),
            })
    };
    let s = scrape().await;
    assert!(gauge(&s, "http") >= 1.0, "the held connection");
    assert_eq!(gauge(&s, "https"), 0.0);
    let publishes = histogram_count(&s, "branchgate_route_table_publish_duration_seconds");
    assert!(
        publishes >= 1.0,
        "the first publish is counted: {publishes}"
    );
    for name in [
        "branchgate_docker_events_total",
        "branchgate_docker_reconnects_total",
    ] {
        assert!(s.samples.iter().any(|x| x.metric == name), "{name}");
    }
}

#[tokio::test]
async fn metrics_off_counts_nothing_and_says_so() {
    let p = Proxy::builder()
        .arg("--admin")
        .arg("127.0.0.1:0")
        .arg("--metrics")
        .arg("off")
        .spawn()
        .await;
    let r = get(p.admin.unwrap(), "admin", "/metrics").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&r.body).contains("--metrics off"));
}

#[tokio::test]
async fn metrics_auth_puts_metrics_behind_the_token() {
    let p = with_token(Proxy::builder())
        .arg("--metrics-auth")
        .spawn()
        .await;
    let admin = p.admin.unwrap();
    assert_eq!(
        get(admin, "admin", "/metrics").await.status,
        StatusCode::UNAUTHORIZED
    );
    let bearer = format!("Bearer {TOKEN}");
    let r = get_with(admin, "admin", "/metrics", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&r.body).contains("# TYPE branchgate_requests_total counter"));
}

/// The count of a histogram in a scrape (its +Inf bucket).
fn histogram_count(s: &prometheus_parse::Scrape, metric: &str) -> f64 {
    let sample = (s.samples.iter())
        .find(|x| x.metric == metric)
        .unwrap_or_else(|| panic!("{metric} in the scrape"));
    match &sample.value {
        prometheus_parse::Value::Histogram(buckets) => {
            buckets.iter().map(|b| b.count).fold(0.0, f64::max)
        }
        v => panic!("{metric}: a histogram, not {v:?}"),
    }
}

/// POSTs a form to the admin listener.
async fn post_form(admin: std::net::SocketAddr, path: &str, form: &str) -> support::Reply {
    let req = http::Request::post(path)
        .header("host", "admin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            form.to_owned(),
        )))
        .unwrap();
    support::client::Conn::open(admin)
        .await
        .send(req)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_browser_logs_in_with_the_token_and_gets_a_strict_session_cookie() {
    let p = with_token(Proxy::builder()).spawn().await;
    let admin = p.admin.unwrap();

    // The dashboard sends a browser without a session to the login form.
    let r = get(admin, "admin", "/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers["location"], "/login");
    let r = get(admin, "admin", "/login").await;
    assert_eq!(r.status, StatusCode::OK);
    let form = String::from_utf8_lossy(&r.body).into_owned();
    assert!(form.contains("name=\"token\""), "{form}");
    // Its stylesheet and script load without a session; nothing else does.
    assert_eq!(
        get(admin, "admin", "/assets/style.css").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(admin, "admin", "/assets/nope.js").await.status,
        StatusCode::NOT_FOUND
    );

    // A wrong token: the form again, with the reason, and no cookie.
    let r = post_form(admin, "/login", "token=wrong-token-0000000&next=%2F").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&r.body).contains("Wrong token."));
    assert!(r.headers.get("set-cookie").is_none());

    // The right one (form-encoded, `next` kept when it is a local path).
    let form = format!("token={}&next=%2Fapi%2Froutes", TOKEN.replace('-', "%2D"));
    let r = post_form(admin, "/login", &form).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers["location"], "/api/routes");
    let set = r.headers["set-cookie"].to_str().unwrap().to_owned();
    for attr in [
        "branchgate_admin=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure ({set})");
    let cookie = set.split(';').next().unwrap().to_owned();
    let with_cookie = [("cookie", cookie.as_str())];
    let r = get_with(admin, "admin", "/api/routes", &with_cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get_with(admin, "admin", "/", &with_cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    // A forged or tampered session is no session.
    let (value, tag) = cookie.split_once('.').unwrap();
    let forged = format!("{}9.{tag}", value);
    let r = get_with(admin, "admin", "/api/routes", &[("cookie", &forged)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // `next` never leaves the admin origin.
    let form = format!("token={TOKEN}&next=%2F%2Fevil.example%2F");
    let r = post_form(admin, "/login", &form).await;
    assert_eq!(r.headers["location"], "/");

    // Logging out clears the cookie.
    let r = post_form(admin, "/logout", "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let cleared = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("branchgate_admin=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test]
async fn the_dashboard_host_serves_the_admin_side_on_the_main_listeners() {
    use support::tls::Client;
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    ca.issue("dash", &["dash.foo.bar"], Key::Ec)
        .write(dir.path(), "dash.foo.bar");
    let be = Backend::spawn("be").await;
    let p = with_token(Proxy::builder().route("app.foo.bar", &[be.addr], ""))
        .arg("--https")
        .arg("127.0.0.1:0")
        .arg("--certs")
        .arg(dir.path().to_str().unwrap())
        .arg("--dashboard-host")
        .arg("Dash.Foo.Bar")
        .spawn()
        .await;
    let https = p.https.unwrap();

    // Over plain HTTP it goes to HTTPS first, as a route with a certificate does.
    let r = get(p.addr, "dash.foo.bar", "/api/routes").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    let location = r.headers["location"].to_str().unwrap();
    assert_eq!(
        location,
        format!("https://dash.foo.bar:{}/api/routes", https.port())
    );

    // Over HTTPS, with the host's certificate: the same auth as the admin listener.
    let session = Client::new("dash.foo.bar").connect(https).await.unwrap();
    assert_eq!(session.cn, "dash");
    let (r, _) = session.get("dash.foo.bar", "/api/routes").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let bearer = format!("Bearer {TOKEN}");
    let req = http::Request::get("/api/routes")
        .header("host", "dash.foo.bar:443")
        .header("authorization", &bearer)
        .body(http_body_util::Full::default())
        .unwrap();
    let session = Client::new("dash.foo.bar").connect(https).await.unwrap();
    let (r, _) = session.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["routes"][0]["host"], "app.foo.bar");
    // The login's cookie is Secure over TLS.
    let req = http::Request::post("/login")
        .header("host", "dash.foo.bar")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(format!(
            "token={TOKEN}"
        ))))
        .unwrap();
    let session = Client::new("dash.foo.bar").connect(https).await.unwrap();
    let (r, _) = session.send(req).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let set = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.contains("; Secure") && set.contains("SameSite=Strict"),
        "{set}"
    );

    // Every other host routes as before.
    assert_eq!(get(p.addr, "app.foo.bar", "/").await.backend(), "be");
}

#[tokio::test]
async fn the_dashboard_host_needs_a_token() {
    let argv = [
        "branchgate",
        "--http",
        "127.0.0.1:0",
        "--https",
        "off",
        "--no-docker",
        "--acme",
        "off",
        "--admin",
        "off",
        "--dashboard-host",
        "dash.foo.bar",
    ];
    let config = <branchgate::Config as clap::Parser>::try_parse_from(argv).unwrap();
    let err = branchgate::bind(config).await.err().unwrap().to_string();
    assert!(
        err.contains("--dashboard-host") && err.contains("--admin-token"),
        "{err}"
    );
}
