//! What the publisher stores and every request reads: one immutable
//! [`RouteTable`], the live pool behind each of its [`PoolId`]s, and the
//! notes in force. Everything that must agree lives in this one value behind
//! one `ArcSwap`, never in two that could race.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::notes::Note;
use super::table::{PoolId, RouteTable};
use crate::upstream::{Pool, Registry};

/// A published route table with its live pools and notes.
#[derive(Debug, Default)]
pub struct Snapshot {
    table: RouteTable,
    pools: Box<[Arc<Pool>]>,
    notes: Box<[Note]>,
}

impl Snapshot {
    /// Pairs every pool key of `table` with its live pool in `registry`.
    pub fn resolve(table: RouteTable, registry: &mut Registry, notes: Vec<Note>) -> Self {
        let pools = table
            .pool_keys()
            .iter()
            .map(|k| registry.resolve(k))
            .collect();
        Self {
            table,
            pools,
            notes: notes.into(),
        }
    }

    /// The route table.
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The live pool a route goes to.
    pub fn pool(&self, id: PoolId) -> &Arc<Pool> {
        // Every PoolId of a table indexes its pool keys, resolved one to one.
        &self.pools[id.index()]
    }

    /// Every live pool of this snapshot.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// What providers and the build reported, providers first.
    pub fn notes(&self) -> &[Note] {
        &self.notes
    }

    /// Publish counter (0 for the initial empty snapshot).
    pub fn generation(&self) -> u64 {
        self.table.generation()
    }
}

/// A read-only handle on the published snapshot: everyone but the
/// publisher gets one of these.
#[derive(Clone, Debug)]
pub struct Reader(Arc<ArcSwap<Snapshot>>);

impl Reader {
    pub(super) fn new(live: Arc<ArcSwap<Snapshot>>) -> Self {
        Self(live)
    }

    /// The current snapshot. Drop the guard before any `.await`.
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.0.load()
    }

    /// The current snapshot as an `Arc`, to keep across awaits.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }
}
