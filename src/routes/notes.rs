//! Notes: what an operator must see about the routes in force — containers
//! skipped for a bad setting, unreachable or out of service, specs that
//! disagree, a routes file that does not load. Providers publish theirs
//! beside their specs; the build adds its own; the published snapshot carries
//! the whole current list, so an API shows exactly what the log said.

use std::fmt;

/// Who wrote a note.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// A provider, about what it read.
    Provider(super::ProviderId),
    /// The table build, about specs that disagree.
    Build,
}

/// How much a note matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Something routes differently than configured (skipped, unreachable,
    /// a conflict): logged as a warning.
    Warning,
    /// Expected degradation (a stopped or unhealthy container out of its
    /// pool): logged as information.
    Info,
}

/// What a note is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoteKind {
    /// A bad setting: the source is not routed at all.
    Invalid {
        /// The variable, label or file key at fault.
        key: String,
        /// Its value.
        value: String,
    },
    /// No address the proxy can reach: its hosts answer 503.
    Unreachable,
    /// Stopped, paused, restarting or unhealthy: out of its pool.
    OutOfService,
    /// Specs sharing a route disagree; the documented rule decided.
    Conflict,
    /// A routes file that does not load: the routes in force stay.
    FileRejected,
    /// `--default-host` names a host with no route.
    DefaultHost,
}

/// One thing to tell the operator.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Note {
    /// Who wrote it.
    pub origin: Origin,
    /// What it is about: a container name, `routes.toml:12`, `host/path`.
    pub source: String,
    /// Warning or information.
    pub severity: Severity,
    /// Its kind, with the details an API can show as fields.
    pub kind: NoteKind,
    /// The sentence the log shows.
    pub message: String,
}

impl Note {
    /// Logs the note once, at its severity.
    pub fn log(&self) {
        match self.severity {
            Severity::Warning => tracing::warn!(source = %self.source, "{}", self.message),
            Severity::Info => tracing::info!(source = %self.source, "{}", self.message),
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}
