#!/usr/bin/env python3
"""Converts the DA-CLIP universal image-restoration checkpoints (Luo et al., "Controlling
Vision-Language Models for Multi-Task Image Restoration", ICLR 2024; the network the MR Sampler
paper, Li et al. arXiv 2502.07856, evaluates on) into one model folder for `diffuse restore`.

    git clone https://github.com/grrrute/mr-sampler /tmp/mr-sampler
    git -C /tmp/mr-sampler checkout 896764cfa1f4ad979a81493a7a468d238aad07de
    python tools/convert_daclip.py --official /tmp/mr-sampler \\
        --ir-checkpoint universal-ir.pth --daclip-checkpoint daclip_ViT-B-32.pt --out DIR

Both files are read as the official code reads them, and loaded into the official modules with
strict=True (the check that every inferred dimension is right):
- the IR network (`ConditionalUNet`): `torch.load` of a state dict, a leading `module.` of any key
  removed — `config/daclip-sde/models/base_model.py` `BaseModel.load_network`, which is called
  itself for the strict load;
- the DA-CLIP model: `open_clip.factory.load_state_dict` (a dict with a `state_dict` entry or a bare
  state dict; `module.` stripped when the first key has it), then
  `open_clip.create_model_from_pretrained(name, pretrained=PATH)` — the call of
  `config/daclip-sde/test.py` — with the inferred model config registered in the official
  factory under a `daclip_…` name (so the official `DaCLIP(CLIP(**cfg))` branch builds it and
  `load_checkpoint` loads the whole DaCLIP state dict, text tower included, strictly).

Every dimension is inferred from the tensor shapes by the official constructors' rules:
ConditionalUNet: nf and in_nc from `init_conv.weight` [nf, 2·in_nc, 7, 7], out_nc from
`final_conv.weight`, ch_mult from each level's `downs.i.3` output width / nf, use_degra_context
from `prompt`, context_dim from `text_mlp.0.weight` / the cross-attention `attn2.to_k.weight`,
use_image_context from a `SpatialTransformer` at `mid_attn`; the ViT: width and patch size from
`visual.conv1.weight`, image size from the positional embedding's grid, layers from the
`resblocks.N` count, mlp_ratio from `mlp.c_fc`, embed_dim from `visual.proj`, heads = width / 64
(open_clip's `head_width`); the text tower (needed only for the strict load) likewise.

Written (the folder `diffuse restore --model DIR` reads; ARCHITECTURE.md "DA-CLIP"):
  model_index.json, unet/{config.json, diffusion_pytorch_model.safetensors} (the official
  ConditionalUNet keys unchanged), daclip/{config.json, model.safetensors} (`visual.*` and
  `visual_control.*` of the official DaCLIP state dict; `clip.visual.*` is the same module),
  scheduler/scheduler_config.json (the engine's MeanRevertingScheduler: the released process
  T 100, max_sigma 50 (/255), eps 0.005, cosine, and mrsampler.yml's `sampler:` block).
The folder is written to DIR.tmp-… and renamed into place, so a failed conversion leaves nothing.

Stubs: those of tools/daclip_golden/common.py `load_official` (none on a numerical path).
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daclip_golden.common import load_official, repo_arg  # noqa: E402

# mrsampler.yml `sde:` and `sampler:` (the released configuration).
RELEASED_SDE = {"max_sigma": 50, "T": 100, "schedule": "cosine", "eps": 0.005}
RELEASED_SAMPLER = {"num_sample_steps": 20, "solver_type": "ode", "parameterization": "data", "order": 2,
                    "fit_target": "noise", "lambda_min": -5.0, "time_schedule": "linspace",
                    "thresholding": False, "threshold_ratio": 0.995, "threshold_max": 1.5,
                    "denoise_last": False}
FIT_TARGET = {"noise": "epsilon", "data": "sample", "velocity": "v_prediction"}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # data/util.py clip_transform (= OPENAI_DATASET_MEAN)
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class ConvertError(Exception):
    """A checkpoint that does not match the official modules; the message names the tensor."""


def _need(sd, key, ndim, what):
    if key not in sd:
        raise ConvertError(f"{what}: missing tensor `{key}`")
    t = sd[key]
    if not torch.is_tensor(t):
        raise ConvertError(f"{what}: `{key}` is not a tensor ({type(t).__name__})")
    if t.dim() != ndim:
        raise ConvertError(f"{what}: `{key}` has shape {list(t.shape)}, expected {ndim} dimensions")
    return t.shape


def _count(sd, prefix):
    """Number of consecutive `prefix{i}.` indices present (0, 1, ...)."""
    idx = {int(m.group(1)) for k in sd for m in [re.match(re.escape(prefix) + r"(\d+)\.", k)] if m}
    n = 0
    while n in idx:
        n += 1
    if idx and n != max(idx) + 1:
        raise ConvertError(f"`{prefix}{n}.*` is missing (indices present: {sorted(idx)})")
    return n


def _strict_error(e):
    """torch's load_state_dict error without its header line (the tensor names and shapes)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return "; ".join(lines[1:] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines)


# ---------------------------------------------------------------- the IR network (ConditionalUNet)

def read_ir_state_dict(path):
    """What `BaseModel.load_network` loads: torch.load, a leading `module.` removed from each key."""
    sd = torch.load(path, map_location="cpu")
    if not isinstance(sd, dict):
        raise ConvertError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def infer_unet_config(sd):
    """The ConditionalUNet constructor arguments that give these tensor shapes."""
    what = "IR checkpoint"
    nf, in2, kh, kw = _need(sd, "init_conv.weight", 4, what)
    if (kh, kw) != (7, 7) or in2 % 2:
        raise ConvertError(f"{what}: `init_conv.weight` has shape {[nf, in2, kh, kw]}, expected [nf, 2·in_nc, 7, 7]")
    out_nc, nf2, _, _ = _need(sd, "final_conv.weight", 4, what)
    if nf2 != nf:
        raise ConvertError(f"{what}: `final_conv.weight` has {nf2} input channels, expected nf = {nf}")
    depth = _count(sd, "downs.")
    if depth == 0:
        raise ConvertError(f"{what}: missing tensor `downs.0.0.block1.proj.weight` (no down levels)")
    ch_mult = []
    for i in range(depth):
        key = f"downs.{i}.3.weight"
        out = _need(sd, key, 4, what)[0]
        if out % nf:
            raise ConvertError(f"{what}: `{key}` has {out} output channels, not a multiple of nf = {nf}")
        ch_mult.append(out // nf)
    time_dim = nf * 4
    cfg = {"in_nc": in2 // 2, "out_nc": out_nc, "nf": nf, "ch_mult": ch_mult, "context_dim": None,
           "use_degra_context": "prompt" in sd, "use_image_context": False}
    if cfg["use_degra_context"]:
        td, cd = _need(sd, "text_mlp.0.weight", 2, what)
        if td != time_dim:
            raise ConvertError(f"{what}: `text_mlp.0.weight` has {td} rows, expected 4·nf = {time_dim}")
        cfg["context_dim"] = cd
    mid = "mid_attn.fn.fn."
    if mid + "proj_in.weight" in sd:
        cfg["use_image_context"] = True
        key = mid + "transformer_blocks.0.attn2.to_k.weight"
        cd = _need(sd, key, 2, what)[1]
        if cfg["context_dim"] is not None and cd != cfg["context_dim"]:
            raise ConvertError(f"{what}: `{key}` takes a {cd}-wide context but `text_mlp.0.weight` a "
                               f"{cfg['context_dim']}-wide one (the official network has one context_dim)")
        cfg["context_dim"] = cd
    elif mid + "to_qkv.weight" not in sd:
        raise ConvertError(f"{what}: missing tensor `{mid}to_qkv.weight` (LinearAttention) or "
                           f"`{mid}proj_in.weight` (SpatialTransformer)")
    return cfg


def build_unet(off, cfg, ckpt):
    """The official ConditionalUNet with `cfg`, loaded by the official `load_network` (strict)."""
    import importlib
    base_model = importlib.import_module("models.base_model")
    args = dict(cfg)
    if args["context_dim"] is None:  # neither context: the value is unused (the constructor's default)
        args["context_dim"] = 512
    net = off.ConditionalUNet(**args)
    try:
        base_model.BaseModel.load_network(None, ckpt, net, strict=True)
    except RuntimeError as e:
        raise ConvertError(f"{ckpt}: {_strict_error(e)} (loading strictly into the official ConditionalUNet with the "
                           f"inferred {cfg})") from None
    return net.eval()


# ---------------------------------------------------------------- DA-CLIP

def read_daclip_state_dict(off, path):
    """What the official `open_clip.factory.load_state_dict` returns."""
    sd = off.open_clip.factory.load_state_dict(path)
    if not isinstance(sd, dict) or not sd:
        raise ConvertError(f"{path}: expected a (non-empty) state dict")
    return sd


def infer_daclip_config(sd, quick_gelu=False):
    """An open_clip model config (`embed_dim`, `vision_cfg`, `text_cfg`, `custom_text`) whose
    DaCLIP has these tensor shapes (heads = width / 64, open_clip's head_width)."""
    what = "DA-CLIP checkpoint"
    for p in ["clip.visual.", "visual.", "visual_control."]:
        for k in ["ln_1_kv", "ls_1.gamma"]:
            if any(k in key for key in sd if key.startswith(p)):
                raise ConvertError(f"{what}: `{p}…{k}` — a vision tower with layer scale / cross-attention is not "
                                   "supported (the released DA-CLIP has none)")
        for k in ["patchnorm_pre_ln.weight", "attn_pool.query"]:
            if p + k in sd:
                raise ConvertError(f"{what}: `{p}{k}` — input patchnorm / attentional pooling is not supported")
    if "visual_control.transformer.zero_modules.0.weight" not in sd:
        raise ConvertError(f"{what}: missing tensor `visual_control.transformer.zero_modules.0.weight` "
                           "(not a DaCLIP state dict: no controller)")
    width, c3, p, p2 = _need(sd, "visual.conv1.weight", 4, what)
    if c3 != 3 or p != p2:
        raise ConvertError(f"{what}: `visual.conv1.weight` has shape {[width, c3, p, p2]}, expected [width, 3, P, P]")
    npos, w2 = _need(sd, "visual.positional_embedding", 2, what)
    grid = int(round((npos - 1) ** 0.5))
    if grid * grid + 1 != npos or w2 != width:
        raise ConvertError(f"{what}: `visual.positional_embedding` has shape {[npos, w2]}, expected "
                           f"[grid² + 1, {width}]")
    layers = _count(sd, "visual.transformer.resblocks.")
    if layers == 0:
        raise ConvertError(f"{what}: missing tensor `visual.transformer.resblocks.0.attn.in_proj_weight`")
    mlp_w, w3 = _need(sd, "visual.transformer.resblocks.0.mlp.c_fc.weight", 2, what)
    w4, embed_dim = _need(sd, "visual.proj", 2, what)
    if w3 != width or w4 != width:
        raise ConvertError(f"{what}: `visual.proj` / `mlp.c_fc.weight` do not match the width {width}")
    if width % 64:
        raise ConvertError(f"{what}: vision width {width} (`visual.conv1.weight`) is not a multiple of the "
                           "head width 64")
    vision = {"image_size": grid * p, "layers": layers, "width": width, "patch_size": p, "head_width": 64,
              "mlp_ratio": mlp_w / width}
    vocab, tw = _need(sd, "clip.token_embedding.weight", 2, what)
    ctx = _need(sd, "clip.positional_embedding", 2, what)[0]
    tl = _count(sd, "clip.transformer.resblocks.")
    te = _need(sd, "clip.text_projection", 2, what)[1]
    if te != embed_dim:
        raise ConvertError(f"{what}: `clip.text_projection` projects to {te}, `visual.proj` to {embed_dim}")
    text = {"context_length": ctx, "vocab_size": vocab, "width": tw, "heads": max(1, tw // 64), "layers": tl}
    return {"embed_dim": embed_dim, "vision_cfg": vision, "text_cfg": text, "custom_text": True,
            "quick_gelu": quick_gelu}


def official_daclip(off, model_cfg, pretrained=None, name=None):
    """The official DaCLIP for `model_cfg` — registered in the official factory (a `daclip_…`
    name: its DaCLIP(CLIP(**cfg)) branch) — loaded from `pretrained` as test.py does, or with the
    official random initialisation when None."""
    factory = off.open_clip.factory
    name = name or "daclip_converted"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, name + ".json")
        with open(path, "w") as f:
            json.dump(model_cfg, f)
        factory.add_model_config(path)
    if pretrained is None:
        model = factory.create_model(name)
    else:
        model, _ = off.open_clip.create_model_from_pretrained(name, pretrained=pretrained)
    return model.eval()


def build_daclip(off, cfg, ckpt):
    try:
        return official_daclip(off, cfg, ckpt)
    except RuntimeError as e:
        raise ConvertError(f"{ckpt}: {_strict_error(e)} (loading strictly into the official DaCLIP with the inferred "
                           f"{cfg})") from None


# ---------------------------------------------------------------- the folder

def scheduler_config(sde=RELEASED_SDE, sampler=RELEASED_SAMPLER):
    """The engine's MeanRevertingScheduler (src/schedule/restoration.rs `MrConfig`) for the
    official IRSDE + MRSampler options (mrsampler.yml `sde:` / `sampler:`). `num_sample_steps` has
    no field: it is `diffuse restore --steps` (default 20, the released value)."""
    if sde["schedule"] != "cosine":
        raise ConvertError(f"sde.schedule `{sde['schedule']}`: only cosine is supported")
    return {
        "_class_name": "MeanRevertingScheduler",
        "num_train_timesteps": sde["T"],
        "max_sigma": sde["max_sigma"],
        "eps": sde["eps"],
        "theta_schedule": "cosine",
        "original_theta_bar": False,
        "prediction_type": FIT_TARGET[sampler["fit_target"]],
        "solver_type": sampler["solver_type"],
        "solver_order": sampler["order"],
        "solver_form": sampler["parameterization"],
        "time_schedule": sampler["time_schedule"],
        "lambda_min": sampler["lambda_min"],
        "denoise_last": sampler["denoise_last"],
        "thresholding": sampler["thresholding"],
        "dynamic_thresholding_ratio": sampler["threshold_ratio"],
        "sample_max_value": sampler["threshold_max"],
        "rho": sampler.get("rho", 7.0),
        "timestep_offset": sampler.get("timestep_offset", 0),
    }


def daclip_tensors(model):
    """`visual.*` and `visual_control.*` of the DaCLIP state dict (checked equal to `clip.visual.*`)."""
    sd = model.state_dict()
    out = {k: v for k, v in sd.items() if k.startswith("visual.") or k.startswith("visual_control.")}
    for k, v in out.items():
        if k.startswith("visual.") and not torch.equal(sd["clip." + k], v):
            raise ConvertError(f"`clip.{k}` differs from `{k}` (the official DaCLIP shares one module)")
    return out


def write_folder(out, unet, unet_cfg, daclip, daclip_cfg, dtype=torch.float32, sampler=RELEASED_SAMPLER):
    """Writes the model folder atomically (a sibling temp folder renamed into place)."""
    if unet_cfg["use_degra_context"] or unet_cfg["use_image_context"]:
        if unet_cfg["context_dim"] != daclip_cfg["embed_dim"]:
            raise ConvertError(f"unet context_dim {unet_cfg['context_dim']} (`text_mlp.0.weight` / `attn2.to_k`) "
                               f"≠ DA-CLIP embed_dim {daclip_cfg['embed_dim']} (`visual.proj`)")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".tmp-", dir=parent)
    try:
        def save(sub, name, tensors):
            os.makedirs(os.path.join(tmp, sub), exist_ok=True)
            save_file({k: v.detach().to(dtype).contiguous() for k, v in tensors.items()},
                      os.path.join(tmp, sub, name), metadata={"format": "pt"})

        def dump(sub, name, obj):
            os.makedirs(os.path.join(tmp, sub), exist_ok=True)
            with open(os.path.join(tmp, sub, name), "w") as f:
                json.dump(obj, f, indent=2)
                f.write("\n")

        dump("", "model_index.json", {"_class_name": "DaclipRestorationPipeline", "unet": "unet",
                                      "image_encoder": "daclip", "scheduler": "scheduler",
                                      "sample_range": [0.0, 1.0]})
        dump("unet", "config.json", {"_class_name": "ConditionalUNet", **unet_cfg})
        save("unet", "diffusion_pytorch_model.safetensors", unet.state_dict())
        dump("daclip", "config.json", {
            "_class_name": "DaCLIP", "embed_dim": daclip_cfg["embed_dim"], "vision_cfg": daclip_cfg["vision_cfg"],
            "quick_gelu": daclip_cfg["quick_gelu"], "image_mean": CLIP_MEAN, "image_std": CLIP_STD})
        save("daclip", "model.safetensors", daclip_tensors(daclip))
        dump("scheduler", "scheduler_config.json", scheduler_config(sampler=sampler))
        mask = os.umask(0)
        os.umask(mask)
        for d, _, files in os.walk(tmp):  # mkdtemp makes 0700; the usual modes instead
            os.chmod(d, 0o777 & ~mask)
            for f in files:
                os.chmod(os.path.join(d, f), 0o666 & ~mask)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert(off, ir_ckpt, daclip_ckpt, out, dtype=torch.float32, quick_gelu=False):
    """Reads, infers, loads strictly into the official modules, writes; returns the two configs."""
    for p in [ir_ckpt, daclip_ckpt]:
        if not os.path.isfile(p):
            raise ConvertError(f"{p}: no such file")
    unet_cfg = infer_unet_config(read_ir_state_dict(ir_ckpt))
    daclip_cfg = infer_daclip_config(read_daclip_state_dict(off, daclip_ckpt), quick_gelu)
    unet = build_unet(off, unet_cfg, ir_ckpt)
    daclip = build_daclip(off, daclip_cfg, daclip_ckpt)
    write_folder(out, unet, unet_cfg, daclip, daclip_cfg, dtype)
    return unet_cfg, daclip_cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo_arg(ap)
    ap.add_argument("--ir-checkpoint", required=True, help="universal-ir.pth (the ConditionalUNet state dict)")
    ap.add_argument("--daclip-checkpoint", required=True, help="daclip_ViT-B-32.pt (the DaCLIP checkpoint)")
    ap.add_argument("--out", required=True, help="the model folder to write")
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                    help="tensor dtype of the written safetensors (default float32, as trained)")
    ap.add_argument("--quick-gelu", action="store_true",
                    help="the DA-CLIP was trained with QuickGELU (not inferable from shapes; the released "
                         "daclip_ViT-B-32 config uses GELU)")
    args = ap.parse_args()
    off = load_official(args.official)
    try:
        unet_cfg, daclip_cfg = convert(off, args.ir_checkpoint, args.daclip_checkpoint, args.out,
                                       getattr(torch, args.dtype), args.quick_gelu)
    except ConvertError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {args.out}: ConditionalUNet {unet_cfg}, DaCLIP vision {daclip_cfg['vision_cfg']}, "
          f"embed_dim {daclip_cfg['embed_dim']}")


if __name__ == "__main__":
    main()
