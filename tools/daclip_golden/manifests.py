"""`--parts manifests` of tools/gen_daclip_golden.py: the names and shapes of the official
state dicts (tests/golden/daclip/manifests.json), for the host-side check of a converted folder
(src/pipeline/daclip_tensors.rs): `ConditionalUNet(**unet)` for several constructor settings
(the released one included) and the `visual.*` / `visual_control.*` entries of the official
DaCLIP for several vision configs (ViT-B/32 included). No weights are stored.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import convert_daclip as cv  # noqa: E402
from daclip_golden.common import ROOT  # noqa: E402

UNETS = [
    {"in_nc": 3, "out_nc": 3, "nf": 64, "ch_mult": [1, 2, 4, 8], "context_dim": 512, "use_degra_context": True,
     "use_image_context": True},
    {"in_nc": 3, "out_nc": 3, "nf": 32, "ch_mult": [1, 1, 1, 1], "context_dim": 256, "use_degra_context": True,
     "use_image_context": True},
    {"in_nc": 3, "out_nc": 3, "nf": 32, "ch_mult": [1, 2, 4, 4, 2], "context_dim": 64, "use_degra_context": False,
     "use_image_context": True},
    {"in_nc": 1, "out_nc": 2, "nf": 32, "ch_mult": [1, 2, 4], "context_dim": 256, "use_degra_context": True,
     "use_image_context": False},
    {"in_nc": 3, "out_nc": 3, "nf": 32, "ch_mult": [1, 1, 2], "context_dim": None, "use_degra_context": False,
     "use_image_context": False},
]
VISIONS = [
    (512, {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32}),
    (256, {"image_size": 224, "layers": 2, "width": 128, "patch_size": 16}),
    (128, {"image_size": 64, "layers": 3, "width": 192, "patch_size": 16, "mlp_ratio": 2.0}),
]


def run(off):
    unets = []
    for u in UNETS:
        args = dict(u, context_dim=u["context_dim"] or 512)
        sd = off.ConditionalUNet(**args).state_dict()
        unets.append({"config": u, "tensors": [[k, list(v.shape)] for k, v in sd.items()]})
    visions = []
    for i, (embed, vc) in enumerate(VISIONS):
        cfg = {"embed_dim": embed, "vision_cfg": vc, "custom_text": True,
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}
        model = cv.official_daclip(off, cfg, name=f"daclip_manifest_{i}")
        sd = cv.daclip_tensors(model)
        vc = dict(vc)
        vc.setdefault("mlp_ratio", 4.0)
        visions.append({"embed_dim": embed, "vision_cfg": vc, "tensors": [[k, list(v.shape)] for k, v in sd.items()]})
    os.makedirs(ROOT, exist_ok=True)
    with open(os.path.join(ROOT, "manifests.json"), "w") as f:
        json.dump({"commit": off.commit, "conditional_unet": unets, "daclip_visual": visions}, f, separators=(",", ":"))
        f.write("\n")
    print(f"manifests: {len(unets)} ConditionalUNet and {len(visions)} DaCLIP state-dict layouts → {ROOT}")
