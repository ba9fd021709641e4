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
