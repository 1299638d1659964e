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
    /// Its id, a file name in the state directory: the SAN (`*` spelled
    /// `_`), or for several the first and a hash of the whole list, so two
    /// lists never share an id and a changed list is a new certificate.
    pub id: String,
    /// Its SANs, sorted, exact names before wildcards.
    pub names: Vec<String>,
}

impl Wanted {
    /// A certificate for `names` (at least one).
    pub fn new(mut names: Vec<String>) -> Self {
        names.sort_by(|a, b| (a.starts_with('*'), a).cmp(&(b.starts_with('*'), b)));
        names.dedup();
        let id = match names.len() {
            1 => cert_id(&names[0]),
            _ => format!("{}-{:08x}", cert_id(&names[0]), fnv1a(&names.join(","))),
        };
        Self { id, names }
    }
}

/// The file-name id of a certificate for `name` alone.
pub fn cert_id(name: &str) -> String {
    name.replace('*', "_")
}

/// FNV-1a, 32 bits: stable across releases, so ids survive upgrades.
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Whether a public CA can issue for `host`: a dotted name, not
/// `localhost` nor a name under a suffix reserved for private use.
pub fn publicly_orderable(host: &str) -> bool {
    const PRIVATE: [&str; 5] = ["localhost", "local", "internal", "invalid", "home.arpa"];
    host.contains('.')
        && host.parse::<IpAddr>().is_err()
        && !host.starts_with('[')
        && !PRIVATE
            .iter()
            .any(|p| host == *p || host.strip_suffix(p).is_some_and(|r| r.ends_with('.')))
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
    if let Some(host) = &settings.dashboard_host
        && publicly_orderable(host)
    {
        add(vec![host.clone()]);
    }
    if settings.all_hosts {
        for host in table.exact_hosts().filter(|h| publicly_orderable(h)) {
            add(vec![host.to_owned()]);
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

/// Whether `host` is a branch host that routes now: the branch domain
/// itself, `fe.DOMAIN` with frontend `fe` deployed, `fe.be.DOMAIN` with
/// both deployed. The only names ordered on demand: wildcard and regex
/// host rules never count here, or any SNI could place an order.
pub fn branch_routes(snapshot: &Snapshot, host: &str) -> bool {
    let Some(index) = snapshot.table().branches() else {
        return false;
    };
    match index.lookup(host, "/") {
        BranchLookup::Matrix => true,
        BranchLookup::Member(_) => {
            let labels = &host[..host.len() - index.domain().len() - 1];
            !labels.contains('.')
                || matches!(
                    index.lookup(host, index.api_prefix()),
                    BranchLookup::Member(_)
                )
        }
        BranchLookup::Missing { .. } | BranchLookup::NotBranch => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_file_names_and_exact_names_come_first() {
        let w = Wanted::new(vec!["*.foo.bar".into(), "foo.bar".into()]);
        assert!(w.id.starts_with("foo.bar-"), "{}", w.id);
        assert_eq!(w.names, vec!["foo.bar", "*.foo.bar"]);
        let w = Wanted::new(vec!["*.be.foo.bar".into()]);
        assert_eq!(w.id, "_.be.foo.bar");
        // Lists that share a first name never share an id.
        let a = Wanted::new(vec!["a.foo.bar".into(), "b.foo.bar".into()]);
        let c = Wanted::new(vec!["a.foo.bar".into(), "c.foo.bar".into()]);
        assert_ne!(a.id, c.id);
        assert_ne!(a.id, Wanted::new(vec!["a.foo.bar".into()]).id);
    }

    #[test]
    fn private_names_are_not_ordered_for_all_hosts() {
        for ok in ["a.foo.bar", "foo.bar", "localhost.foo.bar"] {
            assert!(publicly_orderable(ok), "{ok}");
        }
        for no in [
            "localhost",
            "app.localhost",
            "x.internal",
            "nas.local",
            "intranet",
            "127.0.0.1",
            "[::1]",
        ] {
            assert!(!publicly_orderable(no), "{no}");
        }
    }
}
