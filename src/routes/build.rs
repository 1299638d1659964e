//! Building a [`RouteTable`] from provider specs. Pure: the same specs and
//! options give the same table, and nothing live is created or touched, so a
//! validation, a benchmark or a fuzz target can build as often as it likes.
//! Pools are named by [`PoolKey`]; the publisher pairs them with live pools.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::branch::{BranchSettings, build_index};
use super::host::{HostPattern, MAX_HOST_LEN, normalize_host};
use super::notes::{Note, NoteKind, Origin, Severity};
use super::policy::Policy;
use super::spec::RouteSpec;
use super::table::{HostRoutes, PathRoute, PoolId, RouteTable};
use crate::upstream::PoolKey;

/// Settings that shape a build but do not come from providers.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// `--default-host`: serves hosts that match nothing.
    pub default_host: Option<String>,
    /// `--branch-domain` and friends: branch environments on.
    pub branches: Option<BranchSettings>,
}

/// A built table and what the build wants an operator to see.
#[derive(Debug)]
pub struct Built {
    /// The table.
    pub table: RouteTable,
    /// Conflicts between specs and other findings; the build succeeded anyway.
    pub notes: Vec<Note>,
}

/// Gives each distinct pool one [`PoolId`], in first-use order.
#[derive(Default)]
pub(super) struct Pools {
    ids: BTreeMap<PoolKey, PoolId>,
    keys: Vec<PoolKey>,
}

impl Pools {
    pub(super) fn id(&mut self, key: PoolKey) -> PoolId {
        let next = PoolId(self.keys.len() as u32);
        *self.ids.entry(key).or_insert_with_key(|k| {
            self.keys.push(k.clone());
            next
        })
    }
}

/// Specs merged for one route: the first decides `dest` and `proto`, the
/// policies merge by [`Policy::merge`], the upstreams join.
pub(super) struct Merged<'s> {
    pub(super) first: &'s RouteSpec,
    pub(super) policy: Policy,
    pub(super) upstreams: Vec<SocketAddr>,
}

impl<'s> Merged<'s> {
    pub(super) fn new(first: &'s RouteSpec) -> Self {
        Self {
            first,
            policy: first.policy.clone(),
            upstreams: first.upstreams.clone(),
        }
    }

    /// Folds in a later spec for the same route, noting each disagreement.
    pub(super) fn add(&mut self, spec: &'s RouteSpec, route: &str, notes: &mut Vec<Note>) {
        let first = self.first;
        let mut conflict = |setting: String, mine: String, theirs: String, applies: String| {
            notes.push(Note {
                origin: Origin::Build,
                source: spec.source.clone(),
                severity: Severity::Warning,
                kind: NoteKind::Conflict,
                message: format!(
                    "{route}: {setting} {mine} differs from {theirs} of {}; {applies} applies",
                    first.source
                ),
            });
        };
        if spec.dest != first.dest {
            let show = |d: &Option<String>| d.as_deref().unwrap_or("-").to_owned();
            conflict(
                "dest".into(),
                show(&spec.dest),
                show(&first.dest),
                show(&first.dest),
            );
        }
        if spec.proto != first.proto {
            let p = first.proto.to_string();
            conflict("proto".into(), spec.proto.to_string(), p.clone(), p);
        }
        let before = self.policy.clone();
        for setting in self.policy.merge(&spec.policy) {
            conflict(
                setting.to_string(),
                spec.policy.show(setting),
                before.show(setting),
                self.policy.show(setting),
            );
        }
        self.upstreams.extend(spec.upstreams.iter().copied());
    }

    pub(super) fn route(self, name: String, prefix: &str, pools: &mut Pools) -> PathRoute {
        PathRoute {
            name: name.into(),
            prefix: prefix.into(),
            dest: self.first.dest.as_deref().map(Into::into),
            pool: pools.id(PoolKey::new(self.first.proto, self.upstreams)),
            policy: self.policy,
        }
    }
}

/// Builds a table from specs. Specs for one host and path merge by the
/// documented rule (see [`super::policy`]): the first in iteration order
/// decides `dest` and `proto` (providers hand specs in a documented,
/// deterministic order), protective settings take the strictest value, and
/// every upstream joins the pool. Each disagreement is a note.
pub fn build<'s>(
    specs: impl IntoIterator<Item = &'s RouteSpec> + Clone,
    opts: &BuildOptions,
    generation: u64,
) -> Built {
    let mut notes = Vec::new();
    let mut pools = Pools::default();
    let branches = opts
        .branches
        .as_ref()
        .map(|b| build_index(specs.clone(), b, &mut pools, &mut notes));
    // pattern text -> (pattern, path -> merged specs)
    let mut hosts: BTreeMap<String, (&'s HostPattern, BTreeMap<&'s str, Merged<'s>>)> =
        BTreeMap::new();
    for spec in specs {
        for pattern in &spec.hosts {
            let text = pattern.to_string();
            let (_, paths) = hosts
                .entry(text.clone())
                .or_insert_with(|| (pattern, BTreeMap::new()));
            match paths.entry(&spec.path) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(Merged::new(spec));
                }
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    e.get_mut()
                        .add(spec, &format!("{text}{}", spec.path), &mut notes);
                }
            }
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
            .map(|(prefix, merged)| merged.route(format!("{text}{prefix}"), prefix, &mut pools))
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
    table.pools = pools.keys.into();

    if let Some(default) = &opts.default_host {
        let mut buf = [0; MAX_HOST_LEN];
        let found = normalize_host(default, &mut buf).and_then(|h| table.find_entry(h));
        match found.map(|(routes, _)| routes.clone()) {
            Some(routes) => table.default = Some(routes),
            None => notes.push(Note {
                origin: Origin::Build,
                source: "--default-host".into(),
                severity: Severity::Warning,
                kind: NoteKind::DefaultHost,
                message: format!("default host {default} has no route yet; unknown hosts get 503"),
            }),
        }
    }
    Built { table, notes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::policy::HttpsMethod;
    use crate::routes::{HostMatch, Lookup, Proto};

    fn spec(source: &str, host: &str, port: u16) -> RouteSpec {
        RouteSpec {
            source: source.into(),
            hosts: vec![HostPattern::parse(host).unwrap()],
            path: "/".into(),
            dest: None,
            proto: Proto::Http,
            upstreams: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            branch: None,
            role: None,
            policy: Policy::default(),
        }
    }

    /// Found by `fuzz/fuzz_targets/lookup_diff.rs`: `.foo` matched `*.foo`
    /// although `HostPattern::matches` (and the prefix rule's mirror image)
    /// require a non-empty label before the suffix.
    #[test]
    fn a_suffix_needs_a_label_before_it() {
        let s = spec("t", "*.foo", 1);
        let table = build([&s], &BuildOptions::default(), 1).table;
        assert!(matches!(
            table.lookup("a.foo", "/"),
            Lookup::Found(_, HostMatch::Suffix)
        ));
        assert!(matches!(table.lookup(".foo", "/"), Lookup::NoHost));
        assert!(matches!(table.lookup("foo", "/"), Lookup::NoHost));
    }

    #[test]
    fn shared_routes_pool_their_upstreams_and_the_strictest_https_method_wins() {
        let mut a = spec("a", "app.foo.bar", 1);
        a.policy.https_method = Some(HttpsMethod::NoRedirect);
        a.dest = Some("/v1".into());
        let mut b = spec("b", "app.foo.bar", 2);
        b.policy.https_method = Some(HttpsMethod::NoHttp);
        b.dest = Some("/v2".into());
        // Either order: the strictest setting applies, the first spec's dest.
        for (first, second) in [(&a, &b), (&b, &a)] {
            let built = build([first, second], &BuildOptions::default(), 1);
            let Lookup::Found(route, _) = built.table.lookup("app.foo.bar", "/") else {
                panic!("no route")
            };
            assert_eq!(route.policy.https_method, Some(HttpsMethod::NoHttp));
            assert_eq!(route.dest, first.dest.as_deref().map(Into::into));
            let key = &built.table.pool_keys()[route.pool.index()];
            assert_eq!(key.addrs().len(), 2, "both upstreams serve");
            let conflicts: Vec<&str> = built.notes.iter().map(|n| n.message.as_str()).collect();
            assert_eq!(conflicts.len(), 2, "{conflicts:?}");
            assert!(
                conflicts.iter().all(|m| m.starts_with("app.foo.bar/: ")),
                "{conflicts:?}"
            );
            assert!(
                conflicts
                    .iter()
                    .any(|m| m.contains("https_method") && m.ends_with("nohttp applies")),
                "{conflicts:?}"
            );
            assert!(built.notes.iter().all(|n| n.source == second.source));
        }
    }

    #[test]
    fn routes_with_the_same_upstreams_share_one_pool() {
        let (a, b) = (spec("a", "a.foo", 1), spec("b", "b.foo", 1));
        let c = spec("c", "c.foo", 2);
        let t = build([&a, &b, &c], &BuildOptions::default(), 1).table;
        let id = |h| match t.lookup(h, "/") {
            Lookup::Found(r, _) => r.pool,
            _ => panic!("{h}"),
        };
        assert_eq!(id("a.foo"), id("b.foo"));
        assert_ne!(id("a.foo"), id("c.foo"));
        assert_eq!(t.pool_keys().len(), 2);
    }
}
