//! Floor 6: quality evaluation with the engine's own kernels — FID-FMNIST and class accuracy
//! of sampled images (the Fashion-MNIST classifier's features, [`crate::nn::classifier`]), and
//! PSNR/SSIM of restorations against ground truth.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::load::Weights;
use crate::metrics::{self, FeatureStats};
use crate::nn::classifier::{ClassifierForward, FmnistClassifier};
use crate::pipeline::generate::{LoadedModel, ModelRequest};
use crate::pipeline::restore::Restorer;
use crate::pipeline::{self, SampleOptions};
use crate::schedule::config::SchedulerConfig;
use crate::tensor::DType;
use std::io::Read;
use std::path::Path;

/// The file of a classifier folder holding the real-data feature statistics.
pub const FID_STATS: &str = "fid_stats.safetensors";

/// Reads `{prefix}_mean` [d] and `{prefix}_cov` [d, d] (e.g. "test", "train") from a
/// `fid_stats.safetensors`.
pub fn read_stats(path: &Path, prefix: &str) -> Result<FeatureStats> {
    let w = Weights::open(path)?;
    let mean = w.read_input(&format!("{prefix}_mean"), None)?;
    if mean.shape.len() != 1 {
        return Err(Error::Load {
            file: path.display().to_string(),
            reason: format!("`{prefix}_mean` has shape {:?}; expected [d]", mean.shape),
        });
    }
    let d = mean.shape[0];
    let cov = w.read_input(&format!("{prefix}_cov"), Some(&[d, d]))?;
    Ok(FeatureStats {
        dim: d,
        count: 0,
        mean: mean.data.iter().map(|&v| v as f64).collect(),
        cov: cov.data.iter().map(|&v| v as f64).collect(),
    })
}

/// The reference statistics of a classifier folder: `test` and `train` from its
/// [`FID_STATS`], checked (finite, [d] and [d, d], d = the classifier's `feature_dim`) on the
/// host before any GPU work, every error naming the file.
pub fn read_reference_stats(classifier_dir: &Path) -> Result<(FeatureStats, FeatureStats)> {
    let path = classifier_dir.join(FID_STATS);
    let test = read_stats(&path, "test")?;
    let train = read_stats(&path, "train")?;
    let cfg = crate::nn::classifier::ClassifierConfig::from_file(
        &classifier_dir.join(crate::load::CONFIG),
    )?;
    for (name, s) in [("test_mean", &test), ("train_mean", &train)] {
        if s.dim != cfg.feature_dim {
            return Err(Error::Load {
                file: path.display().to_string(),
                reason: format!(
                    "`{name}` has {} features but the classifier's feature_dim is {}",
                    s.dim, cfg.feature_dim
                ),
            });
        }
    }
    Ok((test, train))
}

/// Reads a (possibly gzipped) IDX image file of u8 pixels, e.g. the Fashion-MNIST
/// `t10k-images-idx3-ubyte.gz`, as [−1, 1] floats; returns (values, N, H, W), at most `limit`
/// images. Reads are bounded by what the header promises (checked arithmetic, at most
/// [`crate::size::MAX_HOST_BYTES`]): a gzip bomb or an endless stream is never read past it.
pub fn read_idx_images(path: &Path, limit: usize) -> Result<(Vec<f32>, usize, usize, usize)> {
    let file = path.display().to_string();
    let err = |reason: String| Error::Load {
        file: file.clone(),
        reason,
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut magic = [0u8; 2];
    let got = read_full(&mut f, &mut magic).map_err(|e| err(e.to_string()))?;
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let mut r: Box<dyn Read> = if magic[..got] == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(head.chain(f)))
    } else {
        Box::new(head.chain(f))
    };
    let gz = |e: std::io::Error| err(format!("corrupt gzip stream: {e}"));
    let mut h16 = [0u8; 16];
    let got = read_full(&mut r, &mut h16).map_err(gz)?;
    if got < 16 || h16[..4] != [0, 0, 8, 3] {
        return Err(err("not an IDX file of u8 images (magic 0x00000803)".into()));
    }
    let dim = |i: usize| u32::from_be_bytes([h16[i], h16[i + 1], h16[i + 2], h16[i + 3]]) as usize;
    let (n, h, w) = (dim(4), dim(8), dim(12));
    let what = format!("{file}: IDX header ({n} images of {h}×{w})");
    let per = crate::size::mul(&what, h, w)?;
    let total = crate::size::mul(&what, n, per)?;
    crate::size::host_alloc(&what, total, 1)?;
    let k = n.min(limit);
    let want = k * per;
    let mut bytes = Vec::with_capacity(want);
    (&mut r)
        .take(want as u64)
        .read_to_end(&mut bytes)
        .map_err(gz)?;
    // The rest must be exactly what the header promises: counted, never stored, and never read
    // past one byte more than promised.
    let rest = std::io::copy(
        &mut (&mut r).take((total - want) as u64 + 1),
        &mut std::io::sink(),
    )
    .map_err(gz)? as usize;
    if bytes.len() + rest > total {
        return Err(err(format!(
            "more than the {total} pixel bytes its header promises ({n} images of {h}×{w})"
        )));
    }
    if bytes.len() + rest < total {
        return Err(err(format!(
            "{} pixel bytes for {n} images of {h}×{w} (truncated?)",
            bytes.len() + rest
        )));
    }
    let data = bytes.iter().map(|&b| b as f32 / 127.5 - 1.0).collect();
    Ok((data, k, h, w))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Classifier features and logits of `images` ([N, C, S, S] flattened), in chunks of the
/// recorded batch (the last chunk zero-padded).
pub fn classify(
    gpu: &Gpu,
    fwd: &ClassifierForward,
    images: &[f32],
    classes: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let b = fwd.batch();
    let per = fwd.sample.numel() / b;
    if images.len() % per != 0 {
        return Err(Error::HostLength {
            tensor: "images".into(),
            got: images.len(),
            want: per,
            shape: fwd.sample.shape().to_vec(),
        });
    }
    let n = images.len() / per;
    let (mut feats, mut logits) = (Vec::new(), Vec::new());
    let d = fwd.features.shape()[1];
    for start in (0..n).step_by(b) {
        let k = b.min(n - start);
        let mut chunk = images[start * per..(start + k) * per].to_vec();
        chunk.resize(b * per, 0.0);
        let (f, l) = fwd.run(gpu, &chunk)?;
        feats.extend_from_slice(&f[..k * d]);
        logits.extend_from_slice(&l[..k * classes]);
    }
    Ok((feats, logits))
}

/// Fraction of rows whose argmax logit equals the label.
pub fn accuracy(logits: &[f32], classes: usize, labels: &[i64]) -> f64 {
    let hits = logits
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &l)| {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(usize::MAX, |(i, _)| i);
            best as i64 == l
        })
        .count();
    hits as f64 / labels.len().max(1) as f64
}

/// One generation evaluation.
#[derive(Debug, Clone)]
pub struct GenerationOptions {
    pub steps: usize,
    pub num_samples: usize,
    pub batch: usize,
    pub seed: u64,
    pub guidance: Option<f32>,
    pub dtype: DType,
}

impl GenerationOptions {
    /// Checks the counts (host only; call it before any GPU work): at least 2 samples (a
    /// covariance needs two), a batch of at least 1, each error naming its argument.
    pub fn validate(&self) -> Result<()> {
        let bad = |arg: &'static str, reason: String| Error::Argument {
            op: "eval",
            arg,
            reason,
        };
        if self.batch == 0 {
            return Err(bad("batch", "must be at least 1".into()));
        }
        if self.num_samples < 2 {
            return Err(bad(
                "num_samples",
                format!("need at least 2 samples (got {})", self.num_samples),
            ));
        }
        if let Some(g) = self.guidance {
            crate::domain::Domain::FINITE
                .check_f32(g)
                .map_err(|r| bad("guidance", r))?;
        }
        Ok(())
    }
}

/// What `diffuse eval` reports.
#[derive(Debug, Clone)]
pub struct GenerationReport {
    pub num_samples: usize,
    pub nfe: usize,
    pub fid: f64,
    /// Classifier accuracy against the requested labels (class-conditional models).
    pub accuracy: Option<f64>,
    pub seconds: f64,
}

/// Samples `num_samples` images in batches (batch i uses seed + i; class-conditional models
/// cycle the classes), and scores them against `reference` with the classifier.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_generation(
    gpu: &Gpu,
    model: &LoadedModel,
    model_name: &str,
    cfg: &SchedulerConfig,
    o: &GenerationOptions,
    classifier: &FmnistClassifier,
    reference: &FeatureStats,
    mut progress: impl FnMut(usize, usize),
) -> Result<GenerationReport> {
    o.validate()?;
    let k = classifier.config.num_classes;
    // Labels cycle over the classes the classifier knows (a class-conditional model's extra
    // null label, used for guidance, is never requested).
    let classes = model.classes(o.guidance.is_some()).map(|c| c.min(k));
    let t0 = std::time::Instant::now();
    let cls = classifier.prepare(gpu, o.batch.min(o.num_samples))?;
    let (mut feats, mut logits, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let nfe = crate::solvers::build(cfg, o.steps)?.nfe;
    let mut done = 0;
    let mut chunk = 0u64;
    while done < o.num_samples {
        let b = o.batch.min(o.num_samples - done);
        let lab: Option<Vec<i64>> =
            classes.map(|c| (done..done + b).map(|i| (i % c) as i64).collect());
        let req = ModelRequest {
            model: model_name.to_string(),
            batch: b,
            guidance: o.guidance,
            labels: lab.clone(),
            dtype: o.dtype,
        };
        let mut den = model.denoiser(gpu, cfg, &req)?;
        let opts = SampleOptions {
            steps: o.steps,
            seed: o.seed.wrapping_add(chunk),
            noise: None,
        };
        let before = done;
        let x = pipeline::sample(gpu, den.as_mut(), cfg, &opts, |i, n| {
            progress(before * n + i * b, o.num_samples * n)
        })?;
        let clamped: Vec<f32> = x.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        let (f, l) = classify(gpu, &cls, &clamped, k)?;
        feats.extend(f);
        logits.extend(l);
        if let Some(l) = lab {
            labels.extend(l);
        }
        done += b;
        chunk += 1;
    }
    let stats = FeatureStats::from_rows(&feats, reference.dim)?;
    Ok(GenerationReport {
        num_samples: o.num_samples,
        nfe,
        fid: metrics::frechet_distance(&stats, reference)?,
        accuracy: classes.map(|_| accuracy(&logits, k, &labels)),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The first `num_samples` (all when `None`) (degraded, clean) pairs of a restoration test set
/// (`degraded` and `clean`, equal [N, C, H, W] f32 tensors), checked finite. Returns both and
/// the shape of what was taken.
pub fn read_testset(
    path: &Path,
    num_samples: Option<usize>,
) -> Result<(Vec<f32>, Vec<f32>, Vec<usize>)> {
    let load_err = |reason: String| Error::Load {
        file: path.display().to_string(),
        reason,
    };
    let w = Weights::open(path)?;
    let degraded = w.read_input("degraded", None)?;
    if degraded.shape.len() != 4 {
        return Err(load_err(format!(
            "`degraded` has shape {:?}; expected [N, C, H, W]",
            degraded.shape
        )));
    }
    let clean = w.read_input("clean", Some(&degraded.shape))?;
    let mut shape = degraded.shape.clone();
    let n = num_samples.unwrap_or(shape[0]);
    if n == 0 || n > shape[0] {
        return Err(Error::Argument {
            op: "eval-restore",
            arg: "num_samples",
            reason: format!("{n} is not in 1..={} (the test set's size)", shape[0]),
        });
    }
    shape[0] = n;
    let len = shape.iter().product();
    let (mut degraded, mut clean) = (degraded.data, clean.data);
    degraded.truncate(len);
    clean.truncate(len);
    for (name, t) in [("degraded", &degraded), ("clean", &clean)] {
        if let Some(i) = t.iter().position(|v| !v.is_finite()) {
            return Err(load_err(format!(
                "`{name}` holds a non-finite value at flat index {i}"
            )));
        }
    }
    Ok((degraded, clean, shape))
}

/// What `diffuse eval-restore` reports (means over the evaluated pairs).
#[derive(Debug, Clone)]
pub struct RestorationReport {
    pub pairs: usize,
    pub nfe: usize,
    pub psnr: f64,
    pub ssim: f64,
    /// The same metrics for the degraded input itself (the do-nothing baseline).
    pub psnr_input: f64,
    pub ssim_input: f64,
    pub seconds: f64,
}

/// Restores `degraded` ([N, C, H, W]) in batches and scores against `clean`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_restoration(
    gpu: &Gpu,
    restorer: &Restorer,
    degraded: &[f32],
    clean: &[f32],
    shape: &[usize],
    batch: usize,
    seed: u64,
    mut progress: impl FnMut(usize, usize),
) -> Result<RestorationReport> {
    if batch == 0 {
        return Err(Error::Argument {
            op: "eval-restore",
            arg: "batch",
            reason: "must be at least 1".into(),
        });
    }
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    if n == 0 || degraded.len() != n * c * h * w || clean.len() != degraded.len() {
        return Err(Error::Argument {
            op: "eval-restore",
            arg: "test set",
            reason: format!(
                "degraded/clean hold {}/{} values for shape {shape:?} (batch {batch})",
                degraded.len(),
                clean.len()
            ),
        });
    }
    if h < 11 || w < 11 {
        return Err(Error::Argument {
            op: "eval-restore",
            arg: "test set",
            reason: format!("{h}×{w} images are smaller than SSIM's 11×11 window"),
        });
    }
    let t0 = std::time::Instant::now();
    let per = c * h * w;
    let mut restored = Vec::with_capacity(degraded.len());
    let mut start = 0;
    let mut chunk = 0u64;
    while start < n {
        let b = batch.min(n - start);
        let mu = &degraded[start * per..(start + b) * per];
        let x = restorer.restore(
            gpu,
            mu,
            &[b, c, h, w],
            seed.wrapping_add(chunk),
            None,
            |i, t| progress(start * t + i * b, n * t),
        )?;
        restored.extend(x);
        start += b;
        chunk += 1;
    }
    let score = |x: &[f32]| -> Result<(f64, f64)> {
        let (mut p, mut s) = (0.0, 0.0);
        for i in 0..n {
            for ch in 0..c {
                let o = i * per + ch * h * w;
                let (a, b) = (&x[o..o + h * w], &clean[o..o + h * w]);
                p += metrics::psnr(a, b);
                s += metrics::ssim(a, b, h, w)?;
            }
        }
        Ok((p / (n * c) as f64, s / (n * c) as f64))
    };
    let (psnr, ssim) = score(&restored)?;
    let (psnr_input, ssim_input) = score(degraded)?;
    Ok(RestorationReport {
        pairs: n,
        nfe: restorer.nfe(),
        psnr,
        ssim,
        psnr_input,
        ssim_input,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The first `num_samples` (all when `None`) images of the `clean` tensor (f32 [N, C, H, W],
/// model scale) of a test set, checked finite; returns them and their shape.
pub fn read_clean(path: &Path, num_samples: Option<usize>) -> Result<(Vec<f32>, Vec<usize>)> {
    let t = Weights::open(path)?.read_input("clean", None)?;
    if t.shape.len() != 4 || t.shape.contains(&0) {
        return Err(Error::Load {
            file: path.display().to_string(),
            reason: format!("`clean` has shape {:?}; expected [N, C, H, W]", t.shape),
        });
    }
    let mut shape = t.shape.clone();
    let n = num_samples.unwrap_or(shape[0]);
    if n == 0 || n > shape[0] {
        return Err(Error::Argument {
            op: "eval-inverse",
            arg: "num_samples",
            reason: format!("{n} is not in 1..={} (the test set's size)", shape[0]),
        });
    }
    shape[0] = n;
    let mut data = t.data;
    data.truncate(shape.iter().product());
    Ok((data, shape))
}

/// Scores of one restoration of a test set (means over images and channels).
#[derive(Debug, Clone, Copy)]
pub struct InverseScores {
    pub psnr: f64,
    pub ssim: f64,
    /// Mean relative measurement residual ‖A(x̂) − y‖ / ‖y‖ (f64 host operator).
    pub consistency: f64,
}

/// What `diffuse eval-inverse` reports: the method and, on the same measurements, `pinv`
/// (None where the operator has no closed-form A†).
#[derive(Debug, Clone)]
pub struct InverseReport {
    pub images: usize,
    pub nfe: usize,
    pub method: InverseScores,
    pub pinv: Option<InverseScores>,
    /// The blurred measurement itself taken as the estimate (x̂ = y; the blurs, whose y is an
    /// image of the clean images' shape and which have no A†), None for other operators.
    pub measurement: Option<InverseScores>,
    pub seconds: f64,
}

fn score_inverse(
    op: &crate::ops::degrade::Operator,
    x: &[f32],
    clean: &[f32],
    y: &[f32],
    shape: &[usize],
) -> Result<InverseScores> {
    use crate::ops::degrade::Mode;
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let (mut p, mut s) = (0.0, 0.0);
    for o in (0..n * c).map(|k| k * h * w) {
        let (a, b) = (&x[o..o + h * w], &clean[o..o + h * w]);
        p += metrics::psnr(a, b);
        s += metrics::ssim(a, b, h, w)?;
    }
    let per_x = c * h * w;
    let per_y = y.len() / n;
    let mut cons = 0.0;
    for i in 0..n {
        let xi: Vec<f64> = x[i * per_x..(i + 1) * per_x]
            .iter()
            .map(|v| *v as f64)
            .collect();
        let ax = op.apply_host(Mode::Forward, &xi, &[1, c, h, w])?;
        let yi = &y[i * per_y..(i + 1) * per_y];
        let num: f64 = ax
            .iter()
            .zip(yi)
            .map(|(a, b)| (a - *b as f64).powi(2))
            .sum();
        let den: f64 = yi.iter().map(|b| (*b as f64).powi(2)).sum();
        cons += (num / den.max(1e-30)).sqrt();
    }
    let k = (n * c) as f64;
    Ok(InverseScores {
        psnr: p / k,
        ssim: s / k,
        consistency: cons / n as f64,
    })
}

/// Simulates y = A(x) + σ_y·n for the `clean` images ([N, C, H, W]), restores them with
/// `opts.method` (and with `pinv`, where the operator has A†) in batches of `batch`, and
/// scores both against `clean`.
pub fn evaluate_inverse(
    gpu: &Gpu,
    model: &crate::pipeline::inverse::InverseModel,
    opts: &crate::pipeline::inverse::InverseOptions,
    clean: &[f32],
    shape: &[usize],
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<InverseReport> {
    use crate::pipeline::inverse::{simulate, InverseOptions, Method};
    if batch == 0 {
        return Err(Error::Argument {
            op: "eval-inverse",
            arg: "batch",
            reason: "must be at least 1".into(),
        });
    }
    model.check_image(shape, "clean")?;
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    if h < 11 || w < 11 || clean.len() != n * c * h * w {
        return Err(Error::Argument {
            op: "eval-inverse",
            arg: "test set",
            reason: format!(
                "{} values for {shape:?} (images must be at least SSIM's 11×11 window)",
                clean.len()
            ),
        });
    }
    let t0 = std::time::Instant::now();
    let op = opts.operator;
    let y = simulate(gpu, op, clean, shape, opts.sigma_y, opts.seed)?;
    let per_y = y.len() / n;
    let run = |o: &InverseOptions, prog: &mut dyn FnMut(usize, usize)| -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(clean.len());
        let mut start = 0;
        while start < n {
            let b = batch.min(n - start);
            let o = InverseOptions {
                seed: o.seed.wrapping_add(start as u64),
                ..o.clone()
            };
            let ys = &y[start * per_y..(start + b) * per_y];
            out.extend(model.restore(gpu, &o, ys, &[b, c, h, w], |i, t| {
                prog(start * t + i * b, n * t)
            })?);
            start += b;
        }
        Ok(out)
    };
    let x = run(opts, &mut progress)?;
    let method = score_inverse(&op, &x, clean, &y, shape)?;
    let pinv = if opts.method == Method::Pinv {
        Some(method)
    } else if op.has_pinv() {
        let o = InverseOptions {
            method: Method::Pinv,
            steps: None,
            ..opts.clone()
        };
        let xp = run(&o, &mut |_, _| {})?;
        Some(score_inverse(&op, &xp, clean, &y, shape)?)
    } else {
        None
    };
    let measurement = match op.taps() {
        Some(_) => Some(score_inverse(&op, &y, clean, &y, shape)?),
        None => None,
    };
    Ok(InverseReport {
        images: n,
        nfe: opts.steps.unwrap_or(opts.method.default_steps()),
        method,
        pinv,
        measurement,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
