//! The immutable route table and its builder.
//!
//! One [`RouteTable`] is the whole routing truth at one instant: hosts, paths
//! and upstream pools. It is built from provider specs off the hot path and
//! published whole (see [`super::publish`]); the proxy handler reads it with
//! one `ArcSwap::load` per request.
//!
//! Lookup order, first match wins: exact host, longest `*.suffix`, longest
//! `prefix.*`, regexes ordered by their source text, then `--default-host`.
//! Exact and wildcard lookups are hash probes, one per label of the request
//! host, so their cost does not depend on how many routes exist.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::branch::{BranchIndex, BranchLookup, BranchSettings, build_index};
use super::host::{HostPattern, HostRegex, MAX_HOST_LEN, normalize_host};
use super::spec::{Proto, Role, RouteSpec};
use crate::proxy::upstream::{Pool, UpstreamRegistry};

/// Which rule matched a host; reported in logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// An exact host.
    Exact,
    /// A `*.suffix` wildcard.
    Suffix,
    /// A `prefix.*` wildcard.
    Prefix,
    /// A `~regex`.
    Regex,
    /// Nothing matched; `--default-host` did.
    Default,
    /// A branch environment member (`<fe>.<be>.DOMAIN`).
    Branch,
}

/// One path rule under a host.
#[derive(Debug)]
pub struct PathRoute {
    /// The path prefix (`VIRTUAL_PATH`).
    pub prefix: Box<str>,
    /// What replaces the prefix upstream (`VIRTUAL_DEST`).
    pub dest: Option<Box<str>>,
    /// Where requests go.
    pub pool: Arc<Pool>,
    /// The proxy answers CORS for this route (`branchgate.cors`).
    pub cors: bool,
}

/// Every path rule of one host pattern, longest prefix first.
#[derive(Debug)]
pub struct HostRoutes {
    /// The pattern as written in canonical form (`*.foo.bar`, `app.foo.bar`).
    pub pattern: Box<str>,
    paths: Box<[PathRoute]>,
}

impl HostRoutes {
    /// The longest path prefix that `path` starts with.
    pub fn find_path(&self, path: &str) -> Option<&PathRoute> {
        self.paths.iter().find(|p| path.starts_with(&*p.prefix))
    }

    /// All path rules, longest first.
    pub fn paths(&self) -> &[PathRoute] {
        &self.paths
    }
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A route, and which rule found its host.
    Found(&'a PathRoute, HostMatch),
    /// The host is known but no path prefix matches.
    NoPath,
    /// No host rule matches and there is no default host.
    NoHost,
    /// The branch domain itself: the environment matrix of this index.
    Matrix(&'a BranchIndex),
    /// A branch host whose branch of this role is not deployed.
    MissingBranch {
        /// The index, for the page that lists what is deployed.
        index: &'a BranchIndex,
        /// The role the path asked for.
        role: Role,
        /// The branch slug asked for.
        slug: &'a str,
    },
}

/// An immutable snapshot of all routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    generation: u64,
    exact: HashMap<Box<str>, Arc<HostRoutes>>,
    suffix: HashMap<Box<str>, Arc<HostRoutes>>,
    prefix: HashMap<Box<str>, Arc<HostRoutes>>,
    regex: Vec<(Box<HostRegex>, Arc<HostRoutes>)>,
    default: Option<Arc<HostRoutes>>,
    branches: Option<BranchIndex>,
}

impl RouteTable {
    /// Publish counter of this snapshot (0 for the initial empty table).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Finds the host rule for an already normalised host.
    pub fn find_host(&self, host: &str) -> Option<(&HostRoutes, HostMatch)> {
        self.find_entry(host).map(|(r, how)| (&**r, how))
    }

    fn find_entry(&self, host: &str) -> Option<(&Arc<HostRoutes>, HostMatch)> {
        match self.exact.get(host) {
            Some(r) => Some((r, HostMatch::Exact)),
            None => self.find_pattern(host),
        }
    }

    /// Wildcards and regexes, in precedence order (after exact hosts).
    fn find_pattern(&self, host: &str) -> Option<(&Arc<HostRoutes>, HostMatch)> {
        if !self.suffix.is_empty() {
            // Leftmost dot first: the longest suffix wins; at least one label must precede.
            for (i, b) in host.bytes().enumerate() {
                if b == b'.'
                    && i > 0
                    && let Some(r) = self.suffix.get(&host[i + 1..])
                {
                    return Some((r, HostMatch::Suffix));
                }
            }
        }
        if !self.prefix.is_empty() {
            // Rightmost dot first: the longest prefix wins; at least one label must follow.
            for (i, b) in host.bytes().enumerate().rev() {
                if b == b'.'
                    && i + 1 < host.len()
                    && let Some(r) = self.prefix.get(&host[..i])
                {
                    return Some((r, HostMatch::Prefix));
                }
            }
        }
        self.regex
            .iter()
            .find(|(re, _)| re.regex.is_match(host))
            .map(|(_, r)| (r, HostMatch::Regex))
    }

    /// Resolves a normalised host and a request path to a route. Exact hosts
    /// win over branch hosts, which win over wildcards and regexes.
    pub fn lookup<'a>(&'a self, host: &'a str, path: &str) -> Lookup<'a> {
        let found = match self.exact.get(host) {
            Some(r) => Some((r, HostMatch::Exact)),
            None => {
                if let Some(b) = &self.branches {
                    match b.lookup(host, path) {
                        BranchLookup::NotBranch => {}
                        BranchLookup::Matrix => return Lookup::Matrix(b),
                        BranchLookup::Member(route) => {
                            return Lookup::Found(route, HostMatch::Branch);
                        }
                        BranchLookup::Missing { role, slug } => {
                            return Lookup::MissingBranch {
                                index: b,
                                role,
                                slug,
                            };
                        }
                    }
                }
                self.find_pattern(host)
            }
        };
        let (routes, how) = match found.map(|(r, how)| (&**r, how)) {
            Some(found) => found,
            None => match &self.default {
                Some(d) => (&**d, HostMatch::Default),
                None => return Lookup::NoHost,
            },
        };
        match routes.find_path(path) {
            Some(p) => Lookup::Found(p, how),
            None => Lookup::NoPath,
        }
    }

    /// Every host pattern in the table, sorted (for diffs and the API).
    pub fn host_patterns(&self) -> BTreeSet<&str> {
        self.exact
            .values()
            .chain(self.suffix.values())
            .chain(self.prefix.values())
            .chain(self.regex.iter().map(|(_, r)| r))
            .map(|r| &*r.pattern)
            .collect()
    }

    /// Number of host patterns.
    pub fn host_count(&self) -> usize {
        self.exact.len() + self.suffix.len() + self.prefix.len() + self.regex.len()
    }
}

/// Settings that shape a build but do not come from providers.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// `--default-host`: serves hosts that match nothing.
    pub default_host: Option<String>,
    /// `--branch-domain` and friends: branch environments on.
    pub branches: Option<BranchSettings>,
}

/// Something a build wants an operator to see; the build still succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildWarning {
    /// The spec the warning is about.
    pub source: String,
    /// What is wrong and what was done about it.
    pub message: String,
}

struct PathAcc<'s> {
    first: &'s RouteSpec,
    upstreams: BTreeSet<std::net::SocketAddr>,
}

/// Builds a table from specs. When specs for one host and path disagree on
/// `dest` or `proto`, the first spec in iteration order decides (providers
/// hand specs in a documented, deterministic order) and a warning names the
/// others; their upstreams still join the pool.
pub fn build<'s>(
    specs: impl IntoIterator<Item = &'s RouteSpec> + Clone,
    opts: &BuildOptions,
    registry: &UpstreamRegistry,
    generation: u64,
) -> (RouteTable, Vec<BuildWarning>) {
    let mut warnings = Vec::new();
    let mut used = BTreeSet::new();
    let branches = opts
        .branches
        .as_ref()
        .map(|b| build_index(specs.clone(), b, registry, &mut used, &mut warnings));
    // pattern text -> (pattern, path -> accumulated members)
    let mut hosts: BTreeMap<String, (&'s HostPattern, BTreeMap<&'s str, PathAcc<'s>>)> =
        BTreeMap::new();
    for spec in specs {
        for pattern in &spec.hosts {
            let (_, paths) = hosts
                .entry(pattern.to_string())
                .or_insert_with(|| (pattern, BTreeMap::new()));
            let acc = paths.entry(&spec.path).or_insert_with(|| PathAcc {
                first: spec,
                upstreams: BTreeSet::new(),
            });
            if !std::ptr::eq(acc.first, spec)
                && (acc.first.dest != spec.dest
                    || acc.first.proto != spec.proto
                    || acc.first.cors != spec.cors)
            {
                warnings.push(BuildWarning {
                    source: spec.source.clone(),
                    message: format!(
                        "{pattern}{}: dest/proto/cors differ from {}, whose settings are used",
                        spec.path, acc.first.source
                    ),
                });
            }
            acc.upstreams.extend(spec.upstreams.iter().copied());
        }
    }

    let mut table = RouteTable {
        generation,
        branches,
        ..RouteTable::default()
    };
    for (text, (pattern, paths)) in hosts {
        let mut paths: Vec<PathRoute> = paths
            .into_iter()
            .map(|(prefix, acc)| {
                let proto: Proto = acc.first.proto;
                used.extend(acc.upstreams.iter().map(|a| (*a, proto)));
                PathRoute {
                    prefix: prefix.into(),
                    dest: acc.first.dest.as_deref().map(Into::into),
                    pool: Arc::new(registry.pool(acc.upstreams.iter().copied(), proto)),
                    cors: acc.first.cors,
                }
            })
            .collect();
        // Longest prefix first; ties cannot happen (paths are map keys).
        paths.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(a.prefix.cmp(&b.prefix))
        });
        let routes = Arc::new(HostRoutes {
            pattern: text.into(),
            paths: paths.into(),
        });
        match pattern {
            HostPattern::Exact(h) => table.exact.insert(h.clone(), routes),
            HostPattern::Suffix(s) => table.suffix.insert(s.clone(), routes),
            HostPattern::Prefix(p) => table.prefix.insert(p.clone(), routes),
            HostPattern::Regex(r) => {
                // BTreeMap iteration already sorted regexes by their text.
                table.regex.push((r.clone(), routes));
                None
            }
        };
    }
    registry.retain_used(&used);

    if let Some(default) = &opts.default_host {
        let mut buf = [0; MAX_HOST_LEN];
        let found = normalize_host(default, &mut buf).and_then(|h| table.find_entry(h));
        match found.map(|(routes, _)| routes.clone()) {
            Some(routes) => table.default = Some(routes),
            None => warnings.push(BuildWarning {
                source: "--default-host".into(),
                message: format!("default host {default} has no route yet; unknown hosts get 503"),
            }),
        }
    }
    (table, warnings)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::proxy::upstream::ClientSettings;

    /// Found by `fuzz/fuzz_targets/lookup_diff.rs`: `.foo` matched `*.foo`
    /// although `HostPattern::matches` (and the prefix rule's mirror image)
    /// require a non-empty label before the suffix.
    #[test]
    fn a_suffix_needs_a_label_before_it() {
        let spec = RouteSpec {
            source: "t".into(),
            hosts: vec![HostPattern::parse("*.foo").unwrap()],
            path: "/".into(),
            dest: None,
            proto: Proto::Http,
            upstreams: vec![],
            branch: None,
            role: None,
            cors: false,
        };
        let registry = UpstreamRegistry::new(
            ClientSettings {
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
            },
            1,
        );
        let (table, _) = build([&spec], &BuildOptions::default(), &registry, 1);
        assert!(matches!(
            table.lookup("a.foo", "/"),
            Lookup::Found(_, HostMatch::Suffix)
        ));
        assert!(matches!(table.lookup(".foo", "/"), Lookup::NoHost));
        assert!(matches!(table.lookup("foo", "/"), Lookup::NoHost));
    }
}
