//! The immutable route table and its lookup.
//!
//! One [`RouteTable`] is the whole routing truth at one instant: hosts, paths,
//! the branch index and the pools routes go to, as plain [`PoolKey`]s. It is
//! built from provider specs off the hot path ([`super::build`]) and published
//! whole inside a [`Snapshot`](super::Snapshot), which pairs each key with its
//! live pool; the proxy reads it with one `ArcSwap::load` per request.
//!
//! Lookup order, first match wins: exact host, branch environment, longest
//! `*.suffix`, longest `prefix.*`, regexes ordered by their source text, then
//! `--default-host`.
//! Exact and wildcard lookups are hash probes, one per label of the request
//! host, so their cost does not depend on how many routes exist.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::branch::{BranchIndex, BranchLookup};
use super::host::HostRegex;
use super::policy::Policy;
use super::spec::Role;
use crate::hash::FastMap;
use crate::upstream::PoolKey;

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

/// Index of a pool in its table ([`RouteTable::pool_keys`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub(super) u32);

impl PoolId {
    /// The index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One path rule under a host (or one branch member).
#[derive(Debug)]
pub struct PathRoute {
    /// The path prefix (`VIRTUAL_PATH`).
    pub prefix: Box<str>,
    /// What replaces the prefix upstream (`VIRTUAL_DEST`).
    pub dest: Option<Box<str>>,
    /// Where requests go; its [`PoolKey`] also names the route
    /// (`app.foo.bar/api/`, `frontend feature/login`).
    pub pool: PoolId,
    /// What the route demands before forwarding.
    pub policy: Policy,
}

/// Every path rule of one host pattern, longest prefix first.
#[derive(Debug)]
pub struct HostRoutes {
    /// The pattern as written in canonical form (`*.foo.bar`, `app.foo.bar`).
    pub pattern: Box<str>,
    pub(super) paths: Box<[PathRoute]>,
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
pub enum Lookup<'a, 'h> {
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
        slug: &'h str,
    },
}

/// An immutable snapshot of all routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub(super) generation: u64,
    pub(super) exact: FastMap<Box<str>, Arc<HostRoutes>>,
    pub(super) suffix: FastMap<Box<str>, Arc<HostRoutes>>,
    pub(super) prefix: FastMap<Box<str>, Arc<HostRoutes>>,
    pub(super) regex: Vec<(Box<HostRegex>, Arc<HostRoutes>)>,
    pub(super) default: Option<Arc<HostRoutes>>,
    pub(super) branches: Option<BranchIndex>,
    /// Every pool a route goes to; a route's [`PoolId`] indexes this.
    pub(super) pools: Box<[PoolKey]>,
}

impl RouteTable {
    /// Publish counter of this snapshot (0 for the initial empty table).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The `--default-host` rule, if any.
    pub fn default_host(&self) -> Option<&HostRoutes> {
        self.default.as_deref()
    }

    /// Finds the host rule for an already normalised host.
    pub fn find_host(&self, host: &str) -> Option<(&HostRoutes, HostMatch)> {
        self.find_entry(host).map(|(r, how)| (&**r, how))
    }

    pub(super) fn find_entry(&self, host: &str) -> Option<(&Arc<HostRoutes>, HostMatch)> {
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
    pub fn lookup<'a, 'h>(&'a self, host: &'h str, path: &str) -> Lookup<'a, 'h>
    where
        'a: 'h,
    {
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
        self.host_routes().map(|r| &*r.pattern).collect()
    }

    /// Every deployed branch member as `frontend feature-x` / `backend main`.
    pub fn branch_members(&self) -> BTreeSet<String> {
        let Some(index) = self.branches() else {
            return BTreeSet::new();
        };
        [(Role::Frontend, "frontend"), (Role::Backend, "backend")]
            .into_iter()
            .flat_map(|(role, name)| {
                index
                    .members(role)
                    .list()
                    .into_iter()
                    .map(move |(slug, _)| format!("{name} {slug}"))
            })
            .collect()
    }

    /// Every host rule: exact, wildcard and regex ones (not the default host).
    pub fn host_routes(&self) -> impl Iterator<Item = &HostRoutes> {
        self.exact
            .values()
            .chain(self.suffix.values())
            .chain(self.prefix.values())
            .chain(self.regex.iter().map(|(_, r)| r))
            .map(|r| &**r)
    }

    /// The exact host names in the table.
    pub fn exact_hosts(&self) -> impl Iterator<Item = &str> {
        self.exact.keys().map(|h| &**h)
    }

    /// The pools routes go to, indexed by [`PoolId`].
    pub fn pool_keys(&self) -> &[PoolKey] {
        &self.pools
    }

    /// The branch index, when branch environments are on.
    pub fn branches(&self) -> Option<&BranchIndex> {
        self.branches.as_ref()
    }

    /// Number of host patterns.
    pub fn host_count(&self) -> usize {
        self.exact.len() + self.suffix.len() + self.prefix.len() + self.regex.len()
    }
}
