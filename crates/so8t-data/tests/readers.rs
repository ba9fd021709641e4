//! `so8t_data::readers::open` on inputs written by the real tools (Python csv, pyarrow,
//! Hugging Face `datasets`; see scripts/make_reader_fixtures.py): rows, row numbers, columns,
//! byte progress, and errors that name the file and the line/row.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde_json::{json, Value};
use so8t_data::readers::{open, RowSource};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Reads every row, checking that `consumed` only grows and ends equal to `total_bytes`.
fn read_all(path: &Path) -> (Option<Vec<String>>, Vec<(usize, Value)>) {
    let RowSource {
        rows,
        columns,
        total_bytes,
        consumed,
    } = open(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(total_bytes, size_of(path), "{}", path.display());
    let mut out = Vec::new();
    let mut last = 0;
    for r in rows {
        out.push(r.unwrap_or_else(|e| panic!("{e}")));
        let now = consumed.load(Ordering::Relaxed);
        assert!(now >= last && now <= total_bytes, "{now} after {last}");
        last = now;
    }
    assert_eq!(consumed.load(Ordering::Relaxed), total_bytes);
    (columns, out)
}

/// Bytes of the data files of a path (for folders: every file but the JSON metadata, README
/// and hidden ones).
fn size_of(path: &Path) -> u64 {
    if path.is_file() {
        return path.metadata().unwrap().len();
    }
    let mut total = 0;
    for e in std::fs::read_dir(path).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".json") || name.ends_with(".md") {
            continue;
        }
        total += size_of(&p);
    }
    total
}

fn err_of(path: &Path) -> String {
    match open(path) {
        Err(e) => e.to_string(),
        Ok(src) => src
            .rows
            .filter_map(|r| r.err())
            .map(|e| e.to_string())
            .next()
            .unwrap_or_else(|| panic!("{}: no error", path.display())),
    }
}

fn strs(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn csv_reads_quoted_newlines_bom_crlf_japanese_and_empty_cells() {
    let (columns, rows) = read_all(&data("four.csv"));
    assert_eq!(columns, strs(&["id", "text", "label", "source"]));
    let lines: Vec<usize> = rows.iter().map(|r| r.0).collect();
    // Header on line 1; record 2 spans lines 3-4.
    assert_eq!(lines, vec![2, 3, 5, 6, 7, 8, 9]);
    assert_eq!(
        rows[0].1,
        json!({"id": "1", "text": "How do I bake bread?", "label": "allow", "source": "handmade"})
    );
    assert_eq!(rows[1].1["text"], "Say \"hi\", then\na second line");
    assert_eq!(rows[2].1["text"], "東京の天気を教えてください。");
    assert_eq!(rows[3].1["text"], "");
    assert_eq!(rows[4].1["source"], "");
    assert_eq!(rows[6].1["source"], "handmade");
}

#[test]
fn csv_line_numbers_count_blank_lines_and_crlf() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("blank.csv");
    std::fs::write(&p, "id,t\r\n1,x\r\n\r\n\r\n2,\"a\r\nb\"\r\n3,y").unwrap();
    let (_, rows) = read_all(&p);
    let lines: Vec<usize> = rows.iter().map(|r| r.0).collect();
    assert_eq!(lines, vec![2, 5, 7]);
    assert_eq!(rows[1].1["t"], "a\r\nb");
}

#[test]
fn tsv_reads_the_same_rows() {
    let (columns, tsv) = read_all(&data("four.tsv"));
    let (_, csv) = read_all(&data("four.csv"));
    assert_eq!(columns, strs(&["id", "text", "label", "source"]));
    let values = |rows: Vec<(usize, Value)>| rows.into_iter().map(|r| r.1).collect::<Vec<_>>();
    assert_eq!(values(tsv), values(csv));
}

#[test]
fn csv_short_row_names_file_line_and_field_counts() {
    let src = open(&data("missing_col.csv")).unwrap();
    let rows: Vec<_> = src.rows.collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].as_ref().unwrap().0, 2);
    let e = rows[1].as_ref().unwrap_err().to_string();
    assert!(
        e.ends_with("missing_col.csv:3: expected 3 fields (id, text, label), found 2"),
        "{e}"
    );
    // The reader goes on after a bad record.
    assert_eq!(rows[2].as_ref().unwrap().1["text"], "fine");
}

#[test]
fn csv_invalid_utf8_names_file_line_and_field() {
    let e = err_of(&data("bad_utf8.csv"));
    assert!(
        e.ends_with("bad_utf8.csv:3: field 2 (text) is not valid UTF-8 (byte 4 of the field)"),
        "{e}"
    );
}

#[test]
fn parquet_reads_row_groups_with_ints_lists_floats_and_nulls() {
    let (columns, rows) = read_all(&data("four.parquet"));
    assert_eq!(
        columns,
        strs(&["id", "text", "label", "source", "tags", "score"])
    );
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(
        rows[0].1,
        json!({"id": 1, "text": "How do I bake bread?", "label": 0, "source": "handmade",
               "tags": ["a", "b"], "score": 0.5})
    );
    assert_eq!(rows[1].1["text"], "Say \"hi\", then\na second line");
    assert_eq!(rows[1].1["tags"], json!([]));
    assert_eq!(rows[2].1["text"], "東京の天気を教えてください。");
    assert_eq!(rows[2].1["tags"], Value::Null);
    assert_eq!(rows[2].1["score"], Value::Null);
    assert_eq!(rows[3].1["label"], 3);
    assert_eq!(rows[6].1["tags"], json!(["end"]));
}

#[test]
fn parquet_progress_moves_per_row_group() {
    let src = open(&data("four.parquet")).unwrap();
    let mut seen = Vec::new();
    for r in src.rows {
        r.unwrap();
        seen.push(src.consumed.load(Ordering::Relaxed));
    }
    // Row groups of 3: the count moves after rows 3 and 6, and reaches the total at the end.
    assert!(seen[0] == seen[1] && seen[2] > seen[1], "{seen:?}");
    assert!(seen[5] > seen[4] && seen[5] < src.total_bytes, "{seen:?}");
    assert_eq!(src.consumed.load(Ordering::Relaxed), src.total_bytes);
}

#[test]
fn parquet_written_by_datasets_translates_class_labels_from_schema_metadata() {
    let (columns, rows) = read_all(&data("hub/data/a-train.parquet"));
    assert_eq!(columns, strs(&["text", "label"]));
    assert_eq!(rows[0].1, json!({"text": "train one", "label": "DENY"}));
    assert_eq!(rows[1].1, json!({"text": "train two", "label": "REFUSE"}));
}

#[test]
fn truncated_parquet_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(data("four.parquet")).unwrap();
    let p = dir.path().join("data.parquet");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of(&p);
    assert!(
        e.contains("data.parquet: not a Parquet file or truncated ("),
        "{e}"
    );
    // Footer intact, data pages zeroed: an error at a row, never a panic.
    let mut broken = bytes.clone();
    broken[4..200].fill(0);
    std::fs::write(&p, &broken).unwrap();
    let e = err_of(&p);
    assert!(e.contains("data.parquet:1: corrupt Parquet data"), "{e}");
}

#[test]
fn parquet_with_unsupported_codec_names_it() {
    let e = err_of(&data("zstd.parquet"));
    assert!(
        e.contains("zstd.parquet: column \"id\" (row group 0) is compressed with ZSTD"),
        "{e}"
    );
}

#[test]
fn hf_dataset_folder_chains_shards_and_names_class_labels() {
    let (columns, rows) = read_all(&data("hf_dataset"));
    assert_eq!(columns, strs(&["id", "text", "label", "tags"]));
    let ids: Vec<_> = rows.iter().map(|r| r.1["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![10, 11, 12, 13, 14]);
    // Row numbers restart in each shard (3 + 2 rows).
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 1, 2]
    );
    let labels: Vec<_> = rows.iter().map(|r| r.1["label"].clone()).collect();
    assert_eq!(
        labels,
        vec!["ALLOW", "ESCALATION", "DENY", "REFUSE", "ALLOW"]
    );
    assert_eq!(rows[1].1["text"], "改行\nあり");
    assert_eq!(rows[2].1["tags"], json!(["books", "help"]));
    assert_eq!(rows[1].1["tags"], json!([]));
}

#[test]
fn hf_dataset_dict_reads_splits_in_listed_order() {
    let (columns, rows) = read_all(&data("hf_dict"));
    assert_eq!(columns, strs(&["text", "label"]));
    let got: Vec<_> = rows.into_iter().map(|r| r.1).collect();
    assert_eq!(
        got,
        vec![
            json!({"text": "train one", "label": "DENY"}),
            json!({"text": "train two", "label": "REFUSE"}),
            json!({"text": "test one", "label": "ESCALATION"}),
        ]
    );
}

#[test]
fn lone_arrow_file_uses_dataset_info_beside_it_else_schema_metadata() {
    let shard = data("hf_dataset/data-00000-of-00002.arrow");
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("shard.arrow");
    std::fs::copy(&shard, &alone).unwrap();
    // No dataset_info.json: the names come from the schema's "huggingface" metadata.
    let (_, rows) = read_all(&alone);
    assert_eq!(rows[0].1["label"], "ALLOW");
    assert_eq!(rows[2].1["label"], "DENY");
    // A dataset_info.json beside the file wins (it is what load_from_disk uses).
    let info =
        json!({"features": {"label": {"names": ["a", "e", "d", "r"], "_type": "ClassLabel"}}});
    std::fs::write(dir.path().join("dataset_info.json"), info.to_string()).unwrap();
    let (_, rows) = read_all(&alone);
    assert_eq!(rows[2].1["label"], "d");
    // An id outside the names is an error at its row.
    let info = json!({"features": {"label": {"names": ["only"], "_type": "ClassLabel"}}});
    std::fs::write(dir.path().join("dataset_info.json"), info.to_string()).unwrap();
    let e = err_of(&alone);
    assert!(
        e.ends_with("shard.arrow:2: column \"label\": class id 1 is out of range for its ClassLabel names [only]"),
        "{e}"
    );
}

#[test]
fn arrow_file_format_converts_every_supported_type() {
    let (columns, rows) = read_all(&data("types_file.arrow"));
    assert_eq!(
        columns,
        strs(&["i8", "u64", "f16", "f32", "flag", "nothing", "big", "nums", "cat", "msg"])
    );
    assert_eq!(
        rows[0],
        (
            1,
            json!({"i8": -1, "u64": u64::MAX, "f16": 1.5, "f32": 0.25, "flag": true,
                   "nothing": null, "big": "large", "nums": [1, 2], "cat": "red",
                   "msg": {"role": "user", "content": "hi"}})
        )
    );
    assert_eq!(
        rows[1],
        (
            2,
            json!({"i8": null, "u64": 0, "f16": null, "f32": -1.0, "flag": null,
                   "nothing": null, "big": "utf8", "nums": null, "cat": "blue", "msg": null})
        )
    );
}

#[test]
fn arrow_unsupported_type_names_file_column_and_type() {
    let e = err_of(&data("timestamp.arrow"));
    assert!(
        e.contains("timestamp.arrow: column \"when\" has Arrow type Timestamp(s"),
        "{e}"
    );
}

#[test]
fn truncated_arrow_is_a_clean_error() {
    let bytes = std::fs::read(data("hf_dataset/data-00000-of-00002.arrow")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.arrow");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of(&p);
    assert!(
        e.contains("cut.arrow: not an Arrow IPC file or truncated"),
        "{e}"
    );
    // Only the end-of-stream marker missing: still refused.
    std::fs::write(&p, &bytes[..bytes.len() - 8]).unwrap();
    assert!(err_of(&p).contains("cut.arrow: not an Arrow IPC file or truncated"));
    // Cut inside a record batch, then given a marker back: the error names the row and byte.
    let mut cut = bytes[..bytes.len() - 100].to_vec();
    cut.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    std::fs::write(&p, &cut).unwrap();
    let e = err_of(&p);
    assert!(
        e.contains("cut.arrow:1: corrupt or truncated Arrow IPC data near byte"),
        "{e}"
    );
}

#[test]
fn hub_folder_reads_data_files_sorted_and_skips_hidden_and_metadata() {
    let src = open(&data("hub")).unwrap();
    assert_eq!(src.columns, strs(&["text", "label"]));
    let rows: Vec<_> = src.rows.map(|r| r.unwrap()).collect();
    assert_eq!(
        rows,
        vec![
            (1, json!({"text": "train one", "label": "DENY"})),
            (2, json!({"text": "train two", "label": "REFUSE"})),
            (1, json!({"text": "extra", "label": "allow"})),
        ]
    );
    let data_bytes = size_of(&data("hub/data"));
    assert_eq!(src.total_bytes, data_bytes);
    assert_eq!(src.consumed.load(Ordering::Relaxed), data_bytes);
}

#[test]
fn jsonl_and_json_count_bytes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.JSONL");
    std::fs::write(&p, "{\"a\":1}\n\n{\"a\":2}\r\n").unwrap();
    let src = open(&p).unwrap();
    assert_eq!(src.columns, None);
    let mut rows = src.rows;
    assert_eq!(rows.next().unwrap().unwrap(), (1, json!({"a": 1})));
    assert_eq!(src.consumed.load(Ordering::Relaxed), 8);
    assert_eq!(rows.next().unwrap().unwrap(), (3, json!({"a": 2})));
    assert!(rows.next().is_none());
    assert_eq!(src.consumed.load(Ordering::Relaxed), 18);

    let p = dir.path().join("d.json");
    std::fs::write(&p, r#"{"text": ["x", "y"], "label": ["allow", "deny"]}"#).unwrap();
    let (_, rows) = read_all(&p);
    assert_eq!(rows[1], (2, json!({"text": "y", "label": "deny"})));
}

#[test]
fn unknown_extension_and_empty_folder_list_the_formats() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data.xlsx");
    std::fs::write(&p, "x").unwrap();
    let e = err_of(&p);
    assert!(
        e.contains("data.xlsx: unsupported input format \"xlsx\""),
        "{e}"
    );
    assert!(
        e.contains(".parquet") && e.contains(".tsv") && e.contains(".arrow"),
        "{e}"
    );
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let e = err_of(&dir.path().join("empty"));
    assert!(e.contains("no data files found; expected .jsonl"), "{e}");
    let e = err_of(&dir.path().join("missing.csv"));
    assert!(e.contains("missing.csv: "), "{e}");
}

#[test]
fn reading_leaves_every_input_unchanged() {
    fn hashes(dir: &Path, out: &mut Vec<(PathBuf, [u8; 32], std::time::SystemTime)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                hashes(&p, out);
            } else {
                let modified = p.metadata().unwrap().modified().unwrap();
                let hash = *blake3::hash(&std::fs::read(&p).unwrap()).as_bytes();
                out.push((p.clone(), hash, modified));
            }
        }
    }
    let root = data("");
    let mut before = Vec::new();
    hashes(&root, &mut before);
    for name in [
        "four.csv",
        "four.tsv",
        "missing_col.csv",
        "four.parquet",
        "hf_dataset",
        "hf_dict",
        "hub",
        "types_file.arrow",
    ] {
        if let Ok(src) = open(&data(name)) {
            src.rows.for_each(drop);
        }
    }
    let mut after = Vec::new();
    hashes(&root, &mut after);
    before.sort();
    after.sort();
    assert_eq!(before, after);
}
