//! A forked child has none of its parent's pool threads: work it needs runs on its own
//! threads instead of waiting for ever. Its own test binary: it forks, which is only sound
//! while no other test thread holds a lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use jit_core::{
    EmissionGroup, ExecutionSession, ExecutorAddr, Interface, JitDylib, MaterializationResponsibility,
    MaterializationUnit, RequiredState, SymbolDef, SymbolFlags, SymbolLookupSet, SymbolName,
};

/// A unit of one symbol at `addr`, counting its materializations.
struct Lazy {
    interface: Interface,
    name: SymbolName,
    addr: u64,
    runs: Arc<AtomicUsize>,
}

impl MaterializationUnit for Lazy {
    fn name(&self) -> &str {
        "lazy"
    }
    fn symbols(&self) -> &Interface {
        &self.interface
    }
    fn materialize(self: Box<Self>, mut mr: MaterializationResponsibility) {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let def = SymbolDef::new(ExecutorAddr(self.addr), SymbolFlags::EXPORTED);
        mr.notify_resolved([(self.name.clone(), def)]).unwrap();
        mr.notify_emitted([EmissionGroup::new([self.name], [])]).unwrap();
    }
    fn discard(&mut self, _: &JitDylib, _: &SymbolName) {}
}

fn define(es: &ExecutionSession, jd: &JitDylib, name: &str, addr: u64, runs: &Arc<AtomicUsize>) -> SymbolName {
    let name = es.intern(name);
    let interface = [(name.clone(), SymbolFlags::EXPORTED)].into_iter().collect();
    jd.define(Lazy { interface, name: name.clone(), addr, runs: runs.clone() }).unwrap();
    name
}

/// What the child checks; its exit status says how far it got (0: all of it).
fn in_child(es: &ExecutionSession, jd: &JitDylib, child_only: &SymbolName, runs: &AtomicUsize) -> i32 {
    // Materialized in the child, on the thread that asks: the pool has no threads here.
    match es.lookup_symbol(&jd.search_order(), child_only) {
        Ok(def) if def.addr == ExecutorAddr(0x2000) => {}
        _ => return 2,
    }
    if runs.load(Ordering::SeqCst) != 2 {
        return 3;
    }
    // An asynchronous lookup's callback runs too.
    let (tx, rx) = mpsc::channel();
    let set = SymbolLookupSet::new().with(child_only.clone());
    es.lookup(&jd.search_order(), set, RequiredState::Ready, move |r| {
        let _ = tx.send(r.is_ok());
    });
    if rx.recv_timeout(Duration::from_secs(20)) != Ok(true) {
        return 4;
    }
    0
}

#[test]
fn a_forked_child_materializes_what_it_looks_up_without_its_parent_s_threads() {
    let es = ExecutionSession::with_threads(2).unwrap();
    let jd = es.create_dylib("main").unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let both = define(&es, &jd, "both", 0x1000, &runs);
    let child_only = define(&es, &jd, "child_only", 0x2000, &runs);
    // The pool's threads are started and have run work before the fork.
    assert_eq!(es.lookup_symbol(&jd.search_order(), &both).unwrap().addr, ExecutorAddr(0x1000));

    // SAFETY: this test binary runs one test; the child uses the session (whose pool the
    // fork handlers paused, so no pool thread held a lock) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: a watchdog: SIGALRM ends the child if it hangs.
        unsafe { libc::alarm(30) };
        let status = in_child(&es, &jd, &child_only, &runs);
        // SAFETY: leaving without running destructors (the parent's threads are not here).
        unsafe { libc::_exit(status) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "the child hung or crashed: {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "the child's step that failed (see in_child)");
    // The parent's pool goes on: it materializes the same symbol on its own.
    assert_eq!(es.lookup_symbol(&jd.search_order(), &child_only).unwrap().addr, ExecutorAddr(0x2000));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    es.end_session().unwrap();
}
