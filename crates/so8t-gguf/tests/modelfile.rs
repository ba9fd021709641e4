//! Chat template → Ollama template: the per-role framing re-renders conversations exactly as
//! the Jinja template does; stops and the Modelfile follow spec §7.

use so8t_gguf::modelfile::{modelfile, ModelfileSpec, RoleFormat};
use so8t_model::{ChatTemplate, Message, PHI35_TEMPLATE};

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn conversations() -> Vec<(Vec<Message>, bool)> {
    let m = Message::new;
    vec![
        (vec![m("user", "Hi")], true),
        (
            vec![m("system", "Be brief."), m("user", "日本の首都は？")],
            true,
        ),
        (
            vec![
                m("system", "S"),
                m("user", "a"),
                m("assistant", "b"),
                m("user", "c 🚀"),
            ],
            true,
        ),
        (vec![m("user", "a"), m("assistant", "b")], false),
    ]
}

fn check(t: &ChatTemplate) -> RoleFormat {
    let f = RoleFormat::derive(t).unwrap();
    for (msgs, gen) in conversations() {
        let want = t.render(&msgs, gen).unwrap();
        let want = want.strip_prefix(&t.bos_token).unwrap_or(&want).to_string();
        assert_eq!(f.render(&msgs, gen), want, "{msgs:?}");
    }
    f
}

#[test]
fn phi35_translates_with_the_spec_stops() {
    let t = ChatTemplate::new(PHI35_TEMPLATE, "<s>", "<|endoftext|>").unwrap();
    let f = check(&t);
    assert_eq!(f.user.0, "<|user|>\n");
    assert_eq!(f.assistant.1, "<|end|>\n");
    assert_eq!(f.generation, "<|assistant|>\n");
    assert_eq!(
        f.stops(Some("<|endoftext|>")),
        ["<|end|>", "<|user|>", "<|assistant|>", "<|endoftext|>"]
    );
    let go = f.go_template();
    assert!(
        go.contains("{{ if eq .Role \"user\" }}") || go.contains("{{ else if eq .Role \"user\" }}")
    );
    assert!(go.contains("<|user|>\n{{ .Content }}<|end|>\n"), "{go}");
    assert!(
        !go.contains("{{-"),
        "no whitespace trimming next to framing text"
    );
    let stops = f.stops(Some("<|endoftext|>"));
    let text = modelfile(&ModelfileSpec {
        from: "./so8t-q4_k_m.gguf",
        roles: Some(&f),
        stops: &stops,
        system: Some("You are careful."),
    });
    for line in [
        "FROM ./so8t-q4_k_m.gguf",
        "PARAMETER temperature 0.7",
        "PARAMETER top_p 0.9",
        "PARAMETER top_k 40",
        "PARAMETER num_ctx 4096",
        "PARAMETER stop \"<|end|>\"",
        "PARAMETER stop \"<|endoftext|>\"",
        "SYSTEM \"\"\"You are careful.\"\"\"",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.contains("TEMPLATE \"\"\""));
}

#[test]
fn chatml_translates() {
    let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
    let f = check(&t);
    assert_eq!(f.generation, "<|im_start|>assistant\n");
    assert_eq!(
        f.stops(Some("<|im_end|>")),
        ["<|im_end|>", "<|im_start|>user", "<|im_start|>assistant"]
    );
}

#[test]
fn templates_with_position_logic_are_refused() {
    // Numbers the turns: the framing of a message depends on its position.
    let numbered = "{% for m in messages %}[{{ loop.index }}]{{ m['content'] }}\n{% endfor %}";
    let t = ChatTemplate::new(numbered, "", "").unwrap();
    let e = RoleFormat::derive(&t).unwrap_err().to_string();
    assert!(e.contains("cannot be translated"), "{e}");
}

// ---- The Modelfile parser ----

use so8t_gguf::modelfile::{parse, ParamValue, ParsedModelfile};

#[test]
fn parses_what_the_exporter_writes() {
    let t = ChatTemplate::new(PHI35_TEMPLATE, "<s>", "<|endoftext|>").unwrap();
    let f = RoleFormat::derive(&t).unwrap();
    let stops = f.stops(Some("<|endoftext|>"));
    let text = modelfile(&ModelfileSpec {
        from: "./so8t-q4_k_m.gguf",
        roles: Some(&f),
        stops: &stops,
        system: Some("You are \"careful\".\nTwo lines."),
    });
    let m = parse(&text).unwrap();
    assert_eq!(m.from, "./so8t-q4_k_m.gguf");
    assert_eq!(m.template.as_deref(), Some(f.go_template().as_str()));
    assert_eq!(
        m.system.as_deref(),
        Some("You are \"careful\".\nTwo lines.")
    );
    assert_eq!(
        m.param("stop").cloned().collect::<Vec<_>>(),
        stops
            .iter()
            .map(|s| ParamValue::Str(s.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(m.param("temperature").next(), Some(&ParamValue::Float(0.7)));
    assert_eq!(m.param("top_k").next(), Some(&ParamValue::Int(40)));
    assert_eq!(m.param("num_ctx").next(), Some(&ParamValue::Int(4096)));
    assert_eq!(parse(&m.to_text()).unwrap(), m);
}

#[test]
fn parses_ollama_syntax() {
    let text = r#"# a comment
from llama3.2:1b
Parameter temperature 1
PARAMETER stop <|start_header_id|>
PARAMETER stop "<|eot_id|>"
PARAMETER seed 42
parameter penalize_newline false
PARAMETER temperature 0.25
TEMPLATE """{{ if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>{{ end }}"""
SYSTEM "Mario \"plumber\"\nfrom Brooklyn"
LICENSE """MIT
text"""
LICENSE second license
ADAPTER ./lora.gguf
MESSAGE user Is Toronto in Canada?
MESSAGE assistant """yes"""
"#;
    let m = parse(text).unwrap();
    assert_eq!(m.from, "llama3.2:1b");
    assert_eq!(
        m.parameters,
        vec![
            ("temperature".to_string(), ParamValue::Float(0.25)),
            ("stop".into(), ParamValue::Str("<|start_header_id|>".into())),
            ("stop".into(), ParamValue::Str("<|eot_id|>".into())),
            ("seed".into(), ParamValue::Int(42)),
            ("penalize_newline".into(), ParamValue::Bool(false)),
        ]
    );
    assert_eq!(
        m.template.as_deref(),
        Some("{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}")
    );
    assert_eq!(
        m.system.as_deref(),
        Some("Mario \"plumber\"\nfrom Brooklyn")
    );
    assert_eq!(m.licenses, ["MIT\ntext", "second license"]);
    assert_eq!(m.adapters, ["./lora.gguf"]);
    assert_eq!(m.messages.len(), 2);
    assert_eq!(m.messages[0].role, "user");
    assert_eq!(m.messages[0].content, "Is Toronto in Canada?");
    assert_eq!(m.messages[1].content, "yes");
    assert_eq!(parse(&m.to_text()).unwrap(), m);
}

#[test]
fn to_text_round_trips_awkward_values() {
    let mut m = ParsedModelfile {
        from: "/models/with space/x.gguf ".into(),
        system: Some("ends with a quote \"".into()),
        template: Some("has \\\" and \"\"\" inside\\".into()),
        ..Default::default()
    };
    m.set_param("stop", ParamValue::Str(" leading space".into()));
    m.set_param("stop", ParamValue::Str("\n".into()));
    m.set_param("stop", ParamValue::Str("\"quoted\"".into()));
    m.set_param("top_p", ParamValue::Float(1.0));
    m.licenses.push("#not a comment".into());
    let text = m.to_text();
    assert_eq!(parse(&text).unwrap(), m, "{text}");
}

#[test]
fn errors_name_the_line() {
    let cases = [
        ("FROM x\nFOO bar\n", 2, "unknown instruction \"FOO\""),
        ("# only\nSYSTEM hi\n", 3, "no FROM"),
        (
            "FROM x\n\nPARAMETER nonsense 1\n",
            3,
            "unknown PARAMETER \"nonsense\"",
        ),
        ("FROM x\nPARAMETER top_k 0.5\n", 2, "is not an integer"),
        ("FROM x\nPARAMETER temperature hot\n", 2, "is not a number"),
        ("FROM x\nPARAMETER use_mmap maybe\n", 2, "true or false"),
        ("FROM x\nSYSTEM \"\"\"never\nclosed\n", 2, "unterminated"),
        ("FROM x\nSYSTEM \"a\" b\n", 2, "after the closing quote"),
        (
            "FROM x\nMESSAGE robot hi\n",
            2,
            "expected system, user or assistant",
        ),
        ("FROM x\nFROM y\n", 2, "second FROM"),
        ("FROM\n", 1, "FROM needs a value"),
        ("FROM x\nPARAMETER\n", 2, "needs a name"),
    ];
    for (text, line, want) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.to_string().contains(want), "{text:?}: {e}");
        assert!(e
            .to_string()
            .starts_with(&format!("Modelfile line {line}:")));
    }
}

#[test]
fn arbitrary_text_never_panics() {
    let pieces = [
        "FROM",
        " x",
        "\n",
        "\"\"\"",
        "\"",
        "\\",
        "PARAMETER",
        " stop",
        " top_k",
        " 1",
        "#",
        "é",
        "MESSAGE",
        " user",
        "\r\n",
        "TEMPLATE",
        "\\u00",
        "\t",
        "LICENSE",
    ];
    // A deterministic walk over combinations (no extra dev-dependency).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        let mut text = String::new();
        for _ in 0..(state % 12) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(pieces[(state % pieces.len() as u64) as usize]);
        }
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        if let Ok(m) = parse(&text) {
            assert_eq!(parse(&m.to_text()).as_ref(), Ok(&m), "{text:?}");
        }
    }
}
