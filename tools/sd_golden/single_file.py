"""Part `single_file`: the original (LDM / CompVis) single-file layout of Stable Diffusion
checkpoints, as diffusers' single-file loader reads it.

For each tiny pipeline, an original-layout state dict is built from the folder's weights by
inverting diffusers' converters here (`to_original`), and then VERIFIED by diffusers:
`StableDiffusionPipeline.from_single_file(file, config=<tiny folder>)` must load it and give
every parameter of the UNet, VAE and text encoder bit-identical to the folder's. The key
correspondence itself is asked of diffusers: its converters (`convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`)
are run on *tagged* tensors (each original tensor holds its key's number and its row index,
broadcast), and every converted parameter's tags say which original key and rows it came from.

The same is done, with tags only (no weights), for the full-size SD 1.5 and SD 2.1
architectures built on the meta device from `assets/configs/sd15` and `assets/configs/sd21`
(which checks that those configs build the published architectures in diffusers and
transformers), with the keys real single files hold (EMA keys, the DDPM schedule buffers,
`position_ids`, OpenCLIP's 24th block, `text_projection`, `logit_scale`).

Writes tests/golden/sd/single_file/<name>.json for sd1-tiny, sd2-tiny, sd15, sd21:
  {"text": "clip" | "open_clip",
   "keys": {original key: {"shape": [...], "dtype": "F16"|"F32"|"I64",
                           "to": [[component, diffusers name, row start, row end, squeeze]...]}}}
`to` is empty for keys no parameter comes from (diffusers drops or ignores them). The tiny
single files themselves are not committed: the Rust test builds them from the folders following
this keymap.
"""
import json
import os
import tempfile

import torch
from safetensors.torch import save_file

from .common import PIPES, ROOT, load_pipeline, pipe_dir

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "assets", "configs")
OUT = os.path.join(ROOT, "single_file")

# The DDPM buffers of CompVis' LatentDiffusion that SD 1.x/2.x files carry at the top level.
LDM_BUFFERS = [
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
]

RESNET_TO_LDM = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                 ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]


def _sub(name, pairs):
    for a, b in pairs:
        if name.startswith(a + "."):
            return b + name[len(a):]
    raise KeyError(name)


def unet_to_original(name, cfg):
    """diffusers UNet2DConditionModel parameter -> (original key without prefix)."""
    lpb = cfg["layers_per_block"]
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for a, b in fixed.items():
        if name.startswith(a + "."):
            return b + name[len(a):]
    p = name.split(".")
    if p[0] == "down_blocks":
        b = int(p[1])
        if p[2] == "resnets":
            i = 1 + b * (lpb + 1) + int(p[3])
            return f"input_blocks.{i}.0." + _sub(".".join(p[4:]), RESNET_TO_LDM)
        if p[2] == "attentions":
            i = 1 + b * (lpb + 1) + int(p[3])
            return f"input_blocks.{i}.1." + ".".join(p[4:])
        if p[2] == "downsamplers":
            i = 1 + b * (lpb + 1) + lpb
            return f"input_blocks.{i}.0.op." + ".".join(p[5:])
    if p[0] == "mid_block":
        if p[1] == "resnets":
            return f"middle_block.{2 * int(p[2])}." + _sub(".".join(p[3:]), RESNET_TO_LDM)
        return "middle_block.1." + ".".join(p[3:])
    if p[0] == "up_blocks":
        b = int(p[1])
        cross = cfg["up_block_types"][b].startswith("CrossAttn")
        if p[2] == "resnets":
            i = b * (lpb + 1) + int(p[3])
            return f"output_blocks.{i}.0." + _sub(".".join(p[4:]), RESNET_TO_LDM)
        if p[2] == "attentions":
            i = b * (lpb + 1) + int(p[3])
            return f"output_blocks.{i}.1." + ".".join(p[4:])
        if p[2] == "upsamplers":
            i = b * (lpb + 1) + lpb
            return f"output_blocks.{i}.{2 if cross else 1}.conv." + ".".join(p[5:])
    raise KeyError(name)


def vae_to_original(name, cfg):
    """diffusers AutoencoderKL parameter -> (original key without prefix, unsqueeze to 4-D?)."""
    n = len(cfg["block_out_channels"])
    p = name.split(".")
    if p[0] in ("quant_conv", "post_quant_conv"):
        return name, False
    side, rest = p[0], p[1:]
    if rest[0] in ("conv_in", "conv_out"):
        return name, False
    if rest[0] == "conv_norm_out":
        return f"{side}.norm_out." + ".".join(rest[1:]), False
    res = [("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"),
           ("conv_shortcut", "nin_shortcut")]
    if rest[0] == "mid_block":
        if rest[1] == "resnets":
            return f"{side}.mid.block_{int(rest[2]) + 1}." + _sub(".".join(rest[3:]), res), False
        attn = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]
        sub = _sub(".".join(rest[3:]), attn)
        return f"{side}.mid.attn_1." + sub, sub.endswith("weight") and not sub.startswith("norm")
    if rest[0] == "down_blocks":
        i = int(rest[1])
        if rest[2] == "resnets":
            return f"{side}.down.{i}.block.{rest[3]}." + _sub(".".join(rest[4:]), res), False
        return f"{side}.down.{i}.downsample.conv." + ".".join(rest[5:]), False
    if rest[0] == "up_blocks":
        k = n - 1 - int(rest[1])
        if rest[2] == "resnets":
            return f"{side}.up.{k}.block.{rest[3]}." + _sub(".".join(rest[4:]), res), False
        return f"{side}.up.{k}.upsample.conv." + ".".join(rest[5:]), False
    raise KeyError(name)


def open_clip_to_original(name):
    """transformers CLIPTextModel parameter (flat, no `text_model.`) -> OpenCLIP key (no
    prefix), or (in_proj key, index of q/k/v)."""
    fixed = {"embeddings.position_embedding.weight": "positional_embedding",
             "embeddings.token_embedding.weight": "token_embedding.weight",
             "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    if name in fixed:
        return fixed[name], None
    p = name.split(".")
    assert p[0] == "encoder" and p[1] == "layers", name
    i, rest = p[2], ".".join(p[3:])
    base = f"transformer.resblocks.{i}."
    for j, qkv in enumerate(["q_proj", "k_proj", "v_proj"]):
        if rest.startswith(f"self_attn.{qkv}."):
            return base + "attn.in_proj_" + rest.split(".")[-1], j
    m = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
         ("self_attn.out_proj", "attn.out_proj")]
    return base + _sub(rest, m), None


def flat(sd):
    """CLIPTextModel state dict without the `text_model.` level (transformers >= 5.6 has none)."""
    return {k.removeprefix("text_model."): v for k, v in sd.items() if not k.endswith("position_ids")}


def to_original(unet_sd, unet_cfg, vae_sd, vae_cfg, text_sd, open_clip, extra_layer):
    """An original-layout state dict from diffusers/transformers state dicts (values may be
    tensors or (shape, dtype) for shapes only: then returns {key: (shape, dtype)})."""
    shapes = not isinstance(next(iter(unet_sd.values())), torch.Tensor)
    out = {}
    for k, v in unet_sd.items():
        out["model.diffusion_model." + unet_to_original(k, unet_cfg)] = v
    for k, v in vae_sd.items():
        ok, unsq = vae_to_original(k, vae_cfg)
        if unsq:
            v = (list(v[0]) + [1, 1], v[1]) if shapes else v[:, :, None, None]
        out["first_stage_model." + ok] = v
    text = flat(text_sd)
    if not open_clip:
        for k, v in text.items():
            out["cond_stage_model.transformer.text_model." + k] = v
        n = text["embeddings.position_embedding.weight"]
        n = (n[0][0] if shapes else n.shape[0])
        out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = (
            ([1, n], torch.int64) if shapes else torch.arange(n)[None])
    else:
        pre = "cond_stage_model.model."
        qkv = {}
        for k, v in text.items():
            ok, j = open_clip_to_original(k)
            if j is None:
                out[pre + ok] = v
            else:
                qkv.setdefault(ok, [None] * 3)[j] = v
        for ok, parts in qkv.items():
            if shapes:
                s = list(parts[0][0])
                out[pre + ok] = ([3 * s[0]] + s[1:], parts[0][1])
            else:
                out[pre + ok] = torch.cat(parts, 0)
        h = (text["final_layer_norm.weight"][0][0] if shapes else text["final_layer_norm.weight"].shape[0])
        dt = torch.float16
        g = torch.Generator().manual_seed(11)
        extra = {"text_projection": [h, h], "logit_scale": []}
        if extra_layer is not None:
            # OpenCLIP's last block, after the penultimate output SD 2.x uses (diffusers ignores it).
            n = extra_layer
            inter = (text["encoder.layers.0.mlp.fc1.weight"][0][0] if shapes
                     else text["encoder.layers.0.mlp.fc1.weight"].shape[0])
            b = f"transformer.resblocks.{n}."
            extra.update({b + "ln_1.weight": [h], b + "ln_1.bias": [h], b + "ln_2.weight": [h], b + "ln_2.bias": [h],
                          b + "attn.in_proj_weight": [3 * h, h], b + "attn.in_proj_bias": [3 * h],
                          b + "attn.out_proj.weight": [h, h], b + "attn.out_proj.bias": [h],
                          b + "mlp.c_fc.weight": [inter, h], b + "mlp.c_fc.bias": [inter],
                          b + "mlp.c_proj.weight": [h, inter], b + "mlp.c_proj.bias": [h]})
        for k, s in extra.items():
            out[pre + k] = (s, dt) if shapes else torch.randn(s, generator=g).half().float()
    # What else real files carry: the DDPM schedule buffers and EMA bookkeeping.
    for k in LDM_BUFFERS:
        out[k] = ([1000], torch.float32) if shapes else torch.linspace(0.1, 0.9, 1000)
    out["model_ema.decay"] = ([], torch.float32) if shapes else torch.tensor(0.9999)
    out["model_ema.num_updates"] = ([], torch.int32) if shapes else torch.tensor(1000, dtype=torch.int32)
    return out


# --- asking diffusers: tagged tensors through its converters ---------------------------------

def tagged(shape, key_id, dtype):
    """A tensor whose every element is key_id * 2**24 + (its row index), broadcast (tiny storage)."""
    shape = list(shape)
    if len(shape) == 0:
        return torch.tensor(key_id * 2**24, dtype=torch.int64)
    rows = torch.arange(shape[0], dtype=torch.int64) + key_id * 2**24
    return rows.view([-1] + [1] * (len(shape) - 1)).expand(shape)


def decode(t, keys):
    """(original key, row start, row end) a converted tensor was taken from."""
    if t.dim() == 0:
        v = int(t)
        return keys[v >> 24], 0, 1
    col = t.reshape(t.shape[0], -1)[:, 0] if t.dim() > 1 else t
    # every element of a row must carry the same tag (rows were broadcast)
    assert bool((t.reshape(t.shape[0], -1) == col[:, None]).all())
    ids = (col >> 24).unique()
    assert len(ids) == 1, "a converted tensor mixes original keys"
    rows = col & (2**24 - 1)
    lo = int(rows[0])
    assert torch.equal(rows, torch.arange(lo, lo + len(rows))), "rows not contiguous"
    return keys[int(ids[0])], lo, lo + len(rows)


def diffusers_keymap(orig, unet_cfg, vae_cfg, text_model, open_clip, params):
    """{original key: [(component, name, r0, r1, squeeze)]} by running diffusers' converters on
    tagged tensors. `params`: {component: {name: shape}} of the diffusers/transformers models."""
    from diffusers.loaders import single_file_utils as sfu

    keys = sorted(orig)
    ckpt = {k: tagged(orig[k][0], i, orig[k][1]) for i, k in enumerate(keys)}
    conv = {
        "unet": sfu.convert_ldm_unet_checkpoint(ckpt, unet_cfg),
        "vae": sfu.convert_ldm_vae_checkpoint(ckpt, vae_cfg),
    }
    if open_clip:
        te = sfu.convert_open_clip_checkpoint(text_model, ckpt, prefix="cond_stage_model.model.")
    else:
        te = sfu.convert_ldm_clip_checkpoint(ckpt)
    conv["text_encoder"] = {k.removeprefix("text_model."): v for k, v in te.items()}
    out = {k: [] for k in keys}
    for comp, sd in conv.items():
        want = params[comp]
        missing = sorted(set(want) - set(sd))
        assert not missing, f"{comp}: diffusers' converter gives no {missing[:5]}"
        for name, t in sd.items():
            if name not in want:
                continue  # not a parameter of the model (diffusers drops it when loading)
            key, r0, r1 = decode(t, keys)
            oshape = list(orig[key][0])
            squeeze = list(t.shape) != oshape and list(t.shape) != [r1 - r0] + oshape[1:]
            assert list(t.shape) == list(want[name]), (comp, name, t.shape, want[name])
            full = (r0, r1) == (0, oshape[0] if oshape else 1)
            out[key].append([comp, name, None if full else r0, None if full else r1, squeeze])
    return out


def dtype_name(d):
    return {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64", torch.int32: "I32"}[d]


def write(name, orig, keymap, open_clip):
    os.makedirs(OUT, exist_ok=True)
    doc = {"text": "open_clip" if open_clip else "clip",
           "keys": {k: {"shape": list(orig[k][0]), "dtype": dtype_name(orig[k][1]), "to": keymap[k]}
                    for k in sorted(orig)}}
    path = os.path.join(OUT, f"{name}.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"), sort_keys=True)
    used = sum(1 for v in keymap.values() if v)
    print(f"  {name}: {len(orig)} original keys, {used} feed parameters -> {os.path.relpath(path)}")


def shapes_of(sd):
    return {k: (list(v.shape), v.dtype) for k, v in sd.items()}


def tiny(name):
    pipe = load_pipeline(name)
    open_clip = name == "sd2-tiny"
    ucfg, vcfg = dict(pipe.unet.config), dict(pipe.vae.config)
    usd, vsd = pipe.unet.state_dict(), pipe.vae.state_dict()
    tsd = pipe.text_encoder.state_dict()
    # OpenCLIP files hold one block more than the diffusers text encoder (SD 2.x bakes the
    # penultimate layer into num_hidden_layers): diffusers lists SD 2.x's `resblocks.23` as
    # ignored, and a converted block past the model's layers is not one of its parameters.
    n_layers = pipe.text_encoder.config.num_hidden_layers
    orig = to_original(usd, ucfg, vsd, vcfg, tsd, open_clip, extra_layer=n_layers if open_clip else None)
    # f16 storage as real files (every folder weight is f16-exact)
    orig = {k: (v.half() if v.is_floating_point() and not k in LDM_BUFFERS else v).contiguous() for k, v in orig.items()}

    # VERIFY with diffusers: from_single_file must reproduce the folder's parameters exactly.
    from diffusers import StableDiffusionPipeline

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.safetensors")
        save_file(orig, path)
        sf = StableDiffusionPipeline.from_single_file(path, config=pipe_dir(name), torch_dtype=torch.float32,
                                                      safety_checker=None, requires_safety_checker=False,
                                                      local_files_only=True)
    for comp in ["unet", "vae", "text_encoder"]:
        a, b = getattr(pipe, comp).state_dict(), getattr(sf, comp).state_dict()
        assert set(a) == set(b), comp
        bad = [k for k in a if not torch.equal(a[k].float(), b[k].float())]
        assert not bad, f"{name} {comp}: from_single_file differs from the folder on {bad[:5]}"
    print(f"  {name}: diffusers from_single_file reproduces every folder parameter exactly")

    params = {"unet": shapes_of(usd), "vae": shapes_of(vsd), "text_encoder": shapes_of(flat(tsd))}
    params = {c: {k: v[0] for k, v in p.items()} for c, p in params.items()}
    oshapes = shapes_of(orig)
    keymap = diffusers_keymap(oshapes, ucfg, vcfg, pipe.text_encoder, open_clip, params)
    write(name, oshapes, keymap, open_clip)


def full(name):
    """Shapes only: the published architectures from assets/configs/<name> on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    d = os.path.join(ASSETS, name)
    rd = lambda sub: json.load(open(os.path.join(d, sub, "config.json")))
    ucfg, vcfg = rd("unet"), rd("vae")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(ucfg)
        vae = AutoencoderKL.from_config(vcfg)
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(os.path.join(d, "text_encoder")))
    ucfg, vcfg = dict(unet.config), dict(vae.config)
    open_clip = name == "sd21"
    sd = lambda m: {k: (list(v.shape), torch.float16) for k, v in m.state_dict().items()}
    usd, vsd, tsd = sd(unet), sd(vae), sd(text)
    nparams = sum(v.numel() for v in unet.parameters())
    print(f"  {name}: UNet {nparams / 1e6:.1f} M parameters, text encoder "
          f"{text.config.num_hidden_layers} layers of {text.config.hidden_size}")
    orig = to_original(usd, ucfg, vsd, vcfg, tsd, open_clip,
                       extra_layer=text.config.num_hidden_layers if open_clip else None)
    params = {"unet": {k: v[0] for k, v in usd.items()}, "vae": {k: v[0] for k, v in vsd.items()},
              "text_encoder": {k: v[0] for k, v in flat(tsd).items()}}
    keymap = diffusers_keymap(orig, ucfg, vcfg, text, open_clip, params)
    write(name, orig, keymap, open_clip)


def main():
    for name in PIPES:
        tiny(name)
    for name in ["sd15", "sd21"]:
        full(name)


if __name__ == "__main__":
    main()
