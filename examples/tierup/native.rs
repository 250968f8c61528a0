//! Native code for one function: LLVM IR generated from its bytecode, on the compile thread.
//!
//! A function `f` of arity n becomes `i64 @tierup.fn.f(i64 x n)`, plus an entry
//! `i64 @tierup.entry.f(ptr args)` that reads its arguments from an array, so the interpreter
//! calls every function the same way. Each call in the bytecode becomes either
//! - a direct call of the callee's `tierup.fn.` symbol, when the callee is this function or
//!   has a module of its own already (the linker resolves it), or
//! - a read of the callee's *slot*, where the interpreter keeps the address of its native
//!   body once Ready: an indirect call if it is set, else a call of the host function
//!   `tierup_call`, which interprets the callee.

use std::error::Error;
use std::sync::Arc;

use inkwell::basic_block::BasicBlock;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicMetadataTypeEnum, FunctionType, IntType, PointerType, StructType};
use inkwell::values::{BasicMetadataValueEnum, BasicValue, CallSiteValue, FunctionValue, IntValue, PointerValue};
use inkwell::{AddressSpace, AtomicOrdering, IntPredicate};

use crate::lang::Op;

/// `i64 tierup_call(ptr vm, i64 function, ptr args, i64 count)`: a call leaving native code.
pub const CALL_SYMBOL: &str = "tierup_call";
/// `i64 tierup_print(ptr vm, i64 value)`: the `print` builtin.
pub const PRINT_SYMBOL: &str = "tierup_print";

/// The symbol of `name`'s native body (the language's names cannot contain dots, so these
/// cannot collide with anything else).
pub fn function_symbol(name: &str) -> String {
    format!("tierup.fn.{name}")
}

/// The symbol of `name`'s entry: `i64 (ptr args)`.
pub fn entry_symbol(name: &str) -> String {
    format!("tierup.entry.{name}")
}

/// Everything the compile thread needs to generate one function (owned: it is sent there).
pub struct NativeSpec {
    pub name: String,
    pub arity: u32,
    pub locals: u32,
    pub code: Arc<[Op]>,
    /// Every function the code calls.
    pub callees: Vec<Callee>,
    /// The interpreter's address, handed back to the host functions.
    pub vm: usize,
}

pub struct Callee {
    pub index: u32,
    pub name: String,
    pub arity: u32,
    /// Call its native symbol directly (else through its slot).
    pub direct: bool,
    /// The address of its slot: an `AtomicUsize`, 0 or the address of its `tierup.fn.` body.
    pub slot: usize,
}

type GenResult<T> = Result<T, Box<dyn Error>>;

/// Builds the module for `spec` in `context`.
pub fn build<'c>(context: &'c Context, spec: &NativeSpec) -> Result<Module<'c>, String> {
    let module = context.create_module(&spec.name);
    Emitter::new(context, &module, spec)
        .and_then(|e| e.body().and_then(|()| e.entry()))
        .map_err(|e| format!("generating native code for '{}': {e}", spec.name))?;
    Ok(module)
}

/// Emits one function's module: its body, translated op by op, and its entry.
struct Emitter<'a, 'c> {
    context: &'c Context,
    module: &'a Module<'c>,
    spec: &'a NativeSpec,
    b: Builder<'c>,
    i64t: IntType<'c>,
    ptr: PointerType<'c>,
    function: FunctionValue<'c>,
    /// The interpreter's address, as a constant pointer.
    vm: PointerValue<'c>,
    /// Stack slots of the locals, parameters first; the optimizer promotes them to registers.
    slots: Vec<PointerValue<'c>>,
    /// The buffer for the arguments of calls through the host.
    args: PointerValue<'c>,
    args_type: StructType<'c>,
}

impl<'a, 'c> Emitter<'a, 'c> {
    /// Declares the function and fills in its entry block: locals and the argument buffer.
    fn new(context: &'c Context, module: &'a Module<'c>, spec: &'a NativeSpec) -> GenResult<Self> {
        let i64t = context.i64_type();
        let ptr = context.ptr_type(AddressSpace::default());
        let b = context.create_builder();
        let function = module.add_function(&function_symbol(&spec.name), i64_fn(i64t, spec.arity), None);
        b.position_at_end(context.append_basic_block(function, "entry"));
        let mut slots = Vec::with_capacity(spec.locals as usize);
        for i in 0..spec.locals {
            let slot = b.build_alloca(i64t, &format!("local{i}"))?;
            let init = function.get_nth_param(i).map_or(i64t.const_zero(), |p| p.into_int_value());
            b.build_store(slot, init)?;
            slots.push(slot);
        }
        let max_args = spec.callees.iter().filter(|c| !c.direct).map(|c| c.arity).max().unwrap_or(0);
        let args_type = context.struct_type(&vec![i64t.into(); max_args as usize], false);
        let args = b.build_alloca(args_type, "args")?;
        let vm = i64t.const_int(spec.vm as u64, false).const_to_pointer(ptr);
        Ok(Emitter { context, module, spec, b, i64t, ptr, function, vm, slots, args, args_type })
    }

    /// The body: a block per run of ops between jumps and jump targets; the operand stack is
    /// simulated with SSA values (it is empty between blocks).
    fn body(&self) -> GenResult<()> {
        let (b, i64t) = (&self.b, self.i64t);
        let code = &self.spec.code[..];
        let mut starts = vec![false; code.len() + 1];
        starts[0] = true;
        for (pc, op) in code.iter().enumerate() {
            match *op {
                Op::Jump(t) | Op::JumpIfZero(t) if t as usize >= code.len() => {
                    return Err(format!("jump to {t} at {pc} is out of range").into());
                }
                Op::Jump(t) | Op::JumpIfZero(t) => {
                    starts[t as usize] = true;
                    starts[pc + 1] = true;
                }
                Op::Return => starts[pc + 1] = true,
                _ => {}
            }
        }
        let blocks: Vec<Option<BasicBlock<'c>>> = (0..code.len())
            .map(|pc| starts[pc].then(|| self.context.append_basic_block(self.function, &format!("pc{pc}"))))
            .collect();
        let block_at = |pc: usize| blocks.get(pc).copied().flatten().ok_or_else(|| format!("no block at {pc}"));
        let slot = |i: u32| self.slots.get(i as usize).copied().ok_or_else(|| format!("no local slot {i}"));
        let empty = |stack: &Vec<IntValue<'c>>, pc: usize| -> GenResult<()> {
            if stack.is_empty() { Ok(()) } else { Err(format!("operands left on the stack at a jump ({pc})").into()) }
        };
        b.build_unconditional_branch(block_at(0)?)?;

        let mut stack: Vec<IntValue<'c>> = Vec::new();
        let mut open = false;
        for (pc, op) in code.iter().enumerate() {
            if let Some(block) = blocks[pc] {
                if open {
                    empty(&stack, pc)?;
                    b.build_unconditional_branch(block)?;
                }
                b.position_at_end(block);
                open = true;
            }
            match *op {
                Op::Const(v) => stack.push(i64t.const_int(v as u64, true)),
                Op::Load(i) => stack.push(b.build_load(i64t, slot(i)?, "")?.into_int_value()),
                Op::Store(i) => b.build_store(slot(i)?, pop(&mut stack)?).map(drop)?,
                Op::Neg | Op::Not => {
                    let x = pop(&mut stack)?;
                    stack.push(self.unary(*op, x)?);
                }
                Op::Jump(t) => {
                    empty(&stack, pc)?;
                    b.build_unconditional_branch(block_at(t as usize)?)?;
                    open = false;
                }
                Op::JumpIfZero(t) => {
                    let c = pop(&mut stack)?;
                    empty(&stack, pc)?;
                    let zero = b.build_int_compare(IntPredicate::EQ, c, i64t.const_zero(), "")?;
                    b.build_conditional_branch(zero, block_at(t as usize)?, block_at(pc + 1)?)?;
                    open = false;
                }
                Op::Call(g) => {
                    let callee =
                        self.spec.callees.iter().find(|c| c.index == g).ok_or("a call of an unlisted callee")?;
                    let at = stack.len().checked_sub(callee.arity as usize).ok_or("operand stack underflow")?;
                    let args: Vec<IntValue<'c>> = stack.drain(at..).collect();
                    stack.push(self.call(callee, &args)?);
                }
                Op::Print => {
                    let v = pop(&mut stack)?;
                    let print = self.host(PRINT_SYMBOL, &[self.ptr.into(), i64t.into()]);
                    stack.push(value(b.build_call(print, &[self.vm.into(), v.into()], "")?)?);
                }
                Op::Pop => drop(pop(&mut stack)?),
                Op::Return => {
                    b.build_return(Some(&pop(&mut stack)?))?;
                    open = false;
                }
                binary => {
                    let y = pop(&mut stack)?;
                    let x = pop(&mut stack)?;
                    stack.push(self.binary(binary, x, y)?);
                }
            }
        }
        if open { Err("the code runs off its end".into()) } else { Ok(()) }
    }

    fn unary(&self, op: Op, x: IntValue<'c>) -> GenResult<IntValue<'c>> {
        let (b, zero) = (&self.b, self.i64t.const_zero());
        Ok(match op {
            Op::Neg => b.build_int_sub(zero, x, "")?,
            _ => b.build_int_z_extend(b.build_int_compare(IntPredicate::EQ, x, zero, "")?, self.i64t, "")?,
        })
    }

    fn binary(&self, op: Op, x: IntValue<'c>, y: IntValue<'c>) -> GenResult<IntValue<'c>> {
        let (b, zero) = (&self.b, self.i64t.const_zero());
        let predicate = match op {
            Op::Add => return Ok(b.build_int_add(x, y, "")?),
            Op::Sub => return Ok(b.build_int_sub(x, y, "")?),
            Op::Mul => return Ok(b.build_int_mul(x, y, "")?),
            Op::Div | Op::Rem => {
                // As `lang::div` and `lang::rem`: 0 for a zero divisor; and dividing by -1 is
                // negation (wrapping), where `sdiv` and `srem` would trap on i64::MIN.
                let by_zero = b.build_int_compare(IntPredicate::EQ, y, zero, "")?;
                let by_minus_one = b.build_int_compare(IntPredicate::EQ, y, self.i64t.const_all_ones(), "")?;
                let special = b.build_or(by_zero, by_minus_one, "")?;
                let divisor = b.build_select(special, self.i64t.const_int(1, false), y, "")?.into_int_value();
                if op == Op::Rem {
                    let r = b.build_int_signed_rem(x, divisor, "")?;
                    return Ok(b.build_select(special, zero, r, "")?.into_int_value());
                }
                let q = b.build_int_signed_div(x, divisor, "")?;
                let q = b.build_select(by_minus_one, b.build_int_sub(zero, x, "")?, q, "")?.into_int_value();
                return Ok(b.build_select(by_zero, zero, q, "")?.into_int_value());
            }
            Op::Eq => IntPredicate::EQ,
            Op::Ne => IntPredicate::NE,
            Op::Lt => IntPredicate::SLT,
            Op::Le => IntPredicate::SLE,
            Op::Gt => IntPredicate::SGT,
            Op::Ge => IntPredicate::SGE,
            other => return Err(format!("{other:?} is not a binary operator").into()),
        };
        Ok(b.build_int_z_extend(b.build_int_compare(predicate, x, y, "")?, self.i64t, "")?)
    }

    /// A call of `callee`: direct, or through its slot (natively if set, else via the host).
    fn call(&self, callee: &Callee, args: &[IntValue<'c>]) -> GenResult<IntValue<'c>> {
        let (b, i64t) = (&self.b, self.i64t);
        let arguments: Vec<BasicMetadataValueEnum<'c>> = args.iter().map(|v| (*v).into()).collect();
        if callee.direct {
            let name = function_symbol(&callee.name);
            let target = self.module.get_function(&name).unwrap_or_else(|| {
                self.module.add_function(&name, i64_fn(i64t, callee.arity), Some(Linkage::External))
            });
            return value(b.build_call(target, &arguments, "")?);
        }
        // Acquire: pairs with the interpreter's Release store, made once the body is Ready.
        let slot = i64t.const_int(callee.slot as u64, false).const_to_pointer(self.ptr);
        let body = b.build_load(self.ptr, slot, "")?.into_pointer_value();
        let load = body.as_instruction_value().ok_or("a load that is no instruction")?;
        load.set_alignment(8)?;
        load.set_atomic_ordering(AtomicOrdering::Acquire)?;
        let native = self.context.append_basic_block(self.function, "native");
        let host = self.context.append_basic_block(self.function, "host");
        let join = self.context.append_basic_block(self.function, "join");
        b.build_conditional_branch(b.build_is_not_null(body, "")?, native, host)?;

        b.position_at_end(native);
        let from_native = value(b.build_indirect_call(i64_fn(i64t, callee.arity), body, &arguments, "")?)?;
        b.build_unconditional_branch(join)?;

        b.position_at_end(host);
        for (i, v) in args.iter().enumerate() {
            b.build_store(b.build_struct_gep(self.args_type, self.args, i as u32, "")?, *v)?;
        }
        let call_host = self.host(CALL_SYMBOL, &[self.ptr.into(), i64t.into(), self.ptr.into(), i64t.into()]);
        let index = i64t.const_int(u64::from(callee.index), false);
        let count = i64t.const_int(u64::from(callee.arity), false);
        let from_host =
            value(b.build_call(call_host, &[self.vm.into(), index.into(), self.args.into(), count.into()], "")?)?;
        b.build_unconditional_branch(join)?;

        b.position_at_end(join);
        let phi = b.build_phi(i64t, "")?;
        phi.add_incoming(&[(&from_native, native), (&from_host, host)]);
        Ok(phi.as_basic_value().into_int_value())
    }

    /// The declaration of a host function returning i64.
    fn host(&self, name: &str, params: &[BasicMetadataTypeEnum<'c>]) -> FunctionValue<'c> {
        self.module.get_function(name).unwrap_or_else(|| {
            self.module.add_function(name, self.i64t.fn_type(params, false), Some(Linkage::External))
        })
    }

    /// The entry: `i64 (ptr args)`, calling the body with the arguments read from `args`.
    fn entry(&self) -> GenResult<()> {
        let (b, i64t, arity) = (&self.b, self.i64t, self.spec.arity);
        let entry =
            self.module.add_function(&entry_symbol(&self.spec.name), i64t.fn_type(&[self.ptr.into()], false), None);
        b.position_at_end(self.context.append_basic_block(entry, "entry"));
        let array = entry.get_nth_param(0).ok_or("an entry without its parameter")?.into_pointer_value();
        let array_type = self.context.struct_type(&vec![i64t.into(); arity as usize], false);
        let mut args: Vec<BasicMetadataValueEnum<'c>> = Vec::with_capacity(arity as usize);
        for i in 0..arity {
            args.push(b.build_load(i64t, b.build_struct_gep(array_type, array, i, "")?, "")?.into());
        }
        b.build_return(Some(&value(b.build_call(self.function, &args, "")?)?))?;
        Ok(())
    }
}

/// `i64 (i64 x arity)`.
fn i64_fn(i64t: IntType<'_>, arity: u32) -> FunctionType<'_> {
    i64t.fn_type(&vec![i64t.into(); arity as usize], false)
}

fn pop<'c>(stack: &mut Vec<IntValue<'c>>) -> GenResult<IntValue<'c>> {
    Ok(stack.pop().ok_or("operand stack underflow")?)
}

/// The value of a call of a function returning i64.
fn value(site: CallSiteValue<'_>) -> GenResult<IntValue<'_>> {
    Ok(site.try_as_basic_value().basic().ok_or("a call without a value")?.into_int_value())
}
