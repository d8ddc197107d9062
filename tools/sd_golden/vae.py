"""Part `vae`: diffusers' AutoencoderKL decode and encode on both tiny pipelines, untiled and with
`enable_tiling()` at a small forced tile size -> tests/golden/sd/<pipe>/vae_io.safetensors.

Keys (all f32):
  decode_latents [2,4,16,16]    decode_sample [2,3,32,32]       (untiled `vae.decode`)
  decode_ns_latents [1,4,12,20] decode_ns_sample [1,3,24,40]    (non-square, untiled)
  encode_image [1,3,32,32]      encode_mean, encode_logvar [1,4,16,16]   (`latent_dist`)
  tiled_decode_sample [1,3,24,40]  `enable_tiling()` decode of decode_ns_latents with
                                   tile_latent_min_size 8, tile_sample_min_size 16
  tiled_encode_image [1,3,48,40]   tiled_encode_mean, tiled_encode_logvar [1,4,24,20]
                                   (same forced tiles) and untiled_encode_mean/logvar of it
  tile_sizes  [tile_latent_min_size, tile_sample_min_size] of the tiled entries
"""
import os

import torch
from safetensors.torch import save_file

from .common import PIPES, load_pipeline, pipe_dir

TILE_LATENT, TILE_SAMPLE = 8, 16


def golden(name, seed):
    vae = load_pipeline(name).vae.eval()
    g = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        z = torch.randn(2, 4, 16, 16, generator=g)
        out["decode_latents"] = z
        out["decode_sample"] = vae.decode(z).sample
        zn = torch.randn(1, 4, 12, 20, generator=g)
        out["decode_ns_latents"] = zn
        out["decode_ns_sample"] = vae.decode(zn).sample
        x = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
        out["encode_image"] = x
        d = vae.encode(x).latent_dist
        out["encode_mean"], out["encode_logvar"] = d.mean, d.logvar
        xt = torch.rand(1, 3, 48, 40, generator=g) * 2 - 1
        out["tiled_encode_image"] = xt
        d = vae.encode(xt).latent_dist
        out["untiled_encode_mean"], out["untiled_encode_logvar"] = d.mean, d.logvar

        vae.enable_tiling()
        vae.tile_latent_min_size, vae.tile_sample_min_size = TILE_LATENT, TILE_SAMPLE
        out["tiled_decode_sample"] = vae.decode(zn).sample
        d = vae.encode(xt).latent_dist
        out["tiled_encode_mean"], out["tiled_encode_logvar"] = d.mean, d.logvar
    out["tile_sizes"] = torch.tensor([TILE_LATENT, TILE_SAMPLE], dtype=torch.float32)
    out = {k: v.float().contiguous() for k, v in out.items()}
    a, b = out["tiled_decode_sample"], out["decode_ns_sample"]
    print(f"  {name}: diffusers tiled vs untiled decode max|d| {float((a - b).abs().max()):.3e}"
          f" (max|y| {float(b.abs().max()):.3e})")
    path = os.path.join(pipe_dir(name), "vae_io.safetensors")
    save_file(out, path)
    print(f"  {name}: wrote {path}")


def main():
    for i, name in enumerate(PIPES):
        golden(name, 1900 + i)
