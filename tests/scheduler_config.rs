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
        // EVODiff's official multistep loop asserts steps ≥ order (2): one step is refused.
        let fewest = if row.kind == SchedulerKind::EvoDiff {
            let e = solvers::build(&cfg, 1).unwrap_err().to_string();
            assert!(e.contains("steps"), "{e}");
            2
        } else {
            1
        };
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
    let e = SchedulerConfig::named("lms", None).unwrap_err().to_string();
    assert!(
        e.contains("unknown scheduler `lms`") && e.contains("score-sde-subvp"),
        "{e}"
    );
    let e = parse(json!({"_class_name": "LMSDiscreteScheduler"})).unwrap_err();
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
