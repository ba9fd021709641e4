//! `so8t export gguf`, `so8t gguf inspect` and `so8t gguf verify` end to end on a tiny model.

mod common;

use common::{fails, ok, s};

#[test]
fn export_inspect_verify() {
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("model");
    ok(&["model", "init", "--preset", "tiny", "--out", s(&model)]);
    let out = t.path().join("gguf");
    let report = ok(&[
        "export",
        "gguf",
        "--model",
        s(&model),
        "--out",
        s(&out),
        "--name",
        "tiny",
        "--json",
        "--system",
        "You are careful.",
    ]);
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "f16, q8_0 and q4_k_m by default");
    for (f, q) in files.iter().zip(["f16", "q8_0", "q4_k_m"]) {
        assert_eq!(f["ollama_name"], format!("tiny_{q}:latest"));
        let path = out.join(format!("tiny-{q}.gguf"));
        assert!(path.exists());
        let mf = std::fs::read_to_string(out.join(format!("tiny_{q}.Modelfile"))).unwrap();
        assert!(
            mf.contains(&format!("FROM ./tiny-{q}.gguf")) && mf.contains("SYSTEM"),
            "{mf}"
        );
        assert!(mf.contains("PARAMETER stop \"<|end|>\""), "{mf}");
    }
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 3);
    let f16 = out.join("tiny-f16.gguf");
    let inspect = ok(&["gguf", "inspect", s(&f16)]);
    assert!(
        inspect.contains("phi3") && inspect.contains("blk.0.attn_qkv.weight"),
        "{inspect}"
    );
    ok(&["gguf", "verify", s(&f16)]);
    // A flipped byte in the tensor data: the checksum no longer matches.
    let mut bytes = std::fs::read(&f16).unwrap();
    let n = bytes.len();
    bytes[n - 7] ^= 0x10;
    std::fs::write(&f16, bytes).unwrap();
    let e = String::from_utf8_lossy(&common::so8t(&["gguf", "verify", s(&f16)]).stdout).to_string();
    assert!(
        e.contains("sha256") || e.contains("mismatch") || e.contains("MISMATCH"),
        "{e}"
    );
    fails(&["gguf", "verify", s(&f16)]);
    // Not a GGUF file: the error names the offset.
    let junk = t.path().join("junk.gguf");
    std::fs::write(&junk, b"GGML\x03\x00\x00\x00").unwrap();
    let e = fails(&["gguf", "inspect", s(&junk)]);
    assert!(e.contains("junk.gguf") && e.contains("byte 0"), "{e}");
}
