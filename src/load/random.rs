//! Synthetic weights for benchmarks and tests of configs we have no checkpoint for: each
//! parameter is a deterministic function of (seed, name), scaled like PyTorch's default init
//! (uniform ±1/√fan_in), with GroupNorm scales near 1 and small biases.

use super::WeightSource;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// Seeded synthetic parameters.
pub struct RandomWeights {
    pub seed: u64,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

impl WeightSource for RandomWeights {
    fn tensor(&self, gpu: &Gpu, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let mut state = name
            .bytes()
            .fold(self.seed ^ 0x9E3779B97F4A7C15, |h, b| mix(h ^ b as u64));
        let mut uniform = || {
            state = state.wrapping_add(0x9E3779B97F4A7C15);
            (mix(state) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let n: usize = shape.iter().product();
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let is_norm = name.contains("norm") && shape.len() == 1;
        let data: Vec<f32> = (0..n)
            .map(|_| {
                let u = uniform();
                (if is_norm && name.ends_with("weight") {
                    1.0 + 0.1 * u
                } else if name.ends_with("bias") || is_norm {
                    0.05 * u
                } else {
                    u / (fan_in as f64).sqrt()
                }) as f32
            })
            .collect();
        Tensor::from_f32(gpu, name, shape, &data, dtype)
    }
}
