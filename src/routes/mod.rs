//! Routes: provider specs in, one immutable [`RouteTable`] out.
//!
//! [`spec`] is what providers say, [`host`] parses and normalises hosts,
//! [`table`] builds and queries the snapshot, and [`publish`] is the single
//! writer that rebuilds and swaps it.

pub mod branch;
pub mod host;
pub mod publish;
pub mod spec;
pub mod table;

pub use branch::{BranchIndex, BranchLookup, BranchSettings, slug};
pub use host::{HostPattern, MAX_HOST_LEN, normalize_host};
pub use publish::{Desired, ProviderId, Publisher};
pub use spec::{Proto, Role, RouteSpec};
pub use table::{BuildOptions, HostMatch, Lookup, RouteTable, build};
