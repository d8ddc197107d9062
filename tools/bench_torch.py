#!/usr/bin/env python3
"""diffuse vs PyTorch/diffusers on the same machine, in the same run (by hand; not in CI).

    v/bin/python tools/bench_torch.py --model assets/fmnist-ddpm --batches 1,8 --steps 20

Runs the same UNet2DModel (a diffusers folder, or `ddpm-cifar10-32`: that published config with
random weights, as `diffuse bench` builds it), the same sampler (DPMSolverMultistepScheduler,
2M), NFE and batch sizes through diffusers eager — on CUDA in f16 when a GPU is present, else
on the CPU in f32 with all cores — then runs `diffuse bench --json` with matching arguments and
prints per-forward latency and images/s of both, with the ratio diffuse / PyTorch (latency;
< 1 means diffuse is faster). Both use best-of-N timing after a warm-up.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from diffusers import DPMSolverMultistepScheduler, UNet2DModel

CIFAR = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 256, 256, 256), norm_num_groups=32, norm_eps=1e-6,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, attention_head_dim=None,
)


def best_of(fn, tries):
    fn()
    best = float("inf")
    for _ in range(tries):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ddpm-cifar10-32")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--diffuse", default="target/release/diffuse")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    cuda = torch.cuda.is_available()
    dev, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    torch.manual_seed(0)
    if args.model == "ddpm-cifar10-32":
        unet = UNet2DModel(**CIFAR)
    else:
        unet = UNet2DModel.from_pretrained(args.model)
    unet = unet.to(dev, dtype).eval()
    size = unet.config.sample_size
    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, solver_order=2)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch_rows = {}
    for b in batches:
        x = torch.randn(b, unet.config.in_channels, size, size, device=dev, dtype=dtype)
        t = torch.full((b,), 500, device=dev)

        @torch.no_grad()
        def fwd():
            unet(x, t)
            sync()

        @torch.no_grad()
        def run():
            sched.set_timesteps(args.steps)
            s = torch.randn_like(x)
            for ts in sched.timesteps:
                s = sched.step(unet(s, ts).sample, ts, s).prev_sample
            sync()

        f = best_of(fwd, args.tries)
        r = best_of(run, 1)
        torch_rows[b] = (f, r)
        print(f"torch {dev} {dtype}: batch {b}: forward {f*1e3:.1f} ms, {b/r:.3f} img/s at {args.steps} steps", flush=True)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "bench.json")
        cmd = [args.diffuse, "bench", "--model", args.model, "--dtype", "f16" if cuda else "f32",
               "--batches", args.batches, "--steps", str(args.steps), "--skip-kernels",
               "--json", out]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        rep = json.load(open(out))
    print(f"\ndiffuse on {rep['adapter']} ({rep['backend']}, {rep['driver']}) vs torch {torch.__version__} "
          f"on {torch.cuda.get_device_name() if cuda else 'CPU'} ({torch.get_num_threads()} threads)")
    print(f"{'batch':>5} {'diffuse ms/fwd':>15} {'torch ms/fwd':>13} {'ratio':>6} {'diffuse img/s':>14} {'torch img/s':>12}")
    res = {(r['kind'], int(r['name'].split(' b')[1].split()[0])): r for r in rep['results']
           if r['kind'] in ('forward', 'sampling')}
    for b in batches:
        fd = res[("forward", b)]["ms"]
        sd = res[("sampling", b)]["rate"]
        ft, rt = torch_rows[b]
        print(f"{b:>5} {fd:>15.1f} {ft*1e3:>13.1f} {fd/(ft*1e3):>6.2f} {sd:>14.3f} {b/rt:>12.3f}")


if __name__ == "__main__":
    sys.exit(main())
