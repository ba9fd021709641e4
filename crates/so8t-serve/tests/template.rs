//! The Go template renderer on Ollama's real chat templates (exact strings), on the template
//! our exporter writes (same text as the Jinja template it came from), and its errors.

use serde_json::json;
use so8t_gguf::modelfile::RoleFormat;
use so8t_model::{ChatTemplate, Message, PHI35_TEMPLATE};
use so8t_serve::template::{GoTemplate, TemplateData, TemplateMessage};

fn data(system: &str, msgs: &[(&str, &str)]) -> TemplateData {
    TemplateData {
        system: system.into(),
        messages: msgs
            .iter()
            .map(|(r, c)| TemplateMessage::new(*r, *c))
            .collect(),
        ..Default::default()
    }
}

fn render(src: &str, d: &TemplateData) -> String {
    GoTemplate::parse(src)
        .unwrap_or_else(|e| panic!("{e}"))
        .render(d)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// ChatML over `.Messages`, as in Ollama's qwen2 / smollm2 models.
const CHATML: &str = r#"{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|im_start|>{{ .Role }}
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_end|>
<|im_start|>assistant
{{ end }}
{{- end }}"#;

#[test]
fn chatml_messages() {
    let d = data("", &[("system", "S"), ("user", "Hi")]);
    assert_eq!(
        render(CHATML, &d),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let d = data("", &[("user", "Hi"), ("assistant", "Hel")]);
    assert_eq!(
        render(CHATML, &d),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHel"
    );
}

/// Ollama's llama3.1-style template (messages, tool calls).
const LLAMA3: &str = r#"{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- end }}
{{- end }}"#;

#[test]
fn llama3_messages() {
    let d = data(
        "S",
        &[("user", "Hi"), ("assistant", "Hello"), ("user", "Bye")],
    );
    assert_eq!(
        render(LLAMA3, &d),
        "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    // Tool calls in Ollama's JSON shape read as its Go structs; arguments print as JSON.
    let mut v = d.to_value();
    v["System"] = json!("");
    v["Messages"] = json!([
        {"Role": "user", "Content": "Weather?", "ToolCalls": []},
        {"Role": "assistant", "Content": "", "ToolCalls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Tokyo <JP>"}}}
        ]},
    ]);
    let t = GoTemplate::parse(LLAMA3).unwrap();
    assert_eq!(
        t.render_value(&v).unwrap(),
        "<|start_header_id|>user<|end_header_id|>\n\nWeather?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\
         {\"name\": \"get_weather\", \"parameters\": {\"city\":\"Tokyo \\u003cJP\\u003e\"}}"
    );
}

/// Ollama's llama3 template of the single-turn style.
const LLAMA3_OLD: &str = "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>";

/// Ollama's phi3 template of the single-turn style.
const PHI3_OLD: &str = "{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}{{ if .Prompt }}<|user|>\n{{ .Prompt }}<|end|>\n{{ end }}<|assistant|>\n{{ .Response }}<|end|>";

#[test]
fn single_turn_style() {
    let mut d = data("S", &[]);
    d.prompt = "Hi".into();
    assert_eq!(
        render(LLAMA3_OLD, &d),
        "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>"
    );
    d.system.clear();
    assert_eq!(
        render(PHI3_OLD, &d),
        "<|user|>\nHi<|end|>\n<|assistant|>\n<|end|>"
    );
}

/// Ollama's phi3 template over `.Messages`.
const PHI3: &str = r#"{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|{{ .Role }}|>
{{ .Content }}<|end|>
{{ if (and $last (ne .Role "assistant")) }}<|assistant|>
{{ end }}
{{- end }}"#;

#[test]
fn phi3_messages() {
    let d = data(
        "",
        &[
            ("system", "S"),
            ("user", "Hi"),
            ("assistant", "Yo"),
            ("user", "日本 🚀"),
        ],
    );
    assert_eq!(
        render(PHI3, &d),
        "<|system|>\nS<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nYo<|end|>\n<|user|>\n日本 🚀<|end|>\n<|assistant|>\n"
    );
}

const CHATML_JINJA: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn exporter_template_renders_like_the_jinja_source() {
    for (src, bos, eos) in [
        (PHI35_TEMPLATE, "<s>", "<|endoftext|>"),
        (CHATML_JINJA, "", "<|im_end|>"),
    ] {
        let jinja = ChatTemplate::new(src, bos, eos).unwrap();
        let go = GoTemplate::parse(&RoleFormat::derive(&jinja).unwrap().go_template()).unwrap();
        let m = Message::new;
        for msgs in [
            vec![m("user", "Hi")],
            vec![m("system", "Be brief."), m("user", "日本の首都は？")],
            vec![
                m("system", "S"),
                m("user", "a {{ b }}"),
                m("assistant", "b\n"),
                m("user", "c 🚀"),
            ],
        ] {
            let want = jinja.render(&msgs, true).unwrap();
            let want = want.strip_prefix(bos).unwrap_or(&want);
            let d = TemplateData {
                messages: msgs
                    .iter()
                    .map(|x| TemplateMessage::new(&x.role, &x.content))
                    .collect(),
                ..Default::default()
            };
            assert_eq!(go.render(&d).unwrap(), want, "{msgs:?}");
        }
    }
}

#[test]
fn language_features() {
    let d = data("sys", &[("user", "a"), ("assistant", "b"), ("user", "c")]);
    let cases = [
        ("{{/* comment */}}x {{- /* trimmed */ -}} y", "xy"),
        ("{{ with .System }}[{{ . }}]{{ else }}none{{ end }}", "[sys]"),
        ("{{ with .Prompt }}[{{ . }}]{{ else with .System }}<{{ . }}>{{ end }}", "<sys>"),
        ("{{ $x := 1 }}{{ if .System }}{{ $x = 2 }}{{ end }}{{ $x }}", "2"),
        ("{{ range .Messages }}{{ .Role }},{{ end }}", "user,assistant,user,"),
        ("{{ range $m := .Messages }}{{ if eq $m.Role \"assistant\" }}{{ break }}{{ end }}{{ $m.Content }}{{ end }}", "a"),
        ("{{ range $i, $m := .Messages }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ $i }}{{ $m.Content }}{{ end }}", "0a2c"),
        ("{{ range .Tools }}t{{ else }}no tools{{ end }}", "no tools"),
        ("{{ (index .Messages 1).Content }}{{ index .Messages 2 | len }}", "b6"),
        ("{{ len .Messages }} {{ .System | len }} {{ slice .System 1 }} {{ slice .System 0 1 }}", "3 3 ys s"),
        ("{{ printf \"%s=%d %q %v%%\" \"k\" 5 \"x\" true }}", "k=5 \"x\" true%"),
        ("{{ \"a\" | printf \"%s-%s\" \"b\" }}", "b-a"),
        ("{{ json .System }} {{ json (index .Messages 0).Content }}", "\"sys\" \"a\""),
        ("{{ or .Prompt \"dflt\" }} {{ and .System 0 }} {{ not .Prompt }}", "dflt 0 true"),
        ("{{ if eq .System \"x\" \"sys\" }}any{{ end }}", "any"),
        ("{{ if and (lt 1 2) (ge 2.5 2) (gt \"b\" \"a\") (le 1 1) (ne 1 2) }}ok{{ end }}", "ok"),
        ("{{ if not .Tools }}{{ -3 }} {{ 1.5 }} {{ `raw\\n` }} {{ \"\\u00e9\\n\" }}{{ end }}", "-3 1.5 raw\\n é\n"),
        ("{{ if .Prompt }}p{{ else if .System }}s{{ else }}n{{ end }}", "s"),
        ("{{ print 1 2 \"x\" 3 }}|{{ nil }}|{{ $.System }}", "1 2x3|<no value>|sys"),
        ("a  {{- \"b\" -}}  \n c", "abc"),
    ];
    for (src, want) in cases {
        assert_eq!(render(src, &d), want, "{src}");
    }
}

#[test]
fn errors_carry_offsets() {
    let cases = [
        ("Hello {{ .System", 6, "unclosed action"),
        (
            "ab{{ frobnicate .System }}",
            5,
            "function \"frobnicate\" not defined",
        ),
        ("{{ if .System }}x", 0, "missing {{ end }}"),
        (
            "x{{ range .Messages }}{{ if .Role }}y{{ end }}",
            1,
            "missing {{ end }}",
        ),
        ("ok{{ end }}", 2, "unexpected {{ end }}"),
        ("ok{{/* never closed }}", 2, "unclosed comment"),
        ("{{ \"abc }}", 3, "unterminated quoted string"),
        ("{{ ( .System }}", 3, "unclosed left paren"),
        ("{{ define \"x\" }}{{ end }}", 0, "not supported"),
        ("{{ if }}x{{ end }}", 0, "missing value"),
    ];
    for (src, at, want) in cases {
        let e = GoTemplate::parse(src).unwrap_err();
        assert_eq!(e.offset, at, "{src}: {e}");
        assert!(e.to_string().contains(want), "{src}: {e}");
    }
    // Errors while rendering point at the action.
    let d = data("s", &[]);
    for (src, at, want) in [
        ("..{{ .Nope }}", 5, "can't evaluate field Nope"),
        ("{{ index .Messages 3 }}", 3, "out of range"),
        ("{{ lt .System 1 }}", 3, "incompatible types"),
        ("{{ $undefined }}", 3, "undefined variable"),
        ("x{{ break }}", 1, "outside a range"),
    ] {
        let e = GoTemplate::parse(src).unwrap().render(&d).unwrap_err();
        assert_eq!(e.offset, at, "{src}: {e}");
        assert!(e.to_string().contains(want), "{src}: {e}");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = "{{ if 1 }}".repeat(5000) + &"{{ end }}".repeat(5000);
    assert!(GoTemplate::parse(&deep)
        .unwrap_err()
        .msg
        .contains("nested deeper"));
    let parens = format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
    assert!(GoTemplate::parse(&parens)
        .unwrap_err()
        .msg
        .contains("nested deeper"));
    let e = GoTemplate::parse("{{ range 100000000000 }}x{{ end }}")
        .unwrap()
        .render(&TemplateData::default())
        .unwrap_err();
    assert!(e.msg.contains("range over more than"), "{e}");
}

proptest::proptest! {
    /// Arbitrary token soup never panics, in parsing or rendering.
    #[test]
    fn never_panics(parts in proptest::collection::vec(proptest::sample::select(vec![
        "{{", "}}", "{{- ", " -}}", "if ", "else ", "end", "range ", "with ", "break", ".Messages",
        ".Role", ".Content", "$x", "$i, $m", " := ", "=", "$", "(", ")", "|", "\"a\"", "`b`",
        "eq ", "len ", "slice ", "index ", "printf ", "json ", "and ", "not ", "1", "-1", "2.5",
        " ", "é🚀", "/*", "*/", "\\", "\"", ",", "\n", "$.System", "(.Messages).Role", "nil",
    ]), 0..40)) {
        let src: String = parts.concat();
        if let Ok(t) = GoTemplate::parse(&src) {
            let _ = t.render(&data("s", &[("user", "a"), ("assistant", "é")]));
        }
    }
}

/// Ollama's `template/chatml.gotmpl` (both styles in one template).
const OLLAMA_CHATML: &str = "{{- if .Messages }}\n{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\n{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ else }}\n{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n{{- end }}";

#[test]
fn ollama_chatml_file() {
    assert_eq!(
        render(OLLAMA_CHATML, &data("S", &[("user", "Hi")])),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let mut d = data("", &[]);
    d.prompt = "Hi".into();
    assert_eq!(
        render(OLLAMA_CHATML, &d),
        "\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<|im_end|>"
    );
}

/// The tools part of Ollama's `template/command-r.gotmpl`: maps ranged in key order,
/// `$.Tools`, tool JSON read through Go field names.
const COMMAND_R_TOOLS: &str = "{{- range .Tools }}\ndef {{ .Function.Name }}(\n{{- range $name, $property := .Function.Parameters.Properties }}{{ $name }}: {{ $property.Type }}, {{ end }}) -> List[Dict]:\n    '''{{ .Function.Description }}\n\n{{- if .Function.Parameters.Properties }}\n\n    Args:\n{{- range $name, $property := .Function.Parameters.Properties }}\n        {{ $name }} ({{ $property.Type }}): {{ $property.Description }}\n{{- end }}\n{{- end }}\n    '''\n{{- end }}\n{{- range .Messages }}\n{{- if eq .Role \"system\" }}\n{{- continue }}\n{{- end }}<|{{ .Role }}|>{{ .Content }}{{ if $.Tools }}[tools]{{ end }}\n{{- end }}";

#[test]
fn tools_in_ollamas_json_shape() {
    let mut d = data("", &[("system", "ignored"), ("user", "Weather?")]);
    d.tools = vec![json!({
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather.",
            "parameters": {
                "type": "object",
                "required": ["city"],
                "properties": {
                    "unit": {"type": "string", "description": "c or f"},
                    "city": {"type": "string", "description": "The city"}
                }
            }
        }
    })];
    assert_eq!(
        render(COMMAND_R_TOOLS, &d),
        "\ndef get_weather(city: string, unit: string, ) -> List[Dict]:\n    '''Current weather.\n\n    Args:\n        city (string): The city\n        unit (string): c or f\n    '''<|user|>Weather?[tools]"
    );
}
