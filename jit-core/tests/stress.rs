//! Randomized stress test of jit-core: random dependency graphs (DAGs, graphs with cycles, one
//! big cycle, chains) of 1 to 10,000 symbols spread over many units and several dylibs, some
//! units failing, materialized on pools of 1, 2 and 8 threads (and in place) while two client
//! threads issue lookups. Checked against an oracle: a symbol fails exactly when it can reach a
//! symbol of a failing unit; every lookup completes exactly once with the right addresses or
//! the right error; nothing hangs (each case runs under a watchdog); no unit or responsibility
//! is leaked.
//!
//! A failure prints how to rerun its case alone (`STRESS_SEED=<seed> STRESS_ROUNDS=<r> cargo
//! test -p jit-core --test stress`). `STRESS_ROUNDS=R` alone is a soak: R rounds of every
//! configuration, each round with seeds of its own.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jit_core::{
    DefinitionGenerator, EmissionGroup, Error, ExecutionSession, ExecutorAddr, GeneratorDone, Interface, JitDylib,
    LookupKind, MaterializationResponsibility, MaterializationUnit, RequiredState, SearchOrder, SymbolDef, SymbolFlags,
    SymbolLookupFlags, SymbolLookupSet, SymbolName, live_responsibilities,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const WATCHDOG: Duration = Duration::from_secs(120);

static LIVE_UNITS: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Copy, Debug)]
enum Shape {
    Dag,
    Cyclic,
    BigCycle,
    Chain,
}

/// Everything a case needs to know about the program it builds.
struct Plan {
    n: usize,
    deps: Vec<Vec<usize>>,
    /// Units as defined: members (all in one dylib), whether it fails, how it materializes.
    pieces: Vec<Piece>,
    dylib_of: Vec<usize>,
}

struct Piece {
    members: Vec<usize>,
    fails: bool,
    style: u8,
}

impl Piece {
    /// The dependency a style-3 unit looks up through its responsibility (which makes every
    /// member depend on it): the first dependency of its smallest member.
    fn looked_up(&self, deps: &[Vec<usize>]) -> Option<usize> {
        if self.style % 4 != 3 {
            return None;
        }
        let first = *self.members.iter().min()?;
        deps[first].first().copied()
    }
}

fn plan(rng: &mut StdRng, n: usize, shape: Shape, dylibs: usize) -> Plan {
    let deps: Vec<Vec<usize>> = (0..n)
        .map(|i| match shape {
            Shape::Chain => i.checked_sub(1).into_iter().collect(),
            Shape::BigCycle => vec![(i + 1) % n],
            Shape::Dag => (0..rng.random_range(0..=4)).filter(|_| i > 0).map(|_| rng.random_range(0..i)).collect(),
            Shape::Cyclic => (0..rng.random_range(0..=3)).map(|_| rng.random_range(0..n)).collect(),
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let fail_rate = if rng.random_bool(0.3) { 0.0 } else { rng.random_range(0.0..0.05) };
    let dylib_of: Vec<usize> = (0..n).map(|_| rng.random_range(0..dylibs)).collect();
    let mut pieces = Vec::new();
    let mut rest = &order[..];
    while !rest.is_empty() {
        let k = rng.random_range(1..=8).min(rest.len());
        let fails = rng.random_bool(fail_rate);
        // A unit with symbols in several dylibs is split per dylib (a unit belongs to one).
        for d in 0..dylibs {
            let here: Vec<usize> = rest[..k].iter().copied().filter(|&i| dylib_of[i] == d).collect();
            if !here.is_empty() {
                pieces.push(Piece { members: here, fails, style: rng.random() });
            }
        }
        rest = &rest[k..];
    }
    Plan { n, deps, pieces, dylib_of }
}

/// Symbols that must fail: those that can reach a symbol of a failing unit.
fn oracle_failed(p: &Plan) -> Vec<bool> {
    let mut rdeps = vec![Vec::new(); p.n];
    for (i, ds) in p.deps.iter().enumerate() {
        for &d in ds {
            rdeps[d].push(i);
        }
    }
    let mut work: VecDeque<usize> = VecDeque::new();
    for piece in &p.pieces {
        if let Some(d) = piece.looked_up(&p.deps) {
            rdeps[d].extend(piece.members.iter().copied());
        }
        if piece.fails {
            work.extend(piece.members.iter().copied());
        }
    }
    let mut failed = vec![false; p.n];
    while let Some(s) = work.pop_front() {
        if !std::mem::replace(&mut failed[s], true) {
            work.extend(rdeps[s].iter().copied());
        }
    }
    failed
}

/// Defines `gen*` names on demand, finishing on another thread every other time (as a
/// generator that asks a server would).
struct Generated;

const GENERATED: usize = 24;

fn generated_addr(name: &str) -> Option<ExecutorAddr> {
    let i: usize = name.strip_prefix("gen")?.parse().ok()?;
    (i < GENERATED).then(|| ExecutorAddr(0x9000_0000 + i as u64))
}

impl DefinitionGenerator for Generated {
    fn try_to_generate(
        &self,
        dylib: &JitDylib,
        _: LookupKind,
        names: &[(SymbolName, SymbolLookupFlags)],
        done: GeneratorDone,
    ) {
        let defs: Vec<(SymbolName, SymbolDef)> = names
            .iter()
            .filter_map(|(n, _)| generated_addr(n).map(|a| (n.clone(), SymbolDef::new(a, SymbolFlags::EXPORTED))))
            .collect();
        let dylib = dylib.clone();
        let finish = move || {
            // Runs are serialized per dylib, so nothing else defined these meanwhile.
            done.finish(dylib.define_absolute(defs))
        };
        if names.len() % 2 == 0 {
            std::thread::spawn(finish);
        } else {
            finish();
        }
    }
}

fn addr_of(i: usize) -> ExecutorAddr {
    ExecutorAddr(0x10_0000 + 16 * i as u64)
}

/// What every unit of a case shares: names, dylibs, dependencies.
struct World {
    names: Vec<SymbolName>,
    index: jit_core::FxHashMap<SymbolName, usize>,
    dylibs: Vec<JitDylib>,
    plan: Plan,
}

struct StressUnit {
    world: Arc<World>,
    symbols: Interface,
    fails: bool,
    /// How this unit exercises the responsibility API before emitting.
    style: u8,
    looked_up: Option<usize>,
}

impl StressUnit {
    fn new(world: Arc<World>, members: &[usize], fails: bool, style: u8, looked_up: Option<usize>) -> Self {
        LIVE_UNITS.fetch_add(1, Ordering::SeqCst);
        let symbols = members.iter().map(|&i| (world.names[i].clone(), SymbolFlags::EXPORTED)).collect();
        StressUnit { world, symbols, fails, style, looked_up }
    }
}

impl Drop for StressUnit {
    fn drop(&mut self) {
        LIVE_UNITS.fetch_sub(1, Ordering::SeqCst);
    }
}

fn resolve(world: &World, mr: &mut MaterializationResponsibility) -> jit_core::Result<()> {
    let defs: Vec<(SymbolName, SymbolDef)> = mr
        .symbols()
        .map(|(n, _)| (n.clone(), SymbolDef::new(addr_of(world.index[n]), SymbolFlags::EXPORTED)))
        .collect();
    mr.notify_resolved(defs)
}

fn emit(world: &World, mr: MaterializationResponsibility) {
    let groups = mr
        .symbols()
        .map(|(n, _)| {
            let i = world.index[n];
            let on =
                world.plan.deps[i].iter().map(|&d| (world.dylibs[world.plan.dylib_of[d]].id(), world.names[d].clone()));
            EmissionGroup::new([n.clone()], on)
        })
        .collect::<Vec<_>>();
    // An error means a dependency failed first; the session has failed these symbols already.
    let _ = mr.notify_emitted(groups);
}

fn resolve_and_emit(world: &World, mut mr: MaterializationResponsibility) {
    match resolve(world, &mut mr) {
        Ok(()) => emit(world, mr),
        Err(e) => mr.fail(e),
    }
}

impl MaterializationUnit for StressUnit {
    fn name(&self) -> &str {
        "stress unit"
    }
    fn symbols(&self) -> &Interface {
        &self.symbols
    }
    fn materialize(self: Box<Self>, mut mr: MaterializationResponsibility) {
        if self.fails {
            return mr.fail(Error::msg("this unit fails"));
        }
        let world = self.world.clone();
        match self.style % 4 {
            // Hand back what nobody asked for, to be materialized by a fresh unit later.
            1 => {
                let requested = mr.requested_symbols();
                let rest: Vec<usize> =
                    mr.symbols().map(|(n, _)| n).filter(|n| !requested.contains(n)).map(|n| world.index[n]).collect();
                if !rest.is_empty() && !requested.is_empty() {
                    let again = StressUnit::new(world.clone(), &rest, false, 0, None);
                    if let Err(e) = mr.replace(again) {
                        return mr.fail(e);
                    }
                }
                resolve_and_emit(&world, mr);
            }
            // Split in two and finish the halves separately.
            2 => {
                let names: Vec<SymbolName> = mr.symbols().map(|(n, _)| n.clone()).collect();
                match mr.delegate(&names[..names.len() / 2]) {
                    Ok(part) => {
                        resolve_and_emit(&world, part);
                        resolve_and_emit(&world, mr);
                    }
                    Err(e) => mr.fail(e),
                }
            }
            // Resolve, then look a dependency up through the responsibility (every member then
            // depends on it and fails with it), then emit: JITLink's order. (Waiting for a
            // lookup before resolving could deadlock two units that wait on each other.)
            3 => {
                if let Err(e) = resolve(&world, &mut mr) {
                    return mr.fail(e);
                }
                match self.looked_up {
                    Some(d) => {
                        let order = SearchOrder::from(&world.dylibs[world.plan.dylib_of[d]]);
                        let set = SymbolLookupSet::new().with(world.names[d].clone());
                        mr.lookup(&order, set, RequiredState::Resolved, move |mr, r| match r {
                            Ok(_) => emit(&world, mr),
                            Err(e) => mr.fail(e),
                        });
                    }
                    None => emit(&world, mr),
                }
            }
            _ => resolve_and_emit(&world, mr),
        }
    }
    fn discard(&mut self, _: &JitDylib, name: &SymbolName) {
        self.symbols.remove(name);
    }
}

/// Runs one case, panicking with what went wrong.
fn run_case(seed: u64, n: usize, shape: Shape, threads: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let ndylibs = rng.random_range(1..=3);
    let plan = plan(&mut rng, n, shape, ndylibs);
    let expect_failed = oracle_failed(&plan);

    let es = if threads == 0 { ExecutionSession::in_place() } else { ExecutionSession::with_threads(threads).unwrap() };
    let dylibs: Vec<JitDylib> = (0..ndylibs).map(|d| es.create_dylib(&format!("lib{d}")).unwrap()).collect();
    let names: Vec<SymbolName> = (0..n).map(|i| es.intern(&format!("sym{i}"))).collect();
    let generated: Vec<SymbolName> = (0..GENERATED).map(|i| es.intern(&format!("gen{i}"))).collect();
    for d in &dylibs {
        d.add_generator(Generated);
    }
    let index = names.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect();
    let world = Arc::new(World { names, index, dylibs, plan });
    let p = &world.plan;

    for piece in &p.pieces {
        let looked_up = piece.looked_up(&p.deps);
        let unit = StressUnit::new(world.clone(), &piece.members, piece.fails, piece.style, looked_up);
        world.dylibs[p.dylib_of[piece.members[0]]].define(unit).unwrap();
    }
    let all_dylibs = world.dylibs.iter().fold(SearchOrder::new(), |o, d| o.then(d, jit_core::MatchFlags::All));

    // Two clients issue lookups of random subsets, at Ready and at Resolved, concurrently.
    let completions = Arc::new(AtomicUsize::new(0));
    let queries_per_client = 40;
    let checked: Vec<usize> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..2)
            .map(|c| {
                let (world, es, order, completions) =
                    (world.clone(), es.clone(), all_dylibs.clone(), completions.clone());
                let expect_failed = &expect_failed;
                let generated = &generated;
                let mut crng = StdRng::seed_from_u64(seed ^ ((c + 1) * 0x9e37_79b9));
                s.spawn(move || {
                    let (tx, rx) = crossbeam_channel::unbounded();
                    for q in 0..queries_per_client {
                        let k = crng.random_range(1..=world.plan.n.min(16));
                        let picks: Vec<usize> = (0..k).map(|_| crng.random_range(0..world.plan.n)).collect();
                        let mut set: SymbolLookupSet = picks.iter().map(|&i| world.names[i].clone()).collect();
                        for _ in 0..crng.random_range(0..=2) {
                            set.push(generated[crng.random_range(0..GENERATED)].clone(), SymbolLookupFlags::Required);
                        }
                        let required =
                            if crng.random_bool(0.5) { RequiredState::Ready } else { RequiredState::Resolved };
                        let (tx, done) = (tx.clone(), completions.clone());
                        if q % 5 == 0 {
                            let r = es.lookup_blocking(&order, set, required);
                            done.fetch_add(1, Ordering::SeqCst);
                            tx.send((picks, required, r)).unwrap();
                        } else {
                            es.lookup(&order, set, required, move |r| {
                                done.fetch_add(1, Ordering::SeqCst);
                                tx.send((picks, required, r)).unwrap();
                            });
                        }
                    }
                    drop(tx);
                    let mut checked = 0;
                    while let Ok((picks, required, r)) = rx.recv_timeout(WATCHDOG) {
                        check(&world, expect_failed, &picks, required, r);
                        checked += 1;
                    }
                    checked
                })
            })
            .collect();
        clients.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(checked.iter().sum::<usize>(), 2 * queries_per_client, "every query answered ({:?})", es.census());
    assert_eq!(completions.load(Ordering::SeqCst), 2 * queries_per_client, "every query answered exactly once");

    // Everything that should succeed does, and the graph is left empty.
    let ok: SymbolLookupSet = (0..n).filter(|&i| !expect_failed[i]).map(|i| world.names[i].clone()).collect();
    let found =
        es.lookup_blocking(&all_dylibs, ok, RequiredState::Ready).expect("all non-failing symbols become Ready");
    for (name, def) in &found {
        assert_eq!(def.addr, addr_of(world.index[name]));
    }
    for i in (0..n).filter(|&i| expect_failed[i]) {
        let one = SymbolLookupSet::new().with(world.names[i].clone());
        let r = es.lookup_blocking(&all_dylibs, one, RequiredState::Ready);
        assert!(matches!(r, Err(Error::FailedToMaterialize { .. })), "sym{i} must fail: {r:?}");
    }
    let census = es.census();
    assert_eq!(census.queries, 0, "no query left behind");
    assert_eq!(census.waiting_groups, 0, "no emitted group left waiting");
    es.end_session().unwrap();
    drop(world);
    drop(es);
}

fn check(
    world: &World,
    expect_failed: &[bool],
    picks: &[usize],
    required: RequiredState,
    r: jit_core::Result<jit_core::SymbolMap>,
) {
    let any_fails = picks.iter().any(|&i| expect_failed[i]);
    match r {
        Ok(map) => {
            assert!(required == RequiredState::Resolved || !any_fails, "a Ready lookup of failing symbols succeeded");
            for &i in picks {
                assert_eq!(map[&world.names[i]].addr, addr_of(i), "sym{i} has the wrong address");
            }
            for (name, def) in &map {
                if let Some(a) = generated_addr(name) {
                    assert_eq!(def.addr, a, "{name} has the wrong address");
                }
            }
        }
        Err(Error::FailedToMaterialize { symbols, cause }) => {
            assert!(any_fails, "lookup failed though none of its symbols should: {cause}");
            for q in symbols {
                assert!(expect_failed[world.index[&q.symbol]], "{} reported failed but should not be", q.symbol);
            }
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn run_watched(seed: u64, n: usize, shape: Shape, threads: usize) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| run_case(seed, n, shape, threads));
        let _ = tx.send(r.map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        }));
    });
    let what = format!("seed={seed} n={n} shape={shape:?} threads={threads}");
    let rerun = format!("STRESS_SEED={seed} STRESS_ROUNDS={}", seed / 100 + 1);
    match rx.recv_timeout(WATCHDOG) {
        Ok(Ok(())) => {}
        Ok(Err(msg)) => panic!("stress case failed ({what}; rerun with {rerun}): {msg}"),
        Err(_) => panic!("stress case hung ({what}; rerun with {rerun})"),
    }
}

#[test]
fn random_graphs_complete_exactly_once_with_the_right_answers_and_leak_nothing() {
    let units_before = LIVE_UNITS.load(Ordering::SeqCst);
    let only: Option<u64> = std::env::var("STRESS_SEED").ok().and_then(|s| s.parse().ok());
    let rounds: u64 = std::env::var("STRESS_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    for round in 0..rounds {
        let mut seed = 1 + round * 100;
        for threads in [0, 1, 2, 8] {
            for shape in [Shape::Dag, Shape::Cyclic, Shape::BigCycle, Shape::Chain] {
                for n in [1, 7, 100, 1_000, 10_000] {
                    seed += 1;
                    if only.is_none_or(|s| s == seed) {
                        run_watched(seed, n, shape, threads);
                    }
                }
            }
        }
    }
    assert_eq!(LIVE_UNITS.load(Ordering::SeqCst), units_before, "every unit was dropped");
    assert_eq!(live_responsibilities(), 0, "every responsibility was consumed or dropped");
}
