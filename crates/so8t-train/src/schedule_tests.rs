use super::*;

fn field_of(e: Error) -> String {
    match e {
        Error::Invalid { field, .. } => field,
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

#[test]
fn phi_inv_sq_is_one_over_phi_squared() {
    let phi = (1.0 + 5f64.sqrt()) / 2.0;
    assert!((PHI_INV_SQ - 1.0 / (phi * phi)).abs() < 1e-15);
    assert!((PHI_INV_SQ - (3.0 - 5f64.sqrt()) / 2.0).abs() < 1e-15);
}

#[test]
fn sigmoid_default_shape() {
    let s = AlphaSchedule::default();
    s.validate().unwrap();
    // midpoint exactly halfway, monotone decreasing, symmetric around the centre
    let mid = s.value(50, 100);
    assert!((mid - (1.0 + PHI_INV_SQ) / 2.0).abs() < 1e-15);
    for t in 0..100 {
        assert!(s.value(t + 1, 100) < s.value(t, 100));
    }
    let (a, b) = (s.value(30, 100), s.value(70, 100));
    assert!((a - mid - (mid - b)).abs() < 1e-12);
    assert_eq!(s.value(3, 0), PHI_INV_SQ);
}

#[test]
fn linear_constant_learned_values() {
    let l = AlphaSchedule::Linear {
        start: 1.0,
        end: 0.5,
    };
    assert_eq!(l.value(0, 10), 1.0);
    assert_eq!(l.value(5, 10), 0.75);
    assert_eq!(l.value(10, 10), 0.5);
    assert_eq!(l.value(20, 10), 0.5);
    assert_eq!(l.value(1, 0), 0.5);
    let c = AlphaSchedule::Constant { value: 0.75 };
    assert_eq!(c.value(7, 10), 0.75);
    assert_eq!(c.pull_penalty(0.1), 0.0);
    assert!(!c.is_learned() && c.init_logit().is_none());

    let g = AlphaSchedule::Learned {
        init: 0.75,
        target: 0.5,
        pull: 2.0,
    };
    assert!(g.is_learned());
    assert_eq!(g.value(3, 10), 0.75);
    assert!((g.pull_penalty(0.75) - 2.0 * 0.0625).abs() < 1e-15);
    let a = g.init_logit().unwrap();
    assert!((sigmoid(a) - 0.75).abs() < 1e-15);
}

#[test]
fn alpha_serde_tags_and_defaults() {
    let s: AlphaSchedule = serde_json::from_str(r#"{"schedule":"sigmoid"}"#).unwrap();
    assert_eq!(s, AlphaSchedule::default());
    let s: AlphaSchedule = serde_json::from_str(r#"{"schedule":"sigmoid","width":0.25}"#).unwrap();
    assert!(matches!(s, AlphaSchedule::Sigmoid { width, .. } if width == 0.25));
    let g: AlphaSchedule = serde_json::from_str(r#"{"schedule":"learned","init":0.9}"#).unwrap();
    assert_eq!(
        g,
        AlphaSchedule::Learned {
            init: 0.9,
            target: PHI_INV_SQ,
            pull: 0.0
        }
    );
    for s in [
        AlphaSchedule::default(),
        AlphaSchedule::Linear {
            start: 0.9,
            end: 0.1,
        },
        AlphaSchedule::Constant { value: 0.3 },
        g,
    ] {
        // serde_json (without its `float_roundtrip` feature) may read a float back 1 ulp off,
        // so compare the curves rather than the bits.
        let text = serde_json::to_string(&s).unwrap();
        let back: AlphaSchedule = serde_json::from_str(&text).unwrap();
        assert_eq!(std::mem::discriminant(&back), std::mem::discriminant(&s));
        for t in [0, 10, 50, 90, 100] {
            assert!(
                (back.value(t, 100) - s.value(t, 100)).abs() < 1e-15,
                "{text}"
            );
        }
        assert!((back.pull_penalty(0.2) - s.pull_penalty(0.2)).abs() < 1e-15);
    }
    let text = serde_json::to_string(&AlphaSchedule::Constant { value: 0.5 }).unwrap();
    assert_eq!(text, r#"{"schedule":"constant","value":0.5}"#);
    assert!(serde_json::from_str::<AlphaSchedule>(r#"{"schedule":"cosine"}"#).is_err());
    assert!(serde_json::from_str::<AlphaSchedule>(r#"{"schedule":"constant"}"#).is_err());
    assert!(
        serde_json::from_str::<AlphaSchedule>(r#"{"schedule":"sigmoid","widht":0.2}"#).is_err()
    );
}

#[test]
fn alpha_validation_names_the_field() {
    let bad = |s: AlphaSchedule| field_of(s.validate().unwrap_err());
    let sig = |start, end, center, width| AlphaSchedule::Sigmoid {
        start,
        end,
        center,
        width,
    };
    assert_eq!(bad(sig(1.0, PHI_INV_SQ, 0.5, 0.0)), "alpha.width");
    assert_eq!(bad(sig(1.0, PHI_INV_SQ, 0.5, -0.1)), "alpha.width");
    assert_eq!(bad(sig(1.0, PHI_INV_SQ, 0.5, f64::NAN)), "alpha.width");
    assert_eq!(bad(sig(1.5, PHI_INV_SQ, 0.5, 0.1)), "alpha.start");
    assert_eq!(bad(sig(1.0, -0.1, 0.5, 0.1)), "alpha.end");
    assert_eq!(bad(sig(1.0, 0.3, f64::INFINITY, 0.1)), "alpha.center");
    assert_eq!(
        bad(AlphaSchedule::Linear {
            start: f64::NAN,
            end: 0.5
        }),
        "alpha.start"
    );
    assert_eq!(bad(AlphaSchedule::Constant { value: 2.0 }), "alpha.value");
    let learned = |init, target, pull| AlphaSchedule::Learned { init, target, pull };
    assert_eq!(bad(learned(1.0, 0.5, 0.0)), "alpha.init");
    assert_eq!(bad(learned(0.0, 0.5, 0.0)), "alpha.init");
    assert_eq!(bad(learned(0.5, 1.5, 0.0)), "alpha.target");
    assert_eq!(bad(learned(0.5, 0.5, -1.0)), "alpha.pull");
    learned(0.5, 0.5, 1.0).validate().unwrap();
    let msg = sig(1.0, 0.3, 0.5, 0.0).validate().unwrap_err().to_string();
    assert!(msg.contains("alpha.width") && msg.contains("> 0"), "{msg}");
}

#[test]
fn pet_phase_boundaries_are_exact() {
    let p = PetSchedule::default();
    p.validate().unwrap();
    assert_eq!(p.phase(0, 100), PetPhase::Exploration);
    assert_eq!(p.phase(19, 100), PetPhase::Exploration);
    assert_eq!(p.phase(20, 100), PetPhase::Transition);
    assert_eq!(p.phase(59, 100), PetPhase::Transition);
    assert_eq!(p.phase(60, 100), PetPhase::Stabilization);
    assert_eq!(p.phase(99, 100), PetPhase::Stabilization);
    assert_eq!(p.phase(150, 100), PetPhase::Stabilization);
    assert_eq!(p.phase(0, 0), PetPhase::Stabilization);
    // boundaries that are not exact in binary: k/T lands on the decimal boundary for many T
    for total in 1..=1000u64 {
        for step in 0..total {
            let ten = 10 * step; // step/T < 0.2 ⇔ 10·step < 2·T, exactly
            let want = if ten < 2 * total {
                PetPhase::Exploration
            } else if ten < 6 * total {
                PetPhase::Transition
            } else {
                PetPhase::Stabilization
            };
            assert_eq!(p.phase(step, total), want, "step {step} of {total}");
        }
    }
    assert_eq!(p.lambda(0, 10), 0.01);
    assert_eq!(p.lambda(2, 10), 0.05);
    assert_eq!(p.lambda(6, 10), 0.1);
}

#[test]
fn pet_serde_and_validation() {
    let p: PetSchedule = serde_json::from_str("{}").unwrap();
    assert_eq!(p, PetSchedule::default());
    assert_eq!(
        serde_json::to_string(&p).unwrap(),
        r#"{"lambda_exploration":0.01,"lambda_transition":0.05,"lambda_stabilization":0.1,"transition_start":0.2,"stabilization_start":0.6}"#
    );
    let p: PetSchedule =
        serde_json::from_str(r#"{"huber_delta":0.5,"lambda_transition":0.2}"#).unwrap();
    assert_eq!(p.huber_delta, Some(0.5));
    assert_eq!(p.lambda(30, 100), 0.2);
    assert_eq!(
        serde_json::to_string(&PetPhase::Stabilization).unwrap(),
        r#""stabilization""#
    );
    assert_eq!(PetPhase::Transition.to_string(), "transition");
    assert!(serde_json::from_str::<PetSchedule>(r#"{"lambda":1}"#).is_err());

    let bad = |f: &dyn Fn(&mut PetSchedule)| {
        let mut p = PetSchedule::default();
        f(&mut p);
        field_of(p.validate().unwrap_err())
    };
    assert_eq!(
        bad(&|p| p.lambda_exploration = -0.1),
        "pet.lambda_exploration"
    );
    assert_eq!(
        bad(&|p| p.lambda_transition = f64::NAN),
        "pet.lambda_transition"
    );
    assert_eq!(
        bad(&|p| p.lambda_stabilization = f64::INFINITY),
        "pet.lambda_stabilization"
    );
    assert_eq!(bad(&|p| p.transition_start = -0.1), "pet.transition_start");
    assert_eq!(
        bad(&|p| p.stabilization_start = 1.1),
        "pet.stabilization_start"
    );
    assert_eq!(
        bad(&|p| p.transition_start = 0.7),
        "pet.stabilization_start"
    );
    assert_eq!(bad(&|p| p.huber_delta = Some(0.0)), "pet.huber_delta");
    // equal boundaries are allowed: no transition phase
    let p = PetSchedule {
        transition_start: 0.5,
        stabilization_start: 0.5,
        ..Default::default()
    };
    p.validate().unwrap();
    assert_eq!(p.phase(49, 100), PetPhase::Exploration);
    assert_eq!(p.phase(50, 100), PetPhase::Stabilization);
}
