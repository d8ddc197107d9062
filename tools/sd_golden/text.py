"""Part `text`: transformers' CLIPTextModel on a few prompts, for both tiny pipelines, with clip_skip
applied as diffusers' StableDiffusionPipeline.encode_prompt does (hidden_states[-(clip_skip + 1)], then
the text model's final_layer_norm). encode_prompt itself is used for clip_skip=None; with clip_skip it
reaches `text_encoder.text_model`, which transformers 5 no longer has, so those lines are redone here.

-> tests/golden/sd/<pipe>/text_io.safetensors:
   input_ids          F32 [P, 77]      the pipeline tokenizer's padded ids (exact integers)
   last_hidden_state  F32 [P, 77, H]   encode_prompt(clip_skip=None): text_model's final output
   clip_skip_1        F32 [P, 77, H]   encode_prompt(clip_skip=1): hidden_states[-2] -> final_layer_norm
"""
import os

import torch
from safetensors.torch import save_file

from .common import PIPES, load_pipeline, pipe_dir

PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "",
    "A red CUBE on a blue sphere, 4k, highly detailed!!! (trending on artstation)",
    "café — naïve 東京 🚀 " + "very long prompt " * 30,
]


def main():
    for name in PIPES:
        pipe = load_pipeline(name)
        tok = pipe.tokenizer
        ids = tok(PROMPTS, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            last, _ = pipe.encode_prompt(PROMPTS, "cpu", 1, False, clip_skip=None)
            te = pipe.text_encoder
            hs = te(ids, output_hidden_states=True).hidden_states
            skip1 = getattr(te, "text_model", te).final_layer_norm(hs[-(1 + 1)])
            # The same ids straight through the model (encode_prompt tokenises itself).
            direct = te(ids).last_hidden_state
        assert torch.equal(direct, last), "encode_prompt and the direct forward disagree"
        out = os.path.join(pipe_dir(name), "text_io.safetensors")
        save_file({"input_ids": ids.float().contiguous(), "last_hidden_state": last.float().contiguous(),
                   "clip_skip_1": skip1.float().contiguous()}, out)
        print(f"  {name}: {tuple(last.shape)} max|y| {last.abs().max():.3f} -> {out}")
