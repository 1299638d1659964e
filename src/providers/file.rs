//! The static routes file (`--routes FILE`, TOML).
//!
//! Its keys are the container label names without the `branchgate.` prefix,
//! plus `upstreams`. The file is polled every 250 ms; a version is taken once
//! two polls read the same bytes (so a half-written file never goes live). A
//! valid change is published within about half a second; an invalid one is
//! logged once (file, line, reason) and the table in force stays as it is.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::routes::policy::{parse_acme_hosts, parse_cert_name, parse_size};
use crate::routes::spec::check_path;
use crate::routes::{
    Desired, HostPattern, Hsts, HttpsMethod, Note, NoteKind, Origin, Policy, Provided, ProviderId,
    RouteSpec, Severity,
};

/// How often the file is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Why a routes file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{path}: cannot read")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("{path}:{line}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A route entry has an invalid value.
    #[error("{path}:{line}: route: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the `[[route]]` entry.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    route: Vec<toml::Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<String>,
    path: Option<String>,
    dest: Option<String>,
    proto: Option<String>,
    #[serde(default)]
    upstreams: Vec<String>,
    branch: Option<String>,
    role: Option<String>,
    cors: Option<bool>,
    https_method: Option<String>,
    hsts: Option<String>,
    cert_name: Option<String>,
    acme_host: Option<String>,
    acme_email: Option<String>,
    auth_basic: Option<String>,
    allow: Option<String>,
    max_body: Option<String>,
    response_timeout: Option<String>,
}

fn line_of(text: &str, span: Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

/// Parses routes-file text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<Vec<RouteSpec>, FileError> {
    let file: RoutesFile = toml::from_str(text).map_err(|e| FileError::Syntax {
        path: path.to_owned(),
        line: e.span().map_or(1, |s| line_of(text, s)),
        reason: e.message().trim().to_owned(),
    })?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    file.route
        .into_iter()
        .map(|entry| {
            let line = line_of(text, entry.span());
            to_spec(entry.into_inner(), format!("{name}:{line}")).map_err(|reason| {
                FileError::Invalid {
                    path: path.to_owned(),
                    line,
                    reason,
                }
            })
        })
        .collect()
}

fn to_spec(raw: RawRoute, source: String) -> Result<RouteSpec, String> {
    let hosts = match &raw.host {
        Some(h) => HostPattern::parse_list(h)
            .map_err(|(bad, e)| format!("host {bad:?}: {}", crate::logging::chain(&e)))?,
        None => Vec::new(),
    };
    if hosts.is_empty() && raw.branch.is_none() {
        return Err("needs `host` or `branch`".into());
    }
    let path = raw.path.unwrap_or_else(|| "/".into());
    check_path(&path)?;
    if let Some(dest) = raw.dest.as_deref().filter(|d| !d.is_empty()) {
        check_path(dest).map_err(|e| format!("dest: {e}"))?;
    }
    let upstreams = raw
        .upstreams
        .iter()
        .map(|u| {
            u.trim().parse::<SocketAddr>().map_err(|_| {
                format!("upstream {u:?} is not IP:port (e.g. 127.0.0.1:8080 or [::1]:8080)")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let role = raw.role.as_deref().map(str::parse).transpose()?;
    if raw.branch.is_some() != role.is_some() {
        return Err("`branch` and `role` go together".into());
    }
    // The same parsers and messages as the labels, with the key and value in front.
    let bad = |key: &str, value: &str, e: String| format!("{key} = {value:?}: {e}");
    let policy = Policy {
        cors: raw.cors.unwrap_or(false),
        https_method: match &raw.https_method {
            Some(v) => Some(
                v.parse::<HttpsMethod>()
                    .map_err(|e| bad("https_method", v, e))?,
            ),
            None => None,
        },
        hsts: match raw.hsts.as_deref().filter(|v| !v.trim().is_empty()) {
            Some(v) => v.parse::<Hsts>().map_err(|e| bad("hsts", v, e))?,
            None => Hsts::Default,
        },
        cert_name: match &raw.cert_name {
            Some(v) => parse_cert_name(v).map_err(|e| bad("cert_name", v, e))?,
            None => None,
        },
        acme_hosts: match &raw.acme_host {
            Some(v) => parse_acme_hosts(v).map_err(|e| bad("acme_host", v, e))?,
            None => Vec::new(),
        },
        acme_email: raw
            .acme_email
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .map(Into::into),
        basic_auth: match raw.auth_basic.as_deref().filter(|v| !v.trim().is_empty()) {
            // The hashes stay out of the message.
            Some(v) => Some(v.parse().map_err(|e| format!("auth_basic: {e}"))?),
            None => None,
        },
        allow: match raw.allow.as_deref().filter(|v| !v.trim().is_empty()) {
            Some(v) => Some(v.parse().map_err(|e| bad("allow", v, e))?),
            None => None,
        },
        max_body: match raw.max_body.as_deref().filter(|v| !v.trim().is_empty()) {
            Some(v) => parse_size(v).map_err(|e| bad("max_body", v, e))?,
            None => None,
        },
        response_timeout: match raw
            .response_timeout
            .as_deref()
            .filter(|v| !v.trim().is_empty())
        {
            Some(v) => {
                Some(crate::config::parse_timeout(v).map_err(|e| bad("response_timeout", v, e))?)
            }
            None => None,
        },
    };
    Ok(RouteSpec {
        source,
        hosts,
        path,
        dest: raw.dest,
        proto: raw
            .proto
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default(),
        upstreams,
        branch: raw.branch,
        role,
        policy,
    })
}

/// Polls `path` until `shutdown`, sending every valid new version into `tx`.
/// `last` is the content already published (by the start-up load).
pub async fn watch(
    path: PathBuf,
    last: Vec<u8>,
    tx: Arc<watch::Sender<Desired>>,
    shutdown: CancellationToken,
) {
    // The content last taken (published or refused); `None` while unreadable.
    let mut last = Some(last);
    let mut pending: Option<Vec<u8>> = None;
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Ok(bytes) = tokio::fs::read(&path).await else {
            if last.take().is_some() {
                error!(file = %path.display(), "routes file cannot be read; keeping the routes in force");
                reject(
                    &tx,
                    &path,
                    "cannot be read; the routes in force stay".into(),
                );
            }
            continue;
        };
        if last.as_ref() == Some(&bytes) {
            pending = None;
            continue;
        }
        // A new version counts once two polls read the same bytes: an editor
        // that truncates and then writes is never caught half-way.
        if pending.as_ref() != Some(&bytes) {
            pending = Some(bytes);
            continue;
        }
        pending = None;
        let text = String::from_utf8_lossy(&bytes);
        match parse(&path, &text) {
            Ok(specs) => {
                info!(file = %path.display(), routes = specs.len(), "routes file changed");
                tx.send_modify(|d| {
                    d.insert(ProviderId::File, Arc::new(Provided::specs(specs)));
                });
            }
            Err(e) => {
                let reason = crate::logging::chain(&e);
                error!(error = %reason, "invalid routes file; keeping the routes in force");
                reject(&tx, &path, format!("{reason}; the routes in force stay"));
            }
        }
        last = Some(bytes);
    }
}

/// Keeps the file's routes in force and publishes why the new version was
/// not taken.
fn reject(tx: &watch::Sender<Desired>, path: &Path, message: String) {
    tx.send_modify(|d| {
        let specs = d
            .get(&ProviderId::File)
            .map(|p| p.specs.clone())
            .unwrap_or_default();
        let note = Note {
            origin: Origin::Provider(ProviderId::File),
            source: path.display().to_string(),
            severity: Severity::Warning,
            kind: NoteKind::FileRejected,
            message,
        };
        d.insert(
            ProviderId::File,
            Arc::new(Provided {
                specs,
                notes: vec![note],
            }),
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<RouteSpec>, FileError> {
        parse(Path::new("routes.toml"), text)
    }

    #[test]
    fn parses_a_full_entry() {
        let specs = p(r#"
[[route]]
host = "app.foo.bar, *.preview.foo.bar"
path = "/app1/"
dest = "/"
proto = "https"
upstreams = ["127.0.0.1:9001", "[::1]:9002"]

[[route]]
branch = "feature/login"
role = "frontend"
upstreams = ["127.0.0.1:9101"]
"#)
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].hosts.len(), 2);
        assert_eq!(specs[0].source, "routes.toml:2");
        assert_eq!(specs[0].upstreams.len(), 2);
        assert_eq!(specs[1].source, "routes.toml:9");
    }

    #[test]
    fn the_bundled_example_parses() {
        let specs = p(include_str!("../../examples/routes.toml")).unwrap();
        assert_eq!(specs.len(), 5);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = p("[[route]]\nhost = \"a\"\nupstreams = [\"nope\"]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "routes.toml:1: route: upstream \"nope\" is not IP:port (e.g. 127.0.0.1:8080 or [::1]:8080)"
        );
        let e = p("[[route]]\nhost = \"a\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("routes.toml:3: "), "{e}");
        let e = p("[[route]]\nhost = \"a\n").unwrap_err().to_string();
        assert!(e.starts_with("routes.toml:2: "), "{e}");
        let e = p("\n[[route]]\nhost = \"~(\"\n").unwrap_err().to_string();
        assert!(e.starts_with("routes.toml:2: route: host \"~(\""), "{e}");
        let e = p("[[route]]\npath = \"/\"\n").unwrap_err().to_string();
        assert!(e.contains("needs `host` or `branch`"), "{e}");
    }

    #[test]
    fn policy_keys_parse_and_fail_with_the_labels_messages() {
        let specs = p(r#"
[[route]]
host = "a.foo.bar"
upstreams = ["127.0.0.1:1"]
https_method = "nohttp"
hsts = "max-age=60; includeSubDomains"
cert_name = "shared"
acme_host = "a.foo.bar, A.foo.bar, b.foo.bar"
acme_email = "ops@foo.bar"
cors = true
"#)
        .unwrap();
        let policy = &specs[0].policy;
        assert_eq!(policy.https_method, Some(HttpsMethod::NoHttp));
        assert_eq!(
            policy.hsts,
            Hsts::Value("max-age=60; includeSubDomains".into())
        );
        assert_eq!(policy.cert_name.as_deref(), Some("shared"));
        assert_eq!(
            policy.acme_hosts,
            [Box::from("a.foo.bar"), Box::from("b.foo.bar")]
        );
        assert_eq!(policy.acme_email.as_deref(), Some("ops@foo.bar"));
        assert!(policy.cors);
        // Each bad value: the line, the key, the value, and the reason the labels give.
        for (line, want) in [
            (
                "https_method = \"maybe\"",
                "https_method = \"maybe\": must be redirect, noredirect, nohttp or nohttps",
            ),
            (
                "hsts = \"yes\"",
                "hsts = \"yes\": must be off or a Strict-Transport-Security value",
            ),
            (
                "cert_name = \"../x\"",
                "cert_name = \"../x\": must be a file base name",
            ),
            (
                "acme_host = \"*.foo.bar\"",
                "acme_host = \"*.foo.bar\": \"*.foo.bar\" is not a host name a certificate can be issued for",
            ),
        ] {
            let e = p(&format!("[[route]]\nhost = \"a\"\n{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("routes.toml:1: route: {want}")),
                "{e}"
            );
        }
    }
}
