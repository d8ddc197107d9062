//! `scheduler_config.json` parsing without a GPU: the class-name table round-trips, checked
//! integer fields, and inputs that used to truncate, abort or panic are errors naming the field
//! and the file.

use diffuse::schedule::config::{scheduler_names, SchedulerConfig, SchedulerKind, CLASSES};
use diffuse::solvers::{self, program::Op};
use serde_json::json;

fn parse(v: serde_json::Value) -> Result<SchedulerConfig, String> {
    SchedulerConfig::from_json(&v, "sched.json").map_err(|e| e.to_string())
}

#[test]
fn every_class_name_round_trips_and_every_default_builds() {
    for (i, row) in CLASSES.iter().enumerate() {
        assert_eq!(
            row.kind as usize, i,
            "{}: row out of kind order",
            row.class_name
        );
        assert_eq!(row.kind.class_name(), row.class_name);
        assert_eq!(SchedulerKind::from_class(row.class_name), Some(row.kind));
        let cfg = parse(json!({ "_class_name": row.class_name })).unwrap();
        assert_eq!(cfg.kind(), row.kind, "{}", row.class_name);
        assert_eq!(SchedulerConfig::default_for(row.kind), cfg);
        // EVODiff's official multistep loop asserts steps ≥ order (2), and PNDM's default
        // Runge–Kutta start takes the last 4 timesteps: fewer steps are refused.
        let fewest = match row.kind {
            SchedulerKind::EvoDiff => 2,
            SchedulerKind::Pndm => 4,
            _ => 1,
        };
        if fewest > 1 {
            let e = solvers::build(&cfg, fewest - 1).unwrap_err().to_string();
            assert!(e.contains("steps"), "{e}");
        }
        for steps in [fewest, 10] {
            let p = solvers::build(&cfg, steps)
                .unwrap_or_else(|e| panic!("{} with {steps} steps: {e}", row.class_name));
            assert_eq!(p.steps.len(), steps, "{}", row.class_name);
            assert!(p.nfe >= steps, "{}: {} NFE", row.class_name, p.nfe);
        }
        assert!(
            !row.names.is_empty(),
            "{} has no --scheduler name",
            row.class_name
        );
    }
}

#[test]
fn every_scheduler_name_selects_its_class_and_keeps_the_base_training_schedule() {
    let names: Vec<&str> = scheduler_names().collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        names.len(),
        "duplicate --scheduler names: {names:?}"
    );
    let base = parse(json!({
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": 500,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "prediction_type": "v_prediction",
        "steps_offset": 1,
    }))
    .unwrap();
    for row in CLASSES {
        for (name, _) in row.names {
            let cfg = SchedulerConfig::named(name, None).unwrap();
            assert_eq!(cfg.kind(), row.kind, "{name}");
            solvers::build(&cfg, 10).unwrap_or_else(|e| panic!("{name}: {e}"));
            let on_base = SchedulerConfig::named(name, Some(&base)).unwrap();
            assert_eq!(on_base.kind(), row.kind, "{name}");
            assert_eq!(on_base.train, base.train, "{name}");
            assert_eq!(
                on_base.solver, cfg.solver,
                "{name}: options changed with the base"
            );
        }
    }
    let e = SchedulerConfig::named("kdpm2", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown scheduler `kdpm2`") && e.contains("score-sde-subvp"),
        "{e}"
    );
    let e = parse(json!({"_class_name": "KDPM2DiscreteScheduler"})).unwrap_err();
    // The error lists every supported class.
    for row in CLASSES {
        assert!(e.contains(row.class_name), "{e}");
    }
}

#[test]
fn integer_fields_are_checked_not_truncated() {
    let cases = [
        ("DDIMScheduler", "num_train_timesteps", json!(999.5)),
        ("DDIMScheduler", "num_train_timesteps", json!(-1000)),
        ("DDIMScheduler", "num_train_timesteps", json!("1000")),
        ("DDIMScheduler", "num_train_timesteps", json!(1)),
        // 10^12 once aborted allocating ᾱ; 10^30 once saturated to usize::MAX.
        (
            "DDIMScheduler",
            "num_train_timesteps",
            json!(1_000_000_000_000u64),
        ),
        ("DDIMScheduler", "num_train_timesteps", json!(1e30)),
        ("DDPMScheduler", "steps_offset", json!(1000)),
        ("DDPMScheduler", "steps_offset", json!(0.5)),
        ("DPMSolverMultistepScheduler", "solver_order", json!(2.5)),
        ("DPMSolverMultistepScheduler", "solver_order", json!(4)),
        ("DPMSolverMultistepScheduler", "solver_order", json!(0)),
        ("UniPCMultistepScheduler", "solver_order", json!(-2)),
        (
            "UniPCMultistepScheduler",
            "disable_corrector",
            json!([1, 2.5]),
        ),
        ("UniPCMultistepScheduler", "disable_corrector", json!([-1])), // names -1
        ("UniPCMultistepScheduler", "disable_corrector", json!(3)),
        ("ScoreSdeVpScheduler", "correct_steps", json!(1.5)),
        ("ScoreSdeVeScheduler", "correct_steps", json!(1_000_000)),
    ];
    for (class, field, value) in cases {
        let e = parse(json!({ "_class_name": class, field: value.clone() }))
            .err()
            .unwrap_or_else(|| panic!("{class} {field} = {value} was accepted"));
        // The error shows the offending value (a list's offending element).
        let shown = match &value {
            serde_json::Value::Array(a) => a.last().unwrap().to_string(),
            v => v.to_string(),
        };
        assert!(
            e.contains(field) && e.contains("sched.json") && e.contains(&shown),
            "{class} {field} = {value}: {e}"
        );
    }
    // Whole numbers written as floats are read exactly; the bounds themselves are accepted.
    let c = parse(json!({"_class_name": "DDIMScheduler", "num_train_timesteps": 1000.0})).unwrap();
    assert_eq!(c.train.num_train_timesteps, 1000);
    let c =
        parse(json!({"_class_name": "DDIMScheduler", "num_train_timesteps": 2, "steps_offset": 1}))
            .unwrap();
    assert_eq!((c.train.num_train_timesteps, c.train.steps_offset), (2, 1));
}

#[test]
fn inputs_that_used_to_panic_are_errors() {
    // 1000 leading steps with steps_offset 1 reach timestep 1000 of a 1000-step schedule.
    let c = parse(json!({"_class_name": "DDIMScheduler", "steps_offset": 1})).unwrap();
    let e = solvers::build(&c, 1000).unwrap_err().to_string();
    assert!(e.contains("steps_offset") && e.contains("1000"), "{e}");
    solvers::build(&c, 999).unwrap();
    // Heun has no final σ but zero (its last corrector would need a network time past the grid).
    let e =
        parse(json!({"_class_name": "HeunDiscreteScheduler", "final_sigmas_type": "sigma_min"}))
            .unwrap_err();
    assert!(
        e.contains("final_sigmas_type") && e.contains("sigma_min"),
        "{e}"
    );
}

#[test]
fn score_sde_vp_time_input_follows_the_training_schedule() {
    // The VP network's time input is t·(T − 1); the first step is at t = 1.
    for (t_train, want) in [(1000, 999.0), (500, 499.0)] {
        let base =
            parse(json!({"_class_name": "DDPMScheduler", "num_train_timesteps": t_train})).unwrap();
        let cfg = SchedulerConfig::named("score-sde-vp", Some(&base)).unwrap();
        let p = solvers::build(&cfg, 4).unwrap();
        let first = p.steps[0].iter().find_map(|op| match op {
            Op::Model(t) => Some(t.t),
            _ => None,
        });
        assert_eq!(first, Some(want), "T = {t_train}");
    }
}

#[test]
fn stable_diffusion_pndm_config_parses_and_plms_lays_out_diffusers_timesteps() {
    use diffuse::schedule::config::SolverConfig;
    use diffuse::schedule::options::PndmConfig;
    use diffuse::schedule::Spacing;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // The SD-1.x-shaped golden pipeline's scheduler (diffusers' own file, trained_betas null).
    let cfg = SchedulerConfig::from_file(
        &dir.join("tests/golden/sd/sd1-tiny/scheduler/scheduler_config.json"),
    )
    .unwrap();
    assert_eq!(
        cfg.solver,
        SolverConfig::Pndm(PndmConfig {
            spacing: Spacing::Leading,
            skip_prk_steps: true,
            set_alpha_to_one: false,
        })
    );
    assert_eq!(cfg.train.steps_offset, 1);
    // `--scheduler plms` is that setting; `pndm` is the class defaults (Runge–Kutta start).
    let plms = SchedulerConfig::named("plms", Some(&cfg)).unwrap();
    assert_eq!(plms, cfg);
    let p = solvers::build(&cfg, 10).unwrap();
    assert_eq!((p.steps.len(), p.nfe), (10, 11));
    let times: Vec<f64> = p
        .steps
        .iter()
        .flatten()
        .filter_map(|op| match op {
            Op::Model(t) => Some(t.t),
            _ => None,
        })
        .collect();
    // leading: 0, 100, …, 900 + steps_offset, the second timestep evaluated twice.
    let mut want: Vec<f64> = (0..10).rev().map(|i| (i * 100 + 1) as f64).collect();
    want.insert(2, 801.0);
    assert_eq!(times, want);
    let pndm = SchedulerConfig::named("pndm", Some(&cfg)).unwrap();
    let p = solvers::build(&pndm, 10).unwrap();
    // Three Runge–Kutta steps of four evaluations, then one per step.
    assert_eq!((p.steps.len(), p.nfe), (10, 12 + 7));
}

#[test]
fn pndm_and_lms_refuse_what_diffusers_refuses() {
    // diffusers' PNDM takes ε and v only, LMS ε, v and x0: a ValueError there, named here.
    for (class, pred) in [
        ("PNDMScheduler", "sample"),
        ("PNDMScheduler", "flow_prediction"),
        ("LMSDiscreteScheduler", "flow_prediction"),
        ("LMSDiscreteScheduler", "score"),
    ] {
        let e = parse(json!({"_class_name": class, "prediction_type": pred})).unwrap_err();
        assert!(
            e.contains("prediction_type") && e.contains(pred) && e.contains(class),
            "{class} {pred}: {e}"
        );
    }
    // `--scheduler plms` on a folder whose model predicts x0: refused when the program is built.
    let base = parse(json!({"_class_name": "DDIMScheduler", "prediction_type": "sample"})).unwrap();
    for name in ["plms", "pndm"] {
        let cfg = SchedulerConfig::named(name, Some(&base)).unwrap();
        let e = solvers::build(&cfg, 10).unwrap_err().to_string();
        assert!(e.contains("prediction_type") && e.contains("sample"), "{e}");
    }
    let lms = SchedulerConfig::named("lms", Some(&base)).unwrap();
    solvers::build(&lms, 10).unwrap();
    // The Runge–Kutta start needs 4 timesteps (a broadcasting error in diffusers below that).
    let prk = parse(json!({"_class_name": "PNDMScheduler"})).unwrap();
    for steps in 1..4 {
        let e = solvers::build(&prk, steps).unwrap_err().to_string();
        assert!(e.contains("steps") && e.contains("skip_prk_steps"), "{e}");
    }
    // Leading timesteps pushed past T − 1 by steps_offset (an IndexError in diffusers).
    let sd =
        parse(json!({"_class_name": "PNDMScheduler", "skip_prk_steps": true, "steps_offset": 1}))
            .unwrap();
    let e = solvers::build(&sd, 1000).unwrap_err().to_string();
    assert!(e.contains("steps_offset") && e.contains("1000"), "{e}");
    solvers::build(&sd, 999).unwrap();
    for (class, field, value) in [
        ("PNDMScheduler", "skip_prk_steps", json!("yes")),
        ("PNDMScheduler", "timestep_spacing", json!("karras")),
        ("LMSDiscreteScheduler", "use_karras_sigmas", json!(1)),
        (
            "LMSDiscreteScheduler",
            "use_exponential_sigmas",
            json!(true),
        ),
        ("LMSDiscreteScheduler", "use_beta_sigmas", json!(true)),
    ] {
        let e = parse(json!({ "_class_name": class, field: value })).unwrap_err();
        assert!(
            e.contains(field) && e.contains("sched.json"),
            "{class} {field}: {e}"
        );
    }
}

#[test]
fn lms_coefficients_integrate_the_lagrange_basis() {
    use diffuse::solvers::lms::coefficient;
    // Closed forms on σ = [3, 2, 1.5, 1, 0] (descending, as a run's grid): order 1 is the step
    // itself; order 2 is the Adams–Bashforth pair on a non-uniform grid,
    // ∫_{σ1}^{σ2} (τ − σ0)/(σ1 − σ0) dτ and ∫ (τ − σ1)/(σ0 − σ1) dτ.
    let s = [3.0, 2.0, 1.5, 1.0, 0.0];
    assert!((coefficient(&s, 1, 0, 0) - (s[1] - s[0])).abs() < 1e-15);
    let (a, b) = (s[1], s[2]);
    let c0 = ((b - s[0]).powi(2) - (a - s[0]).powi(2)) / 2.0 / (s[1] - s[0]);
    let c1 = ((b - s[1]).powi(2) - (a - s[1]).powi(2)) / 2.0 / (s[0] - s[1]);
    assert!((coefficient(&s, 2, 1, 0) - c0).abs() < 1e-14);
    assert!((coefficient(&s, 2, 1, 1) - c1).abs() < 1e-14);
    // The basis sums to 1, so the coefficients of any order sum to the step σ_{i+1} − σ_i; a
    // quartic-exact rule also integrates τ^k exactly: Σ_j c_j σ_{i−j}^k = ∫ τ^k dτ for k < order.
    for (order, i) in [(3, 2), (4, 3)] {
        for k in 0..order as i32 {
            let got: f64 = (0..order)
                .map(|j| coefficient(&s, order, i, j) * s[i - j].powi(k))
                .sum();
            let want = (s[i + 1].powi(k + 1) - s[i].powi(k + 1)) / (k + 1) as f64;
            assert!(
                (got - want).abs() < 1e-13,
                "order {order} k {k}: {got} vs {want}"
            );
        }
    }
}
