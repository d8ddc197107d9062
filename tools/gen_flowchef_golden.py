#!/usr/bin/env python3
"""FlowChef goldens (offline, by hand; never in CI).

    v/bin/python tools/gen_flowchef_golden.py FLOWCHEF_REPO   # writes tests/golden/inverse/flowchef_*

FLOWCHEF_REPO: a checkout of FlowChef/FlowChef at 9b705fc (checked, recorded in
flowchef_cases.json). `sample_ode_generative` is IMPORTED from
`inverseproblems/pixel_models/rfpp/generate_inverseproblems_flowchef.py` and run unmodified
(autograd for the steering gradient, its own time grid, Euler), with the repository's own
`SuperResolutionOperator` / `BoxInpaintingOperator` from `inverse_operators.py`. Stubbed around
it: the module's unused imports (`network_edm`, `utils`, `matplotlib`, `torchvision.utils.save_image`), the
three `torchvision.transforms` it uses to read the reference PNG (ToTensor, Normalize(0.5, 0.5),
Compose), `torch.cuda`'s peak-memory calls (CPU run), and the global `arg` its loop reads
(`gradient_scale` = 100, the official default; `likebaseline` False). The reference image is a
random 64×64 RGB PNG (the function resizes to 64×64); the model is the random-weight
`unet_ddpm_like` UNet2DModel read as a flow model, `model(z, t, label)` = unet(z, t·1000), float64,
batch 1 (the official mean runs over the batch; ours is per image, equal at batch 1).
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from PIL import Image
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")
OUT = os.path.join(ROOT, "inverse")
COMMIT = "9b705fc"
RFPP = "inverseproblems/pixel_models/rfpp"


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def to_tensor(img):
    a = np.asarray(img, dtype=np.float64) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def __call__(self, x):
        return (x - self.mean) / self.std


class Compose:
    def __init__(self, fs):
        self.fs = fs

    def __call__(self, x):
        for f in self.fs:
            x = f(x)
        return x


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    repo = sys.argv[1]
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not commit.startswith(COMMIT):
        sys.exit(f"need FlowChef {COMMIT}, got {commit}")
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    tv = stub("torchvision")
    tv.transforms = stub("torchvision.transforms", ToTensor=lambda: to_tensor, Normalize=Normalize, Compose=Compose)
    tv.utils = stub("torchvision.utils", save_image=lambda *a, **k: None)
    stub("network_edm", SongUNet=None, DhariwalUNet=None, EDMPrecondVel=None)
    stub("utils", straightness=None, parse_config=None, save_traj=None)
    stub("matplotlib").pyplot = stub("matplotlib.pyplot")
    torch.cuda.reset_peak_memory_stats = lambda *a, **k: None
    torch.cuda.max_memory_allocated = lambda *a, **k: 0
    sys.path.insert(0, os.path.join(repo, RFPP))
    spec = importlib.util.spec_from_file_location("flowchef", os.path.join(repo, RFPP, "generate_inverseproblems_flowchef.py"))
    fc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fc)
    fc.arg = types.SimpleNamespace(gradient_scale=100.0, likebaseline=False)

    unet = UNet2DModel.from_pretrained(os.path.join(ROOT, "unet_ddpm_like")).eval().double()

    class Model(torch.nn.Module):
        config = {"label_dim": 0}

        def forward(self, z, t, label):
            return unet(z, t * 1000.0).sample

    gen = torch.Generator().manual_seed(5)
    cases = []
    tmp = tempfile.mkdtemp()
    for op_name, steps in [("sr4", 4), ("inpaint-box", 3)]:
        img = (torch.rand(64, 64, 3, generator=gen) * 255).round().to(torch.uint8).numpy()
        path = os.path.join(tmp, f"{op_name}.png")
        Image.fromarray(img).save(path)
        clean = Normalize([0.5] * 3, [0.5] * 3)(to_tensor(Image.open(path).convert("RGB")))[None]
        if op_name == "sr4":
            operator = fc.SuperResolutionOperator(scale_factor=4, device="cpu")
            y = operator.degradation(clean)
            aty = F.interpolate(y, scale_factor=4, mode="nearest") / 16.0  # the true adjoint
        else:
            operator = fc.BoxInpaintingOperator(box_size=32, device="cpu")
            y = operator.degradation(clean)
            aty = y
        z1 = torch.randn(1, 3, 64, 64, generator=gen)
        traj, _, _, _ = fc.sample_ode_generative(
            Model(), z1=z1, N=steps, use_tqdm=False, solver="euler", operator=operator,
            ref_img_path=path, output_dir=tmp)
        x = traj[-1]
        name = f"flowchef_{op_name}_{steps}"
        save_file({k: v.float().contiguous() for k, v in
                   dict(z=z1, aty=aty, clean=clean, expected=x).items()},
                  os.path.join(OUT, f"{name}.safetensors"))
        cases.append(dict(name=name, operator=op_name, steps=steps, batch=1, size=64,
                          max_abs=float(x.abs().max())))
        print(name, float(x.abs().max()))
    with open(os.path.join(OUT, "flowchef_cases.json"), "w") as f:
        json.dump(dict(flowchef_commit=commit, gradient_scale=100.0, cases=cases), f, indent=1)


if __name__ == "__main__":
    main()
