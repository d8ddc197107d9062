//! The batch plumbing of classifier-free guidance (Ho & Salimans, 2022), shared by the
//! class-label ([`super::guided`]) and text ([`super::text_guided`]) guided models: the solver's
//! N-sample input is copied into both halves of a 2N-sample forward, and the halves of its
//! output are combined as ε̂ = (1 − w)·ε̂_uncond + w·ε̂_cond — diffusers' ε̂_u + w·(ε̂_c − ε̂_u).
//! The first half of the forward's batch is the conditional one, the second the unconditional.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recording};
use crate::ops;
use crate::tensor::Tensor;

/// The copy-in and combine recordings around a 2N-sample forward, and the N-sample tensors the
/// solver sees.
pub struct CfgHalves {
    /// The solver's input [N, C, H, W].
    pub input: Tensor,
    /// The guided prediction [N, C, H, W], valid after [`CfgHalves::combine`].
    pub output: Tensor,
    before: Recording,
    after: Recording,
    _uncond: Tensor,
}

impl CfgHalves {
    /// `sample` and `output` are the forward's [2N, C, H, W] input and output; `op` names the
    /// caller in errors.
    pub fn new(
        gpu: &Gpu,
        op: &'static str,
        sample: &Tensor,
        output: &Tensor,
        n: usize,
        scale: f32,
    ) -> Result<Self> {
        let s = sample.shape().to_vec();
        if n == 0 || s.len() != 4 || s[0] != 2 * n || output.shape() != s.as_slice() {
            return Err(Error::Argument {
                op,
                arg: "batch",
                reason: format!(
                    "the forward holds {} samples; guidance of {n} needs {}",
                    s.first().copied().unwrap_or(0),
                    2 * n
                ),
            });
        }
        let half = [n, s[1], s[2], s[3]];
        let dt = sample.dtype();
        let input = Tensor::zeros(gpu, "guided.input", &half, dt)?;
        let uncond = Tensor::zeros(gpu, "guided.uncond", &half, dt)?;
        let guided = Tensor::zeros(gpu, "guided.output", &half, dt)?;
        // The batch halves as channel blocks of one sample: [2N, C, H, W] = [1, 2·N·C, H, W].
        let planes = |t: &Tensor, c: usize| t.reshape(&[1, c * s[1], s[2], s[3]]);
        let before = {
            let mut rec = gpu.recorder();
            let x = planes(&input, n)?;
            ops::concat::concat_channels(&mut rec, &x, &x, &planes(sample, 2 * n)?)?;
            rec.finish()?
        };
        let after = {
            let mut rec = gpu.recorder();
            let out = planes(output, 2 * n)?;
            ops::concat::slice_channels(&mut rec, &out, 0, &planes(&guided, n)?)?;
            ops::concat::slice_channels(&mut rec, &out, n * s[1], &planes(&uncond, n)?)?;
            ops::elementwise::axpby(&mut rec, 1.0 - scale, &uncond, scale, &guided)?;
            rec.finish()?
        };
        Ok(CfgHalves {
            input,
            output: guided,
            before,
            after,
            _uncond: uncond,
        })
    }

    /// Submits the copy of the input into both halves (before the forward).
    pub fn copy_in(&self, gpu: &Gpu) {
        self.before.submit(gpu);
    }

    /// Submits the combination of the two halves into `output` (after the forward).
    pub fn combine(&self, gpu: &Gpu) {
        self.after.submit(gpu);
    }
}
