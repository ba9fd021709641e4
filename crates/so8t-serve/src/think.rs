//! The hidden-thinking filter: what a served model may return to a client.
//!
//! A /think model writes its reasoning before its answer, in one of two formats (spec §4):
//!
//! - `tags`: `<think-task>…</think-task>…<think-creative>…</think-creative><final>…</final>`;
//! - `steps`: `# 思考ステップ\n{thinking}\n\n# 最終回答\n{answer}`.
//!
//! Unless an operator enables [`ThinkMode::Show`], only the answer goes out (spec §5). The rules,
//! decided conservatively (when in doubt, hide):
//!
//! - Text inside a think block is thinking. A think block opens with any tag whose name starts
//!   with `think` (`<think>`, `<think-task>`, `<thinking>`, ASCII case-insensitive) and closes
//!   with any `</think…>`; blocks nest (every open needs a close), a stray close is dropped, and
//!   an unterminated block (or tag) hides everything to the end. A tag interrupted by `<` before
//!   its `>` still counts as an open tag; an interrupted close tag does not close.
//! - Once `<final>` appears (outside a think block), only the text inside `<final>…</final>` goes
//!   out; everything after `</final>` is hidden (also a stray `</final>` hides the rest). Without
//!   a `</final>`, everything after `<final>` is the answer. Think blocks inside it stay hidden.
//! - Text outside tags before `<final>` is hidden as soon as the output has used a `tags`-format
//!   think tag (`<think-…>` or `<think_…>`, or one cut short by `<`) or starts with `<final>`:
//!   in the `tags` format such text is thinking, and an output that never reaches `<final>`
//!   shows nothing. After a `<think>…</think>` block (or `<thinking>…`: the common
//!   reasoning-model style) the text that follows is the answer.
//! - `steps` is recognized when the output, after leading whitespace, starts with `# 思考ステップ`:
//!   everything up to and including the line that starts with `# 最終回答` (at the start of a
//!   line, outside a think block) is hidden and the rest is the answer; without that line nothing
//!   goes out.
//! - Any other output is `Plain` and passes through, except for think blocks (hidden) and a
//!   later `<final>` (from then on, only its content).
//! - The emitted text never contains `<think` or `</think` (ASCII case-insensitive), even where
//!   removing a hidden part joins a visible `<` with a visible `think`: such a `<` goes out as
//!   `＜` (U+FF1C).
//!
//! [`ThinkFilter`] applies these rules to a stream, where a tag may be split across chunks at any
//! position: [`ThinkFilter::push`] holds back only a suffix that could still start a tag or a
//! heading (at most 15 bytes), so it costs O(chunk). Pushing the whole text at once gives the
//! same result as any chunking, which is [`split_thinking`].

use std::fmt;
use std::str::FromStr;

/// Whether a client sees the model's thinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThinkMode {
    /// Only the answer goes out (the default).
    #[default]
    Hide,
    /// Operator flag: everything passes through unchanged.
    Show,
}

/// The shape of a model output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkFormat {
    /// It used think tags or `<final>`.
    Tags,
    /// It started with `# 思考ステップ`.
    Steps,
    /// Neither.
    Plain,
}

/// The four classes of a request (spec §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FourClass {
    /// Safe: answer (0).
    Allow,
    /// Needs an expert or a human (1).
    Escalation,
    /// Decline with a reason and a safe alternative (2).
    Deny,
    /// Clearly dangerous: decline briefly (3).
    Refuse,
}

/// A class name or id that is none of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown class {0:?}: expected ALLOW, ESCALATION, DENY, REFUSE or 0-3")]
pub struct UnknownClass(pub String);

impl FourClass {
    /// The four, by id.
    pub const ALL: [FourClass; 4] = [Self::Allow, Self::Escalation, Self::Deny, Self::Refuse];

    /// The id: ALLOW 0, ESCALATION 1, DENY 2, REFUSE 3.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The upper-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Escalation => "ESCALATION",
            Self::Deny => "DENY",
            Self::Refuse => "REFUSE",
        }
    }

    /// The class with this id.
    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.get(id as usize).copied()
    }

    /// Parses a name (any case) or an id (`"0"`..`"3"`), ignoring surrounding whitespace.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Ok(id) = s.parse::<u8>() {
            return Self::from_id(id);
        }
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for FourClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FourClass {
    type Err = UnknownClass;

    fn from_str(s: &str) -> Result<Self, UnknownClass> {
        Self::parse(s).ok_or_else(|| UnknownClass(s.to_string()))
    }
}

/// Labels of a class line, compared ignoring ASCII case.
const CLASS_LABELS: [&str; 5] = ["分類", "class", "classification", "label", "クラス"];

/// Parses the class line (`分類: DENY`, `分類：DENY`, `Class: DENY`, `classification: deny`,
/// `**分類**: 2`, …) of a final answer: the first line whose label is a class label and whose
/// value starts with a class name or id.
pub fn parse_class(final_text: &str) -> Option<FourClass> {
    let decor: &[char] = &['*', '#', '-', '>', '_', '`'];
    final_text.lines().find_map(|line| {
        let line = line.trim().trim_start_matches(decor).trim_start();
        let sep = line.find([':', '：'])?;
        let label = line[..sep].trim().trim_matches(decor).trim();
        if !CLASS_LABELS.iter().any(|l| l.eq_ignore_ascii_case(label)) {
            return None;
        }
        let sep_len = line[sep..].chars().next().map_or(1, char::len_utf8);
        let value = line[sep + sep_len..].trim_start().trim_start_matches(decor);
        let end = value
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(value.len());
        FourClass::parse(&value[..end])
    })
}

/// The end of a model output: what is left to send and how the output splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinkOutcome {
    /// The text still to send (held back until the end). In [`ThinkMode::Show`] it is empty
    /// (every chunk went out as it came). From [`split_thinking`]: the whole visible text.
    pub tail: String,
    /// Everything that was hidden, verbatim (think tags included), except the `<final>` and
    /// `</final>` tags and the two `steps` headings, trimmed of surrounding whitespace.
    pub thinking: String,
    /// Everything the filter lets out in [`ThinkMode::Hide`]: the concatenation of all that
    /// [`ThinkFilter::push`] returned and [`ThinkOutcome::tail`].
    pub final_text: String,
    /// The class parsed from `final_text` ([`parse_class`]).
    pub class: Option<FourClass>,
    /// The output's shape.
    pub format: ThinkFormat,
}

/// Filters a streamed model output; see the [module docs](self) for the rules.
#[derive(Debug, Clone)]
pub struct ThinkFilter {
    mode: ThinkMode,
    split: Splitter,
}

impl ThinkFilter {
    /// A filter for a new output.
    pub fn new(mode: ThinkMode) -> Self {
        Self {
            mode,
            split: Splitter::new(),
        }
    }

    /// A filter for an output whose prompt already opened a bare `<think>` block (chat templates
    /// that end the generation prompt with `<think>`): everything is thinking up to `</think>`.
    pub fn inside_think(mode: ThinkMode) -> Self {
        let mut f = Self::new(mode);
        f.split.region = Region::Outside;
        f.split.depth = 1;
        f.split.format = ThinkFormat::Tags;
        f
    }

    /// Feeds the next piece of model text; returns the text that is now safe to emit (may be
    /// empty). Holds back any suffix that could still be the start of a tag or of
    /// `# 思考ステップ`/`# 最終回答`. In [`ThinkMode::Show`], returns `chunk`.
    pub fn push(&mut self, chunk: &str) -> String {
        let mut out = String::new();
        self.split.feed(chunk, &mut out);
        match self.mode {
            ThinkMode::Hide => out,
            ThinkMode::Show => chunk.to_string(),
        }
    }

    /// End of output: returns the remaining safe text and the split of the whole output.
    pub fn finish(&mut self) -> ThinkOutcome {
        let mut tail = String::new();
        self.split.end(&mut tail);
        if self.mode == ThinkMode::Show {
            tail.clear();
        }
        let final_text = self.split.final_text.clone();
        ThinkOutcome {
            tail,
            thinking: self.split.thinking.trim().to_string(),
            class: parse_class(&final_text),
            final_text,
            format: self.split.format,
        }
    }
}

/// Whole-text version of [`ThinkFilter`] in [`ThinkMode::Hide`]: the same outcome as any
/// chunking of `text`, with `tail == final_text`.
pub fn split_thinking(text: &str) -> ThinkOutcome {
    let mut f = ThinkFilter::new(ThinkMode::Hide);
    let head = f.push(text);
    let mut o = f.finish();
    o.tail.insert_str(0, &head);
    o
}

const STEPS_HEADER: &[u8] = "# 思考ステップ".as_bytes();
const ANSWER_HEADER: &[u8] = "\n# 最終回答".as_bytes();
const THINK_OPEN: &[u8] = b"<think";
const THINK_CLOSE: &[u8] = b"</think";
const FINAL_OPEN: &[u8] = b"<final>";
const FINAL_CLOSE: &[u8] = b"</final>";

/// Where in the output the filter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    /// Nothing but whitespace yet: the format is undecided.
    Start,
    /// Before any `<final>`.
    Outside,
    /// In `<final>…` or after the `steps` answer heading.
    Final,
    /// After `# 思考ステップ`, before `# 最終回答`.
    StepsThinking,
    /// On the rest of the `# 最終回答` line.
    StepsHeading,
    /// After `</final>`: all hidden.
    Done,
}

/// Inside a think tag's own text (`<think…` up to `>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagKind {
    /// An opening tag; `first` is the byte after `<think` once seen (tells `<think-…>`).
    Open { first: Option<u8> },
    /// A closing tag.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    Full,
    Partial,
    No,
}

/// How `rest` relates to `pat` (ASCII case-insensitive): starts with it, is a proper prefix of
/// it, or neither.
fn prefix(rest: &[u8], pat: &[u8]) -> Prefix {
    let n = rest.len().min(pat.len());
    if !rest[..n].eq_ignore_ascii_case(&pat[..n]) {
        Prefix::No
    } else if n == pat.len() {
        Prefix::Full
    } else {
        Prefix::Partial
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    ThinkOpen,
    ThinkClose,
    FinalOpen,
    FinalClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    Tag(Tag),
    /// Could still become a tag; `think`: could become a think tag.
    Partial {
        think: bool,
    },
    Text,
}

/// Classifies `rest` (which starts with `<`); final tags only when `with_final`.
fn scan_tag(rest: &[u8], with_final: bool) -> Scan {
    let think = [(THINK_OPEN, Tag::ThinkOpen), (THINK_CLOSE, Tag::ThinkClose)];
    let fin = [(FINAL_OPEN, Tag::FinalOpen), (FINAL_CLOSE, Tag::FinalClose)];
    let mut partial = None;
    for (i, (pat, tag)) in think.iter().chain(fin.iter()).enumerate() {
        if i >= 2 && !with_final {
            break;
        }
        match prefix(rest, pat) {
            Prefix::Full => return Scan::Tag(*tag),
            Prefix::Partial => partial = Some(partial.unwrap_or(false) || i < 2),
            Prefix::No => {}
        }
    }
    match partial {
        Some(think) => Scan::Partial { think },
        None => Scan::Text,
    }
}

/// The last stage before the client: a `<` that would start `<think` or `</think` in the visible
/// text (possible only where a hidden part was removed between them) goes out as `＜`.
#[derive(Debug, Clone, Default)]
struct Guard {
    held: String,
}

impl Guard {
    fn emit(&mut self, s: &str, out: &mut String) {
        if self.held.is_empty() && !s.contains('<') {
            out.push_str(s);
            return;
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.push_str(s);
        let b = buf.as_bytes();
        let mut i = 0;
        while let Some(p) = b[i..].iter().position(|&c| c == b'<').map(|p| p + i) {
            out.push_str(&buf[i..p]);
            let after = &b[p + 1..];
            match (prefix(after, b"think"), prefix(after, b"/think")) {
                (Prefix::Full, _) | (_, Prefix::Full) => out.push('＜'),
                (Prefix::Partial, _) | (_, Prefix::Partial) => {
                    self.held = buf[p..].to_string();
                    return;
                }
                _ => out.push('<'),
            }
            i = p + 1;
        }
        out.push_str(&buf[i..]);
    }

    fn flush(&mut self, out: &mut String) {
        out.push_str(&std::mem::take(&mut self.held));
    }
}

/// The state machine behind [`ThinkFilter`] (always in hide mode).
#[derive(Debug, Clone)]
struct Splitter {
    /// Text not yet classified: at most a possible tag or heading prefix between calls.
    pending: String,
    /// Leading whitespace while the format is undecided.
    lead_ws: String,
    region: Region,
    /// Open think blocks.
    depth: u32,
    /// Inside a think tag's text.
    tag: Option<TagKind>,
    /// Whether text outside tags before `<final>` goes out.
    outside_visible: bool,
    format: ThinkFormat,
    thinking: String,
    final_text: String,
    guard: Guard,
}

impl Splitter {
    fn new() -> Self {
        Self {
            pending: String::new(),
            lead_ws: String::new(),
            region: Region::Start,
            depth: 0,
            tag: None,
            outside_visible: true,
            format: ThinkFormat::Plain,
            thinking: String::new(),
            final_text: String::new(),
            guard: Guard::default(),
        }
    }

    fn feed(&mut self, chunk: &str, out: &mut String) {
        self.pending.push_str(chunk);
        self.run(false, out);
        self.final_text.push_str(out);
    }

    fn end(&mut self, out: &mut String) {
        self.run(true, out);
        if self.region == Region::Start {
            // Only whitespace came: plain text.
            self.region = Region::Outside;
            let ws = std::mem::take(&mut self.lead_ws);
            self.text(&ws, out);
        }
        self.guard.flush(out);
        self.final_text.push_str(out);
    }

    fn run(&mut self, at_end: bool, out: &mut String) {
        let mut pending = std::mem::take(&mut self.pending);
        let mut i = 0;
        while i < pending.len() {
            match self.step(&pending[i..], at_end, out) {
                Some(n) => i += n,
                None => break,
            }
        }
        pending.drain(..i);
        self.pending = pending;
    }

    fn visible(&self) -> bool {
        self.depth == 0
            && self.tag.is_none()
            && match self.region {
                Region::Final => true,
                Region::Outside => self.outside_visible,
                _ => false,
            }
    }

    /// Ordinary text at the current position: out if visible, else thinking.
    fn text(&mut self, s: &str, out: &mut String) {
        if self.visible() {
            self.guard.emit(s, out);
        } else {
            self.thinking.push_str(s);
        }
    }

    fn saw_tag(&mut self) {
        if self.format == ThinkFormat::Plain {
            self.format = ThinkFormat::Tags;
        }
    }

    /// Consumes a prefix of `rest` (non-empty) and returns its length (0 only after a change of
    /// state), or `None` to hold `rest` back until more text comes (never when `at_end`).
    fn step(&mut self, rest: &str, at_end: bool, out: &mut String) -> Option<usize> {
        if let Some(kind) = self.tag {
            return Some(self.step_tag(kind, rest));
        }
        match self.region {
            Region::Done => {
                self.thinking.push_str(rest);
                Some(rest.len())
            }
            Region::Start => self.step_start(rest, at_end, out),
            _ => self.step_body(rest, at_end, out),
        }
    }

    /// Inside a think tag's text: hidden up to its `>`; a `<` ends it early.
    fn step_tag(&mut self, mut kind: TagKind, rest: &str) -> usize {
        let b = rest.as_bytes();
        if let TagKind::Open { first: None } = kind {
            kind = TagKind::Open { first: Some(b[0]) };
            self.tag = Some(kind);
        }
        let Some(p) = b.iter().position(|&c| c == b'>' || c == b'<') else {
            self.thinking.push_str(rest);
            return rest.len();
        };
        let complete = b[p] == b'>';
        let n = if complete { p + 1 } else { p };
        self.thinking.push_str(&rest[..n]);
        self.tag = None;
        match kind {
            TagKind::Open { first } => {
                self.depth += 1;
                // `<think-task>` (the `tags` format) or a tag cut short by `<`.
                let named = !matches!(first, Some(c) if c != b'-' && c != b'_' && c != b'<');
                if named {
                    self.outside_visible = false;
                }
            }
            TagKind::Close if complete => self.depth = self.depth.saturating_sub(1),
            TagKind::Close => {}
        }
        n
    }

    /// Leading whitespace, then the format: a tag, the `steps` heading, or plain text.
    fn step_start(&mut self, rest: &str, at_end: bool, out: &mut String) -> Option<usize> {
        let t = rest.trim_start();
        let ws = rest.len() - t.len();
        if ws > 0 {
            self.lead_ws.push_str(&rest[..ws]);
            return Some(ws);
        }
        let b = rest.as_bytes();
        if b[0] == b'<' {
            match scan_tag(b, true) {
                Scan::Partial { .. } if !at_end => return None,
                Scan::Tag(tag) => {
                    let ws = std::mem::take(&mut self.lead_ws);
                    self.thinking.push_str(&ws);
                    self.region = Region::Outside;
                    if tag == Tag::FinalOpen {
                        self.outside_visible = false;
                    }
                    return Some(0);
                }
                _ => {}
            }
        } else if b[0] == b'#' {
            match prefix(b, STEPS_HEADER) {
                Prefix::Full => {
                    self.lead_ws.clear();
                    self.format = ThinkFormat::Steps;
                    self.region = Region::StepsThinking;
                    return Some(STEPS_HEADER.len());
                }
                Prefix::Partial if !at_end => return None,
                _ => {}
            }
        }
        self.region = Region::Outside;
        let ws = std::mem::take(&mut self.lead_ws);
        self.text(&ws, out);
        Some(0)
    }

    /// Text and tags after the start.
    fn step_body(&mut self, rest: &str, at_end: bool, out: &mut String) -> Option<usize> {
        let b = rest.as_bytes();
        let lines =
            self.depth == 0 && matches!(self.region, Region::StepsThinking | Region::StepsHeading);
        let Some(p) = b.iter().position(|&c| c == b'<' || (lines && c == b'\n')) else {
            self.text(rest, out);
            return Some(rest.len());
        };
        if p > 0 {
            self.text(&rest[..p], out);
            return Some(p);
        }
        if b[0] == b'\n' {
            if self.region == Region::StepsHeading {
                self.thinking.push('\n');
                self.region = Region::Final;
                return Some(1);
            }
            return match prefix(b, ANSWER_HEADER) {
                Prefix::Full => {
                    self.region = Region::StepsHeading;
                    Some(ANSWER_HEADER.len())
                }
                Prefix::Partial if !at_end => None,
                _ => {
                    self.thinking.push('\n');
                    Some(1)
                }
            };
        }
        let with_final = self.depth == 0 && matches!(self.region, Region::Outside | Region::Final);
        match scan_tag(b, with_final) {
            Scan::Tag(Tag::ThinkOpen) => {
                self.saw_tag();
                self.thinking.push_str(&rest[..THINK_OPEN.len()]);
                self.tag = Some(TagKind::Open { first: None });
                Some(THINK_OPEN.len())
            }
            Scan::Tag(Tag::ThinkClose) => {
                self.saw_tag();
                self.thinking.push_str(&rest[..THINK_CLOSE.len()]);
                self.tag = Some(TagKind::Close);
                Some(THINK_CLOSE.len())
            }
            Scan::Tag(Tag::FinalOpen) => {
                self.saw_tag();
                self.region = Region::Final;
                Some(FINAL_OPEN.len())
            }
            Scan::Tag(Tag::FinalClose) => {
                self.saw_tag();
                self.region = Region::Done;
                Some(FINAL_CLOSE.len())
            }
            Scan::Partial { .. } if !at_end => None,
            Scan::Partial { think: true } => {
                // A think tag cut off by the end: hide it.
                self.thinking.push_str(rest);
                Some(rest.len())
            }
            Scan::Partial { think: false } | Scan::Text => {
                self.text("<", out);
                Some(1)
            }
        }
    }
}
