//! The proxy under test: in-process (fast, inspectable) or the real binary
//! (signals, RSS, logs, exit codes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use branchgate::routes::Reader;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

/// An in-process proxy; stops when dropped.
pub struct Proxy {
    /// The HTTP listener.
    pub addr: SocketAddr,
    /// The first HTTPS listener, when `--https` was given.
    pub https: Option<SocketAddr>,
    /// The admin listener, when `--admin` was given.
    pub admin: Option<SocketAddr>,
    /// The published snapshot (read-only).
    pub table: Reader,
    /// The routes file.
    pub routes: PathBuf,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Builds a [`Proxy`].
#[derive(Default)]
pub struct ProxyBuilder {
    routes: String,
    args: Vec<String>,
}

impl Proxy {
    /// A builder with no routes and default flags.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

    /// Replaces the routes file content.
    pub fn write_routes(&self, toml: &str) {
        write_atomically(&self.routes, toml);
    }

    /// Current table generation.
    pub fn generation(&self) -> u64 {
        self.table.load().generation()
    }

    /// Asks the proxy to stop and waits for it.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ProxyBuilder {
    /// Adds one `[[route]]` with these hosts and upstreams, plus extra TOML lines.
    pub fn route(mut self, host: &str, upstreams: &[SocketAddr], extra: &str) -> Self {
        self.routes.push_str(&route_toml(host, upstreams, extra));
        self
    }

    /// Appends raw TOML to the routes file.
    pub fn toml(mut self, toml: &str) -> Self {
        self.routes.push_str(toml);
        self
    }

    /// Adds a command-line flag.
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_owned());
        self
    }

    /// Binds on 127.0.0.1:0 and starts serving.
    pub async fn spawn(self) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let routes = dir.path().join("routes.toml");
        std::fs::write(&routes, &self.routes).unwrap();
        let mut argv: Vec<String> = [
            "branchgate",
            "--http",
            "127.0.0.1:0",
            "--access-log",
            "off",
            "--routes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.push(routes.display().to_string());
        if !self.args.iter().any(|a| a.starts_with("--docker")) {
            argv.push("--no-docker".into());
        }
        if !self.args.iter().any(|a| a.starts_with("--https")) {
            argv.extend(["--https".into(), "off".into()]);
        }
        if !self.args.iter().any(|a| a.starts_with("--workers")) {
            argv.extend(["--workers".into(), "1".into()]);
        }
        // ACME only where a test asks for it (it would use /data and Let's Encrypt).
        if !self.args.iter().any(|a| a.starts_with("--acme")) {
            argv.extend(["--acme".into(), "off".into()]);
        }
        // State (the branch gate's key) in the test's own directory, not /data.
        if !self.args.iter().any(|a| a.starts_with("--state")) {
            argv.extend([
                "--state".into(),
                dir.path().join("state").display().to_string(),
            ]);
        }
        // The admin listener only where a test asks for it (its default port is fixed).
        if !self.args.iter().any(|a| a.starts_with("--admin")) {
            argv.extend(["--admin".into(), "off".into()]);
        }
        argv.extend(self.args);
        let config = <branchgate::Config as clap::Parser>::try_parse_from(argv).unwrap();
        let bound = branchgate::bind(config).await.unwrap();
        let stop = CancellationToken::new();
        let addr = bound.http_addr();
        let https = bound.https_addrs().first().copied();
        let admin = bound.admin_addr();
        let table = bound.routes();
        let task = tokio::spawn(bound.run(stop.clone()));
        Proxy {
            addr,
            https,
            admin,
            table,
            routes,
            stop,
            task: Some(task),
            _dir: dir,
        }
    }
}

/// One `[[route]]` entry.
pub fn route_toml(host: &str, upstreams: &[SocketAddr], extra: &str) -> String {
    let ups: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[[route]]\nhost = \"{host}\"\nupstreams = [{}]\n{extra}\n\n",
        ups.join(", ")
    )
}

/// Replaces a file by rename, as editors and config tools do.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Whether `flag` is among `args` with a value other than `off`.
fn flag_on(args: &[&str], flag: &str) -> bool {
    args.iter()
        .position(|a| *a == flag)
        .is_some_and(|i| args.get(i + 1) != Some(&"off"))
}

/// The `addr` field of the first JSON log line whose `field` is `value`,
/// waited for up to 10 s; the timeout names what the proxy logged (why it
/// did not start).
async fn logged_addr(
    lines: &Arc<Mutex<Vec<String>>>,
    what: &str,
    field: &str,
    value: &str,
) -> SocketAddr {
    let found = || {
        lines.lock().unwrap().iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["fields"][field].as_str()? == value)
                .then(|| v["fields"]["addr"].as_str()?.parse().ok())?
        })
    };
    let log = || format!("; the proxy logged:\n{}", lines.lock().unwrap().join("\n"));
    super::eventually_or(
        Duration::from_secs(10),
        what,
        || std::future::ready(found()),
        log,
    )
    .await
}

/// The real `branchgate` binary, run as a child process with JSON logs.
pub struct ProxyProcess {
    /// The HTTP listener.
    pub addr: SocketAddr,
    /// The first HTTPS listener, when `--https` was given.
    pub https: Option<SocketAddr>,
    /// The admin listener, when `--admin` was given (and not `off`).
    pub admin: Option<SocketAddr>,
    /// Child process id.
    pub pid: u32,
    /// The routes file.
    pub routes: PathBuf,
    child: tokio::process::Child,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Starts the binary with `routes` as its routes file and extra flags.
    pub async fn spawn(routes_toml: &str, args: &[&str]) -> Self {
        let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_branchgate"));
        Self::spawn_command(cmd, routes_toml, args).await
    }

    /// Like [`ProxyProcess::spawn`], under `ulimit -n NOFILE` with `hard`
    /// (soft and hard limit) or `-S` (soft only, so the proxy may raise it).
    pub async fn spawn_with_nofile(
        routes_toml: &str,
        args: &[&str],
        nofile: u64,
        hard: bool,
    ) -> Self {
        let mut cmd = tokio::process::Command::new("sh");
        let flag = if hard { "-n" } else { "-Sn" };
        cmd.arg("-c")
            .arg(format!("ulimit {flag} {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_branchgate"));
        Self::spawn_command(cmd, routes_toml, args).await
    }

    async fn spawn_command(
        mut cmd: tokio::process::Command,
        routes_toml: &str,
        args: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let routes = dir.path().join("routes.toml");
        std::fs::write(&routes, routes_toml).unwrap();
        let mut child = cmd
            .args(["--http", "127.0.0.1:0", "--log-format", "json"])
            .args(if args.contains(&"--workers") {
                &[][..]
            } else {
                &["--workers", "1"][..]
            })
            .args(if args.iter().any(|a| a.starts_with("--acme")) {
                &[][..]
            } else {
                &["--acme", "off"][..]
            })
            .args(if args.iter().any(|a| a.starts_with("--admin")) {
                &[][..]
            } else {
                &["--admin", "off"][..]
            })
            .arg("--routes")
            .arg(&routes)
            .args(if args.iter().any(|a| a.starts_with("--docker")) {
                &[][..]
            } else {
                &["--no-docker"][..]
            })
            .args(if args.iter().any(|a| a.starts_with("--https")) {
                &[][..]
            } else {
                &["--https", "off"][..]
            })
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        for (pipe, sink) in [
            (
                Box::new(child.stderr.take().unwrap())
                    as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                stderr.clone(),
            ),
            (Box::new(child.stdout.take().unwrap()), stdout.clone()),
        ] {
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let pid = child.id().unwrap();
        let lines = stderr.clone();
        let addr = logged_addr(
            &lines,
            "the proxy to listen",
            "message",
            "listening (HTTP/1.1, h2c)",
        )
        .await;
        let https = match flag_on(args, "--https") {
            false => None,
            true => Some(logged_addr(&lines, "the HTTPS listener", "scheme", "https").await),
        };
        let admin = match flag_on(args, "--admin") {
            false => None,
            true => Some(
                logged_addr(
                    &lines,
                    "the admin listener",
                    "message",
                    "admin API listening",
                )
                .await,
            ),
        };
        Self {
            addr,
            https,
            admin,
            pid,
            routes,
            child,
            stderr,
            stdout,
            _dir: dir,
        }
    }

    /// Lines the process wrote to stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Lines the process wrote to stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Sends a signal by PID (only to this child).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {} failed", self.pid);
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("the proxy exits in time")
            .unwrap()
    }

    /// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
    pub fn mem_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }
}
