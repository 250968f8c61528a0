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
        let keys = fx.take_removed_keys();
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
        f.debug_struct("ResourceTracker").field("key", &self.key()).field("dylib", &self.dylib).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{ExecutorAddr, RequiredState, SymbolDef, SymbolLookupSet};
    use parking_lot::Mutex;
    use std::sync::Arc;

    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<String>>,
        session: Mutex<Option<ExecutionSession>>,
    }

    impl ResourceManager for Recorder {
        fn handle_remove(&self, key: ResourceKey) -> Result<()> {
            // Calling back into the session proves this runs outside the session lock.
            if let Some(es) = &*self.session.lock() {
                let _ = es.dylib("main");
            }
            self.log.lock().push(format!("remove {}", key.0));
            Ok(())
        }
        fn handle_transfer(&self, dst: ResourceKey, src: ResourceKey) {
            self.log.lock().push(format!("transfer {} -> {}", src.0, dst.0));
        }
    }

    #[test]
    fn remove_takes_out_the_symbols_and_tells_managers_outside_the_lock() {
        let (es, jd) = setup(1);
        let rec = Arc::new(Recorder::default());
        *rec.session.lock() = Some(es.clone());
        es.register_resource_manager(rec.clone());
        let tracker = jd.create_tracker();
        let (x, keep) = (es.intern("x"), es.intern("keep"));
        jd.define_boxed(Box::new(FnUnit::resolving(&[(&x, EXPORTED)], 1)), Some(&tracker)).unwrap();
        jd.define(FnUnit::resolving(&[(&keep, EXPORTED)], 2)).unwrap();
        assert_eq!(jd.lookup("x").unwrap().addr, ExecutorAddr(1));
        let key = tracker.key();
        within_watchdog(move || tracker.remove()).unwrap();
        assert_eq!(*rec.log.lock(), vec![format!("remove {}", key.0)]);
        assert!(matches!(jd.lookup("x"), Err(Error::SymbolsNotFound { .. })));
        assert_eq!(jd.lookup("keep").unwrap().addr, ExecutorAddr(2));
        // The name is free again.
        jd.define_absolute([(x, SymbolDef::new(ExecutorAddr(3), EXPORTED))]).unwrap();
        *rec.session.lock() = None;
    }

    #[test]
    fn removing_a_tracker_fails_waiting_lookups_and_drops_unmaterialized_units() {
        let (es, jd) = setup(0);
        let tracker = jd.create_tracker();
        let (x, y) = (es.intern("x"), es.intern("y"));
        let (park, parked) = oneshot();
        jd.define_boxed(Box::new(FnUnit::new(&[(&x, EXPORTED)], park)), Some(&tracker)).unwrap();
        jd.define_boxed(Box::new(FnUnit::resolving(&[(&y, EXPORTED)], 2)), Some(&tracker)).unwrap();
        let (done, answer) = oneshot();
        es.lookup(&jd.search_order(), SymbolLookupSet::from([x.clone()]), RequiredState::Ready, done);
        let mr = recv(&parked);
        assert_eq!(es.census().units, 1, "y's unit is still waiting");
        tracker.remove().unwrap();
        assert_eq!(es.census().units, 0);
        let err = recv(&answer).unwrap_err();
        assert!(err.to_string().contains("resource tracker that defined it was removed"), "{err}");
        mr.fail(Error::msg("gone"));
        assert!(tracker.is_defunct());
        assert!(tracker.remove().is_err(), "a removed tracker cannot be removed again");
    }

    #[test]
    fn transfer_moves_definitions_to_another_tracker() {
        let (es, jd) = setup(0);
        let rec = Arc::new(Recorder::default());
        es.register_resource_manager(rec.clone());
        let (src, dst) = (jd.create_tracker(), jd.create_tracker());
        let x = es.intern("x");
        jd.define_absolute_with_tracker([(x.clone(), SymbolDef::new(ExecutorAddr(1), EXPORTED))], &src).unwrap();
        src.transfer_to(&dst).unwrap();
        assert_eq!(rec.log.lock()[0], format!("transfer {} -> {}", src.key().0, dst.key().0));
        src.remove().unwrap();
        assert_eq!(jd.lookup("x").unwrap().addr, ExecutorAddr(1), "x moved to dst");
        dst.remove().unwrap();
        assert!(jd.lookup("x").is_err());
    }

    #[test]
    fn removing_the_default_tracker_gives_the_dylib_a_fresh_one() {
        let (es, jd) = setup(0);
        let x = es.intern("x");
        jd.define_absolute([(x.clone(), SymbolDef::new(ExecutorAddr(1), EXPORTED))]).unwrap();
        let old = jd.default_tracker();
        old.remove().unwrap();
        assert_ne!(jd.default_tracker().key(), old.key());
        jd.define_absolute([(x, SymbolDef::new(ExecutorAddr(2), EXPORTED))]).unwrap();
        assert_eq!(jd.lookup("x").unwrap().addr, ExecutorAddr(2));
    }
}
