"""Shared by every part of tools/gen_daclip_golden.py and tools/convert_daclip.py: importing the
official DA-CLIP / universal-image-restoration code of grrrute/mr-sampler.

    git clone https://github.com/grrrute/mr-sampler /tmp/mr-sampler
    git -C /tmp/mr-sampler checkout 896764cfa1f4ad979a81493a7a468d238aad07de

What is stubbed, and why no sampling or network path touches it:
- the `models` package of `config/daclip-sde` is not executed (its `__init__` builds the training
  model and imports lpips/the optimisers); `models.modules` is loaded as a bare package, whose
  files (`DenoisingUNet_arch.py`, `module_util.py`, `attention.py`) are the network's;
- the `utils` package's `__init__.py` is not executed (image helpers, cv2); `utils.sde_utils` and
  `utils.sampler` are loaded as submodules of a bare package;
- `cv2` is an empty module when not installed (imported at the top of sde_utils/sampler for image
  saving only); `np.int` is set to `int` when missing (an annotation in sampler.py);
- on a machine without CUDA, `nn.Module.cuda()` returns the module unchanged: the official
  `ControlTransformer.__init__` moves its zero modules with `.cuda()` (device placement only; every
  golden runs on the CPU).
The official `open_clip` package (the DA-CLIP one, in `universal-image-restoration/open_clip`) is
imported as is; it shadows the pip `open_clip` name, so it is put first on `sys.path`.
"""
import os
import subprocess
import sys
import types

import numpy as np

PINNED = "896764cfa1f4ad979a81493a7a468d238aad07de"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden", "daclip")


def repo_arg(ap):
    """Adds the `--official` flag (default: $MR_SAMPLER_REPO) to an argparse parser."""
    ap.add_argument("--official", default=os.environ.get("MR_SAMPLER_REPO"),
                    help="checkout of https://github.com/grrrute/mr-sampler (default: $MR_SAMPLER_REPO)")


class Official(types.SimpleNamespace):
    """The imported official modules: `ConditionalUNet`, `module_util`, `attention`, `open_clip`,
    `sde_utils`, `sampler`, `data_util_clip_transform`, and `commit`."""


def _bare_package(name, path):
    pkg = types.ModuleType(name)
    pkg.__path__ = [path]
    sys.modules[name] = pkg
    return pkg


def load_official(repo):
    if not repo:
        sys.exit("give --official PATH (or MR_SAMPLER_REPO): a checkout of https://github.com/grrrute/mr-sampler "
                 f"at {PINNED}")
    uir = os.path.join(repo, "universal-image-restoration")
    sde_dir = os.path.join(uir, "config", "daclip-sde")
    arch = os.path.join(sde_dir, "models", "modules", "DenoisingUNet_arch.py")
    if not os.path.isfile(arch):
        sys.exit(f"{repo} is not a checkout of grrrute/mr-sampler (no {os.path.relpath(arch, repo)})")
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        head = ""
    if head and head != PINNED:
        print(f"warning: {repo} is at {head}, the goldens were made at {PINNED}", file=sys.stderr)
    for name in ["cv2"]:
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    if not hasattr(np, "int"):
        np.int = int
    import torch
    if not torch.cuda.is_available():
        torch.nn.Module.cuda = lambda self, *a, **kw: self

    # The network: models.modules as a bare package (relative imports inside it work).
    _bare_package("models", os.path.join(sde_dir, "models"))
    _bare_package("models.modules", os.path.join(sde_dir, "models", "modules"))
    import models.modules.DenoisingUNet_arch as unet_arch
    import models.modules.module_util as module_util
    import models.modules.attention as attention

    # The official (DA-CLIP) open_clip, ahead of any pip-installed open_clip.
    if "open_clip" in sys.modules and not sys.modules["open_clip"].__file__.startswith(os.path.abspath(uir)):
        for k in [k for k in sys.modules if k == "open_clip" or k.startswith("open_clip.")]:
            del sys.modules[k]
    sys.path.insert(0, os.path.abspath(uir))
    import open_clip

    # The sampler and the process.
    _bare_package("utils", os.path.join(uir, "utils"))
    import utils.sde_utils as sde_utils
    import utils.sampler as sampler

    return Official(ConditionalUNet=unet_arch.ConditionalUNet, unet_arch=unet_arch, module_util=module_util,
                    attention=attention, open_clip=open_clip, sde_utils=sde_utils, sampler=sampler,
                    commit=head or PINNED, uir=uir)
