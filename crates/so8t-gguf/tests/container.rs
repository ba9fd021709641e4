//! The GGUF container: round trips through our writer and reader, llama.cpp's own files read
//! the way gguf-py reads them, our files read by gguf-py, every malformed-input error with its
//! byte offset, and truncation / bit-flip fuzzing that must never panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value as J};
use so8t_gguf::format::{ValueType, KEY_ALIGNMENT};
use so8t_gguf::{inspect, verify, Error, GgmlType, GgufFile, GgufWriter, TensorSpec, Value};

const PYTHON: &str = "/tmp/peers/venv/bin/python";
const MODELS: &str = "/tmp/peers/models";

fn dump_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf_dump.py")
}

/// gguf-py's view of `path` as JSON, or None (with a message) when the venv is absent.
fn gguf_py_dump(path: &Path, hash_tensors: bool) -> Option<J> {
    if !Path::new(PYTHON).exists() {
        eprintln!("SKIP gguf-py comparison: {PYTHON} is absent");
        return None;
    }
    let mut cmd = Command::new(PYTHON);
    cmd.arg(dump_script()).arg(path);
    if hash_tensors {
        cmd.arg("--hash-tensors");
    }
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "gguf-py failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("gguf_dump.py prints JSON"))
}

/// A value as gguf-py's `contents()` gives it: nested arrays flattened.
fn to_json(v: &Value) -> J {
    fn flat(v: &Value, out: &mut Vec<J>) {
        match v {
            Value::Array(_, items) => items.iter().for_each(|i| flat(i, out)),
            v => out.push(to_json(v)),
        }
    }
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::F32(x) => json!(f64::from(*x)),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Array(..) => {
            let mut out = Vec::new();
            flat(v, &mut out);
            J::Array(out)
        }
    }
}

/// Compares our reading of `file` with gguf-py's dump.
fn assert_same_as_gguf_py(file: &GgufFile, py: &J) {
    assert_eq!(py["alignment"].as_u64(), Some(file.alignment()));
    assert_eq!(py["data_offset"].as_u64(), Some(file.data_offset()));
    let fields = py["fields"].as_array().unwrap();
    assert_eq!(
        fields.len(),
        file.metadata_entries().len(),
        "metadata count"
    );
    for (f, (k, v)) in fields.iter().zip(file.metadata_entries()) {
        assert_eq!(f["name"].as_str(), Some(k.as_str()));
        assert_eq!(
            f["types"][0].as_u64(),
            Some(u64::from(v.value_type().id())),
            "type of {k}"
        );
        if let Some(t) = v.array_type() {
            if !matches!(t, ValueType::Array) && !v.as_array().unwrap().is_empty() {
                assert_eq!(f["types"][1].as_u64(), Some(u64::from(t.id())), "{k}");
            }
        }
        if f["value"].get("error").is_none() {
            assert_eq!(f["value"], to_json(v), "value of {k}");
        } else {
            eprintln!("gguf-py cannot give the contents of {k}: {}", f["value"]);
            assert_eq!(
                v.array_type(),
                Some(ValueType::Array),
                "only nested arrays: {k}"
            );
        }
    }
    let tensors = py["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), file.tensors().len(), "tensor count");
    for (pt, t) in tensors.iter().zip(file.tensors()) {
        assert_eq!(pt["name"].as_str(), Some(t.name.as_str()));
        assert_eq!(
            pt["type"].as_u64(),
            Some(u64::from(t.ty.id())),
            "{}",
            t.name
        );
        assert_eq!(pt["shape"], json!(t.dims), "{}", t.name);
        assert_eq!(pt["n_bytes"].as_u64(), Some(t.n_bytes), "{}", t.name);
        assert_eq!(
            pt["data_offset"].as_u64(),
            Some(file.data_offset() + t.offset),
            "{}",
            t.name
        );
        if let Some(sha) = pt.get("sha256") {
            assert_eq!(sha.as_str().unwrap(), sha256_hex(file.tensor_bytes(t)));
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Q8_0 blocks with finite f16 scales (1.0) and random quants.
fn q8_0_bytes(blocks: usize, seed: u64) -> Vec<u8> {
    let q = noise(blocks * 32, seed);
    let mut out = Vec::new();
    for b in 0..blocks {
        out.extend_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        out.extend_from_slice(&q[b * 32..b * 32 + 32]);
    }
    out
}

fn every_value_type() -> Vec<(String, Value)> {
    let kv = |k: &str, v: Value| (k.to_string(), v);
    vec![
        kv("general.architecture", Value::string("llama")),
        kv("t.u8", Value::U8(200)),
        kv("t.i8", Value::I8(-100)),
        kv("t.u16", Value::U16(60000)),
        kv("t.i16", Value::I16(-30000)),
        kv("t.u32", Value::U32(4_000_000_000)),
        kv("t.i32", Value::I32(-2_000_000_000)),
        kv("t.f32", Value::F32(1e-5)),
        kv("t.bool_true", Value::Bool(true)),
        kv("t.bool_false", Value::Bool(false)),
        kv("t.string", Value::string("héllo ✓ <|endoftext|>")),
        kv("t.empty_string", Value::string("")),
        kv("t.u64", Value::U64(u64::MAX - 1)),
        kv("t.i64", Value::I64(i64::MIN + 1)),
        kv("t.f64", Value::F64(-1.0 / 3.0)),
        kv(
            "t.arr_u8",
            Value::array(ValueType::U8, vec![Value::U8(1), Value::U8(255)]),
        ),
        kv("t.arr_i8", Value::array(ValueType::I8, vec![Value::I8(-1)])),
        kv(
            "t.arr_u16",
            Value::array(ValueType::U16, vec![Value::U16(7)]),
        ),
        kv(
            "t.arr_i16",
            Value::array(ValueType::I16, vec![Value::I16(-7)]),
        ),
        kv("t.arr_u32", Value::u32s([1, 2, 3])),
        kv("t.arr_i32", Value::i32s([-1, 0, 1])),
        kv("t.arr_f32", Value::f32s([0.5, -2.25])),
        kv(
            "t.arr_bool",
            Value::array(ValueType::Bool, vec![Value::Bool(true), Value::Bool(false)]),
        ),
        kv("t.arr_str", Value::strings(["a", "", "ünï"])),
        kv(
            "t.arr_u64",
            Value::array(ValueType::U64, vec![Value::U64(1 << 40)]),
        ),
        kv(
            "t.arr_i64",
            Value::array(ValueType::I64, vec![Value::I64(-(1 << 40))]),
        ),
        kv(
            "t.arr_f64",
            Value::array(ValueType::F64, vec![Value::F64(2.5)]),
        ),
        kv("t.arr_empty_u32", Value::u32s([])),
        kv("t.arr_empty_str", Value::strings(Vec::<String>::new())),
        kv(
            "t.nested",
            Value::array(
                ValueType::Array,
                vec![
                    Value::u32s([1, 2]),
                    Value::u32s([3]),
                    Value::u32s([4, 5, 6]),
                ],
            ),
        ),
        kv(
            "t.nested_str",
            Value::array(
                ValueType::Array,
                vec![
                    Value::strings(["x", "y"]),
                    Value::array(ValueType::Array, vec![Value::strings(["deep"])]),
                ],
            ),
        ),
    ]
}

fn specs_and_data() -> (Vec<TensorSpec>, Vec<Vec<u8>>) {
    let specs = vec![
        TensorSpec::new("token_embd.weight", vec![4, 3], GgmlType::F32),
        TensorSpec::new("blk.0.attn_q.weight", vec![64, 2], GgmlType::Q8_0),
        TensorSpec::new("blk.0.attn_norm.weight", vec![5], GgmlType::F16),
        TensorSpec::new("output.weight", vec![256, 1], GgmlType::Q4_K),
        TensorSpec::new("empty", vec![0, 3], GgmlType::F32),
        TensorSpec::new("rope_freqs", vec![3], GgmlType::I32),
    ];
    let data = vec![
        f32_bytes(&[
            1.0, -2.0, 3.5, 0.0, 1e-30, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0,
        ]),
        q8_0_bytes(4, 1),
        noise(10, 2)
            .chunks(2)
            .flat_map(|_| half::f16::from_f32(0.25).to_le_bytes())
            .collect(),
        {
            let mut b = noise(144, 3);
            b[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
            b[2..4].copy_from_slice(&half::f16::from_f32(0.1).to_le_bytes());
            b
        },
        Vec::new(),
        noise(12, 4),
    ];
    (specs, data)
}

fn write_file(
    path: &Path,
    metadata: Vec<(String, Value)>,
    specs: Vec<TensorSpec>,
    data: &[Vec<u8>],
) -> so8t_gguf::FileSummary {
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let mut w = GgufWriter::create(path, metadata, specs).unwrap();
    for (i, (name, bytes)) in names.iter().zip(data).enumerate() {
        if i % 2 == 0 {
            w.write_tensor(name.as_str(), bytes).unwrap();
        } else {
            w.write_tensor(i, bytes).unwrap();
        }
    }
    w.finish().unwrap()
}

fn check_round_trip(path: &Path, metadata: &[(String, Value)], data: &[Vec<u8>], align: u64) {
    let f = GgufFile::open(path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), align);
    assert_eq!(f.data_offset() % align, 0);
    assert_eq!(f.metadata_entries(), metadata);
    for (k, v) in metadata {
        assert_eq!(f.metadata(k), Some(v));
    }
    let (specs, _) = specs_and_data();
    assert_eq!(f.tensors().len(), specs.len());
    for ((t, s), d) in f.tensors().iter().zip(&specs).zip(data) {
        assert_eq!((&t.name, &t.dims, t.ty), (&s.name, &s.dims, s.ty));
        assert_eq!(t.offset % align, 0, "{}", t.name);
        assert_eq!(f.tensor_bytes(t), d.as_slice(), "{}", t.name);
        assert_eq!(f.tensor(&t.name), Some(t));
    }
    assert_eq!(
        (f.file_len() - f.data_offset()) % align,
        0,
        "padded to the end"
    );
}

#[test]
fn round_trip_every_value_type_default_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.gguf");
    let md = every_value_type();
    let (specs, data) = specs_and_data();
    let summary = write_file(&path, md.clone(), specs, &data);
    assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(summary.sha256, sha256_hex(&std::fs::read(&path).unwrap()));
    check_round_trip(&path, &md, &data, 32);
    // Nothing but the final file is left in the folder.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("all.gguf")]);

    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.metadata("t.u8").and_then(Value::as_u32), Some(200));
    assert_eq!(f.metadata("t.i8").and_then(Value::as_u32), None);
    assert_eq!(f.metadata("t.i8").and_then(Value::as_i64), Some(-100));
    assert_eq!(f.metadata("t.f32").and_then(Value::as_f32), Some(1e-5));
    assert_eq!(
        f.metadata("general.architecture").and_then(Value::as_str),
        Some("llama")
    );
    assert_eq!(
        f.metadata("t.arr_str").and_then(Value::as_strings),
        Some(vec!["a", "", "ünï"])
    );
    assert_eq!(
        f.metadata("t.nested")
            .and_then(Value::as_array)
            .map(<[_]>::len),
        Some(3)
    );
}

#[test]
fn round_trip_custom_alignment_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a64.gguf");
    let mut md = every_value_type();
    md.insert(1, (KEY_ALIGNMENT.to_string(), Value::U32(64)));
    let (specs, data) = specs_and_data();
    write_file(&path, md.clone(), specs, &data);
    check_round_trip(&path, &md, &data, 64);
}

#[test]
fn file_without_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.gguf");
    let md = vec![("general.architecture".to_string(), Value::string("llama"))];
    let s = GgufWriter::create(&path, md.clone(), vec![])
        .unwrap()
        .finish()
        .unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.metadata_entries(), md.as_slice());
    assert!(f.tensors().is_empty());
    assert_eq!(s.bytes, f.file_len());
}

/// Tensors written in uneven pieces give the same file as whole writes; a piece past the
/// tensor's size and a whole write after pieces are refused.
#[test]
fn tensors_written_in_parts_equal_whole_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (specs, data) = specs_and_data();
    let whole = write_file(&dir.path().join("whole.gguf"), vec![], specs.clone(), &data);
    let mut w = GgufWriter::create(dir.path().join("parts.gguf"), vec![], specs.clone()).unwrap();
    for (i, bytes) in data.iter().enumerate() {
        let cut = bytes.len() / 3;
        if bytes.is_empty() {
            w.write_tensor_part(i, bytes).unwrap(); // a zero-byte tensor is complete at once
            continue;
        }
        for piece in [&bytes[..cut], &bytes[cut..cut], &bytes[cut..]] {
            w.write_tensor_part(i, piece).unwrap();
        }
    }
    let parts = w.finish().unwrap();
    assert_eq!(parts.sha256, whole.sha256);
    assert_eq!(parts.bytes, whole.bytes);

    let mut w = GgufWriter::create(dir.path().join("bad.gguf"), vec![], specs).unwrap();
    w.write_tensor_part(0, &data[0][..10]).unwrap();
    let e = w.write_tensor(0, &data[0]).unwrap_err().to_string();
    assert!(e.contains("after 10 written in parts"), "{e}");
    let e = w.write_tensor_part(0, &data[0]).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "must have {} bytes, got {}",
            data[0].len(),
            data[0].len() + 10
        )),
        "{e}"
    );
}

#[test]
fn writer_refuses_bad_input_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let (specs, data) = specs_and_data();
    let tmp_exists = || std::fs::read_dir(dir.path()).unwrap().count() > 0;

    let mut w = GgufWriter::create(&path, vec![], specs.clone()).unwrap();
    let e = w.write_tensor("blk.0.attn_q.weight", &data[1]).unwrap_err();
    assert!(e.to_string().contains("out of order"), "{e}");
    let e = w.write_tensor(0, &data[1]).unwrap_err();
    assert!(e.to_string().contains("must have 48 bytes, got 136"), "{e}");
    w.write_tensor(0, &data[0]).unwrap();
    assert_eq!(w.next_tensor(), Some("blk.0.attn_q.weight"));
    let e = w.finish().unwrap_err();
    assert!(e.to_string().contains("finish before all tensors"), "{e}");
    assert!(!tmp_exists(), "the temporary file is removed");
    assert!(!path.exists());

    let w = GgufWriter::create(&path, vec![], specs.clone()).unwrap();
    drop(w);
    assert!(!tmp_exists(), "dropping removes the temporary file");

    let dup = vec![specs[0].clone(), specs[0].clone()];
    assert!(GgufWriter::create(&path, vec![], dup).is_err());
    let odd = vec![TensorSpec::new("x", vec![33], GgmlType::Q8_0)];
    let e = GgufWriter::create(&path, vec![], odd).unwrap_err();
    assert!(e.to_string().contains("block size 32"), "{e}");
    let long = vec![TensorSpec::new("n".repeat(64), vec![1], GgmlType::F32)];
    assert!(GgufWriter::create(&path, vec![], long).is_err());
    for bad in [Value::U32(48), Value::U64(64), Value::U32(0)] {
        let md = vec![(KEY_ALIGNMENT.to_string(), bad)];
        assert!(GgufWriter::create(&path, md, vec![]).is_err());
    }
    let mixed = vec![(
        "k".to_string(),
        Value::array(ValueType::U32, vec![Value::U32(1), Value::I32(1)]),
    )];
    let e = GgufWriter::create(&path, mixed, vec![]).unwrap_err();
    assert!(
        e.to_string()
            .contains("element [1] is a i32 in an array of u32"),
        "{e}"
    );
    let dupk = vec![
        ("k".to_string(), Value::U8(1)),
        ("k".to_string(), Value::U8(2)),
    ];
    assert!(GgufWriter::create(&path, dupk, vec![]).is_err());
    assert!(!tmp_exists());
}

fn model(name: &str) -> Option<PathBuf> {
    let p = Path::new(MODELS).join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} is absent (llama.cpp's SmolLM2 GGUF files)",
            p.display()
        );
        None
    }
}

#[test]
fn reads_llama_cpp_files_like_gguf_py() {
    for (name, main_type) in [
        ("smollm2-135m-q4_k_m.gguf", GgmlType::Q4_K),
        ("smollm2-135m-q8_0.gguf", GgmlType::Q8_0),
        ("smollm2-135m-f16.gguf", GgmlType::F16),
    ] {
        let Some(path) = model(name) else { continue };
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(
            f.metadata("general.architecture").and_then(Value::as_str),
            Some("llama"),
            "{name}"
        );
        assert!(
            f.tensors().iter().any(|t| t.ty == main_type),
            "{name} has {main_type}"
        );
        if let Some(py) = gguf_py_dump(&path, false) {
            assert_same_as_gguf_py(&f, &py);
        }
        let text = inspect(&f);
        let n_vocab = f
            .metadata("tokenizer.ggml.tokens")
            .unwrap()
            .as_array()
            .unwrap()
            .len();
        assert!(text.contains(&format!("[{n_vocab} strings: \"")), "{text}");
        assert!(text.contains("blk.0.attn_q.weight"));
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.tensors, f.tensors().len());
        assert!(report.checked_tensors > 0);
    }
}

#[test]
fn gguf_py_reads_our_files() {
    let dir = tempfile::tempdir().unwrap();
    for align in [None, Some(64)] {
        let path = dir.path().join(format!("ours-{align:?}.gguf"));
        let mut md = every_value_type();
        if let Some(a) = align {
            md.push((KEY_ALIGNMENT.to_string(), Value::U32(a)));
        }
        let (specs, data) = specs_and_data();
        write_file(&path, md, specs, &data);
        let f = GgufFile::open(&path).unwrap();
        let Some(py) = gguf_py_dump(&path, true) else {
            return;
        };
        assert_same_as_gguf_py(&f, &py);
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed input: a hand-built file, one fault at a time.

/// Builds GGUF bytes field by field, remembering where things are.
#[derive(Default)]
struct Builder {
    b: Vec<u8>,
}

impl Builder {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut b = Builder::default();
        b.b.extend_from_slice(b"GGUF");
        b.u32(version).u64(n_tensors).u64(n_kv);
        b
    }
    fn pos(&self) -> u64 {
        self.b.len() as u64
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.b.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.b.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.b.extend_from_slice(s.as_bytes());
        self
    }
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.str(k).u32(4).u32(v)
    }
    /// A tensor info; returns the position of its type field and of its offset field.
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> (u64, u64) {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        let ty_at = self.pos();
        self.u32(ty);
        let off_at = self.pos();
        self.u64(offset);
        (ty_at, off_at)
    }
    fn pad_data(&mut self, align: usize, data: usize) -> Vec<u8> {
        let mut b = self.b.clone();
        b.resize(b.len().next_multiple_of(align) + data, 0);
        b
    }
}

fn expect_err(bytes: Vec<u8>, offset: u64, needle: &str) {
    let e = GgufFile::from_bytes("bad.gguf", bytes).unwrap_err();
    match &e {
        Error::Format { offset: o, msg, .. } => {
            assert_eq!(*o, offset, "offset of: {e}");
            assert!(msg.contains(needle), "{e:?} does not contain {needle:?}");
            assert!(e.to_string().contains(&format!("at byte {offset}")), "{e}");
        }
        e => panic!("not a Format error: {e}"),
    }
}

#[test]
fn header_faults() {
    let mut b = Builder::header(3, 0, 0).b;
    b[0] = b'X';
    expect_err(b, 0, "not a GGUF file");
    expect_err(Builder::header(1, 0, 0).b, 4, "version 1");
    expect_err(Builder::header(4, 0, 0).b, 4, "unknown GGUF version 4");
    expect_err(Builder::header(3u32.swap_bytes(), 0, 0).b, 4, "big-endian");
    // Version 2 is read.
    let f = GgufFile::from_bytes("v2", Builder::header(2, 0, 0).b).unwrap();
    assert_eq!(f.version(), 2);
    // Counts that cannot fit.
    expect_err(
        Builder::header(3, 1 << 40, 0).b,
        8,
        "tensor count 1099511627776 cannot fit",
    );
    expect_err(Builder::header(3, 0, u64::MAX).b, 16, "metadata count");
    expect_err(b"GGUF\x03\0\0\0\0\0".to_vec(), 8, "header needs 24 bytes");
    expect_err(b"GG".to_vec(), 0, "the magic needs 4 bytes");
    expect_err(Vec::new(), 0, "the magic");
}

#[test]
fn metadata_faults() {
    // A string running past the end.
    let mut b = Builder::header(3, 0, 1);
    b.str("k").u32(8).u64(1000);
    let at = b.pos();
    b.b.extend_from_slice(b"abc");
    expect_err(b.b, at, "needs 1000 bytes but the file ends after 3");

    // A key running past the end.
    let mut b = Builder::header(3, 0, 1);
    b.u64(u64::MAX).b.extend_from_slice(&[b'k'; 20]);
    expect_err(b.b, 32, "metadata key #0");

    // An array count that cannot fit.
    let mut b = Builder::header(3, 0, 1);
    b.str("arr").u32(9).u32(4);
    let at = b.pos();
    b.u64(1 << 40).u32(1);
    expect_err(
        b.b,
        at,
        "array 'arr' element count 1099511627776 cannot fit",
    );

    // Array elements running past the end.
    let mut b = Builder::header(3, 0, 1);
    b.str("arr").u32(9).u32(8).u64(2).str("one").u64(50);
    let at = b.pos();
    b.b.extend_from_slice(b"short");
    expect_err(b.b, at, "needs 50 bytes");

    // Unknown value types, at top level and inside an array.
    let mut b = Builder::header(3, 0, 1);
    b.str("k");
    let at = b.pos();
    b.u32(13).u32(0);
    expect_err(b.b, at, "unknown metadata value type 13 of key 'k'");
    let mut b = Builder::header(3, 0, 1);
    b.str("k").u32(9);
    let at = b.pos();
    b.u32(77).u64(0);
    expect_err(b.b, at, "unknown element type 77");

    // Invalid UTF-8, bad bool, duplicate and empty keys.
    let mut b = Builder::header(3, 0, 1);
    b.u64(2).b.extend_from_slice(&[b'k', 0xff]);
    b.u32(0).b.push(0);
    expect_err(b.b, 33, "not valid UTF-8");
    let mut b = Builder::header(3, 0, 1);
    b.str("flag").u32(7);
    let at = b.pos();
    b.b.push(2);
    expect_err(b.b, at, "bool of key 'flag' is 2");
    let mut b = Builder::header(3, 0, 2);
    b.kv_u32("k", 1);
    let at = b.pos();
    b.kv_u32("k", 2);
    expect_err(b.b, at, "duplicate metadata key 'k' (first at byte 24)");
    let mut b = Builder::header(3, 0, 1);
    b.kv_u32("", 1);
    expect_err(b.b, 24, "key #0 is empty");

    // Arrays nested too deep.
    let mut b = Builder::header(3, 0, 1);
    b.str("deep").u32(9);
    for _ in 0..40 {
        b.u32(9).u64(1);
    }
    b.u32(4).u64(0);
    let at = 24 + 8 + 4 + 4 + 12 * 16;
    expect_err(b.b, at, "nest deeper than 16");

    // Bad alignment values.
    let mut b = Builder::header(3, 0, 1);
    b.str(KEY_ALIGNMENT).u32(4);
    let at = b.pos();
    b.u32(48);
    expect_err(b.b, at, "is 48, not a non-zero power of two");
    let mut b = Builder::header(3, 0, 1);
    b.str(KEY_ALIGNMENT).u32(10);
    let at = b.pos();
    b.u64(64);
    expect_err(b.b, at, "is a u64, not a u32");
}

#[test]
fn tensor_faults() {
    // Unknown tensor type: the id is named.
    let mut b = Builder::header(3, 1, 0);
    let (ty_at, _) = b.tensor("w", &[4], 99, 0);
    expect_err(
        b.pad_data(32, 16),
        ty_at,
        "unknown ggml type id 99 of tensor 'w'",
    );

    // Offsets not aligned.
    let mut b = Builder::header(3, 1, 0);
    let (_, off_at) = b.tensor("w", &[4], 0, 8);
    expect_err(
        b.pad_data(32, 64),
        off_at,
        "not a multiple of the alignment 32",
    );
    let mut b = Builder::header(3, 1, 1);
    b.kv_u32(KEY_ALIGNMENT, 64);
    let (_, off_at) = b.tensor("w", &[4], 0, 32);
    expect_err(
        b.pad_data(64, 128),
        off_at,
        "not a multiple of the alignment 64",
    );

    // Data past the end of the file.
    let mut b = Builder::header(3, 1, 0);
    let (_, off_at) = b.tensor("w", &[4], 0, 0);
    expect_err(b.pad_data(32, 15), off_at, "runs past the end of the file");
    let mut b = Builder::header(3, 1, 0);
    let (_, off_at) = b.tensor("w", &[4], 0, u64::MAX - 31);
    expect_err(b.pad_data(32, 16), off_at, "runs past the end of the file");
    // The data section itself past the end.
    let mut b = Builder::header(3, 1, 0);
    b.tensor("w", &[0], 0, 0);
    let end = b.pos();
    expect_err(b.b, end, "past the end of the file");

    // Overlapping tensors (64 bytes at 0, then a tensor at 32).
    let mut b = Builder::header(3, 2, 0);
    b.tensor("a", &[16], 0, 0);
    let (_, off_at) = b.tensor("b", &[4], 0, 32);
    expect_err(b.pad_data(32, 64), off_at, "tensor 'b' (bytes");

    // Duplicate names.
    let mut b = Builder::header(3, 2, 0);
    b.tensor("w", &[4], 0, 0);
    let at = b.pos();
    b.tensor("w", &[4], 0, 32);
    expect_err(
        b.pad_data(32, 64),
        at,
        "duplicate tensor name 'w' (first at byte 24)",
    );

    // Dims whose product overflows, too many dims, rows not whole blocks.
    let mut b = Builder::header(3, 1, 0);
    b.str("w");
    let dims_at = b.pos();
    b.u32(2).u64(1 << 32).u64(1 << 32).u32(0).u64(0);
    expect_err(b.pad_data(32, 0), dims_at, "overflow");
    let mut b = Builder::header(3, 1, 0);
    b.str("w");
    let dims_at = b.pos();
    b.u32(5);
    expect_err(b.pad_data(32, 64), dims_at, "5 dimensions");
    let mut b = Builder::header(3, 1, 0);
    b.str("w");
    let dims_at = b.pos();
    b.u32(1).u64(31).u32(8).u64(0);
    expect_err(
        b.pad_data(32, 64),
        dims_at,
        "not a multiple of the block size 32",
    );
}

// ---------------------------------------------------------------------------------------------
// Fuzz: truncation at every offset and bit flips never panic.

fn small_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.gguf");
    let md = vec![
        ("general.architecture".to_string(), Value::string("llama")),
        ("n".to_string(), Value::U32(7)),
        ("toks".to_string(), Value::strings(["a", "bc"])),
        (
            "nest".to_string(),
            Value::array(
                ValueType::Array,
                vec![Value::i32s([1, -1]), Value::i32s([])],
            ),
        ),
        ("f".to_string(), Value::F64(0.5)),
    ];
    let specs = vec![
        TensorSpec::new("a", vec![3, 2], GgmlType::F32),
        TensorSpec::new("q", vec![32], GgmlType::Q8_0),
        TensorSpec::new("h", vec![16], GgmlType::F16),
    ];
    let data = vec![f32_bytes(&[1.0; 6]), q8_0_bytes(1, 9), vec![0u8; 32]];
    write_file(&path, md, specs, &data);
    std::fs::read(&path).unwrap()
}

fn parse_no_panic(bytes: Vec<u8>, what: &str) -> Option<GgufFile> {
    std::panic::catch_unwind(|| GgufFile::from_bytes("fuzz.gguf", bytes).ok())
        .unwrap_or_else(|_| panic!("the reader panicked on {what}"))
}

#[test]
fn fuzz_truncation_never_panics() {
    let full = small_file();
    let f = GgufFile::from_bytes("full", full.clone()).unwrap();
    let data_end = f
        .tensors()
        .iter()
        .map(|t| f.data_offset() + t.offset + t.n_bytes)
        .max()
        .unwrap() as usize;
    assert_eq!(data_end, full.len(), "the last tensor fills its padding");
    for len in 0..full.len() {
        let r = parse_no_panic(full[..len].to_vec(), &format!("truncation at {len}"));
        assert!(
            r.is_none(),
            "truncation at {len} of {} was accepted",
            full.len()
        );
    }
    // Through the file system too: empty, short and cut files give errors.
    let dir = tempfile::tempdir().unwrap();
    for len in [0, 3, 23, 24, 100, full.len() - 1] {
        let p = dir.path().join(format!("cut{len}.gguf"));
        std::fs::write(&p, &full[..len]).unwrap();
        let e = GgufFile::open(&p).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{e}");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
    }
}

#[test]
fn fuzz_bit_flips_never_panic() {
    let full = small_file();
    let mut accepted = 0;
    for i in 0..full.len() {
        for bit in 0..8 {
            let mut b = full.clone();
            b[i] ^= 1 << bit;
            accepted += usize::from(parse_no_panic(b, &format!("bit {bit} of byte {i}")).is_some());
        }
        for v in [0x00, 0xff, 0x7f, 0x80] {
            let mut b = full.clone();
            b[i] = v;
            parse_no_panic(b, &format!("byte {i} = {v:#x}"));
        }
    }
    // Flips in values and tensor data are legal files; flips in structure are not.
    assert!(accepted > 0 && accepted < full.len() * 8, "{accepted}");
    // Random garbage after a valid header.
    for seed in 0..200 {
        let mut b = full[..24].to_vec();
        b.extend(noise(200, seed));
        parse_no_panic(b, &format!("noise seed {seed}"));
    }
}

// ---------------------------------------------------------------------------------------------
// inspect and verify

#[test]
fn inspect_abbreviates_long_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.gguf");
    let toks: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    let md = vec![
        ("tokenizer.ggml.tokens".to_string(), Value::strings(toks)),
        ("short".to_string(), Value::u32s([1, 2])),
    ];
    let (specs, data) = specs_and_data();
    write_file(&path, md, specs, &data);
    let text = inspect(&GgufFile::open(&path).unwrap());
    assert!(text.contains("[100 strings: \"t0\", \"t1\""), "{text}");
    assert!(text.contains("\"t7\", …]"), "{text}");
    assert!(!text.contains("\"t8\""), "{text}");
    assert!(text.contains("[1, 2]"), "{text}");
    assert!(text.contains("Q8_0"), "{text}");
    assert!(text.contains("totals per type"), "{text}");
}

#[test]
fn verify_finds_bad_data_and_checks_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.gguf");
    let (specs, data) = specs_and_data();
    let summary = write_file(&path, vec![], specs.clone(), &data);
    let r = verify(&path).unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.sha256, summary.sha256);
    assert_eq!(r.checked_tensors, 5, "all but the I32 tensor");
    assert!(r.checksums.is_empty());

    // Listed in manifest.json (matches) and SHA256SUMS (does not).
    std::fs::write(
        dir.path().join("manifest.json"),
        serde_json::to_string(&json!({"format": 1, "files": [
            {"path": "v.gguf", "size": summary.bytes, "sha256": summary.sha256}]}))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("SHA256SUMS"),
        format!("{}  v.gguf\n", "0".repeat(64)),
    )
    .unwrap();
    let r = verify(&path).unwrap();
    assert_eq!(r.checksums.len(), 2);
    assert!(r.checksums[0].matches && !r.checksums[1].matches);
    assert_eq!(r.problems.len(), 1, "{r}");
    assert!(r.problems[0].contains("SHA256SUMS"), "{r}");
    std::fs::remove_file(dir.path().join("SHA256SUMS")).unwrap();
    std::fs::remove_file(dir.path().join("manifest.json")).unwrap();

    // A NaN in F32 data, an infinite Q8_0 scale, an infinite Q4_K dmin.
    let mut bad = data.clone();
    bad[0][8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    bad[1][34..36].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    bad[3][2..4].copy_from_slice(&half::f16::NAN.to_le_bytes());
    write_file(&path, vec![], specs, &bad);
    let f = GgufFile::open(&path).unwrap();
    let r = verify(&path).unwrap();
    assert_eq!(r.problems.len(), 3, "{r}");
    let at = |name: &str, byte: u64| {
        let t = f.tensor(name).unwrap();
        format!("at byte {}", f.data_offset() + t.offset + byte)
    };
    assert!(
        r.problems[0].contains("token_embd.weight")
            && r.problems[0].contains(&at("token_embd.weight", 8)),
        "{r}"
    );
    assert!(
        r.problems[1].contains("blk.0.attn_q.weight")
            && r.problems[1].contains(&at("blk.0.attn_q.weight", 34)),
        "{r}"
    );
    assert!(r.problems[2].contains("output.weight"), "{r}");
    assert!(r.to_string().ends_with("FAILED"));
}

#[test]
fn verify_dequantizes_quantized_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q8k.gguf");
    // A Q8_K block: f32 scale, 256 int8 quants, 16 i16 sums. A finite scale of 3e38 times a
    // quant of 100 is infinite once decoded.
    let mut block = Vec::new();
    block.extend_from_slice(&3e38f32.to_le_bytes());
    block.extend(std::iter::repeat_n(1u8, 256));
    block[4 + 5] = 100;
    block.extend(std::iter::repeat_n(0u8, 32));
    let mut ok_block = block.clone();
    ok_block[..4].copy_from_slice(&1e-3f32.to_le_bytes());
    let specs = vec![TensorSpec::new("k", vec![256, 2], GgmlType::Q8_K)];
    let data = [[ok_block, block].concat()];
    write_file(&path, vec![], specs, &data);
    let f = GgufFile::open(&path).unwrap();
    let r = verify(&path).unwrap();
    assert_eq!(r.problems.len(), 1, "{r}");
    let second_block = f.data_offset() + f.tensor("k").unwrap().offset + 292;
    assert!(
        r.problems[0].contains("non-finite dequantized weights")
            && r.problems[0].contains(&format!("at byte {second_block}")),
        "{r}"
    );
}
