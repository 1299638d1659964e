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
use super::policy::{Policy, Setting};
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

/// The pools of a table being built, one per route, in order.
#[derive(Default)]
pub(super) struct Pools(Vec<PoolKey>);

impl Pools {
    pub(super) fn add(&mut self, key: PoolKey) -> PoolId {
        self.0.push(key);
        PoolId((self.0.len() - 1) as u32)
    }
}

/// Specs merged into one route: the first decides `dest` and `proto`, the
/// policies merge by [`Policy::merge`], the upstreams join.
pub(super) struct Merged<'s> {
    specs: Vec<&'s RouteSpec>,
    policy: Policy,
    upstreams: Vec<SocketAddr>,
}

impl<'s> Merged<'s> {
    pub(super) fn new(first: &'s RouteSpec) -> Self {
        Self {
            specs: vec![first],
            policy: first.policy.clone(),
            upstreams: first.upstreams.clone(),
        }
    }

    /// Folds in a later spec for the same route.
    pub(super) fn add(&mut self, spec: &'s RouteSpec) {
        self.policy.merge(&spec.policy);
        self.upstreams.extend(spec.upstreams.iter().copied());
        self.specs.push(spec);
    }

    /// The route, named `name`, at `prefix`; `dest` says whether
    /// `VIRTUAL_DEST` applies (never to branch members, which own their
    /// host). Every spec whose setting lost to the rule is noted once.
    pub(super) fn route(
        self,
        name: String,
        prefix: &str,
        dest: bool,
        pools: &mut Pools,
        notes: &mut Vec<Note>,
    ) -> PathRoute {
        let first = self.specs[0];
        let name: Arc<str> = name.into();
        let mut lost = |spec: &RouteSpec,
                        setting: &str,
                        theirs: String,
                        applied: String,
                        by: &str,
                        rule: &str| {
            notes.push(Note {
                origin: Origin::Build,
                source: spec.source.clone(),
                severity: Severity::Warning,
                kind: NoteKind::Conflict,
                message: format!(
                    "{name}: {setting} {theirs} of {} is overridden by {applied} of {by} ({rule})",
                    spec.source
                ),
            });
        };
        let show = |d: &Option<String>| d.as_deref().unwrap_or("-").to_owned();
        for spec in &self.specs[1..] {
            if dest && spec.dest != first.dest {
                let (theirs, applied) = (show(&spec.dest), show(&first.dest));
                lost(
                    spec,
                    "dest",
                    theirs,
                    applied,
                    &first.source,
                    "the first spec decides",
                );
            }
            if spec.proto != first.proto {
                let (theirs, applied) = (spec.proto.to_string(), first.proto.to_string());
                lost(
                    spec,
                    "proto",
                    theirs,
                    applied,
                    &first.source,
                    "the first spec decides",
                );
            }
        }
        for setting in Setting::ALL {
            let applied = self.policy.show(setting);
            // The first spec whose own value is the one that applies (the
            // merge only ever keeps some spec's value).
            let by = self
                .specs
                .iter()
                .find(|s| s.policy.same(setting, &self.policy))
                .map_or(&first.source, |s| &s.source);
            for spec in &self.specs {
                if !spec.policy.same(setting, &self.policy) {
                    lost(
                        spec,
                        &setting.to_string(),
                        spec.policy.show(setting),
                        applied.clone(),
                        by,
                        setting.rule(),
                    );
                }
            }
        }
        PathRoute {
            prefix: prefix.into(),
            dest: first.dest.as_deref().filter(|_| dest).map(Into::into),
            pool: pools.add(PoolKey::new(name, first.proto, self.upstreams)),
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
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().add(spec),
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
            .map(|(prefix, merged)| {
                merged.route(
                    format!("{text}{prefix}"),
                    prefix,
                    true,
                    &mut pools,
                    &mut notes,
                )
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
    table.pools = pools.0.into();

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
            // Each note is on the spec whose value lost, and names the winner.
            let note = |setting: &str| {
                let n = built
                    .notes
                    .iter()
                    .find(|n| n.message.contains(setting))
                    .unwrap();
                (n.source.as_str(), n.message.as_str())
            };
            assert_eq!(
                note("https_method"),
                (
                    "a",
                    "app.foo.bar/: https_method noredirect of a is overridden by nohttp of b (the strictest wins)"
                )
            );
            let (dest_source, dest) = note("dest");
            assert_eq!(dest_source, second.source);
            assert!(
                dest.ends_with(&format!("of {} (the first spec decides)", first.source)),
                "{dest}"
            );
        }
    }

    #[test]
    fn each_route_has_its_own_pool_over_shared_upstreams() {
        let (a, b) = (spec("a", "a.foo", 1), spec("b", "b.foo", 1));
        let t = build([&a, &b], &BuildOptions::default(), 1).table;
        let key = |h| match t.lookup(h, "/") {
            Lookup::Found(r, _) => t.pool_keys()[r.pool.index()].clone(),
            _ => panic!("{h}"),
        };
        // Each route balances on its own; the registry shares the upstreams.
        assert_ne!(key("a.foo"), key("b.foo"));
        assert_eq!(key("a.foo").addrs(), key("b.foo").addrs());
        assert_eq!(&**key("b.foo").route(), "b.foo/");
        assert_eq!(t.pool_keys().len(), 2);
    }

    #[test]
    fn branch_members_never_take_a_dest_and_merge_like_routes() {
        use crate::routes::{BranchSettings, Role};
        let member = |source: &str, port, dest: &str, https: HttpsMethod| {
            let mut s = spec(source, "x.foo", port);
            s.hosts.clear();
            s.branch = Some("main".into());
            s.role = Some(Role::Backend);
            s.dest = Some(dest.into());
            s.policy.https_method = Some(https);
            s
        };
        let a = member("a", 1, "/v1/", HttpsMethod::NoRedirect);
        let b = member("b", 2, "/v2/", HttpsMethod::NoHttp);
        let opts = BuildOptions {
            default_host: None,
            branches: Some(BranchSettings {
                domain: "env.foo".into(),
                api_prefixes: vec!["/api".into()],
                default_branch: "main".into(),
            }),
        };
        let built = build([&a, &b], &opts, 1);
        let Lookup::Found(route, HostMatch::Branch) =
            built.table.lookup("fe.main.env.foo", "/api/x")
        else {
            panic!("no member")
        };
        assert_eq!(route.dest, None, "a member owns its host: no VIRTUAL_DEST");
        assert_eq!(route.policy.https_method, Some(HttpsMethod::NoHttp));
        assert_eq!(built.table.pool_keys()[route.pool.index()].addrs().len(), 2);
        let messages: Vec<&str> = built.notes.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "backend main: https_method noredirect of a is overridden by nohttp of b (the strictest wins)"
            ]
        );
    }
}
