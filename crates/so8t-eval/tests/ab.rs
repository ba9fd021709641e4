//! The A/B comparison: pairing by item id, the per-task statistics and verdicts, Holm across
//! tasks, and errors for results of different items.

use std::collections::BTreeMap;

use so8t_eval::ab::{compare, AbSettings};
use so8t_eval::score::ItemResult;
use so8t_eval::stats::{holm, mcnemar_exact, Verdict};

fn item(task: &str, id: usize, correct: bool, latency: f64) -> ItemResult {
    ItemResult {
        task: task.into(),
        id: format!("q{id}"),
        kind: "mmlu".into(),
        correct,
        correct_alt: None,
        gold: Some(0),
        pred: Some(if correct { 0 } else { 1 }),
        loglikelihoods: vec![-1.0, -2.0],
        greedy: vec![true, false],
        output: None,
        extracted: None,
        latency_s: latency,
        tokens: 2,
        error: None,
    }
}

fn class_item(id: usize, gold: usize, pred: Option<usize>) -> ItemResult {
    ItemResult {
        task: "four_class".into(),
        id: format!("c{id}"),
        kind: "four_class".into(),
        correct: pred == Some(gold),
        correct_alt: None,
        gold: Some(gold),
        pred,
        loglikelihoods: vec![],
        greedy: vec![],
        output: Some("…".into()),
        extracted: None,
        latency_s: 1.0 + id as f64 * 0.01,
        tokens: 10,
        error: None,
    }
}

fn settings() -> AbSettings {
    AbSettings {
        resamples: 2000,
        seed: 7,
        alpha: 0.05,
    }
}

#[test]
fn b_better_on_one_task_no_difference_on_another() {
    let n = 200;
    // Task "big": A right on 50%, B right on 80% (B fixes 70 of A's errors, breaks 10).
    let a_big: Vec<ItemResult> = (0..n).map(|i| item("big", i, i % 2 == 0, 1.0)).collect();
    let b_big: Vec<ItemResult> = (0..n)
        .map(|i| {
            let c = if i % 2 == 0 {
                i % 20 != 0
            } else {
                i % 10 != 1 && i % 10 != 3 && i % 10 != 5 || i < 140
            };
            item("big", i, c, 0.5)
        })
        .rev() // B's file lists the items in another order: pairing is by id
        .collect();
    // Task "same": identical correctness.
    let a_same: Vec<ItemResult> = (0..50).map(|i| item("same", i, i % 3 == 0, 1.0)).collect();
    let b_same = a_same.clone();
    let a = BTreeMap::from([
        ("big".to_string(), a_big.clone()),
        ("same".to_string(), a_same),
    ]);
    let b = BTreeMap::from([
        ("big".to_string(), b_big.clone()),
        ("same".to_string(), b_same),
    ]);
    let r = compare(&a, &b, settings()).unwrap();
    assert_eq!(r.len(), 2);
    let big = &r[0];
    assert_eq!(big.task, "big");
    let ca: Vec<bool> = a_big.iter().map(|x| x.correct).collect();
    let mut b_sorted = b_big.clone();
    b_sorted.reverse();
    let cb: Vec<bool> = b_sorted.iter().map(|x| x.correct).collect();
    let mc = mcnemar_exact(&ca, &cb).unwrap();
    assert_eq!(big.mcnemar.b01, mc.b01);
    assert_eq!(big.mcnemar.b10, mc.b10);
    let acc = |v: &[bool]| v.iter().filter(|&&c| c).count() as f64 / v.len() as f64;
    assert!((big.acc_delta.estimate - (acc(&cb) - acc(&ca))).abs() < 1e-12);
    assert!(
        big.acc_delta.low < big.acc_delta.estimate && big.acc_delta.estimate < big.acc_delta.high
    );
    let rel = big.relative.unwrap();
    assert!((rel.estimate - (acc(&cb) - acc(&ca)) / acc(&ca)).abs() < 1e-12);
    assert_eq!(big.verdict, Verdict::BBetter);
    // Latency: B is faster on every item.
    assert!(big.latency.median_b < big.latency.median_a);
    assert!(big.latency.wilcoxon.unwrap().p_value < 1e-6);
    let same = &r[1];
    assert_eq!(same.mcnemar.p_value, 1.0);
    assert_eq!(same.verdict, Verdict::NoSignificantDifference);
    // Holm across the two tasks.
    let adj = holm(&[big.mcnemar.p_value, same.mcnemar.p_value]).unwrap();
    assert_eq!((big.p_holm, same.p_holm), (adj[0], adj[1]));
    assert!(big.classes.is_none());
}

#[test]
fn four_class_gets_macro_f1_and_confusion_matrices() {
    let gold = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3];
    let a: Vec<ItemResult> = gold
        .iter()
        .enumerate()
        .map(|(i, &g)| class_item(i, g, if i % 3 == 0 { None } else { Some(g) }))
        .collect();
    let b: Vec<ItemResult> = gold
        .iter()
        .enumerate()
        .map(|(i, &g)| class_item(i, g, Some(g)))
        .collect();
    let r = compare(
        &BTreeMap::from([("four_class".to_string(), a)]),
        &BTreeMap::from([("four_class".to_string(), b)]),
        settings(),
    )
    .unwrap();
    let c = r[0].classes.as_ref().expect("four-class comparison");
    assert_eq!(c.macro_f1_b, 1.0);
    assert!(c.macro_f1_a < 1.0);
    assert_eq!(c.confusion_a.unparseable, 4);
    assert_eq!(c.confusion_b.unparseable, 0);
    assert!((c.macro_f1_delta.estimate - (c.macro_f1_b - c.macro_f1_a)).abs() < 1e-12);
    assert_eq!(c.per_class_b.len(), 4);
}

#[test]
fn results_of_different_items_are_refused() {
    let a: Vec<ItemResult> = (0..10).map(|i| item("t", i, true, 1.0)).collect();
    let b: Vec<ItemResult> = (3..13).map(|i| item("t", i, true, 1.0)).collect();
    let e = compare(
        &BTreeMap::from([("t".to_string(), a.clone())]),
        &BTreeMap::from([("t".to_string(), b)]),
        settings(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("task t: A and B scored different items"), "{e}");
    assert!(e.contains("only in A: [\"q0\", \"q1\", \"q2\"]"), "{e}");
    assert!(e.contains("only in B: [\"q10\", \"q11\", \"q12\"]"), "{e}");
    let e = compare(
        &BTreeMap::from([("t".to_string(), a.clone())]),
        &BTreeMap::from([("u".to_string(), a)]),
        settings(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("share no task"), "{e}");
}

#[test]
fn a_choice_task_whose_items_all_failed_is_not_taken_for_the_four_class_task() {
    let failed = |i| {
        let mut r = item("mmlu", i, false, 0.1);
        r.loglikelihoods.clear();
        r.greedy.clear();
        r.error = Some("HTTP 500".into());
        r
    };
    let a: Vec<ItemResult> = (0..6).map(failed).collect();
    let b: Vec<ItemResult> = (0..6).map(|i| item("mmlu", i, true, 0.1)).collect();
    let r = compare(
        &BTreeMap::from([("mmlu".to_string(), a)]),
        &BTreeMap::from([("mmlu".to_string(), b)]),
        settings(),
    )
    .unwrap();
    assert!(r[0].classes.is_none());
    assert_eq!(r[0].errors, (6, 0));
}
