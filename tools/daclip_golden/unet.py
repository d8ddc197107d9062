"""Part `unet` of tools/gen_daclip_golden.py: random-weight instances of the OFFICIAL
`ConditionalUNet` (universal-image-restoration/config/daclip-sde/models/modules/DenoisingUNet_arch.py,
imported through `load_official`) and their forwards, for tests/daclip_unet.rs.

Every parameter is re-randomised (the zero-initialised `proj_out` of the SpatialTransformers and
the `prompt` included): conv/linear weights N(0, 1/fan_in) so activations stay O(1), biases and
norm offsets ±0.1, norm gains 1 ± 0.1; then rounded to f16 and stored as F16 (the engine loads
the same values in f32 and f16). The network runs in float32 on the CPU, as the official code
runs it (the channel LayerNorm's eps is 1e-5 in float32 and 1e-3 in any other dtype, so a float64
run would not be the float32 network). Sizes are not multiples of 2^depth, so the reflect padding
and the crop are exercised.

Written per case to tests/golden/daclip/unet/<case>/:
  config.json                           the engine's unet/config.json for this instance
  diffusion_pytorch_model.safetensors   the official state-dict keys, F16
  io.safetensors                        per run R: R.xt, R.cond, R.time, [R.text_context],
                                        [R.image_context], R.output (F32), and R.output_half:
                                        the same module under float16 autocast, whose
                                        channel LayerNorm eps is 1e-3
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

from daclip_golden.common import ROOT

OUT = os.path.join(ROOT, "unet")

# Weight sets: (folder, constructor args, runs: (run, batch, H, W, text?, image?), variants).
# A variant is (config file, changed constructor args, runs): the same weights loaded into an
# instance built with other flags (its parameters are a subset of the folder's; the extra ones
# are unused), so a case costs no second weight file.
CASES = [
    # depth 4: SpatialTransformers at level 3 (1 head down, 2 up) and in the middle (2 heads)
    ("both4", dict(in_nc=3, out_nc=3, nf=32, ch_mult=[1, 1, 1, 2], context_dim=32,
                   use_degra_context=True, use_image_context=True),
     [("both", 2, 20, 28, True, True),
      # image only: the official forward skips the prompt path when text_context is None
      ("no_text", 2, 20, 28, False, True),
      ("odd", 1, 17, 33, True, True)],
     []),
    # depth 3: LinearAttention everywhere
    ("small3", dict(in_nc=3, out_nc=3, nf=32, ch_mult=[1, 1, 1], context_dim=32,
                    use_degra_context=True, use_image_context=False),
     [("degra", 2, 20, 28, True, False)],
     [("config_none.json", dict(use_degra_context=False), [("none", 2, 20, 28, False, False)])]),
]


def randomise(net, gen):
    """Re-draws every parameter (see the module docstring) and rounds it to f16."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "weight" and p.dim() >= 2:
                fan_in = p[0].numel()
                v = torch.randn(p.shape, generator=gen) / np.sqrt(fan_in)
            elif leaf in ("g", "weight"):  # channel LayerNorm gain, GroupNorm/LayerNorm weight
                v = 1 + 0.1 * torch.randn(p.shape, generator=gen)
            elif name == "prompt":
                v = torch.rand(p.shape, generator=gen)
            else:  # biases
                v = 0.1 * torch.randn(p.shape, generator=gen)
            p.copy_(v.half().float())


def forward_runs(net, args, runs, gen, io):
    for rname, n, h, w, text, image in runs:
        xt = torch.randn(n, args["in_nc"], h, w, generator=gen)
        cond = torch.rand(n, args["in_nc"], h, w, generator=gen)
        time = torch.rand(n, generator=gen) * 100  # continuous t in [0, T], as MRSampler passes
        kw = {}
        io[f"{rname}.xt"], io[f"{rname}.cond"], io[f"{rname}.time"] = xt, cond, time
        if text:
            kw["text_context"] = torch.randn(n, args["context_dim"], generator=gen)
            io[f"{rname}.text_context"] = kw["text_context"]
        if image:
            kw["image_context"] = torch.randn(n, args["context_dim"], generator=gen)
            io[f"{rname}.image_context"] = kw["image_context"]
        with torch.no_grad():
            y = net(xt, cond, time, **kw)
            # The same module under float16 autocast (`.half()` cannot run it: the sinusoidal
            # embedding promotes to float32): the channel LayerNorm sees float16 inputs and
            # takes eps 1e-3 instead of 1e-5 (the dtype quirk of module_util.LayerNorm).
            with torch.autocast("cpu", dtype=torch.float16):
                yh = net(xt, cond, time, **kw).float()
        io[f"{rname}.output"] = y
        io[f"{rname}.output_half"] = yh
        print(f"unet {rname}: {tuple(y.shape)} max|y| {y.abs().max():.3f}, "
              f"float16 module vs float32: max|Δ| {(yh - y).abs().max() / y.abs().max():.2e}·max|y|, "
              f"{sum(p.numel() for p in net.parameters())} parameters")


def write_config(path, args):
    with open(path, "w") as f:
        json.dump({"_class_name": "ConditionalUNet", **args}, f, indent=2)
        f.write("\n")


def run(off):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(18)
    for case, args, runs, variants in CASES:
        net = off.ConditionalUNet(**args).eval()
        randomise(net, gen)
        d = os.path.join(OUT, case)
        os.makedirs(d, exist_ok=True)
        write_config(os.path.join(d, "config.json"), args)
        sd = {k: v.detach().half().contiguous() for k, v in net.state_dict().items()}
        save_file(sd, os.path.join(d, "diffusion_pytorch_model.safetensors"))
        io = {}
        forward_runs(net, args, runs, gen, io)
        for cfg_name, change, vruns in variants:
            vargs = {**args, **change}
            vnet = off.ConditionalUNet(**vargs).eval()
            missing, _ = vnet.load_state_dict(net.state_dict(), strict=False)
            assert not missing, f"{cfg_name}: parameters not in the weight set: {missing}"
            write_config(os.path.join(d, cfg_name), vargs)
            forward_runs(vnet, vargs, vruns, gen, io)
        save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(d, "io.safetensors"))
