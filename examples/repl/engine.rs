//! The JIT side of the REPL: what the session knows (functions, their versions, host
//! functions), the checks a statement passes before anything reaches the JIT, and how a
//! definition becomes a lazy unit behind a stub, a redefinition a stub redirection, and an
//! expression a module compiled at once, run, and removed.
//!
//! Symbols in the main dylib, for a function `f`:
//! - `f`: its public lazy stub, defined with the first `def f` and kept for the session. Every
//!   call to `f` (from any body, or an expression) goes through it.
//! - `f.v1`, `f.v2`, ...: the bodies, one unit each, whose IR is generated from the kept syntax
//!   tree only when the unit is materialized, i.e. on the first call through a stub, on the
//!   JIT's pool.
//! - `f.v2.stub`, ...: a redefinition's own lazy stub. The public stub is redirected to it, so
//!   the new body too is compiled only when first called; once it is, the public stub is
//!   pointed at the body itself. The replaced version's tracker is removed (its body, if it
//!   was compiled, and its stub), which is safe because no code runs between statements and
//!   nothing but a stub refers to a body.
//!
//! A call through a lazy stub whose body cannot be compiled or linked aborts the process (there
//! is no caller to return an error to). So nothing runs before the checks here pass: every call
//! names a known function with the right number of arguments, and everything an expression can
//! reach is defined. A definition may call a function that is not defined yet (mutual
//! recursion); that call fixes the function's arity, and an expression reaching it is refused
//! until it is defined.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Display, Write};
use std::sync::{Arc, Mutex, PoisonError};

use orcjit::core::{ExecutorAddr, Interface, JitDylib, ResourceTracker, SymbolDef, SymbolFlags, SymbolName};
use orcjit::layers::{IrModule, Jit, LazyReexports, LazyStub};

use super::codegen;
use super::syntax::{Expr, Prototype};

/// A function of this process the language can call without an `extern`.
pub struct HostFunction {
    pub name: &'static str,
    pub params: &'static [&'static str],
    pub addr: ExecutorAddr,
}

enum Function {
    /// In this process: built in, or declared with `extern`.
    Host {
        params: Vec<String>,
    },
    /// Called by a definition but not defined yet; that call fixed its arity.
    Declared {
        arity: usize,
        caller: String,
    },
    Defined(Definition),
}

impl Function {
    fn arity(&self) -> usize {
        match self {
            Function::Host { params } => params.len(),
            Function::Declared { arity, .. } => *arity,
            Function::Defined(def) => def.params.len(),
        }
    }
}

struct Definition {
    params: Vec<String>,
    /// The current version: 1 for the first definition.
    version: u32,
    /// The functions the current version calls.
    callees: BTreeSet<String>,
    /// Owns the current version's body (and, from version 2, its own stub).
    tracker: ResourceTracker,
}

/// A module built by code generation: its name and the thread that built it.
struct Built {
    module: String,
    thread: String,
}

pub struct Engine {
    jit: Jit,
    stubs: LazyReexports,
    functions: BTreeMap<String, Function>,
    built: Arc<Mutex<Vec<Built>>>,
    expressions: u64,
}

fn body_symbol(name: &str, version: u32) -> String {
    format!("{name}.v{version}")
}

fn own_stub_symbol(name: &str, version: u32) -> String {
    format!("{name}.v{version}.stub")
}

fn arguments(n: usize) -> String {
    if n == 1 { "1 argument".to_string() } else { format!("{n} arguments") }
}

fn text(e: impl Display) -> String {
    e.to_string()
}

impl Engine {
    /// A JIT compiling on a pool of two threads, whose main dylib sees this process's symbols
    /// and `host`'s functions.
    pub fn new(host: &[HostFunction]) -> Result<Engine, String> {
        let jit = Jit::builder().threads(2).build().map_err(text)?;
        let stubs = LazyReexports::new(jit.session(), jit.memory_manager().clone()).map_err(text)?;
        let flags = SymbolFlags::EXPORTED | SymbolFlags::CALLABLE;
        let defs = host.iter().map(|h| (jit.session().intern(h.name), SymbolDef::new(h.addr, flags)));
        jit.main_dylib().define_absolute(defs).map_err(text)?;
        let functions = host
            .iter()
            .map(|h| (h.name.to_string(), Function::Host { params: h.params.iter().map(|p| p.to_string()).collect() }))
            .collect();
        Ok(Engine { jit, stubs, functions, built: Arc::default(), expressions: 0 })
    }

    fn main(&self) -> &JitDylib {
        self.jit.main_dylib()
    }

    fn intern(&self, name: &str) -> SymbolName {
        self.jit.session().intern(name)
    }

    /// `def`: checks the definition, then adds its body as a unit (nothing is compiled) behind
    /// the function's public stub. Returns what to tell the user.
    pub fn define(&mut self, proto: Prototype, body: Expr) -> Result<String, String> {
        let name = proto.name.as_str();
        let arity = proto.params.len();
        let version = match self.functions.get(name) {
            Some(Function::Host { .. }) => return Err(format!("'{name}' is a host function; it cannot be defined")),
            Some(Function::Declared { arity: a, caller }) if *a != arity => {
                return Err(format!("'{caller}' calls '{name}' with {}; define it with as many", arguments(*a)));
            }
            Some(Function::Defined(def)) if def.params.len() != arity => {
                return Err(format!(
                    "'{name}' takes {}; a redefinition must keep that, as its callers were compiled for it",
                    arguments(def.params.len())
                ));
            }
            Some(Function::Defined(def)) => def.version + 1,
            Some(Function::Declared { .. }) | None => {
                if self.main().lookup(name).is_ok() {
                    return Err(format!(
                        "'{name}' is a function of this process: declare it with 'extern {name}(...)' or pick another name"
                    ));
                }
                1
            }
        };
        let mut check = Check::new(&self.functions, Some((name, arity)), proto.params.clone());
        check.expr(&body)?;
        let Check { declared, callees, .. } = check;

        let tracker = self.main().create_tracker();
        let module = self.module(&body_symbol(name, version), proto.params.clone(), body);
        self.jit.ir_layer().add_with_tracker(self.main(), module, Some(&tracker)).map_err(text)?;
        if let Err(e) = self.install(name, version, &tracker) {
            let _ = tracker.remove();
            return Err(e);
        }
        let def = Definition { params: proto.params.clone(), version, callees, tracker };
        let replaced = self.functions.insert(name.to_string(), Function::Defined(def));
        for (callee, arity) in declared {
            self.functions.entry(callee).or_insert_with(|| Function::Declared { arity, caller: name.to_string() });
        }
        self.forget_unused_declarations();
        if let Some(Function::Defined(old)) = replaced {
            old.tracker.remove().map_err(|e| format!("'{name}' is redefined, but its old version stays: {e}"))?;
            return Ok(format!(
                "redefined {proto}: version {version}, compiled when first called; its callers now reach it"
            ));
        }
        Ok(format!("defined {proto}, compiled when first called"))
    }

    /// Puts `version` of `name` behind the public stub `name`. The first version is the
    /// public stub's own body. A later one gets a lazy stub of its own, to which the public
    /// stub is redirected, so that it too is compiled only when first called.
    fn install(&self, name: &str, version: u32, tracker: &ResourceTracker) -> Result<(), String> {
        let main = self.main();
        let body = self.intern(&body_symbol(name, version));
        let public = self.intern(name);
        if version == 1 {
            // The public stub lasts as long as the session: the default tracker holds it.
            return self.stubs.add(main, vec![LazyStub::new(public, main, body)], None).map_err(text);
        }
        let own = self.intern(&own_stub_symbol(name, version));
        self.stubs.add(main, vec![LazyStub::new(own.clone(), main, body)], Some(tracker)).map_err(text)?;
        // Looking a stub up makes it (it gets an address) without compiling its body; a stub
        // must be made before it can be redirected.
        let target = main.lookup(own.as_str()).map_err(text)?.addr;
        main.lookup(name).map_err(text)?;
        self.stubs.redirect(main, &public, target).map_err(text)
    }

    /// `extern`: a function of this process, found by the JIT's process-symbols generator.
    pub fn declare_extern(&mut self, proto: Prototype) -> Result<String, String> {
        let name = proto.name.as_str();
        let arity = proto.params.len();
        match self.functions.get(name) {
            Some(Function::Host { params }) if params.len() == arity => return Ok(format!("extern {proto}")),
            Some(Function::Host { params }) => {
                return Err(format!("'{name}' is already declared with {}", arguments(params.len())));
            }
            Some(Function::Defined(_)) => return Err(format!("'{name}' is defined here; an extern cannot replace it")),
            Some(Function::Declared { arity: a, caller }) if *a != arity => {
                return Err(format!("'{caller}' calls '{name}' with {}; declare it with as many", arguments(*a)));
            }
            Some(Function::Declared { .. }) | None => {}
        }
        let addr = self.main().lookup(name).map_err(|_| format!("no function '{name}' in this process"))?.addr;
        self.functions.insert(name.to_string(), Function::Host { params: proto.params.clone() });
        Ok(format!("extern {proto} at {addr}"))
    }

    /// A top-level expression: checked, compiled at once into a function of no arguments,
    /// called, and removed (its code freed) after the call.
    pub fn evaluate(&mut self, expr: Expr) -> Result<f64, String> {
        let mut check = Check::new(&self.functions, None, Vec::new());
        check.expr(&expr)?;
        self.check_runnable(&check.callees)?;
        self.expressions += 1;
        let symbol = format!("__expr.{}", self.expressions);
        let tracker = self.main().create_tracker();
        let module = self.module(&symbol, Vec::new(), expr);
        self.jit.ir_layer().add_with_tracker(self.main(), module, Some(&tracker)).map_err(text)?;
        let value = self.jit.lookup::<unsafe extern "C" fn() -> f64>(&symbol).map(|run| {
            // SAFETY: `symbol` is the function generated above, `double(void)`; every function
            // it can reach is defined with the arity it calls it with (checked above), so each
            // lazy call it makes finds a body.
            unsafe { run() }
        });
        let removed = tracker.remove();
        self.shortcut_redirections();
        let value = value.map_err(text)?;
        removed.map_err(|e| format!("the expression ran, but its code stays: {e}"))?;
        Ok(value)
    }

    /// A unit for `double symbol(params...) { body }`, whose IR is generated when (and where)
    /// it is compiled.
    fn module(&self, symbol: &str, params: Vec<String>, body: Expr) -> IrModule {
        let interface = Interface::new().with(self.intern(symbol), SymbolFlags::EXPORTED | SymbolFlags::CALLABLE);
        let built = self.built.clone();
        let name = symbol.to_string();
        IrModule::built(
            symbol,
            interface,
            Box::new(move |context| {
                let module = codegen::function(context, &name, &params, &body)?;
                let thread = std::thread::current().name().unwrap_or("unnamed thread").to_string();
                built.lock().unwrap_or_else(PoisonError::into_inner).push(Built { module: name, thread });
                Ok(module)
            }),
        )
    }

    /// Refuses to run what could reach a function that is not defined.
    fn check_runnable(&self, callees: &BTreeSet<String>) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        let mut work: Vec<(&str, Option<&str>)> = callees.iter().map(|c| (c.as_str(), None)).collect();
        while let Some((name, caller)) = work.pop() {
            if !seen.insert(name) {
                continue;
            }
            match self.functions.get(name) {
                Some(Function::Host { .. }) => {}
                Some(Function::Defined(def)) => work.extend(def.callees.iter().map(|c| (c.as_str(), Some(name)))),
                Some(Function::Declared { .. }) | None => {
                    return Err(match caller {
                        Some(caller) => format!("cannot run this yet: '{caller}' calls '{name}', which is not defined"),
                        None => format!("'{name}' is not defined yet"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Points the public stub of each redefined function whose body is compiled at that body,
    /// so that a call costs one indirect jump again, not two.
    fn shortcut_redirections(&self) {
        for (name, function) in &self.functions {
            let Function::Defined(def) = function else { continue };
            if def.version < 2 {
                continue;
            }
            let own = self.intern(&own_stub_symbol(name, def.version));
            let Some(body) = self.stubs.stub_status(self.main(), &own).and_then(|s| s.target) else { continue };
            let public = self.intern(name);
            if self.stubs.stub_status(self.main(), &public).and_then(|s| s.target) != Some(body) {
                // Failing leaves the call going through both stubs, which is still right.
                let _ = self.stubs.redirect(self.main(), &public, body);
            }
        }
    }

    /// Drops the declarations no current version calls any more.
    fn forget_unused_declarations(&mut self) {
        let called: BTreeSet<String> = self
            .functions
            .values()
            .filter_map(|f| match f {
                Function::Defined(def) => Some(def.callees.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect();
        self.functions.retain(|name, f| !matches!(f, Function::Declared { .. }) || called.contains(name));
    }

    /// What is defined, which versions were compiled, and by whom.
    pub fn stats(&self) -> String {
        let built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        let compiled = |symbol: &str| built.iter().any(|b| b.module == symbol);
        let mut out = String::new();
        let (mut host, mut declared) = (Vec::new(), Vec::new());
        let _ = writeln!(out, "defined functions:");
        for (name, function) in &self.functions {
            match function {
                Function::Host { params } => host.push(format!("{name}({})", params.join(", "))),
                Function::Declared { arity, caller } => declared.push(format!("{name}/{arity} (called by {caller})")),
                Function::Defined(def) => {
                    let versions: Vec<String> = (1..=def.version)
                        .filter(|v| compiled(&body_symbol(name, *v)))
                        .map(|v| format!("v{v}"))
                        .collect();
                    let versions = if versions.is_empty() { "none".to_string() } else { versions.join(" ") };
                    let proto = format!("{name}({})", def.params.join(", "));
                    let _ = writeln!(out, "  {proto}: version {}; compiled: {versions}", def.version);
                }
            }
        }
        if !declared.is_empty() {
            let _ = writeln!(out, "called but not defined yet: {}", declared.join(", "));
        }
        let _ = writeln!(out, "host functions: {}", host.join(", "));
        let mut threads: BTreeMap<&str, usize> = BTreeMap::new();
        for b in built.iter() {
            *threads.entry(b.thread.as_str()).or_default() += 1;
        }
        let threads: Vec<String> = threads.iter().map(|(t, n)| format!("{n} on {t}")).collect();
        let _ = writeln!(out, "modules compiled: {} ({})", built.len(), threads.join(", "));
        let _ = writeln!(
            out,
            "top-level expressions: {} run, each compiled when entered and freed after its call",
            self.expressions
        );
        let stubs = self.stubs.stats();
        let _ = write!(
            out,
            "lazy stubs: {} live, {} retired; {} calls entered the resolver",
            stubs.live_stubs, stubs.dead_stubs, stubs.resolver_entries
        );
        out
    }

    /// Ends the JIT session, freeing all JIT'd code.
    pub fn end(self) -> Result<(), String> {
        self.jit.end().map_err(text)
    }
}

/// Checks a syntax tree against what is known (every variable bound, every call to a known
/// function with the right number of arguments) and records what it calls.
struct Check<'a> {
    functions: &'a BTreeMap<String, Function>,
    /// The function being defined, which may call itself, and its arity; `None` for an
    /// expression.
    defining: Option<(&'a str, usize)>,
    scope: Vec<String>,
    /// Functions a definition calls that are neither defined nor declared, with the number of
    /// arguments of the call.
    declared: BTreeMap<String, usize>,
    callees: BTreeSet<String>,
}

impl<'a> Check<'a> {
    fn new(
        functions: &'a BTreeMap<String, Function>,
        defining: Option<(&'a str, usize)>,
        params: Vec<String>,
    ) -> Check<'a> {
        Check { functions, defining, scope: params, declared: BTreeMap::new(), callees: BTreeSet::new() }
    }

    fn expr(&mut self, expr: &Expr) -> Result<(), String> {
        match expr {
            Expr::Number(_) => Ok(()),
            Expr::Variable(name) if self.scope.contains(name) => Ok(()),
            Expr::Variable(name) => Err(format!("unknown variable '{name}'")),
            Expr::Negate(inner) => self.expr(inner),
            Expr::Binary { lhs, rhs, .. } => {
                self.expr(lhs)?;
                self.expr(rhs)
            }
            Expr::Call { callee, args } => {
                args.iter().try_for_each(|a| self.expr(a))?;
                self.call(callee, args.len())
            }
            Expr::If { cond, then, otherwise } => {
                self.expr(cond)?;
                self.expr(then)?;
                self.expr(otherwise)
            }
            Expr::For { var, start, cond, step, body } => {
                self.expr(start)?;
                self.scope.push(var.clone());
                let inside =
                    [Some(cond), step.as_ref(), Some(body)].into_iter().flatten().try_for_each(|e| self.expr(e));
                self.scope.pop();
                inside
            }
        }
    }

    fn call(&mut self, callee: &str, given: usize) -> Result<(), String> {
        let arity = match self.defining {
            Some((me, arity)) if me == callee => Some(arity),
            _ => self.functions.get(callee).map(Function::arity).or_else(|| self.declared.get(callee).copied()),
        };
        match arity {
            Some(arity) if arity != given => {
                return Err(format!("wrong number of arguments to '{callee}': expected {arity}, got {given}"));
            }
            Some(_) => {}
            None if self.defining.is_some() => {
                self.declared.insert(callee.to_string(), given);
            }
            None => return Err(format!("undefined function '{callee}'")),
        }
        self.callees.insert(callee.to_string());
        Ok(())
    }
}
