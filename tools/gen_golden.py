#!/usr/bin/env python3
"""Golden tensors for the UNet2DModel parity tests (run offline by hand, never in CI).

    python3 -m venv v && v/bin/pip install torch diffusers safetensors
    v/bin/python tools/gen_golden.py            # writes tests/golden/unet_*/

Each case builds a small diffusers UNet2DModel from a config that exercises a set of options,
with random weights perturbed so that norm scales and biases are not 1/0, saves it with
`save_pretrained` (the unmodified diffusers layout), and writes `io.safetensors` holding the
input `sample`, `timestep` (f32 [N]), optional `class_labels` (i64 [N]) and the model's
`.sample` as `output`, computed in float32 on the CPU. Some cases store the checkpoint in F16 or
BF16: their expected output is computed from the rounded weights.
"""
import json
import os
import shutil
import sys

import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")

CASES = {
    # google/ddpm-cifar10-32 in miniature: positional embedding with flip_sin_to_cos=False and
    # freq_shift=1, downsample_padding=0 (asymmetric pad), attention in the second level.
    "unet_ddpm_like": dict(
        config=dict(
            sample_size=16, in_channels=3, out_channels=3,
            block_out_channels=[16, 32, 32], layers_per_block=2,
            down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
            norm_num_groups=8, norm_eps=1e-6, attention_head_dim=8,
            flip_sin_to_cos=False, freq_shift=1, downsample_padding=0,
        ),
        shape=(2, 3, 16, 16), timestep=[10.0, 999.0], dtype="F32",
    ),
    # Class-conditional, channel-concat conditioning (in != out), a size that is not a power
    # of two, scale_shift time norm (mid attention then has no group norm), head dim = channels.
    "unet_class_cond": dict(
        config=dict(
            sample_size=28, in_channels=2, out_channels=1,
            block_out_channels=[8, 16, 16], layers_per_block=1,
            down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
            norm_num_groups=4, attention_head_dim=None, num_class_embeds=10,
            resnet_time_scale_shift="scale_shift",
        ),
        shape=(3, 2, 28, 28), timestep=[0.0, 417.5, 999.0], labels=[0, 3, 9], dtype="F16",
    ),
    # Resnet resampling, size 12, centred input, explicit time_embedding_dim, attention groups,
    # mid-block scale factor, a timestep class embedding; stored as BF16.
    "unet_resnet_resample": dict(
        config=dict(
            sample_size=12, in_channels=1, out_channels=2,
            block_out_channels=[8, 16], layers_per_block=1,
            down_block_types=["AttnDownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "AttnUpBlock2D"],
            downsample_type="resnet", upsample_type="resnet",
            norm_num_groups=4, attn_norm_num_groups=2, attention_head_dim=4,
            center_input_sample=True, time_embedding_dim=24, mid_block_scale_factor=1.4142,
            class_embed_type="timestep",
        ),
        shape=(2, 1, 12, 12), timestep=[3.0, 640.0], labels=[1, 7], dtype="BF16",
    ),
    # No mid block, no attention anywhere, flip_sin_to_cos=True.
    "unet_no_mid": dict(
        config=dict(
            sample_size=8, in_channels=3, out_channels=3,
            block_out_channels=[8, 8], layers_per_block=1,
            down_block_types=["DownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "UpBlock2D"],
            norm_num_groups=2, mid_block_type=None, add_attention=False,
        ),
        shape=(1, 3, 8, 8), timestep=[250.0], dtype="F32",
    ),
    # Fourier time embedding (ncsnpp-style), output divided by the noise level; a mid block
    # without attention (add_attention=False).
    "unet_fourier": dict(
        config=dict(
            sample_size=8, in_channels=3, out_channels=3,
            block_out_channels=[8, 16], layers_per_block=1,
            down_block_types=["DownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "UpBlock2D"],
            norm_num_groups=4, time_embedding_type="fourier", attention_head_dim=8,
            add_attention=False,
        ),
        shape=(2, 3, 8, 8), timestep=[0.01, 35.0], dtype="F32",
    ),
    # NCSN++ in miniature (google/ncsnpp-*): skip blocks with FIR resampling and the image
    # skip path, norm_num_groups null, Fourier embedding, mid-block scale √2.
    "unet_ncsnpp_like": dict(
        config=dict(
            sample_size=16, in_channels=3, out_channels=3,
            block_out_channels=[32, 32, 64], layers_per_block=1,
            down_block_types=["SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"],
            up_block_types=["SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"],
            time_embedding_type="fourier", norm_num_groups=None, norm_eps=1e-6,
            mid_block_scale_factor=1.41421356237, attention_head_dim=16, flip_sin_to_cos=True,
        ),
        shape=(2, 3, 16, 16), timestep=[0.05, 20.0], dtype="F32",
    ),
    # Skip blocks with attention at the lowest level (no downsampler there), positional
    # embedding and scale_shift.
    "unet_skip_attn_last": dict(
        config=dict(
            sample_size=8, in_channels=3, out_channels=3,
            block_out_channels=[32, 32], layers_per_block=2,
            down_block_types=["SkipDownBlock2D", "AttnSkipDownBlock2D"],
            up_block_types=["AttnSkipUpBlock2D", "SkipUpBlock2D"],
            norm_num_groups=None, resnet_time_scale_shift="scale_shift", attention_head_dim=8,
        ),
        shape=(2, 3, 8, 8), timestep=[7.0, 901.0], dtype="F32",
    ),
}


def perturb(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "class_embedding.weight" == name or name == "time_proj.weight":
                p.copy_(torch.randn(p.shape, generator=gen) * (16.0 if "time_proj" in name else 1.0))
            else:
                p.add_(0.02 * torch.randn(p.shape, generator=gen))


def main():
    torch.set_num_threads(1)
    only = set(sys.argv[1:])
    for i, (name, case) in enumerate(CASES.items()):
        if only and name not in only:
            continue
        gen = torch.Generator().manual_seed(1000 + i)
        torch.manual_seed(1000 + i)
        model = UNet2DModel(**case["config"]).eval()
        perturb(model, gen)
        dt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[case["dtype"]]
        if dt != torch.float32:
            # Round the weights to the storage dtype; the reference runs those values in f32.
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(dt).to(torch.float32))
        out_dir = os.path.join(ROOT, name)
        shutil.rmtree(out_dir, ignore_errors=True)
        model.to(dt).save_pretrained(out_dir, safe_serialization=True)
        model.to(torch.float32)
        sample = torch.randn(case["shape"], generator=gen)
        t = torch.tensor(case["timestep"], dtype=torch.float32)
        io = {"sample": sample, "timestep": t}
        labels = None
        if "labels" in case:
            labels = torch.tensor(case["labels"], dtype=torch.int64)
            io["class_labels"] = labels
        with torch.no_grad():
            out = model(sample, t, class_labels=labels).sample
        io["output"] = out.contiguous()
        save_file(io, os.path.join(out_dir, "io.safetensors"))
        n = sum(p.numel() for p in model.parameters())
        print(f"{name}: {n} parameters, {case['dtype']}, output max|y| = {out.abs().max():.4f}")
    with open(os.path.join(ROOT, "README.md"), "w") as f:
        f.write(
            "# Golden tensors\n\nWritten by `tools/gen_golden.py` (diffusers "
            f"{__import__('diffusers').__version__}, torch {torch.__version__}); do not edit by hand.\n"
            "Each `unet_*` folder is an unmodified diffusers `UNet2DModel` folder plus `io.safetensors` "
            "(`sample`, `timestep`, optional `class_labels`, expected `output`).\n"
        )


if __name__ == "__main__":
    main()
