//! The ACME numbers of BENCHMARKS.md (issue 14), measured black-box: the
//! real binary against Debian's Pebble (and Knot for DNS-01) on loopback,
//! orders counted on the CA's side. Each result is one stderr line
//! `ACME-BENCH {json}`. The tests are ignored by default (each says why);
//! `scripts/acme-bench.sh` runs them and prints the table.
//!
//! - **DNS-01**, N frontends × M backends: branchgate orders `DOMAIN` +
//!   `*.DOMAIN` and one `*.<be>.DOMAIN` per backend, M + 1 orders; timed from
//!   the proxy's start until every `fe.be.DOMAIN`, `fe.DOMAIN` and `DOMAIN` is
//!   served a chain that verifies against Pebble's root.
//! - **On demand** (no DNS-01): one order per host at its first handshake,
//!   N × M + N + 1 when every host is visited (8 at a time here). A size whose
//!   orders exceed `--acme-max-orders-per-hour`'s maximum (300) is not run:
//!   its line says `"measured":false` and carries the arithmetic only.
//! - **Docker**: from a container's start (the engine's `start` event) to the
//!   first HTTPS answer *from that container* over a chain that verifies:
//!   a `LETSENCRYPT_HOST` container (one order), a new frontend beside a
//!   backend whose DNS-01 wildcard is held (no order: routing and certificate
//!   selection only), and a new frontend without DNS-01 (its on-demand order).
//!
//! Environment: `ACME_BENCH_SIZES` (`10x10,50x50`), `ACME_BENCH_DOCKER_RUNS` (5).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use support::acme::acme_flags;
use support::docker::{TestContainer, docker, engine, field, unique};
use support::knot::Knot;
use support::pebble::{Pebble, PebbleOptions};
use support::tls::{Client, Session};
use support::{ProxyProcess, eventually, free_port};
use tokio_rustls::TlsConnector;

/// Where routes-file routes go: nothing listens there; handshakes need no backend.
const UPSTREAM: &str = "127.0.0.1:9";
/// The branch domain of the matrix scenarios.
const DOMAIN: &str = "foo.bar";
/// Hosts checked at once.
const CONCURRENCY: usize = 8;
/// The order budget for every run: the flag's maximum.
const BUDGET: usize = 300;
/// Let's Encrypt: new certificates per registered domain per week.
const LE_PER_DOMAIN_WEEK: f64 = 50.0;
/// Let's Encrypt: new orders per account per 3 hours.
const LE_ORDERS_PER_3H: f64 = 300.0;
/// branchgate's default `--acme-max-orders-per-hour`.
const DEFAULT_BUDGET: f64 = 20.0;
/// The longest any one host may take to be served.
const LIMIT: Duration = Duration::from_secs(300);

/// Pebble (with Knot when DNS-01 is measured), the ports it validates on,
/// the proxy's state directory, and a client that trusts Pebble's root.
struct Ca {
    pebble: Pebble,
    knot: Option<Knot>,
    http: u16,
    https: u16,
    state: tempfile::TempDir,
    connector: TlsConnector,
}

impl Ca {
    /// Pebble, and Knot authoritative for `zone` when given. `None` after a
    /// loud skip when they are not installed (a failure under `CI=true`).
    async fn start(zone: Option<&str>) -> Option<Self> {
        let knot = match zone {
            Some(z) => Some(Knot::start(z).await?),
            None => None,
        };
        let (http, https) = (free_port(), free_port());
        let mut opts = PebbleOptions::new(http, https);
        opts.dns = knot.as_ref().map(|k| k.addr);
        let pebble = Pebble::start(opts).await?;
        let mut client = Client::new("unused");
        client.ca = Some(String::from_utf8(pebble.issuer_roots().await).unwrap());
        // Every check is a full handshake that is sent the chain.
        client.resumption = rustls::client::Resumption::disabled();
        Some(Self {
            connector: client.connector(),
            pebble,
            knot,
            http,
            https,
            state: tempfile::tempdir().unwrap(),
        })
    }

    /// The real binary with ACME pointed at this CA, `routes` and `extra` flags.
    async fn proxy(&self, routes: &str, extra: &[&str]) -> ProxyProcess {
        let budget = BUDGET.to_string();
        let mut args = acme_flags(&self.pebble, self.state.path(), self.http, self.https);
        let mut more = vec!["--acme-max-orders-per-hour", &budget, "--access-log", "off"];
        if let Some(knot) = &self.knot {
            more.extend([
                "--acme-dns",
                &knot.dns_spec,
                "--acme-dns-tsig",
                &knot.tsig_spec,
            ]);
        }
        more.extend_from_slice(extra);
        args.extend(more.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ProxyProcess::spawn(routes, &args).await
    }

    /// One full handshake for `host` whose chain verifies against Pebble's
    /// root for that name (bounded, so an on-demand wait cannot hang it).
    async fn verified(&self, host: &str) -> std::io::Result<Session> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.https));
        let client = Client::new(host);
        tokio::time::timeout(
            Duration::from_secs(60),
            client.connect_via(&self.connector, addr),
        )
        .await
        .map_err(std::io::Error::other)?
    }

    /// New orders Pebble accepted once its log has at least `expected`; a
    /// short grace afterwards lets any extra order show.
    async fn orders(&self, expected: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.pebble.orders() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.pebble.orders()
    }
}

/// `ACME_BENCH_SIZES`: `NxM` pairs, comma separated.
fn sizes() -> Vec<(usize, usize)> {
    let text = std::env::var("ACME_BENCH_SIZES").unwrap_or_else(|_| "10x10,50x50".into());
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (n, m) = s
                .split_once('x')
                .unwrap_or_else(|| panic!("ACME_BENCH_SIZES: {s:?} is not NxM"));
            (n.parse().unwrap(), m.parse().unwrap())
        })
        .collect()
}

fn report(line: Value) {
    eprintln!("ACME-BENCH {line}");
}

/// Routes for frontends `fe1..=feN` and backends `be1..=beM`.
fn matrix_routes(n: usize, m: usize) -> String {
    let member = |role: &str, name: String| {
        format!(
            "[[route]]\nbranch = \"{name}\"\nrole = \"{role}\"\nupstreams = [\"{UPSTREAM}\"]\n\n"
        )
    };
    let fe = (1..=n).map(|i| member("frontend", format!("fe{i}")));
    let be = (1..=m).map(|i| member("backend", format!("be{i}")));
    fe.chain(be).collect()
}

/// Every branch host of the matrix: each `fe.be.DOMAIN`, each `fe.DOMAIN`, `DOMAIN`.
fn matrix_hosts(n: usize, m: usize) -> Vec<String> {
    let mut hosts = Vec::with_capacity(n * m + n + 1);
    for f in 1..=n {
        hosts.extend((1..=m).map(|b| format!("fe{f}.be{b}.{DOMAIN}")));
        hosts.push(format!("fe{f}.{DOMAIN}"));
    }
    hosts.push(DOMAIN.to_owned());
    hosts
}

/// Polls each host until it is served a verified chain, [`CONCURRENCY`] at
/// a time. Per host: the wait from its first attempt, and how many attempts
/// failed before (an on-demand handshake that timed out, or no certificate yet).
async fn until_verified(ca: &Ca, hosts: &[String]) -> Vec<(Duration, usize)> {
    futures_util::stream::iter(hosts)
        .map(|host| async move {
            let first = Instant::now();
            let mut failed = 0;
            loop {
                match ca.verified(host).await {
                    Ok(_) => return (first.elapsed(), failed),
                    Err(e) => {
                        failed += 1;
                        assert!(first.elapsed() < LIMIT, "{host}: still {e} after {LIMIT:?}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// When Pebble has issued `count` certificates, counted from `since`.
async fn until_issued(ca: &Ca, count: usize, since: Instant) -> Duration {
    while ca.pebble.issued() < count {
        assert!(
            since.elapsed() < LIMIT,
            "Pebble issued {} of {count}",
            ca.pebble.issued()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    since.elapsed()
}

/// Milliseconds, rounded to 0.1.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Seconds, rounded to 0.01.
fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

fn median(sorted: &[Duration]) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// How long `orders` take at each rate limit: computed, not measured.
fn budget_arithmetic(orders: usize) -> Value {
    let o = orders as f64;
    let round = |x: f64| (x * 100.0).round() / 100.0;
    json!({
        "hours_at_default_20_per_hour": round(o / DEFAULT_BUDGET),
        "hours_at_300_per_hour": round(o / BUDGET as f64),
        "hours_at_le_300_orders_per_3h": round(o / LE_ORDERS_PER_3H * 3.0),
        "weeks_at_le_50_certs_per_domain_week": round(o / LE_PER_DOMAIN_WEEK),
    })
}

/// The challenges the proxy's `ACME order` log lines name, with counts, and
/// how many challenges failed.
fn challenges(proxy: &ProxyProcess) -> Value {
    let mut used = serde_json::Map::new();
    let mut failed = 0;
    for line in proxy.stderr() {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match v["fields"]["message"].as_str() {
            Some("ACME order") => {
                let kind = v["fields"]["challenge"].as_str().unwrap_or("?").to_owned();
                let n = used.get(&kind).and_then(Value::as_u64).unwrap_or(0);
                used.insert(kind, json!(n + 1));
            }
            Some("ACME challenge failed; trying the next one, if any") => failed += 1,
            _ => {}
        }
    }
    json!({ "orders_by_challenge": used, "challenges_failed": failed })
}

#[tokio::test]
#[ignore = "a benchmark: scripts/acme-bench.sh"]
async fn dns01_orders_and_time_for_branch_matrices() {
    for (n, m) in sizes() {
        let Some(ca) = Ca::start(Some(DOMAIN)).await else {
            return;
        };
        let hosts = matrix_hosts(n, m);
        let started = Instant::now();
        let proxy = ca
            .proxy(&matrix_routes(n, m), &["--branch-domain", DOMAIN])
            .await;
        let expected = m + 1;
        let (_, issued) = tokio::join!(
            until_verified(&ca, &hosts),
            until_issued(&ca, expected, started)
        );
        let seconds = started.elapsed();
        // Once everything is held: what checking every host costs by itself.
        let check = Instant::now();
        until_verified(&ca, &hosts).await;
        let check = check.elapsed();
        let orders = ca.orders(expected).await;
        report(json!({
            "scenario": "dns01", "fe": n, "be": m, "measured": true,
            "orders": orders, "expected": expected, "issued": ca.pebble.issued(),
            "hosts_verified": hosts.len(), "seconds": secs(seconds),
            "all_issued_seconds": secs(issued), "check_all_hosts_seconds": secs(check),
            "acme": challenges(&proxy),
        }));
        assert_eq!(orders, expected, "M + 1 orders for {n}x{m}");
    }
}

#[tokio::test]
#[ignore = "a benchmark: scripts/acme-bench.sh"]
async fn on_demand_orders_and_time_for_branch_matrices() {
    for (n, m) in sizes() {
        let expected = n * m + n + 1;
        if expected > BUDGET {
            report(json!({
                "scenario": "on-demand", "fe": n, "be": m, "measured": false,
                "expected": expected,
                "why": format!("{expected} orders exceed the flag's maximum of {BUDGET} per hour"),
                "computed": budget_arithmetic(expected),
            }));
            continue;
        }
        let Some(ca) = Ca::start(None).await else {
            return;
        };
        let hosts = matrix_hosts(n, m);
        let started = Instant::now();
        // `fe.DOMAIN` routes (so it may be ordered) only while its API's
        // default backend is deployed.
        let proxy = ca
            .proxy(
                &matrix_routes(n, m),
                &["--branch-domain", DOMAIN, "--default-branch", "be1"],
            )
            .await;
        let (waits, issued) = tokio::join!(
            until_verified(&ca, &hosts),
            until_issued(&ca, expected, started)
        );
        let seconds = started.elapsed();
        let orders = ca.orders(expected).await;
        let mut first: Vec<Duration> = waits.iter().map(|w| w.0).collect();
        first.sort();
        report(json!({
            "scenario": "on-demand", "fe": n, "be": m, "measured": true,
            "orders": orders, "expected": expected, "issued": ca.pebble.issued(),
            "hosts_verified": hosts.len(), "seconds": secs(seconds),
            "all_issued_seconds": secs(issued),
            "first_handshake_ms": {
                "median": ms(median(&first)), "max": ms(*first.last().unwrap()),
            },
            "failed_handshakes": waits.iter().map(|w| w.1).sum::<usize>(),
            "computed": budget_arithmetic(expected), "acme": challenges(&proxy),
        }));
        assert_eq!(orders, expected, "N x M + N + 1 orders for {n}x{m}");
    }
}

/// Unix time as `SECONDS.NANOS`, as `docker events --since` reads it.
fn docker_time(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Starts `container` and measures from the engine's `start` event to the
/// first `GET /` for `host` answered by that container over a chain that
/// verifies. Polls every 5 ms on a fresh connection while `docker start` runs.
async fn start_to_answer(ca: &Ca, container: &TestContainer, host: &str) -> Duration {
    let since = docker_time(SystemTime::now() - Duration::from_secs(1));
    let id = container.id.clone();
    let start = tokio::task::spawn_blocking(move || docker(&["start", &id]));
    let polled = Instant::now();
    let answered = loop {
        if let Ok(session) = ca.verified(host).await {
            let (reply, _) = session.get(host, "/").await;
            if reply.status == 200 && field(&reply.body, "name") == container.name {
                break SystemTime::now();
            }
        }
        assert!(
            polled.elapsed() < LIMIT,
            "{host}: no verified answer from {}",
            container.name
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    start.await.unwrap();
    let until = docker_time(SystemTime::now());
    let filter = format!("container={}", container.id);
    let out = docker(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        &filter,
        "--filter",
        "event=start",
        "--format",
        "{{.TimeNano}}",
    ]);
    let nanos: u64 = out
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no start event for {}: {out:?}", container.name));
    answered
        .duration_since(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
        .unwrap_or_default()
}

/// Runs `runs` + 1 starts (the first one a warm-up, not counted), one new
/// container each, and reports them under `scenario`.
async fn measure_starts(
    scenario: &str,
    ca: &Ca,
    proxy: &ProxyProcess,
    runs: usize,
    mut next: impl FnMut(usize) -> (TestContainer, String),
) -> Vec<TestContainer> {
    let mut containers = Vec::new();
    let mut samples = Vec::new();
    let mut warmup = Duration::ZERO;
    let mut orders_before = 0;
    for k in 0..=runs {
        let (container, host) = next(k);
        let took = start_to_answer(ca, &container, &host).await;
        containers.push(container);
        if k == 0 {
            warmup = took;
            orders_before = ca.pebble.orders();
        } else {
            samples.push(took);
        }
    }
    let orders = ca.pebble.orders() - orders_before;
    samples.sort();
    report(json!({
        "scenario": scenario, "runs": runs, "measured": true,
        "median_ms": ms(median(&samples)), "max_ms": ms(*samples.last().unwrap()),
        "samples_ms": samples.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        "warmup_ms": ms(warmup), "orders_during_runs": orders, "acme": challenges(proxy),
    }));
    containers
}

fn branch_flags(branch: &str, role: &str) -> [String; 4] {
    [
        "--label".into(),
        format!("branchgate.branch={branch}"),
        "--label".into(),
        format!("branchgate.role={role}"),
    ]
}

#[tokio::test]
#[ignore = "a benchmark: scripts/acme-bench.sh"]
async fn docker_start_to_verified_certificate() {
    let Some(engine) = engine() else { return };
    let runs: usize = std::env::var("ACME_BENCH_DOCKER_RUNS")
        .ok()
        .map_or(5, |v| v.parse().expect("ACME_BENCH_DOCKER_RUNS: a number"));
    assert!(runs > 0, "ACME_BENCH_DOCKER_RUNS: at least 1");
    let branch_domain = |domain: &str| -> Vec<String> {
        ["--docker", &engine.url, "--branch-domain", domain]
            .map(str::to_owned)
            .to_vec()
    };

    // (i) VIRTUAL_HOST + LETSENCRYPT_HOST: one order per new host.
    let Some(ca) = Ca::start(None).await else {
        return;
    };
    let proxy = ca.proxy("", &["--docker", &engine.url]).await;
    let containers = measure_starts("docker-letsencrypt-host", &ca, &proxy, runs, |_| {
        let host = format!("{}.foo.bar", unique("app"));
        let env = format!("VIRTUAL_HOST={host}");
        let le = format!("LETSENCRYPT_HOST={host}");
        (engine.create("acme-app", &["-e", &env, "-e", &le]), host)
    })
    .await;
    drop((containers, proxy, ca));

    // Branch domains of their own: other tests' branch containers on this
    // engine would be members under any domain, but never ordered for here
    // unless one is a backend (DNS-01 orders its wildcard).
    let run = |hint: &str, branch: &str, role: &str| {
        let flags = branch_flags(branch, role);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        engine.create(hint, &flags)
    };

    // (ii) DNS-01, the backend's wildcard held: routing and selection only.
    let domain = format!("{}.test", unique("acme-dns"));
    let Some(ca) = Ca::start(Some(&domain)).await else {
        return;
    };
    let flags = branch_domain(&domain);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let proxy = ca.proxy("", &flags).await;
    let backend = run("acme-be", "be1", "backend");
    backend.start();
    eventually(LIMIT, "the wildcard for be1", || async {
        ca.verified(&format!("x.be1.{domain}")).await.ok()
    })
    .await;
    let containers = measure_starts("docker-branch-dns01", &ca, &proxy, runs, |k| {
        let fe = format!("fe{k}");
        (
            run("acme-fe", &fe, "frontend"),
            format!("{fe}.be1.{domain}"),
        )
    })
    .await;
    drop((containers, backend, proxy, ca));

    // (iii) On demand: the first handshake for the new host waits for its order.
    let domain = format!("{}.test", unique("acme-od"));
    let Some(ca) = Ca::start(None).await else {
        return;
    };
    let flags = branch_domain(&domain);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let proxy = ca.proxy("", &flags).await;
    let backend = run("acme-be", "be1", "backend");
    backend.start();
    let _containers = measure_starts("docker-branch-on-demand", &ca, &proxy, runs, |k| {
        let fe = format!("fe{k}");
        (
            run("acme-fe", &fe, "frontend"),
            format!("{fe}.be1.{domain}"),
        )
    })
    .await;
}
