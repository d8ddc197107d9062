#!/usr/bin/env python3
"""Golden data for the Stable Diffusion parity tests (issue 19); run offline by hand, never in CI.

    python3 -m venv v && v/bin/pip install torch diffusers transformers safetensors open_clip_torch
    v/bin/python tools/gen_sd_golden.py [PART ...]

Parts (default: all, in this order), each a module of `tools/sd_golden/`:
  pipelines  the two random-weight tiny pipelines, saved as unmodified diffusers folders under
             tests/golden/sd/{sd1-tiny,sd2-tiny}/ (every other part loads them from there)
  tokenizer  CLIPTokenizer ids of the prompt corpus       -> tests/golden/sd/tokenizer.json
  text       CLIPTextModel hidden states                  -> tests/golden/sd/<pipe>/text_io.safetensors
  unet       UNet2DConditionModel forwards                -> tests/golden/sd/<pipe>/unet_io.safetensors
  vae        AutoencoderKL decode/encode                  -> tests/golden/sd/<pipe>/vae_io.safetensors
  single_file  original-layout (LDM) single-file keymaps, asked of diffusers' converters and
             verified with from_single_file; also full SD 1.5/2.1 from assets/configs (meta)
                                                          -> tests/golden/sd/single_file/<name>.json
  pipeline   a 10-step StableDiffusionPipeline run        -> tests/golden/sd/<pipe>/pipeline_io.safetensors
  img2img    StableDiffusionImg2ImgPipeline runs (schedulers x strengths, a non-square input)
                                                          -> tests/golden/sd/<pipe>/img2img_io.safetensors

The tokenizer vocabulary is the real CLIP BPE (open_clip's `bpe_simple_vocab_16e6.txt.gz`, MIT,
from the `open_clip_torch` wheel), written as transformers' vocab.json + merges.txt.
"""
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PARTS = ["pipelines", "tokenizer", "text", "unet", "vae", "single_file", "pipeline", "img2img"]


def main(argv):
    parts = argv or PARTS
    for p in parts:
        if p not in PARTS:
            sys.exit(f"unknown part {p!r}; parts: {' '.join(PARTS)}")
    for p in parts:
        mod = importlib.import_module(f"sd_golden.{p}")
        print(f"[gen_sd_golden] {p}", flush=True)
        mod.main()


if __name__ == "__main__":
    main(sys.argv[1:])
