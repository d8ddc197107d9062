#!/usr/bin/env python3
"""Goldens of issue 18 (DA-CLIP universal image restoration) from the OFFICIAL code of
grrrute/mr-sampler (see tools/daclip_golden/common.py for the checkout):

    python tools/gen_daclip_golden.py --official /tmp/mr-sampler --parts unet

Each part writes under tests/golden/daclip/<part>/; `sampler` also writes tiny/ (the converter
round trip: official checkpoint files → tools/convert_daclip.py) and `manifests` writes
manifests.json (the official state-dict layouts).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from daclip_golden.common import load_official, repo_arg  # noqa: E402

PARTS = {
    "unet": "daclip_golden.unet",
    "sampler": "daclip_golden.sampler",
    "manifests": "daclip_golden.manifests",
    "clip": "daclip_golden.clip",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo_arg(ap)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    a = ap.parse_args()
    parts = [p for p in a.parts.split(",") if p]
    for p in parts:
        if p not in PARTS:
            sys.exit(f"unknown part {p!r} (known: {', '.join(PARTS)})")
    off = load_official(a.official)
    import importlib
    for p in parts:
        mod = importlib.import_module(PARTS[p])
        if hasattr(mod, "run"):
            mod.run(off)
        else:  # parts written as main(args) (clip)
            mod.main(a)


if __name__ == "__main__":
    main()
