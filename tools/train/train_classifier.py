#!/usr/bin/env python3
"""Train the Fashion-MNIST feature classifier behind FID-FMNIST (offline, by hand; never in CI).

    v/bin/python tools/train/train_classifier.py --minutes 12 --out assets/fmnist-classifier

A small CNN the engine runs with its own kernels (diffuse::nn::classifier):
    3×3 conv → GroupNorm → SiLU → 2×2 avg-pool, three times with channels (32, 64, 128)
    (no pool after the last), global mean over H×W, fc1 (128 → 64) → SiLU = the features,
    fc2 (64 → 10) = the logits.
Input: 28×28 images in [−1, 1] (the samplers' scale). Writes config.json (`_class_name`
"FmnistClassifier"), model.safetensors (F16), fid_stats.safetensors (mean/covariance of the
features of the train and test sets, f64 → f32, computed from the F16-rounded weights),
golden.safetensors (16 test images with their features and logits, for the engine's parity
test) and train_log.json (command, seed, steps, wall time, test accuracy).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from train_fmnist import load_idx  # noqa: E402

CH = (32, 64, 128)
FEAT = 64
GROUPS = 8


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        chans = (1,) + CH
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1) for i in range(3))
        self.norms = nn.ModuleList(nn.GroupNorm(GROUPS, c, eps=1e-5) for c in CH)
        self.fc1 = nn.Linear(CH[-1], FEAT)
        self.fc2 = nn.Linear(FEAT, 10)

    def features(self, x):
        for i in range(3):
            x = F.silu(self.norms[i](self.convs[i](x)))
            if i < 2:
                x = F.avg_pool2d(x, 2)
        x = x.mean(dim=(2, 3))
        return F.silu(self.fc1(x))

    def forward(self, x):
        f = self.features(x)
        return f, self.fc2(f)


def feats(model, x, bs=500):
    out_f, out_l = [], []
    with torch.no_grad():
        for i in range(0, len(x), bs):
            f, l = model(x[i:i + bs])
            out_f.append(f.double())
            out_l.append(l)
    return torch.cat(out_f), torch.cat(out_l)


def stats(f):
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (len(f) - 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    def load(split):
        x = load_idx(f"{split}-images-idx3-ubyte.gz").astype(np.float32) / 127.5 - 1.0
        y = load_idx(f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
        return torch.from_numpy(x)[:, None], torch.from_numpy(y)
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    model = Classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    t0, step, budget = time.time(), 0, args.minutes * 60
    while time.time() - t0 < budget:
        idx = torch.from_numpy(rng.integers(0, len(xtr), args.batch))
        x, y = xtr[idx], ytr[idx]
        # light augmentation: horizontal flips (Fashion-MNIST items are near-symmetric)
        flip = torch.from_numpy(rng.random(args.batch) < 0.5)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0)))
        _, logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            print(f"step {step} loss {float(loss):.4f} {time.time() - t0:.0f}s", flush=True)
    wall = time.time() - t0
    model = model.half().float()  # the shipped F16 weights, computed in f32
    model.eval()
    ftr, ltr = feats(model, xtr)
    fte, lte = feats(model, xte)
    acc = float((lte.argmax(1) == yte).float().mean())
    mtr, ctr = stats(ftr)
    mte, cte = stats(fte)
    os.makedirs(args.out, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()},
              os.path.join(args.out, "model.safetensors"))
    save_file({"train_mean": mtr.float(), "train_cov": ctr.float(),
               "test_mean": mte.float(), "test_cov": cte.float()},
              os.path.join(args.out, "fid_stats.safetensors"))
    save_file({"sample": xte[:16].contiguous(), "features": fte[:16].float().contiguous(),
               "logits": lte[:16].contiguous()},
              os.path.join(args.out, "golden.safetensors"))
    cfg = {"_class_name": "FmnistClassifier", "in_channels": 1, "sample_size": 28,
           "block_out_channels": list(CH), "norm_num_groups": GROUPS, "norm_eps": 1e-5,
           "feature_dim": FEAT, "num_classes": 10}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    log = dict(command=" ".join([os.path.basename(sys.executable)] + sys.argv), seed=args.seed,
               steps=step, batch=args.batch, wall_seconds=round(wall, 1), torch=torch.__version__,
               threads=1, test_accuracy=round(acc, 4),
               train_accuracy=round(float((ltr.argmax(1) == ytr).float().mean()), 4))
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(json.dumps(log), flush=True)


if __name__ == "__main__":
    main()
