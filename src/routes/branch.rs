//! Branch environments: git branch names → DNS labels (slugs), and the index
//! that routes `<fe>.<be>.DOMAIN` and `<fe>.DOMAIN`.
//!
//! The index is part of the [`RouteTable`](super::RouteTable) snapshot, built
//! from the same specs in the same publish, so a branch container's
//! combinations go live with the same latency as any route. Lookups are two
//! hash probes whatever the number of branches.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::build::{Merged, Pools};
use super::notes::{Note, NoteKind, Origin, Severity};
use super::spec::{Role, RouteSpec};
use super::table::PathRoute;

/// Longest DNS label.
const MAX_LABEL: usize = 63;

/// `--branch-domain`, `--api-prefix`, `--default-branch`.
#[derive(Clone, Debug)]
pub struct BranchSettings {
    /// The branch domain (`foo.bar`), normalised.
    pub domain: String,
    /// API path prefixes (`/api`), without a trailing `/`.
    pub api_prefixes: Vec<String>,
    /// Backend branch for `<fe>.DOMAIN` API paths (the git name, e.g. `main`).
    pub default_branch: String,
}

/// Turns a git branch name into a DNS label: lowercase; every run of
/// characters outside `[a-z0-9]` (including non-ASCII) becomes one `-`;
/// leading and trailing `-` trimmed. A result over 63 characters is cut and
/// ends in `-` plus 8 hex digits of a hash of the whole name, so long names
/// that share a beginning stay apart; a name with no ASCII letter or digit at
/// all is the hash alone. `feature/Login_v2` → `feature-login-v2`.
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(MAX_LABEL));
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        return format!("{:08x}", fnv1a(name));
    }
    if out.len() > MAX_LABEL {
        out.truncate(MAX_LABEL - 9);
        while out.ends_with('-') {
            out.pop();
        }
        let _ = write!(out, "-{:08x}", fnv1a(name));
    }
    out
}

/// FNV-1a, 32 bits: small, stable across releases and platforms.
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The deployed members of one role, by slug.
#[derive(Debug, Default)]
pub struct Members {
    by_slug: crate::hash::FastMap<Box<str>, Member>,
    /// Slugs claimed by more than one branch name: served by none of them.
    conflicts: BTreeMap<Box<str>, Vec<String>>,
}

/// One deployed branch of one role: its pool.
#[derive(Debug)]
pub struct Member {
    /// The git branch name behind the slug.
    pub branch: Box<str>,
    /// Where its requests go (prefix `/`).
    pub route: PathRoute,
}

impl Members {
    /// `(slug, branch)` of every deployed member, sorted by slug.
    pub fn list(&self) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = self
            .by_slug
            .iter()
            .map(|(s, m)| (&**s, &*m.branch))
            .collect();
        v.sort_unstable();
        v
    }

    /// Every deployed member with its slug, sorted by slug.
    pub fn iter(&self) -> Vec<(&str, &Member)> {
        let mut v: Vec<(&str, &Member)> = self.by_slug.iter().map(|(s, m)| (&**s, m)).collect();
        v.sort_unstable_by_key(|(s, _)| *s);
        v
    }

    /// Slugs two or more branch names map to, with those names.
    pub fn conflicts(&self) -> &BTreeMap<Box<str>, Vec<String>> {
        &self.conflicts
    }
}

/// Routing for hosts under the branch domain.
#[derive(Debug)]
pub struct BranchIndex {
    domain: Box<str>,
    api_prefixes: Box<[Box<str>]>,
    default_slug: Box<str>,
    /// Frontend members.
    pub frontends: Members,
    /// Backend members.
    pub backends: Members,
}

/// What a host under the branch domain resolves to.
#[derive(Debug)]
pub enum BranchLookup<'a, 'h> {
    /// Not under the branch domain (or deeper than `<fe>.<be>`).
    NotBranch,
    /// The domain itself: the environment matrix.
    Matrix,
    /// A deployed member's route.
    Member(&'a PathRoute),
    /// The named branch of this role is not deployed (or its slug is claimed twice).
    Missing {
        /// Which role was asked for.
        role: Role,
        /// The slug in the host (or the default branch's).
        slug: &'h str,
    },
}

impl BranchIndex {
    /// The branch domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The first API prefix (`/api`): a path that goes to the backend.
    pub fn api_prefix(&self) -> &str {
        self.api_prefixes.first().map_or("/api", |p| p)
    }

    /// True when `path` is under an API prefix, by whole segments (`/api`,
    /// `/api/x`, not `/apix`).
    pub fn is_api(&self, path: &str) -> bool {
        self.api_prefixes.iter().any(|p| {
            path.strip_prefix(&**p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// Resolves a normalised host and a path.
    pub fn lookup<'a, 'h>(&'a self, host: &'h str, path: &str) -> BranchLookup<'a, 'h>
    where
        'a: 'h,
    {
        if host == &*self.domain {
            return BranchLookup::Matrix;
        }
        let Some(labels) = host
            .strip_suffix(&*self.domain)
            .and_then(|l| l.strip_suffix('.'))
        else {
            return BranchLookup::NotBranch;
        };
        let (fe, be) = match labels.split_once('.') {
            Some((fe, be)) if !be.contains('.') => (fe, Some(be)),
            Some(_) => return BranchLookup::NotBranch,
            None => (labels, None),
        };
        if fe.is_empty() || be.is_some_and(str::is_empty) {
            return BranchLookup::NotBranch;
        }
        let (role, members, slug) = if self.is_api(path) {
            (
                Role::Backend,
                &self.backends,
                be.unwrap_or(&self.default_slug),
            )
        } else {
            (Role::Frontend, &self.frontends, fe)
        };
        match members.by_slug.get(slug) {
            Some(m) => BranchLookup::Member(&m.route),
            None => BranchLookup::Missing { role, slug },
        }
    }

    /// The members of a role.
    pub fn members(&self, role: Role) -> &Members {
        match role {
            Role::Frontend => &self.frontends,
            Role::Backend => &self.backends,
        }
    }
}

/// Collects branch members from specs into an index. Members with the same
/// role and branch are one route (merged as specs sharing a host are); two
/// different branch names with one slug are a conflict, reported as a note,
/// and neither is served under it.
pub(super) fn build_index<'s>(
    specs: impl IntoIterator<Item = &'s RouteSpec>,
    settings: &BranchSettings,
    pools: &mut Pools,
    notes: &mut Vec<Note>,
) -> BranchIndex {
    // (role, slug) -> branch name -> merged members
    let mut acc: BTreeMap<(Role, String), BTreeMap<String, Merged<'s>>> = BTreeMap::new();
    for spec in specs {
        let (Some(branch), Some(role)) = (&spec.branch, spec.role) else {
            continue;
        };
        let names = acc.entry((role, slug(branch))).or_default();
        match names.entry(branch.clone()) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(Merged::new(spec));
            }
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().add(spec),
        }
    }
    let mut index = BranchIndex {
        domain: settings.domain.clone().into(),
        api_prefixes: settings
            .api_prefixes
            .iter()
            .map(|p| p.trim_end_matches('/').into())
            .collect(),
        default_slug: slug(&settings.default_branch).into(),
        frontends: Members::default(),
        backends: Members::default(),
    };
    for ((role, slug), names) in acc {
        let members = match role {
            Role::Frontend => &mut index.frontends,
            Role::Backend => &mut index.backends,
        };
        if names.len() > 1 {
            let list: Vec<String> = names.into_keys().collect();
            notes.push(Note {
                origin: Origin::Build,
                source: format!("branch slug {slug}"),
                severity: Severity::Warning,
                kind: NoteKind::Conflict,
                message: format!(
                    "{role} branches {} all become {slug}.{}; none of them is served there until one is renamed",
                    list.join(", "),
                    settings.domain
                ),
            });
            members.conflicts.insert(slug.into(), list);
            continue;
        }
        let (branch, merged) = names.into_iter().next().expect("one name");
        let route = merged.route(format!("{role} {branch}"), "/", false, pools, notes);
        members.by_slug.insert(
            slug.into(),
            Member {
                branch: branch.into(),
                route,
            },
        );
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("feature/Login_v2"), "feature-login-v2");
        assert_eq!(slug("main"), "main");
        assert_eq!(slug("--Fix//Bug--"), "fix-bug");
        assert_eq!(slug("feature/ünïcode-ß"), "feature-n-code");
        assert_eq!(slug("日本語"), format!("{:08x}", fnv1a("日本語")));
        assert_eq!(slug("release/1.2.3"), "release-1-2-3");

        let long_a = format!("feature/{}", "a".repeat(200));
        let long_b = format!("feature/{}b", "a".repeat(199));
        let (a, b) = (slug(&long_a), slug(&long_b));
        assert_eq!(a.len(), 63);
        assert!(b.len() <= 63);
        assert_ne!(a, b, "cut names keep apart by their hash");
        assert!(a.starts_with("feature-aaaa"));
        assert_eq!(a, slug(&long_a), "stable");
        // A cut never leaves a double dash before the hash.
        let dashy = format!("{}/{}", "a".repeat(53), "b".repeat(20));
        assert!(!slug(&dashy).contains("--"), "{}", slug(&dashy));
        for s in [a, b, slug("x"), slug("日本語")] {
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            );
            assert!(!s.starts_with('-') && !s.ends_with('-'));
        }
    }
}
