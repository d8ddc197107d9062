#!/usr/bin/env python3
"""Golden MR Sampler runs produced by the official implementation (offline, by hand; never in CI).

    git clone https://github.com/grrrute/mr-sampler /tmp/mr-sampler
    git -C /tmp/mr-sampler checkout 896764cfa1f4ad979a81493a7a468d238aad07de
    v/bin/python tools/gen_mrs_golden.py --official /tmp/mr-sampler   # writes tests/golden/mrs/

(or MR_SAMPLER_REPO=/tmp/mr-sampler). Needs torch, diffusers, safetensors, numpy, scipy, tqdm.

The script imports the official `universal-image-restoration/utils/sampler.py` (`MRSampler`,
`convert_params`) and `utils/sde_utils.py` (`IRSDE`) and runs `MRSampler.sampling` itself. What
is stubbed, and why it does not touch the sampling path:
- the `utils` package's `__init__.py` is not executed (it imports the data/image helpers and
  cv2); `utils.sde_utils` and `utils.sampler` are loaded as submodules of a bare package;
- `cv2` and `torchvision` (imported at the top of sampler.py / sde_utils.py for image saving)
  are empty modules when not installed;
- `np.int` (removed in numpy 1.24; sampler.py uses it in an annotation of the unused
  `sigmas_to_timesteps`) is set to `int` when missing;
- inside sampler.py, `torch.randn_like` returns the supplied per-step draws in order (so SDE
  runs are reproducible and our `--step-noise` can feed the same draws), and `torch.clip` —
  applied once, to the final sample — is the identity: the goldens are the unclipped final x0.
The network is a random-weight diffusers UNet2DModel taking concat([x, μ]) (in_channels 2C)
at the float time t; the process is the released configuration's (T = 100, max_sigma 50,
cosine, eps 0.005). Every case starts from x_T = μ + max_sigma·z (the `noisy_state` argument).

Files: unet/ (the diffusers folder), io.safetensors (`mu` [N,C,H,W], `z` [N,C,H,W], `step_noise`
[S,N,C,H,W]: draw k is what the official code's k-th `randn_like` returns), expected.safetensors
(one tensor per case: the final sample), cases.json (every case's options and the official
time grid it ran on), schedules.json (the official timesteps and interpolated α, σ, λ of each
schedule setting, for the host-side schedule test).
"""
import argparse
import json
import os
import subprocess
import sys
import types

import numpy as np
import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

PINNED = "896764cfa1f4ad979a81493a7a468d238aad07de"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "mrs")
N, C, H, W = 2, 1, 8, 8
MAX_STEPS = 12
SDE_OPT = {"sde": {"max_sigma": 50, "T": 100, "schedule": "cosine", "eps": 0.005}}
SCHEDULES = ["linspace", "linear-lambda", "trailing", "leading", "karras-n", "karras-t"]


def load_official(repo):
    uir = os.path.join(repo, "universal-image-restoration")
    if not os.path.isfile(os.path.join(uir, "utils", "sampler.py")):
        sys.exit(f"{repo} is not a checkout of grrrute/mr-sampler (no universal-image-restoration/utils/sampler.py)")
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        head = ""
    if head and head != PINNED:
        print(f"warning: {repo} is at {head}, the goldens were made at {PINNED}", file=sys.stderr)
    for name in ["cv2", "torchvision", "torchvision.utils"]:
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    if "torchvision" in sys.modules and not hasattr(sys.modules["torchvision"], "utils"):
        sys.modules["torchvision"].utils = sys.modules["torchvision.utils"]
    if not hasattr(np, "int"):
        np.int = int
    pkg = types.ModuleType("utils")
    pkg.__path__ = [os.path.join(uir, "utils")]
    sys.modules["utils"] = pkg
    import utils.sde_utils as sde_utils
    import utils.sampler as sampler
    return sde_utils, sampler, head or PINNED


class TorchInSampler(types.ModuleType):
    """sampler.py's `torch`: the real module, with randn_like returning supplied draws and
    clip the identity (see the module doc)."""

    def __init__(self):
        super().__init__("torch")
        self.draws, self.k = None, 0

    def __getattr__(self, name):
        return getattr(torch, name)

    def randn_like(self, x, *a, **kw):
        d = self.draws[self.k]
        self.k += 1
        assert d.shape == x.shape, (d.shape, x.shape)
        return d.clone()

    def clip(self, x, *a, **kw):
        return x


def make_unet():
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=H, in_channels=2 * C, out_channels=C, layers_per_block=1,
        block_out_channels=(4, 8), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=2, attention_head_dim=4)
    return unet.eval()


def cases():
    out = []
    for form in ["data", "noise"]:
        for solver, order in [("ode", 1), ("ode", 2), ("ode", 3), ("sde", 1), ("sde", 2)]:
            for sched in SCHEDULES:
                for fit in ["noise", "data", "velocity"]:
                    out.append(dict(name=f"{form}_{solver}{order}_{sched}_{fit}", form=form, solver_type=solver,
                                    order=order, time_schedule=sched, fit_target=fit, steps=7))
    extra = [
        # λ_min clipping of every schedule (karras-n/karras-t ignore it in the official code).
        *[dict(name=f"clip_{s}", time_schedule=s, lambda_min=-2.0) for s in SCHEDULES],
        dict(name="clip_noise_sde2_trailing", form="noise", solver_type="sde", order=2, time_schedule="trailing",
             lambda_min=-1.0, fit_target="velocity"),
        # 10 steps or more: the driver keeps the full order to the end.
        dict(name="long_data_ode3_linspace", order=3, steps=12),
        dict(name="long_noise_sde2_linear_lambda", form="noise", solver_type="sde", order=2,
             time_schedule="linear-lambda", steps=12, fit_target="data"),
        dict(name="long_data_sde2_karras_n_velocity", solver_type="sde", order=2, time_schedule="karras-n",
             steps=10, fit_target="velocity"),
        # denoise_last (data form: the final x̂0).
        dict(name="denoise_last_data_ode2", denoise_last=True),
        dict(name="denoise_last_data_ode3_karras_t", order=3, time_schedule="karras-t", denoise_last=True),
        dict(name="denoise_last_data_sde2_linear_lambda", solver_type="sde", order=2, time_schedule="linear-lambda",
             denoise_last=True, fit_target="data"),
        # dynamic thresholding of x̂0 (data form).
        dict(name="threshold_data_ode2_data", fit_target="data", thresholding=True, threshold_ratio=0.9,
             threshold_max=1.2),
        dict(name="threshold_data_sde1_noise", solver_type="sde", order=1, thresholding=True, threshold_ratio=0.95,
             threshold_max=1.5, time_schedule="linear-lambda"),
        # ρ and the leading offset; the released defaults otherwise.
        dict(name="rho5_karras_t", time_schedule="karras-t", rho=5.0),
        dict(name="rho3_karras_n_noise_ode3", form="noise", order=3, time_schedule="karras-n", rho=3.0),
        dict(name="offset3_leading", time_schedule="leading", timestep_offset=3),
        dict(name="released_config_20_steps", steps=20),
        dict(name="lambda_min_neg_inf_linear_lambda", time_schedule="linear-lambda", lambda_min=float("-inf")),
    ]
    base = dict(form="data", solver_type="ode", order=2, time_schedule="linspace", fit_target="noise", steps=7,
                lambda_min=-5.0, denoise_last=False, thresholding=False, threshold_ratio=0.995, threshold_max=1.5,
                rho=7.0, timestep_offset=0)
    full = []
    for c in out + extra:
        d = dict(base)
        d.update(c)
        full.append(d)
    return full


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", default=os.environ.get("MR_SAMPLER_REPO"),
                    help="checkout of https://github.com/grrrute/mr-sampler (default: $MR_SAMPLER_REPO)")
    args = ap.parse_args()
    if not args.official:
        sys.exit("give --official PATH (or MR_SAMPLER_REPO): a checkout of https://github.com/grrrute/mr-sampler "
                 f"at {PINNED}")
    torch.set_num_threads(1)
    sde_utils, sampler, commit = load_official(args.official)
    proxy = TorchInSampler()
    sampler.torch = proxy

    os.makedirs(OUT, exist_ok=True)
    unet = make_unet()
    unet.save_pretrained(os.path.join(OUT, "unet"), safe_serialization=True)

    g = torch.Generator().manual_seed(1234)
    mu = (torch.rand(N, C, H, W, generator=g) * 2 - 1) * 0.9
    z = torch.randn(N, C, H, W, generator=g)
    step_noise = torch.randn(MAX_STEPS * 2, N, C, H, W, generator=g)

    def model(x, m, t, **kw):
        tt = torch.full((x.shape[0],), float(t), dtype=torch.float32)
        with torch.no_grad():
            return unet(torch.cat([x, m], dim=1), tt).sample

    expected, meta = {}, []
    schedules = {}
    for c in cases():
        base = sde_utils.IRSDE(max_sigma=50, T=100, schedule="cosine", eps=0.005, device="cpu")
        base.set_model(model)
        s = sampler.MRSampler(
            base, SDE_OPT, num_sample_steps=c["steps"], solver_type=c["solver_type"], parameterization=c["form"],
            order=c["order"], fit_target=c["fit_target"], lambda_min=c["lambda_min"],
            time_schedule=c["time_schedule"], timestep_offset=c["timestep_offset"], rho=c["rho"],
            thresholding=c["thresholding"], threshold_ratio=c["threshold_ratio"],
            threshold_max=c["threshold_max"], denoise_last=c["denoise_last"])
        m_steps = len(s.timesteps) - 1
        assert m_steps <= MAX_STEPS * 2
        proxy.draws, proxy.k = step_noise, 0
        noisy = mu + z * s.sde.max_sigma
        x0, _, _ = s.sampling(mu, noisy_state=noisy)
        draws = proxy.k
        want = 0 if c["solver_type"] == "ode" else (m_steps - 1 if c["denoise_last"] else m_steps)
        assert draws == want, (c["name"], draws, want)
        assert torch.isfinite(x0).all(), c["name"]
        expected[c["name"]] = x0.float().contiguous()
        key = f'{c["time_schedule"]}|{c["steps"]}|{c["lambda_min"]}|{c["rho"]}|{c["timestep_offset"]}'
        if key not in schedules:
            schedules[key] = dict(
                time_schedule=c["time_schedule"], steps=c["steps"], lambda_min=str(c["lambda_min"]), rho=c["rho"],
                timestep_offset=c["timestep_offset"], timesteps=[float(t) for t in s.timesteps],
                alphas=s.alphas.tolist(), sigmas=s.sigmas.tolist(), lambdas=s.lambdas.tolist())
        d = dict(c)
        d["lambda_min"] = str(c["lambda_min"])  # JSON has no -inf
        d["official_steps"] = m_steps
        d["max_abs"] = float(x0.abs().max())
        meta.append(d)
        print(f'{c["name"]}: {m_steps} steps, {draws} draws, max|x0| {d["max_abs"]:.4g}')

    save_file({"mu": mu.contiguous(), "z": z.contiguous(), "step_noise": step_noise.contiguous()},
              os.path.join(OUT, "io.safetensors"))
    save_file(expected, os.path.join(OUT, "expected.safetensors"))
    header = dict(official_repository="https://github.com/grrrute/mr-sampler", official_commit=commit,
                  torch=torch.__version__, process=SDE_OPT["sde"], shape=[N, C, H, W],
                  note="expected = MRSampler.sampling's final x0 before its clip to [0, 1]")
    for name, key, rows in [("cases.json", "cases", meta), ("schedules.json", "schedules", list(schedules.values()))]:
        with open(os.path.join(OUT, name), "w") as f:
            body = ",\n".join("  " + json.dumps(r) for r in rows)
            f.write(json.dumps(header, indent=1)[:-2] + f',\n "{key}": [\n{body}\n ]\n}}\n')
    print(f"{len(meta)} cases written to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
