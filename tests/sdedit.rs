//! Schedulers started mid-schedule as diffusers' img2img pipeline starts them
//! (`solvers::sdedit`, goldens of `tools/gen_sdedit_golden.py`): `get_timesteps` cut by strength,
//! `set_begin_index`, `add_noise(x0, z, t_begin)` and diffusers' own `step` loop on the
//! closed-form Gaussian mixture of the solver goldens. The cut program, run by the f64 host
//! interpreter from a·x0 + s·z, must end within 1e-4·max|x| of diffusers, and call the model at
//! diffusers' kept timesteps. Needs no adapter.

mod common;

use common::{golden_dir as dir, golden_toy as toy};
use diffuse::load::{read_json, Weights};
use diffuse::models::analytic::HostMixture;
use diffuse::schedule::config::SchedulerConfig;
use diffuse::solvers::program::Op;
use diffuse::solvers::sdedit;

#[test]
fn started_programs_match_diffusers_img2img_loops() {
    let cases = read_json(&dir().join("sdedit/cases.json")).unwrap();
    let mut failures = Vec::new();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let cfg = SchedulerConfig::from_json(&case["config"], name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let steps = case["steps"].as_u64().unwrap() as usize;
        let strength = case["strength"].as_f64().unwrap();
        let t_start = sdedit::t_start(steps, strength).unwrap();
        assert_eq!(t_start as u64, case["t_start"].as_u64().unwrap(), "{name}");
        let started = sdedit::start(&cfg, steps, t_start).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The model is called at diffusers' kept timesteps, in order.
        let times: Vec<f64> = started
            .program
            .steps
            .iter()
            .flatten()
            .filter_map(|op| match op {
                Op::Model(t) => Some(t.t),
                _ => None,
            })
            .collect();
        let want_t: Vec<f64> = case["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(times.len(), want_t.len(), "{name}: {times:?} vs {want_t:?}");
        for (a, b) in times.iter().zip(&want_t) {
            assert!((a - b).abs() <= 1e-3, "{name}: {times:?} vs {want_t:?}");
        }
        let io = Weights::open(&dir().join(format!("sdedit/{name}.safetensors"))).unwrap();
        let x0 = io.read_f32("x0", None).unwrap();
        let z = io.read_f32("z", None).unwrap();
        let want = io.read_f32("expected", None).unwrap();
        let start: Vec<f32> = x0
            .data
            .iter()
            .zip(&z.data)
            .map(|(&x, &e)| (started.alpha * x as f64 + started.sigma * e as f64) as f32)
            .collect();
        let mut model = HostMixture {
            mixture: toy(),
            prediction: cfg.train.prediction,
        };
        let got = common::run_host(
            &mut model,
            &z.shape,
            &started.program,
            0,
            Some(&start),
            None,
        );
        let xmax = want.data.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        let worst = got
            .iter()
            .zip(&want.data)
            .map(|(g, w)| {
                let d = (g - *w as f64).abs();
                if d.is_nan() {
                    f64::INFINITY
                } else {
                    d
                }
            })
            .fold(0f64, f64::max);
        let ok = worst <= 1e-4 * xmax;
        println!(
            "{name:<22} t_start {t_start:>2} {:>2} NFE  max|Δ| {worst:.2e} of max|x| {xmax:.3} ({:.1e})  {}",
            started.program.nfe,
            worst / xmax,
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            failures.push(name.to_string());
        }
    }
    assert!(failures.is_empty(), "off diffusers: {failures:?}");
}

/// Cut at step 0 the program is the scheduler's own (x_T uploaded as given), and the
/// stateless schedulers' cut programs are the tails of their full programs.
#[test]
fn cut_at_zero_is_the_full_program() {
    for name in [
        "ddim",
        "pndm",
        "plms",
        "euler",
        "euler-a",
        "heun",
        "lms",
        "dpm-solver++",
        "unipc",
        "ddpm",
    ] {
        let cfg = SchedulerConfig::named(name, None).unwrap();
        let full = diffuse::solvers::build(&cfg, 10).unwrap();
        let s = sdedit::start(&cfg, 10, 0).unwrap();
        assert_eq!(s.program.steps, full.steps, "{name}");
        assert_eq!(s.program.init_sigma, 1.0);
        for k in 1..10 {
            let cut = sdedit::start(&cfg, 10, k).unwrap_or_else(|e| panic!("{name} at {k}: {e}"));
            cut.program.check(false, false).unwrap();
            if ["ddim", "euler", "euler-a", "heun", "ddpm"].contains(&name) {
                assert_eq!(cut.program.steps, full.steps[k..], "{name} at {k}");
            }
        }
    }
}

/// Schedulers without a mid-schedule start are refused by name.
#[test]
fn unsupported_schedulers_are_named() {
    for name in ["bdia", "edm"] {
        let Ok(cfg) = SchedulerConfig::named(name, None) else {
            continue;
        };
        let e = sdedit::start(&cfg, 10, 3).unwrap_err().to_string();
        assert!(e.contains("cannot start mid-schedule"), "{name}: {e}");
    }
}
