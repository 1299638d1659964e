//! Access control over real sockets (issue 16): the branch gate (login
//! form, domain cookie, Basic, bypass token, preflights, expiry, logout,
//! throttling), allow lists with and without a trusted downstream proxy,
//! `X-Robots-Tag`, and what never reaches an upstream.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::client::Conn;
use support::{Backend, Proxy, Reply, get, get_with};

/// `{SHA}` of "secret" (htpasswd -s).
const ANN: &str = "ann:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";
const TOKEN: &str = "ci-token-0123456789";

fn member(branch: &str, role: &str, upstream: SocketAddr) -> String {
    format!("[[route]]\nbranch = {branch:?}\nrole = \"{role}\"\nupstreams = [\"{upstream}\"]\n")
}

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

/// Two frontends × two backends under `foo.test`, one host outside it,
/// the gate on with `users`.
struct Env {
    proxy: Proxy,
    _users: tempfile::NamedTempFile,
    _backends: Vec<Backend>,
}

async fn gated(users: &str, extra: &[&str]) -> Env {
    let fe1 = Backend::spawn("fe-one").await;
    let fe2 = Backend::spawn("fe-two").await;
    let be1 = Backend::spawn("be-one").await;
    let be2 = Backend::spawn("be-two").await;
    let outside = Backend::spawn("outside").await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), users).unwrap();
    let mut b = Proxy::builder()
        .toml(&member("one", "frontend", fe1.addr))
        .toml(&member("two", "frontend", fe2.addr))
        .toml(&member("main", "backend", be1.addr))
        .toml(&member("pay", "backend", be2.addr))
        .route("outside.example", &[outside.addr], "")
        .arg("--branch-domain")
        .arg("foo.test")
        .arg("--branch-auth")
        .arg(file.path().to_str().unwrap())
        .arg("--branch-auth-bypass-token")
        .arg(TOKEN);
    for a in extra {
        b = b.arg(a);
    }
    Env {
        proxy: b.spawn().await,
        _users: file,
        _backends: vec![fe1, fe2, be1, be2, outside],
    }
}

const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml");

async fn post_form(addr: SocketAddr, host: &str, path: &str, form: &str) -> Reply {
    let req = Request::post(path)
        .header("host", host)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form.to_owned())))
        .unwrap();
    Conn::open(addr).await.send(req).await.unwrap()
}

/// Logs in as ann and returns the `name=value` of the cookie.
async fn login(addr: SocketAddr, host: &str) -> String {
    let r = post_form(
        addr,
        host,
        "/.branchgate/login",
        "user=ann&password=secret&next=%2Fapp%3Fx%3D1",
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(r.headers["location"], "/app?x=1");
    let set = r.headers["set-cookie"].to_str().unwrap().to_owned();
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn one_login_opens_every_environment_and_the_cookie_stays_here() {
    let e = gated(ANN, &[]).await;
    let a = e.proxy.addr;
    // A browser is sent to the form, which comes back to where it was going.
    let r = get_with(a, "one.main.foo.test", "/app?x=1", &[HTML]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.headers["location"],
        "/.branchgate/login?next=/app%3Fx%3D1"
    );
    assert_eq!(r.backend(), "", "the upstream saw nothing");
    let form = get(a, "one.main.foo.test", "/.branchgate/login?next=%2Fapp").await;
    assert_eq!(form.status, StatusCode::OK);
    assert_eq!(form.headers["x-robots-tag"], "noindex");
    let html = String::from_utf8_lossy(&form.body);
    assert!(
        html.contains("name=\"password\"") && html.contains("value=\"/app\""),
        "{html}"
    );
    // The environment matrix at the domain itself is behind the gate too.
    assert_eq!(
        get_with(a, "foo.test", "/", &[HTML]).await.status,
        StatusCode::FOUND
    );

    // A wrong password: the form again, 401, no cookie.
    let r = post_form(
        a,
        "one.main.foo.test",
        "/.branchgate/login",
        "user=ann&password=nope",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get("set-cookie").is_none());
    assert!(String::from_utf8_lossy(&r.body).contains("Wrong user or password"));

    // The right one: a cookie for the whole domain.
    for evil in [
        "%2F%2Fevil.example",
        "%2F%09%2Fevil.example",
        "%2F%5Cevil.example",
        "https%3A%2F%2Fevil.example",
    ] {
        let form = format!("user=ann&password=secret&next={evil}");
        let r = post_form(a, "one.main.foo.test", "/.branchgate/login", &form).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(r.headers["location"], "/", "never to another site: {evil}");
    }
    let r = post_form(
        a,
        "one.main.foo.test",
        "/.branchgate/login",
        "user=ann&password=secret",
    )
    .await;
    let set = r.headers["set-cookie"].to_str().unwrap();
    for attr in [
        "Domain=foo.test",
        "Path=/",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=604800",
    ] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: not Secure ({set})");
    let cookie = login(a, "one.main.foo.test").await;

    // The same cookie opens another environment; the upstream never sees it.
    let with = format!("theme=dark; {cookie}; lang=en");
    for (host, path, backend) in [
        ("one.main.foo.test", "/", "fe-one"),
        ("two.pay.foo.test", "/", "fe-two"),
        ("two.pay.foo.test", "/api/x", "be-two"),
        ("two.foo.test", "/api/x", "be-one"),
    ] {
        let r = get_with(a, host, path, &[HTML, ("cookie", &with)]).await;
        assert_eq!(r.status, StatusCode::OK, "{host}{path}");
        assert_eq!(r.backend(), backend);
        assert_eq!(
            r.seen_header("cookie").as_deref(),
            Some("theme=dark; lang=en")
        );
        assert_eq!(r.headers["x-robots-tag"], "noindex");
    }
    let r = get_with(a, "foo.test", "/", &[HTML, ("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK, "the matrix");
    // Only the gate's cookie: no Cookie header left at all.
    let r = get_with(a, "one.main.foo.test", "/", &[("cookie", &cookie)]).await;
    assert_eq!(r.seen_header("cookie"), None);

    // A forged or edited cookie is no login.
    let forged = format!("{}0", cookie);
    let r = get_with(a, "one.main.foo.test", "/", &[HTML, ("cookie", &forged)]).await;
    assert_eq!(r.status, StatusCode::FOUND);

    // Hosts outside the domain are not gated.
    assert_eq!(get(a, "outside.example", "/").await.status, StatusCode::OK);

    // Logout clears the cookie for the whole domain; POST only, so a link
    // elsewhere cannot do it.
    let r = get_with(
        a,
        "two.pay.foo.test",
        "/.branchgate/logout",
        &[("cookie", &cookie)],
    )
    .await;
    assert!(r.headers.get("set-cookie").is_none(), "{r:?}");
    let r = post_form(a, "two.pay.foo.test", "/.branchgate/logout", "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let set = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("branchgate_gate=;")
            && set.contains("Max-Age=0")
            && set.contains("Domain=foo.test"),
        "{set}"
    );
}

#[tokio::test]
async fn non_browsers_use_basic_and_ci_uses_the_bypass_token() {
    let e = gated(ANN, &[]).await;
    let a = e.proxy.addr;
    let r = get(a, "one.main.foo.test", "/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers["www-authenticate"],
        "Basic realm=\"Restricted foo.test\""
    );
    let right = basic("ann", "secret");
    let r = get_with(a, "one.main.foo.test", "/", &[("authorization", &right)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.seen_header("authorization"),
        None,
        "credentials the gate consumed stay here"
    );
    let r = get_with(
        a,
        "one.main.foo.test",
        "/",
        &[("authorization", &basic("ann", "x"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = get_with(
        a,
        "two.pay.foo.test",
        "/api/run",
        &[("x-branchgate-bypass", TOKEN)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.backend(), "be-two");
    assert_eq!(
        r.seen_header("x-branchgate-bypass"),
        None,
        "the token stays here"
    );
    let r = get_with(
        a,
        "two.pay.foo.test",
        "/",
        &[("x-branchgate-bypass", "ci-token-0123456780")],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.backend(), "");
    // Not even a host outside the gate gets the token.
    let r = get_with(a, "outside.example", "/", &[("x-branchgate-bypass", TOKEN)]).await;
    assert_eq!(r.seen_header("x-branchgate-bypass"), None);

    // A CORS preflight carries no credentials, so it is never refused for
    // lack of them; it is answered here, and no container sees it.
    let preflight = |origin: &'static str| {
        Request::options("/api/x?secret=1")
            .header("host", "one.main.foo.test")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "x-token")
            .body(Full::default())
            .unwrap()
    };
    let r = Conn::open(a)
        .await
        .send(preflight("https://two.pay.foo.test"))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://two.pay.foo.test"
    );
    assert_eq!(r.headers["access-control-allow-headers"], "x-token");
    assert_eq!(r.backend(), "", "answered by the gate, not forwarded");
    let r = Conn::open(a)
        .await
        .send(preflight("https://evil.example"))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.headers.get("access-control-allow-origin").is_none());
    assert_eq!(r.backend(), "");

    // The gate's cookie never travels on, even when the request got in another way.
    let stale = "theme=dark; branchgate_gate=ann.1.00";
    let r = get_with(
        a,
        "one.main.foo.test",
        "/",
        &[("x-branchgate-bypass", TOKEN), ("cookie", stale)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.seen_header("cookie").as_deref(), Some("theme=dark"));
}

#[tokio::test]
async fn bcrypt_and_apr1_entries_as_htpasswd_writes_them() {
    // htpasswd -nbB -C 5 bee secret; htpasswd -nbm cat meow
    let users = "bee:$2y$05$kAxGq3hjeP.Swx9/F7SdK.v/NkkEnjfNxUOvN7nkTTsRZuH5tpvlK\n\
                 cat:$apr1$sUM9wRyg$QzerG9/b3DJHqzBfQMoBA0\n";
    let e = gated(users, &[]).await;
    let a = e.proxy.addr;
    for (user, password) in [("bee", "secret"), ("cat", "meow")] {
        let right = basic(user, password);
        // Twice: the second from the cache of recent successes.
        for _ in 0..2 {
            let r = get_with(a, "one.main.foo.test", "/", &[("authorization", &right)]).await;
            assert_eq!(r.status, StatusCode::OK, "{user}");
        }
        let wrong = basic(user, "secret!");
        let r = get_with(a, "one.main.foo.test", "/", &[("authorization", &wrong)]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{user}");
    }
    let r = post_form(
        a,
        "two.pay.foo.test",
        "/.branchgate/login",
        "user=bee&password=secret",
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn logins_expire_and_failed_ones_are_throttled() {
    let e = gated(ANN, &["--branch-auth-ttl", "1s"]).await;
    let a = e.proxy.addr;
    let cookie = login(a, "one.main.foo.test").await;
    let r = get_with(a, "one.main.foo.test", "/", &[HTML, ("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK);
    support::eventually(Duration::from_secs(5), "the login to expire", || {
        let cookie = cookie.clone();
        async move {
            let r = get_with(a, "one.main.foo.test", "/", &[HTML, ("cookie", &cookie)]).await;
            (r.status == StatusCode::FOUND).then_some(())
        }
    })
    .await;

    // Ten failures in a minute: the eleventh attempt is refused, even right.
    for _ in 0..10 {
        let r = post_form(
            a,
            "one.main.foo.test",
            "/.branchgate/login",
            "user=ann&password=guess",
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = post_form(
        a,
        "one.main.foo.test",
        "/.branchgate/login",
        "user=ann&password=secret",
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = get_with(
        a,
        "one.main.foo.test",
        "/",
        &[("authorization", &basic("ann", "secret"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "Basic too");
}

#[tokio::test]
async fn removing_a_user_from_the_file_ends_their_login() {
    let e = gated(
        &format!("{ANN}\nbob:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"),
        &[],
    )
    .await;
    let a = e.proxy.addr;
    let cookie = login(a, "one.main.foo.test").await;
    support::proxy::write_atomically(e._users.path(), "bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n");
    support::eventually(Duration::from_secs(10), "ann's login to end", || {
        let cookie = cookie.clone();
        async move {
            let r = get_with(a, "one.main.foo.test", "/", &[HTML, ("cookie", &cookie)]).await;
            (r.status == StatusCode::FOUND).then_some(())
        }
    })
    .await;
    let r = get_with(
        a,
        "one.main.foo.test",
        "/",
        &[("authorization", &basic("bob", "secret"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn allow_lists_per_route_and_for_the_branch_domain() {
    let up = Backend::spawn("up").await;
    let fe = Backend::spawn("fe").await;
    let routes = |trust: bool| {
        let mut b = Proxy::builder()
            .route("closed.example", &[up.addr], "allow = \"10.0.0.0/8\"")
            .route(
                "open.example",
                &[up.addr],
                "allow = \"10.0.0.0/8, 127.0.0.1\"",
            )
            .toml(&member("main", "frontend", fe.addr))
            .arg("--branch-domain")
            .arg("foo.test")
            .arg("--branch-allow")
            .arg("192.168.0.0/16");
        if trust {
            b = b.arg("--trust-downstream-proxy");
        }
        b
    };
    let p = routes(false).spawn().await;
    assert_eq!(
        get(p.addr, "closed.example", "/").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(p.addr, "open.example", "/").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(p.addr, "main.foo.test", "/").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(p.addr, "foo.test", "/").await.status,
        StatusCode::FORBIDDEN,
        "the matrix too"
    );
    // A client's own X-Forwarded-For counts for nothing without trust.
    let xff = [("x-forwarded-for", "10.1.2.3")];
    assert_eq!(
        get_with(p.addr, "closed.example", "/", &xff).await.status,
        StatusCode::FORBIDDEN
    );

    // Behind a trusted proxy, the address it appended last is the client.
    let p = routes(true).spawn().await;
    let via = [("x-forwarded-for", "203.0.113.9, 10.1.2.3")];
    assert_eq!(
        get_with(p.addr, "closed.example", "/", &via).await.status,
        StatusCode::OK
    );
    let spoofed = [("x-forwarded-for", "10.1.2.3, 203.0.113.9")];
    assert_eq!(
        get_with(p.addr, "closed.example", "/", &spoofed)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // A last entry that is not an address: refused, never the proxy's own
    // address or the client's claim before it instead.
    for junk in ["10.1.2.3, garbage", "10.1.2.3,"] {
        let r = get_with(p.addr, "closed.example", "/", &[("x-forwarded-for", junk)]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{junk}");
    }
    let port = [("x-forwarded-for", "203.0.113.9, 10.1.2.3:5555")];
    assert_eq!(
        get_with(p.addr, "closed.example", "/", &port).await.status,
        StatusCode::OK
    );
    let branch = [("x-forwarded-for", "192.168.7.7")];
    let r = get_with(p.addr, "main.foo.test", "/", &branch).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.backend(), "fe");
}

#[tokio::test]
async fn branch_environments_are_not_indexed_unless_asked() {
    let fe = Backend::spawn("fe").await;
    let other = Backend::spawn("other").await;
    let build = || {
        Proxy::builder()
            .toml(&member("main", "frontend", fe.addr))
            .route("pinned.foo.test", &[other.addr], "")
            .route("www.example", &[other.addr], "")
            .arg("--branch-domain")
            .arg("foo.test")
    };
    let p = build().spawn().await;
    for host in [
        "main.foo.test",
        "pinned.foo.test",
        "foo.test",
        "nope.nope.foo.test",
    ] {
        let r = get(p.addr, host, "/").await;
        assert_eq!(
            r.headers.get("x-robots-tag").map(|v| v.to_str().unwrap()),
            Some("noindex"),
            "{host}: {r:?}"
        );
    }
    assert!(
        get(p.addr, "www.example", "/")
            .await
            .headers
            .get("x-robots-tag")
            .is_none()
    );
    let p = build().arg("--branch-noindex=false").spawn().await;
    assert!(
        get(p.addr, "main.foo.test", "/")
            .await
            .headers
            .get("x-robots-tag")
            .is_none()
    );
}

#[test]
fn bad_access_flags_name_the_flag_and_why() {
    let bin = env!("CARGO_BIN_EXE_branchgate");
    let base = [
        "--http",
        "127.0.0.1:0",
        "--https",
        "off",
        "--admin",
        "off",
        "--no-docker",
    ];
    // Refused by the flag parser: exit 2, one line.
    for (args, says) in [
        (&["--branch-allow", "10.0.0.0/33"][..], "--branch-allow"),
        (
            &["--branch-auth-bypass-token", "short"][..],
            "at least 16 characters",
        ),
        (&["--branch-auth-ttl", "30d"][..], "at most 7 days"),
        (&["--branch-noindex", "perhaps"][..], "--branch-noindex"),
    ] {
        let out = std::process::Command::new(bin)
            .args(base)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Refused at start-up, naming the flag and the reason.
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "ann:$6$salt$unsupported\n").unwrap();
    let users = users.to_str().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    for (args, says) in [
        (
            &[
                "--branch-auth",
                "/nonexistent/users",
                "--branch-domain",
                "x.test",
            ][..],
            "--branch-auth: cannot read /nonexistent/users",
        ),
        (
            &["--branch-auth", users][..],
            "--branch-auth: needs --branch-domain",
        ),
        (
            &["--branch-auth", users, "--branch-domain", "x.test"][..],
            "has no usable user",
        ),
        (
            &["--branch-allow", "10.0.0.0/8"][..],
            "--branch-allow: needs --branch-domain",
        ),
        (
            &["--htpasswd", "/nonexistent/dir"][..],
            "--htpasswd: cannot read the directory",
        ),
    ] {
        let out = std::process::Command::new(bin)
            .args(base)
            .args(["--state", state])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn a_host_served_by_the_default_host_gets_its_rules() {
    let up = Backend::spawn("up").await;
    let p = Proxy::builder()
        .route("main.example", &[up.addr], "allow = \"10.0.0.0/8\"")
        .arg("--default-host")
        .arg("main.example")
        .spawn()
        .await;
    assert_eq!(
        get(p.addr, "main.example", "/").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(p.addr, "1.2.3.4", "/").await.status,
        StatusCode::FORBIDDEN,
        "an unknown host too"
    );
}
