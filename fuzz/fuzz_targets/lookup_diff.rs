//! Differential: `RouteTable::lookup` agrees with a naive linear scan.
//!
//! The fuzzer picks a few routes (host patterns over a small label alphabet,
//! so that they overlap and actually match, and paths from a small set), an
//! optional `--default-host`, and some requests. For every request whose host
//! `normalize_host` accepts, the model scans all patterns with
//! `HostPattern::matches` and picks by precedence: exact, then the longest
//! `*.suffix`, then the longest `prefix.*`, then the first regex by source
//! text, else the default host (itself resolved by the same scan); then the
//! longest path prefix of that host that the request path starts with. The
//! table must name the same host pattern, the same `HostMatch`, and the same
//! path prefix, or say `NoHost` / `NoPath` exactly when the model does.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use branchgate::proxy::upstream::{ClientSettings, UpstreamRegistry};
use branchgate::routes::{
    BuildOptions, HostMatch, HostPattern, Lookup, MAX_HOST_LEN, Proto, RouteSpec, build,
    normalize_host,
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

#[derive(Arbitrary, Debug)]
struct RouteIn {
    hosts: Vec<PatternIn>,
    path: u8,
}

#[derive(Arbitrary, Debug)]
enum HostIn {
    /// Labels and separators, then a tail (port, trailing dot).
    Built(Name, u8),
    /// A host derived from the `n`th generated pattern so that exact and
    /// wildcard patterns are hit often: the exact name itself, or `extra`
    /// put where the wildcard is.
    Near(u8, Name),
    /// Anything at all.
    Raw(String),
}

impl HostIn {
    fn text(&self, routes: &[RouteIn]) -> String {
        match self {
            Self::Built(n, tail) => n.text() + TAILS[usize::from(*tail) % TAILS.len()],
            Self::Near(i, extra) => {
                let patterns: Vec<&PatternIn> = routes
                    .iter()
                    .take(MAX_ROUTES)
                    .flat_map(|r| r.hosts.iter().take(MAX_HOSTS))
                    .collect();
                match patterns.get(usize::from(*i) % patterns.len().max(1)) {
                    Some(PatternIn::Exact(n)) => n.text(),
                    Some(PatternIn::Suffix(n)) => format!("{}.{}", extra.text(), n.text()),
                    Some(PatternIn::Prefix(n)) => format!("{}.{}", n.text(), extra.text()),
                    Some(PatternIn::Regex(_)) | None => extra.text(),
                }
            }
            Self::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<RouteIn>,
    default_host: Option<HostIn>,
    requests: Vec<(HostIn, u8)>,
}

/// The reference: every distinct pattern (by `Display`) with its paths.
struct Model {
    hosts: BTreeMap<String, (HostPattern, BTreeSet<&'static str>)>,
    default: Option<(String, HostMatch)>,
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
    NoPath,
    NoHost,
}

fn normalized(raw: &str) -> Option<String> {
    let mut buf = [0u8; MAX_HOST_LEN];
    normalize_host(raw, &mut buf).map(str::to_owned)
}

fuzz_target!(|input: Input| {
    let mut specs = Vec::new();
    let mut model = Model {
        hosts: BTreeMap::new(),
        default: None,
    };
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
        specs.push(RouteSpec {
            source: format!("fuzz:{i}"),
            hosts,
            path: path.to_owned(),
            dest: None,
            proto: Proto::Http,
            upstreams: vec![([127, 0, 0, 1], 9000 + i as u16).into()],
            branch: None,
            role: None,
            cors: false,
        });
    }
    let default_host = input.default_host.as_ref().map(|h| h.text(&input.routes));
    model.default = default_host
        .as_deref()
        .and_then(normalized)
        .and_then(|h| model.find_host(&h));

    let registry = UpstreamRegistry::new(
        ClientSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        },
        1,
    );
    let opts = BuildOptions {
        default_host,
        ..BuildOptions::default()
    };
    let (table, _warnings) = build(&specs, &opts, &registry, 1);
    assert_eq!(
        table.host_count(),
        model.hosts.len(),
        "distinct host patterns"
    );

    for (host_in, path_i) in input.requests.iter().take(MAX_REQUESTS) {
        let raw = host_in.text(&input.routes);
        let Some(host) = normalized(&raw) else {
            continue;
        };
        let path = REQUEST_PATHS[usize::from(*path_i) % REQUEST_PATHS.len()];
        let want = model.lookup(&host, path);
        let got = match table.lookup(&host, path) {
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
            // This target builds no branch index.
            Lookup::Matrix(_) | Lookup::MissingBranch { .. } => {
                unreachable!("branch lookup without --branch-domain")
            }
        };
        assert_eq!(
            got,
            want,
            "request {raw:?} (normalised {host:?}) path {path:?}; patterns {:?}; default {:?}",
            model.hosts.keys().collect::<Vec<_>>(),
            opts.default_host,
        );
    }
});
