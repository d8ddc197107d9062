//! The Fashion-MNIST feature classifier behind FID-FMNIST (`_class_name` "FmnistClassifier",
//! trained by `tools/train/train_classifier.py`): three 3×3 conv → GroupNorm+SiLU stages with
//! 2×2 average pooling between them, a global spatial mean, `fc1` → SiLU (the features) and
//! `fc2` (the logits). The same kernels as the UNet; recorded once per batch size.

use super::layers::{Conv2d, GroupNorm, Linear, Loader};
use super::Graph;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recording};
use crate::load::{self, ConfigFields, Weights};
use crate::nn::config::MAX_WIDTH;
use crate::ops;
use crate::ops::conv2d::Conv2dArgs;
use crate::tensor::{DType, Tensor};
use std::path::Path;

/// File name of the classifier's weights inside its folder.
pub const CLASSIFIER_WEIGHTS: &str = "model.safetensors";

/// `config.json` of a FmnistClassifier folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierConfig {
    pub in_channels: usize,
    pub sample_size: usize,
    pub block_out_channels: Vec<usize>,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub feature_dim: usize,
    pub num_classes: usize,
}

impl ClassifierConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = load::read_json(path)?;
        let f = ConfigFields::new(&v, &path.display().to_string())?;
        const KNOWN: &[&str] = &[
            "_class_name",
            "in_channels",
            "sample_size",
            "block_out_channels",
            "norm_num_groups",
            "norm_eps",
            "feature_dim",
            "num_classes",
        ];
        if let Some(k) = f.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(f.err(k, "unknown FmnistClassifier field; refusing to guess"));
        }
        let class = f.str("_class_name", "")?;
        if class != "FmnistClassifier" {
            return Err(f.err(
                "_class_name",
                format!("`{class}` is not a FmnistClassifier folder"),
            ));
        }
        let cfg = ClassifierConfig {
            in_channels: f.int("in_channels", 1, 1..=MAX_WIDTH)?,
            sample_size: f.int("sample_size", 28, 1..=MAX_WIDTH)?,
            block_out_channels: f.usizes("block_out_channels", &[32, 64, 128])?,
            norm_num_groups: f.int("norm_num_groups", 8, 1..=MAX_WIDTH)?,
            norm_eps: f.f64("norm_eps", 1e-5, Domain::POSITIVE)?,
            feature_dim: f.int("feature_dim", 64, 1..=MAX_WIDTH)?,
            num_classes: f.int("num_classes", 10, 1..=MAX_WIDTH)?,
        };
        if let Some(&c) = cfg
            .block_out_channels
            .iter()
            .find(|&&c| !(1..=MAX_WIDTH).contains(&c))
        {
            return Err(f.err(
                "block_out_channels",
                format!("{c} is out of range (expected 1..={MAX_WIDTH})"),
            ));
        }
        let levels = cfg.block_out_channels.len();
        if levels == 0 || cfg.sample_size % (1 << (levels - 1)) != 0 {
            return Err(f.err(
                "sample_size",
                format!(
                    "{} is not divisible by 2^{} (one 2×2 pooling between stages)",
                    cfg.sample_size,
                    levels.saturating_sub(1)
                ),
            ));
        }
        if let Some(c) = cfg
            .block_out_channels
            .iter()
            .find(|&&c| cfg.norm_num_groups == 0 || c % cfg.norm_num_groups != 0)
        {
            return Err(f.err(
                "norm_num_groups",
                format!("{} groups do not divide {c} channels", cfg.norm_num_groups),
            ));
        }
        Ok(cfg)
    }
}

/// A loaded classifier.
pub struct FmnistClassifier {
    pub config: ClassifierConfig,
    pub dtype: DType,
    convs: Vec<Conv2d>,
    norms: Vec<GroupNorm>,
    fc1: Linear,
    fc2: Linear,
}

impl FmnistClassifier {
    /// Loads `config.json` + `model.safetensors` from `dir`; every checkpoint tensor must be used.
    pub fn from_dir(gpu: &Gpu, dir: &Path, dtype: DType) -> Result<Self> {
        let config = ClassifierConfig::from_file(&dir.join(load::CONFIG))?;
        let weights = Weights::open(&dir.join(CLASSIFIER_WEIGHTS))?;
        let l = Loader::new(gpu, &weights, dtype);
        let same = Conv2dArgs {
            stride: 1,
            padding: 1,
            ..Default::default()
        };
        let mut cin = config.in_channels;
        let (mut convs, mut norms) = (Vec::new(), Vec::new());
        for (i, &c) in config.block_out_channels.iter().enumerate() {
            convs.push(l.conv(&format!("convs.{i}"), cin, c, 3, same)?);
            norms.push(l.group_norm(
                &format!("norms.{i}"),
                c,
                config.norm_num_groups,
                config.norm_eps,
            )?);
            cin = c;
        }
        let fc1 = l.linear("fc1", cin, config.feature_dim)?;
        let fc2 = l.linear("fc2", config.feature_dim, config.num_classes)?;
        weights.check_all_used()?;
        Ok(FmnistClassifier {
            config,
            dtype,
            convs,
            norms,
            fc1,
            fc2,
        })
    }

    /// Records the forward for `batch` images of the configured size.
    pub fn prepare(&self, gpu: &Gpu, batch: usize) -> Result<ClassifierForward> {
        let cfg = &self.config;
        if batch == 0 {
            return Err(Error::Argument {
                op: "FmnistClassifier",
                arg: "batch",
                reason: "must be at least 1".into(),
            });
        }
        let s = cfg.sample_size;
        let sample = Tensor::zeros(gpu, "sample", &[batch, cfg.in_channels, s, s], self.dtype)?;
        let mut g = Graph::new(gpu, self.dtype);
        let mut h = sample.clone();
        let last = self.convs.len() - 1;
        for (i, (conv, norm)) in self.convs.iter().zip(&self.norms).enumerate() {
            let c = conv.forward(&mut g, &h, &format!("convs.{i}"))?;
            let n = norm.forward(&mut g, &c, true, &format!("norms.{i}"))?;
            h = if i < last {
                let sh = n.shape().to_vec();
                let p = g.alloc(&format!("pool.{i}"), &[sh[0], sh[1], sh[2] / 2, sh[3] / 2])?;
                ops::resample::avg_pool2x(&mut g.rec, &n, &p)?;
                p
            } else {
                n
            };
        }
        // Global mean over H×W: [N·C, HW] · (1/HW)·1 as one GEMM.
        let sh = h.shape().to_vec();
        let (nc, hw) = (sh[0] * sh[1], sh[2] * sh[3]);
        let ones = Tensor::from_f32(
            gpu,
            "mean_weights",
            &[hw, 1],
            &vec![1.0 / hw as f32; hw],
            self.dtype,
        )?;
        let pooled = g.alloc("pooled", &[batch, sh[1]])?;
        ops::gemm::matmul(
            &mut g.rec,
            &h.reshape(&[nc, hw])?,
            &ones,
            None,
            &pooled.reshape(&[nc, 1])?,
            false,
            1.0,
        )?;
        let f = self.fc1.forward(&mut g, &pooled, "fc1")?;
        let features = g.alloc("features", f.shape())?;
        ops::elementwise::unary(&mut g.rec, ops::elementwise::Unary::Silu, &f, &features)?;
        let logits = self.fc2.forward(&mut g, &features, "logits")?;
        let recording = g.finish(&[&features, &logits])?;
        Ok(ClassifierForward {
            recording,
            _ones: ones,
            sample,
            features,
            logits,
        })
    }
}

/// A recorded classifier forward.
pub struct ClassifierForward {
    recording: Recording,
    _ones: Tensor,
    /// Input [N, C, S, S] in the model dtype, images in [−1, 1].
    pub sample: Tensor,
    /// [N, feature_dim] in the model dtype: SiLU(fc1(·)), the FID features.
    pub features: Tensor,
    /// [N, num_classes] in the model dtype.
    pub logits: Tensor,
}

impl ClassifierForward {
    /// Uploads `images` (f32, N·C·S·S values) and returns (features, logits) as f32.
    pub fn run(&self, gpu: &Gpu, images: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        self.sample.write_f32(gpu, images)?;
        self.recording.submit(gpu);
        Ok((self.features.to_vec_f32(gpu)?, self.logits.to_vec_f32(gpu)?))
    }

    pub fn batch(&self) -> usize {
        self.sample.shape()[0]
    }
}
