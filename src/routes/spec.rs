//! What providers produce: a plain, already validated description of one
//! route. Providers never touch the hot path; the table builder turns a set of
//! these into a [`RouteTable`](super::RouteTable).
//!
//! A provider hands its specs with [`Provided`], beside the notes about what
//! it skipped or degraded.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use super::host::HostPattern;
use super::policy::Policy;
pub use crate::upstream::Proto;

/// The role of a branch-environment member (`branchgate.role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Serves everything outside the API prefixes.
    Frontend,
    /// Serves the API prefixes.
    Backend,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Frontend => "frontend",
            Self::Backend => "backend",
        })
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "frontend" => Ok(Self::Frontend),
            "backend" => Ok(Self::Backend),
            other => Err(format!(
                "role must be `frontend` or `backend`, not {other:?}"
            )),
        }
    }
}

/// One route as a provider describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// Where it came from, for logs and conflict resolution (`routes.toml:12`,
    /// a container name). Specs are ordered by this key when they disagree.
    pub source: String,
    /// Host patterns (`VIRTUAL_HOST`).
    pub hosts: Vec<HostPattern>,
    /// Path prefix (`VIRTUAL_PATH`); `/` when unset.
    pub path: String,
    /// Replacement for the matched prefix (`VIRTUAL_DEST`).
    pub dest: Option<String>,
    /// Protocol to the upstreams (`VIRTUAL_PROTO`).
    pub proto: Proto,
    /// Upstream addresses; several form one round-robin pool.
    pub upstreams: Vec<SocketAddr>,
    /// Git branch this member belongs to (`branchgate.branch`).
    pub branch: Option<String>,
    /// Role in its branch environment (`branchgate.role`).
    pub role: Option<Role>,
    /// What the route demands beyond where it goes (CORS, HTTPS, certificates).
    pub policy: Policy,
}

/// Validates a `VIRTUAL_PATH`-style prefix.
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path must start with `/`, got {path:?}"));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "path contains a space or control character: {path:?}"
        ));
    }
    if path.contains(['?', '#']) || http::uri::PathAndQuery::try_from(path).is_err() {
        return Err(format!("not a plain URI path: {path:?}"));
    }
    Ok(())
}

/// Everything one provider currently says: its specs (in its documented
/// order) and its notes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provided {
    /// What it wants routed.
    pub specs: Vec<RouteSpec>,
    /// What it skipped or degraded, and why.
    pub notes: Vec<super::Note>,
}

impl Provided {
    /// Specs without notes.
    pub fn specs(specs: Vec<RouteSpec>) -> Self {
        Self {
            specs,
            notes: Vec::new(),
        }
    }
}
