//! Execution of parsed templates over JSON-like data, with Go's semantics for truth,
//! comparison, printing, variables and `range`.

use std::cmp::Ordering;

use serde_json::Value;

use super::parse::{Command, Node, Operand, Pipeline};
use super::TemplateError;

fn err(at: usize, msg: impl Into<String>) -> TemplateError {
    TemplateError {
        offset: at,
        msg: msg.into(),
    }
}

/// Go's truth: false, 0, nil, and empty strings, slices and maps are false.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// JSON the way Go's `json.Marshal` writes it (compact, `<`, `>`, `&` escaped).
pub(crate) fn go_json(v: &Value) -> String {
    serde_json::to_string(v)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A value as `{{ . }}` prints it: strings raw, `<no value>` for nil, slices as `[a b]`,
/// maps as JSON (Ollama's argument maps print as JSON).
pub(crate) fn show(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        Value::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(" ")),
        Value::Object(_) => go_json(v),
    }
}

/// Field `name` of an object: the key itself, else its lowerCamel and snake_case spellings
/// (so `.Function.Name` reads a tool's JSON `function.name`). Objects with capitalized keys
/// stand for Go structs, where an unknown field is an error; other maps give nil.
fn field(v: &Value, name: &str, at: usize) -> Result<Value, TemplateError> {
    let obj = match v {
        Value::Object(o) => o,
        Value::Null => return Ok(Value::Null),
        other => {
            return Err(err(
                at,
                format!("can't evaluate field {name} in a {}", kind(other)),
            ))
        }
    };
    let mut lower = name.to_string();
    if let Some(f) = lower.get_mut(0..1) {
        f.make_ascii_lowercase();
    }
    let mut snake = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    for k in [name, &lower, &snake] {
        if let Some(x) = obj.get(k) {
            return Ok(x.clone());
        }
    }
    if obj
        .keys()
        .any(|k| k.starts_with(|c: char| c.is_ascii_uppercase()))
    {
        return Err(err(
            at,
            format!("can't evaluate field {name}: no such field"),
        ));
    }
    Ok(Value::Null)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

/// The largest integer `range` iterates up to.
const MAX_RANGE: i64 = 1 << 20;

/// Control flow out of a node list.
enum Flow {
    Normal,
    Break(usize),
    Continue(usize),
}

pub(crate) struct Exec {
    pub out: String,
    vars: Vec<(String, Value)>,
}

impl Exec {
    pub(crate) fn new(root: &Value) -> Self {
        Exec {
            out: String::new(),
            vars: vec![("$".into(), root.clone())],
        }
    }

    pub(crate) fn run(&mut self, nodes: &[Node], dot: &Value) -> Result<(), TemplateError> {
        match self.list(nodes, dot)? {
            Flow::Normal => Ok(()),
            Flow::Break(at) | Flow::Continue(at) => {
                Err(err(at, "break or continue outside a range"))
            }
        }
    }

    fn list(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, TemplateError> {
        for n in nodes {
            let flow = match n {
                Node::Text(t) => {
                    self.out.push_str(t);
                    Flow::Normal
                }
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.decl.is_empty() {
                        self.out.push_str(&show(&v));
                    }
                    Flow::Normal
                }
                Node::If(p, then, els) | Node::With(p, then, els) => {
                    let mark = self.vars.len();
                    let v = self.pipeline(p, dot)?;
                    let f = if !truthy(&v) {
                        self.list(els, dot)?
                    } else if matches!(n, Node::With(..)) {
                        self.list(then, &v)?
                    } else {
                        self.list(then, dot)?
                    };
                    self.vars.truncate(mark);
                    f
                }
                Node::Range(p, body, els) => self.range(p, body, els, dot)?,
                Node::Break(at) => Flow::Break(*at),
                Node::Continue(at) => Flow::Continue(*at),
            };
            if !matches!(flow, Flow::Normal) {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn range(
        &mut self,
        p: &Pipeline,
        body: &[Node],
        els: &[Node],
        dot: &Value,
    ) -> Result<Flow, TemplateError> {
        let mark = self.vars.len();
        let plain = Pipeline {
            decl: Vec::new(),
            define: false,
            cmds: p.cmds.clone(),
            at: p.at,
        };
        let v = self.pipeline(&plain, dot)?;
        let items: Vec<(Value, Value)> = match &v {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| (Value::from(i), x.clone()))
                .collect(),
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                keys.into_iter()
                    .map(|k| (Value::from(k.as_str()), o[k].clone()))
                    .collect()
            }
            Value::Number(n) if n.as_i64().is_some_and(|n| n > MAX_RANGE) => {
                return Err(err(
                    p.at,
                    format!("range over more than {MAX_RANGE} integers"),
                ))
            }
            Value::Number(n) if n.as_i64().is_some() => (0..n.as_i64().unwrap_or(0).max(0))
                .map(|i| (Value::from(i), Value::from(i)))
                .collect(),
            Value::Null => Vec::new(),
            other => {
                return Err(err(
                    p.at,
                    format!("range can't iterate over a {}", kind(other)),
                ))
            }
        };
        if items.is_empty() {
            let f = self.list(els, dot)?;
            self.vars.truncate(mark);
            return Ok(f);
        }
        for (k, x) in items {
            self.vars.truncate(mark);
            match p.decl.as_slice() {
                [] => {}
                [m] => self.vars.push((m.clone(), x.clone())),
                [i, m, ..] => {
                    self.vars.push((i.clone(), k));
                    self.vars.push((m.clone(), x.clone()));
                }
            }
            if let Flow::Break(_) = self.list(body, &x)? {
                break;
            }
        }
        self.vars.truncate(mark);
        Ok(Flow::Normal)
    }

    fn var(&self, name: &str, at: usize) -> Result<Value, TemplateError> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| err(at, format!("undefined variable {name}")))
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut v: Option<Value> = None;
        for c in &p.cmds {
            v = Some(self.command(c, dot, v)?);
        }
        let v = v.unwrap_or(Value::Null);
        if let Some(name) = p.decl.first() {
            if p.define {
                self.vars.push((name.clone(), v.clone()));
            } else {
                let slot = self
                    .vars
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| err(p.at, format!("undefined variable {name}")))?;
                slot.1 = v.clone();
            }
        }
        Ok(v)
    }

    fn operand(&mut self, op: &Operand, at: usize, dot: &Value) -> Result<Value, TemplateError> {
        let walk = |mut v: Value, chain: &[String]| -> Result<Value, TemplateError> {
            for f in chain {
                v = field(&v, f, at)?;
            }
            Ok(v)
        };
        match op {
            Operand::Dot => Ok(dot.clone()),
            Operand::Field(c) => walk(dot.clone(), c),
            Operand::Var(n, c) => walk(self.var(n, at)?, c),
            Operand::Lit(v) => Ok(v.clone()),
            Operand::Paren(p, c) => {
                let v = self.pipeline(p, dot)?;
                walk(v, c)
            }
            Operand::Func(f) => self.call(f, &[], at, dot, None),
        }
    }

    fn command(
        &mut self,
        c: &Command,
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let (first, at) = &c.args[0];
        if let Operand::Func(f) = first {
            return self.call(f, &c.args[1..], *at, dot, piped);
        }
        if c.args.len() > 1 || piped.is_some() {
            return Err(err(*at, "can't give an argument to a non-function"));
        }
        self.operand(first, *at, dot)
    }

    fn call(
        &mut self,
        f: &str,
        args: &[(Operand, usize)],
        at: usize,
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let n = args.len() + usize::from(piped.is_some());
        // `and` / `or` evaluate lazily and return the deciding argument.
        if f == "and" || f == "or" {
            if n == 0 {
                return Err(err(
                    at,
                    format!("{f}: wrong number of args: want at least 1"),
                ));
            }
            let mut last = Value::Null;
            for (op, a) in args {
                last = self.operand(op, *a, dot)?;
                if truthy(&last) != (f == "and") {
                    return Ok(last);
                }
            }
            return Ok(piped.unwrap_or(last));
        }
        let mut vals = Vec::with_capacity(n);
        for (op, a) in args {
            vals.push(self.operand(op, *a, dot)?);
        }
        vals.extend(piped);
        super::funcs::call(f, &vals, at)
    }
}

/// Go's comparison of basic values (numbers with numbers, strings with strings, …).
pub(crate) fn compare(a: &Value, b: &Value, at: usize) -> Result<Ordering, TemplateError> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => Ok(i.cmp(&j)),
            _ => Ok(x
                .as_f64()
                .unwrap_or(0.0)
                .partial_cmp(&y.as_f64().unwrap_or(0.0))
                .unwrap_or(Ordering::Equal)),
        },
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        (Value::Null, Value::Null) => Ok(Ordering::Equal),
        _ => Err(err(
            at,
            format!(
                "incompatible types for comparison: {} and {}",
                kind(a),
                kind(b)
            ),
        )),
    }
}
