//! The hidden-thinking filter: each rule, then properties over random outputs cut into chunks at
//! every position.

use proptest::prelude::*;
use so8t_serve::think::{
    parse_class, split_thinking, FourClass, ThinkFilter, ThinkFormat, ThinkMode, ThinkOutcome,
};

/// Streams `chunks` through a hiding filter: every push's output, and the outcome.
fn stream(chunks: &[&str]) -> (Vec<String>, ThinkOutcome) {
    let mut f = ThinkFilter::new(ThinkMode::Hide);
    let outs = chunks.iter().map(|c| f.push(c)).collect();
    (outs, f.finish())
}

/// What a client sees: all pushes and the tail.
fn visible(chunks: &[&str]) -> String {
    let (outs, o) = stream(chunks);
    outs.concat() + &o.tail
}

/// The visible text, whole and fed one char at a time (which must agree).
fn shown(text: &str) -> String {
    let whole = split_thinking(text);
    assert_eq!(whole.tail, whole.final_text);
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
    assert_eq!(visible(&refs), whole.final_text, "char by char: {text:?}");
    whole.final_text
}

const QUAD: &str = "<think-task>T-SECRET</think-task><think-safety>S-SECRET</think-safety>\
<think-logic>L-SECRET</think-logic><think-ethics>E-SECRET</think-ethics>\
<think-practical>P-SECRET</think-practical><think-creative>C-SECRET</think-creative>\
<final>分類: DENY\nI can't help with that; try X instead.</final>";

#[test]
fn tags_format_shows_only_final() {
    let o = split_thinking(QUAD);
    assert_eq!(
        o.final_text,
        "分類: DENY\nI can't help with that; try X instead."
    );
    assert_eq!(o.class, Some(FourClass::Deny));
    assert_eq!(o.format, ThinkFormat::Tags);
    for s in ["T-", "S-", "L-", "E-", "P-", "C-"] {
        assert!(o.thinking.contains(&format!("{s}SECRET")), "{}", o.thinking);
    }
    assert!(o.thinking.starts_with("<think-task>"));
    assert!(!o.thinking.contains("<final>"));
    assert_eq!(shown(QUAD), o.final_text);
}

#[test]
fn bare_think_block_is_hidden_and_the_rest_shown() {
    assert_eq!(shown("<think>SECRET</think>\n\nHello"), "\n\nHello");
    assert_eq!(shown("Hi <think>SECRET</think>there"), "Hi there");
    assert_eq!(shown("<thinking>SECRET</thinking>ok"), "ok");
    assert_eq!(
        split_thinking("<think>x</think>a").format,
        ThinkFormat::Tags
    );
}

#[test]
fn unterminated_think_hides_to_the_end() {
    assert_eq!(shown("<think>SECRET and more"), "");
    assert_eq!(shown("ok <think>SECRET"), "ok ");
    assert_eq!(shown("ok <think-task SECRET"), "ok ");
    assert_eq!(shown("<final>a<think>SECRET"), "a");
    // A think tag cut off by the end is hidden too.
    assert_eq!(shown("ok <thi"), "ok ");
    assert_eq!(shown("ok </"), "ok ");
    // Not a think tag: shown.
    assert_eq!(shown("a <b> c <fi"), "a <b> c <fi");
}

#[test]
fn final_rules() {
    assert_eq!(shown("<final>A</final>AFTER SECRET"), "A");
    assert_eq!(shown("<final>A</final>x<final>B</final>"), "A");
    assert_eq!(
        shown("<think-task>t</think-task><final>never closed"),
        "never closed"
    );
    assert_eq!(shown("<FINAL>A</Final>b"), "A");
    // Think blocks inside the final stay hidden; `<final>` inside it is dropped.
    assert_eq!(
        shown("<final>a<think>SECRET</think>b<final>c</final>"),
        "abc"
    );
    // A `<final>` inside a think block is thinking.
    assert_eq!(
        shown("<think><final>SECRET</final></think><final>A</final>"),
        "A"
    );
    // A stray `</final>` hides the rest.
    assert_eq!(shown("plain</final>SECRET"), "plain");
}

#[test]
fn text_outside_tags_before_final_is_hidden_in_tags_format() {
    let o = split_thinking(
        "<think-task>t</think-task>JUNK<think-logic>l</think-logic>\n<final>A</final>",
    );
    assert_eq!(o.final_text, "A");
    assert!(o.thinking.contains("JUNK"));
    // Named think tags but no final: nothing goes out.
    assert_eq!(shown("<think-task>t</think-task>answer?"), "");
    // Plain text then a named think tag: what follows outside is hidden too.
    assert_eq!(shown("hi <think-task>t</think-task>SECRET"), "hi ");
    // Starting with `<final>` (after whitespace).
    assert_eq!(shown("  \n<final>A</final>"), "A");
}

#[test]
fn steps_format() {
    let text = "# 思考ステップ\nSECRET 1\n# not a heading\n\n# 最終回答\n分類: ALLOW\nSure.";
    let o = split_thinking(text);
    assert_eq!(o.format, ThinkFormat::Steps);
    assert_eq!(o.final_text, "分類: ALLOW\nSure.");
    assert_eq!(o.class, Some(FourClass::Allow));
    assert_eq!(o.thinking, "SECRET 1\n# not a heading");
    assert_eq!(shown(text), o.final_text);
    assert_eq!(shown("\n  # 思考ステップ\nSECRET\n\n# 最終回答\nA"), "A");
    // No answer heading: nothing.
    assert_eq!(shown("# 思考ステップ\nSECRET\n\n# 最終回"), "");
    // The heading counts only at the start of a line.
    assert_eq!(shown("# 思考ステップ\nSECRET # 最終回答\nSECRET"), "");
    // The rest of the heading line is hidden; think blocks in the answer too.
    assert_eq!(
        shown("# 思考ステップ\nS\n# 最終回答 (x)\nA<think>SECRET</think>B"),
        "AB"
    );
    // A think block open at the heading swallows it.
    assert_eq!(shown("# 思考ステップ\n<think>S\n# 最終回答\nSECRET"), "");
    assert_eq!(
        shown("# 思考ステップ\nS\n# 最終回答 <think>\nSECRET</think>\nA"),
        "A"
    );
    // `#` at the start that is not the steps heading: plain.
    assert_eq!(shown("# Title\nbody"), "# Title\nbody");
    assert_eq!(split_thinking("# 思考").format, ThinkFormat::Plain);
}

#[test]
fn plain_passes_through() {
    let text = "Hello, world! a < b, c > d, #tag, 日本語 🦀\n";
    assert_eq!(shown(text), text);
    let o = split_thinking(text);
    assert_eq!(o.format, ThinkFormat::Plain);
    assert_eq!(o.thinking, "");
    assert_eq!(shown("  \n "), "  \n ");
    assert_eq!(shown(""), "");
}

#[test]
fn nesting_case_and_malformed_tags() {
    assert_eq!(shown("<think>a<think>b</think>SECRET</think>ok"), "ok");
    assert_eq!(shown("<THINK>SECRET</THINK>ok"), "ok");
    assert_eq!(
        shown("<Think-Task>SECRET</think-TASK><final>A</final>"),
        "A"
    );
    // A stray close tag is dropped.
    assert_eq!(shown("a</think>b"), "ab");
    // An open tag interrupted by `<` still opens a block.
    assert_eq!(shown("x<think<b>SECRET</think>y"), "x");
    // A close tag interrupted by `<` does not close.
    assert_eq!(shown("<think>S</think<think-task>SECRET</think-task>"), "");
    assert_eq!(shown("<think>S</think<b>SECRET"), "");
    assert_eq!(
        shown("</think<think-task>SECRET</think-task><final>A</final>"),
        "A"
    );
    // Attributes.
    assert_eq!(shown("<think reason=\"x\">SECRET</think >ok"), "ok");
}

#[test]
fn visible_text_never_forms_a_think_tag() {
    // Removing the hidden block would join `<` and `think`.
    let out = shown("a<<think>SECRET</think>think b");
    assert!(!out.contains("<think"), "{out}");
    assert_eq!(out, "a＜think b");
    let out = shown("x<<final>/THINK</final>");
    assert!(!out.to_ascii_lowercase().contains("</think"), "{out}");
    assert_eq!(out, "x＜/THINK");
    let out = shown("<<final>think");
    assert!(!out.to_ascii_lowercase().contains("</think"), "{out}");
    assert_eq!(out, "＜think");
    assert_eq!(shown("a<<think>S</think>b"), "a<b");
}

#[test]
fn split_tags_are_held_back() {
    let mut f = ThinkFilter::new(ThinkMode::Hide);
    assert_eq!(f.push("Hello <"), "Hello ");
    assert_eq!(f.push("b> <th"), "<b> ");
    assert_eq!(f.push("ink>SEC"), "");
    assert_eq!(f.push("RET</th"), "");
    assert_eq!(f.push("ink>ok"), "ok");
    let o = f.finish();
    assert_eq!(o.tail, "");
    assert_eq!(o.final_text, "Hello <b> ok");
    assert_eq!(o.thinking, "<think>SECRET</think>");

    let mut f = ThinkFilter::new(ThinkMode::Hide);
    assert_eq!(f.push("# 思考ス"), "");
    assert_eq!(f.push("テップ\nS\n# 最終"), "");
    assert_eq!(f.push("回答\nA"), "A");
    assert_eq!(f.finish().final_text, "A");
}

#[test]
fn inside_think_starts_hidden() {
    let mut f = ThinkFilter::inside_think(ThinkMode::Hide);
    assert_eq!(f.push("SECRET</th"), "");
    assert_eq!(f.push("ink>\nanswer"), "\nanswer");
    assert_eq!(f.finish().thinking, "SECRET</think>");
}

#[test]
fn show_mode_passes_everything() {
    let mut f = ThinkFilter::new(ThinkMode::Show);
    let mut out = String::new();
    for c in [
        "<think-task>SEC",
        "RET</think-task><fi",
        "nal>分類: 2\nA</final>x",
    ] {
        out += &f.push(c);
    }
    let o = f.finish();
    out += &o.tail;
    assert_eq!(
        out,
        "<think-task>SECRET</think-task><final>分類: 2\nA</final>x"
    );
    assert_eq!(o.tail, "");
    assert_eq!(o.final_text, "分類: 2\nA");
    assert_eq!(o.class, Some(FourClass::Deny));
    assert_eq!(o.thinking, "<think-task>SECRET</think-task>x");
}

#[test]
fn push_is_linear() {
    // 200k tokens: quadratic work would take minutes.
    let mut f = ThinkFilter::new(ThinkMode::Hide);
    let t = std::time::Instant::now();
    let mut n = 0;
    for i in 0..200_000 {
        let tok = match i % 4 {
            0 => "word ",
            1 => "<",
            2 => "b>",
            _ => "\n",
        };
        n += f.push(tok).len();
    }
    let o = f.finish();
    assert_eq!(n + o.tail.len(), o.final_text.len());
    assert_eq!(o.final_text.len(), 50_000 * 9);
    assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
}

#[test]
fn four_class() {
    for (i, c) in FourClass::ALL.into_iter().enumerate() {
        assert_eq!(c.id() as usize, i);
        assert_eq!(FourClass::from_id(i as u8), Some(c));
        assert_eq!(FourClass::parse(c.name()), Some(c));
        assert_eq!(FourClass::parse(&c.name().to_lowercase()), Some(c));
        assert_eq!(FourClass::parse(&i.to_string()), Some(c));
        assert_eq!(c.to_string().parse::<FourClass>().unwrap(), c);
    }
    assert_eq!(FourClass::parse("4"), None);
    assert_eq!(FourClass::parse("maybe"), None);
    assert!("x".parse::<FourClass>().is_err());
}

#[test]
fn class_lines() {
    let cases = [
        ("分類: DENY\nNo.", Some(FourClass::Deny)),
        ("分類：DENY", Some(FourClass::Deny)),
        ("Class: escalation", Some(FourClass::Escalation)),
        ("classification: deny.", Some(FourClass::Deny)),
        ("**分類**: REFUSE", Some(FourClass::Refuse)),
        ("分類: **ALLOW**", Some(FourClass::Allow)),
        ("\n\n  分類: 3 (REFUSE)", Some(FourClass::Refuse)),
        ("Hello\n分類: 0\nbye", Some(FourClass::Allow)),
        ("分類: MAYBE", None),
        ("The class is DENY", None),
        ("subclass: DENY", None),
        ("", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_class(text), want, "{text:?}");
    }
}

// ---------------------------------------------------------------- properties

/// Text that can never form a tag, a heading or a marker (no `k`, `l`, `答`, `M`, `[`).
fn soft_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-j<>#/ \n=:思考最終回ステップ🦀🎉]{1,6}",
            Just("<thin".to_string()),
            Just("</thin".to_string()),
            Just("<fina".to_string()),
            Just("</fina".to_string()),
            Just("<".to_string()),
            Just("</".to_string()),
            Just("\n# 最終回".to_string()),
            Just("# 思考ステッ".to_string()),
        ],
        0..5,
    )
    .prop_map(|v| v.concat())
}

/// Anything without a marker, tags included.
fn junk() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => soft_text(),
            1 => prop::sample::select(vec![
                "<think>", "</think>", "<final>", "</final>", "think", "/think", "k>", ">",
                "\n# 最終回答\n", "<THINK-x>", "</think-task>", "# 思考ステップ\n", "\n",
            ])
            .prop_map(String::from),
        ],
        0..4,
    )
    .prop_map(|v| v.concat())
}

#[derive(Debug, Clone)]
enum Piece {
    Junk(String),
    Think {
        name: &'static str,
        gt: bool,
        before: String,
        after: String,
        closed: bool,
    },
    Final {
        class: &'static str,
        body: String,
        closed: bool,
    },
}

fn piece() -> impl Strategy<Value = Piece> {
    let names = vec![
        "think",
        "think-task",
        "think-safety",
        "think-logic",
        "think-ethics",
        "think-practical",
        "think-creative",
        "thinking",
        "Think-Task",
    ];
    prop_oneof![
        junk().prop_map(Piece::Junk),
        (
            prop::sample::select(names),
            prop::bool::weighted(0.9),
            soft_text(),
            soft_text(),
            prop::bool::weighted(0.85)
        )
            .prop_map(|(name, gt, before, after, closed)| Piece::Think {
                name,
                gt,
                before,
                after,
                closed,
            }),
        (
            prop::sample::select(vec!["", "分類: DENY\n", "Class: allow\n"]),
            soft_text(),
            prop::bool::weighted(0.8)
        )
            .prop_map(|(class, body, closed)| Piece::Final {
                class,
                body,
                closed
            }),
    ]
}

/// A random output and its markers.
#[derive(Debug, Clone)]
struct Output {
    text: String,
    markers: Vec<String>,
}

fn render(pieces: &[Piece], markers: &mut Vec<String>, text: &mut String) {
    for p in pieces {
        match p {
            Piece::Junk(j) => text.push_str(j),
            Piece::Think {
                name,
                gt,
                before,
                after,
                closed,
            } => {
                let m = format!("[[M{}]]", markers.len());
                text.push_str(&format!(
                    "<{name}{}{before}{m}{after}",
                    if *gt { ">" } else { "" }
                ));
                if *closed {
                    text.push_str(&format!("</{name}>"));
                }
                markers.push(m);
            }
            Piece::Final {
                class,
                body,
                closed,
            } => {
                text.push_str(&format!("<final>{class}{body}"));
                if *closed {
                    text.push_str("</final>");
                }
            }
        }
    }
}

fn output() -> impl Strategy<Value = Output> {
    (
        0..3u8,
        "[ \n\t]{0,2}",
        soft_text(),
        prop::bool::weighted(0.8),
        prop::collection::vec(piece(), 0..6),
    )
        .prop_map(|(kind, ws, steps_thinking, answer, pieces)| {
            let mut markers = Vec::new();
            let mut text = ws;
            match kind {
                0 => {}
                1 => {
                    let m = "[[MS]]".to_string();
                    text.push_str(&format!("# 思考ステップ\n{steps_thinking}{m}"));
                    markers.push(m);
                    if answer {
                        text.push_str("\n\n# 最終回答\n");
                    }
                }
                _ => text.push_str("plain "),
            }
            render(&pieces, &mut markers, &mut text);
            Output { text, markers }
        })
}

/// Cuts `text` at the given byte positions (moved down to char boundaries).
fn cut(text: &str, mut at: Vec<usize>) -> Vec<&str> {
    for a in &mut at {
        *a %= text.len() + 1;
        while !text.is_char_boundary(*a) {
            *a -= 1;
        }
    }
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for a in at {
        out.push(&text[prev..a]);
        prev = a;
    }
    out.push(&text[prev..]);
    out
}

fn has_think_tag(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.contains("<think") || l.contains("</think")
}

/// Properties (a)–(c) for one chunking of `o`, against the whole-text split `whole`.
fn check(o: &Output, chunks: &[&str], whole: &ThinkOutcome) -> Result<(), TestCaseError> {
    let (outs, outcome) = stream(chunks);
    for piece in outs.iter().chain([&outcome.tail]) {
        prop_assert!(!has_think_tag(piece), "chunk output {piece:?}");
        for m in &o.markers {
            prop_assert!(
                !piece.contains(m.as_str()),
                "chunk output {piece:?} has {m}"
            );
        }
    }
    let all = outs.concat() + &outcome.tail;
    prop_assert!(!has_think_tag(&all), "output {all:?}");
    for m in &o.markers {
        prop_assert!(!all.contains(m.as_str()), "output {all:?} has {m}");
        prop_assert!(outcome.thinking.contains(m.as_str()), "thinking lacks {m}");
    }
    prop_assert_eq!(&all, &whole.final_text, "chunks {:?}", chunks);
    prop_assert_eq!(&outcome.final_text, &whole.final_text);
    prop_assert_eq!(&outcome.thinking, &whole.thinking);
    prop_assert_eq!(outcome.class, whole.class);
    prop_assert_eq!(outcome.format, whole.format);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_single_split_point(o in output()) {
        let whole = split_thinking(&o.text);
        check(&o, &[&o.text], &whole)?;
        for (k, _) in o.text.char_indices().skip(1) {
            check(&o, &[&o.text[..k], &o.text[k..]], &whole)?;
        }
    }

    #[test]
    fn random_multi_split(o in output(), at in prop::collection::vec(any::<usize>(), 0..40)) {
        let whole = split_thinking(&o.text);
        check(&o, &cut(&o.text, at), &whole)?;
        let chars: Vec<String> = o.text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        check(&o, &refs, &whole)?;
    }

    #[test]
    fn show_mode_is_identity(o in output(), at in prop::collection::vec(any::<usize>(), 0..20)) {
        let mut f = ThinkFilter::new(ThinkMode::Show);
        let mut all = String::new();
        for c in cut(&o.text, at) {
            all += &f.push(c);
        }
        let outcome = f.finish();
        all += &outcome.tail;
        prop_assert_eq!(&all, &o.text);
        let whole = split_thinking(&o.text);
        prop_assert_eq!(outcome.final_text, whole.final_text);
        prop_assert_eq!(outcome.thinking, whole.thinking);
    }

    /// Well-formed outputs (no stray tags) show exactly their answer.
    #[test]
    fn well_formed_outputs_show_the_answer(
        kind in 0..3u8,
        blocks in prop::collection::vec((soft_text(), soft_text()), 0..4),
        filler in soft_text(),
        answer in soft_text(),
        after in soft_text(),
    ) {
        let quad = ["task", "safety", "logic", "ethics", "practical", "creative"];
        let (text, want) = match kind {
            0 => {
                let mut t = String::new();
                for (i, (a, b)) in blocks.iter().enumerate() {
                    let n = quad[i % quad.len()];
                    t += &format!("<think-{n}>{a}[[M{i}]]{b}</think-{n}>{filler}");
                }
                (format!("{t}<final>{answer}</final>{after}"), answer.clone())
            }
            // (A partial think tag at the very end is hidden: end these with `.`.)
            1 => (
                format!("# 思考ステップ\n{filler}[[M0]]\n\n# 最終回答\n{answer}."),
                format!("{answer}."),
            ),
            _ => {
                let mut t = format!("x{filler}");
                let mut want = t.clone();
                for (i, (a, b)) in blocks.iter().enumerate() {
                    t += &format!("<think>{a}[[M{i}]]</think>{b}");
                    want += b;
                }
                (t + ".", want + ".")
            }
        };
        let got = split_thinking(&text);
        prop_assert_eq!(&got.final_text, &want, "text {:?}", text);
        prop_assert!(!got.final_text.contains("[[M"));
    }
}
