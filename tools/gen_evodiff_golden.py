#!/usr/bin/env python3
"""Goldens for EVODiff (offline, by hand; never in CI): the official sampler on a random-weight UNet.

    git clone https://github.com/ShiguiLi/EVODiff /tmp/EVODiff
    git -C /tmp/EVODiff checkout 1811f9ea63cbc9b11e3e00895186c411726f6b5f
    git clone https://github.com/LuChengTHU/dpm-solver /tmp/dpm-solver
    git -C /tmp/dpm-solver checkout 52bc3fbcd5de56d60917b826b15d2b69460fc2fa
    v/bin/python tools/gen_evodiff_golden.py /tmp/EVODiff /tmp/dpm-solver   # writes tests/golden/evodiff/

Li et al., "EVODiff: Entropy-aware Variance Optimized Diffusion Inference". What runs, and what
is official:

- `EVODiff_edm` imported from the repository's `code_demo/edm_cifar10/samplers/evodiff.py`
  (with its `samplers/utils.py`), unmodified, and called as the demo's `sample.py` calls it:
  `algorithm_type="data_prediction"`, `sample(method="multistep", order=2, skip_type=…,
  lower_order_final=…, denoise_to_zero=False)`. Nothing is stubbed: the sampling path imports
  only torch and numpy.
- The discrete-time VP wrapping is DPM-Solver's own (`dpm_solver_pytorch.py` of
  LuChengTHU/dpm-solver): `NoiseScheduleVP('discrete', alphas_cumprod=…)` (t ∈ [1/N, 1], log α
  piecewise linear in t, λ clipped at −5.1) and `model_wrapper(model, ns, model_type=…)`
  (the network called at (t − 1/N)·1000; "noise", "x_start" and "v" models). The ONE addition:
  `NoiseScheduleVP` has no `marginal_kappa`, which `EVODiff_edm.sample` reads; it is added as
  κ_t = σ_t/α_t = exp(−λ_t) (the expression `samplers/utils.py` leaves commented in
  `NoiseScheduleEDM.marginal_kappa`).
- Everything runs in float64 (`torch.set_default_dtype(torch.float64)`, the schedule built with
  `dtype=torch.float64` from diffusers' float32 `alphas_cumprod` read as float64, a float64 copy
  of the `unet_ddpm_like` golden UNet2DModel). The official time grid of each case is stored
  too, so the grids are checked on their own.
"""
import importlib
import json
import os
import sys

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")
OUT = os.path.join(ROOT, "evodiff")
COMMIT = "1811f9ea63cbc9b11e3e00895186c411726f6b5f"
DPM_SOLVER_COMMIT = "52bc3fbcd5de56d60917b826b15d2b69460fc2fa"

# (name, training-schedule overrides, EVODiff fields, steps)
CASES = [
    ("logsnr_eps_10", {}, {}, 10),
    ("time_uniform_eps_8", {}, {"skip_type": "time_uniform"}, 8),
    ("time_quadratic_v_6", {"prediction_type": "v_prediction"}, {"skip_type": "time_quadratic"}, 6),
    ("edm_eps_7", {}, {"skip_type": "edm"}, 7),
    ("logsnr_sample_5", {"prediction_type": "sample"}, {}, 5),
    ("logsnr_eps_22", {}, {}, 22),
    ("logsnr_no_lower_final_6", {}, {"lower_order_final": False}, 6),
    ("time_uniform_range_2", {}, {"skip_type": "time_uniform", "t_start": 0.9, "t_end": 0.01}, 2),
    ("logsnr_cosine_9", {"beta_schedule": "squaredcos_cap_v2"}, {}, 9),
]


def import_official(evodiff_repo, dpm_repo):
    demo = os.path.join(evodiff_repo, "code_demo", "edm_cifar10")
    if not os.path.isfile(os.path.join(demo, "samplers", "evodiff.py")):
        sys.exit(f"{evodiff_repo} is not a checkout of ShiguiLi/EVODiff (see the docstring)")
    if not os.path.isfile(os.path.join(dpm_repo, "dpm_solver_pytorch.py")):
        sys.exit(f"{dpm_repo} is not a checkout of LuChengTHU/dpm-solver (see the docstring)")
    sys.path.insert(0, demo)
    sys.path.insert(0, dpm_repo)
    return importlib.import_module("samplers.evodiff"), importlib.import_module("dpm_solver_pytorch")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    evo, dps = import_official(sys.argv[1], sys.argv[2])

    class VP(dps.NoiseScheduleVP):
        def marginal_kappa(self, t):
            return torch.exp(-self.marginal_lambda(t))

    os.makedirs(OUT, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    unet = UNet2DModel.from_pretrained(os.path.join(ROOT, "unet_ddpm_like")).eval().double()
    gen = torch.Generator().manual_seed(15)
    index = []
    for name, over, fields, steps in CASES:
        sched = DDPMScheduler(**over)
        cfg = {k: v for k, v in dict(sched.config).items() if not k.startswith("_")}
        cfg["_class_name"] = "EVODiffScheduler"
        cfg.update(fields)
        ns = VP("discrete", alphas_cumprod=sched.alphas_cumprod.double(), dtype=torch.float64)
        model_type = {"epsilon": "noise", "sample": "x_start", "v_prediction": "v"}[sched.config.prediction_type]

        def net(x, t):
            with torch.no_grad():
                return unet(x, t).sample

        model_fn = dps.model_wrapper(net, ns, model_type=model_type)
        solver = evo.EVODiff_edm(ns, algorithm_type="data_prediction", correcting_x0_fn=None)
        z = torch.randn((2, 3, 16, 16), generator=gen, dtype=torch.float32)
        skip = fields.get("skip_type", "logSNR")
        t_start, t_end = fields.get("t_start"), fields.get("t_end")
        x = solver.sample(model_fn, z.double(), steps=steps, t_start=t_start, t_end=t_end, order=2,
                          skip_type=skip, method="multistep",
                          lower_order_final=fields.get("lower_order_final", True), denoise_to_zero=False)
        t0 = 1.0 / ns.total_N if t_end is None else t_end
        tT = ns.T if t_start is None else t_start
        grid = solver.get_time_steps(skip, tT, t0, steps, torch.device("cpu"))
        # ᾱ as the official run read it (torch's float32 cumprod; the grid test starts from it).
        save_file({"z": z.contiguous(), "expected": x.float().contiguous(), "alphas_cumprod": sched.alphas_cumprod.contiguous()},
                  os.path.join(OUT, f"{name}.safetensors"))
        entry = dict(name=name, config=json.loads(json.dumps(cfg, default=float)), steps=steps,
                     total_n=ns.total_N, timesteps=[float(v) for v in grid], max_abs=float(x.abs().max()))
        print(f"{name}: max|x| {entry['max_abs']:.4f}, N {ns.total_N}, grid {entry['timesteps'][0]:.6f}..{entry['timesteps'][-1]:.6f}")
        index.append(entry)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"official_commit": COMMIT, "dpm_solver_commit": DPM_SOLVER_COMMIT, "cases": index}, f, indent=1)


if __name__ == "__main__":
    main()
