#!/usr/bin/env bash
# Real-GPU measurements for the performance issue, in one run (by hand; not in CI).
#
# Run on the GPU machine from the repo root after tools/gpu_prepare.sh (which gathered .dev,
# .whl and .gl here). Writes everything under $OUT (default /tmp/diffuse-gpu):
#   info.txt          nvidia-smi, adapter, driver, features, and every kernel family against
#                     its CPU reference (`diffuse info --self-check`) on this GPU
#   bench.txt/.json   kernel table, ddpm-cifar10-32 forward latency f32/f16 at batch 1/8/32,
#                     sampling images/s, and the per-kernel profile
#   tuned.txt         the same forward/sampling rows with DIFFUSE_TUNE on (tile64 GEMM/conv,
#                     row kernel, subgroup layouts become candidates); tuning.json its winners
#   fmnist.txt        the shipped Fashion-MNIST UNet, profile included
#   torch.txt         diffusers eager f16 (CUDA) vs diffuse f16 on the same GPU, same run —
#                     the issue's ≤ 0.7× per-NFE latency target
# (7 files: a device tool that returns at most 8 gets them all.)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/diffuse-gpu}
BATCHES=${BATCHES:-1,8,32}  # e.g. BATCHES=1 for a quick smoke run
mkdir -p "$OUT"
B=.dev/diffuse
[ -x "$B" ] || { echo "no .dev/diffuse: run tools/gpu_prepare.sh first and carry .dev" >&2; exit 1; }
if ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
if ls .whl/*.whl >/dev/null 2>&1; then
    "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export WGPU_BACKEND=vulkan
{ nvidia-smi -L 2>/dev/null; "$B" info --self-check 2>&1; } | tee "$OUT/info.txt"
"$B" bench --batches "$BATCHES" --profile --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"
DIFFUSE_TUNE="$OUT/tuning.json" "$B" bench --skip-kernels --batches "$BATCHES" 2>&1 \
    | tee "$OUT/tuned.txt"
"$B" bench --model assets/fmnist-ddpm --batches "$BATCHES" --profile 2>&1 | tee "$OUT/fmnist.txt"
PYTHONUNBUFFERED=1 "${PYTHON:-python3}" tools/bench_torch.py --model ddpm-cifar10-32 --batches "$BATCHES" \
    --diffuse "$B" 2>&1 | tee "$OUT/torch.txt"
