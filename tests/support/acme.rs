//! One ACME test's world: Pebble (and Knot for DNS-01) on loopback, the
//! ports the real binary must listen on for the CA to reach it, its state
//! directory, and checks of what it serves and reports.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use super::free_port;
use super::knot::Knot;
use super::pebble::{Pebble, PebbleOptions};
use super::tls::{Client, Session};
use super::{ProxyProcess, eventually};

/// Where routes go: nothing listens there; handshakes need no backend.
pub const UPSTREAM: &str = "127.0.0.1:9";

/// A CA (and optionally a DNS server) for one test, and the ports branchgate
/// must listen on for the CA to reach it.
pub struct Env {
    pub pebble: Pebble,
    pub knot: Option<Knot>,
    pub http: u16,
    pub https: u16,
    pub state: tempfile::TempDir,
    pub roots: String,
}

impl Env {
    pub async fn start(dns: bool, validity: Option<Duration>) -> Option<Self> {
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

    pub fn pebble_pid(&self) -> u32 {
        self.pebble.pid()
    }

    pub fn https_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.https))
    }

    /// The flags that point branchgate at this CA, plus `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = acme_flags(&self.pebble, self.state.path(), self.http, self.https);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    pub async fn proxy(&self, routes: &str, extra: &[&str]) -> ProxyProcess {
        let args = self.args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ProxyProcess::spawn(routes, &args).await
    }

    /// A handshake for `host` whose chain verifies against the CA's roots
    /// for that name.
    pub async fn verified(&self, host: &str) -> Result<Session, std::io::Error> {
        let mut client = Client::new(host);
        client.ca = Some(self.roots.clone());
        client.connect(self.https_addr()).await
    }

    /// Waits until `host` is served a certificate that verifies.
    pub async fn served(&self, host: &str, limit: Duration) -> Session {
        eventually(
            limit,
            &format!("a verified certificate for {host}"),
            || async { self.verified(host).await.ok() },
        )
        .await
    }

    /// The ACME part of the state directory (one ACME directory here).
    pub fn acme_dir(&self) -> PathBuf {
        let dir = self.state.path().join("acme");
        let mut entries = std::fs::read_dir(&dir).unwrap();
        let one = entries
            .next()
            .expect("a folder per ACME directory")
            .unwrap();
        one.path()
    }

    /// `status.json`, by certificate id.
    pub fn status(&self) -> serde_json::Value {
        let text = std::fs::read(self.acme_dir().join("status.json")).unwrap_or_default();
        serde_json::from_slice(&text).unwrap_or(serde_json::Value::Null)
    }

    pub async fn status_is(&self, id: &str, state: &str) -> serde_json::Value {
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

pub fn route(host: &str, acme_host: &str) -> String {
    format!(
        "[[route]]\nhost = \"{host}\"\nupstreams = [\"{UPSTREAM}\"]\nacme_host = \"{acme_host}\"\n\n"
    )
}

pub fn branch(role: &str, name: &str) -> String {
    format!("[[route]]\nbranch = \"{name}\"\nrole = \"{role}\"\nupstreams = [\"{UPSTREAM}\"]\n\n")
}

/// Sends a signal to a process this test started.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The leaf's serial (hex), to tell two certificates apart.
pub fn serial(session: &Session) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, c) = X509Certificate::from_der(session.chain[0].as_ref()).unwrap();
    c.raw_serial_as_string()
}

/// The flags that point branchgate at `pebble` (listening where Pebble
/// validates: `http`, `https`), with `state` as its state directory and a
/// 1 s retry: the first half of every ACME test's command line.
pub fn acme_flags(pebble: &Pebble, state: &Path, http: u16, https: u16) -> Vec<String> {
    [
        "--http",
        &format!("127.0.0.1:{http}"),
        "--https",
        &format!("127.0.0.1:{https}"),
        "--acme",
        "on",
        "--acme-directory",
        &pebble.directory,
        "--acme-ca-root",
        pebble.ca_root.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--acme-retry",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
