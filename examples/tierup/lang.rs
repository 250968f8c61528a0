//! The language: source text -> tokens -> syntax tree -> stack bytecode, and the meaning of
//! its arithmetic (shared by the interpreter and the native code generator).
//!
//! A program is a list of functions over 64-bit integers:
//!
//! ```text
//! fn fib(n) { if n < 2 { return n; } return fib(n - 1) + fib(n - 2); }
//! fn main(n) { print(n); return fib(n); }
//! ```
//!
//! Statements: `let x = e;`, `x = e;`, `if e { } else { }` (and `else if`), `while e { }`,
//! `return e;` (or `return;`), `e;`. Expressions: integer literals, variables, calls,
//! `( )`, unary `-` and `!`, and the binary operators `* / %`, `+ -`, `< <= > >=`, `== !=`
//! (that precedence, left-associative). `print(e)` writes `e` on a line and yields it.
//! Arithmetic wraps; `x / 0` and `x % 0` are 0; comparisons and `!` yield 0 or 1; a
//! condition holds when it is not 0. A function without `return` returns 0. `let` scopes
//! to its block. `main` takes zero or one argument.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// One bytecode instruction. Operands live on a stack; locals (parameters first) in slots.
///
/// Invariant kept by [`compile`]: the operand stack is empty at every jump and jump target
/// (only statements jump), which is what lets the native code generator map it to SSA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Const(i64),
    Load(u32),
    Store(u32),
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Neg,
    Not,
    Jump(u32),
    /// Pops a value; jumps if it is 0.
    JumpIfZero(u32),
    /// Calls a function by index with its arguments on the stack (first pushed first).
    Call(u32),
    /// Pops a value, writes it, pushes it back.
    Print,
    Pop,
    Return,
}

/// A function's bytecode.
#[derive(Debug)]
pub struct Function {
    pub name: String,
    pub arity: u32,
    /// Local slots, parameters included.
    pub locals: u32,
    pub code: Arc<[Op]>,
}

#[derive(Debug)]
pub struct Program {
    pub functions: Vec<Function>,
    pub main: usize,
}

impl Program {
    /// The functions `f` calls, each once, in the order of their first call.
    pub fn callees(&self, f: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for op in self.functions[f].code.iter() {
            if let Op::Call(g) = *op {
                if !out.contains(&(g as usize)) {
                    out.push(g as usize);
                }
            }
        }
        out
    }
}

/// `a / b` in the language: wrapping, and 0 when `b` is 0.
pub fn div(a: i64, b: i64) -> i64 {
    if b == 0 { 0 } else { a.wrapping_div(b) }
}

/// `a % b` in the language: 0 when `b` is 0 (and for `i64::MIN % -1`).
pub fn rem(a: i64, b: i64) -> i64 {
    if b == 0 { 0 } else { a.wrapping_rem(b) }
}

/// A compile error, at a line and column of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for SyntaxError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pos {
    line: u32,
    column: u32,
}

impl Pos {
    fn error(self, message: impl Into<String>) -> SyntaxError {
        SyntaxError { line: self.line, column: self.column, message: message.into() }
    }
}

/// Compiles a whole program to bytecode.
pub fn compile(source: &str) -> Result<Program, SyntaxError> {
    let tokens = lex(source)?;
    let decls = Parser { tokens, at: 0 }.program()?;
    Compiler::program(&decls)
}

// ---- Tokens ----

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Int(i64),
    Ident(String),
    Fn,
    Let,
    If,
    Else,
    While,
    Return,
    /// Punctuation and operators, as written.
    Sym(&'static str),
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Int(v) => write!(f, "'{v}'"),
            Tok::Ident(name) => write!(f, "'{name}'"),
            Tok::Fn => f.write_str("'fn'"),
            Tok::Let => f.write_str("'let'"),
            Tok::If => f.write_str("'if'"),
            Tok::Else => f.write_str("'else'"),
            Tok::While => f.write_str("'while'"),
            Tok::Return => f.write_str("'return'"),
            Tok::Sym(s) => write!(f, "'{s}'"),
            Tok::End => f.write_str("end of input"),
        }
    }
}

/// Longest first, so that `<=` is not read as `<` then `=`.
const SYMBOLS: [&str; 19] =
    ["==", "!=", "<=", ">=", "(", ")", "{", "}", ",", ";", "=", "<", ">", "+", "-", "*", "/", "%", "!"];

fn lex(source: &str) -> Result<Vec<(Tok, Pos)>, SyntaxError> {
    let mut out = Vec::new();
    let mut pos = Pos { line: 1, column: 1 };
    let mut rest = source;
    let advance = |pos: &mut Pos, text: &str| {
        for c in text.chars() {
            if c == '\n' {
                pos.line += 1;
                pos.column = 1;
            } else {
                pos.column += 1;
            }
        }
    };
    while let Some(c) = rest.chars().next() {
        let len = if c.is_whitespace() {
            c.len_utf8()
        } else if rest.starts_with("//") {
            rest.find('\n').unwrap_or(rest.len())
        } else if c.is_ascii_digit() {
            let len = rest.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(rest.len());
            let value =
                rest[..len].parse().map_err(|_| pos.error(format!("bad integer literal '{}'", &rest[..len])))?;
            out.push((Tok::Int(value), pos));
            len
        } else if c.is_ascii_alphabetic() || c == '_' {
            let len = rest.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(rest.len());
            let tok = match &rest[..len] {
                "fn" => Tok::Fn,
                "let" => Tok::Let,
                "if" => Tok::If,
                "else" => Tok::Else,
                "while" => Tok::While,
                "return" => Tok::Return,
                name => Tok::Ident(name.to_string()),
            };
            out.push((tok, pos));
            len
        } else if let Some(sym) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) {
            out.push((Tok::Sym(sym), pos));
            sym.len()
        } else {
            return Err(pos.error(format!("unexpected character '{c}'")));
        };
        advance(&mut pos, &rest[..len]);
        rest = &rest[len..];
    }
    out.push((Tok::End, pos));
    Ok(out)
}

// ---- Syntax tree ----

enum Expr {
    Int(i64),
    Var(String, Pos),
    Call(String, Vec<Expr>, Pos),
    /// A unary or binary operator: its instruction and operands.
    Op(Op, Vec<Expr>),
}

enum Stmt {
    Let(String, Expr),
    Assign(String, Expr, Pos),
    If(Expr, Vec<Stmt>, Vec<Stmt>),
    While(Expr, Vec<Stmt>),
    Return(Option<Expr>),
    Expr(Expr),
}

struct FnDecl {
    name: String,
    params: Vec<String>,
    body: Vec<Stmt>,
    pos: Pos,
}

// ---- Parser ----

struct Parser {
    tokens: Vec<(Tok, Pos)>,
    at: usize,
}

/// Binary operators by precedence level, loosest first.
const LEVELS: [&[(&str, Op)]; 4] = [
    &[("==", Op::Eq), ("!=", Op::Ne)],
    &[("<", Op::Lt), ("<=", Op::Le), (">", Op::Gt), (">=", Op::Ge)],
    &[("+", Op::Add), ("-", Op::Sub)],
    &[("*", Op::Mul), ("/", Op::Div), ("%", Op::Rem)],
];

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.at].0
    }

    fn pos(&self) -> Pos {
        self.tokens[self.at].1
    }

    fn next(&mut self) -> (Tok, Pos) {
        let t = self.tokens[self.at].clone();
        if t.0 != Tok::End {
            self.at += 1;
        }
        t
    }

    fn eat(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Tok::Sym(s) if *s == sym) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, sym: &str) -> Result<(), SyntaxError> {
        if self.eat(sym) { Ok(()) } else { Err(self.pos().error(format!("expected '{sym}', found {}", self.peek()))) }
    }

    fn ident(&mut self, what: &str) -> Result<(String, Pos), SyntaxError> {
        match self.next() {
            (Tok::Ident(name), pos) => Ok((name, pos)),
            (tok, pos) => Err(pos.error(format!("expected {what}, found {tok}"))),
        }
    }

    fn program(mut self) -> Result<Vec<FnDecl>, SyntaxError> {
        let mut decls = Vec::new();
        while *self.peek() != Tok::End {
            match self.next() {
                (Tok::Fn, _) => decls.push(self.function()?),
                (tok, pos) => return Err(pos.error(format!("expected 'fn', found {tok}"))),
            }
        }
        Ok(decls)
    }

    fn function(&mut self) -> Result<FnDecl, SyntaxError> {
        let (name, pos) = self.ident("a function name")?;
        self.expect("(")?;
        let mut params = Vec::new();
        if !self.eat(")") {
            loop {
                params.push(self.ident("a parameter name")?.0);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        let body = self.block()?;
        Ok(FnDecl { name, params, body, pos })
    }

    fn block(&mut self) -> Result<Vec<Stmt>, SyntaxError> {
        self.expect("{")?;
        let mut body = Vec::new();
        while !self.eat("}") {
            body.push(self.statement()?);
        }
        Ok(body)
    }

    fn statement(&mut self) -> Result<Stmt, SyntaxError> {
        let stmt = match self.peek() {
            Tok::Let => {
                self.at += 1;
                let (name, _) = self.ident("a variable name")?;
                self.expect("=")?;
                Stmt::Let(name, self.expr()?)
            }
            Tok::If => {
                self.at += 1;
                return self.if_rest();
            }
            Tok::While => {
                self.at += 1;
                let cond = self.expr()?;
                return Ok(Stmt::While(cond, self.block()?));
            }
            Tok::Return => {
                self.at += 1;
                if matches!(self.peek(), Tok::Sym(";")) { Stmt::Return(None) } else { Stmt::Return(Some(self.expr()?)) }
            }
            Tok::Ident(_) if self.tokens[self.at + 1].0 == Tok::Sym("=") => {
                let (name, pos) = self.ident("a variable name")?;
                self.at += 1;
                Stmt::Assign(name, self.expr()?, pos)
            }
            _ => Stmt::Expr(self.expr()?),
        };
        self.expect(";")?;
        Ok(stmt)
    }

    /// After `if`: the condition, the block, and any `else` / `else if`.
    fn if_rest(&mut self) -> Result<Stmt, SyntaxError> {
        let cond = self.expr()?;
        let then = self.block()?;
        let otherwise = if *self.peek() != Tok::Else {
            Vec::new()
        } else {
            self.at += 1;
            if *self.peek() == Tok::If {
                self.at += 1;
                vec![self.if_rest()?]
            } else {
                self.block()?
            }
        };
        Ok(Stmt::If(cond, then, otherwise))
    }

    fn expr(&mut self) -> Result<Expr, SyntaxError> {
        self.binary(0)
    }

    fn binary(&mut self, level: usize) -> Result<Expr, SyntaxError> {
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut lhs = self.binary(level + 1)?;
        'more: loop {
            for (sym, op) in LEVELS[level] {
                if self.eat(sym) {
                    lhs = Expr::Op(*op, vec![lhs, self.binary(level + 1)?]);
                    continue 'more;
                }
            }
            return Ok(lhs);
        }
    }

    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        if self.eat("-") {
            Ok(Expr::Op(Op::Neg, vec![self.unary()?]))
        } else if self.eat("!") {
            Ok(Expr::Op(Op::Not, vec![self.unary()?]))
        } else {
            self.primary()
        }
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        match self.next() {
            (Tok::Int(v), _) => Ok(Expr::Int(v)),
            (Tok::Ident(name), pos) if self.eat("(") => {
                let mut args = Vec::new();
                if !self.eat(")") {
                    loop {
                        args.push(self.expr()?);
                        if self.eat(")") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Ok(Expr::Call(name, args, pos))
            }
            (Tok::Ident(name), pos) => Ok(Expr::Var(name, pos)),
            (Tok::Sym("("), _) => {
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            (tok, pos) => Err(pos.error(format!("expected an expression, found {tok}"))),
        }
    }
}

// ---- Bytecode compiler ----

struct Compiler<'p> {
    /// Function name -> (index, arity).
    functions: &'p HashMap<&'p str, (u32, u32)>,
    code: Vec<Op>,
    scopes: Vec<HashMap<String, u32>>,
    locals: u32,
}

impl Compiler<'_> {
    fn program(decls: &[FnDecl]) -> Result<Program, SyntaxError> {
        let mut functions = HashMap::new();
        for (i, d) in decls.iter().enumerate() {
            if d.name == "print" {
                return Err(d.pos.error("'print' is built in"));
            }
            if functions.insert(d.name.as_str(), (i as u32, d.params.len() as u32)).is_some() {
                return Err(d.pos.error(format!("function '{}' is defined twice", d.name)));
            }
        }
        let main =
            decls.iter().position(|d| d.name == "main").ok_or_else(|| Pos { line: 1, column: 1 }.error("no 'main'"))?;
        if decls[main].params.len() > 1 {
            return Err(decls[main].pos.error("'main' takes at most one argument"));
        }
        let functions = decls
            .iter()
            .map(|d| {
                let mut c =
                    Compiler { functions: &functions, code: Vec::new(), scopes: vec![HashMap::new()], locals: 0 };
                for p in &d.params {
                    if c.scopes[0].contains_key(p) {
                        return Err(d.pos.error(format!("parameter '{p}' of '{}' is repeated", d.name)));
                    }
                    c.declare(p);
                }
                c.block(&d.body)?;
                c.code.extend([Op::Const(0), Op::Return]);
                Ok(Function {
                    name: d.name.clone(),
                    arity: d.params.len() as u32,
                    locals: c.locals,
                    code: c.code.into(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Program { functions, main })
    }

    fn declare(&mut self, name: &str) -> u32 {
        let slot = self.locals;
        self.locals += 1;
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name.to_string(), slot);
        }
        slot
    }

    fn slot(&self, name: &str, pos: Pos) -> Result<u32, SyntaxError> {
        self.scopes
            .iter()
            .rev()
            .find_map(|s| s.get(name).copied())
            .ok_or_else(|| pos.error(format!("unknown variable '{name}'")))
    }

    /// The index of the next instruction, as a jump target.
    fn here(&self) -> u32 {
        self.code.len() as u32
    }

    /// Points the jump at `at` to the next instruction.
    fn patch(&mut self, at: u32) {
        let target = self.here();
        match &mut self.code[at as usize] {
            Op::Jump(t) | Op::JumpIfZero(t) => *t = target,
            _ => unreachable!("patched a non-jump"),
        }
    }

    fn block(&mut self, body: &[Stmt]) -> Result<(), SyntaxError> {
        self.scopes.push(HashMap::new());
        for stmt in body {
            self.statement(stmt)?;
        }
        self.scopes.pop();
        Ok(())
    }

    fn statement(&mut self, stmt: &Stmt) -> Result<(), SyntaxError> {
        match stmt {
            Stmt::Let(name, e) => {
                self.expr(e)?;
                let slot = self.declare(name);
                self.code.push(Op::Store(slot));
            }
            Stmt::Assign(name, e, pos) => {
                self.expr(e)?;
                let slot = self.slot(name, *pos)?;
                self.code.push(Op::Store(slot));
            }
            Stmt::If(cond, then, otherwise) => {
                self.expr(cond)?;
                let skip_then = self.here();
                self.code.push(Op::JumpIfZero(0));
                self.block(then)?;
                if otherwise.is_empty() {
                    self.patch(skip_then);
                } else {
                    let skip_else = self.here();
                    self.code.push(Op::Jump(0));
                    self.patch(skip_then);
                    self.block(otherwise)?;
                    self.patch(skip_else);
                }
            }
            Stmt::While(cond, body) => {
                let top = self.here();
                self.expr(cond)?;
                let exit = self.here();
                self.code.push(Op::JumpIfZero(0));
                self.block(body)?;
                self.code.push(Op::Jump(top));
                self.patch(exit);
            }
            Stmt::Return(e) => {
                match e {
                    Some(e) => self.expr(e)?,
                    None => self.code.push(Op::Const(0)),
                }
                self.code.push(Op::Return);
            }
            Stmt::Expr(e) => {
                self.expr(e)?;
                self.code.push(Op::Pop);
            }
        }
        Ok(())
    }

    fn expr(&mut self, e: &Expr) -> Result<(), SyntaxError> {
        match e {
            Expr::Int(v) => self.code.push(Op::Const(*v)),
            Expr::Var(name, pos) => {
                let slot = self.slot(name, *pos)?;
                self.code.push(Op::Load(slot));
            }
            Expr::Op(op, operands) => {
                for operand in operands {
                    self.expr(operand)?;
                }
                self.code.push(*op);
            }
            Expr::Call(name, args, pos) => {
                let (op, arity) = match self.functions.get(name.as_str()) {
                    Some(&(index, arity)) => (Op::Call(index), arity),
                    None if name == "print" => (Op::Print, 1),
                    None => return Err(pos.error(format!("unknown function '{name}'"))),
                };
                if args.len() != arity as usize {
                    return Err(pos.error(format!("'{name}' takes {arity} argument(s), given {}", args.len())));
                }
                for arg in args {
                    self.expr(arg)?;
                }
                self.code.push(op);
            }
        }
        Ok(())
    }
}
