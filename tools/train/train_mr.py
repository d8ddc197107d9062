#!/usr/bin/env python3
"""Train the mean-reverting (IR-SDE) 4× super-resolution model on Fashion-MNIST (offline, by
hand; never in CI).

    v/bin/python tools/train/train_mr.py --minutes 55 --out assets/fmnist-sr4

Degradation: 4×4 average pooling (28 → 7) then bilinear upsampling back to 28 (torch
`interpolate`, align_corners=False); μ is that degraded image, in [−1, 1] like x0. Process: the
MR-Sampler copy of the IR-SDE cosine θ schedule (T = 100, ε_end = 0.005, λ_s = max_sigma),
x_t = μ + m_t(x0 − μ) + σ̄_t ε with m_t = exp(−θ̄_t·dt), σ̄_t = λ_s·√(1 − m_t²), continuous
t ~ U(0, T) with θ̄ interpolated piecewise-linearly (as diffuse::schedule::restoration does),
so the network is valid at the float times the fast samplers ask for. The UNet2DModel takes
[x_t, μ] (in_channels 2) and the float time t, and predicts ε.

Writes config.json, diffusion_pytorch_model.safetensors (EMA, F16), scheduler_config.json
(`MeanRevertingScheduler`), testset.safetensors (`degraded`, `clean`: f32 [256,1,28,28] from
the Fashion-MNIST test split, never trained on) and train_log.json.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from train_fmnist import load_idx  # noqa: E402

T, EPS_END = 100, 0.005


def theta_bar():
    k = T + 2
    f = lambda i: math.cos(((i / k) + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    abar = [f(i) / f(0) for i in range(k + 1)]
    theta = [1.0 - abar[i + 1] for i in range(T + 1)]
    tb = np.cumsum(theta)
    return torch.tensor(tb, dtype=torch.float64), -math.log(EPS_END) / tb[T]


def degrade(x):
    return F.interpolate(F.avg_pool2d(x, 4), scale_factor=4, mode="bilinear", align_corners=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=55.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-sigma", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_all = torch.from_numpy(load_idx("train-images-idx3-ubyte.gz").astype(np.float32) / 127.5 - 1.0)[:, None]
    x_te = torch.from_numpy(load_idx("t10k-images-idx3-ubyte.gz").astype(np.float32) / 127.5 - 1.0)[:256, None]
    tb, dt = theta_bar()
    lam = args.max_sigma

    def build():
        return UNet2DModel(
            sample_size=28, in_channels=2, out_channels=1,
            block_out_channels=(32, 64, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8, attention_head_dim=16)

    model, ema = build(), build()
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"mr-sr4: {nparams} parameters", flush=True)
    t0, step, losses, budget = time.time(), 0, [], args.minutes * 60
    while time.time() - t0 < budget:
        idx = torch.from_numpy(rng.integers(0, len(x_all), args.batch))
        x0 = x_all[idx]
        flip = torch.from_numpy(rng.random(args.batch) < 0.5)
        x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        mu = degrade(x0)
        t = torch.from_numpy(rng.random(args.batch) * T)
        lo = t.floor().long().clamp(max=T - 1)
        tbt = tb[lo] + (t - lo) * (tb[lo + 1] - tb[lo])
        m = torch.exp(-tbt * dt)
        s = lam * torch.sqrt(1 - m * m)
        m, s = m.float()[:, None, None, None], s.float()[:, None, None, None]
        eps = torch.randn_like(x0)
        xt = mu + m * (x0 - mu) + s * eps
        warm = min(1.0, (step + 1) / 500)
        for g in opt.param_groups:
            g["lr"] = args.lr * warm
        pred = model(torch.cat([xt, mu], 1), t.float()).sample
        loss = F.mse_loss(pred, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = min(0.999, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(d).add_(pm, alpha=1 - d)
        losses.append(loss.item())
        step += 1
        if step % 200 == 0:
            print(f"step {step} loss {np.mean(losses[-200:]):.4f} {time.time() - t0:.0f}s", flush=True)
    wall = time.time() - t0
    os.makedirs(args.out, exist_ok=True)
    ema.to(torch.float16).save_pretrained(args.out, safe_serialization=True)
    sched = {"_class_name": "MeanRevertingScheduler", "num_train_timesteps": T, "max_sigma": lam,
             "eps": EPS_END, "theta_schedule": "cosine", "original_theta_bar": False,
             "prediction_type": "epsilon"}
    with open(os.path.join(args.out, "scheduler_config.json"), "w") as f:
        json.dump(sched, f, indent=1)
    save_file({"degraded": degrade(x_te).contiguous(), "clean": x_te.contiguous()},
              os.path.join(args.out, "testset.safetensors"))
    log = dict(command=" ".join([os.path.basename(sys.executable)] + sys.argv), seed=args.seed,
               steps=step, batch=args.batch, lr=args.lr, ema_decay=0.999, parameters=nparams,
               wall_seconds=round(wall, 1), torch=torch.__version__, threads=1,
               loss_per_200_steps=[round(float(np.mean(losses[i:i + 200])), 4)
                                   for i in range(0, len(losses), 200)])
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(f"done: {step} steps in {wall:.0f}s -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
