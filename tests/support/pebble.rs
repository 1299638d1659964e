//! Debian's Pebble (2.4.0), the ACME test CA, run as a child process for
//! tests of branchgate's ACME client: [`Pebble::start`] writes a config into a
//! tempdir, listens on free loopback ports, waits until the directory answers,
//! and keeps every line Pebble prints so tests can count orders and issuances
//! on the CA side.
//!
//! What Pebble 2.4.0 does, read from its source and checked by
//! `tests/pebble_smoke.rs`:
//!
//! - **Name resolution.** Without `-dnsserver`, Pebble's validator asks Go's
//!   system resolver (`/etc/hosts`, then the nameserver in `/etc/resolv.conf`,
//!   which is not on loopback here), so `*.foo.bar` does not resolve and the
//!   lookup would leave the machine. This module therefore always passes
//!   `-dnsserver`: the caller's server ([`PebbleOptions::dns`], e.g. a knotd),
//!   or else a `pebble-challtestsrv` it starts, which answers every `A` query
//!   with 127.0.0.1, no `AAAA` at all, and `TXT` records set with
//!   [`Pebble::add_txt`]. With a custom server Pebble sends its own UDP
//!   queries, asks `AAAA` before `A` and dials the *first* address, so a zone
//!   that also has `AAAA ::1` sends HTTP-01/TLS-ALPN-01 validation to `[::1]`.
//! - **Three validations per challenge.** Pebble checks every challenge
//!   three times at once (`Starting 3 validations.`): an HTTP-01 responder
//!   sees three GETs from 127.0.0.1, each on a fresh connection.
//! - **Validity.** Leaf certificates are valid for 157766400 s (5 years) by
//!   default. `notBefore` is the moment of issuance (finalize), not backdated;
//!   `notAfter` is `notBefore + validity - 1 s`. A period of 0 means the
//!   default, so [`PebbleOptions::validity`] must be at least one second.
//! - **Chains.** Pebble makes a new root and intermediate on every start
//!   (including [`Pebble::restart`]). Issued chains are leaf + intermediate;
//!   the root is only at the management interface ([`Pebble::issuer_roots`]).
//!   `PEBBLE_CHAIN_LENGTH=n` would put n-1 extra intermediates in the chain
//!   (not exposed by the management interface); `PEBBLE_ALTERNATE_ROOTS=n`
//!   would add n alternate chains (`/roots/1`..). Both are cleared here, as is
//!   every other inherited `PEBBLE_*` variable.
//! - **Authorization reuse** stays at Pebble's default: a new order reuses a
//!   valid authorization for the same name 50% of the time, so a renewal may
//!   or may not see a challenge. Every new order is logged either way.
//! - **No ARI**: the 2.4.0 directory has no `renewalInfo` (added in 2.6.0).
//! - **State is in memory.** After [`Pebble::restart`] the directory URLs are
//!   the same, but accounts, orders and certificates are gone: a client that
//!   kept its account gets `urn:ietf:params:acme:error:accountDoesNotExist`
//!   and must register again.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tempfile::TempDir;

use super::client::Conn;
use super::free_addr;
use super::tls::{Ca, Client, Key};

/// How long Pebble (or pebble-challtestsrv) may take to answer after starting.
const STARTUP: Duration = Duration::from_secs(20);

/// Pebble's log line per accepted new order: `Added order "<id>" to the db`.
const NEW_ORDER: &str = "Added order \"";
/// Pebble's log line per issued certificate: `Issued certificate serial <hex> for order <id>`.
const ISSUED: &str = "Issued certificate serial ";

/// How Pebble validates and issues.
#[derive(Clone, Debug)]
pub struct PebbleOptions {
    /// Pebble's `httpPort`: where it fetches HTTP-01 responses (branchgate's HTTP listener).
    pub http_port: u16,
    /// Pebble's `tlsPort`: where it does TLS-ALPN-01 (branchgate's HTTPS listener).
    pub tls_port: u16,
    /// The DNS server Pebble resolves names with and reads DNS-01 `TXT`
    /// records from. `None` starts a pebble-challtestsrv that answers every
    /// `A` query with 127.0.0.1 (see [`Pebble::add_txt`]).
    pub dns: Option<SocketAddr>,
    /// Leaf certificate lifetime (whole seconds, at least one); `None`: 5 years.
    pub validity: Option<Duration>,
}

impl PebbleOptions {
    /// Validation on these ports, names resolved by pebble-challtestsrv, default validity.
    pub fn new(http_port: u16, tls_port: u16) -> Self {
        Self {
            http_port,
            tls_port,
            dns: None,
            validity: None,
        }
    }
}

/// Lines a child process printed, stdout and stderr interleaved.
type Log = Arc<Mutex<Vec<String>>>;

/// A running Pebble. Dropping it kills Pebble (and its pebble-challtestsrv).
pub struct Pebble {
    /// `https://127.0.0.1:PORT/dir`.
    pub directory: String,
    /// PEM file of the CA that signed Pebble's own HTTPS certificate: the
    /// extra root an ACME client needs to talk to the API (not the issuer of
    /// the certificates Pebble hands out; see [`Pebble::issuer_roots`]).
    pub ca_root: PathBuf,
    /// The ACME API address.
    pub acme: SocketAddr,
    /// The management interface address (`/roots/0`, `/intermediates/0`, ...).
    pub management: SocketAddr,
    /// The DNS server Pebble validates with (the caller's or pebble-challtestsrv's).
    pub dns: SocketAddr,
    ca_pem: String,
    config: PathBuf,
    child: Option<Child>,
    challtestsrv: Option<ChallTestSrv>,
    log: Log,
    dir: TempDir,
}

impl Pebble {
    /// Starts Pebble on free loopback ports and waits until its directory and
    /// management interface answer. `None` (after a loud skip, or a panic
    /// under `CI=true`) if Pebble is not installed; panics if it will not start.
    pub async fn start(opts: PebbleOptions) -> Option<Pebble> {
        let test = std::thread::current()
            .name()
            .unwrap_or("pebble test")
            .to_owned();
        let Some(pebble) = on_path("pebble") else {
            super::skip_unless_ci(&test, "pebble is not installed (apt-get install pebble)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();

        let challtestsrv = match opts.dns {
            Some(_) => None,
            None => match on_path("pebble-challtestsrv") {
                Some(bin) => Some(ChallTestSrv::start(&bin).await),
                None => {
                    super::skip_unless_ci(&test, "pebble-challtestsrv is not installed");
                    return None;
                }
            },
        };
        let dns = opts.dns.or(challtestsrv.as_ref().map(|c| c.dns)).unwrap();

        // Pebble's API certificate, from a throw-away CA of our own.
        let ca = Ca::new();
        let api = ca.issue("pebble", &["127.0.0.1", "localhost"], Key::Ec);
        let ca_pem = ca.pem();
        let ca_root = dir.path().join("api-ca.pem");
        std::fs::write(&ca_root, &ca_pem).unwrap();
        std::fs::write(dir.path().join("api.pem"), &api.chain).unwrap();
        std::fs::write(dir.path().join("api.key"), &api.key).unwrap();

        let validity = opts.validity.map_or(0, |v| {
            assert!(
                v.as_secs() >= 1,
                "Pebble reads a validity of 0 s as its 5-year default"
            );
            v.as_secs()
        });

        let mut this = Pebble {
            directory: String::new(),
            ca_root,
            acme: free_addr(),
            management: free_addr(),
            dns,
            ca_pem,
            config: dir.path().join("pebble-config.json"),
            child: None,
            challtestsrv,
            log: Log::default(),
            dir,
        };
        // A free port can be taken between our probe and Pebble's bind: try
        // new ports if Pebble exits while starting.
        for attempt in 0..3 {
            if attempt > 0 {
                this.acme = free_addr();
                this.management = free_addr();
            }
            this.directory = format!("https://{}/dir", this.acme);
            let json = serde_json::json!({ "pebble": {
                "listenAddress": this.acme.to_string(),
                "managementListenAddress": this.management.to_string(),
                "certificate": this.dir.path().join("api.pem"),
                "privateKey": this.dir.path().join("api.key"),
                "httpPort": opts.http_port,
                "tlsPort": opts.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity,
            }});
            std::fs::write(&this.config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
            this.spawn(&pebble);
            if this.wait_ready().await {
                return Some(this);
            }
            this.stop();
        }
        panic!(
            "pebble did not start; its output:\n{}",
            this.log().join("\n")
        );
    }

    fn spawn(&mut self, bin: &Path) {
        let mut cmd = Command::new(bin);
        cmd.arg("-config")
            .arg(&self.config)
            .arg("-dnsserver")
            .arg(self.dns.to_string())
            .current_dir(self.dir.path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PEBBLE_") {
                cmd.env_remove(k);
            }
        }
        // No random 0-15 s sleep before each validation; no random badNonce.
        cmd.env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0");
        self.child = Some(spawn_logged(&mut cmd, &self.log));
    }

    /// Polls until both listeners answer; `false` if Pebble exited first.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("pebble exited while starting: {status}");
                return false;
            }
            let dir = https_get(&self.ca_pem, self.acme, "/dir").await;
            let root = https_get(&self.ca_pem, self.management, "/roots/0").await;
            if let (Ok(dir), Ok(root)) = (dir, root)
                && dir.status == StatusCode::OK
                && root.status == StatusCode::OK
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not answer within {STARTUP:?}; its output:\n{}",
                self.log().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// PEM of the root that certificates issued by *this run* of Pebble chain
    /// to (`/roots/0`). Pebble makes a new one on every start, so fetch it
    /// again after [`Pebble::restart`].
    pub async fn issuer_roots(&self) -> Vec<u8> {
        self.management_get("/roots/0").await
    }

    /// PEM of the intermediate that signs leaves (`/intermediates/0`); issued
    /// chains already include it.
    pub async fn intermediate(&self) -> Vec<u8> {
        self.management_get("/intermediates/0").await
    }

    async fn management_get(&self, path: &str) -> Vec<u8> {
        let reply = https_get(&self.ca_pem, self.management, path)
            .await
            .unwrap_or_else(|e| panic!("pebble management {path}: {e}"));
        assert_eq!(reply.status, StatusCode::OK, "pebble management {path}");
        reply.body.to_vec()
    }

    /// New orders Pebble accepted, counted from its log (one
    /// `Added order "<id>" to the db` line each), over every run of this
    /// instance, restarts included. Lines arrive through a reader thread, so
    /// poll for an expected count rather than reading it once.
    pub fn orders(&self) -> usize {
        self.count(NEW_ORDER)
    }

    /// Certificates Pebble issued, counted from its log (one
    /// `Issued certificate serial <hex> for order <id>` line each), over every
    /// run of this instance.
    pub fn issued(&self) -> usize {
        self.count(ISSUED)
    }

    fn count(&self, needle: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).count()
    }

    /// Every line Pebble printed so far (stdout and stderr), over every run.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The Pebble process id, while it runs (to freeze it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("Pebble runs").id()
    }

    /// Kills Pebble (by PID) and waits for it: its ports refuse connections
    /// afterwards. pebble-challtestsrv keeps running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops Pebble if it runs, starts it again with the same ports and
    /// config, and waits until it answers. It comes back empty: a new root,
    /// no accounts, orders or certificates.
    pub async fn restart(&mut self) {
        self.stop();
        let bin = on_path("pebble").expect("pebble vanished");
        self.spawn(&bin);
        assert!(
            self.wait_ready().await,
            "pebble did not restart on its old ports; its output:\n{}",
            self.log().join("\n")
        );
    }

    /// Adds a `TXT` value at `name` (e.g. `_acme-challenge.x.foo.bar`) in
    /// pebble-challtestsrv's zone, next to any already there. Panics when
    /// Pebble uses the caller's DNS server instead.
    pub async fn add_txt(&self, name: &str, value: &str) {
        let body = serde_json::json!({ "host": fqdn(name), "value": value });
        self.challtestsrv_post("/set-txt", body).await;
    }

    /// Removes every `TXT` value at `name` from pebble-challtestsrv's zone.
    pub async fn clear_txt(&self, name: &str) {
        let body = serde_json::json!({ "host": fqdn(name) });
        self.challtestsrv_post("/clear-txt", body).await;
    }

    async fn challtestsrv_post(&self, path: &str, body: serde_json::Value) {
        let srv = self
            .challtestsrv
            .as_ref()
            .expect("no pebble-challtestsrv: PebbleOptions::dns was set");
        let req = Request::post(path)
            .header("host", srv.management.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let reply = Conn::open(srv.management).await.send(req).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "pebble-challtestsrv {path}");
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// pebble-challtestsrv as a mock DNS server only: every `A` query answers
/// 127.0.0.1, no `AAAA` (Pebble would dial `::1` first), `TXT` on request.
struct ChallTestSrv {
    child: Child,
    dns: SocketAddr,
    management: SocketAddr,
    log: Log,
}

impl ChallTestSrv {
    async fn start(bin: &Path) -> Self {
        for _ in 0..3 {
            let dns = free_addr();
            let management = free_addr();
            let mut cmd = Command::new(bin);
            cmd.args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .arg("-dns01")
                .arg(dns.to_string())
                .arg("-management")
                .arg(management.to_string())
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
            let log = Log::default();
            let mut srv = ChallTestSrv {
                child: spawn_logged(&mut cmd, &log),
                dns,
                management,
                log,
            };
            if srv.wait_ready().await {
                return srv;
            }
        }
        panic!("pebble-challtestsrv did not start");
    }

    /// Polls until the DNS (TCP side) and management ports accept; `false`
    /// if it exited first (a port was taken).
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                eprintln!(
                    "pebble-challtestsrv exited while starting: {status}\n{}",
                    self.log.lock().unwrap().join("\n")
                );
                return false;
            }
            let dns = tokio::net::TcpStream::connect(self.dns).await;
            let mgmt = tokio::net::TcpStream::connect(self.management).await;
            if dns.is_ok() && mgmt.is_ok() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "pebble-challtestsrv did not answer within {STARTUP:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChallTestSrv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` with stdout and stderr read line by line into `log` by two
/// threads, which end when the process closes its pipes.
fn spawn_logged(cmd: &mut Command, log: &Log) -> Child {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    fn pump(pipe: impl Read + Send + 'static, log: Log) {
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }
    pump(child.stdout.take().unwrap(), log.clone());
    pump(child.stderr.take().unwrap(), log.clone());
    child
}

/// One HTTPS/1.1 GET to `addr` trusting only `ca_pem`.
async fn https_get(ca_pem: &str, addr: SocketAddr, path: &str) -> std::io::Result<super::Reply> {
    let client = Client {
        sni: None,
        alpn: vec![b"http/1.1".to_vec()],
        version: None,
        ca: Some(ca_pem.to_owned()),
        resumption: rustls::client::Resumption::disabled(),
    };
    let session = tokio::time::timeout(Duration::from_secs(5), client.connect(addr))
        .await
        .map_err(std::io::Error::other)??;
    Ok(session.get(&addr.to_string(), path).await.0)
}

/// `path` to an executable called `name` on `$PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}
