//! ACME against a real CA and a real DNS server, all on loopback: Debian's
//! Pebble (RFC 8555) validating against branchgate's own listeners, and
//! Knot taking RFC 2136 updates signed with TSIG for DNS-01. The real
//! binary runs each time; what the CA did is counted on the CA's side.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::knot::Knot;
use support::pebble::{Pebble, PebbleOptions};
use support::tls::{Client, Session};
use support::{ProxyProcess, eventually, get};

/// Where routes go: nothing listens there; handshakes need no backend.
const UPSTREAM: &str = "127.0.0.1:9";

/// A CA (and optionally a DNS server) for one test, and the ports branchgate
/// must listen on for the CA to reach it.
struct Env {
    pebble: Pebble,
    knot: Option<Knot>,
    http: u16,
    https: u16,
    state: tempfile::TempDir,
    roots: String,
}

/// A free loopback port (bound and released: the proxy binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Env {
    async fn start(dns: bool, validity: Option<Duration>) -> Option<Self> {
        let knot = match dns {
            true => Some(Knot::start("foo.bar").await?),
            false => None,
        };
        let (http, https) = (free_port(), free_port());
        let pebble = Pebble::start(PebbleOptions {
            http_port: http,
            tls_port: https,
            dns: knot.as_ref().map(|k| k.addr),
            validity,
        })
        .await?;
        let roots = String::from_utf8(pebble.issuer_roots().await).unwrap();
        Some(Self {
            pebble,
            knot,
            http,
            https,
            state: tempfile::tempdir().unwrap(),
            roots,
        })
    }

    fn pebble_pid(&self) -> u32 {
        self.pebble.pid()
    }

    fn https_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.https))
    }

    /// The flags that point branchgate at this CA, plus `extra`.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--http",
            &format!("127.0.0.1:{}", self.http),
            "--https",
            &format!("127.0.0.1:{}", self.https),
            "--acme",
            "on",
            "--acme-directory",
            &self.pebble.directory,
            "--acme-ca-root",
            self.pebble.ca_root.to_str().unwrap(),
            "--state",
            self.state.path().to_str().unwrap(),
            "--acme-retry",
            "1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    async fn proxy(&self, routes: &str, extra: &[&str]) -> ProxyProcess {
        let args = self.args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ProxyProcess::spawn(routes, &args).await
    }

    /// A handshake for `host` whose chain verifies against the CA's roots
    /// for that name.
    async fn verified(&self, host: &str) -> Result<Session, std::io::Error> {
        let mut client = Client::new(host);
        client.ca = Some(self.roots.clone());
        client.connect(self.https_addr()).await
    }

    /// Waits until `host` is served a certificate that verifies.
    async fn served(&self, host: &str, limit: Duration) -> Session {
        eventually(
            limit,
            &format!("a verified certificate for {host}"),
            || async { self.verified(host).await.ok() },
        )
        .await
    }

    /// The ACME part of the state directory (one ACME directory here).
    fn acme_dir(&self) -> PathBuf {
        let dir = self.state.path().join("acme");
        let mut entries = std::fs::read_dir(&dir).unwrap();
        let one = entries
            .next()
            .expect("a folder per ACME directory")
            .unwrap();
        one.path()
    }

    /// `status.json`, by certificate id.
    fn status(&self) -> serde_json::Value {
        let text = std::fs::read(self.acme_dir().join("status.json")).unwrap_or_default();
        serde_json::from_slice(&text).unwrap_or(serde_json::Value::Null)
    }

    async fn status_is(&self, id: &str, state: &str) -> serde_json::Value {
        eventually(
            Duration::from_secs(30),
            &format!("{id} to be {state}"),
            || async {
                let s = self.status();
                (s[id]["state"] == state).then(|| s[id].clone())
            },
        )
        .await
    }
}

fn route(host: &str, acme_host: &str) -> String {
    format!(
        "[[route]]\nhost = \"{host}\"\nupstreams = [\"{UPSTREAM}\"]\nacme_host = \"{acme_host}\"\n\n"
    )
}

fn branch(role: &str, name: &str) -> String {
    format!("[[route]]\nbranch = \"{name}\"\nrole = \"{role}\"\nupstreams = [\"{UPSTREAM}\"]\n\n")
}

/// Sends a signal to a process this test started.
fn proxy_signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The leaf's serial (hex), to tell two certificates apart.
fn serial(session: &Session) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, c) = X509Certificate::from_der(session.chain[0].as_ref()).unwrap();
    c.raw_serial_as_string()
}

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
    drop(proxy);
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
    proxy_signal(env.pebble_pid(), "STOP");
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
    proxy_signal(env.pebble_pid(), "CONT");
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
