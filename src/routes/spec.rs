//! What providers produce: a plain, already validated description of one
//! route. Providers never touch the hot path; the table builder turns a set of
//! these into a [`RouteTable`](super::RouteTable).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use super::host::HostPattern;

/// Protocol spoken to an upstream (`VIRTUAL_PROTO`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// Plain HTTP/1.1.
    #[default]
    Http,
    /// HTTP/1.1 over TLS. Like nginx's default, the upstream's certificate is
    /// not verified: containers on a private network rarely have a public one.
    Https,
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http" => Ok(Self::Http),
            "https" => Ok(Self::Https),
            other => Err(format!("proto must be `http` or `https`, not {other:?}")),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Https => "https",
        })
    }
}

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
    /// Answer CORS for allowed origins (`branchgate.cors`).
    pub cors: bool,
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
