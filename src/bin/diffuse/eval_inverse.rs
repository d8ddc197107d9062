//! `diffuse eval-inverse`: mean PSNR/SSIM of a training-free inverse-problem method on a test
//! set's clean images, beside `pinv` on the same simulated measurements.

use super::checks::{commit_json, json_plan};
use super::{arg_error, progress_bar};
use clap::Args;
use diffuse::ops::degrade::Operator;
use diffuse::pipeline::inverse::{InverseModel, InverseOptions, Method};
use diffuse::{DType, Error, Gpu, GpuOptions};
use std::path::PathBuf;

/// The default test set (its `clean` images: held-out Fashion-MNIST test images).
pub(crate) const DEFAULT_TESTSET: &str = "assets/fmnist-sr4/testset.safetensors";

#[derive(Args)]
pub(crate) struct EvalInverseArgs {
    /// An unconditional diffusers UNet2DModel folder.
    #[arg(long)]
    model: PathBuf,
    /// sr2, sr4, inpaint-box, inpaint-random, blur-gauss, blur-box or mri4x.
    #[arg(long)]
    operator: String,
    /// pinv, dds, red-diff or flowchef (rectified-flow models only).
    #[arg(long)]
    method: String,
    /// Model evaluations (default: the method's official default).
    #[arg(long)]
    steps: Option<usize>,
    /// Score only the first K images.
    #[arg(long, allow_negative_numbers = true)]
    num_samples: Option<usize>,
    /// safetensors holding `clean` (f32 [N,C,H,W], model scale).
    #[arg(long, default_value = DEFAULT_TESTSET)]
    testset: PathBuf,
    /// Measurement noise σ_y.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    sigma_y: f64,
    /// Seed of the inpaint-random and mri4x masks.
    #[arg(long, default_value_t = 0)]
    operator_seed: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 64)]
    batch: usize,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub(crate) fn eval_inverse(opts: &GpuOptions, a: EvalInverseArgs) -> Result<(), Error> {
    let operator = Operator::parse(&a.operator, a.operator_seed)?;
    let method = Method::parse(&a.method)?;
    if a.sigma_y.is_nan() || a.sigma_y < 0.0 {
        return Err(arg_error(
            "eval-inverse",
            "--sigma-y",
            format!("must be ≥ 0 (got {})", a.sigma_y),
        ));
    }
    if a.batch == 0 {
        return Err(arg_error(
            "eval-inverse",
            "--batch",
            "must be at least 1".into(),
        ));
    }
    let (clean, shape) = diffuse::eval::read_clean(&a.testset, a.num_samples)?;
    operator.measurement_shape(&shape, "clean")?;
    let (plan, json) = json_plan(a.json.as_deref())?;
    let gpu = Gpu::new(opts)?;
    let model = InverseModel::load(&gpu, &a.model, DType::F32)?;
    let o = InverseOptions {
        operator,
        method,
        steps: a.steps,
        sigma_y: a.sigma_y,
        seed: a.seed,
        dtype: DType::F32,
    };
    let bar = progress_bar(1000, &a.method, "‰");
    let rep =
        diffuse::eval::evaluate_inverse(&gpu, &model, &o, &clean, &shape, a.batch, |i, t| {
            bar.set_position((1000 * i / t.max(1)) as u64)
        })?;
    bar.finish_and_clear();
    let info = gpu.info();
    println!(
        "{} on {}, {} NFE, {} images: PSNR {:.2} dB, SSIM {:.4}, ‖A(x̂) − y‖/‖y‖ {:.4}",
        a.method,
        operator.name(),
        rep.nfe,
        rep.images,
        rep.method.psnr,
        rep.method.ssim,
        rep.method.consistency
    );
    match &rep.pinv {
        Some(p) => println!(
            "pinv on the same measurements: PSNR {:.2} dB, SSIM {:.4}, ‖A(x̂) − y‖/‖y‖ {:.4}",
            p.psnr, p.ssim, p.consistency
        ),
        None => println!("pinv: `{}` has no closed-form A†", operator.name()),
    }
    if let Some(m) = &rep.measurement {
        println!(
            "the blurred measurement itself (x̂ = y): PSNR {:.2} dB, SSIM {:.4}, ‖A(x̂) − y‖/‖y‖ {:.4}",
            m.psnr, m.ssim, m.consistency
        );
    }
    println!("{:.1} s on {} ({:?})", rep.seconds, info.name, info.backend);
    let scores = |s: &diffuse::eval::InverseScores| serde_json::json!({"psnr": s.psnr, "ssim": s.ssim, "consistency": s.consistency});
    let v = serde_json::json!({
        "model": a.model, "operator": operator.name(), "method": a.method,
        "operator_seed": a.operator_seed, "sigma_y": a.sigma_y, "seed": a.seed,
        "nfe": rep.nfe, "images": rep.images, "testset": a.testset,
        "result": scores(&rep.method), "pinv": rep.pinv.as_ref().map(scores),
        "measurement": rep.measurement.as_ref().map(scores),
        "seconds": rep.seconds, "adapter": info.name,
        "backend": format!("{:?}", info.backend),
        "driver": format!("{} {}", info.driver, info.driver_info),
    });
    commit_json(plan, json, &v)
}
