//! Differential: `RouteTable::lookup` agrees with a naive linear scan, branch
//! environments included.
//!
//! The fuzzer picks a few routes (host patterns over a small label alphabet,
//! so that they overlap and actually match, and paths from a small set), an
//! optional `--default-host`, optionally branch environments, and some
//! requests. Branch environments get a domain from the same alphabet (often
//! one of the generated patterns' names, so branch hosts collide with exact
//! and wildcard patterns), API prefixes (`/api`, sometimes also `/app1`) and a
//! default branch; some routes are then branch members (a branch name from a
//! small set whose slugs collide, such as `a`, `A`, `feature/a`, `feature-a`,
//! and a role), with or without host patterns of their own. Every route has
//! its own upstream port, which identifies it.
//!
//! For every request whose host `normalize_host` accepts, the model decides:
//! 1. an exact pattern (`HostPattern::matches`) names the host: that host;
//! 2. else, with branch environments on: the host equal to the domain is the
//!    matrix; a host that is `<fe>.<domain>` or `<fe>.<be>.<domain>` (one or
//!    two non-empty labels) asks the backends for `be` (the default branch's
//!    slug when there is no `be`) if the path is under an API prefix by whole
//!    segments, else the frontends for `fe`. If exactly one branch name of
//!    that role has that slug (by `slug`, the only code reused), the answer is
//!    that member, whose pool is the upstreams of every spec with that branch
//!    name and role, at path prefix `/`; otherwise (no such branch, or two
//!    names sharing the slug) it is that role and slug missing. Any other
//!    host goes on;
//! 3. else the longest `*.suffix`, then the longest `prefix.*`, then the first
//!    regex by source text, else the default host (itself resolved by steps 1
//!    and 3 only, as the build does); then the longest path prefix of that
//!    host that the request path starts with.
//!
//! The table must name the same host pattern, the same `HostMatch`, and the
//! same path prefix; or the same member (by its pool's addresses, with
//! `HostMatch::Branch`); or say `Matrix`, `MissingBranch` (same role and slug),
//! `NoHost` or `NoPath` exactly when the model does. The branch index must also
//! list exactly the model's members and slug conflicts per role.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use arbitrary::Arbitrary;
use branchgate::routes::{
    BranchSettings, BuildOptions, HostMatch, HostPattern, Lookup, MAX_HOST_LEN, Policy, Proto,
    Role, RouteSpec, build, normalize_host, slug,
};
use libfuzzer_sys::fuzz_target;

/// Bounds that keep one input small and fast.
const MAX_ROUTES: usize = 8;
const MAX_HOSTS: usize = 3;
const MAX_REQUESTS: usize = 16;
/// Host text pieces: labels (some uppercase, to exercise case folding) and
/// separators, so empty labels and trailing dots occur too.
const PIECES: &[&str] = &["a", "b", "foo", "bar", "x-1", "A", "FOO", ".", "."];
/// Simple host regexes over the same alphabet.
const REGEXES: &[&str] = &[
    "~^a\\.",
    "~^b\\.",
    "~foo$",
    "~^a\\.foo$",
    "~bar",
    "~^x-1\\.",
    "~\\.b\\.",
    "~^[ab]\\.",
];
/// `REGEXES` compiled once: compiling is by far the slowest part of an input.
static COMPILED: LazyLock<Vec<HostPattern>> = LazyLock::new(|| {
    REGEXES
        .iter()
        .map(|r| HostPattern::parse(r).expect("fixed regex parses"))
        .collect()
});
/// Route paths.
const ROUTE_PATHS: &[&str] = &["/", "/api", "/api/", "/app1/"];
/// Request paths: the route paths and near misses.
const REQUEST_PATHS: &[&str] = &[
    "/", "/api", "/api/", "/api/v1", "/apix", "/app1", "/app1/", "/app1/x", "", "x", "/x",
];
/// Request-host suffixes: nothing, a port, a bad port.
const TAILS: &[&str] = &["", "", ":8080", ".", ".:80", ":", ":x"];
/// Git branch names: several share a slug (`a`/`A`, `feature/a`/`feature-a`,
/// `main`/`Main`), some slugs are labels of `PIECES` (`a`, `b`, `foo`,
/// `x-1`), and `--` has no letter or digit (its slug is a hash).
const BRANCHES: &[&str] = &[
    "a",
    "A",
    "feature/a",
    "feature-a",
    "b",
    "main",
    "Main",
    "foo",
    "x_1",
    "--",
];
/// Branch-host labels besides the branches' slugs: an empty one, unknown
/// ones, an uppercase one.
const EXTRA_LABELS: &[&str] = &["", "x", "FOO", "bar", "feature"];
/// `--api-prefix` lists (as the config hands them: no trailing `/`).
const API_PREFIXES: &[&[&str]] = &[&["/api"], &["/api"], &["/app1", "/api"]];
/// Domain used to build branch-looking hosts when branch environments are off.
const FALLBACK_DOMAIN: &str = "foo.bar";

#[derive(Arbitrary, Debug)]
struct Name(Vec<u8>);

impl Name {
    fn text(&self) -> String {
        let mut s = String::new();
        for &i in self.0.iter().take(6) {
            let piece = PIECES[usize::from(i) % PIECES.len()];
            // Mostly join labels with dots; a piece that is itself "." adds an empty label.
            if !s.is_empty() && piece != "." && !s.ends_with('.') {
                s.push('.');
            }
            s.push_str(piece);
        }
        s
    }
}

#[derive(Arbitrary, Debug)]
enum PatternIn {
    Exact(Name),
    Suffix(Name),
    Prefix(Name),
    Regex(u8),
}

impl PatternIn {
    /// The pattern, or `None` where the generated text is not a valid one (`*.`).
    fn parse(&self) -> Option<HostPattern> {
        let text = match self {
            Self::Exact(n) => n.text(),
            Self::Suffix(n) => format!("*.{}", n.text()),
            Self::Prefix(n) => format!("{}.*", n.text()),
            Self::Regex(i) => return Some(COMPILED[usize::from(*i) % COMPILED.len()].clone()),
        };
        HostPattern::parse(&text).ok()
    }
}

/// Whether a route is a branch-environment member; only `Member` makes one.
#[derive(Arbitrary, Debug)]
enum MemberIn {
    No,
    /// Branch name (index into `BRANCHES`) and role (frontend when true).
    Member(u8, bool),
    /// A branch without a role: not a member.
    BranchOnly(u8),
    /// A role without a branch: not a member.
    RoleOnly(bool),
}

#[derive(Arbitrary, Debug)]
struct RouteIn {
    hosts: Vec<PatternIn>,
    path: u8,
    member: MemberIn,
}

#[derive(Arbitrary, Debug)]
enum DomainIn {
    /// Labels and separators, then a tail (normalised like `--branch-domain`).
    Built(Name, u8),
    /// The name of the `n`th generated pattern (an exact host, or what a
    /// wildcard is anchored to), so branch hosts overlap with patterns; when
    /// the flag is set, without its first label (an exact `a.foo.bar` gives
    /// `foo.bar`, under which the exact host is a branch host).
    Near(u8, bool),
}

#[derive(Arbitrary, Debug)]
struct BranchesIn {
    domain: DomainIn,
    api: u8,
    default_branch: u8,
}

/// What request hosts are generated from.
struct Ctx<'a> {
    patterns: Vec<&'a PatternIn>,
    /// The branch domain, or `FALLBACK_DOMAIN` when branches are off.
    domain: String,
}

impl<'a> Ctx<'a> {
    fn new(routes: &'a [RouteIn]) -> Self {
        Self {
            patterns: routes
                .iter()
                .take(MAX_ROUTES)
                .flat_map(|r| r.hosts.iter().take(MAX_HOSTS))
                .collect(),
            domain: FALLBACK_DOMAIN.to_owned(),
        }
    }

    fn pattern(&self, i: u8) -> Option<&'a PatternIn> {
        self.patterns
            .get(usize::from(i) % self.patterns.len().max(1))
            .copied()
    }
}

#[derive(Arbitrary, Debug)]
enum HostIn {
    /// Labels and separators, then a tail (port, trailing dot).
    Built(Name, u8),
    /// A host derived from the `n`th generated pattern so that exact and
    /// wildcard patterns are hit often: the exact name itself, or `extra`
    /// put where the wildcard is.
    Near(u8, Name),
    /// `<fe>.<domain>` or `<fe>.<be>.<domain>` with labels from the branch
    /// slugs and `EXTRA_LABELS`, then a tail.
    Branch(u8, Option<u8>, u8),
    /// The branch domain itself, optionally one label deeper than a branch
    /// host (`x.<fe>.<be>.<domain>`), then a tail.
    Domain(bool, u8),
    /// Anything at all.
    Raw(String),
}

fn branch_label(i: u8) -> String {
    let i = usize::from(i) % (BRANCHES.len() + EXTRA_LABELS.len());
    match BRANCHES.get(i) {
        Some(b) => slug(b),
        None => EXTRA_LABELS[i - BRANCHES.len()].to_owned(),
    }
}

impl HostIn {
    fn text(&self, ctx: &Ctx<'_>) -> String {
        match self {
            Self::Built(n, tail) => n.text() + TAILS[usize::from(*tail) % TAILS.len()],
            Self::Near(i, extra) => match ctx.pattern(*i) {
                Some(PatternIn::Exact(n)) => n.text(),
                Some(PatternIn::Suffix(n)) => format!("{}.{}", extra.text(), n.text()),
                Some(PatternIn::Prefix(n)) => format!("{}.{}", n.text(), extra.text()),
                Some(PatternIn::Regex(_)) | None => extra.text(),
            },
            Self::Branch(fe, be, tail) => {
                let mut s = branch_label(*fe);
                if let Some(be) = be {
                    s.push('.');
                    s.push_str(&branch_label(*be));
                }
                format!(
                    "{s}.{}{}",
                    ctx.domain,
                    TAILS[usize::from(*tail) % TAILS.len()]
                )
            }
            Self::Domain(deeper, tail) => format!(
                "{}{}{}",
                if *deeper { "x.a.b." } else { "" },
                ctx.domain,
                TAILS[usize::from(*tail) % TAILS.len()]
            ),
            Self::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<RouteIn>,
    default_host: Option<HostIn>,
    branches: Option<BranchesIn>,
    requests: Vec<(HostIn, u8)>,
}

/// The reference for branch hosts.
#[derive(Debug)]
struct BranchModel {
    domain: String,
    api_prefixes: &'static [&'static str],
    default_branch: &'static str,
    /// Role, branch name and upstream port of every member spec.
    members: Vec<(Role, &'static str, u16)>,
}

impl BranchModel {
    /// Branch names of `role` whose slug is `want`.
    fn names(&self, role: Role, want: &str) -> BTreeSet<&'static str> {
        self.members
            .iter()
            .filter(|(r, name, _)| *r == role && slug(name) == want)
            .map(|(_, name, _)| *name)
            .collect()
    }

    /// True when the path's segments begin with an API prefix's segments.
    fn is_api(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.split('/').collect();
        self.api_prefixes
            .iter()
            .any(|p| segments.starts_with(&p.split('/').collect::<Vec<_>>()))
    }

    /// The answer for a host under the branch domain, `None` for any other.
    fn lookup(&self, host: &str, path: &str) -> Option<ModelLookup> {
        if host == self.domain {
            return Some(ModelLookup::Matrix);
        }
        let rest = host.strip_suffix(&format!(".{}", self.domain))?;
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() > 2 || labels.iter().any(|l| l.is_empty()) {
            return None;
        }
        let (role, want) = if self.is_api(path) {
            let be = labels
                .get(1)
                .map_or_else(|| slug(self.default_branch), |be| (*be).to_owned());
            (Role::Backend, be)
        } else {
            (Role::Frontend, labels[0].to_owned())
        };
        let names = self.names(role, &want);
        let [name] = names.into_iter().collect::<Vec<_>>()[..] else {
            return Some(ModelLookup::Missing(role, want));
        };
        Some(ModelLookup::Member(
            self.members
                .iter()
                .filter(|(r, n, _)| *r == role && *n == name)
                .map(|(_, _, port)| *port)
                .collect(),
        ))
    }
}

/// The reference: every distinct pattern (by `Display`) with its paths.
struct Model {
    hosts: BTreeMap<String, (HostPattern, BTreeSet<&'static str>)>,
    default: Option<(String, HostMatch)>,
    branches: Option<BranchModel>,
}

impl Model {
    /// Linear scan in precedence order; returns the pattern text and the rule.
    fn find_host(&self, host: &str) -> Option<(String, HostMatch)> {
        let matching = || {
            self.hosts
                .iter()
                .filter(|(_, (p, _))| p.matches(host))
                .map(|(text, (p, _))| (text, p))
        };
        if let Some((text, _)) = matching().find(|(_, p)| matches!(p, HostPattern::Exact(_))) {
            return Some((text.clone(), HostMatch::Exact));
        }
        let longest = |want: fn(&HostPattern) -> Option<&str>| {
            matching()
                .filter_map(|(text, p)| want(p).map(|s| (s.len(), text)))
                .max_by_key(|(len, _)| *len)
                .map(|(_, text)| text.clone())
        };
        if let Some(text) = longest(|p| match p {
            HostPattern::Suffix(s) => Some(s),
            _ => None,
        }) {
            return Some((text, HostMatch::Suffix));
        }
        if let Some(text) = longest(|p| match p {
            HostPattern::Prefix(s) => Some(s),
            _ => None,
        }) {
            return Some((text, HostMatch::Prefix));
        }
        // BTreeMap order is Display order, so the first regex is the smallest source.
        matching()
            .find(|(_, p)| matches!(p, HostPattern::Regex(_)))
            .map(|(text, _)| (text.clone(), HostMatch::Regex))
    }

    fn lookup(&self, host: &str, path: &str) -> ModelLookup {
        let exact = self
            .hosts
            .values()
            .any(|(p, _)| matches!(p, HostPattern::Exact(_)) && p.matches(host));
        if !exact && let Some(answer) = self.branches.as_ref().and_then(|b| b.lookup(host, path)) {
            return answer;
        }
        let Some((text, how)) = self.find_host(host).or_else(|| {
            self.default
                .as_ref()
                .map(|(text, _)| (text.clone(), HostMatch::Default))
        }) else {
            return ModelLookup::NoHost;
        };
        let paths = &self.hosts[&text].1;
        match paths
            .iter()
            .filter(|p| path.starts_with(**p))
            .max_by_key(|p| p.len())
        {
            Some(prefix) => ModelLookup::Found(text, how, prefix),
            None => ModelLookup::NoPath,
        }
    }
}

#[derive(Debug, PartialEq)]
enum ModelLookup {
    Found(String, HostMatch, &'static str),
    /// A branch member (`HostMatch::Branch`, prefix `/`), by its upstream ports.
    Member(BTreeSet<u16>),
    Matrix,
    Missing(Role, String),
    NoPath,
    NoHost,
}

fn normalized(raw: &str) -> Option<String> {
    let mut buf = [0u8; MAX_HOST_LEN];
    normalize_host(raw, &mut buf).map(str::to_owned)
}

/// As `--branch-domain` accepts it: a normalised name with a dot, not an IP literal.
fn branch_domain(raw: &str) -> Option<String> {
    normalized(raw).filter(|h| h.contains('.') && !h.starts_with('['))
}

fn port(i: usize) -> u16 {
    9000 + i as u16
}

fuzz_target!(|input: Input| {
    let mut specs = Vec::new();
    let mut model = Model {
        hosts: BTreeMap::new(),
        default: None,
        branches: None,
    };
    let mut members = Vec::new();
    for (i, route) in input.routes.iter().take(MAX_ROUTES).enumerate() {
        let path = ROUTE_PATHS[usize::from(route.path) % ROUTE_PATHS.len()];
        let hosts: Vec<HostPattern> = route
            .hosts
            .iter()
            .take(MAX_HOSTS)
            .filter_map(PatternIn::parse)
            .collect();
        for h in &hosts {
            model
                .hosts
                .entry(h.to_string())
                .or_insert_with(|| (h.clone(), BTreeSet::new()))
                .1
                .insert(path);
        }
        let branch = |b: u8| BRANCHES[usize::from(b) % BRANCHES.len()];
        let role = |frontend: bool| {
            if frontend {
                Role::Frontend
            } else {
                Role::Backend
            }
        };
        let (branch, role) = match route.member {
            MemberIn::No => (None, None),
            MemberIn::Member(b, fe) => {
                members.push((role(fe), branch(b), port(i)));
                (Some(branch(b)), Some(role(fe)))
            }
            MemberIn::BranchOnly(b) => (Some(branch(b)), None),
            MemberIn::RoleOnly(fe) => (None, Some(role(fe))),
        };
        specs.push(RouteSpec {
            source: format!("fuzz:{i}"),
            hosts,
            path: path.to_owned(),
            dest: None,
            proto: Proto::Http,
            upstreams: vec![([127, 0, 0, 1], port(i)).into()],
            branch: branch.map(str::to_owned),
            role,
            policy: Policy::default(),
        });
    }

    let mut ctx = Ctx::new(&input.routes);
    let branches = input.branches.as_ref().and_then(|b| {
        let raw = match &b.domain {
            DomainIn::Built(n, tail) => n.text() + TAILS[usize::from(*tail) % TAILS.len()],
            DomainIn::Near(i, parent) => {
                let name = match ctx.pattern(*i) {
                    Some(PatternIn::Exact(n) | PatternIn::Suffix(n)) => n.text(),
                    Some(PatternIn::Prefix(n)) => format!("{}.foo", n.text()),
                    Some(PatternIn::Regex(_)) | None => FALLBACK_DOMAIN.to_owned(),
                };
                match name.split_once('.') {
                    Some((_, rest)) if *parent => rest.to_owned(),
                    _ => name,
                }
            }
        };
        let domain = branch_domain(&raw)?;
        Some(BranchSettings {
            domain,
            api_prefixes: API_PREFIXES[usize::from(b.api) % API_PREFIXES.len()]
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            default_branch: BRANCHES[usize::from(b.default_branch) % BRANCHES.len()].to_owned(),
        })
    });
    if let Some((b, settings)) = input.branches.as_ref().zip(branches.as_ref()) {
        ctx.domain = settings.domain.clone();
        model.branches = Some(BranchModel {
            domain: settings.domain.clone(),
            api_prefixes: API_PREFIXES[usize::from(b.api) % API_PREFIXES.len()],
            default_branch: BRANCHES[usize::from(b.default_branch) % BRANCHES.len()],
            members,
        });
    }

    let default_host = input.default_host.as_ref().map(|h| h.text(&ctx));
    model.default = default_host
        .as_deref()
        .and_then(normalized)
        .and_then(|h| model.find_host(&h));

    let opts = BuildOptions {
        default_host,
        branches,
    };
    let table = build(&specs, &opts, 1).table;
    assert_eq!(
        table.host_count(),
        model.hosts.len(),
        "distinct host patterns"
    );

    // The index holds exactly the model's members and conflicts.
    match (&model.branches, table.branches()) {
        (None, None) => {}
        (Some(bm), Some(index)) => {
            assert_eq!(index.domain(), bm.domain);
            for role in [Role::Frontend, Role::Backend] {
                let mut by_slug: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
                for (_, name, _) in bm.members.iter().filter(|(r, _, _)| *r == role) {
                    by_slug.entry(slug(name)).or_default().insert(name);
                }
                let want_list: Vec<(&str, &str)> = by_slug
                    .iter()
                    .filter(|(_, names)| names.len() == 1)
                    .map(|(s, names)| (s.as_str(), *names.first().expect("one name")))
                    .collect();
                let want_conflicts: Vec<(&str, Vec<&str>)> = by_slug
                    .iter()
                    .filter(|(_, names)| names.len() > 1)
                    .map(|(s, names)| (s.as_str(), names.iter().copied().collect()))
                    .collect();
                let members = index.members(role);
                assert_eq!(members.list(), want_list, "{role} members");
                let conflicts: Vec<(&str, Vec<&str>)> = members
                    .conflicts()
                    .iter()
                    .map(|(s, names)| (&**s, names.iter().map(String::as_str).collect()))
                    .collect();
                assert_eq!(conflicts, want_conflicts, "{role} slug conflicts");
            }
        }
        (want, got) => panic!("branch index: model {want:?}, table {got:?}"),
    }

    for (host_in, path_i) in input.requests.iter().take(MAX_REQUESTS) {
        let raw = host_in.text(&ctx);
        let Some(host) = normalized(&raw) else {
            continue;
        };
        let path = REQUEST_PATHS[usize::from(*path_i) % REQUEST_PATHS.len()];
        let want = model.lookup(&host, path);
        let index = || table.branches().expect("branch answer without an index");
        let got = match table.lookup(&host, path) {
            Lookup::Found(route, HostMatch::Branch) => {
                assert_eq!(&*route.prefix, "/", "a branch member routes at `/`");
                ModelLookup::Member(
                    table.pool_keys()[route.pool.index()]
                        .addrs()
                        .iter()
                        .map(|a| a.port())
                        .collect(),
                )
            }
            Lookup::Found(route, how) => {
                let routes = if how == HostMatch::Default {
                    let d = normalized(opts.default_host.as_deref().expect("default used"))
                        .expect("default host normalises");
                    table.find_host(&d).expect("default host resolves").0
                } else {
                    let (routes, found_how) = table
                        .find_host(&host)
                        .expect("lookup found, find_host agrees");
                    assert_eq!(found_how, how);
                    routes
                };
                assert!(
                    std::ptr::eq(route, routes.find_path(path).expect("path found")),
                    "lookup and find_host/find_path disagree"
                );
                ModelLookup::Found(
                    routes.pattern.to_string(),
                    how,
                    ROUTE_PATHS
                        .iter()
                        .find(|p| **p == &*route.prefix)
                        .expect("prefix is a route path"),
                )
            }
            Lookup::NoPath => ModelLookup::NoPath,
            Lookup::NoHost => ModelLookup::NoHost,
            Lookup::Matrix(i) => {
                assert!(std::ptr::eq(i, index()), "the table's own index");
                ModelLookup::Matrix
            }
            Lookup::MissingBranch {
                index: i,
                role,
                slug,
            } => {
                assert!(std::ptr::eq(i, index()), "the table's own index");
                ModelLookup::Missing(role, slug.to_owned())
            }
        };
        assert_eq!(
            got,
            want,
            "request {raw:?} (normalised {host:?}) path {path:?}; patterns {:?}; default {:?}; \
             branches {:?}",
            model.hosts.keys().collect::<Vec<_>>(),
            opts.default_host,
            model.branches,
        );
    }
});
