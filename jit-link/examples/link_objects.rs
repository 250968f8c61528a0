//! Links ELF objects into this process (externals from the process via `dlsym`) and reports
//! how long parsing and linking took: a measuring tool for jit-link alone.
//!
//! `cargo run --release -p jit-link --example link_objects -- [--repeat N] [--dlopen LIB]... OBJ... [-- ARGV...]`
//!
//! With `-- ARGV...`, the last round's program is then run: initializers in priority order,
//! `main(argc, argv, envp)`, and `exit` with its status (finalizers run at exit).

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jit_link::{
    ExternalDefinition, LinkContext, LinkError, LinkGraph, LinkedObject, LookupContinuation, LookupRequest, Scope,
    SymbolName,
};
use jit_mem::{ManagerConfig, MemoryManager, Placement, TargetAddr};

#[derive(Default)]
struct Shared {
    defs: Mutex<HashMap<SymbolName, TargetAddr>>,
    pending: Mutex<Vec<(LookupRequest, LookupContinuation)>>,
    done: Mutex<Vec<Result<LinkedObject, LinkError>>>,
}

struct Ctx {
    mm: Arc<dyn MemoryManager>,
    shared: Arc<Shared>,
}

impl LinkContext for Ctx {
    fn memory_manager(&self) -> Arc<dyn MemoryManager> {
        self.mm.clone()
    }
    fn notify_resolved(&self, graph: &LinkGraph) -> Result<(), LinkError> {
        let mut defs = self.shared.defs.lock().unwrap_or_else(|e| e.into_inner());
        for (id, sym) in graph.symbols() {
            if let (true, Some(name), Some(addr)) =
                (sym.is_defined() && sym.scope() != Scope::Local, sym.name(), graph.symbol_addr(id))
            {
                defs.entry(name.clone()).or_insert(addr);
            }
        }
        Ok(())
    }
    fn lookup(&self, request: LookupRequest, continuation: LookupContinuation) {
        self.shared.pending.lock().unwrap_or_else(|e| e.into_inner()).push((request, continuation));
    }
    fn describe_external(&self, name: &SymbolName, addr: TargetAddr) -> ExternalDefinition {
        jit_link::process::describe_definition(name.as_str(), addr)
    }
    fn notify_finalized(&self, linked: LinkedObject) {
        self.shared.done.lock().unwrap_or_else(|e| e.into_inner()).push(Ok(linked));
    }
    fn notify_failed(&self, error: LinkError) {
        self.shared.done.lock().unwrap_or_else(|e| e.into_inner()).push(Err(error));
    }
}

fn dlsym(name: &str) -> Option<TargetAddr> {
    let c = CString::new(name).ok()?;
    // SAFETY: a valid C string; RTLD_DEFAULT searches the global namespace.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    (!p.is_null()).then_some(TargetAddr(p as usize as u64))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut repeat = 1usize;
    let mut paths = Vec::new();
    let mut run: Option<Vec<String>> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--" => {
                run = Some(args.by_ref().collect());
            }
            "--repeat" => repeat = args.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--dlopen" => {
                let lib = CString::new(args.next().unwrap_or_default()).unwrap_or_default();
                // SAFETY: a valid C string; the library stays loaded.
                unsafe { libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            }
            _ => paths.push(a),
        }
    }
    let objects: Vec<(String, Vec<u8>)> =
        paths.iter().map(|p| (p.clone(), std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}")))).collect();
    // Non-PIC small-code-model objects need their memory below 2 GiB.
    let low = objects.iter().any(|(_, bytes)| jit_link::needs_low_placement(bytes));
    let placement = if low { Placement::Low } else { Placement::Anywhere };
    let mm = jit_mem::default_manager(ManagerConfig::default().with_placement(placement)).expect("memory manager");
    for round in 0..repeat {
        let start = Instant::now();
        let shared = Arc::new(Shared::default());
        let mut graphs = Vec::new();
        for (name, bytes) in &objects {
            graphs.push(jit_link::graph_from_elf_object(name, bytes).unwrap_or_else(|e| panic!("{e}")));
        }
        let parsed = start.elapsed();
        for g in graphs {
            jit_link::link(g, Arc::new(Ctx { mm: mm.clone(), shared: shared.clone() }));
        }
        loop {
            let next = shared.pending.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some((req, cont)) = next else { break };
            let defs = shared.defs.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let found = req
                .symbols
                .iter()
                .filter_map(|(n, _)| defs.get(n).copied().or_else(|| dlsym(n.as_str())).map(|a| (n.clone(), a)))
                .collect();
            cont.resolve(Ok(found));
        }
        let linked = start.elapsed();
        let done = std::mem::take(&mut *shared.done.lock().unwrap_or_else(|e| e.into_inner()));
        let failed: Vec<_> = done.iter().filter_map(|r| r.as_ref().err()).collect();
        for e in &failed {
            eprintln!("error: {e}");
        }
        println!(
            "round {round}: {} objects, parse {:.3} ms, parse+link {:.3} ms, {} failed",
            objects.len(),
            parsed.as_secs_f64() * 1e3,
            linked.as_secs_f64() * 1e3,
            failed.len()
        );
        if round + 1 == repeat {
            if let Some(argv) = &run {
                if !failed.is_empty() {
                    // A failed link's symbols were reported resolved, but its memory is gone.
                    std::process::exit(1);
                }
                let linked: Vec<LinkedObject> = done.into_iter().filter_map(Result::ok).collect();
                let main = shared.defs.lock().unwrap_or_else(|e| e.into_inner()).get("main").copied();
                run_program(linked, main, argv);
            }
        }
    }
}

static FINIS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

extern "C" fn run_finis() {
    for f in std::mem::take(&mut *FINIS.lock().unwrap_or_else(|e| e.into_inner())) {
        // SAFETY: a finalizer of a linked graph (kept alive until exit); no arguments.
        let f: extern "C" fn() = unsafe { std::mem::transmute(f as usize) };
        f();
    }
}

fn run_program(linked: Vec<LinkedObject>, main: Option<TargetAddr>, argv: &[String]) -> ! {
    let mut inits: Vec<_> = linked.iter().flat_map(|l| l.init_fini.inits.iter().copied()).collect();
    let mut finis: Vec<_> = linked.iter().rev().flat_map(|l| l.init_fini.finis.iter().copied()).collect();
    inits.sort_by_key(|e| e.priority);
    finis.sort_by_key(|e| std::cmp::Reverse(e.priority));
    *FINIS.lock().unwrap_or_else(|e| e.into_inner()) = finis.iter().map(|e| e.addr.0).collect();
    // SAFETY: registering a plain extern "C" fn with the C runtime.
    unsafe { libc::atexit(run_finis) };
    std::mem::forget(linked);
    for init in inits {
        // SAFETY: an initializer of a linked graph; no arguments.
        let f: extern "C" fn() = unsafe { std::mem::transmute(init.addr.0 as usize) };
        f();
    }
    let Some(main) = main else {
        eprintln!("no main");
        std::process::exit(1);
    };
    let args: Vec<CString> = argv.iter().map(|a| CString::new(a.as_str()).unwrap_or_default()).collect();
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: `main` is the program's C main, finalized.
    let main: extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char) -> libc::c_int =
        unsafe { std::mem::transmute(main.0 as usize) };
    let status = main(args.len() as libc::c_int, ptrs.as_ptr(), envp.as_ptr());
    // SAFETY: ends the process, running atexit handlers while the JIT'd code is still mapped.
    unsafe { libc::exit(status) }
}
