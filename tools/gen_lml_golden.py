#!/usr/bin/env python3
"""Goldens for the LML corrector (offline, by hand; never in CI): the official schedulers' `step`
loops with `lm` on.

    git clone https://github.com/zituitui/LML-diffusion-sampler /tmp/LML
    git -C /tmp/LML checkout e19cbdc9ca3dbad40ac2d12ebc5d801ae5194f71
    v/bin/python tools/gen_lml_golden.py /tmp/LML       # writes tests/golden/lml/

Wang et al., "Unleashing High-Quality Image Generation in Diffusion Sampling Using Second-Order
Levenberg-Marquardt-Langevin" (ICCV 2025, arXiv:2505.24222). What runs: the repository's
`scheduler/scheduling_ddim_lm.py` (`DDIMLMScheduler`), `scheduling_dpmsolver_multistep_lm.py`
(`DPMSolverMultistepLMScheduler`) and `scheduling_flow_match_euler_discrete_lm.py`
(`FlowMatchEulerDiscreteLMScheduler`), imported unmodified with diffusers (0.42); nothing is
stubbed (their `print`s are silenced). Each case constructs the class with its config (`lm`,
`lamb`, `kappa`, `freeze` included), calls `set_timesteps(N)` and runs `step` over its
timesteps from x_T = init_noise_sigma·z, the way the repository's scripts drive them through
the diffusers pipelines.

Two adaptations, both outside the official functions:
- The flow file's `lm_correct` sums over dims (1, 2): per sample on FLUX's packed [B, L, D]
  latents (what the repository runs), per (sample, column) on a 4-D image. The loop hands
  `step` the image as [N, C, H·W] (and reshapes back), so the reductions are per sample, as on
  FLUX.
- The flow file casts to float32 inside `step` and `lm_correct`. For the float64 goldens its
  module-level `torch` is swapped, during `step` only, for a view of torch whose `float32` is
  float64; in the float32 runs it is untouched.

Goldens are float64 runs (network in float64): at the README's λ with κ = 0 the correction
is the identity in exact arithmetic but subtracts nearly equal vectors, so float32 runs of the
official code are dominated by rounding. Each case also records `official_f32_vs_f64`,
max|x_f32 − x_f64| / max|x_f64| of the official code itself (the toy
mixture is evaluated in float64 either way), and every case `lm_effect`, how
far the run is from the base sampler (float64; `lm` off, or κ = 0 for the flow class, whose
`step` ignores `lm`), so a test can tell whether the correction did something. ᾱ are the schedulers' own float32 tables.

Models: "toy" — the closed-form Gaussian mixture of tests/golden/solvers/toy.safetensors
(exact ε / v / flow velocity at the step's noise level), float64, shape [2, 1, 8, 8];
"unet" — the random-weight `unet_ddpm_like` golden UNet2DModel, shape [2, 3, 16, 16] (its
output read as ε, v or flow velocity according to the case).
"""
import contextlib
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import types

import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")
OUT = os.path.join(ROOT, "lml")
COMMIT = "e19cbdc9ca3dbad40ac2d12ebc5d801ae5194f71"
FILES = {
    "DDIMLMScheduler": "scheduling_ddim_lm.py",
    "DPMSolverMultistepLMScheduler": "scheduling_dpmsolver_multistep_lm.py",
    "FlowMatchEulerDiscreteLMScheduler": "scheduling_flow_match_euler_discrete_lm.py",
}


def import_official(repo):
    head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head != COMMIT:
        sys.exit(f"{repo} is at {head or '(not a git checkout)'}, expected {COMMIT} (see the docstring)")
    mods = {}
    for cls, f in FILES.items():
        spec = importlib.util.spec_from_file_location(f"lml_{f[:-3]}", os.path.join(repo, "scheduler", f))
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        mods[cls] = m
    return mods


class Torch64(types.ModuleType):
    """torch, with `float32` meaning float64 (the flow file's casts, float64 runs only)."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, k):
        return torch.float64 if k == "float32" else getattr(torch, k)


def toy_fn(mode):
    """Exact prediction of the mixture for x = α·x0 + σ·ε; `mode` says how (α, σ) follow from
    the model's timestep: ("vp", ᾱ table, pred) or ("flow", T)."""
    w = load_file(os.path.join(ROOT, "solvers", "toy.safetensors"))
    means, weights, var = (w[k].double() for k in ("means", "weights", "variances"))
    d = means.shape[1]

    def fn(x, t):
        t = float(t)
        if mode[0] == "flow":
            sigma = t / mode[1]
            alpha = 1.0 - sigma
        else:
            a2 = float(mode[1][int(round(t))])
            alpha, sigma = a2 ** 0.5, (1 - a2) ** 0.5
        xf = x.reshape(x.shape[0], -1).double()
        v = alpha ** 2 * var + sigma ** 2
        d2 = ((xf[:, None, :] - alpha * means[None]) ** 2).sum(-1)
        logr = weights.log()[None] - 0.5 * d * v.log()[None] - 0.5 * d2 / v[None]
        r = torch.softmax(logr, dim=1)
        post = means[None] + (alpha * var / v)[None, :, None] * (xf[:, None, :] - alpha * means[None])
        x0 = (r[:, :, None] * post).sum(1)
        eps = (xf - alpha * x0) / sigma
        pred = "flow" if mode[0] == "flow" else mode[2]
        out = {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "flow": eps - x0}[pred]
        return out.reshape(x.shape).to(x.dtype)

    return fn


def unet_fn(unet):
    def fn(x, t):
        with torch.no_grad():
            tt = torch.as_tensor(t).to(x.dtype if torch.is_floating_point(torch.as_tensor(t)) else torch.long)
            return unet(x, tt).sample

    return fn


def run(mods, cls, cfg, steps, fn, z, dtype):
    """The official loop: set_timesteps, x_T = init_noise_sigma·z, step over the timesteps."""
    m = mods[cls]
    sched = getattr(m, cls)(**cfg)
    sched.set_timesteps(steps)
    x = (z.to(dtype) * getattr(sched, "init_noise_sigma", 1.0)).to(dtype)  # flow: none (x_T = z)
    flow = cls.startswith("FlowMatch")
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        for t in sched.timesteps:
            out = fn(x, t).to(dtype)
            if flow:
                shape = x.shape
                flat = lambda a: a.reshape(shape[0], shape[1], -1)
                saved = m.torch
                if dtype == torch.float64:
                    m.torch = Torch64()
                try:
                    x = sched.step(flat(out), t, flat(x)).prev_sample.reshape(shape)
                finally:
                    m.torch = saved
            else:
                x = sched.step(out, t, x).prev_sample
    return x


SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
# (name, class, config, steps, model)
CASES = [
    # The README's settings (κ = 0: the identity in exact arithmetic).
    ("ddim_celeba_k0_unet", "DDIMLMScheduler", dict(clip_sample=False, lamb=0.005, kappa=0.0), 10, "unet"),
    ("dpmpp_cifar_k0_unet", "DPMSolverMultistepLMScheduler", dict(lamb=0.0008, kappa=0.0), 10, "unet"),
    ("dpm3_cifar_k0_unet", "DPMSolverMultistepLMScheduler", dict(algorithm_type="dpmsolver", solver_order=3, lamb=0.0008, kappa=0.0), 10, "unet"),
    ("flow_flux_k0_unet", "FlowMatchEulerDiscreteLMScheduler", dict(lamb=0.01, kappa=0.0), 10, "unet"),
    # κ > 0: the correction does something.
    ("ddim_k05_unet", "DDIMLMScheduler", dict(clip_sample=False, lamb=20.0, kappa=0.5), 10, "unet"),
    ("dpmpp_k05_unet", "DPMSolverMultistepLMScheduler", dict(lamb=2.0, kappa=0.5), 10, "unet"),
    ("flow_k05_unet", "FlowMatchEulerDiscreteLMScheduler", dict(lamb=20.0, kappa=0.5), 10, "unet"),
    ("ddim_k03_freeze_v_trailing_toy", "DDIMLMScheduler", dict(clip_sample=False, timestep_spacing="trailing", prediction_type="v_prediction", lamb=0.5, kappa=0.3, freeze=0.3), 10, "toy"),
    # Ill-conditioned (`f32_limited`): float32 cannot resolve this run — the official code's
    # own float32 run is off its float64 run by 4e-4.
    ("ddim_k07_sd_offset_toy", "DDIMLMScheduler", dict(SD, clip_sample=False, set_alpha_to_one=False, steps_offset=1, lamb=2.0, kappa=0.7), 12, "toy"),
    ("dpm2_heun_k05_leading_toy", "DPMSolverMultistepLMScheduler", dict(algorithm_type="dpmsolver", solver_type="heun", timestep_spacing="leading", lamb=5.0, kappa=0.5), 10, "toy"),
    ("dpmpp3_k03_toy", "DPMSolverMultistepLMScheduler", dict(solver_order=3, lamb=0.5, kappa=0.3), 12, "toy"),
    ("dpmpp2_v_k04_toy", "DPMSolverMultistepLMScheduler", dict(prediction_type="v_prediction", lamb=1.0, kappa=0.4), 16, "toy"),
    ("flow_shift3_k03_toy", "FlowMatchEulerDiscreteLMScheduler", dict(shift=3.0, lamb=0.5, kappa=0.3), 10, "toy"),
]

F32_LIMITED = {"ddim_k07_sd_offset_toy"}


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def jsonable(cfg):
    out = {}
    for k, v in cfg.items():
        if k.startswith("_") or v is None or (isinstance(v, float) and math.isinf(v)):
            continue  # null / ±inf: the class default
        out[k] = v
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    mods = import_official(sys.argv[1])
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(1402)
    unet = UNet2DModel.from_pretrained(os.path.join(ROOT, "unet_ddpm_like")).eval()
    unet64 = UNet2DModel.from_pretrained(os.path.join(ROOT, "unet_ddpm_like")).eval().double()
    index = []
    for name, cls, over, steps, model in CASES:
        over = dict(over, lm=True)
        sched = getattr(mods[cls], cls)(**over)
        cfg = jsonable(dict(sched.config))
        cfg["_class_name"] = cls
        flow = cls.startswith("FlowMatch")
        if model == "toy":
            mode = ("flow", sched.config.num_train_timesteps) if flow else ("vp", sched.alphas_cumprod.double(), sched.config.prediction_type)
            fn64 = fn32 = toy_fn(mode)
            shape = (2, 1, 8, 8)
        else:
            fn64, fn32 = unet_fn(unet64), unet_fn(unet)
            shape = (2, 3, 16, 16)
        z = torch.randn(shape, generator=gen)
        x = run(mods, cls, over, steps, fn64, z, torch.float64)
        # The base sampler: lm off (the flow class ignores `lm`, so κ = 0 there).
        plain = run(mods, cls, dict(over, kappa=0.0) if flow else dict(over, lm=False), steps, fn64, z, torch.float64)
        entry = dict(name=name, config=json.loads(json.dumps(cfg)), steps=steps, model=model,
                     lm_effect=rel(x, plain), f32_limited=name in F32_LIMITED)
        x32 = run(mods, cls, over, steps, fn32, z, torch.float32)
        entry["official_f32_vs_f64"] = rel(x32, x)
        save_file({"z": z.contiguous(), "expected": x.float().contiguous()}, os.path.join(OUT, f"{name}.safetensors"))
        print(f"{name}: max|x| {x.abs().max():.3f}, lm effect {entry['lm_effect']:.2e}"
              + f", official f32 vs f64 {entry['official_f32_vs_f64']:.2e}")
        index.append(entry)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"official_commit": COMMIT, "cases": index}, f, indent=1)


if __name__ == "__main__":
    main()
