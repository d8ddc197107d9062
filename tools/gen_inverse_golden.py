#!/usr/bin/env python3
"""Goldens for the training-free inverse-problem methods (offline, by hand; never in CI).

    v/bin/python tools/gen_inverse_golden.py DDS_REPO RED_DIFF_REPO   # writes tests/golden/inverse/

DDS_REPO: a checkout (or `git worktree`) of HJ-harry/DDS at 509b140; RED_DIFF_REPO: NVlabs/RED-diff
at 66482f2 (the commits are checked and recorded in cases.json). What runs, and what is official:

- DDS (Chung, Lee, Ye, ICLR 2024): the conjugate-gradient solver is the official `utils.CG`,
  IMPORTED from the repository's utils.py (its unused plotting/metrics imports — matplotlib,
  skimage, scipy.ndimage — are stubbed). The sampling loop of `solver_2d.Diffusion.dds` is a
  method that reads files and writes PNGs, so its update lines are TRANSCRIBED in `dds_loop`
  (Tweedie, `Acg`/`Acg_noise` and `bcg` for σ_y = 0 / > 0, CG, the η mixing and its `j != 0`
  test), draws supplied for the steps with t' > 0,
  with the official grid `range(0, 1000, 1000 // N)` and `compute_alpha` (ᾱ at index t + 1 of
  cumprod(1 − [0, β])); batch 1 (the official inner products run over the whole batch).
- RED-diff (Mardani et al., ICLR 2024): `REDDIFF.sample` IMPORTED from `algos/reddiff.py`,
  unmodified, and run as is (autograd through the loss, torch.optim.Adam). Stubbed around it:
  `omegaconf.DictConfig`, `algos.ddim.DDIM` (the base class, unused by `sample`),
  `models.classifier_guidance_model` (the model wrapper: `model(xt, y, t, scale)` returns
  (ε̂, x̂0) from the UNet) and `utils.degredations.build_degredation_model` (our operator as
  `H.H` / `H.H_pinv`: average pooling → flattened vector, the kept pixels of the box mask, the
  zero-padded 9-tap box blur with Aᵀ standing in for H_pinv); `diffusion.alpha` is transcribed
  from `models/diffusion.py` (it calls .cuda()); `torch.randn_like` returns the supplied draws in
  order (z₀, z per step). The grid is `utils/functions.get_timesteps`: range(0, 1000, 1000 // N).

Model: the random-weight `unet_ddpm_like` golden UNet2DModel (ε-prediction, DDPM's linear
β 1e-4..0.02, T = 1000), everything in float64. Clean images are random; y = A(x) noiseless.
"""
import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")
OUT = os.path.join(ROOT, "inverse")
DDS_COMMIT = "509b140"
RED_COMMIT = "66482f2"


def commit_of(repo):
    return subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# --- our operators (the definitions), in torch ------------------------------------------
def box_mask(h, w):
    m = torch.ones(h, w, dtype=torch.float64)
    m[h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2] = 0
    return m


def taps(name):
    if name == "blur-gauss":
        k = torch.exp(-(torch.arange(11, dtype=torch.float64) - 5) ** 2 / 50.0)
    else:
        k = torch.ones(9, dtype=torch.float64)
    return k / k.sum()


def blur(x, k):
    c = x.shape[1]
    k2 = torch.outer(k, k)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k2, padding=len(k) // 2, groups=c)  # correlation, zero padding


def A(op, x):
    if op.startswith("sr"):
        return F.avg_pool2d(x, int(op[2:]))
    if op == "inpaint-box":
        return x * box_mask(*x.shape[2:])
    return blur(x, taps(op))


def AT(op, y, shape):
    if op.startswith("sr"):
        r = int(op[2:])
        return F.interpolate(y, scale_factor=r, mode="nearest") / (r * r)
    if op == "inpaint-box":
        return y * box_mask(*shape[2:])
    return blur(y, taps(op).flip(0))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    dds_repo, red_repo = sys.argv[1], sys.argv[2]
    dc, rc = commit_of(dds_repo), commit_of(red_repo)
    if not dc.startswith(DDS_COMMIT) or not rc.startswith(RED_COMMIT):
        sys.exit(f"need DDS {DDS_COMMIT} and RED-diff {RED_COMMIT}, got {dc} and {rc}")
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    # Official DDS CG (utils.py; unused imports stubbed).
    for name in ["matplotlib", "matplotlib.pyplot", "skimage", "skimage.metrics"]:
        stub(name, peak_signal_noise_ratio=None, structural_similarity=None)
    sys.path.insert(0, dds_repo)
    dds_utils = load_file("dds_utils", os.path.join(dds_repo, "utils.py"))
    sys.path.remove(dds_repo)
    # Official RED-diff sample (algos/reddiff.py; its imports stubbed).
    stub("omegaconf", DictConfig=dict)
    stub("models")
    stub("models.classifier_guidance_model", ClassifierGuidanceModel=object)
    stub("utils")
    stub("utils.degredations", build_degredation_model=None)
    stub("algos").__path__ = []
    stub("algos.ddim", DDIM=object)
    reddiff = load_file("algos.reddiff", os.path.join(red_repo, "algos", "reddiff.py"))

    unet = UNet2DModel.from_pretrained(os.path.join(ROOT, "unet_ddpm_like")).eval().double()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar_full = (1 - torch.cat([torch.zeros(1), betas])).cumprod(0)  # index t + 1 = ᾱ_t

    def eps(x, t):
        with torch.no_grad():
            return unet(x, torch.full((x.shape[0],), float(t))).sample

    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(21)
    index = []

    # ------------------------------------------------------------------ DDS
    def dds_loop(op, y, z, draws, steps, eta, cg_iter, gamma, noisy):
        """solver_2d.Diffusion.dds, transcribed (update lines only)."""
        shape = z.shape
        Acg = lambda x: AT(op, A(op, x), shape)
        Acg_noise = lambda x: x + gamma * AT(op, A(op, x), shape)
        Acg_fn = Acg_noise if noisy else Acg
        bcg = AT(op, y, shape)
        skip = 1000 // steps
        times = range(0, 1000, skip)
        times_next = [-1] + list(times[:-1])
        x = z
        k = 0
        for i, j in zip(reversed(times), reversed(times_next)):
            at, at_next = abar_full[i + 1], abar_full[j + 1]
            et = eps(x, i)
            x0_t = (x - et * (1 - at).sqrt()) / at.sqrt()
            if noisy:
                bcg = x0_t + gamma * AT(op, y, shape)
            x0_t_hat = dds_utils.CG(Acg_fn, bcg, x0_t, n_inner=cg_iter)
            c1 = (1 - at_next).sqrt() * eta
            c2 = (1 - at_next).sqrt() * ((1 - eta ** 2) ** 0.5)
            # The official test is `j != 0`: the step to t' = 0 ends on x̂ without re-noising, and
            # the last one (t' = −1, ᾱ = 1, c1 = c2 = 0) re-noises with zero weight (no draw kept).
            if j != 0:
                zk = draws[k] if j > 0 else torch.zeros_like(x)
                x = at_next.sqrt() * x0_t_hat + c1 * zk + c2 * et
                k += 1 if j > 0 else 0
            else:
                x = x0_t_hat
        return x

    for op, steps, noisy in [("sr2", 5, False), ("inpaint-box", 4, False), ("blur-gauss", 4, True)]:
        clean = torch.rand((1, 3, 16, 16), generator=gen) * 2 - 1
        y = A(op, clean)
        z = torch.randn((1, 3, 16, 16), generator=gen)
        draws = torch.randn((steps - 2, 1, 3, 16, 16), generator=gen)
        x = dds_loop(op, y, z, draws, steps, 0.85, 5, 1.0, noisy)
        name = f"dds_{op}_{steps}"
        save_file({"aty": AT(op, y, clean.shape).float().contiguous(), "z": z.float().contiguous(),
                   "step_noise": draws.float().contiguous(), "expected": x.float().contiguous()},
                  os.path.join(OUT, f"{name}.safetensors"))
        index.append(dict(name=name, method="dds", operator=op, steps=steps, batch=1, noisy=noisy,
                          max_abs=float(x.abs().max())))
        print(f"{name}: max|x| {x.abs().max():.4f}")

    # ------------------------------------------------------------------ RED-diff
    class Diffusion:
        def alpha(self, t):  # models/diffusion.py, without .cuda()
            return abar_full.index_select(0, t + 1)

    class Model:
        diffusion = Diffusion()

        def __call__(self, xt, y, t, scale=1.0):
            a = self.diffusion.alpha(t).view(-1, 1, 1, 1)
            et = eps(xt, int(t[0]))
            return et, (xt - (1 - a).sqrt() * et) / a.sqrt()

    for op, steps, batch in [("sr4", 5, 2), ("inpaint-box", 5, 2), ("blur-box", 4, 1)]:
        clean = torch.rand((batch, 3, 16, 16), generator=gen) * 2 - 1
        shape = clean.shape
        mask = box_mask(16, 16).bool()

        class H:
            @staticmethod
            def H(x):
                if op == "inpaint-box":
                    return x[:, :, mask].reshape(x.shape[0], -1)
                return A(op, x).reshape(x.shape[0], -1)

            @staticmethod
            def H_pinv(v):
                if op == "inpaint-box":
                    out = torch.zeros(shape)
                    out[:, :, mask] = v.reshape(shape[0], shape[1], -1)
                    return out
                if op.startswith("sr"):
                    r = int(op[2:])
                    return F.interpolate(v.reshape(shape[0], 3, 16 // r, 16 // r), scale_factor=r, mode="nearest")
                return AT(op, v.reshape(shape), shape)

        reddiff.build_degredation_model = lambda cfg: H
        algo = types.SimpleNamespace(awd=True, cond_awd=False, grad_term_weight=0.25, obs_weight=1.0, eta=0.0,
                                     lr=0.1, denoise_term_weight="linear", sigma_x0=0.0, sigma_y=0.0, deg=op)
        cfg = types.SimpleNamespace(algo=algo, exp=types.SimpleNamespace(save_evolution=False))
        solver = reddiff.REDDIFF(Model(), cfg)
        draws = torch.randn((2 * steps,) + tuple(shape), generator=gen)
        it = iter(draws)
        real = torch.randn_like
        torch.randn_like = lambda t, **kw: next(it).clone()
        try:
            y0 = H.H(clean)
            ts = list(range(0, 1000, 1000 // steps))
            x0_pred, _ = solver.sample(torch.zeros(shape), None, ts, y_0=y0)
        finally:
            torch.randn_like = real
        x = x0_pred.detach()
        name = f"reddiff_{op}_{steps}"
        y = A(op, clean)
        save_file({"aty": AT(op, y, shape).float().contiguous(), "step_noise": draws.float().contiguous(),
                   "expected": x.float().contiguous()}, os.path.join(OUT, f"{name}.safetensors"))
        index.append(dict(name=name, method="red-diff", operator=op, steps=steps, batch=batch,
                          max_abs=float(x.abs().max())))
        print(f"{name}: max|x| {x.abs().max():.4f}")

    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"dds_commit": dc, "red_diff_commit": rc, "cases": index}, f, indent=1)


if __name__ == "__main__":
    main()
