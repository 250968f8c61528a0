//! The REPL's language: its syntax tree and a parser from one input line to statements.
//!
//! ```text
//! line      := statement { ';' statement }          (empty statements are allowed)
//! statement := 'def' prototype expr | 'extern' prototype | expr
//! prototype := ident '(' [ ident { [','] ident } ] ')'
//! expr      := unary { binop unary }                 (precedence: ':' < '<' '>' '==' < '+' '-' < '*' '/')
//! unary     := '-' unary | primary
//! primary   := number | ident | ident '(' [ expr { ',' expr } ] ')' | '(' expr ')'
//!            | 'if' expr 'then' expr 'else' expr
//!            | 'for' ident '=' expr ',' expr [ ',' expr ] 'in' expr
//! ```
//!
//! Every value is an f64; a comparison is 1 or 0; `a : b` evaluates both and is `b`. `#` starts
//! a comment.

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Number(f64),
    Variable(String),
    Negate(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Call {
        callee: String,
        args: Vec<Expr>,
    },
    If {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// `for var = start, cond[, step] in body`: while `cond` (which sees `var`) is non-zero,
    /// runs `body` and adds `step` (default 1) to `var`. Its value is 0.
    For {
        var: String,
        start: Box<Expr>,
        cond: Box<Expr>,
        step: Option<Box<Expr>>,
        body: Box<Expr>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `a : b`: both, in order; the value is `b`'s.
    Then,
    Less,
    Greater,
    Equal,
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    /// Binding strength: higher binds tighter; all are left-associative.
    fn precedence(self) -> u8 {
        match self {
            BinOp::Then => 1,
            BinOp::Less | BinOp::Greater | BinOp::Equal => 10,
            BinOp::Add | BinOp::Sub => 20,
            BinOp::Mul | BinOp::Div => 40,
        }
    }
}

/// A function's name and parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Prototype {
    pub name: String,
    pub params: Vec<String>,
}

impl std::fmt::Display for Prototype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name, self.params.join(", "))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    Def(Prototype, Expr),
    Extern(Prototype),
    Expr(Expr),
}

/// Why a line does not parse, and where (a 1-based column).
#[derive(Debug, PartialEq)]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "syntax error at column {}: {}", self.column, self.message)
    }
}

const KEYWORDS: [&str; 7] = ["def", "extern", "if", "then", "else", "for", "in"];

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Number(f64),
    Ident(String),
    /// One of `( ) , ; = + - * / < > :`.
    Punct(char),
    EqualEqual,
    End,
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Number(n) => write!(f, "'{n}'"),
            Token::Ident(s) => write!(f, "'{s}'"),
            Token::Punct(c) => write!(f, "'{c}'"),
            Token::EqualEqual => f.write_str("'=='"),
            Token::End => f.write_str("the end of the line"),
        }
    }
}

/// Splits `line` into tokens with their columns; the last is [`Token::End`].
fn tokenize(line: &str) -> Result<Vec<(Token, usize)>, ParseError> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (c, column) = (chars[i], i + 1);
        if c == '#' {
            break;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push((Token::Ident(chars[start..i].iter().collect()), column));
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let value =
                text.parse().map_err(|_| ParseError { column, message: format!("'{text}' is not a number") })?;
            tokens.push((Token::Number(value), column));
        } else if c == '=' && chars.get(i + 1) == Some(&'=') {
            tokens.push((Token::EqualEqual, column));
            i += 2;
        } else if "(),;=+-*/<>:".contains(c) {
            tokens.push((Token::Punct(c), column));
            i += 1;
        } else {
            return Err(ParseError { column, message: format!("unexpected character '{c}'") });
        }
    }
    tokens.push((Token::End, chars.len() + 1));
    Ok(tokens)
}

/// Parses one input line into its statements.
pub fn parse_line(line: &str) -> Result<Vec<Statement>, ParseError> {
    let mut parser = Parser { tokens: tokenize(line)?, pos: 0 };
    let mut statements = Vec::new();
    loop {
        match parser.peek() {
            Token::End => return Ok(statements),
            Token::Punct(';') => parser.pos += 1,
            _ => {
                statements.push(parser.statement()?);
                if !matches!(parser.peek(), Token::End | Token::Punct(';')) {
                    return Err(parser.unexpected("';' or the end of the line"));
                }
            }
        }
    }
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    pos: usize,
}

type Parsed<T> = Result<T, ParseError>;

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos].0
    }

    fn unexpected(&self, wanted: &str) -> ParseError {
        let (token, column) = &self.tokens[self.pos];
        ParseError { column: *column, message: format!("expected {wanted}, found {token}") }
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Token::Ident(s) if s == keyword)
    }

    fn expect_keyword(&mut self, keyword: &str) -> Parsed<()> {
        if !self.is_keyword(keyword) {
            return Err(self.unexpected(&format!("'{keyword}'")));
        }
        self.pos += 1;
        Ok(())
    }

    fn expect_punct(&mut self, c: char) -> Parsed<()> {
        if self.peek() != &Token::Punct(c) {
            return Err(self.unexpected(&format!("'{c}'")));
        }
        self.pos += 1;
        Ok(())
    }

    /// An identifier that is not a keyword.
    fn name(&mut self, what: &str) -> Parsed<String> {
        match self.peek() {
            Token::Ident(s) if !KEYWORDS.contains(&s.as_str()) => {
                let name = s.clone();
                self.pos += 1;
                Ok(name)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn statement(&mut self) -> Parsed<Statement> {
        if self.is_keyword("def") {
            self.pos += 1;
            let proto = self.prototype()?;
            Ok(Statement::Def(proto, self.expr()?))
        } else if self.is_keyword("extern") {
            self.pos += 1;
            Ok(Statement::Extern(self.prototype()?))
        } else {
            Ok(Statement::Expr(self.expr()?))
        }
    }

    fn prototype(&mut self) -> Parsed<Prototype> {
        let name = self.name("a function name")?;
        self.expect_punct('(')?;
        let mut params = Vec::new();
        while self.peek() != &Token::Punct(')') {
            let column = self.tokens[self.pos].1;
            let param = self.name("a parameter name or ')'")?;
            if params.contains(&param) {
                return Err(ParseError { column, message: format!("parameter '{param}' appears twice") });
            }
            params.push(param);
            if self.peek() == &Token::Punct(',') {
                self.pos += 1;
            }
        }
        self.pos += 1;
        Ok(Prototype { name, params })
    }

    fn expr(&mut self) -> Parsed<Expr> {
        self.binary(0)
    }

    /// Precedence climbing: operands joined by operators binding at least `min`.
    fn binary(&mut self, min: u8) -> Parsed<Expr> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Token::Punct(':') => BinOp::Then,
                Token::Punct('<') => BinOp::Less,
                Token::Punct('>') => BinOp::Greater,
                Token::EqualEqual => BinOp::Equal,
                Token::Punct('+') => BinOp::Add,
                Token::Punct('-') => BinOp::Sub,
                Token::Punct('*') => BinOp::Mul,
                Token::Punct('/') => BinOp::Div,
                _ => return Ok(lhs),
            };
            if op.precedence() < min {
                return Ok(lhs);
            }
            self.pos += 1;
            let rhs = self.binary(op.precedence() + 1)?;
            lhs = Expr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
    }

    fn unary(&mut self) -> Parsed<Expr> {
        if self.peek() == &Token::Punct('-') {
            self.pos += 1;
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Parsed<Expr> {
        if self.is_keyword("if") {
            return self.if_expr();
        }
        if self.is_keyword("for") {
            return self.for_expr();
        }
        match self.peek().clone() {
            Token::Number(n) => {
                self.pos += 1;
                Ok(Expr::Number(n))
            }
            Token::Punct('(') => {
                self.pos += 1;
                let inner = self.expr()?;
                self.expect_punct(')')?;
                Ok(inner)
            }
            Token::Ident(_) => {
                let name = self.name("an expression")?;
                if self.peek() != &Token::Punct('(') {
                    return Ok(Expr::Variable(name));
                }
                self.pos += 1;
                let mut args = Vec::new();
                if self.peek() == &Token::Punct(')') {
                    self.pos += 1;
                    return Ok(Expr::Call { callee: name, args });
                }
                loop {
                    args.push(self.expr()?);
                    match self.peek() {
                        Token::Punct(')') => break,
                        Token::Punct(',') => self.pos += 1,
                        _ => return Err(self.unexpected("',' or ')'")),
                    }
                }
                self.pos += 1;
                Ok(Expr::Call { callee: name, args })
            }
            _ => Err(self.unexpected("an expression")),
        }
    }

    fn if_expr(&mut self) -> Parsed<Expr> {
        self.expect_keyword("if")?;
        let cond = self.expr()?;
        self.expect_keyword("then")?;
        let then = self.expr()?;
        self.expect_keyword("else")?;
        let otherwise = self.expr()?;
        Ok(Expr::If { cond: Box::new(cond), then: Box::new(then), otherwise: Box::new(otherwise) })
    }

    fn for_expr(&mut self) -> Parsed<Expr> {
        self.expect_keyword("for")?;
        let var = self.name("a loop variable")?;
        self.expect_punct('=')?;
        let start = self.expr()?;
        self.expect_punct(',')?;
        let cond = self.expr()?;
        let step = if self.peek() == &Token::Punct(',') {
            self.pos += 1;
            Some(Box::new(self.expr()?))
        } else {
            None
        };
        self.expect_keyword("in")?;
        let body = self.expr()?;
        Ok(Expr::For { var, start: Box::new(start), cond: Box::new(cond), step, body: Box::new(body) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(n: f64) -> Box<Expr> {
        Box::new(Expr::Number(n))
    }

    #[test]
    fn products_bind_tighter_than_sums_and_operators_associate_left() {
        let parsed = parse_line("1 - 2 - 3 * 4").unwrap();
        let left = Expr::Binary { op: BinOp::Sub, lhs: num(1.0), rhs: num(2.0) };
        let product = Expr::Binary { op: BinOp::Mul, lhs: num(3.0), rhs: num(4.0) };
        let whole = Expr::Binary { op: BinOp::Sub, lhs: Box::new(left), rhs: Box::new(product) };
        assert_eq!(parsed, vec![Statement::Expr(whole)]);
    }

    #[test]
    fn a_line_holds_several_statements() {
        let parsed = parse_line("def f(x, y) x; extern sin(x); f(1, 2);").unwrap();
        assert_eq!(parsed.len(), 3);
        assert!(matches!(&parsed[0], Statement::Def(p, _) if p.params == ["x", "y"]));
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        let err = parse_line("def f(x) x +").unwrap_err();
        assert_eq!(err.to_string(), "syntax error at column 13: expected an expression, found the end of the line");
        assert_eq!(parse_line("f(1 2)").unwrap_err().column, 5);
        assert!(parse_line("def if(x) x").is_err(), "keywords are not names");
    }
}
