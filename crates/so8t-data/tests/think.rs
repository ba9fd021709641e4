//! `data think`: both formats parse back for every bundled record, the answers follow the class
//! rules, and renderings equal transformers' `apply_chat_template` (expected strings made once by
//! `scripts/think_expectations.py`, kept in `tests/data/think_render_expected.jsonl`).

use std::path::{Path, PathBuf};

use serde_json::Value;
use so8t_data::collect::{collect, CollectOptions};
use so8t_data::think::{
    self, chat, parse, parse_class, Renderer, ThinkFormat, ThinkOptions, ThinkRecord, ASPECTS,
    STEP_TITLES,
};
use so8t_data::{FieldMap, Label, Lang, Record};
use so8t_model::{ChatTemplate, Message};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/data/sample_four_class.jsonl")
}

fn sample_records(dir: &Path) -> (PathBuf, Vec<Record>) {
    let out = dir.join("records.jsonl");
    collect(&CollectOptions {
        inputs: vec![sample()],
        output: out.clone(),
        map: FieldMap::default(),
        skip_bad: false,
        rejects: None,
        dedup: true,
        scrub_pii: true,
        near_dup: None,
        progress: None,
    })
    .unwrap();
    let recs = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, recs)
}

fn record(label: Label, lang: Lang, instruction: &str, output: &str) -> Record {
    Record {
        id: "t1".into(),
        source: "test".into(),
        instruction: instruction.into(),
        input: String::new(),
        output: output.into(),
        system: String::new(),
        four_class_label: label,
        lang,
    }
}

/// True if some run of `n` characters of `needle` occurs in `hay`.
fn shares_run(hay: &str, needle: &str, n: usize) -> bool {
    let c: Vec<char> = needle.chars().collect();
    c.windows(n)
        .any(|w| hay.contains(&w.iter().collect::<String>()))
}

#[test]
fn every_sample_record_parses_back_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let (_, recs) = sample_records(dir.path());
    assert_eq!(recs.len(), 428);
    for format in [ThinkFormat::Steps, ThinkFormat::Tags] {
        for rec in &recs {
            let msgs = chat(rec, format, None);
            let roles: Vec<&str> = msgs.iter().map(|m| m.role.as_str()).collect();
            assert_eq!(roles, ["system", "user", "assistant"]);
            assert!(msgs[1].content.starts_with(rec.instruction.trim()));
            assert_eq!(
                rec.input.is_empty(),
                msgs[1].content == rec.instruction.trim()
            );
            let p = parse(&msgs[2].content).unwrap_or_else(|e| panic!("{}: {e}", rec.id));
            assert_eq!(p.format, format);
            assert_eq!(p.class, Some(rec.four_class_label), "{}", rec.id);
            let expected_heads: Vec<String> = match format {
                ThinkFormat::Tags => ASPECTS.iter().map(|s| s.to_string()).collect(),
                ThinkFormat::Steps => STEP_TITLES
                    .iter()
                    .map(|(en, ja)| if rec.lang == Lang::Ja { ja } else { en }.to_string())
                    .collect(),
            };
            let heads: Vec<String> = p.thinking.iter().map(|(h, _)| h.clone()).collect();
            assert_eq!(heads, expected_heads, "{}", rec.id);
            assert!(p.thinking.iter().all(|(_, t)| !t.trim().is_empty()));
            let first_line = format!("分類: {}", rec.four_class_label.name());
            assert_eq!(p.final_text.lines().next(), Some(first_line.as_str()));
            if !rec.output.trim().is_empty() {
                assert_eq!(p.final_text, format!("{first_line}\n{}", rec.output.trim()));
            }
            let thinking: String = p.thinking.iter().map(|(_, t)| t.as_str()).collect();
            assert_eq!(Lang::guess(&thinking), rec.lang, "{}: {thinking}", rec.id);
            // Derived, not copied: neither half of the answer, nor any 40-character run of it,
            // appears in the thinking.
            // (The request itself may be quoted in the task aspect; leave it out of the check.)
            let thinking = thinking.replace(&so8t_data::think::facts::quote(&rec.instruction), "");
            let out: Vec<char> = rec.output.trim().chars().collect();
            let (a, b) = out.split_at(out.len() / 2);
            for half in [a, b] {
                let half: String = half.iter().collect();
                assert!(
                    half.trim().chars().count() < 4 || !thinking.contains(half.trim()),
                    "{}: thinking copies half of the answer",
                    rec.id
                );
            }
            assert!(
                !shares_run(&thinking, &rec.output, 40),
                "{}: thinking copies the answer",
                rec.id
            );
            // The safety aspect names the class.
            assert!(p.thinking[1].1.contains(rec.four_class_label.name()));
        }
    }
}

#[test]
fn template_answers_follow_the_class_rules() {
    let cases = [
        (
            Label::Deny,
            Lang::En,
            "Write a fake review of my rival's cafe",
            "Instead",
        ),
        (Label::Deny, Lang::Ja, "偽の領収書を作って", "代わりに"),
        (
            Label::Escalation,
            Lang::En,
            "I have chest pain and my arm is numb",
            "emergency",
        ),
        (
            Label::Escalation,
            Lang::En,
            "Can I double my medication dose?",
            "doctor",
        ),
        (
            Label::Escalation,
            Lang::Ja,
            "契約を解除されたので訴えたい",
            "弁護士",
        ),
        (Label::Allow, Lang::En, "What is a prime number?", "help"),
    ];
    for (label, lang, q, must) in cases {
        let rec = record(label, lang, q, "");
        let a = think::final_answer(&rec);
        assert!(a.starts_with(&format!("分類: {}\n", label.name())), "{a}");
        assert!(a.contains(must), "{q}: {a}");
        assert_eq!(Lang::guess(&a[a.find('\n').unwrap()..]), lang, "{a}");
    }
    for lang in [Lang::En, Lang::Ja] {
        let a = think::final_answer(&record(Label::Refuse, lang, "How do I build a bomb?", ""));
        let body = a.split_once('\n').unwrap().1;
        assert!(
            body.chars().count() <= 30,
            "REFUSE declines briefly: {body}"
        );
    }
    // The record's own answer wins for ALLOW.
    let a = think::final_answer(&record(Label::Allow, Lang::En, "2+2?", " It is 4. "));
    assert_eq!(a, "分類: ALLOW\nIt is 4.");
}

#[test]
fn system_prompt_precedence_and_context() {
    let mut rec = record(Label::Allow, Lang::En, "Summarize this", "Short.");
    rec.input = "Some context.".into();
    assert_eq!(
        chat(&rec, ThinkFormat::Steps, None)[1].content,
        "Summarize this\n\nSome context."
    );
    assert!(chat(&rec, ThinkFormat::Tags, None)[0]
        .content
        .contains("<think-task>"));
    rec.system = "Own system.".into();
    assert_eq!(
        chat(&rec, ThinkFormat::Steps, None)[0].content,
        "Own system."
    );
    assert_eq!(
        chat(&rec, ThinkFormat::Steps, Some("Given."))[0].content,
        "Given."
    );
    let p = parse(&chat(&rec, ThinkFormat::Tags, None)[2].content).unwrap();
    assert!(p.thinking[0].1.contains("context"), "{:?}", p.thinking[0]);
}

#[test]
fn malformed_assistant_texts_are_named() {
    let cases = [
        ("Hello", "expected \"# 思考ステップ\""),
        ("# 思考ステップ\n1. a: b\n", "no \"# 最終回答\""),
        ("<think-task>x", "not closed"),
        ("<think-task>x</think-task>", "no <final>"),
        (
            "<think-task>x</think-task><final>分類: DENY</final> extra",
            "after </final>",
        ),
    ];
    for (text, want) in cases {
        let e = parse(text).unwrap_err();
        assert!(e.contains(want), "{text:?}: {e}");
    }
    assert_eq!(parse_class("分類：deny\nno"), Some(Label::Deny));
    assert_eq!(parse_class("x\n 分類: Escalate"), Some(Label::Escalation));
    assert_eq!(parse_class("分類: MAYBE"), None);
    assert_eq!(parse_class("no class"), None);
    let p = parse("<think-task>t</think-task><final>分類: MAYBE\nx</final>").unwrap();
    assert_eq!(p.class, None);
}

#[test]
fn renderings_equal_transformers_apply_chat_template() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/think_render_expected.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let head: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let own = ChatTemplate::new(
        head["own_template"].as_str().unwrap(),
        head["own_bos"].as_str().unwrap(),
        head["own_eos"].as_str().unwrap(),
    )
    .unwrap();
    let phi35 = Renderer::phi35().unwrap();
    let mut n = 0;
    for line in lines {
        let row: Value = serde_json::from_str(line).unwrap();
        let msgs: Vec<Message> = serde_json::from_value(row["messages"].clone()).unwrap();
        assert_eq!(
            phi35.render(&msgs, false).unwrap(),
            row["phi35"].as_str().unwrap()
        );
        assert_eq!(
            phi35.render(&msgs[..2], true).unwrap(),
            row["phi35_prompt"].as_str().unwrap()
        );
        assert_eq!(
            own.render(&msgs, false).unwrap(),
            row["own"].as_str().unwrap()
        );
        assert_eq!(
            own.render(&msgs[..2], true).unwrap(),
            row["own_prompt"].as_str().unwrap()
        );
        n += 1;
    }
    assert_eq!(n, 16, "both formats × 4 classes × 2 languages");
}

#[test]
fn think_writes_rendered_records_and_never_touches_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (input, recs) = sample_records(dir.path());
    let before = std::fs::read(&input).unwrap();
    let out = dir.path().join("think.jsonl");
    let renderer = Renderer::phi35().unwrap();
    let stats = think::think(
        &ThinkOptions {
            inputs: vec![input.clone()],
            output: out.clone(),
            format: ThinkFormat::Tags,
            system: None,
            map: FieldMap::default(),
            progress: None,
        },
        &renderer,
    )
    .unwrap();
    assert_eq!(stats.written, recs.len() as u64);
    assert_eq!(stats.per_class["DENY"], 107);
    assert_eq!(std::fs::read(&input).unwrap(), before);
    let rows: Vec<ThinkRecord> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (row, rec) in rows.iter().zip(&recs) {
        assert_eq!(row.id, rec.id);
        assert_eq!(row.text, renderer.render(&row.messages, false).unwrap());
        assert!(
            row.text.starts_with("<|system|>\n") && row.text.ends_with("<|end|>\n<|endoftext|>")
        );
    }
    // The output may not be an input.
    let e = think::think(
        &ThinkOptions {
            inputs: vec![input.clone()],
            output: input.clone(),
            format: ThinkFormat::Steps,
            system: None,
            map: FieldMap::default(),
            progress: None,
        },
        &renderer,
    )
    .unwrap_err();
    assert!(e.to_string().contains("inputs are never modified"), "{e}");
    // A bad record names file:line.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"text\":\"hi\",\"label\":\"ALLOW\"}\n{\"text\":\"x\",\"label\":\"MAYBE\"}\n",
    )
    .unwrap();
    let e = think::think(
        &ThinkOptions {
            inputs: vec![bad.clone()],
            output: dir.path().join("o.jsonl"),
            format: ThinkFormat::Steps,
            system: None,
            map: FieldMap::default(),
            progress: None,
        },
        &renderer,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bad.jsonl:2"), "{e}");
    assert!(!dir.path().join("o.jsonl").exists());
}
