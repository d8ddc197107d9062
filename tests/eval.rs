//! The quality-metric floor against references: the shipped Fashion-MNIST classifier run by
//! the engine matches PyTorch's features and logits (golden file written by the training
//! script); the Fréchet distance of engine features matches an independent CPU reference; and
//! samples of the shipped generator score a FID-FMNIST far better than noise or a constant
//! image (a check that fails for untrained weights).

mod common;

use diffuse::eval::{accuracy, classify, read_stats, FID_STATS};
use diffuse::load::Weights;
use diffuse::metrics::{frechet_distance, FeatureStats};
use diffuse::nn::classifier::FmnistClassifier;
use diffuse::DType;
use std::path::PathBuf;

fn asset(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(p)
}

#[test]
fn classifier_matches_pytorch_features_and_logits() {
    let gpu = common::gpu();
    let g = Weights::open(&asset("fmnist-classifier/golden.safetensors")).unwrap();
    let x = g.read_f32("sample", None).unwrap();
    let want_f = g.read_f32("features", None).unwrap();
    let want_l = g.read_f32("logits", None).unwrap();
    let n = x.shape[0];
    for (dtype, tol) in [(DType::F32, 2e-4), (DType::F16, 2e-2)] {
        let c = FmnistClassifier::from_dir(gpu, &asset("fmnist-classifier"), dtype).unwrap();
        let fwd = c.prepare(gpu, 8).unwrap(); // two chunks of 8
        let (f, l) = classify(gpu, &fwd, &x.data, 10).unwrap();
        let scale_f = want_f.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale_l = want_l.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let df = f
            .iter()
            .zip(&want_f.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let dl = l
            .iter()
            .zip(&want_l.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{dtype:?}: max|Δfeature| {df:.2e} of {scale_f:.2}, max|Δlogit| {dl:.2e} of {scale_l:.2}");
        assert!(df <= tol * scale_f, "{dtype:?} features: {df}");
        assert!(dl <= tol * scale_l, "{dtype:?} logits: {dl}");
        // The labels of those 16 test images, from the dataset's own file order.
        let labels: Vec<i64> = want_l
            .data
            .chunks(10)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0 as i64
            })
            .collect();
        assert_eq!(accuracy(&l, 10, &labels), 1.0, "argmax agrees with PyTorch");
        assert_eq!(f.len(), n * c.config.feature_dim);
    }
}

#[test]
fn frechet_distance_of_engine_features_matches_a_cpu_reference() {
    let gpu = common::gpu();
    let g = Weights::open(&asset("fmnist-classifier/golden.safetensors")).unwrap();
    let x = g.read_f32("sample", None).unwrap();
    let torch_f = g.read_f32("features", None).unwrap();
    let c = FmnistClassifier::from_dir(gpu, &asset("fmnist-classifier"), DType::F32).unwrap();
    let fwd = c.prepare(gpu, 16).unwrap();
    let (f, _) = classify(gpu, &fwd, &x.data, 10).unwrap();
    let test = read_stats(&asset("fmnist-classifier").join(FID_STATS), "test").unwrap();
    let d = test.dim;
    let ours = frechet_distance(&FeatureStats::from_rows(&f, d).unwrap(), &test).unwrap();
    // CPU reference: PyTorch's features, plain two-pass statistics, tr √(Σ₁Σ₂) by
    // Denman–Beavers on the product (regularised: 16 rows give a rank-15 covariance).
    let n = torch_f.shape[0];
    let mean: Vec<f64> = (0..d)
        .map(|j| (0..n).map(|i| torch_f.data[i * d + j] as f64).sum::<f64>() / n as f64)
        .collect();
    let mut cov = vec![0.0; d * d];
    for a in 0..d {
        for b in 0..d {
            cov[a * d + b] = (0..n)
                .map(|i| {
                    (torch_f.data[i * d + a] as f64 - mean[a])
                        * (torch_f.data[i * d + b] as f64 - mean[b])
                })
                .sum::<f64>()
                / (n - 1) as f64;
        }
    }
    let eps = 1e-9;
    let mut reg = cov.clone();
    for i in 0..d {
        reg[i * d + i] += eps;
    }
    let tr = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    let dm: f64 = mean
        .iter()
        .zip(&test.mean)
        .map(|(a, b)| (a - b).powi(2))
        .sum();
    let reference = dm + tr(&cov) + tr(&test.cov)
        - 2.0 * common::trace_sqrt_db(&common::matmul(&reg, &test.cov, d), d);
    println!("FID of 16 real test images: engine {ours:.5}, CPU reference {reference:.5}");
    assert!(
        (ours - reference).abs() <= 1e-3 * reference.max(1.0),
        "{ours} vs {reference}"
    );
}

#[test]
fn shipped_generator_scores_far_better_than_noise_or_a_constant_image() {
    use diffuse::pipeline::generate::{LoadedModel, ModelRequest};
    use diffuse::pipeline::{sample, SampleOptions};
    use diffuse::schedule::config::SchedulerConfig;
    let gpu = common::gpu();
    let model_dir = asset("fmnist-ddpm");
    let name = model_dir.to_str().unwrap();
    let base = SchedulerConfig::from_file(&model_dir.join("scheduler_config.json")).unwrap();
    let cfg = SchedulerConfig::named("dpm-solver++", Some(&base)).unwrap();
    let n = 64;
    let loaded = LoadedModel::load(gpu, name, DType::F32).unwrap();
    let req = ModelRequest {
        model: name.into(),
        batch: n,
        guidance: None,
        labels: None,
        dtype: DType::F32,
    };
    let mut den = loaded.denoiser(gpu, &cfg, &req).unwrap();
    let opts = SampleOptions {
        steps: 10,
        seed: 5,
        noise: None,
    };
    let x = sample(gpu, den.as_mut(), &cfg, &opts, |_, _| {}).unwrap();
    let x: Vec<f32> = x.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
    let c = FmnistClassifier::from_dir(gpu, &asset("fmnist-classifier"), DType::F32).unwrap();
    let fwd = c.prepare(gpu, n).unwrap();
    let test = read_stats(&asset("fmnist-classifier").join(FID_STATS), "test").unwrap();
    let fid = |imgs: &[f32]| {
        let (f, _) = classify(gpu, &fwd, imgs, 10).unwrap();
        frechet_distance(&FeatureStats::from_rows(&f, test.dim).unwrap(), &test).unwrap()
    };
    let noise: Vec<f32> = diffuse::selfcheck::TestRng(9).values(n * 784, -1.0, 1.0, DType::F32);
    let mut constant = vec![-1.0f32; n * 784];
    // A constant grey square on black: one image repeated (no variance at all).
    for img in constant.chunks_mut(784) {
        for r in 7..21 {
            for q in 7..21 {
                img[r * 28 + q] = 0.2;
            }
        }
    }
    let (f_model, f_noise, f_const) = (fid(&x), fid(&noise), fid(&constant));
    println!("FID-FMNIST (64 samples): model {f_model:.2}, uniform noise {f_noise:.2}, constant {f_const:.2}");
    assert!(f_model.is_finite());
    assert!(
        f_model < 0.25 * f_noise.min(f_const),
        "model {f_model} vs noise {f_noise}, constant {f_const}"
    );
}
