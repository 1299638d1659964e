//! ACME under faults and limits, against Pebble (and Knot) on loopback: on
//! demand and its gates, the hourly budget, renewal, restarts, a CA that is
//! down or hangs, two processes on one state directory.

mod support;

use std::time::Duration;

use support::acme::{Env, branch, free_port, route, serial, signal};
use support::tls::Client;
use support::{ProxyProcess, eventually};

/// Without DNS-01: the first handshake for a routed branch host waits while
/// its certificate is issued; 20 at once make exactly one order; names that
/// do not route, and IPs, make none.
#[tokio::test]
async fn on_demand_orders_once_for_a_routed_branch_host_and_never_for_others() {
    let Some(env) = Env::start(false, None).await else {
        return;
    };
    let routes = branch("frontend", "fe1") + &branch("backend", "be1");
    let proxy = env.proxy(&routes, &["--branch-domain", "foo.bar"]).await;
    let mut handshakes = Vec::new();
    for _ in 0..20 {
        let env = &env;
        handshakes.push(async move { env.verified("fe1.be1.foo.bar").await });
    }
    let results = futures_util::future::join_all(handshakes).await;
    for r in &results {
        if let Err(e) = r {
            panic!("every first handshake waits for the one order: {e}");
        }
    }
    assert_eq!(env.pebble.orders(), 1);
    let first = serial(results[0].as_ref().unwrap());
    assert!(results.iter().all(|r| serial(r.as_ref().unwrap()) == first));

    // A branch host whose frontend is not deployed, a host outside the
    // branch domain, no SNI (as for an IP): refused, and no order.
    for host in ["nope.be1.foo.bar", "fe1.nope.foo.bar", "elsewhere.example"] {
        let err = env
            .verified(host)
            .await
            .err()
            .unwrap_or_else(|| panic!("{host}"));
        assert_eq!(support::tls::alert(&err), "UnrecognisedName", "{host}");
    }
    let mut no_sni = Client::new("x");
    no_sni.sni = None;
    assert!(no_sni.connect(env.https_addr()).await.is_err());
    // An IP address as SNI: illegal_parameter (47), before any ACME decision.
    for ip in [&b"127.0.0.1"[..], b"::1"] {
        let answer =
            support::tls::exchange(env.https_addr(), &support::tls::client_hello(ip)).await;
        assert!(
            answer.len() >= 7 && answer[0] == 0x15 && answer[6] == 47,
            "{answer:?}"
        );
    }
    // Refusals are decided in the handshake, before anything reaches the
    // manager: the count is final.
    assert_eq!(env.pebble.orders(), 1, "{:#}", env.status());
    drop(proxy);
}

#[tokio::test]
async fn a_spent_budget_says_so_while_other_names_keep_working() {
    let Some(env) = Env::start(false, None).await else {
        return;
    };
    let routes = route("one.foo.bar", "one.foo.bar") + &route("two.foo.bar", "two.foo.bar");
    let proxy = env
        .proxy(
            &routes,
            &[
                "--acme-challenge",
                "http-01",
                "--acme-max-orders-per-hour",
                "1",
            ],
        )
        .await;
    let (issued, waiting) = eventually(
        Duration::from_secs(30),
        "one issued, one over budget",
        || async {
            let s = env.status();
            let states = (
                s["one.foo.bar"]["state"].clone(),
                s["two.foo.bar"]["state"].clone(),
            );
            match (states.0.as_str()?, states.1.as_str()?) {
                ("valid", "budget") => Some(("one.foo.bar", "two.foo.bar")),
                ("budget", "valid") => Some(("two.foo.bar", "one.foo.bar")),
                _ => None,
            }
        },
    )
    .await;
    env.served(issued, Duration::from_secs(5)).await;
    let s = env.status();
    let err = s[waiting]["last_error"].as_str().unwrap();
    assert!(err.contains("--acme-max-orders-per-hour 1"), "{err}");
    assert!(s[waiting]["next_attempt"].as_i64().unwrap() > 0);
    let logged = proxy
        .stderr()
        .iter()
        .any(|l| l.contains("order budget spent") && l.contains(waiting));
    assert!(logged, "{:#?}", proxy.stderr());
    assert_eq!(env.pebble.orders(), 1);
}

/// Short-lived certificates renew at two thirds of their life; the old one
/// serves until the new one is stored.
#[tokio::test]
async fn renewal_replaces_a_certificate_before_it_expires() {
    let Some(env) = Env::start(false, Some(Duration::from_secs(24))).await else {
        return;
    };
    let _proxy = env
        .proxy(
            &route("r.foo.bar", "r.foo.bar"),
            &["--acme-challenge", "tls-alpn-01"],
        )
        .await;
    let first = serial(&env.served("r.foo.bar", Duration::from_secs(30)).await);
    let renew_at = env.status_is("r.foo.bar", "valid").await["renew_at"]
        .as_i64()
        .unwrap();
    let not_after = env.status()["r.foo.bar"]["not_after"].as_i64().unwrap();
    assert!(renew_at < not_after);
    let second = eventually(Duration::from_secs(40), "a renewed certificate", || async {
        // Every handshake meanwhile is served a valid certificate.
        let s = serial(&env.verified("r.foo.bar").await.expect("served throughout"));
        (s != first).then_some(s)
    })
    .await;
    assert_ne!(first, second);
    assert!(env.pebble.orders() >= 2);
}

#[tokio::test]
async fn a_restart_reuses_the_account_and_certificates_without_ordering() {
    let Some(env) = Env::start(false, None).await else {
        return;
    };
    let routes = route("s.foo.bar", "s.foo.bar");
    let args = ["--acme-challenge", "http-01"];
    let proxy = env.proxy(&routes, &args).await;
    let first = serial(&env.served("s.foo.bar", Duration::from_secs(30)).await);
    env.status_is("s.foo.bar", "valid").await;
    let account = std::fs::read(env.acme_dir().join("account.json")).unwrap();
    drop(proxy);
    let orders = env.pebble.orders();

    let _proxy = env.proxy(&routes, &args).await;
    let again = env.served("s.foo.bar", Duration::from_secs(5)).await;
    assert_eq!(serial(&again), first);
    // The stored certificate is in force from the first publish: an order
    // would have started before this status was written.
    let status = env.status_is("s.foo.bar", "valid").await;
    assert!(status["renew_at"].as_i64().unwrap() > 0);
    assert_eq!(env.pebble.orders(), orders, "no order after a restart");
    assert_eq!(
        std::fs::read(env.acme_dir().join("account.json")).unwrap(),
        account
    );
}

/// The CA goes away: what is held keeps serving, a new name fails with its
/// error in the status and is retried with backoff.
#[tokio::test]
async fn a_ca_that_is_down_never_touches_served_certificates() {
    // 45 s certificates: renewal falls due (at about 28 s) while the CA is down.
    let Some(mut env) = Env::start(false, Some(Duration::from_secs(45))).await else {
        return;
    };
    let proxy = env
        .proxy(
            &route("up.foo.bar", "up.foo.bar"),
            &["--acme-challenge", "http-01"],
        )
        .await;
    let first = serial(&env.served("up.foo.bar", Duration::from_secs(30)).await);
    env.pebble.stop();
    support::proxy::write_atomically(
        &proxy.routes,
        &(route("up.foo.bar", "up.foo.bar") + &route("new.foo.bar", "new.foo.bar")),
    );
    let status = eventually(
        Duration::from_secs(30),
        "the new name to fail twice",
        || async {
            let s = env.status()["new.foo.bar"].clone();
            (s["state"] == "failed" || s["last_error"].is_string()).then_some(s)
        },
    )
    .await;
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("ACME server"),
        "{status:#}"
    );
    assert!(status["next_attempt"].as_i64().is_some());
    // Handshakes for the held certificate are unaffected.
    for _ in 0..5 {
        let s = env.verified("up.foo.bar").await.expect("still served");
        assert_eq!(serial(&s), first);
    }
    assert_eq!(env.status()["up.foo.bar"]["state"], "valid");
    // Its renewal fails in turn: the status says so, the certificate in
    // force keeps serving until it expires.
    let renewal = env.status_is("up.foo.bar", "failed").await;
    assert!(
        renewal["last_error"]
            .as_str()
            .unwrap()
            .contains("ACME server"),
        "{renewal:#}"
    );
    assert!(renewal["not_after"].as_i64().is_some());
    let s = env
        .verified("up.foo.bar")
        .await
        .expect("served while its renewal fails");
    assert_eq!(serial(&s), first);
}

/// A CA that hangs: the first handshake for a branch host gives up after
/// --acme-on-demand-timeout; once the order failed, the next handshakes are
/// refused at once (the negative cache) until the backoff ends.
#[tokio::test]
async fn on_demand_waits_are_bounded_and_failures_are_remembered() {
    let Some(mut env) = Env::start(false, None).await else {
        return;
    };
    let routes = branch("frontend", "fe1") + &branch("backend", "be1");
    let mut args = env.args(&[
        "--branch-domain",
        "foo.bar",
        "--acme-on-demand-timeout",
        "2s",
    ]);
    let retry = args.iter().position(|a| a == "--acme-retry").unwrap();
    args[retry + 1] = "1h".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = ProxyProcess::spawn(&routes, &args).await;
    // Frozen: connections are accepted by the kernel and never answered.
    signal(env.pebble_pid(), "STOP");
    let started = std::time::Instant::now();
    let err = env
        .verified("fe1.be1.foo.bar")
        .await
        .err()
        .expect("no certificate");
    assert_eq!(support::tls::alert(&err), "UnrecognisedName");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    // The CA answers again, refusing: the order fails and is remembered.
    signal(env.pebble_pid(), "CONT");
    env.pebble.stop();
    env.status_is("fe1.be1.foo.bar", "failed").await;
    let started = std::time::Instant::now();
    assert!(env.verified("fe1.be1.foo.bar").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused without waiting"
    );
    drop(proxy);
}

/// Two processes share one state directory (a blue/green restart, two
/// replicas): the certificate's lock makes one order, the other reads it.
#[tokio::test]
async fn two_processes_sharing_a_state_directory_order_a_name_once() {
    let Some(env) = Env::start(true, None).await else {
        return;
    };
    let knot = env.knot.as_ref().unwrap();
    // DNS-01 either way: whichever process wins the lock can validate.
    let dns = [
        "--acme-dns",
        &knot.dns_spec,
        "--acme-dns-tsig",
        &knot.tsig_spec,
    ];
    let routes = route("shared.foo.bar", "shared.foo.bar");
    let first = env.proxy(&routes, &dns).await;
    // The second listens elsewhere, on the same state directory.
    let mut args: Vec<String> = env.args(&dns);
    for (i, port) in [(1, free_port()), (3, free_port())] {
        args[i] = format!("127.0.0.1:{port}");
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let second = ProxyProcess::spawn(&routes, &args).await;
    let a = env.served("shared.foo.bar", Duration::from_secs(30)).await;
    let second_https = second.https.unwrap();
    let b = eventually(
        Duration::from_secs(30),
        "the second process to serve it",
        || async {
            let mut c = Client::new("shared.foo.bar");
            c.ca = Some(env.roots.clone());
            c.connect(second_https).await.ok()
        },
    )
    .await;
    assert_eq!(serial(&a), serial(&b));
    assert_eq!(env.pebble.orders(), 1);
    drop((first, second));
}
