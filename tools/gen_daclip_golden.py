#!/usr/bin/env python3
"""Goldens of the DA-CLIP universal image-restoration model (issue 18), produced by the official
code of grrrute/mr-sampler (offline, by hand; never in CI):

    git clone https://github.com/grrrute/mr-sampler /tmp/mr-sampler
    git -C /tmp/mr-sampler checkout 896764cfa1f4ad979a81493a7a468d238aad07de
    /work/venv/bin/python tools/gen_daclip_golden.py --official /tmp/mr-sampler --parts sampler

Each part lives in tools/daclip_golden/<part>.py (a `generate(official)` function) and writes
under tests/golden/daclip/. Parts:
- sampler: the converter round trip into tests/golden/daclip/tiny/ and a full 10-step MR Sampler
  restoration (tests/golden/daclip/sampler/).
- manifests: the official state-dict layouts (names, shapes) of several configurations.
"""
import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daclip_golden.common import load_official, repo_arg  # noqa: E402

PARTS = [
    "sampler",
    "manifests",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo_arg(ap)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {PARTS} (default: all)")
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        sys.exit(f"unknown part(s) {unknown}; known: {PARTS}")
    off = load_official(args.official)
    for p in parts:
        importlib.import_module(f"daclip_golden.{p}").generate(off)


if __name__ == "__main__":
    main()
