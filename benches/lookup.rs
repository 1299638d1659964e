//! Route lookup and table rebuild benchmarks.
//!
//! `lookup/*` measures the hot-path work per request: normalise the `Host`
//! value into a stack buffer, then resolve host and path in the table. Tables
//! hold 10, 1 000 and 100 000 routes of one kind (exact, `*.suffix`,
//! `prefix.*`, `~regex`) or a mix. Exact and wildcard lookups must stay flat
//! as the table grows; regexes are scanned in order, as nginx does, so their
//! cost grows with their count (the mix keeps ten of them, a realistic load).
//!
//! `lookup_branch/*` is the same per-request work for branch hosts
//! (`<fe>.<be>.foo.bar`, frontend and API paths) with 10 × 10 and 100 × 100
//! deployed branches beside 1 000 exact routes.
//!
//! `rebuild/*` measures building a table from provider specs.
//!
//! `docker_publish/*` measures the Docker provider's side of a publish with
//! 1 000 running routed containers, from engine JSON to the stored table:
//! `full_sync` parses 1 000 inspect answers (as engine 20.10 sends them),
//! reads their settings, picks addresses, and publishes; `one_event` is what a
//! single container start costs at that size (one inspect read, then the whole
//! table rebuilt and swapped, as every publish does).
//!
//! Run: `cargo bench --bench lookup`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use branchgate::routes::{
    BuildOptions, HostPattern, Lookup, MAX_HOST_LEN, Policy, Proto, RouteSpec, RouteTable, build,
    normalize_host,
};
use branchgate::upstream::{ClientSettings, Registry};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn registry() -> Registry {
    Registry::new(
        ClientSettings {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
        },
        1,
    )
}

fn spec(i: usize, host: String) -> RouteSpec {
    let port = 10_000 + (i % 50_000) as u16;
    RouteSpec {
        source: format!("bench:{i}"),
        hosts: vec![HostPattern::parse(&host).unwrap()],
        path: "/".into(),
        dest: None,
        proto: Proto::Http,
        upstreams: vec![SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], port))],
        branch: None,
        role: None,
        policy: Policy::default(),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Exact,
    Suffix,
    Prefix,
    Regex,
    Mixed,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Exact => "exact",
            Kind::Suffix => "suffix",
            Kind::Prefix => "prefix",
            Kind::Regex => "regex",
            Kind::Mixed => "mixed",
        }
    }

    fn pattern(self, i: usize) -> String {
        match self {
            Kind::Exact => format!("app{i}.foo.bar"),
            Kind::Suffix => format!("*.svc{i}.foo.bar"),
            Kind::Prefix => format!("www{i}.*"),
            Kind::Regex => format!("~^r{i}\\.foo\\.bar$"),
            Kind::Mixed => match i % 3 {
                0 => Kind::Exact.pattern(i),
                1 => Kind::Suffix.pattern(i),
                _ => Kind::Prefix.pattern(i),
            },
        }
    }

    /// Request hosts to look up, each with a label for the benchmark id.
    fn probes(self, n: usize) -> Vec<(&'static str, String)> {
        let mid = n / 2;
        match self {
            Kind::Exact => vec![("hit", format!("App{mid}.Foo.Bar:8080"))],
            Kind::Suffix => vec![("hit", format!("a.b.svc{mid}.foo.bar"))],
            Kind::Prefix => vec![("hit", format!("www{mid}.example.com"))],
            // The last regex: the worst case of an ordered scan.
            Kind::Regex => vec![("hit-last", format!("r{}.foo.bar", n - 1))],
            Kind::Mixed => vec![
                ("exact-hit", format!("app{}.foo.bar", mid - mid % 3)),
                ("suffix-hit", format!("x.svc{}.foo.bar", mid - mid % 3 + 1)),
                ("miss", "nothing.example.org".to_owned()),
            ],
        }
    }
}

fn table(kind: Kind, n: usize) -> RouteTable {
    let mut specs: Vec<RouteSpec> = (0..n).map(|i| spec(i, kind.pattern(i))).collect();
    if matches!(kind, Kind::Mixed) {
        specs.extend((0..10).map(|i| spec(n + i, Kind::Regex.pattern(i))));
    }
    build(&specs, &BuildOptions::default(), 1).table
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for kind in [
        Kind::Exact,
        Kind::Suffix,
        Kind::Prefix,
        Kind::Regex,
        Kind::Mixed,
    ] {
        for n in [10usize, 1_000, 100_000] {
            let t = table(kind, n);
            // A scan of 100 000 regexes takes milliseconds; fewer samples keep the run short.
            let slow = matches!(kind, Kind::Regex) && n >= 100_000;
            group.sample_size(if slow { 10 } else { 100 });
            for (label, host) in kind.probes(n) {
                let id = BenchmarkId::new(format!("{}/{label}", kind.name()), n);
                group.bench_with_input(id, &host, |b, host| {
                    b.iter(|| {
                        let mut buf = [0u8; MAX_HOST_LEN];
                        let h = normalize_host(black_box(host), &mut buf).unwrap();
                        matches!(t.lookup(h, black_box("/index.html")), Lookup::Found(..))
                    })
                });
            }
        }
    }
    group.finish();
}

/// `<fe>.<be>.foo.bar` lookups with N frontend × N backend branches (and
/// 1 000 ordinary exact routes beside them): must stay flat as N grows.
fn branches(c: &mut Criterion) {
    use branchgate::routes::{BranchSettings, Role};
    let mut group = c.benchmark_group("lookup_branch");
    for n in [10usize, 100] {
        let mut specs: Vec<RouteSpec> = (0..1_000)
            .map(|i| spec(i, Kind::Exact.pattern(i)))
            .collect();
        for i in 0..n {
            for (role, name) in [(Role::Frontend, "feature"), (Role::Backend, "api")] {
                let mut s = spec(specs.len(), "unused.example".into());
                s.hosts.clear();
                s.branch = Some(format!("{name}/Branch_{i}"));
                s.role = Some(role);
                specs.push(s);
            }
        }
        let opts = BuildOptions {
            branches: Some(BranchSettings {
                domain: "foo.bar".into(),
                api_prefixes: vec!["/api".into()],
                default_branch: "api/Branch_0".into(),
            }),
            ..BuildOptions::default()
        };
        let t = build(&specs, &opts, 1).table;
        let mid = n / 2;
        let host = format!("Feature-Branch-{mid}.API-Branch-{mid}.foo.bar");
        for (label, path) in [("frontend", "/index.html"), ("api", "/api/users/7")] {
            let id = BenchmarkId::new(format!("{label}/{n}x{n}"), n * n);
            group.bench_with_input(id, &host, |b, host| {
                b.iter(|| {
                    let mut buf = [0u8; MAX_HOST_LEN];
                    let h = normalize_host(black_box(host), &mut buf).unwrap();
                    matches!(t.lookup(h, black_box(path)), Lookup::Found(..))
                })
            });
        }
    }
    group.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild");
    group.sample_size(20);
    for n in [1_000usize, 10_000] {
        let specs: Vec<RouteSpec> = (0..n).map(|i| spec(i, Kind::Mixed.pattern(i))).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &specs, |b, specs| {
            b.iter(|| build(specs, &BuildOptions::default(), 1).table.host_count())
        });
    }
    group.finish();
}

fn inspect_json(i: usize) -> String {
    format!(
        r#"{{"Id":"{i:064x}","Name":"/web-{i}","State":{{"Status":"running","Running":true,"Paused":false,"Restarting":false,"Pid":{pid}}},
        "Config":{{"Env":["PATH=/usr/bin","VIRTUAL_HOST=web-{i}.foo.bar,*.web-{i}.foo.bar","VIRTUAL_PORT=8080","LETSENCRYPT_HOST=web-{i}.foo.bar"],
        "Labels":{{"com.docker.compose.project":"beta","com.docker.compose.service":"web-{i}"}},"ExposedPorts":{{"8080/tcp":{{}}}}}},
        "HostConfig":{{"NetworkMode":"beta_default"}},
        "NetworkSettings":{{"Networks":{{"beta_default":{{"NetworkID":"{net:064x}","IPAddress":"10.{a}.{b}.{c}","IPPrefixLen":8}}}}}}}}"#,
        pid = 1000 + i,
        net = 7,
        a = (i >> 16) & 255,
        b = (i >> 8) & 255,
        c = i & 255,
    )
}

fn docker_publish(c: &mut Criterion) {
    use branchgate::providers::docker::observe::{Reach, observe};
    use branchgate::providers::docker::route_for;
    use branchgate::routes::{Desired, Provided, ProviderId, Publisher};
    use std::sync::Arc;

    const N: usize = 1_000;
    let bodies: Vec<String> = (0..N).map(inspect_json).collect();
    let reach = Reach::default();
    let read = |body: &str| {
        let mut o = observe(serde_json::from_str(body).unwrap()).expect("running");
        route_for(&reach, &mut o).0.expect("routed")
    };
    let mut publisher = Publisher::new(registry(), BuildOptions::default());
    let table = publisher.reader();
    let publish = |publisher: &mut Publisher, specs: Vec<RouteSpec>| {
        let mut desired = Desired::new();
        desired.insert(ProviderId::Docker, Arc::new(Provided::specs(specs)));
        publisher.publish(&desired);
    };

    let mut group = c.benchmark_group("docker_publish");
    group.sample_size(20);
    group.bench_function("full_sync_1000", |b| {
        b.iter(|| {
            let mut specs: Vec<RouteSpec> = bodies.iter().map(|j| read(j)).collect();
            specs.sort_by(|a, b| a.source.cmp(&b.source));
            publish(&mut publisher, specs);
            table.load().table().host_count()
        })
    });
    let others: Vec<RouteSpec> = bodies[1..].iter().map(|j| read(j)).collect();
    group.bench_function("one_event_at_1000", |b| {
        b.iter(|| {
            let mut specs = others.clone();
            specs.push(read(&bodies[0]));
            specs.sort_by(|a, b| a.source.cmp(&b.source));
            publish(&mut publisher, specs);
            table.load().table().host_count()
        })
    });
    group.finish();
}

criterion_group!(benches, lookup, branches, rebuild, docker_publish);
criterion_main!(benches);
