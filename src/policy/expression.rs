//! `expression`: a formula over collected metrics that yields a desired count.
//!
//! ```text
//! ceil(max(queue_depth / 200, avg_over(cpu, 3) / 60 * current))
//! ```
//! - numbers; metric ids (the newest complete value); `current`, `running`, `pending`,
//!   `min_count`, `max_count`;
//! - `+ - * / % ^`, comparisons `< <= > >= == !=` and `&& || !` (true is 1, false is 0);
//! - `ceil floor round abs sqrt ln exp`, `min(a, b, ...)`, `max(a, b, ...)`, `clamp(x, lo, hi)`,
//!   `if(cond, then, else)`;
//! - over the last N periods of a metric: `avg_over(m, N)`, `max_over(m, N)`, `min_over(m, N)`,
//!   `sum_over(m, N)`.
//!
//! The result is rounded up to a whole count (a negative one is 0). A metric without a value is
//! missing data; a result that is not a finite number is an error (the target holds).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use super::Policy;
use crate::eval_io::{num, EvalInput, Recommendation};
use crate::format::push_text;
use crate::read::{Cx, MapReader};

/// The variables every expression may use besides metric ids.
pub const VARIABLES: &[&str] = &["current", "running", "pending", "min_count", "max_count"];
const FUNCTIONS: &[&str] = &[
    "ceil", "floor", "round", "abs", "sqrt", "ln", "exp", "min", "max", "clamp", "if", "avg_over",
    "max_over", "min_over", "sum_over",
];

/// An expression as parsed: every name resolved to what it is (a count, a metric, a function)
/// once, when it is read, not on every evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(f64),
    /// One of [`VARIABLES`].
    Count(Count),
    /// A metric id: its newest complete value.
    Metric(Arc<str>),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    /// `avg_over(metric, n)` and friends.
    Over(Over),
}

/// The counts an expression may read besides metrics ([`VARIABLES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Current,
    Running,
    Pending,
    Min,
    Max,
}

impl Count {
    fn of(name: &str) -> Option<Count> {
        Some(match name {
            "current" => Count::Current,
            "running" => Count::Running,
            "pending" => Count::Pending,
            "min_count" => Count::Min,
            "max_count" => Count::Max,
            _ => return None,
        })
    }

    fn value(self, input: &EvalInput<'_>) -> f64 {
        f64::from(match self {
            Count::Current => input.current,
            Count::Running => input.running,
            Count::Pending => input.pending,
            Count::Min => input.min,
            Count::Max => input.max,
        })
    }
}

/// The functions of one or more values (the `_over` ones are [`Fold`]s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Ceil,
    Floor,
    Round,
    Abs,
    Sqrt,
    Ln,
    Exp,
    Min,
    Max,
    Clamp,
    If,
}

impl Func {
    fn of(name: &str) -> Option<Func> {
        Some(match name {
            "ceil" => Func::Ceil,
            "floor" => Func::Floor,
            "round" => Func::Round,
            "abs" => Func::Abs,
            "sqrt" => Func::Sqrt,
            "ln" => Func::Ln,
            "exp" => Func::Exp,
            "min" => Func::Min,
            "max" => Func::Max,
            "clamp" => Func::Clamp,
            "if" => Func::If,
            _ => return None,
        })
    }

    /// What its arguments must number, when they do not.
    fn arity_wanted(self, given: usize) -> Option<&'static str> {
        let (ok, want) = match self {
            Func::Min | Func::Max => (given > 0, "one or more arguments"),
            Func::Clamp => (given == 3, "3 arguments (x, low, high)"),
            Func::If => (given == 3, "3 arguments (condition, then, else)"),
            _ => (given == 1, "1 argument"),
        };
        (!ok).then_some(want)
    }

    /// Its value at `vals`, as many as [`Func::arity_wanted`] allows (`eval` reads only the
    /// branch of an `if` that it takes).
    fn apply(self, vals: &[f64]) -> f64 {
        match self {
            Func::Ceil => vals[0].ceil(),
            Func::Floor => vals[0].floor(),
            Func::Round => vals[0].round(),
            Func::Abs => vals[0].abs(),
            Func::Sqrt => vals[0].sqrt(),
            Func::Ln => vals[0].ln(),
            Func::Exp => vals[0].exp(),
            Func::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
            Func::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Func::Clamp => vals[0].clamp(vals[1].min(vals[2]), vals[2].max(vals[1])),
            Func::If => vals[if truth(vals[0]) { 1 } else { 2 }],
        }
    }
}

/// How `f_over(metric, n)` sums up its periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    Avg,
    Max,
    Min,
    Sum,
}

impl Fold {
    fn of(name: &str) -> Option<Fold> {
        Some(match name {
            "avg_over" => Fold::Avg,
            "max_over" => Fold::Max,
            "min_over" => Fold::Min,
            "sum_over" => Fold::Sum,
            _ => return None,
        })
    }
}

/// `f(metric, n)`: a metric's last `n` periods summed up by `f`.
#[derive(Debug, Clone, PartialEq)]
pub struct Over {
    pub f: Fold,
    pub metric: String,
    pub n: usize,
    /// `f(metric,n)`, the name its value is reported under (written once, at parse time).
    pub key: Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

/// A mistake in an expression, at a character offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.offset + 1, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    End,
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == '_') {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            let v = text.parse::<f64>().map_err(|_| ParseError {
                offset: start,
                message: format!("`{text}` is not a number"),
            })?;
            out.push((Tok::Num(v), start));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), start));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op2 = ["<=", ">=", "==", "!=", "&&", "||"]
            .into_iter()
            .find(|o| *o == two);
        if let Some(op) = op2 {
            out.push((Tok::Op(op), start));
            i += 2;
            continue;
        }
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '+' => Tok::Op("+"),
            '-' => Tok::Op("-"),
            '*' => Tok::Op("*"),
            '/' => Tok::Op("/"),
            '%' => Tok::Op("%"),
            '^' => Tok::Op("^"),
            '<' => Tok::Op("<"),
            '>' => Tok::Op(">"),
            '!' => Tok::Op("!"),
            other => {
                return Err(ParseError {
                    offset: start,
                    message: format!("unexpected `{other}`"),
                })
            }
        };
        out.push((tok, start));
        i += 1;
    }
    out.push((Tok::End, chars.len()));
    Ok(out)
}

/// Binding power and operator for infix tokens; `^` is right-associative.
fn infix(op: &str) -> Option<(u8, Op)> {
    Some(match op {
        "||" => (1, Op::Or),
        "&&" => (2, Op::And),
        "==" => (3, Op::Eq),
        "!=" => (3, Op::Ne),
        "<" => (4, Op::Lt),
        "<=" => (4, Op::Le),
        ">" => (4, Op::Gt),
        ">=" => (4, Op::Ge),
        "+" => (5, Op::Add),
        "-" => (5, Op::Sub),
        "*" => (6, Op::Mul),
        "/" => (6, Op::Div),
        "%" => (6, Op::Rem),
        "^" => (7, Op::Pow),
        _ => return None,
    })
}

/// How deep an expression may nest (operators, parentheses and calls inside each other): far
/// above any real one, and far below what evaluating, walking or dropping it recursively could
/// not hold on a small stack.
pub const MAX_DEPTH: usize = 64;

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    /// How many `expr` calls are open.
    level: usize,
}

impl Parser {
    fn peek(&self) -> &(Tok, usize) {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> (Tok, usize) {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }

    fn fail<T>(&self, offset: usize, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            offset,
            message: message.into(),
        })
    }

    /// A node `depth` deep, or the mistake of going deeper than [`MAX_DEPTH`] at `at`.
    fn deep(&self, e: Expr, depth: usize, at: usize) -> Result<(Expr, usize), ParseError> {
        if depth > MAX_DEPTH {
            return self.fail(
                at,
                format!("the expression nests deeper than {MAX_DEPTH} levels (operators, parentheses and calls inside each other)"),
            );
        }
        Ok((e, depth))
    }

    fn expr(&mut self, min_bp: u8) -> Result<(Expr, usize), ParseError> {
        self.level += 1;
        if self.level > MAX_DEPTH {
            let at = self.peek().1;
            return self.fail(
                at,
                format!("the expression nests deeper than {MAX_DEPTH} levels (operators, parentheses and calls inside each other)"),
            );
        }
        let (mut lhs, mut depth) = self.prefix()?;
        loop {
            let (tok, at) = self.peek().clone();
            let Tok::Op(op) = tok else { break };
            let Some((bp, op)) = infix(op) else { break };
            if bp < min_bp {
                break;
            }
            self.next();
            let next_min = if op == Op::Pow { bp } else { bp + 1 };
            let (rhs, d) = self.expr(next_min)?;
            (lhs, depth) = self.deep(Expr::Bin(op, Box::new(lhs), Box::new(rhs)), 1 + depth.max(d), at)?;
        }
        self.level -= 1;
        Ok((lhs, depth))
    }

    fn prefix(&mut self) -> Result<(Expr, usize), ParseError> {
        let (tok, at) = self.next();
        match tok {
            Tok::Num(v) => Ok((Expr::Num(v), 1)),
            // Unary operators bind looser than `^` (so -2^2 is -4) and tighter than `*`.
            Tok::Op("-") => {
                let (e, d) = self.expr(7)?;
                self.deep(Expr::Neg(Box::new(e)), d + 1, at)
            }
            Tok::Op("+") => self.expr(7),
            Tok::Op("!") => {
                let (e, d) = self.expr(7)?;
                self.deep(Expr::Not(Box::new(e)), d + 1, at)
            }
            Tok::LParen => {
                let e = self.expr(0)?;
                self.expect_rparen(at)?;
                Ok(e)
            }
            Tok::Ident(name) => {
                if self.peek().0 != Tok::LParen {
                    if FUNCTIONS.contains(&name.as_str()) && !VARIABLES.contains(&name.as_str()) {
                        return self.fail(at, format!("`{name}` is a function: write {name}(...)"));
                    }
                    return Ok((
                        Count::of(&name).map_or_else(|| Expr::Metric(name.into()), Expr::Count),
                        1,
                    ));
                }
                self.next();
                self.call(name, at)
            }
            Tok::End => self.fail(at, "the expression ends too early"),
            other => self.fail(at, format!("unexpected {}", describe(&other))),
        }
    }

    fn expect_rparen(&mut self, opened: usize) -> Result<(), ParseError> {
        match self.next() {
            (Tok::RParen, _) => Ok(()),
            (other, at) => self.fail(
                at,
                format!(
                    "expected `)` to close the `(` at character {}, found {}",
                    opened + 1,
                    describe(&other)
                ),
            ),
        }
    }

    fn call(&mut self, name: String, at: usize) -> Result<(Expr, usize), ParseError> {
        if let Some(f) = Fold::of(&name) {
            return self.over(f, name, at);
        }
        let Some(func) = Func::of(&name) else {
            let hint = crate::read::closest(&name, FUNCTIONS)
                .map(|f| format!("; did you mean `{f}`?"))
                .unwrap_or_default();
            return self.fail(at, format!("unknown function `{name}`{hint}"));
        };
        let mut args = Vec::new();
        let mut depth = 1;
        if self.peek().0 == Tok::RParen {
            self.next();
        } else {
            loop {
                let (a, d) = self.expr(0)?;
                depth = depth.max(d + 1);
                args.push(a);
                match self.next() {
                    (Tok::Comma, _) => continue,
                    (Tok::RParen, _) => break,
                    (other, a) => {
                        return self.fail(
                            a,
                            format!("expected `,` or `)` in {name}(...), found {}", describe(&other)),
                        )
                    }
                }
            }
        }
        if let Some(want) = func.arity_wanted(args.len()) {
            return self.fail(at, format!("{name} takes {want}, given {}", args.len()));
        }
        self.deep(Expr::Call(func, args), depth, at)
    }

    /// `avg_over(metric, N)` and its kin: a metric id and a whole number of periods.
    fn over(&mut self, f: Fold, name: String, at: usize) -> Result<(Expr, usize), ParseError> {
        let (metric, m_at) = match self.next() {
            (Tok::Ident(m), a) => (m, a),
            (other, a) => {
                return self.fail(
                    a,
                    format!(
                        "{name}'s first argument is a metric id, found {}",
                        describe(&other)
                    ),
                )
            }
        };
        if VARIABLES.contains(&metric.as_str()) {
            return self.fail(
                m_at,
                format!("{name} reads a metric's periods; `{metric}` is not a metric"),
            );
        }
        let (sep, sep_at) = self.next();
        if sep != Tok::Comma {
            return self.fail(sep_at, format!("write {name}({metric}, N) with N periods"));
        }
        let n = match self.next() {
            (Tok::Num(v), _) if v >= 1.0 && v.fract() == 0.0 && v <= 10_000.0 => v as usize,
            (other, a) => {
                return self.fail(
                    a,
                    format!(
                        "{name}'s second argument is a whole number of periods (1 or more), found {}",
                        describe(&other)
                    ),
                )
            }
        };
        self.expect_rparen(at)?;
        let key = format!("{name}({metric},{n})").into();
        Ok((Expr::Over(Over { f, metric, n, key }), 1))
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(v) => format!("the number {}", num(*v)),
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Op(o) => format!("`{o}`"),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::Comma => "`,`".into(),
        Tok::End => "the end".into(),
    }
}

/// Parses an expression.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        toks: tokenize(src)?,
        pos: 0,
        level: 0,
    };
    let (e, _) = p.expr(0)?;
    match p.next() {
        (Tok::End, _) => Ok(e),
        (other, at) => p.fail(
            at,
            format!("unexpected {} after a complete expression", describe(&other)),
        ),
    }
}

impl Expr {
    /// The metric ids it reads.
    pub fn metrics(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        self.walk(&mut |e| match e {
            Expr::Metric(v) => {
                out.insert(&**v);
            }
            Expr::Over(o) => {
                out.insert(o.metric.as_str());
            }
            _ => {}
        });
        out
    }

    /// How many metric values one evaluation reads at most (each read is reported).
    fn reads(&self) -> usize {
        let mut n = 0;
        self.walk(&mut |e| match e {
            Expr::Metric(_) | Expr::Over(_) => n += 1,
            _ => {}
        });
        n
    }

    fn walk<'e>(&'e self, f: &mut impl FnMut(&'e Expr)) {
        f(self);
        match self {
            Expr::Neg(e) | Expr::Not(e) => e.walk(f),
            Expr::Bin(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.walk(f)),
            Expr::Num(_) | Expr::Count(_) | Expr::Metric(_) | Expr::Over(..) => {}
        }
    }
}

/// Why an expression has no value.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// This metric has no value for a period the expression reads.
    Missing(String),
}

fn truth(v: f64) -> bool {
    v != 0.0 && !v.is_nan()
}

/// Evaluates against one input; `seen` collects the metric values read.
pub fn eval(e: &Expr, input: &EvalInput<'_>, seen: &mut Vec<(Arc<str>, f64)>) -> Result<f64, EvalError> {
    Ok(match e {
        Expr::Num(v) => *v,
        Expr::Count(c) => c.value(input),
        Expr::Metric(m) => newest(m, input, seen)?,
        Expr::Over(o) => over(o, input, seen)?,
        Expr::Neg(a) => -eval(a, input, seen)?,
        Expr::Not(a) => f64::from(u8::from(!truth(eval(a, input, seen)?))),
        Expr::Bin(op, a, b) => binary(*op, eval(a, input, seen)?, eval(b, input, seen)?),
        Expr::Call(Func::If, args) => {
            let branch = if truth(eval(&args[0], input, seen)?) { 1 } else { 2 };
            return eval(&args[branch], input, seen);
        }
        Expr::Call(func, args) => {
            let vals = args
                .iter()
                .map(|a| eval(a, input, seen))
                .collect::<Result<Vec<f64>, _>>()?;
            func.apply(&vals)
        }
    })
}

/// A metric's newest complete period.
fn newest(
    metric: &Arc<str>,
    input: &EvalInput<'_>,
    seen: &mut Vec<(Arc<str>, f64)>,
) -> Result<f64, EvalError> {
    let mut last = None;
    let v = input
        .metric(metric)
        .each_value(1, |v| last = Some(v))
        .and(last)
        .ok_or_else(|| EvalError::Missing(metric.to_string()))?;
    seen.push((metric.clone(), v));
    Ok(v)
}

/// The value of `f(metric, n)`.
fn over(o: &Over, input: &EvalInput<'_>, seen: &mut Vec<(Arc<str>, f64)>) -> Result<f64, EvalError> {
    let missing = || EvalError::Missing(o.metric.clone());
    // Summed from -0.0 as `Iterator::sum` sums; folded as the values come (no vector of them).
    let (mut sum, mut max, mut min) = (-0.0, f64::MIN, f64::MAX);
    let n = input
        .metric(&o.metric)
        .each_value(o.n, |v| {
            sum += v;
            max = f64::max(max, v);
            min = f64::min(min, v);
        })
        .ok_or_else(missing)?;
    if n == 0 {
        return Err(missing());
    }
    let v = match o.f {
        Fold::Avg => sum / n as f64,
        Fold::Max => max,
        Fold::Min => min,
        Fold::Sum => sum,
    };
    seen.push((o.key.clone(), v));
    Ok(v)
}

/// `x op y`; comparisons and logic give 1 or 0.
fn binary(op: Op, x: f64, y: f64) -> f64 {
    let bool_ = |b: bool| f64::from(u8::from(b));
    match op {
        Op::Add => x + y,
        Op::Sub => x - y,
        Op::Mul => x * y,
        Op::Div => x / y,
        Op::Rem => x % y,
        Op::Pow => x.powf(y),
        Op::Lt => bool_(x < y),
        Op::Le => bool_(x <= y),
        Op::Gt => bool_(x > y),
        Op::Ge => bool_(x >= y),
        Op::Eq => bool_(x == y),
        Op::Ne => bool_(x != y),
        Op::And => bool_(truth(x) && truth(y)),
        Op::Or => bool_(truth(x) || truth(y)),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    /// As written.
    pub source: String,
    pub expr: Expr,
    /// How many metric values it reads: room for them, made once per evaluation.
    reads: usize,
}

pub(super) const KEYS: &[&str] = &["expression"];

impl Expression {
    pub(super) fn read(m: &mut MapReader<'_>, cx: &mut Cx) -> Option<Self> {
        m.req_with(cx, "expression", |n, p, cx| {
            let Some(text) = n.as_scalar() else {
                cx.error(n.span, p, format!("expected a formula, found {}", n.describe()));
                return None;
            };
            match parse(text) {
                Ok(expr) => Some(Expression {
                    source: text.to_string(),
                    reads: expr.reads(),
                    expr,
                }),
                Err(e) => {
                    // Point at the character; a quoted scalar starts one column later.
                    let quoted = matches!(&n.value, crate::read::yaml::Value::Scalar { quoted: true, .. });
                    let mut span = n.span;
                    if !text.contains('\n') {
                        span.col += e.offset + usize::from(quoted);
                    }
                    cx.error(span, p, format!("{}: {}", text, e.message));
                    None
                }
            }
        })
    }
}

impl Policy for Expression {
    fn evaluate(&self, input: &EvalInput<'_>) -> Recommendation {
        let mut seen = Vec::with_capacity(self.reads);
        match eval(&self.expr, input, &mut seen) {
            Err(EvalError::Missing(metric)) => Recommendation::Missing {
                reason: format!("{metric} has no value for a period the expression reads"),
                metric,
            },
            Ok(v) if !v.is_finite() => Recommendation::Error {
                reason: format!("`{}` gave {v}, not a count", self.source),
            },
            Ok(v) => {
                let want = v.max(0.0).ceil().min(f64::from(u32::MAX)) as u32;
                // `SOURCE` = V (metric value, …) → current → want, written once.
                let mut reason = String::with_capacity(self.source.len() + 48 + 24 * seen.len());
                push_text! {reason; "`", self.source, "` = ", num(v)};
                for (i, (k, v)) in seen.iter().enumerate() {
                    push_text! {reason; if i == 0 { " (" } else { ", " }, k, " ", num(*v)};
                }
                if !seen.is_empty() {
                    reason.push(')');
                }
                push_text! {reason; " → ", input.current, " → ", want};
                Recommendation::Wants {
                    count: want,
                    reason,
                    inputs: seen,
                }
            }
        }
    }

    fn metrics(&self) -> Vec<&str> {
        self.expr.metrics().into_iter().collect()
    }

    fn summary(&self) -> String {
        format!("expression `{}`", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_is_a_count_and_no_metric_is() {
        for v in VARIABLES {
            assert!(Count::of(v).is_some(), "{v}");
        }
        assert_eq!(Count::of("cpu"), None);
    }

    #[test]
    fn precedence_and_associativity() {
        let cases = [
            ("1 + 2 * 3", 7.0),
            ("(1 + 2) * 3", 9.0),
            ("2 ^ 3 ^ 2", 512.0),
            ("-2 ^ 2", -4.0),
            ("10 - 4 - 3", 3.0),
            ("7 % 4 + 1", 4.0),
            ("1 < 2 && 3 >= 3", 1.0),
            ("!(1 == 1) || 0", 0.0),
            ("if(2 > 1, 10, 20)", 10.0),
            ("max(1, 5, 3) + min(4, 2)", 7.0),
            (
                "clamp(15, 0, 10) + ceil(0.2) + floor(1.9) + round(2.5) + abs(-1)",
                16.0,
            ),
            ("1_000 / 4e2", 2.5),
        ];
        let set = crate::eval_io::MetricSet::new();
        let assume = |_: &str| None;
        let ext = Default::default();
        let input = EvalInput::new(chrono::Utc::now(), 3, &set, &assume, &ext);
        for (src, want) in cases {
            let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(eval(&e, &input, &mut Vec::new()), Ok(want), "{src}");
        }
    }

    #[test]
    fn deep_nesting_of_every_kind_is_refused_at_its_place_without_recursing_on() {
        let deep = |n: usize, open: &str, close: &str| format!("{}1{}", open.repeat(n), close.repeat(n));
        for n in [10, 60] {
            assert!(parse(&deep(n, "(", ")")).is_ok(), "{n}");
        }
        for (what, src) in [
            ("parentheses", deep(100_000, "(", ")")),
            ("calls", deep(1_000, "abs(", ")")),
            ("unary", format!("{}1", "-".repeat(100_000))),
            ("a flat chain", vec!["1"; 100_000].join(" + ")),
            ("powers", vec!["2"; 10_000].join(" ^ ")),
        ] {
            let e = parse(&src).unwrap_err();
            assert!(e.message.contains("nests deeper than 64 levels"), "{what}: {e:?}");
            assert!(
                e.offset < 1_000,
                "{what}: found where it crosses the bound, at {}",
                e.offset
            );
        }
        // at the bound exactly: it parses and evaluates
        let e = parse(&vec!["1"; 64].join(" + ")).unwrap();
        let set = crate::eval_io::MetricSet::new();
        let assume = |_: &str| None;
        let ext = Default::default();
        let input = EvalInput::new(chrono::Utc::now(), 3, &set, &assume, &ext);
        assert_eq!(eval(&e, &input, &mut Vec::new()), Ok(64.0));
    }

    #[test]
    fn mistakes_are_located() {
        let cases = [
            ("1 +", 3, "the expression ends too early"),
            ("ceil(2", 6, "expected `,` or `)` in ceil(...), found the end"),
            (
                "(1 + 2",
                6,
                "expected `)` to close the `(` at character 1, found the end",
            ),
            ("cel(2)", 0, "unknown function `cel`; did you mean `ceil`?"),
            ("avg_over(cpu)", 12, "write avg_over(cpu, N) with N periods"),
            (
                "avg_over(current, 3)",
                9,
                "avg_over reads a metric's periods; `current` is not a metric",
            ),
            (
                "avg_over(cpu, 0)",
                14,
                "avg_over's second argument is a whole number of periods (1 or more), found the number 0",
            ),
            (
                "clamp(1, 2)",
                0,
                "clamp takes 3 arguments (x, low, high), given 2",
            ),
            ("2 $ 3", 2, "unexpected `$`"),
            ("1 2", 2, "unexpected the number 2 after a complete expression"),
            ("max + 1", 0, "`max` is a function: write max(...)"),
        ];
        for (src, offset, message) in cases {
            let e = parse(src).unwrap_err();
            assert_eq!((e.offset, e.message.as_str()), (offset, message), "{src}");
        }
    }

    #[test]
    fn metrics_read_are_listed() {
        let e = parse("ceil(queue_depth / 100) + avg_over(cpu, 3) * current").unwrap();
        assert_eq!(
            e.metrics().into_iter().collect::<Vec<_>>(),
            ["cpu", "queue_depth"]
        );
    }
}
