//! `data tokenize`: assistant-only label masks, truncation that never cuts the `分類:` line
//! silently, best-fit packing and seeded shuffling — with the tiny model `so8t model init` makes
//! (byte-level BPE, Phi-3.5 template), and SmolLM2's ChatML template when the peers are set up.

use std::path::{Path, PathBuf};

use so8t_data::collect::{collect, CollectOptions};
use so8t_data::think::{self, Renderer, ThinkFormat, ThinkOptions, ThinkRecord};
use so8t_data::tokenize::{encode_chat, tokenize, Example, TokenizeOptions, IGNORE};
use so8t_data::FieldMap;
use so8t_model::init::{init_model, InitOptions, Preset};
use so8t_model::{Arch, ChatTemplate, Message, TextTokenizer, PHI35_TEMPLATE};

fn tiny_tokenizer(dir: &Path) -> TextTokenizer {
    let m = dir.join("tiny");
    init_model(
        &InitOptions {
            arch: Arch::Phi3,
            preset: Preset::Tiny,
            seed: 1,
            tokenizer_corpus: vec![],
            dtype: None,
            vocab_size: None,
        },
        &m,
    )
    .unwrap();
    TextTokenizer::from_dir(&m).unwrap()
}

/// The bundled sample as /think chats (tags format).
fn think_file(dir: &Path) -> PathBuf {
    let rec = dir.join("records.jsonl");
    let sample =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/data/sample_four_class.jsonl");
    collect(&CollectOptions {
        inputs: vec![sample],
        output: rec.clone(),
        map: FieldMap::default(),
        skip_bad: false,
        rejects: None,
        dedup: true,
        scrub_pii: true,
        near_dup: None,
        progress: None,
    })
    .unwrap();
    let out = dir.join("think.jsonl");
    think::think(
        &ThinkOptions {
            inputs: vec![rec],
            output: out.clone(),
            format: ThinkFormat::Tags,
            system: None,
            map: FieldMap::default(),
            progress: None,
        },
        &Renderer::phi35().unwrap(),
    )
    .unwrap();
    out
}

fn chats(path: &Path) -> Vec<ThinkRecord> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn examples(path: &Path) -> Vec<Example> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Checks that exactly the assistant's tokens (its text and the template's end-of-turn tail)
/// carry labels, for every chat.
fn check_masks(tok: &TextTokenizer, template: &ChatTemplate, chats: &[ThinkRecord], tail: &str) {
    for c in chats {
        let e = encode_chat(&c.messages, tok, template, false).unwrap();
        let first = e.labels.iter().position(|&l| l != IGNORE).unwrap();
        assert!(
            e.labels[first..].iter().all(|&l| l != IGNORE),
            "{}: gap",
            c.id
        );
        for (i, (&id, &l)) in e.input_ids.iter().zip(&e.labels).enumerate() {
            assert!(
                l == IGNORE || l == id as i64,
                "{}: label {i} is not its token",
                c.id
            );
        }
        let trained = tok.decode(&e.input_ids[first..], false).unwrap();
        let assistant = &c.messages[2].content;
        assert_eq!(trained, format!("{assistant}{tail}"), "{}", c.id);
        let prompt = tok.decode(&e.input_ids[..first], false).unwrap();
        assert_eq!(
            prompt,
            template.render(&c.messages[..2], true).unwrap(),
            "{}",
            c.id
        );
        let all = encode_chat(&c.messages, tok, template, true).unwrap();
        assert!(all.labels.iter().all(|&l| l != IGNORE));
        assert_eq!(all.input_ids, e.input_ids);
    }
}

#[test]
fn labels_cover_exactly_the_assistant_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(dir.path());
    let template = tok.chat_template.as_ref().unwrap();
    assert_eq!(template.source, PHI35_TEMPLATE);
    let c = chats(&think_file(dir.path()));
    check_masks(&tok, template, &c, "<|end|>\n<|endoftext|>");
}

#[test]
fn labels_with_smollm2_chatml_template() {
    let root = std::env::var("SO8T_PEERS").unwrap_or_else(|_| "/tmp/so8t-peers".into());
    let model = Path::new(&root).join("models/smollm2-hf");
    if !model.join("tokenizer.json").exists() {
        eprintln!("SmolLM2 not set up (scripts/setup-test-peers.sh); skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tok = TextTokenizer::from_dir(&model).unwrap();
    let c = chats(&think_file(dir.path()));
    check_masks(
        &tok,
        tok.chat_template.as_ref().unwrap(),
        &c,
        "<|im_end|>\n",
    );
}

fn long_chat(thinking_words: usize, answer_words: usize) -> Vec<Message> {
    let thinking = "think ".repeat(thinking_words);
    let answer = "word ".repeat(answer_words);
    vec![
        Message::new("system", "s"),
        Message::new("user", "question"),
        Message::new(
            "assistant",
            &format!("<think-task>{thinking}</think-task><final>分類: DENY\n{answer}</final>"),
        ),
    ]
}

fn write_chats(path: &Path, chats: &[(String, Vec<Message>)]) {
    let text: String = chats
        .iter()
        .map(|(id, m)| serde_json::json!({"id": id, "messages": m}).to_string() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn truncation_never_cuts_the_class_line_silently() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(dir.path());
    let template = ChatTemplate::new(PHI35_TEMPLATE, "<s>", "<|endoftext|>").unwrap();
    let short = long_chat(2, 2);
    let long_answer = long_chat(2, 200);
    let long_thinking = long_chat(200, 2);
    let class_at = encode_chat(&long_answer, &tok, &template, false)
        .unwrap()
        .class_line_tokens
        .unwrap();
    let n_short = encode_chat(&short, &tok, &template, false)
        .unwrap()
        .input_ids
        .len();
    let max = class_at.max(n_short) + 5;
    assert!(
        encode_chat(&long_thinking, &tok, &template, false)
            .unwrap()
            .class_line_tokens
            .unwrap()
            > max
    );
    let input = dir.path().join("chats.jsonl");
    write_chats(
        &input,
        &[
            ("short".into(), short),
            ("long-answer".into(), long_answer),
            ("long-thinking".into(), long_thinking),
        ],
    );
    let run = |keep: bool| {
        let out = dir.path().join(format!("ex-{keep}.jsonl"));
        let stats = tokenize(
            &TokenizeOptions {
                inputs: vec![input.clone()],
                output: out.clone(),
                max_seq_len: max,
                train_on_prompt: false,
                pack: false,
                seed: None,
                keep_cut_class: keep,
                progress: None,
            },
            &tok,
            &template,
        )
        .unwrap();
        (stats, examples(&out))
    };
    let (stats, ex) = run(false);
    assert_eq!((stats.chats, stats.examples, stats.truncated), (3, 2, 1));
    assert_eq!(
        (stats.class_line_cut_dropped, stats.class_line_cut_kept),
        (1, 0)
    );
    assert_eq!(ex[0].ids, vec!["short"]);
    assert_eq!(ex[1].ids, vec!["long-answer"]);
    assert_eq!(ex[1].input_ids.len(), max);
    let text = tok.decode(&ex[1].input_ids, false).unwrap();
    assert!(text.contains("分類: DENY\n"), "{text}");
    let (stats, ex) = run(true);
    assert_eq!(
        (
            stats.examples,
            stats.class_line_cut_kept,
            stats.class_line_cut_dropped
        ),
        (3, 1, 0)
    );
    assert!(ex.iter().all(|e| e.input_ids.len() <= max));
}

#[test]
fn packing_and_shuffling() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(dir.path());
    let template = tok.chat_template.as_ref().unwrap();
    let input = think_file(dir.path());
    let all_ids: Vec<String> = chats(&input).into_iter().map(|c| c.id).collect();
    let run = |pack: bool, seed: Option<u64>, name: &str| {
        let out = dir.path().join(name);
        let stats = tokenize(
            &TokenizeOptions {
                inputs: vec![input.clone()],
                output: out.clone(),
                max_seq_len: 8192,
                train_on_prompt: false,
                pack,
                seed,
                keep_cut_class: false,
                progress: None,
            },
            &tok,
            template,
        )
        .unwrap();
        (stats, examples(&out), std::fs::read(&out).unwrap())
    };
    let (plain, plain_rows, _) = run(false, None, "plain.jsonl");
    assert_eq!(plain.rows, all_ids.len() as u64);
    let order: Vec<String> = plain_rows.iter().map(|r| r.ids[0].clone()).collect();
    assert_eq!(order, all_ids, "no seed keeps the input order");
    let (packed, rows, bytes1) = run(true, Some(7), "packed.jsonl");
    assert!(packed.rows * 3 < plain.rows, "{} rows", packed.rows);
    assert!(packed.fill > 0.9, "fill {}", packed.fill);
    assert_eq!(
        (packed.tokens, packed.label_tokens),
        (plain.tokens, plain.label_tokens)
    );
    let mut seen: Vec<String> = rows.iter().flat_map(|r| r.ids.clone()).collect();
    seen.sort();
    let mut want = all_ids.clone();
    want.sort();
    assert_eq!(seen, want, "every chat exactly once");
    // Each packed segment is exactly the unpacked example.
    let by_id: std::collections::HashMap<&str, &Example> =
        plain_rows.iter().map(|r| (r.ids[0].as_str(), r)).collect();
    for r in &rows {
        assert!(r.input_ids.len() <= 8192);
        assert_eq!(r.seq_lens.iter().sum::<usize>(), r.input_ids.len());
        let mut at = 0;
        for (id, &n) in r.ids.iter().zip(&r.seq_lens) {
            let e = by_id[id.as_str()];
            assert_eq!(&r.input_ids[at..at + n], &e.input_ids[..]);
            assert_eq!(&r.labels[at..at + n], &e.labels[..]);
            at += n;
        }
    }
    let (_, _, bytes2) = run(true, Some(7), "packed2.jsonl");
    assert_eq!(bytes1, bytes2, "same seed, same rows");
    let (_, rows3, _) = run(false, Some(8), "shuffled.jsonl");
    let order3: Vec<String> = rows3.iter().map(|r| r.ids[0].clone()).collect();
    assert_ne!(order3, all_ids);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn bad_chats_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(dir.path());
    let template = tok.chat_template.as_ref().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(
        &input,
        "{\"id\":1,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"}]}\n\n{\"id\":2,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n",
    )
    .unwrap();
    let opts = TokenizeOptions {
        inputs: vec![input.clone()],
        output: dir.path().join("out.jsonl"),
        max_seq_len: 64,
        train_on_prompt: false,
        pack: false,
        seed: None,
        keep_cut_class: false,
        progress: None,
    };
    let e = tokenize(&opts, &tok, template).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:3") && e.contains("assistant"), "{e}");
    assert!(!opts.output.exists());
    std::fs::write(&input, "{\"id\":1,\"text\":\"no messages\"}\n").unwrap();
    let e = tokenize(&opts, &tok, template).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:1") && e.contains("messages"), "{e}");
}
