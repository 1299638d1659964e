//! Routes: provider specs in, one immutable [`Snapshot`] out. Sits between
//! the providers and the proxy; below it is [`crate::upstream`].
//!
//! [`spec`] is what providers say (with [`policy`] per route and [`notes`]
//! on what they skipped), [`host`] parses and normalises hosts, [`build`]
//! turns specs into a [`RouteTable`] (pure), [`table`] and [`branch`] answer
//! lookups, and [`publish`] is the single writer that pairs a table with live
//! pools ([`snapshot`]) and swaps it in.

pub mod branch;
pub mod build;
pub mod host;
pub mod notes;
pub mod policy;
pub mod publish;
pub mod snapshot;
pub mod spec;
pub mod table;

pub use branch::{BranchIndex, BranchLookup, BranchSettings, slug};
pub use build::{BuildOptions, Built, build};
pub use host::{HostPattern, MAX_HOST_LEN, normalize_host};
pub use notes::{Note, NoteKind, Origin, Severity};
pub use policy::{Hsts, HttpsMethod, Policy};
pub use publish::{Desired, ProviderId, Publisher};
pub use snapshot::{Reader, Snapshot};
pub use spec::{Proto, Provided, Role, RouteSpec};
pub use table::{HostMatch, Lookup, PathRoute, PoolId, RouteTable};
