#!/usr/bin/env python3
"""Writes the test inputs of crates/so8t-data/tests/readers.rs with the real tools (Python csv,
pyarrow, Hugging Face `datasets`), so the Rust readers are checked against what users feed them.

One-off; the outputs are committed. To regenerate:

    python3 -m venv /tmp/so8t-arrow-venv
    /tmp/so8t-arrow-venv/bin/pip install pyarrow datasets
    /tmp/so8t-arrow-venv/bin/python scripts/make_reader_fixtures.py

Written with pyarrow 26.0.1 and datasets 5.2.0. The texts are harmless.
"""

import csv
import json
import shutil
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent.parent / "crates" / "so8t-data" / "tests" / "data"
NAMES = ["ALLOW", "ESCALATION", "DENY", "REFUSE"]

# id, text, label, source: shared by the CSV, TSV and Parquet files.
ROWS = [
    (1, "How do I bake bread?", "allow", "handmade"),
    (2, 'Say "hi", then\na second line', "escalation", "handmade"),
    (3, "東京の天気を教えてください。", "deny", "ja"),
    (4, "", "refuse", "handmade"),
    (5, "Tab\tinside", "allow", ""),
    (6, "Plain question about gardening", "deny", "handmade"),
    (7, "Last row", "allow", "handmade"),
]


def write_csv(path, delimiter, rows, bom=False):
    # newline="" lets the csv module write its own CRLF line ends and keep the quoted "\n".
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(["id", "text", "label", "source"])
        w.writerows(rows)


def main():
    if OUT.exists():
        for p in ["hf_dataset", "hf_dict", "hub"]:
            shutil.rmtree(OUT / p, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)

    write_csv(OUT / "four.csv", ",", ROWS, bom=True)
    write_csv(OUT / "four.tsv", "\t", ROWS)
    (OUT / "missing_col.csv").write_text("id,text,label\n1,ok,allow\n2,short row\n3,fine,deny\n")
    (OUT / "bad_utf8.csv").write_bytes(b"id,text,label\n1,ok,allow\n2,caf\xe9,deny\n")

    # Parquet written by pyarrow: Snappy, row groups of 3 rows (3 groups for 7 rows), a label
    # stored as an int without ClassLabel metadata, a list column with a null and an empty list.
    table = pa.table(
        {
            "id": pa.array([r[0] for r in ROWS], pa.int64()),
            "text": [r[1] for r in ROWS],
            "label": pa.array([NAMES.index(r[2].upper()) for r in ROWS], pa.int32()),
            "source": [r[3] for r in ROWS],
            "tags": [["a", "b"], [], None, ["ja"], ["x"], ["y", "z"], ["end"]],
            "score": [0.5, 1.25, None, -2.0, 0.0, 3.5, 1e-3],
        }
    )
    pq.write_table(table, OUT / "four.parquet", compression="snappy", row_group_size=3)
    pq.write_table(table.slice(0, 2), OUT / "zstd.parquet", compression="zstd")

    features = datasets.Features(
        {
            "id": datasets.Value("int64"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=NAMES),
            "tags": datasets.Sequence(datasets.Value("string")),
        }
    )
    data = {
        "id": [10, 11, 12, 13, 14],
        "text": ["Water plants weekly", "改行\nあり", "Ask a librarian", "Chess openings", "Tea"],
        "label": [0, 1, 2, 3, 0],
        "tags": [["garden"], [], ["books", "help"], ["games"], ["drink"]],
    }
    ds = datasets.Dataset.from_dict(data, features=features)
    # Two shards, so the folder reader has to chain the files listed in state.json.
    ds.save_to_disk(str(OUT / "hf_dataset"), num_shards=2)

    train = datasets.Dataset.from_dict(
        {"text": ["train one", "train two"], "label": [2, 3]},
        features=datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=NAMES)}),
    )
    test = datasets.Dataset.from_dict(
        {"text": ["test one"], "label": [1]},
        features=train.features,
    )
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(OUT / "hf_dict"))

    # A hub-snapshot-like folder: README, a hidden cache folder, a nested data folder with a
    # Parquet file written by `datasets` (ClassLabel in the schema's "huggingface" metadata) and
    # a JSONL file; read sorted by path.
    hub = OUT / "hub"
    (hub / "data").mkdir(parents=True)
    (hub / ".cache").mkdir()
    (hub / ".cache" / "ignored.jsonl").write_text('{"text": "never read"}\n')
    (hub / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny test set\n")
    train.to_parquet(str(hub / "data" / "a-train.parquet"))
    (hub / "data" / "b-extra.jsonl").write_text(
        json.dumps({"text": "extra", "label": "allow"}) + "\n"
    )

    # Arrow types the converter handles, in the IPC *file* format (ARROW1 magic).
    types = pa.table(
        {
            "i8": pa.array([-1, None], pa.int8()),
            "u64": pa.array([2**64 - 1, 0], pa.uint64()),
            "f16": pa.array([1.5, None], pa.float16()),
            "f32": pa.array([0.25, -1.0], pa.float32()),
            "flag": [True, None],
            "nothing": pa.array([None, None], pa.null()),
            "big": pa.array(["large", "utf8"], pa.large_string()),
            "nums": pa.array([[1, 2], None], pa.large_list(pa.int32())),
            "cat": pa.array(["red", "blue"]).dictionary_encode(),
            "msg": [{"role": "user", "content": "hi"}, None],
        }
    )
    with pa.ipc.new_file(OUT / "types_file.arrow", types.schema) as w:
        w.write_table(types)
    ts = pa.table({"id": [1], "when": pa.array([0], pa.timestamp("s"))})
    with pa.ipc.new_stream(OUT / "timestamp.arrow", ts.schema) as w:
        w.write_table(ts)


if __name__ == "__main__":
    main()
