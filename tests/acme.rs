//! ACME issuance against a real CA and a real DNS server, all on loopback:
//! Debian's Pebble (RFC 8555) validating against branchgate's own listeners,
//! and Knot taking RFC 2136 updates signed with TSIG for DNS-01. The real
//! binary runs each time; what the CA did is counted on the CA's side.
//! Faults, limits and lifetimes are in `acme_faults.rs`.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use support::acme::{Env, branch, free_port, mode, route};
use support::tls::Client;
use support::{ProxyProcess, eventually, get};

#[tokio::test]
async fn http_01_issues_a_certificate_for_a_labelled_host_and_keeps_keys_private() {
    let Some(env) = Env::start(false, None).await else {
        return;
    };
    let proxy = env
        .proxy(
            &route("a.foo.bar, www.a.foo.bar", "a.foo.bar,www.a.foo.bar"),
            &["--acme-challenge", "http-01", "--acme-email", "ops@foo.bar"],
        )
        .await;
    for host in ["a.foo.bar", "www.a.foo.bar"] {
        env.served(host, Duration::from_secs(30)).await;
    }
    // One certificate for the SAN list, one order, one account.
    assert_eq!(env.pebble.orders(), 1);
    let id = eventually(
        Duration::from_secs(5),
        "the a.foo.bar certificate",
        || async {
            env.status()
                .as_object()?
                .keys()
                .find(|k| k.starts_with("a.foo.bar-"))
                .cloned()
        },
    )
    .await;
    let status = env.status_is(&id, "valid").await;
    assert_eq!(
        status["names"],
        serde_json::json!(["a.foo.bar", "www.a.foo.bar"])
    );
    assert!(status["not_after"].as_i64().unwrap() > 0);
    let dir = env.acme_dir();
    assert_eq!(mode(&dir.join("account.json")), 0o600);
    assert_eq!(mode(&dir.join(format!("certs/{id}.key"))), 0o600);
    assert_eq!(mode(&dir.join(format!("certs/{id}.crt"))), 0o644);
    // No temporary file is left next to them.
    let names: Vec<String> = std::fs::read_dir(dir.join("certs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Challenge paths: a token that is not base64url is refused, an unknown one is 404,
    // and neither reaches a route or a redirect.
    let http = SocketAddr::from(([127, 0, 0, 1], env.http));
    let r = get(http, "a.foo.bar", "/.well-known/acme-challenge/..%2Fsecret").await;
    assert_eq!(r.status, 400);
    // A well-formed token no order waits on goes to the route (a backend may
    // run its own ACME client): here its upstream is down, hence 502.
    let r = get(
        http,
        "a.foo.bar",
        "/.well-known/acme-challenge/unknownToken_1",
    )
    .await;
    assert_eq!(r.status, 502);
    // Once the certificate is held, plain HTTP goes to HTTPS.
    let r = get(http, "a.foo.bar", "/x?y=1").await;
    assert_eq!(r.status, 301);
    let location = format!("https://a.foo.bar:{}/x?y=1", env.https_addr().port());
    assert_eq!(r.headers["location"], location.as_str());
    drop(proxy);
}

/// `--dashboard-host` gets its certificate as a routed host does (HTTP-01
/// answered on it), then serves the admin side over HTTPS.
#[tokio::test]
async fn the_dashboard_host_gets_a_certificate() {
    let Some(env) = Env::start(false, None).await else {
        return;
    };
    let token = "s3cret-admin-token-0123";
    let args = [
        "--acme-challenge",
        "http-01",
        "--admin",
        "off",
        "--admin-token",
        token,
        "--dashboard-host",
        "dash.foo.bar",
    ];
    let _proxy = env.proxy("", &args).await;
    let session = env.served("dash.foo.bar", Duration::from_secs(30)).await;
    let bearer = format!("Bearer {token}");
    let req = http::Request::get("/api/routes")
        .header("host", "dash.foo.bar")
        .header("authorization", bearer)
        .body(http_body_util::Full::default())
        .unwrap();
    let (r, _) = session.send(req).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["routes"].is_array());
    let http = SocketAddr::from(([127, 0, 0, 1], env.http));
    let r = get(http, "dash.foo.bar", "/").await;
    assert_eq!(
        r.status, 301,
        "plain HTTP goes to HTTPS once the certificate is held"
    );
}

#[tokio::test]
async fn tls_alpn_01_issues_on_the_https_listener() {
    let Some(env) = Env::start(false, None).await else {
        return;
    };
    let proxy = env
        .proxy(
            &route("b.foo.bar", "b.foo.bar"),
            &["--acme-challenge", "tls-alpn-01"],
        )
        .await;
    env.served("b.foo.bar", Duration::from_secs(30)).await;
    assert_eq!(env.pebble.orders(), 1);
    // Only TLS-ALPN-01 was tried, and it did not fail.
    let log = proxy.stderr();
    let orders: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("\"ACME order\""))
        .collect();
    assert_eq!(orders.len(), 1, "{log:#?}");
    assert!(orders[0].contains("tls-alpn-01"), "{log:#?}");
    assert!(
        !log.iter().any(|l| l.contains("challenge failed")),
        "{log:#?}"
    );
}

/// 3 frontends × 3 backends with DNS-01: `foo.bar` + `*.foo.bar`, and one
/// `*.<be>.foo.bar` per backend — 4 orders — and all 9 `fe.be` hosts verify.
#[tokio::test]
async fn dns_01_wildcards_cover_a_branch_matrix_with_backends_plus_one_orders() {
    let Some(env) = Env::start(true, None).await else {
        return;
    };
    let knot = env.knot.as_ref().unwrap();
    let mut routes = String::new();
    for b in ["fe1", "fe2", "fe3"] {
        routes += &branch("frontend", b);
    }
    for b in ["be1", "be2", "be3"] {
        routes += &branch("backend", b);
    }
    let proxy = env
        .proxy(
            &routes,
            &[
                "--branch-domain",
                "foo.bar",
                "--acme-dns",
                &knot.dns_spec,
                "--acme-dns-tsig",
                &knot.tsig_spec,
            ],
        )
        .await;
    for fe in ["fe1", "fe2", "fe3"] {
        for be in ["be1", "be2", "be3"] {
            env.served(&format!("{fe}.{be}.foo.bar"), Duration::from_secs(60))
                .await;
        }
        env.served(&format!("{fe}.foo.bar"), Duration::from_secs(10))
            .await;
    }
    env.served("foo.bar", Duration::from_secs(10)).await;
    assert_eq!(env.pebble.orders(), 4, "M + 1 orders on the CA side");
    let status = env.status();
    let all = status.as_object().unwrap();
    assert_eq!(all.len(), 4, "{status:#}");
    for (id, s) in all {
        assert_eq!(s["state"], "valid", "{id}: {status:#}");
    }
    for be in ["be1", "be2", "be3"] {
        let id = format!("_.{be}.foo.bar");
        assert_eq!(
            status[&id]["names"],
            serde_json::json!([format!("*.{be}.foo.bar")])
        );
    }
    let pair = all
        .keys()
        .find(|id| id.starts_with("foo.bar-"))
        .expect("foo.bar + *.foo.bar");
    assert_eq!(
        status[pair]["names"],
        serde_json::json!(["foo.bar", "*.foo.bar"])
    );
    // The challenge records were removed once validated.
    assert!(knot.txt("_acme-challenge.be1.foo.bar").await.is_empty());

    // A backend branch goes away: its certificate is kept (idle, no renewal);
    // when it comes back, no new order is placed.
    let without_be3 = routes.replace(&branch("backend", "be3"), "");
    support::proxy::write_atomically(&proxy.routes, &without_be3);
    env.status_is("_.be3.foo.bar", "idle").await;
    support::proxy::write_atomically(&proxy.routes, &routes);
    env.status_is("_.be3.foo.bar", "valid").await;
    env.served("fe1.be3.foo.bar", Duration::from_secs(10)).await;
    assert_eq!(env.pebble.orders(), 4);
}

#[tokio::test]
async fn dns_01_through_an_exec_hook() {
    let Some(env) = Env::start(true, None).await else {
        return;
    };
    let knot = env.knot.as_ref().unwrap();
    // The hook a user writes for their DNS provider: here it drives Knot
    // with knsupdate, and logs its calls.
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let hook = dir.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\necho \"$@\" >> {calls}\n\
             case $1 in present) op=add ;; cleanup) op=delete ;; *) exit 2 ;; esac\n\
             printf 'server {ip} {port}\\nzone foo.bar\\nkey hmac-sha256:{key} {secret}\\nupdate %s %s 60 TXT \"%s\"\\nsend\\n' \"$op\" \"$2\" \"$3\" | knsupdate\n",
            calls = calls.display(),
            ip = knot.addr.ip(),
            port = knot.addr.port(),
            key = knot.key_name,
            secret = knot.secret,
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hook_spec = format!("exec:{}", hook.display());
    let _proxy = env
        .proxy(
            &(branch("frontend", "fe1") + &branch("backend", "be1")),
            &["--branch-domain", "foo.bar", "--acme-dns", &hook_spec],
        )
        .await;
    env.served("fe1.be1.foo.bar", Duration::from_secs(60)).await;
    env.served("fe1.foo.bar", Duration::from_secs(60)).await;
    assert_eq!(env.pebble.orders(), 2);
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(
        calls.contains("present _acme-challenge.be1.foo.bar. "),
        "{calls}"
    );
    assert!(
        calls.contains("cleanup _acme-challenge.be1.foo.bar. "),
        "{calls}"
    );
}

/// The first challenge kind fails (nothing answers TLS-ALPN-01 where the
/// CA looks): the next one is tried with a new order, and succeeds.
#[tokio::test]
async fn a_failing_challenge_falls_back_to_the_next() {
    let Some(env) = Env::start(false, None).await else {
        return;
    };
    // The proxy's HTTPS listener is not where Pebble validates TLS-ALPN-01.
    let mut args = env.args(&["--acme-challenge", "tls-alpn-01,http-01"]);
    let https = format!("127.0.0.1:{}", free_port());
    args[3] = https.clone();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = ProxyProcess::spawn(&route("f.foo.bar", "f.foo.bar"), &args).await;
    let status = env.status_is("f.foo.bar", "valid").await;
    assert!(status["last_error"].is_null());
    let mut c = Client::new("f.foo.bar");
    c.ca = Some(env.roots.clone());
    c.connect(https.parse().unwrap())
        .await
        .expect("served after the fallback");
    assert_eq!(env.pebble.orders(), 2, "one order per challenge kind tried");
    let log = proxy.stderr();
    assert!(
        log.iter()
            .any(|l| l.contains("challenge failed") && l.contains("tls-alpn-01")),
        "{log:#?}"
    );
}

/// A bad ACME flag stops start-up with one line naming it, before any
/// listener serves.
#[tokio::test]
async fn bad_acme_flags_stop_start_up_naming_the_flag() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let base = [
        "--no-docker",
        "--http",
        "127.0.0.1:0",
        "--https",
        "127.0.0.1:0",
        "--acme",
        "on",
    ];
    let cases: [(&[&str], &str); 8] = [
        (&["--acme-challenge", "nope"], "--acme-challenge"),
        (
            &["--acme-directory", "http://ca.example/dir"],
            "--acme-directory",
        ),
        (
            &["--acme-max-orders-per-hour", "0"],
            "--acme-max-orders-per-hour",
        ),
        (&["--acme-email", "not-an-address"], "--acme-email"),
        (
            &["--state", state, "--acme-dns", "rfc2136://127.0.0.1:53"],
            "--acme-dns",
        ),
        (
            &["--state", state, "--acme-dns-tsig", "k:md5:/nonexistent"],
            "--acme-dns-tsig",
        ),
        (
            &["--state", state, "--acme-ca-root", "/nonexistent.pem"],
            "--acme-ca-root",
        ),
        (&["--state", "/proc/branchgate-state"], "--state"),
    ];
    for (args, flag) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_branchgate"))
            .args(base)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(flag)).collect();
        assert!(!lines.is_empty(), "{args:?}: {err}");
    }
}

/// `--acme-all-hosts`: every exact host that routes gets a certificate
/// without a label; wildcard rules and private names do not.
#[tokio::test]
async fn all_hosts_orders_every_exact_public_host() {
    let Some(env) = Env::start(false, None).await else {
        return;
    };
    let plain =
        |host: &str| format!("[[route]]\nhost = \"{host}\"\nupstreams = [\"127.0.0.1:9\"]\n\n");
    let routes = plain("one.foo.bar")
        + &plain("two.foo.bar")
        + &plain("*.wild.foo.bar")
        + &plain("intranet");
    let _proxy = env
        .proxy(
            &routes,
            &["--acme-all-hosts", "--acme-challenge", "http-01"],
        )
        .await;
    env.served("one.foo.bar", Duration::from_secs(30)).await;
    env.served("two.foo.bar", Duration::from_secs(30)).await;
    let status = env.status();
    let ids: Vec<&String> = status.as_object().unwrap().keys().collect();
    assert_eq!(ids, ["one.foo.bar", "two.foo.bar"], "{status:#}");
    assert_eq!(env.pebble.orders(), 2);
}
