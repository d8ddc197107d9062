"""Part `clip` of tools/gen_daclip_golden.py: the DA-CLIP image encoder and its preprocessing, run by
the official code (grrrute/mr-sampler `universal-image-restoration/open_clip` and `data/util.py`).

Writes tests/golden/daclip/clip/:
  tiny/config.json, tiny/model.safetensors
      a reduced DaCLIP (`daclip_tiny-test`: ViT width 128, 2 layers, 224×224, patch 32, head width 64,
      embed_dim 64), built by the official factory `open_clip.create_model` (which wraps the CLIP in
      `DaCLIP`, giving `visual_control` a `ControlTransformer`), every parameter of both towers
      re-randomised (the controller's zero modules too) and rounded to f16 before anything is run;
      saved in the converted-folder layout: `daclip/config.json` fields and only the `visual.*` and
      `visual_control.*` state-dict keys, stored as F16.
  io.safetensors
      `tiny.image_features`, `tiny.degra_features` [2, 64]: `encode_image(x, control=True)` of the
      tiny model on x = the official `clip_transform` of the inputs `pre.a` and `pre.b` (the batch of
      2); `full.image_features`, `full.degra_features` [1, 512]: the same for the real
      `daclip_ViT-B-32` shape (width 768, 12 layers, patch 32, embed 512) with the hashed weights
      below, on x = `clip_transform(pre.a)`;
      `pre.NAME.input` (U8 [H, W, 3], RGB), `pre.NAME.crop` (U8 [R, R, 3]: the PIL image after
      `Resize(R, BICUBIC)` and `CenterCrop(R)`, i.e. what `ToTensor` reads), `pre.e.output` (F32
      [3, 48, 48]: the whole official `clip_transform(·, resolution=48)` output of `pre.e`); the
      encoder inputs are `ToTensor`+`Normalize` of the crops of `a` and `b` (checked here to equal
      `clip_transform` to 1e-6, and again against `pre.e.output` by the Rust test).
  cases.json  the preprocessing cases (name, input size, resolution R), the library versions and
      the official full-size `visual.*`/`visual_control.*` keys with their shapes (the Rust test
      checks that its loader reads exactly these).

`check_control_order` runs the official tiny model with hooks and asserts that the main tower's
block i receives the controller's hidden state of block L−i (reverse order, `control.pop()`).
The PIL bytes depend on the Pillow version: Pillow 13 runs the vertical pass first when the height
shrinks by more than twice the width (python-pillow/Pillow#9549; case `j`); older Pillows do not.

The full-size weights are too large to store (~350 MB), so both this script and the Rust test
generate them from a formula (`hashed_weight`): element i of tensor NAME is
    scale(NAME) · u,  u = 2·(splitmix64_mix(fnv1a64(NAME) + (i + 1)·0x9E3779B97F4A7C15) >> 11)/2^53 − 1
computed in f64 and rounded to f32, with scale(NAME) by the rules in `hashed_scale`.

Stubs: those of `common.load_official` (among them `nn.Module.cuda` as the identity without CUDA:
the official `ControlTransformer.__init__` calls `.cuda()` on its zero modules); `cv2` is an empty
module when not installed (`data/util.py` imports it at the top; `clip_transform` does not use it).

Colour order: the official datasets (`data/LQGT_dataset.py`, `MD_dataset.py`) read BGR with cv2
(`util.read_img`: float32 /255), swap to RGB (`img[:, :, [2, 1, 0]]`) and then call
`clip_transform(img_LQ)`, so `LQ_clip` is RGB; `clip_transform` re-quantises with
`(np_image * 255).astype(np.uint8)`, which gives back every uint8 value exactly (checked below).
"""
import importlib.util
import json
import os

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from .common import ROOT, load_official

OUT = os.path.join(ROOT, "clip")
TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 128, "patch_size": 32, "head_width": 64,
                   "mlp_ratio": 4.0},
    # The text tower the CLIP constructor builds (never run, never saved).
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    "custom_text": True,
}
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
# (name, height, width, resolution): down- and up-scaling, non-square, odd sizes, 1-pixel edges,
# no resize (short side already R) and a one-pixel-off short side.
CASES = [
    ("a", 301, 229, 224),
    ("b", 97, 131, 224),
    ("c", 1, 1, 48),
    ("d", 2, 9, 48),
    ("e", 75, 100, 48),
    ("f", 48, 49, 48),
    ("g", 47, 33, 48),
    ("h", 64, 48, 48),
    ("i", 9, 1, 48),
    ("j", 480, 50, 48),
]

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def hashed_scale(name, shape):
    """The per-tensor scale of the hashed full-size weights (same rules in tests/daclip_encoder.rs)."""
    last = name.split(".")[-1]
    owner = name.split(".")[-2] if "." in name else ""
    if len(shape) >= 2:
        if last == "positional_embedding":
            return 0.5
        fan_in = shape[0] if last == "proj" else int(np.prod(shape[1:]))
        return float(np.sqrt(3.0 / fan_in))
    if last.endswith("bias"):
        return 0.02
    if last == "weight" and owner.startswith("ln_"):
        return -1.0  # marks 1 + 0.1·u
    return 0.5


def hashed_weight(name, shape):
    n = int(np.prod(shape))
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(name)) + i * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53) * 2.0 - 1.0
    s = hashed_scale(name, shape)
    v = 1.0 + 0.1 * u if s < 0 else s * u
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def build(oc, name):
    model = oc.create_model(name, pretrained=None, precision="fp32", device="cpu")
    model.eval()
    return model


def visual_state(model):
    """The converted folder's tensors: `visual.*` and `visual_control.*` (no `clip.*` duplicates)."""
    sd = model.state_dict()
    keys = [k for k in sd if k.startswith("visual.") or k.startswith("visual_control.")]
    for k in sd:
        if k.startswith("clip.visual."):
            assert torch.equal(sd[k], sd[k[len("clip."):]]), k
    return {k: sd[k] for k in keys}


def randomise(model, gen):
    """Re-randomises every parameter of both visual towers, rounded to f16 (values exact in f32)."""
    with torch.no_grad():
        for prefix, tower in [("visual.", model.visual), ("visual_control.", model.visual_control)]:
            for k, p in tower.named_parameters():
                if p.dim() >= 2:
                    last = k.split(".")[-1]
                    fan_in = p.shape[0] if last == "proj" else int(np.prod(p.shape[1:]))
                    a = 0.5 if last == "positional_embedding" else (3.0 / fan_in) ** 0.5
                    v = (torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * a
                elif "ln_" in k and k.endswith("weight"):
                    v = 1 + 0.1 * (torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1)
                elif k.endswith("bias"):
                    v = 0.05 * (torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1)
                else:
                    v = 0.5 * (torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1)
                p.copy_(v.to(torch.float16).to(torch.float32))


def hash_fill(model):
    with torch.no_grad():
        for k, p in visual_state_params(model):
            p.copy_(hashed_weight(k, list(p.shape)))


def visual_state_params(model):
    out = []
    for prefix, tower in [("visual.", model.visual), ("visual_control.", model.visual_control)]:
        for k, p in tower.named_parameters():
            out.append((prefix + k, p))
    return out


def check_control_order(model, x):
    """Runs the official `encode_image(control=True)` with hooks and asserts the quirk the engine
    reproduces: the main tower's block i (0-based) gets block i−1's output plus the controller's
    hidden state of block L−i (`Transformer.forward` adds `control.pop()`: reverse order)."""
    outs, ins, zs = [], [], []

    def on_block(mod, a, o):
        ins.append(a[0].clone())
        outs.append(o.clone())

    def on_zero(mod, a, o):
        zs.append(o.clone())

    hooks = [r.register_forward_hook(on_block) for r in model.visual.transformer.resblocks]
    hooks += [z.register_forward_hook(on_zero) for z in model.visual_control.transformer.zero_modules]
    with torch.no_grad():
        model.encode_image(x, control=True)
    for h in hooks:
        h.remove()
    n = len(zs)
    for i in range(1, n):
        assert torch.equal(ins[i], outs[i - 1] + zs[n - i]), f"control order at block {i}"
        assert not torch.allclose(ins[i], outs[i - 1] + zs[i - 1]), "forward order would also match"


def load_clip_transform(uir):
    spec = importlib.util.spec_from_file_location("daclip_data_util", os.path.join(uir, "data", "util.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.clip_transform


def crop_of(img_u8, res):
    """The official transform's PIL steps alone (the image `ToTensor` reads), as uint8 HWC."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize
    pil = Image.fromarray(img_u8)
    out = Compose([Resize(res, interpolation=InterpolationMode.BICUBIC), CenterCrop(res)])(pil)
    return np.asarray(out).copy()


def main(args):
    off = load_official(args.official)
    oc = off.open_clip
    clip_transform = load_clip_transform(off.uir)
    os.makedirs(os.path.join(OUT, "tiny"), exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(18)

    # The dataset's re-quantisation round-trips every uint8 value (float32 /255, then *255, trunc).
    v = np.arange(256, dtype=np.uint8)
    assert np.array_equal(((v.astype(np.float32) / 255.0) * 255).astype(np.uint8), v)

    io = {}
    cases = []
    for name, h, w, res in CASES:
        # Smooth-ish content plus noise, so the filters see both edges and gradients.
        yy, xx = np.mgrid[0:h, 0:w]
        base = 127 + 100 * np.sin(xx[..., None] * 0.21 + yy[..., None] * 0.13 + np.arange(3) * 1.7)
        img = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        crop = crop_of(img, res)
        # The whole official transform, checked against its PIL steps + ToTensor + Normalize.
        full = clip_transform(img.astype(np.float32) / 255.0, resolution=res)
        t = torch.from_numpy(crop).permute(2, 0, 1).float().div(255)
        t = (t - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        assert torch.allclose(full, t, atol=1e-6, rtol=0), name
        io[f"pre.{name}.input"] = torch.from_numpy(img)
        io[f"pre.{name}.crop"] = torch.from_numpy(crop)
        if name == "e":
            io["pre.e.output"] = full.contiguous()
        cases.append({"name": name, "height": h, "width": w, "resolution": res})
    x_tiny = torch.stack([
        clip_transform(io["pre.a.input"].numpy().astype(np.float32) / 255.0),
        clip_transform(io["pre.b.input"].numpy().astype(np.float32) / 255.0),
    ])
    x_full = x_tiny[:1]

    # The reduced model through the official factory, with a registered config.
    cfg_path = os.path.join(OUT, "daclip_tiny-test.json")
    with open(cfg_path, "w") as f:
        json.dump(TINY, f)
    try:
        oc.add_model_config(cfg_path)
    finally:
        os.remove(cfg_path)
    tiny = build(oc, "daclip_tiny-test")
    assert type(tiny).__name__ == "DaCLIP"
    randomise(tiny, torch.Generator().manual_seed(1818))
    check_control_order(tiny, x_tiny)
    with torch.no_grad():
        img_f, deg_f = tiny.encode_image(x_tiny, control=True)
    io["tiny.image_features"] = img_f.contiguous()
    io["tiny.degra_features"] = deg_f.contiguous()
    state = {k: v.to(torch.float16).contiguous() for k, v in visual_state(tiny).items()}
    save_file(state, os.path.join(OUT, "tiny", "model.safetensors"))
    vc = TINY["vision_cfg"]
    with open(os.path.join(OUT, "tiny", "config.json"), "w") as f:
        json.dump({"_class_name": "DaCLIP", "embed_dim": TINY["embed_dim"], "vision_cfg": vc,
                   "quick_gelu": False, "image_mean": MEAN, "image_std": STD}, f, indent=2)
        f.write("\n")

    # The real ViT-B/32 shape with hashed weights.
    full = build(oc, "daclip_ViT-B-32")
    hash_fill(full)
    with torch.no_grad():
        img_f, deg_f = full.encode_image(x_full, control=True)
    io["full.image_features"] = img_f.contiguous()
    io["full.degra_features"] = deg_f.contiguous()
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(OUT, "io.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"official_commit": off.commit, "torch": torch.__version__, "torchvision": torchvision.__version__,
                   "pillow": PIL.__version__, "cases": cases,
                   "full_keys": sorted([[k, list(v.shape)] for k, v in visual_state(full).items()])}, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}")
