//! The library as an app embeds it (features `png` only): the example's worker thread samples
//! the shipped model and writes the same PNG as a direct `pipeline::sample` of the same seed;
//! cancellation stops a run early with `Error::Cancelled`; an `Executor` refuses a model other
//! than the one its recordings bind.

mod common;

#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;

use diffuse::models::Denoiser;
use diffuse::pipeline::generate::{self, LoadedModel, ModelRequest};
use diffuse::pipeline::{self, SampleOptions};
use diffuse::schedule::config::SchedulerConfig;
use diffuse::solvers::{self, executor::Executor};
use diffuse::{image_io, DType, Error};
use embed::{Job, Progress, Worker};
use std::ops::ControlFlow;
use std::path::PathBuf;

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("library-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn analytic(batch: usize) -> (SchedulerConfig, Box<dyn Denoiser>) {
    let gpu = common::gpu();
    let cfg = generate::resolve_scheduler("analytic:mixture", Some("ddim"), None).unwrap();
    let loaded = LoadedModel::load(gpu, "analytic:mixture", DType::F32).unwrap();
    let req = ModelRequest {
        model: "analytic:mixture".into(),
        batch,
        guidance: None,
        labels: None,
        dtype: DType::F32,
    };
    let den = loaded.denoiser(gpu, &cfg, &req).unwrap();
    (cfg, den)
}

#[test]
fn worker_thread_writes_the_png_of_a_direct_run() {
    let dir = scratch("embed");
    let job = Job {
        steps: 2,
        batch: 2,
        seed: 7,
        ..Job::shipped(dir.join("out.png"))
    };
    let worker = Worker::spawn(job.clone());
    let seen: Vec<Progress> = worker.progress.iter().collect();
    let path = worker.join().unwrap();
    assert_eq!(
        seen,
        [
            Progress { step: 1, total: 2 },
            Progress { step: 2, total: 2 }
        ]
    );
    assert_eq!(path, job.out);

    // The reference: the same job sampled directly on the test's context, quantised as a PNG.
    let gpu = common::gpu();
    let model = job.model.to_string_lossy().into_owned();
    let cfg = generate::resolve_scheduler(&model, Some(&job.scheduler), None).unwrap();
    let loaded = LoadedModel::load(gpu, &model, DType::F32).unwrap();
    let req = ModelRequest {
        model,
        batch: 2,
        guidance: None,
        labels: None,
        dtype: DType::F32,
    };
    let mut den = loaded.denoiser(gpu, &cfg, &req).unwrap();
    let opts = SampleOptions {
        steps: 2,
        seed: 7,
        noise: None,
    };
    let x = pipeline::sample(gpu, den.as_mut(), &cfg, &opts, |_, _| {}).unwrap();

    // Two 28×28 samples side by side with 2-pixel gutters: 62×32, written as RGB.
    let (png, shape) = image_io::read_png(&path).unwrap();
    assert_eq!(shape, [1, 3, 32, 62]);
    let (h, w) = (32, 62);
    let mut worst = 0f32;
    for s in 0..2 {
        for y in 0..28 {
            for c in 0..28 {
                let v = x[s * 784 + y * 28 + c].clamp(-1.0, 1.0);
                let want = ((v + 1.0) * 127.5).round() / 127.5 - 1.0;
                let px = (2 + y) * w + 2 + s * 30 + c;
                for ch in 0..3 {
                    worst = worst.max((png[ch * h * w + px] - want).abs());
                }
            }
        }
    }
    // Equal up to one 8-bit level (two GPU contexts run the same kernels).
    assert!(worst <= 1.0 / 127.5 + 1e-6, "PNG differs by {worst}");
    // And the picture is not flat: the run produced an image, not a constant.
    let first: Vec<f32> = x[..784].to_vec();
    let mean = first.iter().sum::<f32>() / 784.0;
    let var = first.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 784.0;
    assert!(var > 1e-3, "sample variance {var}");
}

#[test]
fn cancelling_the_worker_stops_it_early_and_writes_nothing() {
    let dir = scratch("cancel");
    let job = Job {
        steps: 50,
        batch: 1,
        ..Job::shipped(dir.join("out.png"))
    };
    let worker = Worker::spawn(job.clone());
    let mut seen = 0;
    for p in worker.progress.iter() {
        seen = p.step;
        if p.step == 1 {
            worker.cancel();
        }
    }
    match worker.join() {
        Err(Error::Cancelled { step, total, .. }) => {
            assert_eq!(total, 50);
            assert_eq!(
                step, seen,
                "the last progress report is the step it stopped after"
            );
            // At most one step is queued ahead of the GPU, so the cancel lands within a few
            // steps of the request, far before the end.
            assert!(step < 10, "stopped after step {step} of 50");
        }
        other => panic!("expected Error::Cancelled, got {other:?}"),
    }
    assert!(!job.out.exists());
}

#[test]
fn breaking_from_progress_cancels_at_that_step() {
    let gpu = common::gpu();
    let (cfg, mut den) = analytic(4);
    let opts = SampleOptions {
        steps: 10,
        seed: 1,
        noise: None,
    };
    let mut calls = Vec::new();
    let r = pipeline::sample_controlled(gpu, den.as_mut(), &cfg, &opts, |i, n| {
        calls.push((i, n));
        if i == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    match r {
        Err(Error::Cancelled {
            op,
            step: 3,
            total: 10,
        }) => assert_eq!(op, "sampler"),
        other => panic!("expected a cancel after step 3 of 10, got {other:?}"),
    }
    assert_eq!(calls, [(1, 10), (2, 10), (3, 10)]);
    // Without the break the same run completes.
    let x = pipeline::sample_controlled(gpu, den.as_mut(), &cfg, &opts, |_, _| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(x.len(), den.input().numel());
}

#[test]
fn executor_refuses_a_model_it_was_not_built_for() {
    let gpu = common::gpu();
    let (cfg, mut a) = analytic(2);
    let (_, mut b) = analytic(2);
    // Same shapes and tensor names, different buffers.
    assert_eq!(a.input().shape(), b.input().shape());
    assert_eq!(a.input().name(), b.input().name());
    let program = solvers::build(&cfg, 4).unwrap();
    let exec = Executor::new(gpu, a.as_ref(), &program, 0, false).unwrap();
    match exec.run(gpu, b.as_mut(), |_, _| {}) {
        Err(Error::Argument { arg, reason, .. }) => {
            assert_eq!(arg, "model");
            assert!(reason.contains("built for another model"), "{reason}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("an executor ran on another model's tensors"),
    }
    // Its own model runs, and matches a fresh executor of the same program on `b`.
    let xa = exec
        .run(gpu, a.as_mut(), |_, _| {})
        .unwrap()
        .to_vec_f32(gpu)
        .unwrap();
    let exec_b = Executor::new(gpu, b.as_ref(), &program, 0, false).unwrap();
    let xb = exec_b
        .run(gpu, b.as_mut(), |_, _| {})
        .unwrap()
        .to_vec_f32(gpu)
        .unwrap();
    assert!(xa.iter().all(|v| v.is_finite()));
    assert_eq!(xa, xb);
}
