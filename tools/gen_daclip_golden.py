#!/usr/bin/env python3
"""Goldens for issue 18 (DA-CLIP universal image restoration) produced by the official code of
grrrute/mr-sampler (offline, by hand; never in CI):

    git clone https://github.com/grrrute/mr-sampler /tmp/mr-sampler
    git -C /tmp/mr-sampler checkout 896764cfa1f4ad979a81493a7a468d238aad07de
    v/bin/python tools/gen_daclip_golden.py --official /tmp/mr-sampler [--parts clip ...]

(or MR_SAMPLER_REPO=/tmp/mr-sampler). Needs torch, torchvision, Pillow, safetensors, numpy.
Parts, each a module of `tools/daclip_golden/` with a `main(args)`, write under tests/golden/daclip/:
  clip   the DA-CLIP image encoder (`DaCLIP.encode_image(x, control=True)`) and the official
         `clip_transform` preprocessing (see tools/daclip_golden/clip.py)
"""
import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from daclip_golden.common import repo_arg  # noqa: E402

PARTS = [
    "clip",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo_arg(ap)
    ap.add_argument("--parts", nargs="+", default=PARTS, help=f"parts to write (default: all: {' '.join(PARTS)})")
    args = ap.parse_args()
    for p in args.parts:
        if p not in PARTS:
            sys.exit(f"unknown part {p!r}; parts: {' '.join(PARTS)}")
    for p in args.parts:
        print(f"[gen_daclip_golden] {p}", flush=True)
        importlib.import_module(f"daclip_golden.{p}").main(args)


if __name__ == "__main__":
    main()
