//! The model store: create/list/show/copy/rm on Ollama's layout, inheritance, verification
//! of blobs, names, the store's root, and the manifest's JSON shape.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value as J;
use sha2::{Digest, Sha256};
use so8t_gguf::modelfile::{parse, ParsedModelfile};
use so8t_gguf::{GgmlType, GgufWriter, TensorSpec, Value};
use so8t_serve::library::{
    default_models_dir, default_root, parse_name, read_modelfile, Library, LibraryError,
    MEDIA_MODEL, MEDIA_PARAMS, MEDIA_SYSTEM, MEDIA_TEMPLATE,
};

const SMOL_Q8: &str = "/tmp/peers/models/smollm2-135m-q8_0.gguf";
const SMOL_HF: &str = "/tmp/peers/models/smollm2-hf";

/// A tiny valid GGUF (12 f32 parameters) with a 10-token vocabulary.
fn tiny_gguf(path: &Path, with_template: bool) {
    let mut md = vec![
        ("general.architecture".to_string(), Value::from("llama")),
        ("general.file_type".to_string(), Value::U32(0)),
        (
            "tokenizer.ggml.tokens".to_string(),
            Value::strings((0..10).map(|i| format!("t{i}"))),
        ),
        ("llama.context_length".to_string(), Value::U32(64)),
    ];
    if with_template {
        md.push(("tokenizer.chat_template".into(), Value::from("{{ x }}")));
    }
    let specs = vec![
        TensorSpec::new("token_embd.weight", vec![4, 2], GgmlType::F32),
        TensorSpec::new("output_norm.weight", vec![4], GgmlType::F32),
    ];
    let mut w = GgufWriter::create(path, md, specs).unwrap();
    w.write_tensor(0, &[1u8; 32]).unwrap();
    w.write_tensor(1, &[2u8; 16]).unwrap();
    w.finish().unwrap();
}

fn sha(path: &Path) -> String {
    format!("{:x}", Sha256::digest(fs::read(path).unwrap()))
}

struct Env {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    lib: Library,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    tiny_gguf(&src.join("m.gguf"), true);
    let lib = Library::open(&tmp.path().join("models")).unwrap();
    Env {
        _tmp: tmp,
        src,
        lib,
    }
}

const MODELFILE: &str = "FROM ./m.gguf
TEMPLATE \"\"\"{{ range .Messages }}<|{{ .Role }}|>{{ .Content }}{{ end }}\"\"\"
SYSTEM You are small.
PARAMETER stop <|im_end|>
PARAMETER stop \"<|im_start|>\"
PARAMETER temperature 0.5
PARAMETER num_ctx 64
LICENSE MIT
MESSAGE user hello
MESSAGE assistant hi
";

fn create(
    e: &Env,
    name: &str,
    text: &str,
) -> Result<so8t_serve::library::ModelEntry, LibraryError> {
    let mut log = Vec::new();
    let r = e.lib.create(name, &parse(text)?, &e.src, &mut |s| {
        log.push(s.to_string())
    });
    if r.is_ok() {
        assert_eq!(log.last().map(String::as_str), Some("success"), "{log:?}");
    }
    r
}

fn blob_files(lib: &Library) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(lib.dir().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn create_list_show_copy_remove() {
    let e = env();
    let input = e.src.join("m.gguf");
    let before = sha(&input);
    let entry = create(&e, "smol", MODELFILE).unwrap();
    assert_eq!(entry.name, "smol:latest");
    assert_eq!(sha(&input), before, "the input is not modified");

    let list = e.lib.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0], entry);
    let mpath = e
        .lib
        .dir()
        .join("manifests/registry.ollama.ai/library/smol/latest");
    assert_eq!(list[0].digest, sha(&mpath));

    let info = e.lib.show("smol").unwrap();
    assert_eq!(info.system.as_deref(), Some("You are small."));
    assert_eq!(
        info.template.as_deref(),
        Some("{{ range .Messages }}<|{{ .Role }}|>{{ .Content }}{{ end }}")
    );
    assert_eq!(info.license, ["MIT"]);
    assert_eq!(info.messages.len(), 2);
    assert!(info.model_path.starts_with(e.lib.dir().join("blobs")));
    assert_eq!(sha(&info.model_path), before);
    assert_eq!(
        info.parameters,
        format!(
            "{:<30} 64\n{:<30} \"<|im_end|>\"\n{:<30} \"<|im_start|>\"\n{:<30} 0.5",
            "num_ctx", "stop", "stop", "temperature"
        )
    );
    assert_eq!(info.details.format, "gguf");
    assert_eq!(info.details.family, "llama");
    assert_eq!(info.details.parameter_size, "12");
    assert_eq!(info.details.quantization_level, "F32");
    assert_eq!(info.model_info["general.architecture"], "llama");
    assert_eq!(info.model_info["llama.context_length"], 64);
    assert_eq!(
        info.model_info["tokenizer.ggml.tokens"],
        J::Null,
        "long arrays elided"
    );
    assert_eq!(info.model_info["general.parameter_count"], 12);
    // The regenerated Modelfile points at the blob and recreates the same model.
    let mf = parse(&info.modelfile).unwrap();
    assert_eq!(Path::new(&mf.from), info.model_path);
    assert_eq!(mf.system.as_deref(), Some("You are small."));
    assert_eq!(mf.param("stop").count(), 2);
    let blobs = blob_files(&e.lib);
    e.lib
        .create("again", &mf, Path::new("/"), &mut |_| {})
        .unwrap();
    let (m1, _, _) = e.lib.manifest("smol").unwrap();
    let (m2, _, _) = e.lib.manifest("again").unwrap();
    assert_eq!(m1.layers, m2.layers);
    assert_eq!(
        blob_files(&e.lib),
        blobs,
        "no new blob for identical content"
    );

    e.lib.copy("smol", "user/smol:v1").unwrap();
    let names: Vec<String> = e.lib.list().unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["again:latest", "smol:latest", "user/smol:v1"]);
    assert_eq!(
        e.lib.resolve("user/smol:v1").unwrap().model_path,
        info.model_path
    );

    e.lib.remove("smol:latest").unwrap();
    assert!(info.model_path.exists(), "still used by two manifests");
    assert!(matches!(
        e.lib.resolve("smol"),
        Err(LibraryError::NotFound(_))
    ));
    e.lib.remove("again").unwrap();
    e.lib.remove("user/smol:v1").unwrap();
    assert!(!info.model_path.exists(), "deleted with its last user");
    assert!(blob_files(&e.lib).is_empty(), "{:?}", blob_files(&e.lib));
    assert!(e.lib.list().unwrap().is_empty());
    assert!(matches!(
        e.lib.remove("smol"),
        Err(LibraryError::NotFound(_))
    ));
}

#[test]
fn create_from_a_store_model_overrides_and_inherits() {
    let e = env();
    create(&e, "base", MODELFILE).unwrap();
    create(
        &e,
        "derived:v2",
        "FROM base\nSYSTEM Be terse.\nPARAMETER top_k 7\nPARAMETER temperature 0.1\n",
    )
    .unwrap();
    let r = e.lib.resolve("derived:v2").unwrap();
    let b = e.lib.resolve("base").unwrap();
    assert_eq!(r.model_path, b.model_path);
    assert_eq!(r.system.as_deref(), Some("Be terse."));
    assert_eq!(r.template, b.template);
    assert_eq!(r.messages, b.messages);
    assert_eq!(r.params.top_k, Some(7));
    assert_eq!(r.params.temperature, Some(0.1));
    assert_eq!(r.params.num_ctx, Some(64));
    assert_eq!(r.params.stop, ["<|im_end|>", "<|im_start|>"]);
    let info = e.lib.show("derived:v2").unwrap();
    assert_eq!(info.details.parent_model, "base:latest");
    assert_eq!(info.license, ["MIT"]);
    // The base keeps its own SYSTEM.
    assert_eq!(b.system.as_deref(), Some("You are small."));
}

#[test]
fn no_template_layer_without_template() {
    let e = env();
    create(&e, "plain", "FROM ./m.gguf\n").unwrap();
    let (m, _, _) = e.lib.manifest("plain").unwrap();
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.layers[0].media_type, MEDIA_MODEL);
    let r = e.lib.resolve("plain").unwrap();
    assert_eq!(r.template, None, "the server uses the GGUF's chat template");
    assert_eq!(r.params, Default::default());
}

#[test]
fn corrupt_and_missing_blobs_are_reported() {
    let e = env();
    create(&e, "smol", MODELFILE).unwrap();
    let r = e.lib.resolve("smol").unwrap();
    e.lib.resolve("smol").unwrap();
    let mut bytes = fs::read(&r.model_path).unwrap();
    bytes[40] ^= 0x01;
    fs::write(&r.model_path, &bytes).unwrap();
    match e.lib.resolve("smol") {
        Err(LibraryError::CorruptBlob { digest, path, .. }) => {
            assert_eq!(path, r.model_path);
            assert!(path.ends_with(digest.replace(':', "-")));
        }
        other => panic!("expected CorruptBlob, got {other:?}"),
    }
    bytes[40] ^= 0x01;
    fs::write(&r.model_path, &bytes).unwrap();
    e.lib.resolve("smol").unwrap();
    // A blob of another size is caught without hashing; a missing one is named.
    let (m, _, _) = e.lib.manifest("smol").unwrap();
    let sys = m
        .layers
        .iter()
        .find(|l| l.media_type == MEDIA_SYSTEM)
        .unwrap();
    let p = e.lib.blob_path(&sys.digest);
    fs::write(&p, "longer than it was").unwrap();
    let err = e.lib.resolve("smol").unwrap_err();
    assert!(
        matches!(
            err,
            LibraryError::BlobSize { .. } | LibraryError::CorruptBlob { .. }
        ),
        "{err}"
    );
    fs::remove_file(&p).unwrap();
    let err = e.lib.resolve("smol").unwrap_err();
    match &err {
        LibraryError::MissingBlob { model, digest, .. } => {
            assert_eq!(model, "smol:latest");
            assert_eq!(digest, &sys.digest);
        }
        other => panic!("expected MissingBlob, got {other:?}"),
    }
    assert!(err.to_string().contains("smol:latest"), "{err}");
}

#[test]
fn names() {
    let n = parse_name("smol").unwrap();
    assert_eq!(
        (
            n.host.as_str(),
            n.namespace.as_str(),
            n.model.as_str(),
            n.tag.as_str()
        ),
        ("registry.ollama.ai", "library", "smol", "latest")
    );
    assert_eq!(n.to_string(), "smol:latest");
    assert_eq!(
        parse_name("user/smol:q8_0").unwrap().to_string(),
        "user/smol:q8_0"
    );
    let h = parse_name("example.com:5000/team/Model-1.5:v1.0").unwrap();
    assert_eq!(h.host, "example.com:5000");
    assert_eq!(h.to_string(), "example.com:5000/team/Model-1.5:v1.0");
    assert_eq!(parse_name("library/smol:latest").unwrap(), n);
    for bad in [
        "",
        "a/b/c/d",
        "-x",
        "x:",
        "a b",
        "../x",
        "x/..",
        ".hidden",
        "x:t/y",
        "smol:ta g",
        "ü",
    ] {
        match parse_name(bad) {
            Err(LibraryError::BadName { name, .. }) => assert_eq!(name, bad),
            other => panic!("{bad:?}: expected BadName, got {other:?}"),
        }
    }
    let e = env();
    let err = create(&e, "bad name", "FROM ./m.gguf").unwrap_err();
    assert!(
        err.to_string().contains("invalid model name \"bad name\""),
        "{err}"
    );
}

#[test]
fn source_and_modelfile_errors() {
    let e = env();
    let err = create(&e, "x", "FROM ./absent.gguf").unwrap_err();
    assert!(matches!(err, LibraryError::Source { .. }), "{err}");
    assert!(err.to_string().contains("absent.gguf"), "{err}");
    fs::write(e.src.join("not.gguf"), "plain text").unwrap();
    let err = create(&e, "x", "FROM ./not.gguf").unwrap_err();
    assert!(matches!(err, LibraryError::BadGguf { .. }), "{err}");
    assert!(err.to_string().contains("not.gguf"), "{err}");
    let err = create(&e, "x", "FROM ./m.gguf\nADAPTER ./nope.bin").unwrap_err();
    assert!(err.to_string().contains("ADAPTER \"./nope.bin\""), "{err}");
    let err = create(&e, "x", "FROM ./m.gguf\n\nPARAMETER top_k many\n").unwrap_err();
    match &err {
        LibraryError::Modelfile(m) => assert_eq!(m.line, 3),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("line 3"), "{err}");
    let err = create(
        &e,
        "x",
        "FROM ./m.gguf\nTEMPLATE \"{{ range .Messages }{{ .Content }}{{ end }}\"",
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("TEMPLATE \"{{ range"), "{err}");
    assert!(err.to_string().contains("at byte 19"), "{err}");
    assert!(e.lib.list().unwrap().is_empty(), "nothing half-created");
    let path = e.src.join("Modelfile");
    fs::write(&path, "FROM ./m.gguf\nBOGUS x\n").unwrap();
    let err = read_modelfile(&path).unwrap_err().to_string();
    assert!(
        err.contains("Modelfile: Modelfile line 2: unknown instruction \"BOGUS\""),
        "{err}"
    );
}

#[test]
fn root_resolution() {
    let old = std::env::var_os("SO8T_HOME");
    std::env::set_var("SO8T_HOME", "/srv/so8t-home");
    assert_eq!(default_root(), PathBuf::from("/srv/so8t-home"));
    assert_eq!(
        default_models_dir(None),
        PathBuf::from("/srv/so8t-home/models")
    );
    assert_eq!(
        default_models_dir(Some(Path::new("/x/models"))),
        PathBuf::from("/x/models")
    );
    std::env::remove_var("SO8T_HOME");
    if let Some(home) = std::env::var_os("HOME") {
        assert_eq!(default_root(), PathBuf::from(home).join(".so8t"));
    }
    if let Some(o) = old {
        std::env::set_var("SO8T_HOME", o);
    }
}

#[test]
fn manifest_has_ollamas_shape() {
    let e = env();
    create(&e, "smol", MODELFILE).unwrap();
    let path = e
        .lib
        .dir()
        .join("manifests/registry.ollama.ai/library/smol/latest");
    let m: J = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let keys = |v: &J| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&m), ["config", "layers", "mediaType", "schemaVersion"]);
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            MEDIA_MODEL,
            MEDIA_TEMPLATE,
            MEDIA_SYSTEM,
            MEDIA_PARAMS,
            "application/vnd.ollama.image.messages",
            "application/vnd.ollama.image.license",
        ]
    );
    for l in m["layers"].as_array().unwrap().iter().chain([&m["config"]]) {
        assert_eq!(keys(l), ["digest", "mediaType", "size"]);
        let d = l["digest"].as_str().unwrap();
        let blob = e.lib.dir().join("blobs").join(d.replace(':', "-"));
        assert_eq!(format!("sha256:{}", sha(&blob)), d);
        assert_eq!(
            fs::metadata(&blob).unwrap().len(),
            l["size"].as_u64().unwrap()
        );
    }
    let params = &m["layers"][3]["digest"];
    let params: J =
        serde_json::from_slice(&fs::read(e.lib.blob_path(params.as_str().unwrap())).unwrap())
            .unwrap();
    assert_eq!(
        params,
        serde_json::json!({"stop": ["<|im_end|>", "<|im_start|>"], "temperature": 0.5, "num_ctx": 64})
    );
    let msgs = &m["layers"][4]["digest"];
    let msgs: J =
        serde_json::from_slice(&fs::read(e.lib.blob_path(msgs.as_str().unwrap())).unwrap())
            .unwrap();
    assert_eq!(
        msgs,
        serde_json::json!([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}])
    );
    let config: J = serde_json::from_slice(
        &fs::read(e.lib.blob_path(m["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(config["model_format"], "gguf");
    assert_eq!(config["model_family"], "llama");
    assert_eq!(config["model_families"], serde_json::json!(["llama"]));
    assert_eq!(config["model_type"], "12");
    assert_eq!(config["file_type"], "F32");
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 6);
    // No temporary files are left behind.
    assert!(
        blob_files(&e.lib).iter().all(|f| f.starts_with("sha256-")),
        "{:?}",
        blob_files(&e.lib)
    );
}

#[test]
fn real_smollm2_gguf() {
    if !Path::new(SMOL_Q8).exists() {
        eprintln!("SKIP: {SMOL_Q8} is absent");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lib = Library::open(tmp.path()).unwrap();
    let mf = ParsedModelfile {
        from: SMOL_Q8.into(),
        ..Default::default()
    };
    lib.create("smollm2:135m", &mf, Path::new("."), &mut |_| {})
        .unwrap();
    let info = lib.show("smollm2:135m").unwrap();
    assert_eq!(info.details.family, "llama");
    assert_eq!(info.details.quantization_level, "Q8_0");
    assert_eq!(info.details.parameter_size, "134.52M");
    assert_eq!(info.template, None, "the GGUF's chat template is used");
    assert!(info.model_info["tokenizer.chat_template"].is_string());
    assert_eq!(info.model_info["tokenizer.ggml.tokens"], J::Null);
    let r = lib.resolve("smollm2:135m").unwrap();
    assert_eq!(sha(&r.model_path), sha(Path::new(SMOL_Q8)));
}

#[test]
fn hf_folder_is_converted_to_f16() {
    if !Path::new(SMOL_HF).join("config.json").exists() {
        eprintln!("SKIP: {SMOL_HF} is absent");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lib = Library::open(tmp.path()).unwrap();
    let mf = parse(&format!("FROM {SMOL_HF}\nSYSTEM hi\n")).unwrap();
    lib.create("smol-hf", &mf, Path::new("."), &mut |_| {})
        .unwrap();
    let info = lib.show("smol-hf").unwrap();
    assert_eq!(info.details.quantization_level, "F16");
    assert_eq!(info.details.family, "llama");
    assert_eq!(info.system.as_deref(), Some("hi"));
    let names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".tmp")),
        "the export folder is removed: {names:?}"
    );
}
