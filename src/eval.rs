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
    let mean = w.read_f32(&format!("{prefix}_mean"), None)?;
    if mean.shape.len() != 1 {
        return Err(Error::Load {
            file: path.display().to_string(),
            reason: format!("`{prefix}_mean` has shape {:?}; expected [d]", mean.shape),
        });
    }
    let d = mean.shape[0];
    let cov = w.read_f32(&format!("{prefix}_cov"), Some(&[d, d]))?;
    Ok(FeatureStats {
        dim: d,
        count: 0,
        mean: mean.data.iter().map(|&v| v as f64).collect(),
        cov: cov.data.iter().map(|&v| v as f64).collect(),
    })
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
    if bytes.len() + rest != total {
        return Err(err(format!(
            "{}{} pixel bytes for {n} images of {h}×{w} (truncated?)",
            if bytes.len() + rest > total { "more than " } else { "" },
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
    if o.num_samples < 2 || o.batch == 0 {
        return Err(Error::Argument {
            op: "eval",
            arg: "num_samples",
            reason: format!(
                "need at least 2 samples and a batch ≥ 1 (got {} and {})",
                o.num_samples, o.batch
            ),
        });
    }
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
    let degraded = w.read_f32("degraded", None)?;
    if degraded.shape.len() != 4 {
        return Err(load_err(format!(
            "`degraded` has shape {:?}; expected [N, C, H, W]",
            degraded.shape
        )));
    }
    let clean = w.read_f32("clean", Some(&degraded.shape))?;
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
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    if batch == 0 || n == 0 || degraded.len() != n * c * h * w || clean.len() != degraded.len() {
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
