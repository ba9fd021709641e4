//! Checks the statistics module against SciPy / statsmodels / scikit-learn reference values
//! (`tests/data/stats_reference.json`, made by `scripts/make_stats_reference.py`), plus
//! property tests.

use serde_json::Value;
use so8t_eval::stats::{
    accuracy, accuracy_delta_ci, bootstrap_stderr, confusion_matrix, holm, macro_f1,
    macro_f1_delta_ci, mcnemar_exact, mean_stderr, paired_bootstrap_ci, per_class_prf,
    percentile_linear, relative_improvement_ci, wilcoxon_signed_rank, StatsError, Verdict,
    WilcoxonMethod, DEFAULT_ALPHA,
};

/// Monte-Carlo tolerance for percentile bounds from 10,000 resamples.
const MC_TOL: f64 = 0.01;
const RESAMPLES: usize = 10_000;

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/stats_reference.json"
    );
    let text = std::fs::read_to_string(path).expect("read stats_reference.json");
    serde_json::from_str(&text).expect("parse stats_reference.json")
}

fn cases<'a>(r: &'a Value, key: &str) -> &'a [Value] {
    r[key].as_array().expect(key)
}

fn name(c: &Value) -> &str {
    c["name"].as_str().unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn bools(v: &Value) -> Vec<bool> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() != 0)
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn opt_usizes(v: &Value) -> Vec<Option<usize>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().map(|u| u as usize))
        .collect()
}

fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
    let scale = want.abs().max(f64::MIN_POSITIVE);
    assert!(
        (got - want).abs() <= tol * scale,
        "{what}: got {got:e}, want {want:e} (rel tol {tol:e})"
    );
}

fn assert_abs(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} (abs tol {tol})"
    );
}

/// Correctness vectors realising a 2x2 table `[[both right, A only], [B only, both wrong]]`.
fn from_table(t: &Value) -> (Vec<bool>, Vec<bool>) {
    let c = |r: usize, k: usize| t[r][k].as_u64().unwrap() as usize;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for (ra, rb, n) in [
        (true, true, c(0, 0)),
        (true, false, c(0, 1)),
        (false, true, c(1, 0)),
        (false, false, c(1, 1)),
    ] {
        a.extend(std::iter::repeat_n(ra, n));
        b.extend(std::iter::repeat_n(rb, n));
    }
    (a, b)
}

#[test]
fn reference_versions_recorded() {
    let r = reference();
    for lib in ["numpy", "scipy", "statsmodels", "scikit-learn"] {
        assert!(r["versions"][lib].is_string(), "missing version of {lib}");
    }
}

#[test]
fn mcnemar_matches_statsmodels() {
    let r = reference();
    for c in cases(&r, "mcnemar") {
        let (a, b) = if c.get("table").is_some() {
            from_table(&c["table"])
        } else {
            (bools(&c["a"]), bools(&c["b"]))
        };
        let res = mcnemar_exact(&a, &b).unwrap();
        assert_eq!(res.b01, c["b01"].as_u64().unwrap(), "{}", name(c));
        assert_eq!(res.b10, c["b10"].as_u64().unwrap(), "{}", name(c));
        assert_eq!(
            res.statistic,
            c["statistic"].as_u64().unwrap(),
            "{}",
            name(c)
        );
        assert_rel(res.p_value, c["p_value"].as_f64().unwrap(), 1e-9, name(c));
    }
}

#[test]
fn wilcoxon_matches_scipy() {
    let r = reference();
    for c in cases(&r, "wilcoxon") {
        let res = wilcoxon_signed_rank(&f64s(&c["a"]), &f64s(&c["b"])).unwrap();
        let want_method = match c["method"].as_str().unwrap() {
            "exact" => WilcoxonMethod::Exact,
            "permutation" => WilcoxonMethod::Permutation,
            _ => WilcoxonMethod::Normal,
        };
        assert_eq!(res.method, want_method, "{}", name(c));
        assert_eq!(
            res.statistic,
            c["statistic"].as_f64().unwrap(),
            "{}",
            name(c)
        );
        let tol = if want_method == WilcoxonMethod::Normal {
            1e-6
        } else {
            1e-9
        };
        assert_rel(res.p_value, c["p_value"].as_f64().unwrap(), tol, name(c));
        // The test is symmetric in A and B.
        let swapped = wilcoxon_signed_rank(&f64s(&c["b"]), &f64s(&c["a"])).unwrap();
        assert_eq!(swapped.statistic, res.statistic);
        assert_rel(swapped.p_value, res.p_value, 1e-12, name(c));
        assert_eq!(swapped.w_plus, res.w_minus);
    }
}

#[test]
fn holm_matches_statsmodels() {
    let r = reference();
    for c in cases(&r, "holm") {
        let got = holm(&f64s(&c["p_values"])).unwrap();
        let want = f64s(&c["adjusted"]);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_abs(*g, *w, 1e-12, name(c));
        }
    }
}

#[test]
fn bootstrap_matches_scipy_within_mc_tolerance() {
    let r = reference();
    for c in cases(&r, "bootstrap") {
        let seed = 12_345;
        let res = match c["kind"].as_str().unwrap() {
            "accuracy_delta" => {
                let (a, b) = (bools(&c["a"]), bools(&c["b"]));
                let rel = relative_improvement_ci(&a, &b, RESAMPLES, seed).unwrap();
                assert_abs(
                    rel.estimate,
                    c["rel_estimate"].as_f64().unwrap(),
                    1e-12,
                    name(c),
                );
                assert_abs(
                    rel.low,
                    c["rel_low"].as_f64().unwrap(),
                    2.0 * MC_TOL,
                    name(c),
                );
                assert_abs(
                    rel.high,
                    c["rel_high"].as_f64().unwrap(),
                    2.0 * MC_TOL,
                    name(c),
                );
                assert_eq!(rel.skipped, 0);
                accuracy_delta_ci(&a, &b, RESAMPLES, seed).unwrap()
            }
            "macro_f1_delta" => macro_f1_delta_ci(
                &usizes(&c["labels"]),
                &opt_usizes(&c["pred_a"]),
                &opt_usizes(&c["pred_b"]),
                4,
                RESAMPLES,
                seed,
            )
            .unwrap(),
            other => panic!("unknown bootstrap kind {other}"),
        };
        assert_abs(
            res.estimate,
            c["estimate"].as_f64().unwrap(),
            1e-12,
            name(c),
        );
        assert_abs(res.low, c["low"].as_f64().unwrap(), MC_TOL, name(c));
        assert_abs(res.high, c["high"].as_f64().unwrap(), MC_TOL, name(c));
        assert_eq!(res.resamples, RESAMPLES);
        assert_eq!(res.seed, seed);
        assert!(res.low <= res.high);
    }
}

#[test]
fn classification_matches_sklearn() {
    let r = reference();
    for c in cases(&r, "classification") {
        let n_classes = c["n_classes"].as_u64().unwrap() as usize;
        let labels = usizes(&c["labels"]);
        let preds = opt_usizes(&c["preds"]);
        let cm = confusion_matrix(&labels, &preds, n_classes).unwrap();
        let want_cm: Vec<Vec<u64>> = c["confusion"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(cm.counts, want_cm, "{}", name(c));
        assert_eq!(cm.unparseable, c["unparseable"].as_u64().unwrap());
        let prf = per_class_prf(&labels, &preds, n_classes).unwrap();
        let (p, rc, f1) = (f64s(&c["precision"]), f64s(&c["recall"]), f64s(&c["f1"]));
        let support = c["support"].as_array().unwrap();
        for k in 0..n_classes {
            assert_abs(prf[k].precision, p[k], 1e-12, name(c));
            assert_abs(prf[k].recall, rc[k], 1e-12, name(c));
            assert_abs(prf[k].f1, f1[k], 1e-12, name(c));
            assert_eq!(prf[k].support, support[k].as_u64().unwrap());
        }
        let mf1 = macro_f1(&labels, &preds, n_classes).unwrap();
        assert_abs(mf1, c["macro_f1"].as_f64().unwrap(), 1e-12, name(c));
        assert_abs(cm.macro_f1(), mf1, 0.0, name(c));
        let acc = accuracy(&labels, &preds).unwrap();
        assert_abs(acc, c["accuracy"].as_f64().unwrap(), 1e-12, name(c));
        assert_abs(cm.accuracy(), acc, 1e-15, name(c));
    }
}

#[test]
fn stderr_matches_scipy_sem() {
    let r = reference();
    for c in cases(&r, "stderr") {
        let got = mean_stderr(&f64s(&c["values"])).unwrap();
        assert_rel(got, c["stderr"].as_f64().unwrap(), 1e-12, name(c));
        // The bootstrap standard error estimates the same quantity (up to ddof and MC noise).
        let boot = bootstrap_stderr(&f64s(&c["values"]), 4000, 7).unwrap();
        assert!(
            (boot / got - 1.0).abs() < 0.1,
            "{}: {boot} vs {got}",
            name(c)
        );
    }
}

// ---------------------------------------------------------------- properties ------------

/// Small deterministic generator for property-test inputs (SplitMix64).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

#[test]
fn holm_is_monotone_capped_and_dominates_raw() {
    let mut g = Mix(1);
    for len in 1..40 {
        let p: Vec<f64> = (0..len)
            .map(|_| {
                let u = g.unit();
                if g.unit() < 0.2 {
                    (u * 10.0).round() / 10.0 // force ties
                } else {
                    u * u
                }
            })
            .collect();
        let adj = holm(&p).unwrap();
        let mut order: Vec<usize> = (0..len).collect();
        order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
        for w in order.windows(2) {
            assert!(adj[w[0]] <= adj[w[1]], "not monotone: {p:?} -> {adj:?}");
        }
        for (raw, a) in p.iter().zip(&adj) {
            assert!(*a >= *raw && *a <= 1.0);
        }
    }
    assert_eq!(holm(&[]).unwrap(), Vec::<f64>::new());
    assert!(holm(&[0.5, f64::NAN]).is_err());
    assert!(holm(&[1.5]).is_err());
}

#[test]
fn mcnemar_is_symmetric_and_bounded() {
    let mut g = Mix(2);
    for n in [1, 5, 37, 400] {
        let a: Vec<bool> = (0..n).map(|_| g.unit() < 0.6).collect();
        let b: Vec<bool> = (0..n).map(|_| g.unit() < 0.7).collect();
        let ab = mcnemar_exact(&a, &b).unwrap();
        let ba = mcnemar_exact(&b, &a).unwrap();
        assert_eq!(ab.b01, ba.b10);
        assert_eq!(ab.b10, ba.b01);
        assert_eq!(ab.p_value, ba.p_value);
        assert!((0.0..=1.0).contains(&ab.p_value));
    }
    let same = vec![true, false, true];
    assert_eq!(mcnemar_exact(&same, &same).unwrap().p_value, 1.0);
}

#[test]
fn bootstrap_is_deterministic_per_seed() {
    let mut g = Mix(3);
    let a: Vec<bool> = (0..300).map(|_| g.unit() < 0.6).collect();
    let b: Vec<bool> = (0..300).map(|_| g.unit() < 0.65).collect();
    let x = accuracy_delta_ci(&a, &b, 2000, 42).unwrap();
    let y = accuracy_delta_ci(&a, &b, 2000, 42).unwrap();
    assert_eq!(x, y);
    // A different seed draws different resamples (continuous statistic: bounds differ).
    let v: Vec<f64> = (0..300).map(|_| g.unit()).collect();
    let mean = |idx: &[usize]| idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64;
    let s42 = paired_bootstrap_ci(v.len(), 500, 42, 0.9, mean).unwrap();
    let s42b = paired_bootstrap_ci(v.len(), 500, 42, 0.9, mean).unwrap();
    let s43 = paired_bootstrap_ci(v.len(), 500, 43, 0.9, mean).unwrap();
    assert_eq!(s42, s42b);
    assert_ne!(s42.low, s43.low);
    assert!(x.low <= x.estimate && x.estimate <= x.high);
    // The generic form agrees with the convenience wrapper for the same seed.
    let n = a.len() as f64;
    let generic = paired_bootstrap_ci(a.len(), 2000, 42, 0.95, |idx| {
        idx.iter()
            .map(|&i| f64::from(u8::from(b[i])) - f64::from(u8::from(a[i])))
            .sum::<f64>()
            / n
    })
    .unwrap();
    assert_abs(generic.low, x.low, 1e-12, "generic low");
    assert_abs(generic.high, x.high, 1e-12, "generic high");
}

#[test]
fn relative_improvement_skips_undefined_resamples() {
    // A is right on a single item out of 20: many resamples miss it (acc_A = 0).
    let mut a = vec![false; 20];
    a[0] = true;
    let b = vec![true; 20];
    let ci = relative_improvement_ci(&a, &b, 1000, 9).unwrap();
    assert!(ci.skipped > 0 && ci.skipped < 1000);
    assert_eq!(ci.estimate, 19.0);
    let never = vec![false; 20];
    assert!(matches!(
        relative_improvement_ci(&never, &b, 100, 9),
        Err(StatsError::Undefined(_))
    ));
}

#[test]
fn percentile_matches_numpy_linear_rule() {
    let v = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
    // numpy.percentile(v, [0, 2.5, 50, 97.5, 100]) = [1, 1, 3.5, 8.475, 9]
    for (q, want) in [
        (0.0, 1.0),
        (0.025, 1.0),
        (0.5, 3.5),
        (0.975, 8.475),
        (1.0, 9.0),
    ] {
        assert_abs(percentile_linear(&v, q).unwrap(), want, 1e-12, "percentile");
    }
    assert!(percentile_linear(&v, 1.5).is_err());
}

#[test]
fn errors_for_bad_input() {
    let mismatch = |e| matches!(e, StatsError::LengthMismatch { .. });
    let too_few = |e| matches!(e, StatsError::TooFew { .. });
    assert!(mismatch(
        mcnemar_exact(&[true], &[true, false]).unwrap_err()
    ));
    assert!(too_few(mcnemar_exact(&[], &[]).unwrap_err()));
    assert!(mismatch(
        wilcoxon_signed_rank(&[1.0], &[1.0, 2.0]).unwrap_err()
    ));
    assert!(too_few(wilcoxon_signed_rank(&[], &[]).unwrap_err()));
    assert!(matches!(
        wilcoxon_signed_rank(&[1.0, f64::NAN], &[1.0, 2.0]),
        Err(StatsError::NonFinite(_))
    ));
    assert!(mismatch(
        accuracy_delta_ci(&[true], &[], 10, 0).unwrap_err()
    ));
    assert!(too_few(accuracy_delta_ci(&[], &[], 10, 0).unwrap_err()));
    assert!(too_few(
        accuracy_delta_ci(&[true], &[true], 0, 0).unwrap_err()
    ));
    assert!(paired_bootstrap_ci(3, 10, 0, 1.0, |_| 0.0).is_err());
    assert!(mismatch(
        confusion_matrix(&[0, 1], &[Some(0)], 2).unwrap_err()
    ));
    assert!(matches!(
        confusion_matrix(&[0, 2], &[Some(0), Some(1)], 2),
        Err(StatsError::LabelOutOfRange { label: 2, .. })
    ));
    assert!(matches!(
        macro_f1(&[0, 1], &[Some(0), Some(5)], 2),
        Err(StatsError::LabelOutOfRange { label: 5, .. })
    ));
    assert!(confusion_matrix(&[0], &[Some(0)], 0).is_err());
    assert!(macro_f1_delta_ci(&[0, 1], &[Some(0)], &[Some(0), None], 2, 10, 0).is_err());
    assert!(too_few(mean_stderr(&[1.0]).unwrap_err()));
    assert!(accuracy(&[], &[]).is_err());
}

#[test]
fn wilcoxon_all_zero_differences() {
    let a = [1.0, 2.0, 3.0];
    let res = wilcoxon_signed_rank(&a, &a).unwrap();
    assert_eq!(res.statistic, 0.0);
    assert_eq!(res.p_value, 1.0);
    assert_eq!(res.n_zero, 3);
}

#[test]
fn verdict_rules() {
    assert_eq!(Verdict::decide(0.01, 0.02, DEFAULT_ALPHA), Verdict::BBetter);
    assert_eq!(Verdict::decide(0.01, -0.02, DEFAULT_ALPHA), Verdict::BWorse);
    assert_eq!(
        Verdict::decide(0.05, 0.02, DEFAULT_ALPHA),
        Verdict::NoSignificantDifference
    );
    assert_eq!(
        Verdict::decide(0.001, 0.0, DEFAULT_ALPHA),
        Verdict::NoSignificantDifference
    );
    assert_eq!(
        Verdict::decide(f64::NAN, 0.3, DEFAULT_ALPHA),
        Verdict::NoSignificantDifference
    );
}
