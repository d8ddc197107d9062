"""Part `pipelines`: builds and saves the random-weight tiny pipelines (weights stored as F16,
which the random weights round to exactly, so every part computes with the same f32 values)."""
import os
import shutil

import torch

from .common import PIPES, configs, drop_tokenizer_json, pipe_dir, round_f16, write_tokenizer


def build(name, seed):
    from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    c = configs(name)
    torch.manual_seed(seed)
    unet = round_f16(UNet2DConditionModel(**c["unet"]), seed + 1)
    vae = round_f16(AutoencoderKL(**c["vae"]), seed + 2)
    text = round_f16(CLIPTextModel(CLIPTextConfig(**c["text"])), seed + 3)
    sched_cls = DDIMScheduler if c["scheduler"] == "DDIMScheduler" else PNDMScheduler
    sched = sched_cls(**c["sched"])
    out = pipe_dir(name)
    if os.path.exists(out):
        shutil.rmtree(out)
    tok = write_tokenizer(os.path.join(out, "tokenizer"), c["pad"])
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
    drop_tokenizer_json(os.path.join(out, "tokenizer"))
    print(f"  {name}: saved to {out}")


def main():
    for i, name in enumerate(PIPES):
        build(name, 1000 * (i + 1))
