#!/usr/bin/env python3
"""Goldens for BDIA-DDIM (offline, by hand; never in CI): the official code run on our grids.

    git clone https://github.com/guoqiang-zhang-x/BDIA /tmp/BDIA
    git -C /tmp/BDIA checkout d4c951875a6b22343a8f3ffa77e38c1a1d3dcfe3
    v/bin/python tools/gen_bdia_golden.py /tmp/BDIA      # writes tests/golden/bdia/

Zhang, Lewis, Kleijn, "Exact Diffusion Inversion via Bi-directional Integration Approximation"
(ECCV 2024). What runs, and what is official:

- Sampling: `BDIADDIMSampler` imported from the repository's
  `text-to-image/stablediffusionV2/ldm/models/diffusion/BDIAddim.py`, unmodified, with the real
  `ldm/modules/diffusionmodules/util.py` (make_ddim_timesteps, make_ddim_sampling_parameters,
  noise_like). Stubbed, because the sampling path never uses them: `ldm.util` (the package's
  `from .util import *`: instantiate_from_config) and `einops` (util.py's `repeat`, used only by
  timestep_embedding's repeat_only branch). `sample()` runs as is; its `make_schedule` runs
  and is then *re-gridded* to diffusers' `DDIMScheduler(**config).set_timesteps(N)`:
  ddim_timesteps = diffusers' timesteps (ascending), ddim_alphas = ᾱ there, ddim_alphas_prev =
  ᾱ at diffusers' `prev_timestep` (t − T//N, or the final ᾱ of `set_alpha_to_one`),
  ddim_sigmas = 0 (η = 0). The network stands in for LatentDiffusion through `Net`, whose
  `predict_start_from_z_and_v` / `predict_eps_from_z_and_v` are transcribed from the
  repository's `ldm/models/diffusion/ddpm.py` (that module needs pytorch_lightning).
- Sampling from an inverted pair: the same official `p_sample_bdiaddim`, called per step as
  `bdiaddim_sampling` does, with `x_last` preset to `latents` and x = `latents_next` (the
  official editing code, `bdia_edict_functions.BDIA_stablediffusion(reverse=False,
  fixed_starting_latent=pair)`, starts from the pair the same way: `latent_prev = pair[0]`,
  `new_latent = pair[1]`, `timesteps[1:]`).
- Inversion: `image-editing/bdia_edict_functions.py` loads CLIP and Stable Diffusion at import,
  so its inversion lines are TRANSCRIBED in `official_inversion` below: the `reverse and
  t_prev == None` branch (one DDIM-inversion step from x0 with the model at t − T/N) and the
  `reverse and t_prev != None` branch (`new_latent = latent_prev/gamma - latent_backward/gamma
  + new_latent` with `reverse_step` / `forward_step`), single sequence (`run_baseline=True`,
  guidance 1, ε-prediction). `get_alpha_and_beta` is an exact ᾱ lookup (t < 0: the final ᾱ);
  inversion cases use leading/trailing grids with T % N == 0, where t − T/N is a grid point.

Models: "toy" — the closed-form Gaussian mixture of tests/golden/solvers/toy.safetensors
(exact ε / v at the step's ᾱ), float64; "unet" — the random-weight `unet_ddpm_like` golden
UNet2DModel (float32). Round-trip cases also record the official code's own reconstruction
error max|x̂0 − x0| / max|x0| in float32 and float64 on that UNet, and UNet inversion cases how
far the official float32 sampling from the stored pair lands from its float64 reconstruction. ᾱ are diffusers' float32
`alphas_cumprod` (what the engine uses), read as float64.
"""
import importlib
import json
import os
import sys
import types

import numpy as np
import torch
from diffusers import DDIMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")
OUT = os.path.join(ROOT, "bdia")
COMMIT = "d4c951875a6b22343a8f3ffa77e38c1a1d3dcfe3"


def import_official(repo):
    sd = os.path.join(repo, "text-to-image", "stablediffusionV2")
    if not os.path.isfile(os.path.join(sd, "ldm", "models", "diffusion", "BDIAddim.py")):
        sys.exit(f"{repo} is not a checkout of guoqiang-zhang-x/BDIA (see the docstring)")
    # Stubs for what the sampling path never touches.
    ldm = types.ModuleType("ldm")
    ldm.__path__ = [os.path.join(sd, "ldm")]
    util = types.ModuleType("ldm.util")

    def instantiate_from_config(*a, **k):
        raise RuntimeError("stub: not on the sampling path")

    util.instantiate_from_config = instantiate_from_config
    einops = types.ModuleType("einops")

    def repeat(*a, **k):
        raise RuntimeError("stub: not on the sampling path")

    einops.repeat = repeat
    sys.modules.setdefault("einops", einops)
    sys.modules["ldm"] = ldm
    sys.modules["ldm.util"] = util
    return importlib.import_module("ldm.models.diffusion.BDIAddim")


class Net:
    """The LatentDiffusion surface BDIADDIMSampler reads, around a network fn(x, t)."""

    def __init__(self, fn, abar, final, parameterization="eps"):
        self.fn, self.final = fn, final
        self.num_timesteps = len(abar)
        self.alphas_cumprod = torch.tensor(abar, dtype=torch.float64)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.betas = 1 - self.alphas_cumprod / self.alphas_cumprod_prev
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1 - self.alphas_cumprod).sqrt()
        self.device = torch.device("cpu")
        self.parameterization = parameterization

    def apply_model(self, x, t, c):
        return self.fn(x, t)

    def abar(self, t):
        t = float(t.reshape(-1)[0]) if torch.is_tensor(t) else float(t)
        return self.final if t < 0 else float(self.alphas_cumprod[int(round(t))])

    # Transcribed from ldm/models/diffusion/ddpm.py (DDPM.predict_start_from_z_and_v,
    # predict_eps_from_z_and_v), with extract_into_tensor as a per-batch lookup.
    def _ex(self, a, t, x):
        return a[t].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))

    def predict_start_from_z_and_v(self, x_t, t, v):
        return self._ex(self.sqrt_alphas_cumprod, t, x_t) * x_t - self._ex(self.sqrt_one_minus_alphas_cumprod, t, x_t) * v

    def predict_eps_from_z_and_v(self, x_t, t, v):
        return self._ex(self.sqrt_alphas_cumprod, t, x_t) * v + self._ex(self.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t


def toy_fn(pred, abar_of):
    w = load_file(os.path.join(ROOT, "solvers", "toy.safetensors"))
    means, weights, var = (w[k].double() for k in ("means", "weights", "variances"))
    d = means.shape[1]

    def fn(x, t):
        a2 = abar_of(t)
        alpha, sigma = a2 ** 0.5, (1 - a2) ** 0.5
        xf = x.reshape(x.shape[0], -1).double()
        v = alpha ** 2 * var + sigma ** 2
        d2 = ((xf[:, None, :] - alpha * means[None]) ** 2).sum(-1)
        logr = weights.log()[None] - 0.5 * d * v.log()[None] - 0.5 * d2 / v[None]
        r = torch.softmax(logr, dim=1)
        post = means[None] + (alpha * var / v)[None, :, None] * (xf[:, None, :] - alpha * means[None])
        x0 = (r[:, :, None] * post).sum(1)
        eps = (xf - alpha * x0) / sigma
        out = {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0}[pred]
        return out.reshape(x.shape).to(x.dtype)

    return fn


def unet_fn(unet, dtype):
    def fn(x, t):
        with torch.no_grad():
            return unet(x.to(dtype), t).sample.to(x.dtype)

    return fn


def regrid(sched, steps):
    """diffusers' DDIM grid: ascending timesteps, ᾱ there, ᾱ at prev_timestep; final ᾱ."""
    sched.set_timesteps(steps)
    ts = sched.timesteps.numpy()[::-1].copy()
    abar = sched.alphas_cumprod.double().numpy()
    final = 1.0 if sched.config.set_alpha_to_one else float(abar[0])
    stride = sched.config.num_train_timesteps // steps
    prev = np.array([abar[t - stride] if t - stride >= 0 else final for t in ts])
    return ts, abar[ts], prev, final


def make_sampler(BDIA, net, sched, steps, gamma, dtype):
    s = BDIA.BDIADDIMSampler(net, steps, gamma, device=torch.device("cpu"))
    orig = s.make_schedule

    def make_schedule(ddim_num_steps, ddim_discretize="uniform", ddim_eta=0.0, verbose=True):
        try:
            orig(ddim_num_steps, ddim_discretize, ddim_eta, verbose=False)
        except IndexError:
            # LDM's "uniform" grid indexes ᾱ[T] when N does not divide T; the re-grid below
            # replaces every buffer p_sample_bdiaddim reads anyway.
            pass
        ts, a, prev, _ = regrid(sched, ddim_num_steps)
        s.ddim_timesteps = ts
        s.ddim_alphas = torch.tensor(a, dtype=dtype)
        s.ddim_alphas_prev = torch.tensor(prev, dtype=dtype)
        s.ddim_sigmas = torch.zeros(len(ts), dtype=dtype)
        s.ddim_sqrt_one_minus_alphas = (1 - s.ddim_alphas).sqrt()

    s.make_schedule = make_schedule
    return s


def official_sample(BDIA, net, sched, steps, gamma, z, dtype):
    torch.set_default_dtype(dtype)
    try:
        s = make_sampler(BDIA, net, sched, steps, gamma, dtype)
        x, _ = s.sample(steps, z.shape[0], tuple(z.shape[1:]), conditioning=None, x_T=z.to(dtype), eta=0.0, verbose=False)
        return x
    finally:
        torch.set_default_dtype(torch.float32)


def official_sample_from_pair(BDIA, net, sched, steps, gamma, latents, latents_next, dtype):
    """bdiaddim_sampling's loop from i = 1 with the pair (x_last, x) given."""
    torch.set_default_dtype(dtype)
    try:
        s = make_sampler(BDIA, net, sched, steps, gamma, dtype)
        s.make_schedule(steps)
        s.x_last, x = latents.to(dtype), latents_next.to(dtype)
        b = x.shape[0]
        for i in range(1, steps):
            index = steps - i - 1
            ts = torch.full((b,), int(s.ddim_timesteps[index]), dtype=torch.long)
            x, _ = s.p_sample_bdiaddim(x, None, ts, index=index)
        return x
    finally:
        torch.set_default_dtype(torch.float32)


def official_inversion(net, sched, steps, gamma, x0, dtype):
    """Transcribed from bdia_edict_functions.BDIA_stablediffusion(reverse=True) (see the
    docstring); returns (latents, latents_next) = latent_pair[0], latent_pair[1]."""
    sched.set_timesteps(steps)
    T = sched.config.num_train_timesteps
    stride = T // steps
    assert T % steps == 0, "inversion goldens need t - T/N on the grid"

    def get_alpha_and_beta(t):
        a = torch.tensor(net.abar(t), dtype=dtype)
        return a, 1 - a

    def reverse_step(model_output, timestep, sample):
        prev_timestep = timestep - stride
        alpha_prod_t, beta_prod_t = get_alpha_and_beta(timestep)
        alpha_prod_t_prev, _ = get_alpha_and_beta(prev_timestep)
        alpha_quotient = ((alpha_prod_t / alpha_prod_t_prev) ** 0.5)
        first_term = alpha_quotient * sample
        second_term = ((beta_prod_t) ** 0.5) * model_output
        third_term = alpha_quotient * ((1 - alpha_prod_t_prev) ** 0.5) * model_output
        return first_term + second_term - third_term

    def forward_step(model_output, timestep, sample):
        prev_timestep = timestep - stride
        alpha_prod_t, beta_prod_t = get_alpha_and_beta(timestep)
        alpha_prod_t_prev, _ = get_alpha_and_beta(prev_timestep)
        alpha_quotient = ((alpha_prod_t / alpha_prod_t_prev) ** 0.5)
        first_term = (1. / alpha_quotient) * sample
        second_term = (1. / alpha_quotient) * (beta_prod_t ** 0.5) * model_output
        third_term = ((1 - alpha_prod_t_prev) ** 0.5) * model_output
        return first_term - second_term + third_term

    timesteps = [int(t) for t in sched.timesteps.flip(0)]
    t_prev, latent_prev, new_latent = None, None, x0.to(dtype)
    latent_model_input = new_latent
    for t in timesteps:
        latent_model_input = new_latent
        current_timestep = t - stride
        noise_pred = net.apply_model(latent_model_input, torch.tensor(current_timestep), None)
        if t_prev is None:
            alpha_prod_t_next, beta_prod_t_next = get_alpha_and_beta(t)
            alpha_prod_t, beta_prod_t = get_alpha_and_beta(current_timestep)
            alpha_quotient = ((alpha_prod_t_next / alpha_prod_t) ** 0.5)
            first_term = alpha_quotient * latent_model_input
            second_term = ((beta_prod_t_next) ** 0.5) * noise_pred
            third_term = alpha_quotient * ((1 - alpha_prod_t) ** 0.5) * noise_pred
            new_latent = first_term + second_term - third_term
        else:
            new_latent = reverse_step(noise_pred, t, latent_model_input)
            latent_backward = forward_step(noise_pred, current_timestep, latent_model_input)
            new_latent = (latent_prev / gamma - latent_backward / gamma + new_latent)
        t_prev = current_timestep
        latent_prev = latent_model_input
    return new_latent, latent_model_input


SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False)
# (name, DDIMScheduler overrides, steps, gamma, model, kind); kind: sample | invert | roundtrip
CASES = [
    ("sample_leading_g05_toy", dict(clip_sample=False), 10, 0.5, "toy", "sample"),
    ("sample_leading_offset_g1_toy", dict(clip_sample=False, steps_offset=1, set_alpha_to_one=False), 12, 1.0, "toy", "sample"),
    ("sample_linspace_g03_toy", dict(clip_sample=False, timestep_spacing="linspace"), 9, 0.3, "toy", "sample"),
    ("sample_trailing_v_g07_toy", dict(clip_sample=False, timestep_spacing="trailing", prediction_type="v_prediction"), 8, 0.7, "toy", "sample"),
    ("sample_cosine_g0_toy", dict(clip_sample=False, beta_schedule="squaredcos_cap_v2"), 10, 0.0, "toy", "sample"),
    ("sample_sd_g05_toy", SD, 20, 0.5, "toy", "sample"),
    ("sample_leading_g05_unet", dict(clip_sample=False), 10, 0.5, "unet", "sample"),
    ("sample_trailing_g1_unet", dict(clip_sample=False, timestep_spacing="trailing"), 8, 1.0, "unet", "sample"),
    # (The mixture has no ε at σ = 0: toy inversions start from set_alpha_to_one = False.)
    ("invert_g05_toy", dict(clip_sample=False, set_alpha_to_one=False), 10, 0.5, "toy", "invert"),
    ("invert_sd_g1_toy", SD, 20, 1.0, "toy", "invert"),
    ("invert_trailing_g08_toy", dict(clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing"), 5, 0.8, "toy", "invert"),
    ("invert_leading_g1_unet", dict(clip_sample=False), 10, 1.0, "unet", "invert"),
    ("roundtrip_sd_g1_10_unet", SD, 10, 1.0, "unet", "roundtrip"),
    ("roundtrip_sd_g1_50_unet", SD, 50, 1.0, "unet", "roundtrip"),
    ("roundtrip_sd_g05_10_unet", SD, 10, 0.5, "unet", "roundtrip"),
]


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    BDIA = import_official(sys.argv[1])
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(14)
    unet = UNet2DModel.from_pretrained(os.path.join(ROOT, "unet_ddpm_like")).eval()
    unet64 = UNet2DModel.from_pretrained(os.path.join(ROOT, "unet_ddpm_like")).eval().double()
    index = []
    for name, over, steps, gamma, model, kind in CASES:
        sched = DDIMScheduler(**over)
        cfg = {k: v for k, v in dict(sched.config).items() if not k.startswith("_")}
        cfg["_class_name"] = "BDIAScheduler"
        cfg["gamma"] = gamma
        abar = sched.alphas_cumprod.double().numpy()
        final = 1.0 if sched.config.set_alpha_to_one else float(abar[0])
        pred = sched.config.prediction_type
        param = {"epsilon": "eps", "v_prediction": "v"}[pred]
        if model == "toy":
            net = Net(None, abar, final, param)
            net.fn = toy_fn(pred, net.abar)
            net64, dt, shape = net, torch.float64, (2, 1, 8, 8)
        else:
            net = Net(unet_fn(unet, torch.float32), abar, final, param)
            net64 = Net(unet_fn(unet64, torch.float64), abar, final, param)
            dt, shape = torch.float32, (2, 3, 16, 16)
        entry = dict(name=name, config=json.loads(json.dumps(cfg, default=float)), steps=steps, model=model, kind=kind)
        if kind == "sample":
            z = torch.randn(shape, generator=gen)
            x = official_sample(BDIA, net, sched, steps, gamma, z, dt)
            save_file({"z": z, "expected": x.float().contiguous()}, os.path.join(OUT, f"{name}.safetensors"))
            print(f"{name}: max|x| {x.abs().max():.4f}")
        else:
            # An image-like x0 in [-1, 1]: smooth random fields.
            lo = torch.randn((shape[0], shape[1], 4, 4), generator=gen)
            x0 = torch.tanh(1.5 * torch.nn.functional.interpolate(lo, size=shape[2:], mode="bilinear", align_corners=False))
            lat, nxt = official_inversion(net64, sched, steps, gamma, x0, torch.float64)
            rec = official_sample_from_pair(BDIA, net64, sched, steps, gamma, lat, nxt, torch.float64)
            tensors = {"x0": x0.contiguous(), "latents": lat.float().contiguous(), "latents_next": nxt.float().contiguous(),
                       "reconstruction": rec.float().contiguous()}
            entry["official_f64_roundtrip"] = rel(rec, x0)
            if model == "unet":
                # The official sampling in float32 from the same (float32-stored) pair: how far
                # float32 alone moves the reconstruction on this network.
                rec32p = official_sample_from_pair(BDIA, net, sched, steps, gamma, lat.float(), nxt.float(), torch.float32)
                entry["official_f32_from_pair"] = rel(rec32p, rec)
            if kind == "roundtrip":
                lat32, nxt32 = official_inversion(net, sched, steps, gamma, x0, torch.float32)
                rec32 = official_sample_from_pair(BDIA, net, sched, steps, gamma, lat32, nxt32, torch.float32)
                entry["official_f32_roundtrip"] = rel(rec32, x0)
                entry["official_f32_latents_max"] = float(lat32.abs().max())
                if steps > 10:  # keep the files small: the 50-step case stores x0 only
                    tensors = {"x0": x0.contiguous()}
            save_file(tensors, os.path.join(OUT, f"{name}.safetensors"))
            print(f"{name}: max|latents| {lat.abs().max():.3e}, official round trip f64 {entry['official_f64_roundtrip']:.2e}"
                  + (f", f32 {entry['official_f32_roundtrip']:.2e}" if "official_f32_roundtrip" in entry else ""))
        index.append(entry)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"official_commit": COMMIT, "cases": index}, f, indent=1)


if __name__ == "__main__":
    main()
