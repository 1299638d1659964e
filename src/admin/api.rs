//! The JSON views of the admin API: each reads one published snapshot (the
//! route table with its notes, the certificate set, ACME's status) and
//! renders it; nothing here changes state.

use serde_json::{Value, json};

use super::Sources;
use crate::routes::{NoteKind, Role, Severity, Snapshot};

/// The view at `path`, or `None` for an unknown path.
pub fn view(sources: &Sources, path: &str) -> Option<Value> {
    let snapshot = sources.routes.load();
    Some(match path {
        "/api/routes" => routes(&snapshot),
        "/api/branches" => branches(&snapshot),
        "/api/warnings" => warnings(&snapshot),
        "/api/certificates" => certificates(sources),
        _ => return None,
    })
}

/// `{"error": message}`.
pub fn error(message: &str) -> Value {
    json!({ "error": message })
}

/// Every host rule with its paths, upstreams (live in-flight counts and
/// health) and per-route settings, sorted by host.
fn routes(snapshot: &Snapshot) -> Value {
    let mut hosts: Vec<_> = snapshot.table().host_routes().collect();
    hosts.sort_by(|a, b| a.pattern.cmp(&b.pattern));
    let list: Vec<Value> = hosts
        .iter()
        .map(|h| {
            let paths: Vec<Value> = h
                .paths()
                .iter()
                .map(|p| {
                    let pool = snapshot.pool(p.pool);
                    let upstreams: Vec<Value> = pool
                        .upstreams()
                        .iter()
                        .map(|u| {
                            json!({
                                "addr": u.addr.to_string(),
                                "in_flight": u.in_flight(),
                                "healthy": !u.recently_failed(),
                            })
                        })
                        .collect();
                    json!({
                        "path": &*p.prefix,
                        "dest": p.dest.as_deref(),
                        "upstreams": upstreams,
                        "https_method": p.policy.https_method.map(|m| m.to_string()),
                        "cert_name": p.policy.cert_name.as_deref(),
                        "acme_hosts": p.policy.acme_hosts.iter().map(|h| &**h).collect::<Vec<_>>(),
                        "cors": p.policy.cors,
                    })
                })
                .collect();
            json!({ "host": &*h.pattern, "paths": paths })
        })
        .collect();
    json!({ "generation": snapshot.generation(), "routes": list })
}

/// The branch domain and its deployed frontends and backends.
fn branches(snapshot: &Snapshot) -> Value {
    let Some(index) = snapshot.table().branches() else {
        return json!({ "domain": null, "frontends": [], "backends": [] });
    };
    let members = |role| -> Vec<Value> {
        index
            .members(role)
            .list()
            .into_iter()
            .map(|(slug, branch)| json!({ "slug": slug, "branch": branch }))
            .collect()
    };
    json!({
        "domain": index.domain(),
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
                "not_after": c.not_after,
            }));
        }
    }
    let acme = sources
        .acme
        .as_ref()
        .map(|a| serde_json::to_value(&a.published().status).unwrap_or(Value::Null));
    json!({ "files": files, "acme": acme })
}
