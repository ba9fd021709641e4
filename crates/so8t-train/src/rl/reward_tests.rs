//! The reward terms on real /think answers (made by `data think`) and on broken ones.

use so8t_data::think::{assistant_text, ThinkFormat};
use so8t_data::{Label, Record};

use super::reward::*;

fn record(label: Label) -> Record {
    Record {
        id: "r1".into(),
        source: "test".into(),
        instruction: "How do I reset my router password?".into(),
        input: String::new(),
        output: String::new(),
        system: String::new(),
        four_class_label: label,
        lang: so8t_data::Lang::En,
    }
}

fn sample<'a>(completion: &'a str, label: Label, truncated: bool) -> Sample<'a> {
    Sample {
        prompt: "p",
        completion,
        label,
        truncated,
        tokens: 10,
    }
}

#[test]
fn a_well_formed_correct_answer_gets_class_and_format() {
    for format in [ThinkFormat::Tags, ThinkFormat::Steps] {
        let text = assistant_text(&record(Label::Deny), format);
        let w = RewardConfig::default();
        let r = four_class(&sample(&text, Label::Deny, false), format, &w);
        assert!(r.correct && r.parsed, "{format:?}: {text}");
        assert_eq!(r.class, 1.0);
        assert_eq!(r.format, 0.2, "{format:?}: {text}");
        assert_eq!((r.leak, r.overlength), (0.0, 0.0));
        assert!((r.total - 1.2).abs() < 1e-12);
        // The same answer for another label: wrong class, format still right.
        let r = four_class(&sample(&text, Label::Allow, true), format, &w);
        assert!(!r.correct && r.parsed);
        assert_eq!(r.class, 0.0);
        assert_eq!(r.overlength, -0.2);
        assert!((r.total - 0.0).abs() < 1e-12);
    }
}

#[test]
fn broken_formats_lose_the_format_term() {
    let w = RewardConfig::default();
    let good = assistant_text(&record(Label::Refuse), ThinkFormat::Tags);
    // A thinking part missing.
    let cut = good
        .replacen("<think-ethics>", "<think-ethic>", 1)
        .replacen("</think-ethics>", "</think-ethic>", 1);
    let r = four_class(&sample(&cut, Label::Refuse, false), ThinkFormat::Tags, &w);
    assert_eq!(r.format, 0.0);
    assert!(r.correct, "the class still parses from <final>");
    // Two 分類 lines.
    let twice = good.replace("</final>", "\n分類: ALLOW</final>");
    let r = four_class(&sample(&twice, Label::Refuse, false), ThinkFormat::Tags, &w);
    assert_eq!(r.format, 0.0);
    assert!(r.correct, "the first 分類 line counts");
    // No final at all: nothing parses.
    let none = "<think-task>x</think-task>";
    let r = four_class(&sample(none, Label::Refuse, false), ThinkFormat::Tags, &w);
    assert!(!r.parsed && !r.correct);
    assert_eq!(r.total, 0.0);
    // The wrong format for the config.
    let steps = assistant_text(&record(Label::Refuse), ThinkFormat::Steps);
    let r = four_class(&sample(&steps, Label::Refuse, false), ThinkFormat::Tags, &w);
    assert_eq!(r.format, 0.0);
}

#[test]
fn thinking_in_the_final_answer_is_a_leak() {
    let w = RewardConfig::default();
    let good = assistant_text(&record(Label::Escalation), ThinkFormat::Tags);
    let p = so8t_data::think::parse(&good).unwrap();
    let thought = &p.thinking[1].1;
    // A thinking passage copied into <final>.
    let leaked = good.replace("</final>", &format!("\n{thought}</final>"));
    let r = four_class(
        &sample(&leaked, Label::Escalation, false),
        ThinkFormat::Tags,
        &w,
    );
    assert_eq!(r.leak, -0.5, "{leaked}");
    // A thinking tag inside <final>.
    let tagged = good.replace("</final>", "<think-task>x</think-task></final>");
    let fin = final_text(&tagged, ThinkFormat::Tags).unwrap();
    assert!(leaks(&tagged, &fin));
    // The original does not leak.
    assert!(!leaks(&good, &p.final_text));
    let r = four_class(
        &sample(&good, Label::Escalation, false),
        ThinkFormat::Tags,
        &w,
    );
    assert_eq!(r.leak, 0.0);
}

#[test]
fn weights_come_from_the_config() {
    let w = RewardConfig {
        correct: 2.0,
        wrong: -1.0,
        format: 0.5,
        leak_penalty: 1.0,
        overlength_penalty: 3.0,
        command: vec![],
    };
    let text = assistant_text(&record(Label::Allow), ThinkFormat::Tags);
    let r = four_class(&sample(&text, Label::Allow, true), ThinkFormat::Tags, &w);
    assert!((r.total - (2.0 + 0.5 - 3.0)).abs() < 1e-12);
    let r = four_class(&sample(&text, Label::Deny, false), ThinkFormat::Tags, &w);
    assert!((r.total - (-1.0 + 0.5)).abs() < 1e-12);
}

#[test]
fn an_external_command_scores_each_sample() {
    // Rewards 1 when the completion mentions DENY, else 0, and names a term.
    let script = r#"while IFS= read -r line; do case "$line" in *DENY*) echo '{"reward": 1, "terms": {"format": 0.25}}';; *) echo 0;; esac; done"#;
    let cfg = RewardConfig {
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..RewardConfig::default()
    };
    let mut s = Scorer::new(&cfg, ThinkFormat::Tags).unwrap();
    let r = s.score(&sample("分類: DENY", Label::Deny, false)).unwrap();
    assert_eq!((r.total, r.format), (1.0, 0.25));
    let r = s
        .score(&sample("分類: ALLOW", Label::Allow, false))
        .unwrap();
    assert_eq!(r.total, 0.0);
    // A scorer that answers nonsense is an error naming the command.
    let bad = RewardConfig {
        command: vec!["sh".into(), "-c".into(), "read l; echo nope".into()],
        ..RewardConfig::default()
    };
    let mut s = Scorer::new(&bad, ThinkFormat::Tags).unwrap();
    let e = s
        .score(&sample("x", Label::Deny, false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("reward.command") && e.contains("nope"), "{e}");
    let missing = RewardConfig {
        command: vec!["/nonexistent/scorer".into()],
        ..RewardConfig::default()
    };
    assert!(Scorer::new(&missing, ThinkFormat::Tags).is_err());
}
