//! A real Knot DNS server (`knotd`) on loopback, authoritative for one zone
//! and accepting RFC 2136 updates signed with a TSIG key: the target of the
//! DNS-01 solver's tests, and a resolver for Pebble (`-dnsserver`, UDP and
//! TCP on [`Knot::addr`]).
//!
//! The zone holds `@ SOA`, `@ NS`, `@ A 127.0.0.1` and `* A 127.0.0.1`, plus
//! an explicit `A 127.0.0.1` for each host given to [`Knot::start_with_hosts`].
//! Those explicit records matter: while `_acme-challenge.x.ZONE` exists,
//! `x.ZONE` is an empty non-terminal, and the wildcard no longer answers for
//! it (RFC 4592), so `x.ZONE A` is NODATA until the TXT record is removed.
//! A test that validates HTTP-01 or TLS-ALPN-01 for a name while a DNS-01
//! record sits below it must list that name.
//!
//! Updates live in memory only (`zonefile-sync: -1`, no journal); every
//! server has its own tempdir and is killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::process::{Child, Command};

/// The TSIG key's name (`--acme-dns-tsig NAME:…`).
pub const KEY_NAME: &str = "acme-update";

/// A running knotd; killed when dropped.
pub struct Knot {
    /// Where it answers, over UDP and TCP.
    pub addr: SocketAddr,
    /// The zone it is authoritative for, without a trailing dot.
    pub zone: String,
    /// The TSIG key's name.
    pub key_name: String,
    /// The key's base64 secret.
    pub secret: String,
    /// A file holding just the base64 secret.
    pub tsig_file: PathBuf,
    /// `NAME:hmac-sha256:FILE`, for `--acme-dns-tsig`.
    pub tsig_spec: String,
    /// `rfc2136://ADDR`, for `--acme-dns`.
    pub dns_spec: String,
    /// knotd's stderr (its log).
    pub log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        // kill_on_drop is set too; this just does not wait for the runtime.
        let _ = self.child.start_kill();
    }
}

impl Knot {
    /// Starts knotd for `zone` (e.g. `foo.bar`). `None` (after a loud skip,
    /// or a panic under `CI=true`) when knotd or kdig is not installed.
    pub async fn start(zone: &str) -> Option<Knot> {
        Self::start_with_hosts(zone, &[]).await
    }

    /// As [`Knot::start`], with an explicit `A 127.0.0.1` for each of `hosts`
    /// (full names inside `zone`), which keeps them resolving while a DNS-01
    /// record sits below them.
    pub async fn start_with_hosts(zone: &str, hosts: &[&str]) -> Option<Knot> {
        let test = std::thread::current()
            .name()
            .unwrap_or("a Knot DNS test")
            .to_owned();
        let (Some(knotd), Some(_)) = (find_program("knotd"), find_program("kdig")) else {
            super::skip_unless_ci(
                &test,
                "knotd or kdig not installed (apt install knot knot-dnsutils)",
            );
            return None;
        };
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        // A port another server grabbed between probe and bind makes knotd
        // exit at once; a few fresh ports make that harmless.
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(&knotd, &zone, hosts).await {
                Ok(knot) => return Some(knot),
                Err(why) => last = why,
            }
        }
        panic!("knotd did not start: {last}");
    }

    async fn try_start(knotd: &Path, zone: &str, hosts: &[&str]) -> Result<Knot, String> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let addr = super::free_addr();
        let secret = base64::engine::general_purpose::STANDARD.encode(random_bytes::<32>());
        let tsig_file = d.join("tsig.key");
        std::fs::write(&tsig_file, format!("{secret}\n")).unwrap();
        std::fs::write(d.join("zone"), zone_file(zone, hosts)).unwrap();
        let conf = d.join("knot.conf");
        std::fs::write(&conf, config(d, addr, zone, &secret)).unwrap();
        let log = d.join("knotd.log");
        let mut child = Command::new(knotd)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run knotd: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("knotd exited ({status}):\n{log}"));
            }
            if !dig(addr, &["SOA", zone]).await.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("knotd did not answer within 10s:\n{log}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Knot {
            addr,
            zone: zone.to_owned(),
            key_name: KEY_NAME.to_owned(),
            tsig_spec: format!("{KEY_NAME}:hmac-sha256:{}", tsig_file.display()),
            dns_spec: format!("rfc2136://{addr}"),
            secret,
            tsig_file,
            log,
            child,
            _dir: dir,
        })
    }

    /// The TXT values at `name`, each record's strings joined, sorted.
    pub async fn txt(&self, name: &str) -> Vec<String> {
        let mut values: Vec<String> = dig(self.addr, &["TXT", name])
            .await
            .iter()
            .map(|line| unquote_txt(line))
            .collect();
        values.sort();
        values
    }

    /// The A records at `name`, as kdig prints them.
    pub async fn a(&self, name: &str) -> Vec<String> {
        dig(self.addr, &["A", name]).await
    }
}

/// `kdig +short` over TCP: one line per record, no lines when none (or on
/// error).
async fn dig(addr: SocketAddr, query: &[&str]) -> Vec<String> {
    let out = Command::new(find_program("kdig").expect("kdig"))
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+tcp", "+short", "+time=2", "+retry=0"])
        .args(query)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("kdig runs");
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_owned)
        .collect()
}

/// `"abc" "def"` → `abcdef` (the values here need no escapes).
fn unquote_txt(line: &str) -> String {
    line.split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .concat()
}

fn config(dir: &Path, addr: SocketAddr, zone: &str, secret: &str) -> String {
    let dir = dir.display();
    format!(
        "server:
    listen: {ip}@{port}
    rundir: {dir}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: {dir}
key:
  - id: {KEY_NAME}
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: acme-update
    key: {KEY_NAME}
    action: update
template:
  - id: default
    storage: {dir}
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: {zone}
    file: zone
    acl: acme-update
",
        ip = addr.ip(),
        port = addr.port(),
    )
}

fn zone_file(zone: &str, hosts: &[&str]) -> String {
    let mut z = format!(
        "$ORIGIN {zone}.
$TTL 60
@ SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60
@ NS ns.{zone}.
@ A 127.0.0.1
* A 127.0.0.1
"
    );
    for host in hosts {
        z.push_str(&format!("{}. A 127.0.0.1\n", host.trim_end_matches('.')));
    }
    z
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b
}

/// `name` on PATH, or in the sbin directories a non-root PATH lacks.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
