//! The interpreter and its tier-up: runs bytecode, counts calls, asks the JIT for a hot
//! function's native code without waiting for it, and calls that code once it is Ready.
//!
//! Contract: a [`Vm`] is used from one thread (the interpreter's); only a function's
//! [`NativeCode`] is shared, with the lookup callback that publishes it on a pool thread.
//! Native code holds the `Vm`'s address (it calls back into it for the functions it does not
//! call directly, and for `print`), so a `Vm` lives in a `Box` and is never moved out of it;
//! dropping it ends the JIT session, which fails the compiles still in flight.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use inkwell::context::Context;
use orcjit::core::{ExecutorAddr, Interface, RequiredState, SymbolDef, SymbolFlags, SymbolLookupSet, SymbolName};
use orcjit::layers::{IrModule, Jit, ModuleBuilder};

use crate::lang::{self, Op, Program};
use crate::native::{self, Callee, NativeSpec};

/// The passes run on each function before code generation (at -O2): locals from stack slots
/// to registers, clean-up, and recursion with an accumulator (`fib(n - 1) + fib(n - 2)`)
/// made into a loop. For these programs it gives code as fast as `default<O2>` in half the
/// compile time, and compile time is what a tier-up waits for.
const PIPELINE: &str = "function(sroa,instcombine,simplifycfg,tailcallelim)";

/// Interpreted frames one activation of the interpreter may stack up (its stack is on the
/// heap; this turns runaway recursion into an error rather than exhausted memory).
const MAX_DEPTH: usize = 1_000_000;

/// How a [`Vm`] runs.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Interpreted calls after which a function is compiled.
    pub threshold: u64,
    /// Compile hot functions (else interpret everything).
    pub tier_up: bool,
    /// Threads of the JIT's pool.
    pub threads: usize,
}

/// Runs a program: bytecode first, native code for the functions that get hot.
pub struct Vm {
    program: Program,
    functions: Vec<FunctionState>,
    threshold: u64,
    jit: Option<Jit>,
    in_flight: Arc<InFlight>,
    out: RefCell<Box<dyn Write>>,
    clock: ModeClock,
    requests: Cell<u64>,
    longest_pause: Cell<Duration>,
    total_pause: Cell<Duration>,
    calls_into_native: Cell<u64>,
    host_calls: Cell<u64>,
}

/// The interpreter's view of one function.
struct FunctionState {
    calls: Cell<u64>,
    /// Its module was defined in the JIT (so native code may call its symbol directly).
    requested: Cell<bool>,
    native: Arc<NativeCode>,
}

/// A function's native code: set once, by the lookup callback, when its module is Ready.
#[derive(Default)]
struct NativeCode {
    /// The address of its `tierup.entry.` symbol (what the interpreter calls); 0 until Ready.
    entry: AtomicUsize,
    /// The address of its `tierup.fn.` symbol (what native code calls); 0 until Ready. Native
    /// code reads it at this address, so it lives as long as the `Vm`.
    body: AtomicUsize,
    compile: Mutex<Compile>,
}

#[derive(Default)]
struct Compile {
    requested: Option<Instant>,
    /// From the request to Ready.
    latency: Option<Duration>,
    error: Option<String>,
}

impl NativeCode {
    fn compile(&self) -> MutexGuard<'_, Compile> {
        self.compile.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, result: Result<(ExecutorAddr, ExecutorAddr), String>) {
        let mut compile = self.compile();
        match result {
            Ok((entry, body)) => {
                compile.latency = compile.requested.map(|t| t.elapsed());
                self.body.store(body.0 as usize, Ordering::Release);
                self.entry.store(entry.0 as usize, Ordering::Release);
            }
            Err(e) => compile.error = Some(e),
        }
    }
}

/// Compiles requested and not finished yet.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    done: Condvar,
}

impl InFlight {
    fn count(&self) -> MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin(&self) {
        *self.count() += 1;
    }

    fn end(&self) {
        let mut count = self.count();
        *count -= 1;
        if *count == 0 {
            self.done.notify_all();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Idle,
    Interpreting,
    Native,
}

/// Time per mode, read from the clock at each switch between modes only (so calls that stay
/// in native code, or in the interpreter, cost nothing to account).
struct ModeClock {
    mode: Cell<Mode>,
    since: Cell<Instant>,
    interpreting: Cell<Duration>,
    native: Cell<Duration>,
    switches: Cell<u64>,
}

impl ModeClock {
    fn switch(&self, to: Mode) -> Mode {
        let from = self.mode.get();
        if from != to {
            let now = Instant::now();
            let spent = now - self.since.get();
            match from {
                Mode::Interpreting => self.interpreting.set(self.interpreting.get() + spent),
                Mode::Native => self.native.set(self.native.get() + spent),
                Mode::Idle => {}
            }
            self.since.set(now);
            self.mode.set(to);
            self.switches.set(self.switches.get() + 1);
        }
        from
    }
}

/// Where one function stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tier {
    Interpreted,
    /// Requested; not Ready yet.
    Compiling,
    /// Ready `latency` after the request.
    Native {
        latency: Duration,
    },
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct FunctionReport {
    pub name: String,
    pub interpreted_calls: u64,
    pub tier: Tier,
}

/// Where time went, and what was compiled.
#[derive(Clone, Debug)]
pub struct Report {
    pub interpreting: Duration,
    pub native: Duration,
    /// Switches between interpreter and native code (each reads the clock once).
    pub switches: u64,
    /// Tier-up requests, and the time the interpreter spent making them.
    pub requests: u64,
    pub longest_pause: Duration,
    pub total_pause: Duration,
    /// Calls from the interpreter into native code.
    pub calls_into_native: u64,
    /// Calls from native code through `tierup_call`.
    pub host_calls: u64,
    pub functions: Vec<FunctionReport>,
}

impl Report {
    pub fn compiled(&self) -> usize {
        self.functions.iter().filter(|f| matches!(f.tier, Tier::Native { .. })).count()
    }
}

type Entry = unsafe extern "C" fn(*const i64) -> i64;

struct Frame {
    function: usize,
    pc: usize,
    base: usize,
}

impl Vm {
    /// A VM for `program` that prints to `out`; with tier-up, a JIT (its pool started, the
    /// host functions native code calls defined in its main dylib).
    pub fn new(program: Program, config: Config, out: Box<dyn Write>) -> Result<Box<Vm>, String> {
        let jit = if config.tier_up { Some(jit(config.threads).map_err(|e| format!("JIT setup: {e}"))?) } else { None };
        let functions = program
            .functions
            .iter()
            .map(|_| FunctionState { calls: Cell::new(0), requested: Cell::new(false), native: Arc::default() })
            .collect();
        Ok(Box::new(Vm {
            program,
            functions,
            threshold: config.threshold,
            jit,
            in_flight: Arc::default(),
            out: RefCell::new(out),
            clock: ModeClock {
                mode: Cell::new(Mode::Idle),
                since: Cell::new(Instant::now()),
                interpreting: Cell::default(),
                native: Cell::default(),
                switches: Cell::new(0),
            },
            requests: Cell::new(0),
            longest_pause: Cell::default(),
            total_pause: Cell::default(),
            calls_into_native: Cell::new(0),
            host_calls: Cell::new(0),
        }))
    }

    /// Runs `main` (with `arg`, if it takes one) and returns what it returns.
    pub fn run_main(&self, arg: i64) -> Result<i64, String> {
        let main = self.program.main;
        let args: &[i64] = if self.program.functions[main].arity == 1 { &[arg] } else { &[] };
        self.call(main, args)
    }

    /// Blocks until every compile requested so far has finished (or failed).
    pub fn wait_for_compiles(&self) {
        let mut count = self.in_flight.count();
        while *count > 0 {
            count = self.in_flight.done.wait(count).unwrap_or_else(PoisonError::into_inner);
        }
    }

    pub fn report(&self) -> Report {
        let functions = self
            .program
            .functions
            .iter()
            .zip(&self.functions)
            .map(|(f, state)| {
                let compile = state.native.compile();
                let tier = match (&compile.error, compile.latency, state.requested.get()) {
                    (Some(e), _, _) => Tier::Failed(e.clone()),
                    (None, Some(latency), _) => Tier::Native { latency },
                    (None, None, true) => Tier::Compiling,
                    (None, None, false) => Tier::Interpreted,
                };
                FunctionReport { name: f.name.clone(), interpreted_calls: state.calls.get(), tier }
            })
            .collect();
        Report {
            interpreting: self.clock.interpreting.get(),
            native: self.clock.native.get(),
            switches: self.clock.switches.get(),
            requests: self.requests.get(),
            longest_pause: self.longest_pause.get(),
            total_pause: self.total_pause.get(),
            calls_into_native: self.calls_into_native.get(),
            host_calls: self.host_calls.get(),
            functions,
        }
    }

    /// Calls function `f`: natively if it is Ready, else in the interpreter.
    fn call(&self, f: usize, args: &[i64]) -> Result<i64, String> {
        if let Some(entry) = self.native_entry(f) {
            return Ok(self.call_native(entry, args));
        }
        let outer = self.clock.switch(Mode::Interpreting);
        let result = self.interpret(f, args);
        self.clock.switch(outer);
        result
    }

    #[inline]
    fn native_entry(&self, f: usize) -> Option<usize> {
        // Acquire: pairs with the Release in `publish`, after which the code is Ready.
        let entry = self.functions[f].native.entry.load(Ordering::Acquire);
        (entry != 0).then_some(entry)
    }

    fn call_native(&self, entry: usize, args: &[i64]) -> i64 {
        let outer = self.clock.switch(Mode::Native);
        if outer != Mode::Native {
            self.calls_into_native.set(self.calls_into_native.get() + 1);
        }
        // SAFETY: `entry` is the Ready address of a `tierup.entry.` symbol (published by the
        // lookup callback), an `i64 (ptr)` that reads as many i64 as its function's arity,
        // which `args` holds; the memory stays mapped until the session ends, in `drop`.
        let result = unsafe { std::mem::transmute::<usize, Entry>(entry)(args.as_ptr()) };
        self.clock.switch(outer);
        result
    }

    /// Counts a call of `f` about to be interpreted; the call that reaches the threshold
    /// requests native code.
    #[inline]
    fn count_call(&self, f: usize) {
        let state = &self.functions[f];
        let calls = state.calls.get() + 1;
        state.calls.set(calls);
        if calls == self.threshold {
            self.tier_up(f);
        }
    }

    /// Requests native code for `f` and returns at once: the interpreter's only pause.
    fn tier_up(&self, f: usize) {
        let Some(jit) = &self.jit else { return };
        let started = Instant::now();
        if let Err(e) = self.request_native(jit, f, started) {
            self.functions[f].native.compile().error = Some(e);
        }
        let pause = started.elapsed();
        self.requests.set(self.requests.get() + 1);
        self.total_pause.set(self.total_pause.get() + pause);
        self.longest_pause.set(self.longest_pause.get().max(pause));
    }

    /// Defines `f`'s module (built later, on the compile thread) and looks its entry up
    /// asynchronously; the callback publishes the address.
    fn request_native(&self, jit: &Jit, f: usize, started: Instant) -> Result<(), String> {
        let function = &self.program.functions[f];
        let state = &self.functions[f];
        let callees = self
            .program
            .callees(f)
            .into_iter()
            .map(|g| {
                let callee = &self.program.functions[g];
                // `f` itself, or a callee with a module of its own, is linked to directly; a
                // direct call to one not Ready yet only makes this module wait for it.
                let direct = g == f || self.functions[g].requested.get();
                let slot = self.functions[g].native.body.as_ptr() as usize;
                Callee { index: g as u32, name: callee.name.clone(), arity: callee.arity, direct, slot }
            })
            .collect();
        let spec = NativeSpec {
            name: function.name.clone(),
            arity: function.arity,
            locals: function.locals,
            code: function.code.clone(),
            callees,
            vm: std::ptr::from_ref(self) as usize,
        };
        let session = jit.session();
        let flags = SymbolFlags::EXPORTED | SymbolFlags::CALLABLE;
        let entry = session.intern(&native::entry_symbol(&function.name));
        let body = session.intern(&native::function_symbol(&function.name));
        let interface = Interface::new().with(body.clone(), flags).with(entry.clone(), flags);
        let build: ModuleBuilder = Box::new(move |context: &Context| native::build(context, &spec));
        jit.add_ir(IrModule::built(format!("tierup:{}", function.name), interface, build))
            .map_err(|e| e.to_string())?;
        state.requested.set(true);
        state.native.compile().requested = Some(started);
        self.in_flight.begin();
        let native = state.native.clone();
        let in_flight = self.in_flight.clone();
        let names = SymbolLookupSet::new().with(entry.clone()).with(body.clone());
        session.lookup(&jit.main_dylib().search_order(), names, RequiredState::Ready, move |result| {
            let addrs = result.map_err(|e| e.to_string()).and_then(|found| {
                let addr = |name: &SymbolName| {
                    found.get(name).map(|def| def.addr).ok_or_else(|| format!("'{}' not found", name.as_str()))
                };
                Ok((addr(&entry)?, addr(&body)?))
            });
            native.publish(addrs);
            in_flight.end();
        });
        Ok(())
    }

    fn print(&self, value: i64) {
        // As C's printf, a failed write does not stop the program.
        let _ = writeln!(self.out.borrow_mut(), "{value}");
    }

    /// Interprets `f` until it returns; calls to Ready functions go to native code.
    fn interpret(&self, f: usize, args: &[i64]) -> Result<i64, String> {
        let functions = &self.program.functions;
        self.count_call(f);
        let mut stack: Vec<i64> = Vec::with_capacity(256);
        stack.extend_from_slice(args);
        stack.resize(functions[f].locals as usize, 0);
        let mut frames: Vec<Frame> = Vec::new();
        let (mut current, mut pc, mut base) = (f, 0, 0);
        let mut code: &[Op] = &functions[f].code;
        loop {
            let op = code[pc];
            pc += 1;
            match op {
                Op::Const(v) => stack.push(v),
                Op::Load(i) => stack.push(stack[base + i as usize]),
                Op::Store(i) => {
                    let v = pop(&mut stack);
                    stack[base + i as usize] = v;
                }
                Op::Add => binary(&mut stack, i64::wrapping_add),
                Op::Sub => binary(&mut stack, i64::wrapping_sub),
                Op::Mul => binary(&mut stack, i64::wrapping_mul),
                Op::Div => binary(&mut stack, lang::div),
                Op::Rem => binary(&mut stack, lang::rem),
                Op::Eq => binary(&mut stack, |a, b| i64::from(a == b)),
                Op::Ne => binary(&mut stack, |a, b| i64::from(a != b)),
                Op::Lt => binary(&mut stack, |a, b| i64::from(a < b)),
                Op::Le => binary(&mut stack, |a, b| i64::from(a <= b)),
                Op::Gt => binary(&mut stack, |a, b| i64::from(a > b)),
                Op::Ge => binary(&mut stack, |a, b| i64::from(a >= b)),
                Op::Neg => {
                    let v = pop(&mut stack);
                    stack.push(v.wrapping_neg());
                }
                Op::Not => {
                    let v = pop(&mut stack);
                    stack.push(i64::from(v == 0));
                }
                Op::Jump(t) => pc = t as usize,
                Op::JumpIfZero(t) => {
                    if pop(&mut stack) == 0 {
                        pc = t as usize;
                    }
                }
                Op::Call(g) => {
                    let g = g as usize;
                    let at = stack.len() - functions[g].arity as usize;
                    if let Some(entry) = self.native_entry(g) {
                        let v = self.call_native(entry, &stack[at..]);
                        stack.truncate(at);
                        stack.push(v);
                        continue;
                    }
                    if frames.len() == MAX_DEPTH {
                        return Err(format!("calls nested deeper than {MAX_DEPTH} in '{}'", functions[g].name));
                    }
                    self.count_call(g);
                    frames.push(Frame { function: current, pc, base });
                    (current, pc, base) = (g, 0, at);
                    stack.resize(at + functions[g].locals as usize, 0);
                    code = &functions[g].code;
                }
                Op::Print => {
                    let v = pop(&mut stack);
                    self.print(v);
                    stack.push(v);
                }
                Op::Pop => {
                    pop(&mut stack);
                }
                Op::Return => {
                    let v = pop(&mut stack);
                    stack.truncate(base);
                    let Some(frame) = frames.pop() else { return Ok(v) };
                    stack.push(v);
                    (current, pc, base) = (frame.function, frame.pc, frame.base);
                    code = &functions[current].code;
                }
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(jit) = self.jit.take() {
            if let Err(e) = jit.end() {
                eprintln!("tierup: ending the JIT session: {e}");
            }
        }
    }
}

#[inline]
fn pop(stack: &mut Vec<i64>) -> i64 {
    stack.pop().expect("the bytecode compiler balances the operand stack")
}

#[inline]
fn binary(stack: &mut Vec<i64>, op: impl Fn(i64, i64) -> i64) {
    let b = pop(stack);
    let a = pop(stack);
    stack.push(op(a, b));
}

/// A JIT with `threads` compile threads that sees no process symbols: native code reaches
/// only its own functions and the host functions defined here.
fn jit(threads: usize) -> orcjit::core::Result<Jit> {
    let jit = Jit::builder().threads(threads).process_symbols(false).ir_pipeline(PIPELINE).build()?;
    let session = jit.session();
    let flags = SymbolFlags::EXPORTED | SymbolFlags::CALLABLE;
    let host =
        |name: &str, addr: *const ()| (session.intern(name), SymbolDef::new(ExecutorAddr::from_ptr(addr), flags));
    jit.main_dylib().define_absolute([
        host(native::CALL_SYMBOL, tierup_call as *const ()),
        host(native::PRINT_SYMBOL, tierup_print as *const ()),
    ])?;
    Ok(jit)
}

/// Native code calling a function that was not Ready when it read its slot: interpreted,
/// unless it became Ready since. A runtime error ends the process (it cannot unwind through
/// native frames).
extern "C" fn tierup_call(vm: *const Vm, function: i64, args: *const i64, count: i64) -> i64 {
    // SAFETY: native code passes the address of the boxed Vm that generated it, which is alive
    // while that code runs (only ever called by that Vm, on its thread), and `count` i64 in a
    // buffer on its stack (not read when there are none, since the buffer is then empty).
    let (vm, args) =
        unsafe { (&*vm, if count == 0 { &[][..] } else { std::slice::from_raw_parts(args, count as usize) }) };
    vm.host_calls.set(vm.host_calls.get() + 1);
    match catch_unwind(AssertUnwindSafe(|| vm.call(function as usize, args))) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => fatal(&e),
        Err(_) => fatal("the interpreter panicked"),
    }
}

/// `print` in native code.
extern "C" fn tierup_print(vm: *const Vm, value: i64) -> i64 {
    // SAFETY: as in `tierup_call`: the live Vm that generated the calling code.
    let vm = unsafe { &*vm };
    vm.print(value);
    value
}

/// Reports a runtime error and exits, as `main` does for one met outside native code.
fn fatal(message: &str) -> ! {
    let _ = std::io::stdout().flush();
    eprintln!("tierup: {message}");
    std::process::exit(1)
}
