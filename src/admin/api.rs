//! The JSON views of the admin API: each reads one published snapshot (the
//! route table with its notes, the certificate set, ACME's status) and
//! renders it; nothing here changes state.

use serde_json::{Value, json};

use super::Sources;
use std::collections::HashMap;
use std::net::SocketAddr;

use crate::routes::{Desired, NoteKind, ProviderId, Role, RouteSpec, Severity, Snapshot};
use crate::upstream::Pool;

/// The view at `path`, or `None` for an unknown path.
pub fn view(sources: &Sources, path: &str) -> Option<Value> {
    let snapshot = sources.routes.load();
    Some(match path {
        "/api/routes" => routes(&snapshot, &Containers::new(sources)),
        "/api/branches" => branches(&snapshot, &Containers::new(sources), sources.links),
        "/api/warnings" => warnings(&snapshot),
        "/api/certificates" => certificates(sources),
        "/api/containers" => Containers::new(sources).list(),
        "/api/events" => {
            json!({ "events": sources.events.recent().iter().map(|e| &**e).collect::<Vec<_>>() })
        }
        _ => return None,
    })
}

/// `{"error": message}`.
pub fn error(message: &str) -> Value {
    json!({ "error": message })
}

/// What each provider wants routed, by container (or routes-file entry):
/// names upstream addresses in the views.
struct Containers {
    /// What each provider sends (its specs are shared, not copied).
    desired: Desired,
    /// Upstream address → the first spec naming it: provider and index.
    by_addr: HashMap<SocketAddr, (ProviderId, usize)>,
}

impl Containers {
    fn new(sources: &Sources) -> Self {
        let desired = sources.desired.borrow().clone();
        let mut by_addr = HashMap::new();
        for (id, provided) in &desired {
            for (i, spec) in provided.specs.iter().enumerate() {
                for addr in &spec.upstreams {
                    by_addr.entry(*addr).or_insert((*id, i));
                }
            }
        }
        Self { desired, by_addr }
    }

    /// Every spec with its provider's name.
    fn specs(&self) -> impl Iterator<Item = (&'static str, &RouteSpec)> {
        (self.desired.iter())
            .flat_map(|(id, provided)| provided.specs.iter().map(|s| (provider_name(*id), s)))
    }

    /// The provider and container (or file entry) behind `addr`.
    fn owner(&self, addr: SocketAddr) -> Option<(&'static str, &str)> {
        let (id, i) = self.by_addr.get(&addr)?;
        let spec = &self.desired.get(id)?.specs[*i];
        Some((provider_name(*id), spec.source.as_str()))
    }

    /// Container names of a branch member.
    fn of_member(&self, role: Role, branch: &str) -> Vec<&str> {
        let mut names: Vec<&str> = (self.specs())
            .filter(|(p, s)| *p == "docker" && s.role == Some(role))
            .filter(|(_, s)| s.branch.as_deref() == Some(branch))
            .map(|(_, s)| s.source.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// `/api/containers`: every routed container with its hosts.
    fn list(&self) -> Value {
        let list: Vec<Value> = (self.specs())
            .map(|(provider, s)| {
                json!({
                    "name": s.source,
                    "provider": provider,
                    "hosts": s.hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                    "path": s.path,
                    "upstreams": s.upstreams.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
                    "branch": s.branch,
                    "role": s.role.map(|r| r.to_string()),
                })
            })
            .collect();
        json!({ "containers": list })
    }
}

fn provider_name(id: ProviderId) -> &'static str {
    match id {
        ProviderId::Demo => "demo",
        ProviderId::File => "file",
        ProviderId::Docker => "docker",
    }
}

/// A pool's upstreams with their owner, health and in-flight count.
fn upstreams(pool: &Pool, containers: &Containers) -> Vec<Value> {
    pool.upstreams()
        .iter()
        .map(|u| {
            let owner = containers.owner(u.addr);
            json!({
                "addr": u.addr.to_string(),
                "container": owner.map(|o| o.1),
                "source": owner.map(|o| o.0),
                "in_flight": u.in_flight(),
                "healthy": !u.recently_failed(),
            })
        })
        .collect()
}

/// Every host rule with its paths, upstreams (live in-flight counts and
/// health) and per-route settings, sorted by host.
fn routes(snapshot: &Snapshot, containers: &Containers) -> Value {
    let mut hosts: Vec<_> = snapshot.table().host_routes().collect();
    hosts.sort_by(|a, b| a.pattern.cmp(&b.pattern));
    let list: Vec<Value> =
        hosts
            .iter()
            .map(|h| {
                let paths: Vec<Value> = h
                .paths()
                .iter()
                .map(|p| {
                    let pool = snapshot.pool(p.pool);
                    let ups = upstreams(pool, containers);
                    let source = ups.iter().find_map(|u| u["source"].as_str()).unwrap_or("file");
                    json!({
                        "path": &*p.prefix,
                        "dest": p.dest.as_deref(),
                        "source": source,
                        "upstreams": ups,
                        "last_request_ms": pool.last_request_ms(),
                        "https_method": p.policy.https_method.map(|m| m.to_string()),
                        "cert_name": p.policy.cert_name.as_deref(),
                        "acme_hosts": p.policy.acme_hosts.iter().map(|h| &**h).collect::<Vec<_>>(),
                        "cors": p.policy.cors,
                        "auth_basic": p.policy.basic_auth.as_ref().map(|b| b.to_string()),
                        "allow": p.policy.allow.as_ref().map(|a| a.to_string()),
                        "max_body": p.policy.max_body,
                        "response_timeout_ms": p.policy.response_timeout.map(|t| t.as_millis() as u64),
                    })
                })
                .collect();
                json!({ "host": &*h.pattern, "paths": paths })
            })
            .collect();
    json!({ "generation": snapshot.generation(), "routes": list })
}

/// The branch domain and its deployed frontends and backends, each with
/// its containers, health (every upstream healthy) and last request.
fn branches(snapshot: &Snapshot, containers: &Containers, links: (&str, Option<u16>)) -> Value {
    let Some(index) = snapshot.table().branches() else {
        return json!({ "domain": null, "frontends": [], "backends": [] });
    };
    let members = |role| -> Vec<Value> {
        index
            .members(role)
            .iter()
            .into_iter()
            .map(|(slug, m)| {
                let pool = snapshot.pool(m.route.pool);
                json!({
                    "slug": slug,
                    "branch": &*m.branch,
                    "containers": containers.of_member(role, &m.branch),
                    "upstreams": upstreams(pool, containers),
                    "healthy": pool.upstreams().iter().all(|u| !u.recently_failed()),
                    "last_request_ms": pool.last_request_ms(),
                })
            })
            .collect()
    };
    json!({
        "domain": index.domain(),
        "url_scheme": links.0,
        "url_port": links.1,
        "frontends": members(Role::Frontend),
        "backends": members(Role::Backend),
    })
}

/// The notes in force, exactly as logged, with their fields.
fn warnings(snapshot: &Snapshot) -> Value {
    let list: Vec<Value> = snapshot
        .notes()
        .iter()
        .map(|n| {
            let (kind, key, value) = match &n.kind {
                NoteKind::Invalid { key, value } => ("invalid", Some(key), Some(value)),
                NoteKind::Unreachable => ("unreachable", None, None),
                NoteKind::OutOfService => ("out_of_service", None, None),
                NoteKind::Conflict => ("conflict", None, None),
                NoteKind::FileRejected => ("file_rejected", None, None),
                NoteKind::DefaultHost => ("default_host", None, None),
            };
            json!({
                "severity": match n.severity { Severity::Warning => "warning", Severity::Info => "info" },
                "source": n.source,
                "kind": kind,
                "key": key,
                "value": value,
                "message": n.message,
            })
        })
        .collect();
    json!({ "warnings": list })
}

/// The certificates from `--certs`, and every certificate ACME manages
/// with its state, last error, next attempt and renewal.
fn certificates(sources: &Sources) -> Value {
    let mut files: Vec<Value> = Vec::new();
    if let Some(store) = &sources.certs {
        let certs = store.load();
        let mut named: Vec<_> = certs.named().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let fallback = certs.fallback().map(|c| ("default", c));
        for (name, c) in named.into_iter().chain(fallback) {
            files.push(json!({
                "name": name,
                "file": c.file.display().to_string(),
                "names": c.names.iter().map(|n| &**n).collect::<Vec<_>>(),
                "issuer": c.issuer,
                "not_after": c.not_after,
            }));
        }
    }
    let acme = sources.acme.as_ref().map(|a| {
        let published = a.published();
        let mut status = serde_json::to_value(&published.status).unwrap_or(Value::Null);
        for (id, s) in &published.status {
            let issuer = (s.names.first())
                .and_then(|n| published.issued.get(n.as_str()))
                .map(|c| c.issuer.clone());
            status[id]["issuer"] = json!(issuer);
        }
        status
    });
    json!({ "files": files, "acme": acme })
}
