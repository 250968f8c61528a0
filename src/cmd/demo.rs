//! `orcjit demo` (and `orcjit` with no arguments): the execution session at work: lazy
//! materialization on a thread pool, a dependency cycle that becomes Ready as a whole, process
//! symbols resolved through a generator and called, and a failure reported with its root cause.

use jit_core::{
    EmissionGroup, Error, ExecutionSession, ExecutorAddr, Interface, JitDylib, MaterializationResponsibility,
    MaterializationUnit, ProcessSymbolsGenerator, RequiredState, SymbolDef, SymbolFlags, SymbolLookupSet, SymbolName,
};

/// A unit that prints when it is materialized and emits its one symbol with dependencies.
struct Announced {
    interface: Interface,
    name: SymbolName,
    addr: u64,
    deps: Vec<SymbolName>,
}

impl MaterializationUnit for Announced {
    fn name(&self) -> &str {
        "announced"
    }
    fn symbols(&self) -> &Interface {
        &self.interface
    }
    fn materialize(self: Box<Self>, mut mr: MaterializationResponsibility) {
        let thread = std::thread::current().name().unwrap_or("?").to_string();
        println!("  materializing '{}' on {thread}", self.name);
        let def = SymbolDef::new(ExecutorAddr(self.addr), SymbolFlags::EXPORTED | SymbolFlags::CALLABLE);
        if let Err(e) = mr.notify_resolved([(self.name.clone(), def)]) {
            return mr.fail(e);
        }
        let dylib = mr.dylib_id();
        let _ = mr.notify_emitted([EmissionGroup::new([self.name], self.deps.into_iter().map(|d| (dylib, d)))]);
    }
    fn discard(&mut self, _: &JitDylib, _: &SymbolName) {}
}

fn announced(es: &ExecutionSession, name: &str, addr: u64, deps: &[&str]) -> Announced {
    let name = es.intern(name);
    Announced {
        interface: Interface::new().with(name.clone(), SymbolFlags::EXPORTED | SymbolFlags::CALLABLE),
        name,
        addr,
        deps: deps.iter().map(|d| es.intern(d)).collect(),
    }
}

/// A unit whose materialization fails, as a compile error would.
struct Broken(Interface);

impl MaterializationUnit for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn symbols(&self) -> &Interface {
        &self.0
    }
    fn materialize(self: Box<Self>, mr: MaterializationResponsibility) {
        mr.fail(Error::msg("error: expected ';' after expression (demo.c:3:14)"));
    }
    fn discard(&mut self, _: &JitDylib, _: &SymbolName) {}
}

pub fn run() -> Result<(), Error> {
    let es = ExecutionSession::with_threads(2).map_err(Error::other)?;
    let jd = es.create_dylib("main")?;
    jd.add_generator(ProcessSymbolsGenerator::new());
    println!("orcjit demo: one execution session, a dylib 'main', a pool of 2 threads\n");

    // Three mutually dependent functions: none is Ready until all are emitted.
    jd.define(announced(&es, "even", 0x1000, &["odd"]))?;
    jd.define(announced(&es, "odd", 0x2000, &["even", "helper"]))?;
    jd.define(announced(&es, "helper", 0x3000, &[]))?;
    jd.define(announced(&es, "never_called", 0x4000, &[]))?;
    let even = es.intern("even");
    println!("before lookup, 'even' is {:?}", jd.symbol_state(&even).expect("defined"));
    println!("looking up 'even' (demanded: its unit, and the units it depends on, materialize):");
    let found =
        es.lookup_blocking(&jd.search_order(), SymbolLookupSet::new().with(even.clone()), RequiredState::Ready)?;
    println!(
        "'even' is Ready at {}; 'odd' is {:?}; 'never_called' is {:?}\n",
        found[&even].addr,
        jd.symbol_state(&es.intern("odd")).expect("defined"),
        jd.symbol_state(&es.intern("never_called")).expect("defined")
    );

    // A process symbol found by the generator, called through the address the lookup returned.
    let puts = jd.lookup("puts")?;
    // SAFETY: 'puts' resolved through dlsym in this process; it has this C signature.
    let puts: extern "C" fn(*const std::ffi::c_char) -> i32 = unsafe { std::mem::transmute(puts.addr.0 as usize) };
    puts(c"'puts' from libc, found by the process-symbols generator, called through its JIT address".as_ptr());
    let fflush = jd.lookup("fflush")?;
    // SAFETY: as above; fflush(NULL) flushes every C stream, so libc's output keeps its place.
    let fflush: extern "C" fn(*mut std::ffi::c_void) -> i32 = unsafe { std::mem::transmute(fflush.addr.0 as usize) };
    fflush(std::ptr::null_mut());
    println!();

    // A failure reaches everything that depends on it, with the root cause.
    jd.define(Broken(Interface::new().with(es.intern("parse"), SymbolFlags::EXPORTED)))?;
    jd.define(announced(&es, "main_loop", 0x5000, &["parse"]))?;
    match jd.lookup("main_loop") {
        Ok(def) => println!("unexpected: 'main_loop' at {}", def.addr),
        Err(e) => println!("looking up 'main_loop' fails:\n  {e}\n"),
    }
    println!("session: {:?}", es.census());
    es.end_session()
}
