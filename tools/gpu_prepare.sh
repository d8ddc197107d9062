#!/usr/bin/env bash
# Prepares a real-GPU measurement run of the performance issue (by hand; not in CI).
#
# Run here, in the repo root, on an x86-64 machine with network access. It builds the release
# binary and gathers what a bare GPU machine lacks into three git-ignored folders:
#   .dev/diffuse   the release binary (the GPU machine needs no Rust toolchain)
#   .whl/          diffusers and importlib_metadata wheels for tools/bench_torch.py (the GPU
#                  image is assumed to carry torch, numpy, safetensors, huggingface-hub)
#   .gl/           the Vulkan loader (libvulkan1) as .deb files
# Then carry `.dev`, `.whl` and `.gl` to the GPU machine and run tools/gpu_bench.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
for d in .dev .whl .gl; do
    grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done
cargo build --release
mkdir -p .dev .whl .gl
cp target/release/diffuse .dev/diffuse
PY=${PYTHON:-python3}
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 -d .whl \
    diffusers==0.42.1 importlib_metadata
if command -v apt-get >/dev/null; then
    mkdir -p /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    # shellcheck disable=SC2086
    apt-get $o update -qq && (cd .gl && apt-get $o download libvulkan1)
fi
du -sh .dev .whl .gl
