//! branchgate: a Docker-aware reverse proxy for per-branch preview environments.
//!
//! ```text
//! Docker events ─┐
//! routes file ──▶ providers ──watch──▶ publisher ──ArcSwap::store──▶ RouteTable snapshot
//!                                                                     │ load() once per request
//!                                                                     ▼
//! client ─TCP─▶ proxy::server (HTTP/1.1 + h2c) ─▶ proxy::handler (host → path → pool)
//!                                                   ─▶ proxy::upstream (pooled keep-alive) ─▶ upstream
//! ```
//!
//! [`providers`] describe what should be routed, [`routes`] builds and
//! publishes one immutable table, [`proxy`] serves requests from it.
//! [`run`] wires them together; [`bind`] + [`Bound::run`] split that in two so
//! tests can learn the bound address first.

pub mod config;
pub mod demo;
pub mod logging;
pub mod net;
pub mod providers;
pub mod proxy;
pub mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::Config;
use proxy::upstream::{ClientSettings, UpstreamRegistry, set_worker_id};
use proxy::{ProxySettings, Shared};
use routes::{BuildOptions, Desired, HostPattern, ProviderId, Publisher, RouteSpec, RouteTable};

/// A proxy whose sockets are bound and whose first table is published, ready to serve.
pub struct Bound {
    config: Config,
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    publisher: Publisher,
    tx: Arc<watch::Sender<Desired>>,
    file: Option<(PathBuf, Vec<u8>)>,
    demo: Option<std::net::TcpListener>,
}

/// Binds the listeners and publishes the first table. A routes file that does
/// not load is an error here (at start-up) rather than a warning.
pub async fn bind(config: Config) -> anyhow::Result<Bound> {
    let workers = config.worker_count();
    let listeners = bind_listeners(config.http, workers)
        .with_context(|| format!("--http {}: cannot listen", config.http))?;

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
        desired.insert(ProviderId::File, Arc::new(specs));
        file = Some((path.clone(), text));
    }
    let mut demo = None;
    if config.demo {
        let l = std::net::TcpListener::bind("127.0.0.1:0").context("--demo: cannot bind")?;
        l.set_nonblocking(true)?;
        desired.insert(ProviderId::Demo, Arc::new(vec![demo_spec(l.local_addr()?)]));
        demo = Some(l);
    }

    let table = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
    let registry = Arc::new(UpstreamRegistry::new(
        ClientSettings {
            connect_timeout: config.connect_timeout,
            idle_timeout: config.upstream_idle_timeout,
        },
        workers,
    ));
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
    let mut publisher = Publisher::new(table.clone(), registry, opts);
    publisher.publish(&desired);
    let shared = Arc::new(Shared {
        table,
        settings: ProxySettings {
            trust_downstream_proxy: config.trust_downstream_proxy,
            access_log: config.access_log != config::AccessLogFormat::Off,
            response_timeout: config.response_timeout,
            client_header_timeout: config.client_header_timeout,
            client_body_timeout: config.client_body_timeout,
            client_send_timeout: config.client_send_timeout,
            upstream_read_timeout: config.upstream_read_timeout,
            allow_underscore_headers: config.allow_underscore_headers,
            cors: proxy::cors::CorsPolicy {
                domain: config.branch_domain.clone(),
                origins: config.cors_origins.clone(),
            },
        },
        conns: proxy::conns::Conns::new(
            connection_cap(&config),
            proxy::conns::Timeouts {
                idle: config.client_header_timeout,
                send: config.client_send_timeout,
            },
        ),
    });
    Ok(Bound {
        config,
        listeners,
        shared,
        publisher,
        tx: Arc::new(watch::channel(desired).0),
        file,
        demo,
    })
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

fn demo_spec(addr: SocketAddr) -> RouteSpec {
    RouteSpec {
        source: "--demo".into(),
        hosts: ["localhost", "*.localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|h| HostPattern::parse(h).expect("demo hosts are valid"))
            .collect(),
        path: "/".into(),
        dest: None,
        proto: routes::Proto::Http,
        upstreams: vec![addr],
        branch: None,
        role: None,
        cors: false,
    }
}

fn bind_listeners(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut out = Vec::with_capacity(workers);
    let mut addr = addr;
    for _ in 0..workers {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if workers > 1 {
            // One listener per worker, as nginx does: the kernel spreads connections.
            socket.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        // With port 0 the first bind picks the port; the others share it.
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

impl Bound {
    /// The address the HTTP listener is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.listeners[0]
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The live route table.
    pub fn table(&self) -> Arc<ArcSwap<RouteTable>> {
        self.shared.table.clone()
    }

    /// Serves until `shutdown` fires, then drains within the grace period.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let background = shutdown.child_token();
        let grace = self.config.grace_period;
        let publisher = tokio::spawn(self.publisher.run(self.tx.subscribe(), background.clone()));
        // Not a child of `shutdown`: the sweep keeps timing connections out
        // while they drain, and stops only after every listener is done.
        let sweeping = CancellationToken::new();
        let sweeper = tokio::spawn(self.shared.conns.clone().sweep(sweeping.clone()));
        if let Some((path, text)) = self.file {
            tokio::spawn(providers::file::watch(
                path,
                text,
                self.tx.clone(),
                background.clone(),
            ));
        }
        if let Some(url) = self.config.docker_url() {
            let settings = providers::docker::Settings {
                url,
                network: self.config.network.clone(),
            };
            let watcher = providers::docker::Watcher::new(settings, self.tx.clone());
            tokio::spawn(watcher.run(background.clone()));
        }
        if let Some(l) = self.demo {
            let l = tokio::net::TcpListener::from_std(l)?;
            tokio::spawn(demo::serve(
                l,
                "the branchgate demo backend".into(),
                background.clone(),
            ));
        }

        let mut done = Vec::new();
        let mut listeners = self.listeners.into_iter();
        let first =
            tokio::net::TcpListener::from_std(listeners.next().expect("at least one worker"))?;
        info!(addr = %first.local_addr()?, workers = listeners.len() + 1, "listening (HTTP/1.1, h2c)");
        let main = tokio::spawn(proxy::server::serve(
            first,
            self.shared.clone(),
            shutdown.clone(),
            grace,
        ));
        for (i, listener) in listeners.enumerate() {
            let (tx, rx) = oneshot::channel::<()>();
            let shared = self.shared.clone();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("branchgate-worker-{}", i + 1))
                .spawn(move || {
                    set_worker_id(i + 1);
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a worker runtime starts");
                    rt.block_on(async move {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => proxy::server::serve(l, shared, shutdown, grace).await,
                            Err(error) => tracing::error!(%error, "worker listener failed"),
                        }
                    });
                    let _ = tx.send(());
                })
                .context("cannot start a worker thread")?;
            done.push(rx);
        }
        let _ = main.await;
        for rx in done {
            let _ = rx.await;
        }
        background.cancel();
        sweeping.cancel();
        let _ = publisher.await;
        let _ = sweeper.await;
        info!("stopped");
        Ok(())
    }
}

/// Binds and serves until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    bind(config).await?.run(shutdown).await
}
