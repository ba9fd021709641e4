//! Lexing and parsing of Go templates into [`Node`]s.

use serde_json::Value;

use super::TemplateError;

/// Functions the renderer knows (Go's builtins that chat templates use, plus Ollama's `json`
/// and `currentDate`).
pub(crate) const FUNCTIONS: &[&str] = &[
    "and",
    "or",
    "not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "len",
    "index",
    "slice",
    "printf",
    "print",
    "println",
    "json",
    "html",
    "currentDate",
];

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Field(Vec<String>),
    Dot,
    Var(String, Vec<String>),
    Ident(String),
    Lit(Value),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub at: usize,
    pub space_before: bool,
}

/// One operand of a command.
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Func(String),
    Lit(Value),
    Paren(Box<Pipeline>, Vec<String>),
}

/// A command: operands, the first of which may be a function.
#[derive(Debug, Clone)]
pub(crate) struct Command {
    pub args: Vec<(Operand, usize)>,
}

/// `[$x :=] cmd | cmd …`.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pub decl: Vec<String>,
    pub define: bool,
    pub cmds: Vec<Command>,
    pub at: usize,
}

/// A node of the parsed template.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    Break(usize),
    Continue(usize),
}

fn err(at: usize, msg: impl Into<String>) -> TemplateError {
    TemplateError {
        offset: at,
        msg: msg.into(),
    }
}

enum Item {
    Text(String),
    Action(Vec<Token>, usize),
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Splits the source into text and tokenized actions, applying `{{-` / `-}}` trimming.
fn lex(src: &str) -> Result<Vec<Item>, TemplateError> {
    let b = src.as_bytes();
    let mut items = Vec::new();
    let mut pos = 0;
    let mut trim_next = false;
    loop {
        let open = src[pos..].find("{{").map(|i| i + pos);
        let mut text = &src[pos..open.unwrap_or(src.len())];
        if trim_next {
            text = text.trim_start_matches([' ', '\t', '\r', '\n']);
        }
        let Some(open) = open else {
            items.push(Item::Text(text.to_string()));
            return Ok(items);
        };
        let mut p = open + 2;
        if b.get(p) == Some(&b'-') && b.get(p + 1).is_some_and(|&c| is_space(c)) {
            text = text.trim_end_matches([' ', '\t', '\r', '\n']);
            p += 2;
        }
        items.push(Item::Text(text.to_string()));
        while p < b.len() && is_space(b[p]) {
            p += 1;
        }
        if src[p..].starts_with("/*") {
            let end = src[p..]
                .find("*/")
                .ok_or_else(|| err(open, "unclosed comment"))?
                + p
                + 2;
            let rest = &src[end..];
            let (trim, len) = if rest.starts_with(" -}}") {
                (true, 4)
            } else if rest.starts_with("}}") {
                (false, 2)
            } else {
                return Err(err(end, "comment ends without closing delimiter }}"));
            };
            trim_next = trim;
            pos = end + len;
            continue;
        }
        let (tokens, end, trim) = lex_action(src, p, open)?;
        items.push(Item::Action(tokens, open));
        trim_next = trim;
        pos = end;
    }
}

fn chain(src: &str, mut p: usize) -> (Vec<String>, usize) {
    let b = src.as_bytes();
    let mut out = Vec::new();
    while b.get(p) == Some(&b'.') && b.get(p + 1).is_some_and(|&c| ident_char(c)) {
        let s = p + 1;
        p = s;
        while p < b.len() && ident_char(b[p]) {
            p += 1;
        }
        out.push(src[s..p].to_string());
    }
    (out, p)
}

/// Tokens of the action starting at `p`; returns them, the position after `}}`, and whether
/// the action ended with `-}}`.
fn lex_action(
    src: &str,
    mut p: usize,
    open: usize,
) -> Result<(Vec<Token>, usize, bool), TemplateError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut space = true;
    loop {
        let start = p;
        while p < b.len() && is_space(b[p]) {
            p += 1;
        }
        space = space || p > start;
        if p >= b.len() {
            return Err(err(
                open,
                "unclosed action: no }} before the end of the template",
            ));
        }
        if space && src[p..].starts_with("-}}") {
            return Ok((out, p + 3, true));
        }
        if src[p..].starts_with("}}") {
            return Ok((out, p + 2, false));
        }
        let at = p;
        let c = b[p];
        let tok = match c {
            b'(' => {
                p += 1;
                Tok::LParen
            }
            b')' => {
                p += 1;
                Tok::RParen
            }
            b'|' => {
                p += 1;
                Tok::Pipe
            }
            b',' => {
                p += 1;
                Tok::Comma
            }
            b':' if b.get(p + 1) == Some(&b'=') => {
                p += 2;
                Tok::Declare
            }
            b'=' => {
                p += 1;
                Tok::Assign
            }
            b'.' => {
                let (c, e) = chain(src, p);
                if c.is_empty() {
                    p += 1;
                    Tok::Dot
                } else {
                    p = e;
                    Tok::Field(c)
                }
            }
            b'$' => {
                let s = p;
                p += 1;
                while p < b.len() && ident_char(b[p]) {
                    p += 1;
                }
                let name = src[s..p].to_string();
                let (c, e) = chain(src, p);
                p = e;
                Tok::Var(name, c)
            }
            b'"' => {
                let s = p;
                p += 1;
                loop {
                    match b.get(p) {
                        None | Some(b'\n') => return Err(err(s, "unterminated quoted string")),
                        Some(b'\\') => p += 2,
                        Some(b'"') => break,
                        _ => p += 1,
                    }
                }
                p += 1;
                Tok::Lit(Value::String(unquote(&src[s..p]).ok_or_else(|| {
                    err(s, format!("bad escape in string {}", &src[s..p]))
                })?))
            }
            b'`' => {
                let s = p + 1;
                let e = src[s..]
                    .find('`')
                    .ok_or_else(|| err(p, "unterminated raw string"))?
                    + s;
                p = e + 1;
                Tok::Lit(Value::String(src[s..e].to_string()))
            }
            c if c.is_ascii_digit()
                || ((c == b'-' || c == b'+') && b.get(p + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                let s = p;
                p += 1;
                while p < b.len()
                    && (b[p].is_ascii_alphanumeric()
                        || b[p] == b'.'
                        || b[p] == b'_'
                        || ((b[p] == b'-' || b[p] == b'+') && matches!(b[p - 1], b'e' | b'E')))
                {
                    p += 1;
                }
                Tok::Lit(
                    number(&src[s..p])
                        .ok_or_else(|| err(s, format!("bad number {:?}", &src[s..p])))?,
                )
            }
            c if ident_char(c) => {
                let s = p;
                while p < b.len() && ident_char(b[p]) {
                    p += 1;
                }
                match &src[s..p] {
                    "true" => Tok::Lit(Value::Bool(true)),
                    "false" => Tok::Lit(Value::Bool(false)),
                    "nil" => Tok::Lit(Value::Null),
                    w => Tok::Ident(w.to_string()),
                }
            }
            _ => {
                let ch = src[p..].chars().next().unwrap_or('?');
                return Err(err(p, format!("unexpected {ch:?} in action")));
            }
        };
        out.push(Token {
            tok,
            at,
            space_before: space,
        });
        space = false;
    }
}

fn number(s: &str) -> Option<Value> {
    let t = s.replace('_', "");
    let (neg, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    let int = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else {
        body.parse::<i64>().ok()
    };
    if let Some(i) = int {
        return Some(Value::from(if neg { -i } else { i }));
    }
    let f: f64 = body.parse().ok()?;
    serde_json::Number::from_f64(if neg { -f } else { f }).map(Value::Number)
}

/// A Go interpreted string literal (with its quotes) → its value.
fn unquote(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut it = s[1..s.len() - 1].chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let hex = |it: &mut std::str::Chars<'_>, n: usize| -> Option<u32> {
            let h: String = it.by_ref().take(n).collect();
            (h.len() == n).then(|| u32::from_str_radix(&h, 16).ok())?
        };
        out.push(match it.next()? {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            '\\' => '\\',
            '"' => '"',
            '\'' => '\'',
            'x' => char::from_u32(hex(&mut it, 2)?)?,
            'u' => char::from_u32(hex(&mut it, 4)?)?,
            'U' => char::from_u32(hex(&mut it, 8)?)?,
            _ => return None,
        });
    }
    Some(out)
}

/// The parser over lexed items.
struct Parser {
    items: std::vec::IntoIter<Item>,
    end_at: usize,
    depth: usize,
}

/// The deepest nesting of control structures or parentheses accepted.
const MAX_DEPTH: usize = 100;

/// How a list ended.
enum Stop {
    Eof,
    End,
    Else(Vec<Token>, usize),
}

/// Parses `src` into nodes.
pub(crate) fn parse(src: &str) -> Result<Vec<Node>, TemplateError> {
    let mut p = Parser {
        items: lex(src)?.into_iter(),
        end_at: src.len(),
        depth: 0,
    };
    match p.list()? {
        (nodes, Stop::Eof) => Ok(nodes),
        (_, Stop::End) => Err(err(p.end_at, "unexpected {{ end }}")),
        (_, Stop::Else(_, at)) => Err(err(at, "unexpected {{ else }}")),
    }
}

impl Parser {
    fn list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(item) = self.items.next() {
            let (toks, at) = match item {
                Item::Text(t) => {
                    if !t.is_empty() {
                        nodes.push(Node::Text(t));
                    }
                    continue;
                }
                Item::Action(toks, at) => (toks, at),
            };
            let kw = match toks.first() {
                Some(Token {
                    tok: Tok::Ident(w), ..
                }) => w.clone(),
                None => return Err(err(at, "missing value for command")),
                _ => String::new(),
            };
            let rest = &toks[1.min(toks.len())..];
            match kw.as_str() {
                "end" => {
                    self.end_at = at;
                    return Ok((nodes, Stop::End));
                }
                "else" => return Ok((nodes, Stop::Else(rest.to_vec(), at))),
                "if" | "with" | "range" => nodes.push(self.control(&kw, rest, at)?),
                "break" => nodes.push(Node::Break(at)),
                "continue" => nodes.push(Node::Continue(at)),
                "define" | "template" | "block" => {
                    return Err(err(at, format!("{{{{ {kw} }}}} is not supported")))
                }
                _ => nodes.push(Node::Action(pipeline(&toks, at)?)),
            }
        }
        Ok((nodes, Stop::Eof))
    }

    /// `if`/`with`/`range` whose pipeline is `toks`, up to its `end`.
    fn control(&mut self, kw: &str, toks: &[Token], at: usize) -> Result<Node, TemplateError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(err(
                at,
                format!("control structures nested deeper than {MAX_DEPTH}"),
            ));
        }
        let node = self.control_inner(kw, toks, at);
        self.depth -= 1;
        node
    }

    fn control_inner(
        &mut self,
        kw: &str,
        toks: &[Token],
        at: usize,
    ) -> Result<Node, TemplateError> {
        let pipe = pipeline(toks, at)?;
        let (body, stop) = self.list()?;
        let els = match stop {
            Stop::Eof => return Err(err(at, format!("missing {{{{ end }}}} for {{{{ {kw} }}}}"))),
            Stop::End => Vec::new(),
            Stop::Else(etoks, eat) => match etoks.first().map(|t| &t.tok) {
                None => match self.list()? {
                    (nodes, Stop::End) => nodes,
                    (_, Stop::Else(_, a)) => return Err(err(a, "a second {{ else }}")),
                    (_, Stop::Eof) => {
                        return Err(err(at, format!("missing {{{{ end }}}} for {{{{ {kw} }}}}")))
                    }
                },
                // `else if` / `else with`: a nested control sharing this one's end.
                Some(Tok::Ident(w)) if (w == "if" || w == "with") && kw != "range" => {
                    let w = w.clone();
                    vec![self.control(&w, &etoks[1..], eat)?]
                }
                _ => return Err(err(eat, "unexpected tokens after else")),
            },
        };
        Ok(match kw {
            "if" => Node::If(pipe, body, els),
            "with" => Node::With(pipe, body, els),
            _ => Node::Range(pipe, body, els),
        })
    }
}

/// Parses a whole pipeline with optional declarations.
fn pipeline(toks: &[Token], at: usize) -> Result<Pipeline, TemplateError> {
    let mut decl = Vec::new();
    let mut define = false;
    let mut i = 0;
    // `$x :=`, `$x =`, `$i, $m :=`.
    let decl_end = toks
        .iter()
        .position(|t| matches!(t.tok, Tok::Declare | Tok::Assign));
    if let Some(e) = decl_end {
        let vars: Vec<&Token> = toks[..e].iter().collect();
        let ok = match vars.as_slice() {
            [a] => matches!(&a.tok, Tok::Var(_, c) if c.is_empty()),
            [a, c, b] => {
                matches!(&a.tok, Tok::Var(_, x) if x.is_empty())
                    && c.tok == Tok::Comma
                    && matches!(&b.tok, Tok::Var(_, x) if x.is_empty())
            }
            _ => false,
        };
        if ok {
            for v in vars {
                if let Tok::Var(n, _) = &v.tok {
                    decl.push(n.clone());
                }
            }
            define = toks[e].tok == Tok::Declare;
            i = e + 1;
        }
    }
    let (p, next) = cmds(toks, i, at, 0)?;
    if next < toks.len() {
        return Err(err(toks[next].at, "unexpected token in pipeline"));
    }
    Ok(Pipeline {
        decl,
        define,
        cmds: p,
        at,
    })
}

/// Commands separated by `|`, from `i` up to the end or a `)`.
fn cmds(
    toks: &[Token],
    mut i: usize,
    at: usize,
    depth: usize,
) -> Result<(Vec<Command>, usize), TemplateError> {
    let mut out = Vec::new();
    loop {
        let mut args = Vec::new();
        while i < toks.len() && !matches!(toks[i].tok, Tok::Pipe | Tok::RParen) {
            let t = &toks[i];
            i += 1;
            let op = match &t.tok {
                Tok::Dot => Operand::Dot,
                Tok::Field(c) => Operand::Field(c.clone()),
                Tok::Var(n, c) => Operand::Var(n.clone(), c.clone()),
                Tok::Lit(v) => Operand::Lit(v.clone()),
                Tok::Ident(f) => {
                    if !FUNCTIONS.contains(&f.as_str()) {
                        return Err(err(t.at, format!("function {f:?} not defined")));
                    }
                    Operand::Func(f.clone())
                }
                Tok::LParen => {
                    if depth >= MAX_DEPTH {
                        return Err(err(
                            t.at,
                            format!("parentheses nested deeper than {MAX_DEPTH}"),
                        ));
                    }
                    let (inner, next) = cmds(toks, i, t.at, depth + 1)?;
                    if toks.get(next).map(|t| &t.tok) != Some(&Tok::RParen) {
                        return Err(err(t.at, "unclosed left paren"));
                    }
                    i = next + 1;
                    let mut fields = Vec::new();
                    if let Some(Token {
                        tok: Tok::Field(c),
                        space_before: false,
                        ..
                    }) = toks.get(i)
                    {
                        fields = c.clone();
                        i += 1;
                    }
                    let p = Pipeline {
                        decl: Vec::new(),
                        define: false,
                        cmds: inner,
                        at: t.at,
                    };
                    Operand::Paren(Box::new(p), fields)
                }
                _ => return Err(err(t.at, "unexpected token in command")),
            };
            args.push((op, t.at));
        }
        if args.is_empty() {
            return Err(err(
                toks.get(i).map_or(at, |t| t.at),
                "missing value for command",
            ));
        }
        out.push(Command { args });
        if i < toks.len() && toks[i].tok == Tok::Pipe {
            i += 1;
            continue;
        }
        return Ok((out, i));
    }
}
