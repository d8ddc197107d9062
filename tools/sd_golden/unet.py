"""Part `unet`: UNet2DConditionModel forwards of both tiny pipelines, computed by diffusers in
float64 (the f16-stored weights are exact there) from f16-exact random inputs.

Writes tests/golden/sd/<pipe>/unet_io.safetensors with, per case (`square`: [2, 4, 16, 16],
`wide`: [2, 4, 16, 24]): `<case>.sample`, `<case>.timestep` (f32 [2], one per sample),
`<case>.encoder_hidden_states` ([2, 77, cross_attention_dim]) and `<case>.output`."""
import os

import torch
from safetensors.torch import save_file

from .common import PIPES, load_pipeline, pipe_dir

CASES = {
    "square": dict(size=(16, 16), timesteps=[999.0, 261.0]),
    "wide": dict(size=(16, 24), timesteps=[500.0, 1.0]),
}


def f16_exact(t):
    return t.half().double()


def main():
    for i, name in enumerate(PIPES):
        unet = load_pipeline(name).unet.to(torch.float64).eval()
        g = torch.Generator().manual_seed(7000 + i)
        out = {}
        for case, c in CASES.items():
            h, w = c["size"]
            sample = f16_exact(torch.randn(2, unet.config.in_channels, h, w, generator=g, dtype=torch.float64))
            ehs = f16_exact(torch.randn(2, 77, unet.config.cross_attention_dim, generator=g, dtype=torch.float64))
            t = torch.tensor(c["timesteps"], dtype=torch.float64)
            with torch.no_grad():
                y = unet(sample, t, encoder_hidden_states=ehs).sample
            for k, v in dict(sample=sample, timestep=t, encoder_hidden_states=ehs, output=y).items():
                out[f"{case}.{k}"] = v.float().contiguous()
            print(f"  {name} {case}: output {tuple(y.shape)} max|y| {y.abs().max().item():.4f}")
        save_file(out, os.path.join(pipe_dir(name), "unet_io.safetensors"))
