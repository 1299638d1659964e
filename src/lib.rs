//! branchgate: a Docker-aware reverse proxy for per-branch preview environments.
//!
//! ```text
//! Docker events ─┐                  specs + notes
//! routes file ───┼─▶ providers ──────watch──────▶ routes::publish ──ArcSwap::store──▶ Snapshot
//! --demo ────────┘                                 │ build (pure) → RouteTable         │ load() once per request
//!                                                  │ resolve pools in upstream::Registry│
//!                                                  ▼                                    ▼
//! client ─TCP─▶ proxy::server (listener sets per worker) ─▶ route ─▶ policy ─▶ forward ─▶ upstream (pooled keep-alive)
//!                                                             └──── respond (every synthetic answer) ◀──┘
//!                                     response body end ─▶ request record ─▶ sink (access log)
//! ```
//!
//! Modules, in flow order: [`config`] (flags, validated once), [`providers`]
//! (what should be routed, and notes on what was skipped), [`routes`] (specs
//! → one immutable snapshot, published by one writer), [`upstream`] (live
//! pools, health and connections that outlive snapshots), [`proxy`]
//! (listeners and the request phases), plus [`logging`], [`net`] (socket
//! helpers), [`hash`] (a fast hasher for keys the process chose) and
//! [`demo`]. [`bind`] + [`Bound::run`] are the application: workers with
//! their listener sets, the publisher, and every background task, tracked
//! and stopped on shutdown. The library never exits the process.

// No unsafe code in the library; two binary modules are the exceptions (the
// allocator, src/allocator.rs, and one setsockopt, src/defer_accept.rs), and
// `unsafe_code = "deny"` in Cargo.toml covers the rest.
#![forbid(unsafe_code)]

// In flow order; each group stands alone so rustfmt keeps the order.
pub mod config;

pub mod providers;

pub mod routes;

pub mod upstream;

pub mod tls;

pub mod acme;

pub mod guard;

pub mod proxy;

pub mod admin;

pub mod logging;

pub mod events;

pub mod net;

pub mod hash;

pub mod tokens;

pub mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::Config;
use proxy::listener::{Listener, Scheme};
use proxy::record::{AccessLog, Discard, Sink};
use proxy::server::Server;
use proxy::{ProxySettings, Shared};
use routes::{
    BuildOptions, Desired, HostPattern, Provided, ProviderId, Publisher, Reader, RouteSpec,
};
use upstream::{ClientSettings, Registry, set_worker_id};

/// How long background tasks (watchers, publisher, demo) get to stop once
/// the listeners are done.
const BACKGROUND_STOP: Duration = Duration::from_secs(2);

/// A proxy whose sockets are bound and whose first table is published, ready to serve.
pub struct Bound {
    config: Config,
    /// One set of listeners per worker: each address of `--http`, bound once
    /// per worker with `SO_REUSEPORT`.
    workers: Vec<Vec<Listener>>,
    shared: Arc<Shared>,
    publisher: Publisher,
    tx: Arc<watch::Sender<Desired>>,
    /// What the dashboard's event feed shows.
    events: Arc<events::Events>,
    file: Option<(PathBuf, Vec<u8>)>,
    /// The demo backends: listener, name, what they answer.
    demo: Vec<(std::net::TcpListener, String, demo::Kind)>,
    /// `--certs`, watched once running.
    certs: Option<tls::dir::CertDir>,
    /// ACME's manager, run once running.
    acme: Option<acme::manager::Manager>,
    /// The admin listener, unless `--admin off`.
    admin: Option<admin::Admin>,
    /// The access layer's file watchers.
    access: guard::Watchers,
}

/// ACME: the settings from the flags (files read and checked here, so a
/// bad one stops start-up naming its flag), the state directory, the
/// handle the listeners share and the manager that orders.
fn acme_for(
    config: &Config,
    routes: Reader,
    events: Arc<events::Events>,
) -> anyhow::Result<(Arc<acme::Acme>, acme::manager::Manager)> {
    let ca_root = match &config.acme_ca_root {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("--acme-ca-root {}: cannot read", path.display()))?;
            acme::client::check_roots(&pem)
                .map_err(|e| anyhow::anyhow!("--acme-ca-root {}: {e}", path.display()))?;
            Some(pem)
        }
        None => None,
    };
    let tsig = match &config.acme_dns_tsig {
        Some(spec) => Some(
            acme::dns::TsigKey::parse(spec).map_err(|e| anyhow::anyhow!("--acme-dns-tsig: {e}"))?,
        ),
        None => None,
    };
    let dns = match &config.acme_dns {
        Some(spec) => Some(
            acme::dns::DnsSolver::parse(spec, tsig)
                .map_err(|e| anyhow::anyhow!("--acme-dns {spec}: {e}"))?,
        ),
        None if tsig.is_some() => {
            anyhow::bail!("--acme-dns-tsig: needs --acme-dns rfc2136://SERVER:PORT")
        }
        None => None,
    };
    let challenges = config.acme_challenges();
    if challenges.contains(&acme::Kind::Dns01) && dns.is_none() {
        anyhow::bail!("--acme-challenge dns-01: needs --acme-dns");
    }
    let directory = config.acme_directory_url().to_owned();
    let store = acme::store::Store::open(&config.state, &directory).map_err(|e| {
        anyhow::anyhow!(
            "--state {}: {e} (mount a volume there, pass --state DIR, or --acme off)",
            config.state.display()
        )
    })?;
    let settings = acme::Settings {
        directory,
        email: config.acme_email.clone(),
        ca_root,
        state: config.state.clone(),
        challenges,
        wildcards: config.acme_wildcards(),
        dns,
        all_hosts: config.acme_all_hosts,
        on_demand_timeout: config.acme_on_demand_timeout,
        max_orders_per_hour: config.acme_max_orders_per_hour,
        retry: config.acme_retry,
        branch_domain: config.branch_domain.clone(),
        dashboard_host: config.dashboard_host.clone(),
    };
    info!(
        directory = %settings.directory,
        state = %store.root().display(),
        challenges = ?settings.challenges.iter().map(|k| k.name()).collect::<Vec<_>>(),
        wildcards = settings.wildcards(),
        on_demand = settings.on_demand(),
        "ACME on"
    );
    let (handle, requests) = acme::Acme::new(settings, routes, Some(events));
    let manager = acme::manager::Manager::new(handle.clone(), requests, store, tls::provider());
    Ok((handle, manager))
}

/// The HTTPS side: the certificates of `--certs` (and the demo's
/// self-signed one), and the rustls configuration.
fn tls_for(
    config: &Config,
    routes: Reader,
    port: u16,
    acme: Option<Arc<acme::Acme>>,
) -> anyhow::Result<(Arc<tls::Tls>, Option<tls::dir::CertDir>)> {
    let provider = tls::provider();
    let builtin = if config.demo {
        Some(Arc::new(
            demo::certificate(&provider).context("--demo: cannot make a certificate")?,
        ))
    } else {
        None
    };
    let mut certs = tls::Certs::with_builtin(Default::default(), None, builtin.as_ref());
    let mut dir = None;
    if let Some(path) = &config.certs {
        if !path.is_dir() {
            anyhow::bail!("--certs {}: not a directory", path.display());
        }
        let mut d = tls::dir::CertDir::new(path.clone(), provider, builtin);
        certs = d.load();
        info!(certificates = certs.len(), dir = %path.display(), "certificates in force");
        dir = Some(d);
    }
    let selector = Arc::new(tls::Selector::new(
        Arc::new(tls::CertStore::new(certs)),
        routes,
        acme,
    ));
    let tls =
        tls::Tls::new(selector, config.client_header_timeout, port).context("cannot set up TLS")?;
    Ok((Arc::new(tls), dir))
}

/// Binds the listeners and publishes the first table. A routes file that does
/// not load is an error here (at start-up) rather than a warning.
pub async fn bind(mut config: Config) -> anyhow::Result<Bound> {
    if config.demo && config.branch_domain.is_none() {
        // The demo's branch environments live under `localhost`, which
        // browsers resolve to loopback with no DNS setup.
        config.branch_domain = Some("localhost".into());
    }
    let addrs: Vec<(Scheme, SocketAddr)> = (config.http_addrs().into_iter())
        .map(|a| (Scheme::Http, a))
        .chain(config.https_addrs().into_iter().map(|a| (Scheme::Https, a)))
        .collect();
    let workers = bind_workers(&addrs, config.worker_count(), config.smart_accept)?;
    let https_port = workers[0]
        .iter()
        .find(|l| l.scheme == Scheme::Https)
        .map(|l| l.socket.local_addr().map(|a| a.port()))
        .transpose()?;

    if let Some(url) = config.docker_url() {
        // --docker is checked by the flag parser; DOCKER_HOST only here.
        config::parse_docker_url(&url).map_err(|e| anyhow::anyhow!("DOCKER_HOST={url:?}: {e}"))?;
    }
    let mut desired = Desired::new();
    let mut file = None;
    if let Some(path) = &config.routes {
        let text = std::fs::read(path)
            .with_context(|| format!("--routes {}: cannot read", path.display()))?;
        let specs = providers::file::parse(path, &String::from_utf8_lossy(&text))
            .map_err(|e| anyhow::anyhow!("--routes: {}", logging::chain(&e)))?;
        desired.insert(ProviderId::File, Arc::new(Provided::specs(specs)));
        file = Some((path.clone(), text));
    }
    let mut demo = Vec::new();
    if config.demo {
        let branch_domain = config.branch_domain.as_deref();
        let mut specs = Vec::new();
        let members = demo::BRANCHES
            .iter()
            .map(|(kind, branch)| (*kind, Some(*branch)));
        for (kind, branch) in [(demo::Kind::Echo, None)].into_iter().chain(members) {
            let l = std::net::TcpListener::bind("127.0.0.1:0").context("--demo: cannot bind")?;
            l.set_nonblocking(true)?;
            let spec = demo_spec(l.local_addr()?, kind, branch, branch_domain);
            demo.push((l, spec.source.clone(), kind));
            specs.push(spec);
        }
        desired.insert(ProviderId::Demo, Arc::new(Provided::specs(specs)));
    }

    let registry = Registry::new(
        ClientSettings {
            connect_timeout: config.connect_timeout,
            idle_timeout: config.upstream_idle_timeout,
        },
        workers.len(),
    );
    let opts = BuildOptions {
        default_host: config.default_host.clone(),
        branches: config
            .branch_domain
            .as_ref()
            .map(|domain| routes::BranchSettings {
                domain: domain.clone(),
                api_prefixes: config.api_prefixes.clone(),
                default_branch: config.default_branch.clone(),
            }),
    };
    let events = Arc::new(events::Events::default());
    let mut publisher = Publisher::new(registry, opts).with_events(events.clone());
    publisher.publish(&desired);
    let manager = match config.acme_enabled() {
        true => Some(acme_for(&config, publisher.reader(), events.clone())?),
        false => None,
    };
    let acme = manager.as_ref().map(|(a, _)| a.clone());
    let (tls, certs) = match https_port {
        None => (None, None),
        Some(port) => {
            let (tls, dir) = tls_for(&config, publisher.reader(), port, acme.clone())?;
            (Some(tls), dir)
        }
    };
    let conns = proxy::conns::Conns::new(
        connection_cap(&config),
        proxy::conns::Timeouts {
            idle: config.client_header_timeout,
            send: config.client_send_timeout,
        },
    );
    let metrics = config
        .metrics
        .then(|| Arc::new(admin::metrics::Metrics::default()));
    if config.metrics_auth && config.admin_token.is_none() {
        anyhow::bail!("--metrics-auth: needs --admin-token");
    }
    let mut sink: Box<dyn Sink> = match config.access_log {
        config::AccessLogFormat::Off => Box::new(Discard),
        _ => Box::new(AccessLog),
    };
    if let Some(metrics) = &metrics {
        sink = Box::new(admin::metrics::Tee {
            metrics: metrics.clone(),
            next: sink,
        });
    }
    // The live feed goes with the metrics: `--metrics off` is the
    // configuration without any per-request work beyond the access log.
    let (sink, feed): (Box<dyn Sink>, _) = match metrics.is_some() {
        true => {
            let feed = Arc::new(admin::feed::Feed::new(sink));
            (Box::new(feed.clone()), Some(feed))
        }
        false => (sink, None),
    };
    let tx = Arc::new(watch::channel(desired).0);
    let links = public_links(&workers);
    let core = Arc::new(admin::Core::new(
        config.admin_token.clone(),
        admin::Sources {
            routes: publisher.reader(),
            certs: tls.as_ref().map(|t| t.selector.certs.clone()),
            acme: acme.clone(),
            conns: Some(conns.clone()),
            metrics: metrics.clone(),
            metrics_auth: config.metrics_auth,
            events: events.clone(),
            feed,
            docker: config.docker_url(),
            desired: tx.subscribe(),
            links,
        },
    )?);
    let admin = match config.admin {
        config::Listen::Off => None,
        config::Listen::Addr(addr) => Some(admin::Admin::bind(addr, core.clone())?),
    };
    let dashboard = match &config.dashboard_host {
        Some(_) if !core.auth_enabled() => {
            anyhow::bail!(
                "--dashboard-host: the main listeners are public, so it needs --admin-token"
            )
        }
        Some(host) => Some(proxy::dashboard::Dashboard {
            host: host.as_str().into(),
            core,
        }),
        None => None,
    };
    let (access, access_watchers) = guard::Access::from_config(&config)?;
    let shared = Arc::new(Shared {
        access,
        routes: publisher.reader(),
        settings: ProxySettings {
            trust_downstream_proxy: config.trust_downstream_proxy,
            response_timeout: config.response_timeout,
            client_header_timeout: config.client_header_timeout,
            client_body_timeout: config.client_body_timeout,
            client_send_timeout: config.client_send_timeout,
            upstream_read_timeout: config.upstream_read_timeout,
            allow_underscore_headers: config.allow_underscore_headers,
            non_get_redirect: http::StatusCode::from_u16(config.non_get_redirect)
                .expect("checked by the flag parser"),
            cors: proxy::cors::CorsPolicy {
                domain: config.branch_domain.clone(),
                origins: config.cors_origins.clone(),
            },
        },
        conns,
        sink,
        tls,
        acme,
        dashboard,
    });
    Ok(Bound {
        certs,
        acme: manager.map(|(_, m)| m),
        admin,
        access: access_watchers,
        config,
        workers,
        shared,
        publisher,
        tx,
        events,
        file,
        demo,
    })
}

/// How the branch environments' links are written: the scheme of the
/// first HTTPS listener, else HTTP's, and its port unless the default.
fn public_links(workers: &[Vec<Listener>]) -> (&'static str, Option<u16>) {
    let first = |scheme| {
        workers
            .first()?
            .iter()
            .find(|l| l.scheme == scheme)?
            .socket
            .local_addr()
            .ok()
    };
    match (first(Scheme::Https), first(Scheme::Http)) {
        (Some(a), _) => ("https", (a.port() != 443).then_some(a.port())),
        (None, Some(a)) => ("http", (a.port() != 80).then_some(a.port())),
        (None, None) => ("http", None),
    }
}

/// `--max-connections`, or the default derived from the descriptor limit
/// (raised to its hard limit first).
fn connection_cap(config: &Config) -> usize {
    let nofile = proxy::conns::raise_nofile_limit();
    let fits = proxy::conns::default_cap(nofile);
    let cap = match config.max_connections {
        Some(n) => {
            let n = n as usize;
            if n > fits {
                tracing::warn!(
                    max_connections = n,
                    nofile,
                    "--max-connections leaves fewer than one descriptor per client for its upstream under RLIMIT_NOFILE"
                );
            }
            n
        }
        None => fits,
    };
    info!(max_connections = cap, nofile, "client connection cap");
    cap
}

fn demo_spec(
    addr: SocketAddr,
    kind: demo::Kind,
    branch: Option<&str>,
    branch_domain: Option<&str>,
) -> RouteSpec {
    let (source, hosts, role) = match (kind, branch) {
        (demo::Kind::Frontend, Some(b)) => (
            format!("demo frontend {b}"),
            vec![],
            Some(routes::Role::Frontend),
        ),
        (demo::Kind::Backend, Some(b)) => (
            format!("demo backend {b}"),
            vec![],
            Some(routes::Role::Backend),
        ),
        _ => {
            // `localhost` is the environment matrix when it is the branch domain.
            let named = ["localhost", "*.localhost"];
            let hosts = ["127.0.0.1", "[::1]"]
                .into_iter()
                .chain(
                    named
                        .into_iter()
                        .filter(|_| branch_domain != Some("localhost")),
                )
                .map(|h| HostPattern::parse(h).expect("demo hosts are valid"))
                .collect();
            ("the branchgate demo backend".to_owned(), hosts, None)
        }
    };
    RouteSpec {
        source,
        hosts,
        path: "/".into(),
        dest: None,
        proto: routes::Proto::Http,
        upstreams: vec![addr],
        branch: branch.map(str::to_owned),
        role,
        // Plain HTTP keeps working in a browser: the demo's certificate is
        // self-signed, so a redirect would end at a warning.
        policy: routes::Policy {
            https_method: Some(routes::HttpsMethod::NoRedirect),
            ..Default::default()
        },
    }
}

/// Binds every address `workers` times: worker `i` gets the `i`-th socket of
/// each address. With several workers the sockets share the port with
/// `SO_REUSEPORT` and the kernel spreads connections, as nginx's workers do.
fn bind_workers(
    addrs: &[(Scheme, SocketAddr)],
    workers: usize,
    smart_accept: bool,
) -> anyhow::Result<Vec<Vec<Listener>>> {
    let mut sets: Vec<Vec<Listener>> = (0..workers).map(|_| Vec::new()).collect();
    for &(scheme, addr) in addrs {
        let sockets = bind_reuseport(addr, workers, smart_accept)
            .with_context(|| format!("--{scheme} {addr}: cannot listen"))?;
        for (set, socket) in sets.iter_mut().zip(sockets) {
            set.push(Listener { socket, scheme });
        }
    }
    Ok(sets)
}

fn bind_reuseport(
    addr: SocketAddr,
    n: usize,
    smart_accept: bool,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if n > 1 {
            socket.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.set_nonblocking(true)?;
        // Linux hands TCP_NODELAY on to every accepted socket: one
        // setsockopt per listener instead of one per connection.
        socket.set_tcp_nodelay(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        // `--smart-accept`: accepted sockets start with delayed ACKs (Linux
        // hands the listener's setting on), so the request is acknowledged
        // by the answer instead of by an ACK of its own, as HAProxy's
        // `tcp-smart-accept` does in HTTP mode. One packet less per new
        // connection (for TLS, the ClientHello's).
        #[cfg(target_os = "linux")]
        if smart_accept {
            socket.set_tcp_quickack(false)?;
        }
        #[cfg(not(target_os = "linux"))]
        let _ = smart_accept;
        let listener: std::net::TcpListener = socket.into();
        // With port 0 the first bind picks the port; the others share it.
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

impl Bound {
    /// The admin listener's address, unless `--admin off`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// Every HTTPS listener's address, in `--https` order.
    pub fn https_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(Scheme::Https)
    }

    fn addrs(&self, scheme: Scheme) -> Vec<SocketAddr> {
        self.workers[0]
            .iter()
            .filter(|l| l.scheme == scheme)
            .map(|l| {
                l.socket
                    .local_addr()
                    .expect("a bound listener has an address")
            })
            .collect()
    }

    /// Every proxy listener (each address, once per worker), for socket
    /// options set from outside the library (the binary's `--defer-accept`).
    pub fn listeners(&self) -> impl Iterator<Item = &std::net::TcpListener> {
        self.workers.iter().flatten().map(|l| &l.socket)
    }

    /// The address of the first HTTP listener.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addrs()[0]
    }

    /// Every HTTP listener's address, in `--http` order.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(Scheme::Http)
    }

    /// A read-only handle on the published snapshot.
    pub fn routes(&self) -> Reader {
        self.publisher.reader()
    }

    /// Serves until `shutdown` fires, then drains within the grace period
    /// and stops every background task.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let grace = self.config.grace_period;
        // Workers stop on `shutdown`, or when `run` returns early on an error.
        let stop = shutdown.child_token();
        let _stop_workers = stop.clone().drop_guard();
        // Background tasks stop after the workers (the sweep keeps timing
        // connections out while they drain), or when `run` returns early.
        let background = CancellationToken::new();
        let _stop_background = background.clone().drop_guard();
        let mut tasks = JoinSet::new();
        tasks.spawn(self.publisher.run(self.tx.subscribe(), background.clone()));
        if let Some((path, text)) = self.file {
            let watch = providers::file::watch(path, text, self.tx.clone(), background.clone());
            tasks.spawn(watch);
        }
        if let Some(url) = self.config.docker_url() {
            let settings = providers::docker::Settings {
                url,
                network: self.config.network.clone(),
            };
            let watcher = providers::docker::Watcher::new(settings, self.tx.clone())
                .with_events(self.events.clone());
            tasks.spawn(watcher.run(background.clone()));
        }
        for (l, name, kind) in self.demo {
            let l = tokio::net::TcpListener::from_std(l)?;
            tasks.spawn(demo::serve(l, name, kind, background.clone()));
        }
        tasks.spawn(self.shared.conns.clone().sweep(background.clone()));
        self.access
            .spawn(&self.shared.access, &mut tasks, &background);
        if let Some(admin) = self.admin {
            tasks.spawn(admin.run(background.clone()));
        }
        if let Some(manager) = self.acme {
            tasks.spawn(manager.run(background.clone()));
        }
        if let (Some(dir), Some(tls)) = (self.certs, &self.shared.tls) {
            let store = tls.selector.certs.clone();
            tasks.spawn(dir.watch(store, background.clone()));
        }

        let mut sets = self.workers.into_iter();
        let first = sets.next().expect("at least one worker");
        for l in &first {
            let what = match l.scheme {
                Scheme::Http => "HTTP/1.1, h2c",
                Scheme::Https => "TLS 1.2/1.3: HTTP/1.1, h2",
            };
            info!(addr = %l.socket.local_addr()?, scheme = %l.scheme, workers = sets.len() + 1, "listening ({what})");
        }
        let mut done = Vec::new();
        for (i, set) in sets.enumerate() {
            let (tx, rx) = oneshot::channel::<()>();
            let server = Arc::new(Server::new(self.shared.clone()));
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("branchgate-worker-{}", i + 1))
                .spawn(move || {
                    set_worker_id(i + 1);
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a worker runtime starts");
                    rt.block_on(server.serve(set, stop, grace));
                    let _ = tx.send(());
                })
                .context("cannot start a worker thread")?;
            done.push(rx);
        }
        Arc::new(Server::new(self.shared.clone()))
            .serve(first, stop.clone(), grace)
            .await;
        for rx in done {
            let _ = rx.await;
        }
        background.cancel();
        let stopped = tokio::time::timeout(BACKGROUND_STOP, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if stopped.is_err() {
            // A task that ignores its token is a bug: stop it anyway, and say so.
            let left = tasks.len();
            tasks.shutdown().await;
            anyhow::bail!(
                "{left} background task(s) did not stop within {BACKGROUND_STOP:?}; aborted"
            );
        }
        info!("stopped");
        Ok(())
    }
}

/// Binds and serves until `shutdown` (without `--defer-accept`, a socket
/// option the binary sets on [`Bound::listeners`] between the two).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    bind(config).await?.run(shutdown).await
}

#[cfg(test)]
mod tests {
    /// A connection accepted on a listener bound as the proxy binds them
    /// (`--smart-accept` as given), with its client kept open.
    #[cfg(target_os = "linux")]
    fn accept_one(smart_accept: bool) -> (std::net::TcpStream, std::net::TcpStream) {
        let addr = "127.0.0.1:0".parse().unwrap();
        let listener = super::bind_reuseport(addr, 1, smart_accept)
            .unwrap()
            .pop()
            .unwrap();
        listener.set_nonblocking(false).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (accepted, client)
    }

    /// Connections accepted on a listener inherit its TCP_NODELAY, so the
    /// accept loop sets nothing per connection (on Linux; elsewhere it does).
    #[cfg(target_os = "linux")]
    #[test]
    fn accepted_connections_have_nodelay_from_their_listener() {
        let (accepted, _client) = accept_one(true);
        assert!(accepted.nodelay().unwrap());
    }

    /// Accepted connections start out of quick-ACK mode (the listener's
    /// setting): their first request is acknowledged by the answer.
    #[cfg(target_os = "linux")]
    #[test]
    fn accepted_connections_start_with_delayed_acks_unless_told_not_to() {
        let quickack = |smart| {
            let (accepted, _client) = accept_one(smart);
            socket2::SockRef::from(&accepted).tcp_quickack().unwrap()
        };
        assert!(
            !quickack(true),
            "--smart-accept: the first request's ACK waits for the answer"
        );
        assert!(
            quickack(false),
            "--smart-accept false: the kernel's default"
        );
    }
}
