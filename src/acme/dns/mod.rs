//! DNS-01 solvers: where the ACME manager publishes the `_acme-challenge` TXT
//! records it is asked for, and removes them once the order is done.
//!
//! ```text
//! ACME manager ──present/cleanup──▶ DnsSolver ─┬─ Rfc2136: SOA query → zone,
//!                                              │    UPDATE + TSIG → primary server
//!                                              └─ Exec: SCRIPT present|cleanup NAME. VALUE
//! ```
//!
//! The RFC 2136 client is written by hand (it needs two messages, TCP and
//! HMAC), signs with TSIG (RFC 8945) and verifies the server's signature.
//! Records are added and removed one value at a time, because a name and its
//! wildcard share one `_acme-challenge` name with two values at once.
//!
//! Where each part sits: this file is the solvers' face to the manager
//! (`DnsSolver`, its errors, the `--acme-dns` spec); `rfc2136` is the
//! RFC 2136 client (zone lookup, update, one TCP exchange) over `wire` (DNS
//! messages written and read) and `tsig` (keys, signing, verification);
//! `hook` runs the exec script.

mod hook;
mod rfc2136;
mod tsig;
mod wire;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use tsig::TsigKey;

use hook::{HOOK_TIMEOUT, check_hook, run_hook};
use rfc2136::{EXCHANGE_TIMEOUT, parse_host_port};

/// Where DNS-01 TXT records are published.
#[derive(Debug, Clone)]
pub enum DnsSolver {
    /// RFC 2136 dynamic updates, signed with TSIG, sent to one server.
    Rfc2136(Rfc2136),
    /// An external script, called as `SCRIPT present|cleanup NAME. VALUE`.
    Exec(PathBuf),
}

impl DnsSolver {
    /// From `--acme-dns`: `rfc2136://HOST:PORT` (HOST an IP literal or a name
    /// resolvable by the system; port default 53) or `exec:/path/to/script`.
    /// `tsig` is the parsed `--acme-dns-tsig`: required for rfc2136, refused
    /// with exec. Errors do not repeat the flag: the caller names it.
    pub fn parse(spec: &str, tsig: Option<TsigKey>) -> Result<Self, String> {
        if let Some(rest) = spec.strip_prefix("rfc2136://") {
            let key =
                tsig.ok_or_else(|| "needs --acme-dns-tsig NAME:ALGORITHM:SECRET-FILE".to_owned())?;
            let (host, port) = parse_host_port(rest.strip_suffix('/').unwrap_or(rest))?;
            Ok(Self::Rfc2136(Rfc2136 { host, port, key }))
        } else if let Some(path) = spec.strip_prefix("exec:") {
            if tsig.is_some() {
                return Err("--acme-dns-tsig is for rfc2136:// only".into());
            }
            check_hook(Path::new(path))?;
            Ok(Self::Exec(path.into()))
        } else {
            Err("expected rfc2136://HOST[:PORT] or exec:/path/to/script".into())
        }
    }

    /// Publishes TXT `value` at `fqdn` (e.g. `_acme-challenge.foo.bar`),
    /// beside any other value already there.
    pub async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.run(Op::Present, fqdn, value).await
    }

    /// Removes exactly that TXT record; other values at the name stay.
    pub async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.run(Op::Cleanup, fqdn, value).await
    }

    async fn run(&self, op: Op, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let fqdn = fqdn.strip_suffix('.').unwrap_or(fqdn);
        match self {
            Self::Rfc2136(server) => server.update(op, fqdn, value).await,
            Self::Exec(script) => run_hook(script, op, fqdn, value, HOOK_TIMEOUT).await,
        }
    }
}

/// An RFC 2136 primary server and the TSIG key its updates are signed with.
#[derive(Debug, Clone)]
pub struct Rfc2136 {
    host: String,
    port: u16,
    key: TsigKey,
}

/// What is done to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Present,
    Cleanup,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Cleanup => "cleanup",
        }
    }
}

/// A DNS RCODE, or a TSIG error code (they share one registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rcode(pub u16);

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            16 => "BADSIG",
            17 => "BADKEY",
            18 => "BADTIME",
            19 => "BADMODE",
            20 => "BADNAME",
            21 => "BADALG",
            22 => "BADTRUNC",
            23 => "BADCOOKIE",
            n => return write!(f, "RCODE {n}"),
        };
        f.write_str(name)
    }
}

/// Why a TXT record could not be published or removed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The server could not be reached, or dropped the connection.
    #[error("DNS server {server} unreachable")]
    Unreachable {
        /// `HOST:PORT` from `--acme-dns`.
        server: String,
        /// What the connection reported.
        #[source]
        source: io::Error,
    },
    /// The server took longer than 10 s to answer.
    #[error("DNS server {server} did not answer within {}s", EXCHANGE_TIMEOUT.as_secs())]
    Timeout {
        /// `HOST:PORT` from `--acme-dns`.
        server: String,
    },
    /// The answer does not parse, or does not answer what was asked.
    #[error("DNS server {server} sent a malformed answer: {why}")]
    Malformed {
        /// `HOST:PORT` from `--acme-dns`.
        server: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The server holds no zone containing the name.
    #[error("no zone found for {name} at DNS server {server} (SOA query answered {rcode})")]
    NoZone {
        /// The name to publish at.
        name: String,
        /// `HOST:PORT` from `--acme-dns`.
        server: String,
        /// The SOA query's RCODE.
        rcode: Rcode,
    },
    /// The server refused the update.
    #[error(
        "DNS server {server} refused the update of {name} in zone {zone}: {rcode}{}",
        tsig_note(*.tsig)
    )]
    Refused {
        /// `HOST:PORT` from `--acme-dns`.
        server: String,
        /// The name updated.
        name: String,
        /// The zone the update was sent for.
        zone: String,
        /// The answer's RCODE.
        rcode: Rcode,
        /// The answer's TSIG error (BADSIG, BADKEY, BADTIME…), if any.
        tsig: Option<Rcode>,
    },
    /// The answer's TSIG signature does not check out.
    #[error("DNS server {server}'s answer fails TSIG verification: {why}")]
    BadSignature {
        /// `HOST:PORT` from `--acme-dns`.
        server: String,
        /// What does not check out.
        why: &'static str,
    },
    /// The name or the value cannot be written into a DNS message.
    #[error("cannot publish a TXT record at {name:?}: {why}")]
    BadName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The hook could not be started or waited for.
    #[error("cannot run DNS hook {}", script.display())]
    Hook {
        /// The script from `--acme-dns exec:`.
        script: PathBuf,
        /// What spawning or waiting reported.
        #[source]
        source: io::Error,
    },
    /// The hook exited unsuccessfully.
    #[error(
        "DNS hook {} {action} {name} failed with {status}{}",
        script.display(),
        stderr_note(.stderr)
    )]
    HookFailed {
        /// The script from `--acme-dns exec:`.
        script: PathBuf,
        /// `present` or `cleanup`.
        action: &'static str,
        /// The NAME argument (with its trailing dot).
        name: String,
        /// `exit status N`, or the signal that killed it.
        status: String,
        /// The last lines of its stderr, joined by ` | `.
        stderr: String,
    },
    /// The hook did not finish in time, and was killed.
    #[error(
        "DNS hook {} {action} {name} did not finish within {limit:?} and was killed",
        script.display()
    )]
    HookTimeout {
        /// The script from `--acme-dns exec:`.
        script: PathBuf,
        /// `present` or `cleanup`.
        action: &'static str,
        /// The NAME argument (with its trailing dot).
        name: String,
        /// How long it was given.
        limit: Duration,
    },
}

fn tsig_note(tsig: Option<Rcode>) -> String {
    tsig.map(|e| format!(", TSIG error {e}"))
        .unwrap_or_default()
}

fn stderr_note(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(", stderr: {stderr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcodes_and_tsig_errors_have_names() {
        assert_eq!(Rcode(9).to_string(), "NOTAUTH");
        assert_eq!(Rcode(16).to_string(), "BADSIG");
        assert_eq!(Rcode(42).to_string(), "RCODE 42");
    }

    pub(super) fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    pub(super) const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQ="; // "secret-secret-secret"

    pub(super) fn executable(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn solver_specs_parse_or_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let file = write(d, "key", SECRET);
        let key = || Some(TsigKey::parse(&format!("acme:hmac-sha256:{file}")).unwrap());
        let server = |spec: &str| match DnsSolver::parse(spec, key()) {
            Ok(DnsSolver::Rfc2136(s)) => s.server(),
            other => panic!("{spec}: {other:?}"),
        };
        assert_eq!(server("rfc2136://127.0.0.1"), "127.0.0.1:53");
        assert_eq!(
            server("rfc2136://ns1.example.net:5353/"),
            "ns1.example.net:5353"
        );
        assert_eq!(server("rfc2136://[::1]:5353"), "[::1]:5353");
        assert_eq!(server("rfc2136://::1"), "[::1]:53");

        let err = |spec: &str, tsig| DnsSolver::parse(spec, tsig).unwrap_err();
        assert!(err("rfc2136://127.0.0.1", None).contains("needs --acme-dns-tsig"));
        assert!(err("rfc2136://127.0.0.1:0", key()).contains("bad port \"0\""));
        assert!(err("rfc2136://h:x", key()).contains("bad port \"x\""));
        assert!(err("rfc2136://:53", key()).contains("expected HOST or HOST:PORT"));
        assert!(err("rfc2136://a:1:2", key()).contains("bad port"));
        assert!(err("dns://x", None).contains("expected rfc2136://HOST[:PORT] or exec:"));

        let hook = executable(d, "hook", "exit 0");
        let spec = format!("exec:{}", hook.display());
        assert!(matches!(DnsSolver::parse(&spec, None), Ok(DnsSolver::Exec(p)) if p == hook));
        assert!(err(&spec, key()).contains("--acme-dns-tsig is for rfc2136:// only"));
        assert!(err(&format!("exec:{file}"), None).contains("not executable"));
        assert!(err("exec:/nonexistent/hook", None).contains("cannot use hook: No such file"));
        assert!(err(&format!("exec:{}", d.display()), None).contains("not a file"));
    }
}
