//! A small document model (headings, paragraphs, lists, tables, charts, code) rendered to
//! Markdown and to a self-contained HTML page, so both files carry the same content.

use std::fmt::Write as _;

/// A piece of inline text.
#[derive(Debug, Clone, PartialEq)]
pub enum Span {
    /// Plain text (escaped on output).
    Text(String),
    /// Bold text.
    Bold(String),
    /// Monospace text (paths, hashes).
    Code(String),
}

/// A block of the report.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A heading of level 1–3.
    Heading(u8, String),
    /// A paragraph.
    Para(Vec<Span>),
    /// A bulleted list, one line of spans per item.
    List(Vec<Vec<Span>>),
    /// A table: header cells and rows of plain-text cells; columns after the first are
    /// right-aligned (numbers).
    Table {
        /// Header cells.
        header: Vec<String>,
        /// Body rows.
        rows: Vec<Vec<String>>,
    },
    /// A chart: `charts/{file}` with its alternative text; the HTML inlines `svg`.
    Chart {
        /// File name under `charts/`.
        file: String,
        /// Alternative text / caption.
        alt: String,
        /// The SVG document.
        svg: String,
    },
    /// A preformatted block (the command line).
    Code(String),
}

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML and SVG (text and attribute values).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes Markdown punctuation (CommonMark backslash escapes) so user text such as task names
/// and paths renders literally, also inside table cells (`|`). Line breaks become spaces.
pub fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '[' | ']' | '<' | '>' | '|' | '&' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

fn md_code(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    // A code span delimited by one more backtick than the longest run inside.
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    if s.starts_with('`') || s.ends_with('`') {
        format!("{fence} {s} {fence}")
    } else {
        format!("{fence}{s}{fence}")
    }
}

fn md_spans(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| match s {
            Span::Text(t) => escape_markdown(t),
            Span::Bold(t) => format!("**{}**", escape_markdown(t)),
            Span::Code(t) => md_code(t),
        })
        .collect()
}

/// Renders the blocks as GitHub-flavoured Markdown; charts link to `charts/{file}`.
pub fn to_markdown(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                let _ = writeln!(
                    out,
                    "{} {}\n",
                    "#".repeat(*level as usize),
                    escape_markdown(text)
                );
            }
            Block::Para(spans) => {
                let _ = writeln!(out, "{}\n", md_spans(spans));
            }
            Block::List(items) => {
                for item in items {
                    let _ = writeln!(out, "- {}", md_spans(item));
                }
                out.push('\n');
            }
            Block::Table { header, rows } => {
                let cells = |r: &[String]| {
                    r.iter()
                        .map(|c| escape_markdown(c))
                        .collect::<Vec<_>>()
                        .join(" | ")
                };
                let _ = writeln!(out, "| {} |", cells(header));
                let align: Vec<&str> = (0..header.len())
                    .map(|i| if i == 0 { ":---" } else { "---:" })
                    .collect();
                let _ = writeln!(out, "| {} |", align.join(" | "));
                for r in rows {
                    let _ = writeln!(out, "| {} |", cells(r));
                }
                out.push('\n');
            }
            Block::Chart { file, alt, .. } => {
                let _ = writeln!(out, "![{}](charts/{})\n", escape_markdown(alt), file);
            }
            Block::Code(text) => {
                let mut fence = "```".to_string();
                while text.contains(&fence) {
                    fence.push('`');
                }
                let _ = writeln!(out, "{fence}\n{text}\n{fence}\n");
            }
        }
    }
    out
}

fn html_spans(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| match s {
            Span::Text(t) => escape_html(t),
            Span::Bold(t) => format!("<strong>{}</strong>", escape_html(t)),
            Span::Code(t) => format!("<code>{}</code>", escape_html(t)),
        })
        .collect()
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:1.6em;border-bottom:1px solid #eee}\
table{border-collapse:collapse;margin:1em 0;font-size:.92em}\
th,td{border:1px solid #ccc;padding:.35em .7em}th{background:#f3f3f3}\
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\
tr:nth-child(even) td{background:#fafafa}\
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}\
code{background:#f3f3f3;padding:.1em .3em;border-radius:3px;word-break:break-all}\
pre{background:#f6f8fa;padding:1em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}\
figure{margin:1.2em 0}figure svg{max-width:100%;height:auto}\
figcaption{color:#555;font-size:.9em}";

/// Strips the `xmlns` attribute (not needed inside HTML) and any XML prolog from an SVG
/// document so it can be inlined.
fn inline_svg(svg: &str) -> String {
    let start = svg.find("<svg").unwrap_or(0);
    svg[start..].replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

/// Renders the blocks as one self-contained HTML page: inline CSS, SVGs inlined, no scripts and
/// no external resources.
pub fn to_html(title: &str, blocks: &[Block]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        escape_html(title)
    );
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                let _ = writeln!(out, "<h{level}>{}</h{level}>", escape_html(text));
            }
            Block::Para(spans) => {
                let _ = writeln!(out, "<p>{}</p>", html_spans(spans));
            }
            Block::List(items) => {
                out.push_str("<ul>\n");
                for item in items {
                    let _ = writeln!(out, "<li>{}</li>", html_spans(item));
                }
                out.push_str("</ul>\n");
            }
            Block::Table { header, rows } => {
                let class = |i: usize| if i == 0 { "" } else { " class=\"num\"" };
                out.push_str("<table>\n<thead><tr>");
                for (i, h) in header.iter().enumerate() {
                    let _ = write!(out, "<th{}>{}</th>", class(i), escape_html(h));
                }
                out.push_str("</tr></thead>\n<tbody>\n");
                for r in rows {
                    out.push_str("<tr>");
                    for (i, c) in r.iter().enumerate() {
                        let _ = write!(out, "<td{}>{}</td>", class(i), escape_html(c));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody>\n</table>\n");
            }
            Block::Chart { alt, svg, .. } => {
                let _ = writeln!(
                    out,
                    "<figure role=\"img\" aria-label=\"{a}\">\n{}\n<figcaption>{a}</figcaption>\n</figure>",
                    inline_svg(svg),
                    a = escape_html(alt)
                );
            }
            Block::Code(text) => {
                let _ = writeln!(out, "<pre><code>{}</code></pre>", escape_html(text));
            }
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}
