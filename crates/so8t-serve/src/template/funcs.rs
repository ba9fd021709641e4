//! The template functions: Go's builtins (`not eq ne lt le gt ge len index slice printf print
//! println html`) and Ollama's `json` and `currentDate`. `and`/`or` live in the executor.

use std::cmp::Ordering;

use serde_json::Value;

use super::eval::{compare, go_json, show, truthy};
use super::TemplateError;

fn err(at: usize, msg: impl Into<String>) -> TemplateError {
    TemplateError {
        offset: at,
        msg: msg.into(),
    }
}

fn int(v: &Value, what: &str, at: usize) -> Result<i64, TemplateError> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .ok_or_else(|| err(at, format!("{what}: {} is not an integer", show(v))))
}

fn arity(f: &str, args: &[Value], n: usize, at: usize) -> Result<(), TemplateError> {
    if args.len() != n {
        return Err(err(
            at,
            format!("{f}: wrong number of args: want {n}, got {}", args.len()),
        ));
    }
    Ok(())
}

/// Go's `eq` on two values: false (not an error) across kinds.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare(a, b, 0) == Ok(Ordering::Equal),
        _ => a == b,
    }
}

/// Calls builtin `f` on evaluated `args`.
pub(crate) fn call(f: &str, args: &[Value], at: usize) -> Result<Value, TemplateError> {
    let cmp = |ok: fn(Ordering) -> bool| -> Result<Value, TemplateError> {
        arity(f, args, 2, at)?;
        Ok(Value::Bool(ok(compare(&args[0], &args[1], at)?)))
    };
    match f {
        "not" => {
            arity(f, args, 1, at)?;
            Ok(Value::Bool(!truthy(&args[0])))
        }
        "eq" => {
            if args.len() < 2 {
                return Err(err(at, "eq: want at least 2 args"));
            }
            Ok(Value::Bool(args[1..].iter().any(|b| equal(&args[0], b))))
        }
        "ne" => {
            arity(f, args, 2, at)?;
            Ok(Value::Bool(!equal(&args[0], &args[1])))
        }
        "lt" => cmp(|o| o == Ordering::Less),
        "le" => cmp(|o| o != Ordering::Greater),
        "gt" => cmp(|o| o == Ordering::Greater),
        "ge" => cmp(|o| o != Ordering::Less),
        "len" => {
            arity(f, args, 1, at)?;
            Ok(Value::from(match &args[0] {
                Value::String(s) => s.len(),
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::Null => 0,
                v => return Err(err(at, format!("len of {}", show(v)))),
            }))
        }
        "index" => {
            let mut v = args
                .first()
                .cloned()
                .ok_or_else(|| err(at, "index: no args"))?;
            for k in &args[1..] {
                v = match (&v, k) {
                    (Value::Array(a), k) => {
                        let i = int(k, "index", at)?;
                        a.get(usize::try_from(i).unwrap_or(usize::MAX))
                            .cloned()
                            .ok_or_else(|| err(at, format!("index out of range: {i}")))?
                    }
                    (Value::Object(o), Value::String(s)) => {
                        o.get(s).cloned().unwrap_or(Value::Null)
                    }
                    (Value::String(s), k) => {
                        let i = int(k, "index", at)?;
                        Value::from(
                            *s.as_bytes()
                                .get(usize::try_from(i).unwrap_or(usize::MAX))
                                .ok_or_else(|| err(at, format!("index out of range: {i}")))?,
                        )
                    }
                    (Value::Null, _) => return Err(err(at, "index of untyped nil")),
                    (v, k) => {
                        return Err(err(at, format!("can't index {} with {}", show(v), show(k))))
                    }
                };
            }
            Ok(v)
        }
        "slice" => {
            let v = args.first().ok_or_else(|| err(at, "slice: no args"))?;
            if args.len() > 3 {
                return Err(err(at, "slice: too many indexes"));
            }
            let len = match v {
                Value::String(s) => s.len(),
                Value::Array(a) => a.len(),
                v => return Err(err(at, format!("can't slice {}", show(v)))),
            };
            let mut ix = [0usize, len];
            for (n, a) in args[1..].iter().enumerate() {
                let i = int(a, "slice", at)?;
                ix[n] = usize::try_from(i)
                    .ok()
                    .filter(|&i| i <= len)
                    .ok_or_else(|| err(at, format!("slice index out of range: {i}")))?;
            }
            if ix[0] > ix[1] {
                return Err(err(
                    at,
                    format!("invalid slice index: {} > {}", ix[0], ix[1]),
                ));
            }
            Ok(match v {
                Value::String(s) => Value::from(
                    s.get(ix[0]..ix[1])
                        .ok_or_else(|| err(at, "slice splits a UTF-8 character"))?,
                ),
                Value::Array(a) => Value::Array(a[ix[0]..ix[1]].to_vec()),
                _ => Value::Null,
            })
        }
        "json" => {
            arity(f, args, 1, at)?;
            Ok(Value::from(go_json(&args[0])))
        }
        "html" => Ok(Value::from(
            sprint(args)
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&#34;")
                .replace('\'', "&#39;"),
        )),
        "print" => Ok(Value::from(sprint(args))),
        "println" => Ok(Value::from(
            args.iter().map(show).collect::<Vec<_>>().join(" ") + "\n",
        )),
        "printf" => {
            let fmt = match args.first() {
                Some(Value::String(s)) => s,
                _ => {
                    return Err(err(
                        at,
                        "printf: the first argument must be a format string",
                    ))
                }
            };
            Ok(Value::from(printf(fmt, &args[1..])))
        }
        "currentDate" => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let (y, m, d) = so8t_model::civil((secs / 86_400) as i64);
            Ok(Value::from(format!("{y:04}-{m:02}-{d:02}")))
        }
        other => Err(err(at, format!("function {other:?} not defined"))),
    }
}

/// Go's `fmt.Sprint`: a space between operands when neither is a string.
fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !a.is_string() && !args[i - 1].is_string() {
            out.push(' ');
        }
        out.push_str(&show(a));
    }
    out
}

/// A subset of Go's `fmt.Sprintf`: `%s %v %d %q %t %f %g %x %%`, with `%!v(MISSING)` and
/// `%!(EXTRA …)` like Go.
fn printf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut next = args.iter();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // Flags/width/precision are skipped except a precision for %f.
        let mut spec = String::new();
        while let Some(&d) = it.peek() {
            if d.is_ascii_digit() || matches!(d, '.' | '-' | '+' | ' ' | '#' | '0') {
                spec.push(d);
                it.next();
            } else {
                break;
            }
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(a) = next.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        match verb {
            'q' => out.push_str(&serde_json::Value::from(show(a)).to_string()),
            'f' => {
                let prec = spec
                    .split('.')
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(6);
                out.push_str(&format!("{:.*}", prec, a.as_f64().unwrap_or(0.0)));
            }
            'x' => match a {
                Value::Number(n) if n.as_i64().is_some() => {
                    out.push_str(&format!("{:x}", n.as_i64().unwrap_or(0)))
                }
                _ => out.extend(show(a).bytes().map(|b| format!("{b:02x}"))),
            },
            _ => out.push_str(&show(a)),
        }
    }
    let extra: Vec<String> = next.map(show).collect();
    if !extra.is_empty() {
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}
