//! Helpers shared by jit-core's unit tests: a unit built from a closure, and a watchdog.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded};
use parking_lot::Mutex;

use crate::{
    ExecutionSession, ExecutorAddr, Interface, JitDylib, MaterializationResponsibility, MaterializationUnit, SymbolDef,
    SymbolFlags, SymbolName,
};

/// How long a test waits for something that should happen at once before calling it a hang.
pub const WATCHDOG: Duration = Duration::from_secs(20);

type Materialize = Box<dyn FnOnce(MaterializationResponsibility) + Send>;

/// A unit whose materialization is a closure; records the names it was told to discard.
pub struct FnUnit {
    pub symbols: Interface,
    pub run: Materialize,
    pub discarded: Arc<Mutex<Vec<SymbolName>>>,
}

impl FnUnit {
    pub fn new(
        symbols: &[(&SymbolName, SymbolFlags)],
        run: impl FnOnce(MaterializationResponsibility) + Send + 'static,
    ) -> Self {
        FnUnit {
            symbols: symbols.iter().map(|(n, f)| ((*n).clone(), *f)).collect(),
            run: Box::new(run),
            discarded: Arc::default(),
        }
    }

    /// A unit that resolves each symbol to `addr` and emits it with no dependencies.
    pub fn resolving(symbols: &[(&SymbolName, SymbolFlags)], addr: u64) -> Self {
        Self::new(symbols, move |mut mr| {
            let defs: Vec<_> = mr.symbols().map(|(n, f)| (n.clone(), SymbolDef::new(ExecutorAddr(addr), f))).collect();
            mr.notify_resolved(defs).unwrap();
            mr.notify_emitted(vec![]).unwrap();
        })
    }
}

impl MaterializationUnit for FnUnit {
    fn name(&self) -> &str {
        "test unit"
    }
    fn symbols(&self) -> &Interface {
        &self.symbols
    }
    fn materialize(self: Box<Self>, mr: MaterializationResponsibility) {
        (self.run)(mr)
    }
    fn discard(&mut self, _dylib: &JitDylib, name: &SymbolName) {
        self.symbols.remove(name);
        self.discarded.lock().push(name.clone());
    }
}

pub const EXPORTED: SymbolFlags = SymbolFlags::EXPORTED;

pub fn weak() -> SymbolFlags {
    SymbolFlags::EXPORTED | SymbolFlags::WEAK
}

/// A session with one dylib named "main", on `threads` pool threads (0: in place).
pub fn setup(threads: usize) -> (ExecutionSession, JitDylib) {
    let es = if threads == 0 { ExecutionSession::in_place() } else { ExecutionSession::with_threads(threads).unwrap() };
    let jd = es.create_dylib("main").unwrap();
    (es, jd)
}

/// A one-shot channel for results coming back from callbacks, with a watchdog on receive.
pub fn oneshot<T: Send + 'static>() -> (impl FnOnce(T) + Send + 'static, Receiver<T>) {
    let (tx, rx) = bounded(1);
    (move |v| tx.send(v).unwrap(), rx)
}

pub fn recv<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(WATCHDOG).expect("watchdog: no answer (hang?)")
}

/// Runs `f` on another thread and fails the test if it does not return in time.
pub fn within_watchdog<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    recv(&rx)
}
