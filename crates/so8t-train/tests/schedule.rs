//! The schedules against `schedules` in the fixtures' `reference.json`.

mod common;

use common::*;
use so8t_train::schedule::{AlphaSchedule, PetSchedule, PHI_INV_SQ};

#[test]
fn alpha_sigmoid_matches_fixture() {
    for name in FIXTURES {
        let s = &reference(name)["schedules"];
        let total = s["T"].as_u64().unwrap();
        let a = &s["alpha_sigmoid"];
        let want = floats(&a["values"]);
        assert_eq!(want.len() as u64, total + 1, "{name}: t = 0..=T");
        // the fixture's own parameters …
        let sched = AlphaSchedule::Sigmoid {
            start: a["start"].as_f64().unwrap(),
            end: a["end"].as_f64().unwrap(),
            center: a["center"].as_f64().unwrap(),
            width: a["width"].as_f64().unwrap(),
        };
        // … are the defaults (up to serde_json's last-bit float parsing)
        assert!(
            (a["end"].as_f64().unwrap() - PHI_INV_SQ).abs() < 1e-15,
            "{name}"
        );
        let dflt = AlphaSchedule::default();
        assert!(
            matches!(sched, AlphaSchedule::Sigmoid { start, center, width, .. }
            if start == 1.0 && center == 0.5 && width == 0.125)
        );
        for (t, w) in want.iter().enumerate() {
            let got = sched.value(t as u64, total);
            assert!((got - w).abs() < 1e-12, "{name}: α({t}) = {got}, want {w}");
            let got = dflt.value(t as u64, total);
            assert!(
                (got - w).abs() < 1e-12,
                "{name}: default α({t}) = {got}, want {w}"
            );
        }
    }
}

#[test]
fn pet_lambda_matches_fixture() {
    for name in FIXTURES {
        let s = &reference(name)["schedules"];
        let total = s["T"].as_u64().unwrap();
        let want = floats(&s["pet_lambda"]["values"]);
        assert_eq!(want.len() as u64, total, "{name}: t = 0..T");
        let p = PetSchedule::default();
        for (t, w) in want.iter().enumerate() {
            assert_eq!(p.lambda(t as u64, total), *w, "{name}: λ({t})");
        }
    }
}
