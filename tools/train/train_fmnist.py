#!/usr/bin/env python3
"""Train a small diffusers UNet2DModel on Fashion-MNIST (offline, by hand; never in CI).

    apt-get install dataset-fashion-mnist
    v/bin/python tools/train/train_fmnist.py --kind uncond --minutes 60 --out assets/fmnist-ddpm

Writes a standard diffusers model folder: config.json, diffusion_pytorch_model.safetensors
(EMA weights, F16), scheduler_config.json (DDPMScheduler, linear betas, epsilon prediction) and
train_log.json (command, seed, steps, wall time, loss curve). Data: 28×28 images scaled to
[−1, 1]. `--kind class` trains a class-conditional model with `num_class_embeds=11` (index 10
is the null label, used with probability 0.1 for classifier-free guidance). `--kind flow` trains
a rectified-flow model (Liu et al. 2022): x_t = (1 − t)·x0 + t·ε with t ~ U(0, 1), the network
sees timestep t·1000 and predicts v = ε − x0 (diffusers' `FlowMatchEulerDiscreteScheduler`
convention, shift 1.0); its scheduler_config.json is a `FlowMatchEulerDiscreteScheduler`.
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler, UNet2DModel

DATA = "/usr/share/datasets/fashion-mnist"


def load_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    dims = magic & 0xFF
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def build(kind):
    cfg = dict(
        sample_size=28, in_channels=1, out_channels=1,
        block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=16,
    )
    if kind == "class":
        cfg["num_class_embeds"] = 11
    return UNet2DModel(**cfg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=["uncond", "class", "flow"], default="uncond")
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock training budget")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images = load_idx("train-images-idx3-ubyte.gz").astype(np.float32) / 127.5 - 1.0
    labels = load_idx("train-labels-idx1-ubyte.gz").astype(np.int64)
    x_all = torch.from_numpy(images)[:, None]
    y_all = torch.from_numpy(labels)
    model = build(args.kind)
    ema = build(args.kind)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    if args.kind == "flow":
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    else:
        sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{args.kind}: {nparams} parameters", flush=True)
    t0 = time.time()
    step, losses, ema_decay = 0, [], 0.999
    budget = args.minutes * 60
    while time.time() - t0 < budget:
        idx = torch.from_numpy(rng.integers(0, len(x_all), args.batch))
        x0, y = x_all[idx], y_all[idx]
        if args.kind == "class":
            drop = torch.from_numpy(rng.random(args.batch) < 0.1)
            y = torch.where(drop, torch.full_like(y, 10), y)
        noise = torch.randn_like(x0)
        if args.kind == "flow":
            s = torch.rand(args.batch)
            xt = (1.0 - s)[:, None, None, None] * x0 + s[:, None, None, None] * noise
            t, target = s * 1000.0, noise - x0
        else:
            t = torch.randint(0, 1000, (args.batch,))
            xt = sched.add_noise(x0, noise, t)
            target = noise
        warm = min(1.0, (step + 1) / 500)
        for g in opt.param_groups:
            g["lr"] = args.lr * warm
        pred = model(xt, t, class_labels=y if args.kind == "class" else None).sample
        loss = torch.nn.functional.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = min(ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(d).add_(pm, alpha=1 - d)
        losses.append(float(loss))
        step += 1
        if step % 200 == 0:
            print(f"step {step} loss {np.mean(losses[-200:]):.4f} {time.time() - t0:.0f}s", flush=True)
    wall = time.time() - t0
    os.makedirs(args.out, exist_ok=True)
    ema.to(torch.float16).save_pretrained(args.out, safe_serialization=True)
    sched.save_pretrained(args.out)
    log = dict(
        command=" ".join([os.path.basename(sys.executable)] + sys.argv),
        kind=args.kind, seed=args.seed, steps=step, batch=args.batch, lr=args.lr,
        ema_decay=ema_decay, parameters=nparams, wall_seconds=round(wall, 1),
        torch=torch.__version__, threads=1,
        loss_per_200_steps=[round(float(np.mean(losses[i:i + 200])), 4) for i in range(0, len(losses), 200)],
    )
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(f"done: {step} steps in {wall:.0f}s -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
