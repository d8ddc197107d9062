"""`--parts sampler` of tools/gen_daclip_golden.py: a full 10-step MR Sampler restoration by the
official code on the official networks, through the converter (tests/golden/daclip/tiny/ and
tests/golden/daclip/sampler/).

1. A small official ConditionalUNet (nf 32, ch_mult [1,1,1,1]: depth 4, so a SpatialTransformer
   at level 3 and in the middle; both contexts, context_dim 256) and a reduced official DaCLIP
   (ViT width 128, 2 layers, patch 16 at 224, embed_dim 256; a 1-layer text tower of width 64,
   which the strict load needs and the folder drops) are built with the official initialisation
   from fixed seeds, plus a linear path ε ≈ (x_t − μ)/λ_s through the official layers so the
   trajectory stays near [0, 1] (`well_conditioned`); every parameter the official code initialises to a constant (the zero
   modules, the norms' scales and shifts, `prompt`) is re-randomised, and every parameter is
   rounded to f16 (so the F16 safetensors of the folder hold exactly the official values).
2. Both are saved in the official checkpoint formats (`torch.save` of the state dicts that
   `load_network` / `open_clip.factory.load_checkpoint` read) and converted by
   tools/convert_daclip.py into tests/golden/daclip/tiny/ (F16). The networks the golden runs
   are the official modules the converter loaded from those files.
3. The degraded input: a 29×37 RGB uint8 PNG (not square, not a multiple of 2^depth = 16), read
   as the official dataset reads it (uint8/255 f32, RGB); its contexts from the official
   `encode_image(clip_transform(img), control=True)` (data/util.py `clip_transform`: PIL bicubic
   resize of the shorter side to 224, centre crop, CLIP mean/std), in f32 (test.py runs this
   under CUDA autocast, i.e. in f16 on a GPU; not reproduced).
4. The official `MRSampler` (`utils/sampler.py`, mrsampler.yml's `sampler:` block with
   num_sample_steps 10: ODE, order 2, data form, noise fit target, linspace, λ_min −5) on the
   official `IRSDE` (T 100, max_sigma 50, cosine, eps 0.005) from x_T = μ + max_sigma·z (z stored;
   the ODE draws no step noise); its final `torch.clip` is made the identity inside sampler.py,
   so the expected sample is the unclipped final x0.

Files (tests/golden/daclip/sampler/): input.png; io.safetensors (`mu` [1,3,29,37] = input/255,
`z` [1,3,29,37]); expected.safetensors
(`sample` [1,3,29,37] the final x0, `image_context` and `degra_context` [1,256] the official
encode_image(control=True) outputs, `first_eps` the network output at the first step);
case.json (options, the official time grid, magnitudes).
"""
import importlib.util
import json
import os
import sys
import tempfile
import types

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import convert_daclip as cv  # noqa: E402
from daclip_golden.common import ROOT  # noqa: E402

H, W = 29, 37
STEPS = 10
# ε ≈ (x − μ)/λ_s + RANDOM_GAIN·(the random network): see `well_conditioned`.
RANDOM_GAIN = 0.25
LAMBDA_S = 50 / 255
PROMPT_GAIN = float(os.environ.get("PROMPT_GAIN", "4"))
IMAGE_GAIN = float(os.environ.get("IMAGE_GAIN", "40"))
BLOCK_GAIN = float(os.environ.get("BLOCK_GAIN", "0.5"))
LA_GAIN = float(os.environ.get("LA_GAIN", "20"))
INIT_GAIN = float(os.environ.get("INIT_GAIN", "3"))
UNET = {"in_nc": 3, "out_nc": 3, "nf": 32, "ch_mult": [1, 1, 1, 1], "context_dim": 256,
        "use_degra_context": True, "use_image_context": True}
DACLIP = {"embed_dim": 256,
          "vision_cfg": {"image_size": 224, "layers": 2, "width": 128, "patch_size": 16},
          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
          "custom_text": True}


class _SamplerTorch(types.ModuleType):
    """sampler.py's `torch`: the real module with `clip` the identity (the final sample unclipped)."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    def clip(self, x, *a, **kw):
        return x


def rerandomise_constants(module, seed):
    """Parameters the official code initialises to a constant get random values: all-zero ones
    N(0, (0.5/√fan_in)²) (fan_in: the last dimension), all-equal ones c + 0.1·N(0,1); then every
    parameter is rounded to f16."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            flat = p.flatten()
            if flat.numel() > 1 and bool((flat == flat[0]).all()):
                r = torch.randn(p.shape, generator=g)
                if float(flat[0]) == 0.0:
                    fan = p.shape[-1] if p.dim() > 1 else max(1, p.numel())
                    p.copy_(r * 0.5 / fan ** 0.5)
                else:
                    p.copy_(flat[0] + 0.1 * r)
            if name.endswith("prompt"):  # torch.rand init: keep it positive and varied
                p.copy_(torch.rand(p.shape, generator=g))
            p.copy_(p.half().float())
    return module


def well_conditioned(unet):
    """Adds a linear path ε ≈ (x_t − μ)/λ_s through the official layers (the centre taps of
    `init_conv` copy x_t − μ into its first channels, `final_res_block.res_conv` (1×1) carries
    them past the last block, `final_conv` scales them), the random weights along that path
    (those rows of `init_conv`, `res_conv`, `block2.proj`, and all of `final_conv`) scaled by
    RANDOM_GAIN. A random network alone predicts ε unrelated to x_t, and the
    data form's x̂0 = μ + (x_t − μ − σ̄ε)/m amplifies that by up to λ_s/m_T ≈ 39, so the samples
    grow to |x| ~ 300 and any f16 rounding of ε with them; with the path the samples stay near
    [0, 1] and every layer (the contexts included) still shapes the result. Values F16-rounded."""
    c = UNET["in_nc"]
    nf = UNET["nf"]
    fr = unet.final_res_block
    with torch.no_grad():
        # The contexts' paths, louder (a trained network's are; the default init leaves the
        # prompt a 1/time_dim softmax share and the cross-attention behind a small proj_out).
        unet.text_mlp[2].weight.mul_(PROMPT_GAIN)
        unet.prompt.mul_(PROMPT_GAIN)
        unet.prompt_mlp.weight.mul_(PROMPT_GAIN)
        for name, m in unet.named_modules():
            if name.endswith("attn2.to_v"):
                m.weight.mul_(IMAGE_GAIN)
            # ResBlocks have no normalisation: with the default init the activations grow ~3×
            # per block (to ~400 in the middle) and f16 loses 1.6e-2 of the output in the
            # cancellations, in torch as in the engine. Quieter blocks keep them O(1–10).
            if name.endswith("block1.proj") or name.endswith("block2.proj"):
                m.weight.mul_(BLOCK_GAIN)
            # The official channel LayerNorm's eps depends on the dtype (1e-5 in f32, 1e-3 in
            # f16; the engine's f16 follows `.half()`). With the default init the inputs of
            # LinearAttention's output norm (`to_out.1`: the bias of `to_out.0` plus the tiny
            # v/(h·w) average) have a channel variance of ~2e-3, and the level-0 PreNorm inputs
            # ~1e-2, where that eps moves the output by 1.5% (torch f16 vs f32 on this network:
            # 1.5e-2 with eps 1e-3, 1.0e-3 with eps 1e-5). Louder `to_out.0` and `init_conv`
            # keep those variances ≫ 1e-3, so an f16 run is comparable with the f32 golden.
            if name.endswith("fn.fn.to_out") and isinstance(m, torch.nn.Sequential):
                m[0].weight.mul_(LA_GAIN)
                m[0].bias.mul_(LA_GAIN)
        unet.final_conv.weight.mul_(RANDOM_GAIN)
        unet.final_conv.bias.mul_(RANDOM_GAIN)
        unet.init_conv.weight[c:].mul_(INIT_GAIN)
        for i in range(c):
            unet.init_conv.weight[i].mul_(RANDOM_GAIN)
            unet.init_conv.weight[i, i, 3, 3] += 1.0
            fr.res_conv.weight[i].mul_(RANDOM_GAIN)
            fr.res_conv.weight[i, nf + i, 0, 0] += 1.0
            fr.block2.proj.weight[i].mul_(RANDOM_GAIN)
            unet.final_conv.weight[i, i, 1, 1] += 1.0 / LAMBDA_S
        for p in unet.parameters():
            p.copy_(p.half().float())


def degraded_image():
    """A smooth colour field with noise and a hard edge, uint8 HWC RGB."""
    g = np.random.default_rng(7)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    base = np.stack([0.5 + 0.4 * np.sin(xx / 6.0), 0.3 + 0.5 * yy / H, 0.6 - 0.3 * np.cos((xx + yy) / 9.0)], -1)
    base[:, W // 2:, 1] += 0.2
    img = np.clip(base + 0.08 * g.standard_normal(base.shape), 0, 1)
    return (img * 255).round().astype(np.uint8)


def _clip_transform(off):
    """data/util.py `clip_transform` (loaded from its file; cv2 is stubbed by load_official)."""
    path = os.path.join(off.uir, "data", "util.py")
    spec = importlib.util.spec_from_file_location("official_data_util", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.clip_transform


def run(off):
    torch.set_num_threads(2)
    out_tiny = os.path.join(ROOT, "tiny")
    out = os.path.join(ROOT, "sampler")
    os.makedirs(out, exist_ok=True)

    # 1–2: official random-weight modules → official checkpoint files → converter.
    torch.manual_seed(100)
    unet = rerandomise_constants(off.ConditionalUNet(**UNET), 101)
    well_conditioned(unet)
    torch.manual_seed(200)
    daclip = rerandomise_constants(cv.official_daclip(off, DACLIP, name="daclip_golden_tiny"), 201)
    with tempfile.TemporaryDirectory() as tmp:
        ir, dc = os.path.join(tmp, "universal-ir.pth"), os.path.join(tmp, "daclip_tiny.pt")
        torch.save(unet.state_dict(), ir)
        torch.save(daclip.state_dict(), dc)
        ucfg, dcfg = cv.convert(off, ir, dc, out_tiny, dtype=torch.float16)
        # The networks the golden runs: the official modules loaded from the files, as the converter does.
        unet = cv.build_unet(off, ucfg, ir)
        daclip = cv.build_daclip(off, dcfg, dc)

    # 3: the input and its contexts.
    img_u8 = degraded_image()
    png = os.path.join(out, "input.png")
    Image.fromarray(img_u8, "RGB").save(png)
    img = np.asarray(Image.open(png).convert("RGB")).astype(np.float32) / 255.0  # read_img + BGR→RGB
    assert np.array_equal((img * 255).round().astype(np.uint8), img_u8)
    clip_in = _clip_transform(off)(img).unsqueeze(0)
    mu = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).unsqueeze(0)
    with torch.no_grad():
        image_context, degra_context = daclip.encode_image(clip_in, control=True)
    image_context, degra_context = image_context.float(), degra_context.float()

    # 4: the official sampler.
    off.sampler.torch = _SamplerTorch()
    opt = {"sde": dict(cv.RELEASED_SDE)}
    sde = off.sde_utils.IRSDE(max_sigma=50, T=100, schedule="cosine", eps=0.005, device="cpu")
    calls = []

    def model(x, m, t, **kw):
        with torch.no_grad():
            y = unet(x, m, t, **kw)
        calls.append((float(t), y.clone()))
        return y

    sde.set_model(model)
    kwargs = dict(cv.RELEASED_SAMPLER, num_sample_steps=STEPS)
    s = off.sampler.MRSampler(sde, opt, **kwargs)
    z = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1234))
    noisy = mu + z * s.sde.max_sigma
    x0, _, _ = s.sampling(mu, text_context=degra_context, image_context=image_context, noisy_state=noisy)

    save_file({"mu": mu.contiguous(), "z": z.contiguous()},
              os.path.join(out, "io.safetensors"))
    save_file({"sample": x0.contiguous(), "image_context": image_context.contiguous(),
               "degra_context": degra_context.contiguous(), "first_eps": calls[0][1].contiguous()},
              os.path.join(out, "expected.safetensors"))
    case = {"commit": off.commit, "steps": STEPS, "sampler": kwargs, "sde": cv.RELEASED_SDE,
            "timesteps": [float(t) for t in s.timesteps], "model_times": [t for t, _ in calls],
            "nfe": len(calls), "height": H, "width": W, "unet": ucfg, "daclip_vision": dcfg["vision_cfg"],
            "embed_dim": dcfg["embed_dim"], "max_abs_sample": float(x0.abs().max()),
            "max_abs_first_eps": float(calls[0][1].abs().max()),
            "max_abs_image_context": float(image_context.abs().max()),
            "max_abs_degra_context": float(degra_context.abs().max())}
    with open(os.path.join(out, "case.json"), "w") as f:
        json.dump(case, f, indent=1)
        f.write("\n")
    print(f"sampler: {len(calls)} NFE, max|x0| {case['max_abs_sample']:.4g}, max|eps_0| "
          f"{case['max_abs_first_eps']:.4g}, contexts {case['max_abs_image_context']:.3g} / "
          f"{case['max_abs_degra_context']:.3g} → {out}, {out_tiny}")
