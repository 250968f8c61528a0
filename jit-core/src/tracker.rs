//! Resource trackers: which definitions (and the memory and registrations layers made for
//! them) go away together, and the managers told when they do.

use crate::error::{Error, Result};
use crate::lookup::DylibId;
use crate::session::ExecutionSession;
use crate::state::{Effects, TrackerId, tracker_key};

/// Identifies a tracker to resource managers. Stable for the tracker's life; not reused by a
/// later tracker of the same session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ResourceKey(pub u64);

impl ResourceKey {
    pub(crate) fn of(tracker: TrackerId) -> Self {
        ResourceKey(tracker_key(tracker))
    }
}

/// Something that holds resources per tracker (a linking layer's memory, say).
///
/// Contract: called outside the session lock, after the tracker's symbols are gone from their
/// dylib. May call back into the session.
pub trait ResourceManager: Send + Sync + 'static {
    /// Releases everything recorded against `key`.
    fn handle_remove(&self, key: ResourceKey) -> Result<()>;
    /// Everything recorded against `src` now belongs to `dst`.
    fn handle_transfer(&self, dst: ResourceKey, src: ResourceKey);
}

/// A handle on a group of definitions in one dylib that can be removed together.
#[derive(Clone)]
pub struct ResourceTracker {
    session: ExecutionSession,
    id: TrackerId,
    dylib: DylibId,
}

impl ResourceTracker {
    pub(crate) fn new(session: ExecutionSession, id: TrackerId, dylib: DylibId) -> Self {
        ResourceTracker { session, id, dylib }
    }

    pub(crate) fn id(&self) -> TrackerId {
        self.id
    }

    pub fn key(&self) -> ResourceKey {
        ResourceKey::of(self.id)
    }

    pub fn dylib_id(&self) -> DylibId {
        self.dylib
    }

    /// True once removed (a transfer empties a tracker but does not end it).
    pub fn is_defunct(&self) -> bool {
        !self.session.inner.state.lock().trackers.contains_key(self.id)
    }

    /// Removes every symbol defined through this tracker (lookups waiting on them, and
    /// symbols depending on them, fail), then tells every resource manager, outside the lock.
    /// Returns the first error a manager reported (all are told regardless).
    pub fn remove(&self) -> Result<()> {
        let inner = &self.session.inner;
        let mut fx = Effects::default();
        let (result, managers) = {
            let mut st = inner.state.lock();
            let r = st.remove_tracker(self.id, &mut fx);
            (r, st.resource_managers.clone())
        };
        let keys = std::mem::take(&mut fx.removed_keys);
        inner.apply(fx);
        result?;
        let mut first: Option<Error> = None;
        for key in keys {
            for m in &managers {
                if let Err(e) = m.handle_remove(ResourceKey::of(key)) {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Moves every definition (and, through the managers, every resource) to `dst`.
    pub fn transfer_to(&self, dst: &ResourceTracker) -> Result<()> {
        let inner = &self.session.inner;
        let managers = {
            let mut st = inner.state.lock();
            st.transfer_tracker(self.id, dst.id)?;
            st.resource_managers.clone()
        };
        if self.id != dst.id {
            for m in &managers {
                m.handle_transfer(dst.key(), self.key());
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for ResourceTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceTracker")
            .field("key", &self.key())
            .field("dylib", &self.dylib)
            .finish()
    }
}
