//! From syntax tree to LLVM IR: one function per module, every value an f64.
//!
//! Runs on the JIT's compile thread, inside a unit's module builder; the tree has been checked
//! (every variable bound, every call to a function of the right arity), so an error here is a
//! bug, not a user's mistake.

use inkwell::FloatPredicate;
use inkwell::builder::{Builder, BuilderError};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::types::BasicMetadataTypeEnum;
use inkwell::values::{BasicMetadataValueEnum, FloatValue, FunctionValue, PointerValue, ValueKind};

use super::syntax::{BinOp, Expr};

/// A module defining `double symbol(double params...)` that computes `body`. Calls name their
/// callee as written, so they reach its stub (the public name), never a particular body.
pub fn function<'c>(context: &'c Context, symbol: &str, params: &[String], body: &Expr) -> Result<Module<'c>, String> {
    let module = context.create_module(symbol);
    let f64t = context.f64_type();
    let function = module.add_function(symbol, f64t.fn_type(&vec![f64t.into(); params.len()], false), None);
    let builder = context.create_builder();
    builder.position_at_end(context.append_basic_block(function, "entry"));
    let mut generator = Gen { context, module: &module, builder, function, scope: Vec::new() };
    generator.emit(params, body).map_err(|e| format!("code generation of '{symbol}': {e}"))?;
    drop(generator);
    Ok(module)
}

/// A function being generated; variables live in stack slots (LLVM's codegen turns them into
/// registers), so a loop variable may shadow a parameter.
struct Gen<'c, 'm> {
    context: &'c Context,
    module: &'m Module<'c>,
    builder: Builder<'c>,
    function: FunctionValue<'c>,
    /// Innermost binding last.
    scope: Vec<(String, PointerValue<'c>)>,
}

type Emitted<T> = Result<T, String>;

fn llvm<T>(result: Result<T, BuilderError>) -> Emitted<T> {
    result.map_err(|e| e.to_string())
}

impl<'c> Gen<'c, '_> {
    fn emit(&mut self, params: &[String], body: &Expr) -> Emitted<()> {
        for (i, name) in params.iter().enumerate() {
            let value = self.function.get_nth_param(i as u32).ok_or("missing parameter")?;
            let slot = self.slot(name)?;
            llvm(self.builder.build_store(slot, value))?;
            self.scope.push((name.clone(), slot));
        }
        let value = self.expr(body)?;
        llvm(self.builder.build_return(Some(&value)))?;
        Ok(())
    }

    /// A stack slot for `name`, at the top of the entry block.
    fn slot(&self, name: &str) -> Emitted<PointerValue<'c>> {
        let entry = self.function.get_first_basic_block().ok_or("no entry block")?;
        let at_entry = self.context.create_builder();
        match entry.get_first_instruction() {
            Some(first) => at_entry.position_before(&first),
            None => at_entry.position_at_end(entry),
        }
        llvm(at_entry.build_alloca(self.context.f64_type(), name))
    }

    fn expr(&mut self, expr: &Expr) -> Emitted<FloatValue<'c>> {
        let f64t = self.context.f64_type();
        let b = &self.builder;
        match expr {
            Expr::Number(n) => Ok(f64t.const_float(*n)),
            Expr::Variable(name) => {
                let slot = self.scope.iter().rev().find(|(n, _)| n == name).map(|(_, s)| *s);
                let slot = slot.ok_or_else(|| format!("unbound variable '{name}'"))?;
                Ok(llvm(b.build_load(f64t, slot, name))?.into_float_value())
            }
            Expr::Negate(inner) => {
                let value = self.expr(inner)?;
                llvm(self.builder.build_float_neg(value, "neg"))
            }
            Expr::Binary { op, lhs, rhs } => {
                let l = self.expr(lhs)?;
                let r = self.expr(rhs)?;
                let b = &self.builder;
                let compare = |predicate| -> Emitted<FloatValue<'c>> {
                    let bit = llvm(b.build_float_compare(predicate, l, r, "cmp"))?;
                    llvm(b.build_unsigned_int_to_float(bit, f64t, "bool"))
                };
                match op {
                    BinOp::Then => Ok(r),
                    BinOp::Less => compare(FloatPredicate::ULT),
                    BinOp::Greater => compare(FloatPredicate::UGT),
                    BinOp::Equal => compare(FloatPredicate::OEQ),
                    BinOp::Add => llvm(b.build_float_add(l, r, "add")),
                    BinOp::Sub => llvm(b.build_float_sub(l, r, "sub")),
                    BinOp::Mul => llvm(b.build_float_mul(l, r, "mul")),
                    BinOp::Div => llvm(b.build_float_div(l, r, "div")),
                }
            }
            Expr::Call { callee, args } => {
                let function = match self.module.get_function(callee) {
                    Some(f) => f,
                    None => {
                        let params: Vec<BasicMetadataTypeEnum> = vec![f64t.into(); args.len()];
                        self.module.add_function(callee, f64t.fn_type(&params, false), None)
                    }
                };
                let mut values: Vec<BasicMetadataValueEnum> = Vec::with_capacity(args.len());
                for arg in args {
                    values.push(self.expr(arg)?.into());
                }
                let call = llvm(self.builder.build_call(function, &values, "call"))?;
                match call.try_as_basic_value() {
                    ValueKind::Basic(value) => Ok(value.into_float_value()),
                    ValueKind::Instruction(_) => Err(format!("'{callee}' returns nothing")),
                }
            }
            Expr::If { cond, then, otherwise } => {
                let cond = self.truth(cond)?;
                let then_block = self.context.append_basic_block(self.function, "then");
                let else_block = self.context.append_basic_block(self.function, "else");
                let merge = self.context.append_basic_block(self.function, "merge");
                llvm(self.builder.build_conditional_branch(cond, then_block, else_block))?;
                let mut incoming = Vec::with_capacity(2);
                for (block, arm) in [(then_block, then), (else_block, otherwise)] {
                    self.builder.position_at_end(block);
                    let value = self.expr(arm)?;
                    llvm(self.builder.build_unconditional_branch(merge))?;
                    // The arm may have ended in another block (a nested `if`).
                    incoming.push((value, self.builder.get_insert_block().ok_or("no insert block")?));
                }
                self.builder.position_at_end(merge);
                let phi = llvm(self.builder.build_phi(f64t, "if"))?;
                phi.add_incoming(&[(&incoming[0].0, incoming[0].1), (&incoming[1].0, incoming[1].1)]);
                Ok(phi.as_basic_value().into_float_value())
            }
            Expr::For { var, start, cond, step, body } => {
                let initial = self.expr(start)?;
                let slot = self.slot(var)?;
                llvm(self.builder.build_store(slot, initial))?;
                self.scope.push((var.clone(), slot));
                let test = self.context.append_basic_block(self.function, "loop.test");
                let repeat = self.context.append_basic_block(self.function, "loop.body");
                let done = self.context.append_basic_block(self.function, "loop.done");
                llvm(self.builder.build_unconditional_branch(test))?;
                self.builder.position_at_end(test);
                let go_on = self.truth(cond)?;
                llvm(self.builder.build_conditional_branch(go_on, repeat, done))?;
                self.builder.position_at_end(repeat);
                self.expr(body)?;
                let step = match step {
                    Some(step) => self.expr(step)?,
                    None => f64t.const_float(1.0),
                };
                let current = llvm(self.builder.build_load(f64t, slot, var))?.into_float_value();
                let next = llvm(self.builder.build_float_add(current, step, "next"))?;
                llvm(self.builder.build_store(slot, next))?;
                llvm(self.builder.build_unconditional_branch(test))?;
                self.builder.position_at_end(done);
                self.scope.pop();
                Ok(f64t.const_float(0.0))
            }
        }
    }

    /// `expr != 0` as an i1.
    fn truth(&mut self, expr: &Expr) -> Emitted<inkwell::values::IntValue<'c>> {
        let value = self.expr(expr)?;
        let zero = self.context.f64_type().const_float(0.0);
        llvm(self.builder.build_float_compare(FloatPredicate::ONE, value, zero, "truth"))
    }
}
