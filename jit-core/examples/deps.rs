//! Dependency-tracking and lookup cost, the same work as LLVM's anchor
//! (`../shared/bench/orc-deps/orc_deps.cpp`): N units of one symbol each, emitted with a
//! dependency group shaped as a chain, one cycle or a random DAG of out-degree 4, then one
//! lookup of all N at Ready; then 100,000 blocking lookups of a Ready symbol; then 100,000
//! async lookups issued from two threads while other units materialize on a 2-thread pool.
//!
//! `cargo run --release -p jit-core --example deps -- SHAPE N` prints tab-separated lines:
//! `orcjit SHAPE N SECONDS NS_PER_SYMBOL`, `orcjit lookup-ready 100000 SECONDS NS_PER_LOOKUP`
//! and `orcjit async-lookups-2-threads 100000 SECONDS NS_PER_LOOKUP`.
//!
//! `deps SHAPE N units-only` prints `orcjit SHAPE-units-only N SECONDS NS_PER_SYMBOL`: the
//! benchmark's own share of the first line, building the same units (their dependency lists
//! cloned from the same names) and the same lookup set, then dropping them, with no session.
//! It runs in a process of its own, so its memory is as fresh as the timed run's.
//!
//! `DEPS_WARM=R` first runs the same work R times, each in a session of its own (ended after
//! it), so that the timed run reuses memory the process has had before (stderr shows each).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use jit_core::{
    EmissionGroup, ExecutionSession, ExecutorAddr, Interface, JitDylib, MaterializationResponsibility,
    MaterializationUnit, RequiredState, SymbolDef, SymbolFlags, SymbolLookupSet, SymbolName,
};

/// A unit of one symbol that emits it depending on `deps` (all in the same dylib).
struct OneSymbol {
    interface: Interface,
    name: SymbolName,
    deps: Vec<SymbolName>,
}

impl MaterializationUnit for OneSymbol {
    fn name(&self) -> &str {
        "one symbol"
    }
    fn symbols(&self) -> &Interface {
        &self.interface
    }
    fn materialize(self: Box<Self>, mut mr: MaterializationResponsibility) {
        let dylib = mr.dylib_id();
        let def = SymbolDef::new(ExecutorAddr(0x1000), SymbolFlags::EXPORTED);
        if let Err(e) = mr.notify_resolved([(self.name.clone(), def)]) {
            eprintln!("{e}");
            return mr.fail(e);
        }
        let group = EmissionGroup::new([self.name], self.deps.into_iter().map(|d| (dylib, d)));
        if let Err(e) = mr.notify_emitted([group]) {
            eprintln!("{e}");
        }
    }
    fn discard(&mut self, _: &JitDylib, _: &SymbolName) {}
}

fn one_symbol(name: &SymbolName, deps: Vec<SymbolName>) -> OneSymbol {
    let interface = [(name.clone(), SymbolFlags::EXPORTED)].into_iter().collect();
    OneSymbol { interface, name: name.clone(), deps }
}

/// splitmix64: the same random DAG for a given N on every run, no dependency needed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn deps_of(shape: &str, i: usize, names: &[SymbolName], rng: &mut Rng) -> Vec<SymbolName> {
    let n = names.len();
    match shape {
        "chain" => i.checked_sub(1).map(|p| names[p].clone()).into_iter().collect(),
        "cycle" => vec![names[(i + 1) % n].clone()],
        _ if i > 0 => (0..4).map(|_| names[(rng.next() % i as u64) as usize].clone()).collect(),
        _ => Vec::new(),
    }
}

fn main() {
    // Ends quietly when its output is closed (`| head -1`), as a C program would, rather than
    // panicking in `println!` (Rust's runtime ignores SIGPIPE).
    // SAFETY: sets one signal's disposition to its default, before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args: Vec<String> = std::env::args().collect();
    let shape = args.get(1).map_or("chain", String::as_str);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let units_only = args.get(3).map(String::as_str) == Some("units-only");
    if !matches!(shape, "chain" | "dag" | "cycle") || n == 0 || args.len() > 3 + usize::from(units_only) {
        eprintln!("usage: deps chain|dag|cycle N [units-only]");
        std::process::exit(2);
    }

    // `DEPS_WARM=R`: the same work R times first, each in a session of its own that is then
    // ended, so that the timed run reuses memory the process has had before (as a JIT that
    // has run for a while does) rather than memory fresh from the kernel.
    let warm_ups: usize = std::env::var("DEPS_WARM").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    for round in 0..warm_ups {
        let es = ExecutionSession::in_place();
        let jd = es.create_dylib("main").expect("fresh session");
        let names: Vec<SymbolName> = (0..n).map(|i| es.intern(&format!("w{round}_{i}"))).collect();
        let secs = define_and_look_up(&es, &jd, shape, &names);
        eprintln!("warm-up {round}: {:.1} ns per symbol", secs * 1e9 / n as f64);
        es.end_session().expect("clean end");
    }

    // The anchor's ExecutionSession has no thread pool: materialization runs in place.
    let es = ExecutionSession::in_place();
    let jd = es.create_dylib("main").expect("fresh session");
    let names: Vec<SymbolName> = (0..n).map(|i| es.intern(&format!("s{i}"))).collect();
    if units_only {
        return units_only_cost(shape, &names, &mut Rng(42));
    }
    let secs = define_and_look_up(&es, &jd, shape, &names);
    println!("orcjit\t{shape}\t{n}\t{secs:.4}\t{:.1}", secs * 1e9 / n as f64);

    if std::env::var_os("DEPS_ONLY").is_some() {
        std::process::exit(0);
    }
    const L: usize = 100_000;
    let t2 = Instant::now();
    for i in 0..L {
        let def = es.lookup_symbol(&jd.search_order(), &names[i % n]).expect("Ready");
        std::hint::black_box(def);
    }
    let secs = t2.elapsed().as_secs_f64();
    println!("orcjit\tlookup-ready\t{L}\t{secs:.4}\t{:.1}", secs * 1e9 / L as f64);

    async_lookups_while_materializing(L);
    es.end_session().expect("clean end");
}

/// The timed work: defines a unit for each of `names` in `jd`, shaped as `shape`, and looks
/// all of them up at Ready. Returns the seconds it took (the names are interned before,
/// untimed, as in the anchor).
fn define_and_look_up(es: &ExecutionSession, jd: &JitDylib, shape: &str, names: &[SymbolName]) -> f64 {
    let n = names.len();
    let mut rng = Rng(42);
    let t0 = Instant::now();
    for i in 0..n {
        let deps = deps_of(shape, i, names, &mut rng);
        jd.define(one_symbol(&names[i], deps)).expect("no duplicates");
    }
    let all: SymbolLookupSet = names.iter().cloned().collect();
    let found = es.lookup_blocking(&jd.search_order(), all, RequiredState::Ready).expect("all Ready");
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(found.len(), n);
    secs
}

/// The timed loop's work without the session: the same units and lookup set, built and dropped
/// (a materialized unit is dropped; so is the lookup's set, its names moving into the result).
fn units_only_cost(shape: &str, names: &[SymbolName], rng: &mut Rng) {
    let n = names.len();
    let t0 = Instant::now();
    // Boxed, as `define` boxes each unit.
    let units: Vec<Box<OneSymbol>> =
        (0..n).map(|i| Box::new(one_symbol(&names[i], deps_of(shape, i, names, rng)))).collect();
    let all: SymbolLookupSet = names.iter().cloned().collect();
    drop(units);
    drop(std::hint::black_box(all));
    let secs = t0.elapsed().as_secs_f64();
    println!("orcjit\t{shape}-units-only\t{n}\t{secs:.4}\t{:.1}", secs * 1e9 / n as f64);
}

/// Two threads issue `total` async lookups between them (each of one symbol, of which a fresh
/// one in every 16 still has to be materialized) on a 2-thread pool; timed until the last
/// callback has run.
fn async_lookups_while_materializing(total: usize) {
    let es = ExecutionSession::with_threads(2).expect("threads");
    let jd = es.create_dylib("main").expect("fresh session");
    let names: Vec<SymbolName> = (0..total / 16).map(|i| es.intern(&format!("lazy{i}"))).collect();
    for name in &names {
        jd.define(one_symbol(name, Vec::new())).expect("no duplicates");
    }
    let done = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = crossbeam_channel::bounded(1);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2 {
            let (es, jd, names, done, tx) = (es.clone(), jd.clone(), &names, done.clone(), tx.clone());
            s.spawn(move || {
                let order = jd.search_order();
                for i in (t..total).step_by(2) {
                    let name = names[(i / 16) % names.len()].clone();
                    let (done, tx) = (done.clone(), tx.clone());
                    es.lookup(&order, SymbolLookupSet::new().with(name), RequiredState::Ready, move |r| {
                        r.expect("Ready");
                        if done.fetch_add(1, Ordering::AcqRel) + 1 == total {
                            let _ = tx.send(());
                        }
                    });
                }
            });
        }
    });
    rx.recv().expect("every callback runs");
    let secs = t0.elapsed().as_secs_f64();
    println!("orcjit\tasync-lookups-2-threads\t{total}\t{secs:.4}\t{:.1}", secs * 1e9 / total as f64);
    es.end_session().expect("clean end");
}
