//! Checks and outputs shared by the subcommands (issue 17): numeric flag parsers on the library's
//! domain check, the input-shape check, PNG channel conversion, and the output plans of a run.

use crate::input_error;
use diffuse::domain::Domain;
use diffuse::load::HostTensor;
use diffuse::output::OutputPlan;
use diffuse::Error;
use std::path::Path;

/// Numeric flag values pass the library's one domain check ([`diffuse::domain`]) while the
/// command line is parsed: clap then names the flag, before anything is read or computed.
pub(crate) fn domain_parser<T: std::str::FromStr + Into<f64> + Copy>(
    s: &str,
    dom: Domain,
) -> Result<T, String> {
    let v: T = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    dom.check(v.into()).map(|_| v)
}

pub(crate) fn finite_f32(s: &str) -> Result<f32, String> {
    domain_parser(s, Domain::FINITE)
}

pub(crate) fn positive_f64(s: &str) -> Result<f64, String> {
    domain_parser(s, Domain::POSITIVE)
}

pub(crate) fn lambda_min_f64(s: &str) -> Result<f64, String> {
    domain_parser(s, Domain::FINITE.or_minus_inf())
}

/// An input tensor must be [N, C, H, W] with every dimension at least 1; an empty one is named
/// by the dimension that is zero (an empty batch is the batch, not the image size).
pub(crate) fn check_nchw(input: &Path, name: &str, shape: &[usize]) -> Result<(), Error> {
    if shape.len() != 4 {
        return Err(input_error(
            input,
            format!("`{name}` has shape {shape:?}; expected [N, C, H, W]"),
        ));
    }
    for (d, what) in shape
        .iter()
        .zip(["batch N", "channel count C", "height H", "width W"])
    {
        if *d == 0 {
            return Err(input_error(
                input,
                format!("`{name}` has shape {shape:?}: its {what} is 0"),
            ));
        }
    }
    Ok(())
}

/// The outputs of `sample` and `restore`: the PNG grid (`--out`) and, with `--raw`, the f32
/// tensor `sample`; validated and reserved before any work.
pub(crate) struct SampleOutputs {
    plan: OutputPlan,
    png: usize,
    raw: Option<usize>,
}

impl SampleOutputs {
    pub(crate) fn plan(out: &Path, raw: Option<&Path>) -> Result<SampleOutputs, Error> {
        let mut plan = OutputPlan::new();
        let png = plan.file("--out", out)?;
        let raw = raw.map(|r| plan.file("--raw", r)).transpose()?;
        Ok(SampleOutputs { plan, png, raw })
    }

    /// Writes both and renames them into place only when both were written.
    pub(crate) fn commit(self, x: &[f32], shape: &[usize]) -> Result<(), Error> {
        self.commit_with(x, shape, &[])
    }

    /// As [`Self::commit`], with `extra` tensors beside `sample` in the `--raw` file.
    pub(crate) fn commit_with(
        mut self,
        x: &[f32],
        shape: &[usize],
        extra: &[(&str, &HostTensor)],
    ) -> Result<(), Error> {
        if let Some(r) = self.raw {
            let t = HostTensor {
                shape: shape.to_vec(),
                data: x.to_vec(),
            };
            let mut tensors = vec![("sample", &t)];
            tensors.extend_from_slice(extra);
            self.plan
                .write(r, &diffuse::load::f32_tensors_bytes(&tensors)?)?;
        }
        let png =
            diffuse::image_io::encode_grid(x, [shape[0], shape[1], shape[2], shape[3]], None)?;
        self.plan.write(self.png, &png)?;
        self.plan.commit()
    }
}

impl SampleOutputs {
    /// Writes `--raw` (`sample` = `x` as is) and the PNG of `png_x` (already on [−1, 1]) with
    /// no gutter for one image, and renames both into place only when both were written.
    pub(crate) fn commit_images(
        mut self,
        x: &[f32],
        png_x: &[f32],
        shape: &[usize],
    ) -> Result<(), Error> {
        if let Some(r) = self.raw {
            let t = HostTensor {
                shape: shape.to_vec(),
                data: x.to_vec(),
            };
            self.plan
                .write(r, &diffuse::load::f32_tensors_bytes(&[("sample", &t)])?)?;
        }
        let png =
            diffuse::image_io::encode_images(png_x, [shape[0], shape[1], shape[2], shape[3]])?;
        self.plan.write(self.png, &png)?;
        self.plan.commit()
    }
}

/// A `--json` report output, validated and reserved before any work.
pub(crate) fn json_plan(json: Option<&Path>) -> Result<(OutputPlan, Option<usize>), Error> {
    let mut plan = OutputPlan::new();
    let id = json.map(|p| plan.file("--json", p)).transpose()?;
    Ok((plan, id))
}

/// Writes the report into the planned `--json` output and commits it.
pub(crate) fn commit_json(
    mut plan: OutputPlan,
    id: Option<usize>,
    v: &serde_json::Value,
) -> Result<(), Error> {
    if let Some(id) = id {
        plan.write(id, format!("{v:#}\n").as_bytes())?;
    }
    plan.commit()
}

/// A PNG input converted to the model's channel count (gray ↔ RGB, see
/// `image_io::to_channels`); safetensors inputs are taken as stored.
pub(crate) fn png_channels(
    input: &Path,
    x: Vec<f32>,
    shape: Vec<usize>,
    channels: usize,
) -> Result<(Vec<f32>, Vec<usize>), Error> {
    if !is_png(input) || !matches!(channels, 1 | 3) {
        return Ok((x, shape));
    }
    let (x, s) =
        diffuse::image_io::to_channels(x, [shape[0], shape[1], shape[2], shape[3]], channels)
            .map_err(|e| input_error(input, e.to_string()))?;
    Ok((x, s.to_vec()))
}

pub(crate) fn is_png(input: &Path) -> bool {
    input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}
