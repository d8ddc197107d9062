#!/usr/bin/env python3
"""Checks tools/convert_daclip.py on random-weight official modules (offline, by hand; never in CI):

    python tools/daclip_golden/convert_check.py --official /tmp/mr-sampler [--full]

For each setting (reduced: ConditionalUNet nf 32 (the official constructor divides by nf // 32 heads: nf ≥ 32), ch_mult [1,2,4,8] and variants without either
context; DA-CLIP ViT width 128, 2 layers, patch 32 at 224; --full adds the released shapes: nf 64
and ViT-B/32), the official modules are built with random weights (zero modules re-randomised),
saved in the official checkpoint formats (`torch.save(state_dict)` for the IR network, with and
without DataParallel's `module.` prefix; the DA-CLIP as a bare state dict and as a training
checkpoint {"epoch", "state_dict" with `module.` keys}), converted, and the folder is checked:
the inferred configs equal the constructor settings, every written tensor equals the official
one, and official modules rebuilt from the folder alone (its config.json + safetensors) give the
same outputs as the originals (ConditionalUNet forward; `encode_image(control=True)`). Then the
bad inputs: a missing tensor, a tensor of the wrong shape, a context_dim that differs from the
DA-CLIP embed_dim → a ConvertError naming it, and no folder written.
"""
import argparse
import json
import os
import sys
import tempfile

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import convert_daclip as cv  # noqa: E402
from daclip_golden.common import load_official, repo_arg  # noqa: E402


def randomise(module, seed, scale=0.05):
    """Every parameter to N(0, scale²) (zero modules included), LayerNorm/GroupNorm affine near 1/0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if (name.endswith(".weight") or name.endswith(".g")) and p.dim() == 1 or name.endswith(".g"):
                p.copy_(1.0 + 0.1 * r)  # norm scales
            else:
                p.copy_(scale * r)
    return module


def unet_setting(nf, ch_mult, degra, image, context_dim=512):
    return {"in_nc": 3, "out_nc": 3, "nf": nf, "ch_mult": ch_mult, "context_dim": context_dim,
            "use_degra_context": degra, "use_image_context": image}


def daclip_setting(width, layers, patch=32, image=224, embed=512, text_width=64, text_layers=1):
    return {"embed_dim": embed,
            "vision_cfg": {"image_size": image, "layers": layers, "width": width, "patch_size": patch},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": text_width,
                         "heads": max(1, text_width // 64), "layers": text_layers},
            "custom_text": True}


def expected_unet_cfg(s):
    c = dict(s)
    if not (s["use_degra_context"] or s["use_image_context"]):
        c["context_dim"] = None
    return c


def unet_forward(net, cfg, seed=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, cfg["in_nc"], 19, 23, generator=g)
    mu = torch.rand(1, cfg["in_nc"], 19, 23, generator=g)
    ctx = torch.randn(1, 512 if cfg["context_dim"] is None else cfg["context_dim"], generator=g)
    ctx2 = torch.randn(ctx.shape, generator=g)
    with torch.no_grad():
        return net(x, mu, torch.tensor([37.5]), text_context=ctx, image_context=ctx2)


def check_folder(off, out, unet, daclip, s_unet, s_daclip):
    idx = json.load(open(os.path.join(out, "model_index.json")))
    assert idx["_class_name"] == "DaclipRestorationPipeline" and idx["sample_range"] == [0.0, 1.0], idx
    ucfg = json.load(open(os.path.join(out, "unet", "config.json")))
    assert ucfg.pop("_class_name") == "ConditionalUNet"
    assert ucfg == expected_unet_cfg(s_unet), (ucfg, s_unet)
    dcfg = json.load(open(os.path.join(out, "daclip", "config.json")))
    v = dcfg["vision_cfg"]
    assert dcfg["embed_dim"] == s_daclip["embed_dim"] and dcfg["quick_gelu"] is False
    for k, want in s_daclip["vision_cfg"].items():
        assert v[k] == want, (k, v[k], want)
    assert v["head_width"] == 64 and v["mlp_ratio"] == 4.0, v
    sch = json.load(open(os.path.join(out, "scheduler", "scheduler_config.json")))
    assert sch["max_sigma"] == 50 and sch["num_train_timesteps"] == 100 and sch["eps"] == 0.005, sch
    assert sch["prediction_type"] == "epsilon" and sch["solver_order"] == 2 and sch["lambda_min"] == -5.0, sch

    # Tensors: exactly the official state dicts (the DA-CLIP's two visual towers).
    ut = load_file(os.path.join(out, "unet", "diffusion_pytorch_model.safetensors"))
    usd = unet.state_dict()
    assert set(ut) == set(usd), set(ut) ^ set(usd)
    assert all(torch.equal(ut[k], usd[k]) for k in ut)
    dt = load_file(os.path.join(out, "daclip", "model.safetensors"))
    dsd = daclip.state_dict()
    want = {k for k in dsd if k.startswith("visual.") or k.startswith("visual_control.")}
    assert set(dt) == want, set(dt) ^ want
    assert all(torch.equal(dt[k], dsd[k]) for k in dt)
    assert any(k.startswith("visual_control.transformer.zero_modules.") for k in dt)

    # Official modules rebuilt from the folder alone give the same outputs.
    args = {k: ucfg[k] for k in ucfg}
    args["context_dim"] = args["context_dim"] or 512
    u2 = off.ConditionalUNet(**args)
    u2.load_state_dict(ut, strict=True)
    y1, y2 = unet_forward(unet, ucfg), unet_forward(u2.eval(), ucfg)
    assert torch.equal(y1, y2), (float((y1 - y2).abs().max()), float((y1 - unet_forward(unet, ucfg)).abs().max()))
    model_cfg = {"embed_dim": dcfg["embed_dim"], "vision_cfg": v, "quick_gelu": dcfg["quick_gelu"],
                 "text_cfg": s_daclip["text_cfg"], "custom_text": True}
    d2 = cv.official_daclip(off, model_cfg, name="daclip_check_rebuilt")
    missing, unexpected = d2.load_state_dict({**dt, **{"clip." + k: t for k, t in dt.items() if k.startswith("visual.")}},
                                             strict=False)
    assert not unexpected and all(not (k.startswith("visual") or k.startswith("clip.visual")) for k in missing), missing
    img = torch.randn(2, 3, v["image_size"], v["image_size"], generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        a = daclip.encode_image(img, control=True)
        b = d2.eval().encode_image(img, control=True)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    return float(y1.abs().max()), float(a[0].abs().max()), float(a[1].abs().max())


def expect_error(fn, *needles):
    try:
        fn()
    except cv.ConvertError as e:
        msg = str(e)
        assert all(n in msg for n in needles), (msg, needles)
        return msg
    raise AssertionError(f"no error; expected one naming {needles}")


def run_case(off, tmp, name, s_unet, s_daclip, seed):
    unet = randomise(off.ConditionalUNet(**s_unet), seed).eval()
    daclip = cv.official_daclip(off, s_daclip, name=f"daclip_check_{name}")
    randomise(daclip, seed + 1)
    ir = os.path.join(tmp, f"{name}-ir.pth")
    dc = os.path.join(tmp, f"{name}-daclip.pt")
    # IR: DataParallel-prefixed keys on odd seeds; DA-CLIP: a training checkpoint on odd seeds.
    usd = unet.state_dict()
    torch.save({("module." + k if seed % 2 else k): v for k, v in usd.items()}, ir)
    dsd = daclip.state_dict()
    if seed % 2:
        torch.save({"epoch": 3, "name": name, "state_dict": {"module." + k: v for k, v in dsd.items()}}, dc)
    else:
        torch.save(dsd, dc)
    out = os.path.join(tmp, name)
    ucfg, dcfg = cv.convert(off, ir, dc, out)
    scale = check_folder(off, out, unet, daclip, s_unet, s_daclip)
    print(f"{name}: unet {ucfg}, vision {dcfg['vision_cfg']}: folder == official (max|y| {scale[0]:.3g}, "
          f"max|image_features| {scale[1]:.3g}, max|degra_features| {scale[2]:.3g})")
    return unet, daclip, ir, dc


def bad_inputs(off, tmp, unet, daclip, ir, dc):
    out = os.path.join(tmp, "bad")
    usd = torch.load(ir)
    dsd = cv.read_daclip_state_dict(off, dc)

    def with_ir(sd, *needles):
        p = os.path.join(tmp, "bad-ir.pth")
        torch.save(sd, p)
        m = expect_error(lambda: cv.convert(off, p, dc, out), *needles)
        assert not os.path.exists(out) and not any(n.startswith("bad.tmp") for n in os.listdir(tmp)), m
        print(f"  bad IR checkpoint → {m[:160]}")

    def with_dc(sd, *needles):
        p = os.path.join(tmp, "bad-dc.pt")
        torch.save(sd, p)
        m = expect_error(lambda: cv.convert(off, ir, p, out), *needles)
        assert not os.path.exists(out), m
        print(f"  bad DA-CLIP checkpoint → {m[:160]}")

    k = next(k for k in usd if k.endswith("init_conv.weight"))
    with_ir({a: b for a, b in usd.items() if a != k}, "init_conv.weight", "missing")
    k = next(k for k in usd if k.endswith("downs.1.0.block1.proj.weight"))
    with_ir({**usd, k: torch.zeros(3, 3, 3, 3)}, "downs.1.0.block1.proj.weight")
    k = next(k for k in usd if k.endswith("mid_block1.mlp.1.bias"))
    with_ir({a: b for a, b in usd.items() if a != k}, "mid_block1.mlp.1.bias")
    k = next(k for k in usd if k.endswith("text_mlp.0.weight"))
    with_ir({**usd, k: torch.zeros(usd[k].shape[0], 77)}, "text_mlp.0.weight", "attn2.to_k")
    with_dc({a: b for a, b in dsd.items() if a != "visual.proj"}, "visual.proj", "missing")
    with_dc({a: b for a, b in dsd.items() if a != "visual_control.transformer.zero_modules.1.bias"},
            "visual_control.transformer.zero_modules.1.bias")
    with_dc({**dsd, "visual.transformer.resblocks.1.attn.in_proj_weight": torch.zeros(5, 5)},
            "visual.transformer.resblocks.1.attn.in_proj_weight")
    # context_dim ≠ embed_dim: the IR network takes 512-wide contexts, a DA-CLIP projecting to 256.
    small = cv.official_daclip(off, daclip_setting(128, 2, embed=256), name="daclip_check_embed256")
    with_dc(small.state_dict(), "context_dim", "embed_dim")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo_arg(ap)
    ap.add_argument("--full", action="store_true", help="also the released sizes (nf 64, ViT-B/32; ~2 GB of /tmp)")
    args = ap.parse_args()
    off = load_official(args.official)
    torch.set_num_threads(2)
    cases = [
        ("reduced_both", unet_setting(32, [1, 2, 4, 8], True, True), daclip_setting(128, 2)),
        ("reduced_degra_only", unet_setting(32, [1, 2, 4], True, False, 256), daclip_setting(128, 1, embed=256)),
        ("reduced_image_only", unet_setting(32, [1, 2], False, True, 128), daclip_setting(192, 3, patch=16, image=64,
                                                                                          embed=128)),
        ("reduced_no_context", unet_setting(32, [1, 1, 2], False, False), daclip_setting(64, 1)),
    ]
    if args.full:
        cases.append(("full", unet_setting(64, [1, 2, 4, 8], True, True),
                      daclip_setting(768, 12, text_width=512, text_layers=12)))
    with tempfile.TemporaryDirectory() as tmp:
        first = None
        for i, (name, su, sd) in enumerate(cases):
            r = run_case(off, tmp, name, su, sd, seed=10 + i)
            first = first or r
        print("bad inputs (reduced_both):")
        bad_inputs(off, tmp, *first)
    print("convert_check: all passed")


if __name__ == "__main__":
    main()
