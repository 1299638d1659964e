//! Which certificates the routes ask for, and whether a name routes now.
//!
//! - `LETSENCRYPT_HOST` / `ACME_HOST` / `branchgate.acme_host` (and
//!   `branchgate.tls=acme`): one certificate whose SANs are that list;
//! - `--acme-all-hosts`: one per exact host;
//! - branch environments with DNS-01: `DOMAIN` + `*.DOMAIN` (the matrix and
//!   every `fe.DOMAIN`), and `*.<be>.DOMAIN` per deployed backend, which is
//!   what covers every `fe.be.DOMAIN` (a wildcard stands for one label):
//!   N frontends × M backends take M + 1 certificates;
//! - without DNS-01, branch hosts are ordered one by one at their first
//!   handshake ([`super::Acme::on_demand`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::routes::{BranchLookup, Role, Snapshot};

use super::Settings;

/// One certificate the routes ask for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wanted {
    /// Its id: the first SAN, `*` spelled `_` (a file name in the state directory).
    pub id: String,
    /// Its SANs, sorted, exact names before wildcards.
    pub names: Vec<String>,
}

impl Wanted {
    /// A certificate for `names` (at least one).
    pub fn new(mut names: Vec<String>) -> Self {
        names.sort_by(|a, b| (a.starts_with('*'), a).cmp(&(b.starts_with('*'), b)));
        names.dedup();
        Self {
            id: cert_id(&names[0]),
            names,
        }
    }
}

/// The file-name id of a certificate whose first SAN is `name`.
pub fn cert_id(name: &str) -> String {
    name.replace('*', "_")
}

/// Every certificate the routes in `snapshot` ask for, by id; and the
/// names asked for that cannot be ordered, with why.
pub fn wanted(snapshot: &Snapshot, settings: &Settings) -> (BTreeMap<String, Wanted>, Vec<String>) {
    let table = snapshot.table();
    let mut out = BTreeMap::new();
    let mut refused = Vec::new();
    let mut add = |names: Vec<String>| {
        let w = Wanted::new(names);
        out.entry(w.id.clone()).or_insert(w);
    };
    for host in table.host_routes() {
        for path in host.paths() {
            let list = &path.policy.acme_hosts;
            if list.is_empty() {
                continue;
            }
            let (ok, bad): (Vec<_>, Vec<_>) = list
                .iter()
                .map(|n| n.to_string())
                .partition(|n| routes_now(snapshot, n));
            for n in bad {
                refused.push(format!(
                    "{n}: asked for by {} but does not route here",
                    host.pattern
                ));
            }
            if !ok.is_empty() {
                add(ok);
            }
        }
    }
    if settings.all_hosts {
        for host in table.exact_hosts() {
            if host.parse::<IpAddr>().is_err() && !host.starts_with('[') {
                add(vec![host.to_owned()]);
            }
        }
    }
    if settings.wildcards()
        && let Some(index) = table.branches()
    {
        let domain = index.domain();
        add(vec![domain.to_owned(), format!("*.{domain}")]);
        for (slug, _) in index.members(Role::Backend).list() {
            add(vec![format!("*.{slug}.{domain}")]);
        }
    }
    (out, refused)
}

/// Whether a certificate for `name` may be ordered now: a host name (never
/// an IP) that a route serves. Wildcards: `*.DOMAIN` while branch
/// environments are on, `*.<be>.DOMAIN` while backend `be` is deployed.
pub fn name_routes(snapshot: &Snapshot, name: &str) -> bool {
    let table = snapshot.table();
    match name.strip_prefix("*.") {
        None => routes_now(snapshot, name),
        Some(parent) => table.branches().is_some_and(|index| {
            let domain = index.domain();
            parent == domain
                || parent
                    .strip_suffix(domain)
                    .and_then(|l| l.strip_suffix('.'))
                    .is_some_and(|be| {
                        !be.contains('.')
                            && index
                                .members(Role::Backend)
                                .list()
                                .iter()
                                .any(|(s, _)| *s == be)
                    })
        }),
    }
}

/// Whether `host` (lower case) routes now: an exact or pattern host rule
/// serves it, or it is a branch host whose frontend (and backend, for
/// `fe.be.DOMAIN`) is deployed, or the branch domain itself. IPs never do.
pub fn routes_now(snapshot: &Snapshot, host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
        return false;
    }
    let table = snapshot.table();
    if let Some(index) = table.branches() {
        match index.lookup(host, "/") {
            BranchLookup::Matrix => return true,
            BranchLookup::Member(_) => {
                return matches!(
                    index.lookup(host, index.api_prefix()),
                    BranchLookup::Member(_)
                );
            }
            BranchLookup::Missing { .. } => return false,
            BranchLookup::NotBranch => {}
        }
    }
    table.find_host(host).is_some()
}

/// Whether `host` is the branch domain or under it (an on-demand candidate).
pub fn under_branch_domain(settings: &Settings, host: &str) -> bool {
    settings
        .branch_domain
        .as_deref()
        .is_some_and(|d| host == d || host.strip_suffix(d).is_some_and(|rest| rest.ends_with('.')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_file_names_and_exact_names_come_first() {
        let w = Wanted::new(vec!["*.foo.bar".into(), "foo.bar".into()]);
        assert_eq!(w.id, "foo.bar");
        assert_eq!(w.names, vec!["foo.bar", "*.foo.bar"]);
        let w = Wanted::new(vec!["*.be.foo.bar".into()]);
        assert_eq!(w.id, "_.be.foo.bar");
    }
}
