#!/usr/bin/env python3
"""Generate crates/so8t-eval/tests/data/stats_reference.json for tests/stats.rs.

Every expected value is computed by SciPy / statsmodels / scikit-learn (never by hand); the
inputs are fixed by seeded NumPy generators so the file is reproducible.

How to run (from the repository root):

    python3 -m venv /tmp/statsvenv
    /tmp/statsvenv/bin/pip install -q scipy statsmodels scikit-learn numpy
    /tmp/statsvenv/bin/python crates/so8t-eval/scripts/make_stats_reference.py

The library versions used are recorded under "versions" in the JSON.

Conventions mirrored by the Rust side:
* McNemar: statsmodels mcnemar([[_, b01], [b10, _]], exact=True); b01 = A right & B wrong.
* Wilcoxon: scipy.stats.wilcoxon(b, a) with defaults (zero_method='wilcox', correction=False,
  method='auto'); Rust tests d = b - a. Input values are multiples of 1/4 so JSON round trips
  cannot change which differences tie.
* Holm: statsmodels multipletests(p, method='holm')[1].
* Bootstrap: scipy.stats.bootstrap(paired=True, method='percentile', n_resamples=10000); the
  Rust test compares the bounds within Monte-Carlo tolerance and the point estimate exactly.
* Classification: None (unparseable) -> -1 for scikit-learn, labels=[0, 1, 2, 3],
  zero_division=0.
"""

import json
import os
import sys

import numpy as np
import scipy
import sklearn
import statsmodels
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                   "stats_reference.json")
N_RESAMPLES = 10_000


def correctness_pairs(rng, n, p_a, p_b, rho=0.5):
    """Correlated paired correctness vectors (A and B share per-item difficulty)."""
    shared = rng.random(n)
    own_a = rng.random(n)
    own_b = rng.random(n)
    u_a = np.where(rng.random(n) < rho, shared, own_a)
    u_b = np.where(rng.random(n) < rho, shared, own_b)
    return (u_a < p_a), (u_b < p_b)


def from_table(b00, b01, b10, b11):
    """Correctness vectors realising a 2x2 table (rows A right/wrong, cols B right/wrong)."""
    a = [True] * b00 + [True] * b01 + [False] * b10 + [False] * b11
    b = [True] * b00 + [False] * b01 + [True] * b10 + [False] * b11
    return a, b


def mcnemar_cases():
    rng = np.random.default_rng(20240901)
    cases = []
    specs = [
        ("no_discordant", from_table(40, 0, 0, 10)),
        ("small_symmetric", from_table(5, 3, 3, 2)),
        ("lopsided_small", from_table(10, 1, 9, 3)),
        ("lopsided_n2000", from_table(1500, 30, 70, 400)),
    ]
    a, b = correctness_pairs(rng, 2000, 0.70, 0.74)
    specs.append(("random_n2000", (a.tolist(), b.tolist())))
    specs.append(("large_100k_discordant", from_table(5, 49_800, 50_200, 5)))
    for name, (a, b) in specs:
        a = np.asarray(a, dtype=bool)
        b = np.asarray(b, dtype=bool)
        b01 = int(np.sum(a & ~b))
        b10 = int(np.sum(~a & b))
        table = np.array([[int(np.sum(a & b)), b01], [b10, int(np.sum(~a & ~b))]])
        res = mcnemar(table, exact=True)
        case = {"name": name, "b01": b01, "b10": b10, "statistic": int(res.statistic),
                "p_value": float(res.pvalue)}
        if len(a) <= 2000:
            case["a"] = a.astype(int).tolist()
            case["b"] = b.astype(int).tolist()
        else:
            case["table"] = table.tolist()
        cases.append(case)
    return cases


def wilcoxon_cases():
    rng = np.random.default_rng(7)
    q = lambda x: np.round(np.asarray(x) * 4) / 4  # multiples of 1/4
    specs = []
    # small n, no ties, no zeros -> exact
    a = q(rng.normal(10, 3, 12))
    b = a + np.array([0.25, -0.5, 1.0, 1.75, 2.0, -2.25, 3.0, 3.25, 0.75, 4.0, -1.25, 5.5])
    specs.append(("exact_n12", a, b))
    # n = 30, distinct |d| -> exact
    a = q(rng.normal(0, 1, 30))
    d = np.arange(1, 31) * 0.25 * np.where(rng.random(30) < 0.35, -1, 1)
    specs.append(("exact_n30", a, a + d))
    # ties and zeros, n = 40 -> normal approximation
    a = q(rng.integers(0, 8, 40))
    b = a + rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5], 40, p=[.1, .15, .2, .2, .2, .15])
    specs.append(("ties_zeros_n40", a, b))
    # n = 80, no ties -> normal approximation (n > 50)
    a = q(rng.normal(0, 1, 80))
    d = np.arange(1, 81) * 0.25 * np.where(rng.random(80) < 0.4, -1, 1)
    perm = rng.permutation(80)
    specs.append(("normal_n80_no_ties", a, a + d[perm]))
    # small n with ties/zeros -> exact sign-flip enumeration (SciPy permutation test)
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    b = a + np.array([0.5, 0.5, -1.0, 0.0, 1.5, 2.0, 2.0, -0.5, 3.0, 1.0])
    specs.append(("permutation_n10_ties", a, b))
    # 0/1 per-item scores (typical A/B accuracy data), n = 300 -> normal, huge ties
    x, y = correctness_pairs(np.random.default_rng(3), 300, 0.6, 0.68)
    specs.append(("binary_scores_n300", x.astype(float), y.astype(float)))
    # boundary n = 50, distinct |d| -> still exact
    a = q(rng.normal(5, 2, 50))
    d = np.arange(1, 51) * 0.25 * np.where(rng.random(50) < 0.4, -1, 1)
    specs.append(("exact_n50_boundary", a, a + d))
    # n = 13 with two zeros and ties -> sign-flip enumeration
    a = np.arange(13, dtype=float)
    d = np.array([0, 0, 1, -2, 2, 3, 3, -4, 5, 6, 6, 7, 8], dtype=float) * 0.5
    specs.append(("permutation_n13_zeros", a, a + d))

    cases = []
    for name, a, b in specs:
        a = np.asarray(a, dtype=float)
        b = np.asarray(b, dtype=float)
        res = stats.wilcoxon(b, a)
        d = b - a
        nz = d[d != 0]
        ties = len(np.unique(np.abs(nz))) != len(nz)
        n = len(d)
        if n > 50:
            method = "normal"
        elif not ties and len(nz) == n:
            method = "exact"
        elif n <= 13:
            method = "permutation"
        else:
            method = "normal"
        cases.append({"name": name, "a": a.tolist(), "b": b.tolist(),
                      "statistic": float(res.statistic), "p_value": float(res.pvalue),
                      "method": method})
    return cases


def holm_cases():
    specs = [
        ("simple", [0.01, 0.04, 0.03, 0.005]),
        ("with_ties", [0.02, 0.02, 0.02, 0.5, 0.001]),
        ("capping", [0.3, 0.6, 0.9, 0.45, 0.2]),
        ("single", [0.03]),
        ("monotone_fix", [0.001, 0.011, 0.012, 0.0125, 0.2, 0.04]),
        ("zeros_and_ones", [0.0, 1.0, 0.5, 0.0]),
    ]
    out = []
    for name, p in specs:
        adj = multipletests(p, method="holm")[1]
        out.append({"name": name, "p_values": p, "adjusted": [float(x) for x in adj]})
    return out


def np_macro_f1(labels, preds, k=4):
    """Vectorisable macro-F1 (checked against sklearn below); preds use -1 for unparseable."""
    f1s = []
    for c in range(k):
        tp = np.sum((preds == c) & (labels == c), axis=-1)
        fp = np.sum((preds == c) & (labels != c), axis=-1)
        fn = np.sum((preds != c) & (labels == c), axis=-1)
        den = 2 * tp + fp + fn
        f1s.append(np.where(den == 0, 0.0, 2 * tp / np.maximum(den, 1)))
    return np.mean(f1s, axis=0)


def bootstrap_cases():
    out = []
    rng = np.random.default_rng(99)
    for name, n, pa, pb in [("acc_n200", 200, 0.62, 0.70), ("acc_n1000", 1000, 0.55, 0.57),
                            ("acc_n500_equal", 500, 0.8, 0.8)]:
        a, b = correctness_pairs(rng, n, pa, pb)
        a = a.astype(float)
        b = b.astype(float)
        est = float(np.mean(b) - np.mean(a))

        def delta(x, y, axis=-1):
            return np.mean(y, axis=axis) - np.mean(x, axis=axis)

        res = stats.bootstrap((a, b), delta, paired=True, method="percentile",
                              n_resamples=N_RESAMPLES, rng=np.random.default_rng(1))
        rel_est = float((np.mean(b) - np.mean(a)) / np.mean(a))

        def rel(x, y, axis=-1):
            return (np.mean(y, axis=axis) - np.mean(x, axis=axis)) / np.mean(x, axis=axis)

        rel_res = stats.bootstrap((a, b), rel, paired=True, method="percentile",
                                  n_resamples=N_RESAMPLES, rng=np.random.default_rng(2))
        out.append({"name": name, "kind": "accuracy_delta", "a": a.astype(int).tolist(),
                    "b": b.astype(int).tolist(), "estimate": est,
                    "low": float(res.confidence_interval.low),
                    "high": float(res.confidence_interval.high),
                    "rel_estimate": rel_est,
                    "rel_low": float(rel_res.confidence_interval.low),
                    "rel_high": float(rel_res.confidence_interval.high),
                    "confidence": 0.95, "n_resamples": N_RESAMPLES})

    # macro-F1 delta on a 4-class task with unparseable predictions
    labels, pred_a, pred_b = classification_data(np.random.default_rng(5), 400)
    est = float(np_macro_f1(labels, pred_b) - np_macro_f1(labels, pred_a))
    for p in (pred_a, pred_b):
        sk = f1_score(labels, p, labels=[0, 1, 2, 3], average="macro", zero_division=0)
        assert abs(sk - np_macro_f1(labels, p)) < 1e-12

    def f1_delta(y, pa, pb, axis=-1):
        return np_macro_f1(y, pb) - np_macro_f1(y, pa)

    res = stats.bootstrap((labels, pred_a, pred_b), f1_delta, paired=True, method="percentile",
                          n_resamples=N_RESAMPLES, rng=np.random.default_rng(3))
    out.append({"name": "macro_f1_n400", "kind": "macro_f1_delta", "labels": labels.tolist(),
                "pred_a": none_list(pred_a), "pred_b": none_list(pred_b), "estimate": est,
                "low": float(res.confidence_interval.low),
                "high": float(res.confidence_interval.high),
                "confidence": 0.95, "n_resamples": N_RESAMPLES})
    return out


def classification_data(rng, n, k=4):
    labels = rng.choice(k, n, p=[0.4, 0.3, 0.2, 0.1])

    def predict(acc, p_unparse):
        pred = np.where(rng.random(n) < acc, labels, rng.integers(0, k, n))
        return np.where(rng.random(n) < p_unparse, -1, pred)

    return labels, predict(0.6, 0.05), predict(0.7, 0.03)


def none_list(pred):
    return [None if int(p) < 0 else int(p) for p in pred]


def classification_cases():
    out = []
    rng = np.random.default_rng(11)
    specs = []
    labels, pa, _ = classification_data(rng, 300)
    specs.append(("random_n300", labels, pa))
    # class 3 never predicted, class 2 never a true label (zero-division paths)
    labels = np.array([0, 0, 1, 1, 1, 3, 3, 0, 1, 0])
    preds = np.array([0, 1, 1, -1, 2, 0, -1, 0, 1, 2])
    specs.append(("zero_division", labels, preds))
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    specs.append(("all_unparseable", labels, np.full(8, -1)))
    specs.append(("perfect", labels, labels.copy()))
    for name, y, p in specs:
        prec, rec, f1, sup = precision_recall_fscore_support(
            y, p, labels=[0, 1, 2, 3], zero_division=0)
        cm = confusion_matrix(y, p, labels=[0, 1, 2, 3, -1])[:4].tolist()
        out.append({
            "name": name, "n_classes": 4, "labels": y.tolist(), "preds": none_list(p),
            "confusion": cm, "unparseable": int(np.sum(p < 0)),
            "precision": prec.tolist(), "recall": rec.tolist(), "f1": f1.tolist(),
            "support": [int(s) for s in sup],
            "macro_f1": float(f1_score(y, p, labels=[0, 1, 2, 3], average="macro",
                                       zero_division=0)),
            "accuracy": float(accuracy_score(y, p)),
        })
    return out


def stderr_cases():
    out = []
    rng = np.random.default_rng(13)
    for name, v in [("binary_n100", (rng.random(100) < 0.7).astype(float)),
                    ("continuous_n37", np.round(rng.normal(2, 1.5, 37), 3))]:
        out.append({"name": name, "values": v.tolist(),
                    "stderr": float(stats.sem(v, ddof=1))})
    return out


def main():
    ref = {
        "generator": "crates/so8t-eval/scripts/make_stats_reference.py",
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__,
                     "scipy": scipy.__version__, "statsmodels": statsmodels.__version__,
                     "scikit-learn": sklearn.__version__},
        "mcnemar": mcnemar_cases(),
        "wilcoxon": wilcoxon_cases(),
        "holm": holm_cases(),
        "bootstrap": bootstrap_cases(),
        "classification": classification_cases(),
        "stderr": stderr_cases(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(ref, f)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
