#!/usr/bin/env bash
# Measures the quality tables of README.md with `diffuse eval` / `diffuse eval-restore` on the
# shipped models (by hand; hours on a CPU-only machine; never in CI). One JSON per cell in $OUT.
#   tools/eval_tables.sh gen|cond|restore [OUT=eval-results]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-eval-results}
mkdir -p "$OUT"
BIN=target/release/diffuse
REAL=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
N=${N:-200}
case "${1:-gen}" in
gen)
  # sampler:steps pairs giving NFE 5/10/20 (Heun: 2·steps − 1 NFE).
  for cell in dpm-solver++:5 dpm-solver++:10 ddim:5 ddim:10 euler:5 euler:10 heun:3 heun:5 \
              dpm-solver++-3m:5 dpm-solver++-3m:10 unipc:5 unipc:10 ddpm:10 dpm-solver++:20 ddim:20; do
    s=${cell%%:*}; k=${cell##*:}
    f="$OUT/gen-$s-$k.json"; [ -f "$f" ] && continue
    $BIN eval --model assets/fmnist-ddpm --scheduler "$s" --steps "$k" --num-samples "$N" \
      --batch 100 --seed 0 --real-images "$REAL" --json "$f" 2>/dev/null
  done ;;
cond)
  for w in 0 1 3 5; do
    f="$OUT/cond-w$w.json"; [ -f "$f" ] && continue
    g=(); [ "$w" != 0 ] && g=(--guidance "$w")
    $BIN eval --model assets/fmnist-cond --scheduler dpm-solver++ --steps 10 --num-samples "${NC:-100}" \
      --batch 100 --seed 0 "${g[@]}" --json "$f" 2>/dev/null
  done ;;
restore)
  P=${P:-16}
  for cell in mrs-ode:5 mrs-ode:10 mrs-ode:20 mrs-ode:50 mrs-ode:100 mrs-sde:5 mrs-sde:10 mrs-sde:20 \
              mrs-sde:50 mrs-sde:100 mr-posterior:5 mr-posterior:10 mr-posterior:20 mr-posterior:50 \
              mr-posterior:100 mr-euler:100; do
    s=${cell%%:*}; k=${cell##*:}
    f="$OUT/restore-$s-$k.json"; [ -f "$f" ] && continue
    case $s in
      mrs-ode) a=(--sampler mrs --solver ode --order 2) ;;
      mrs-sde) a=(--sampler mrs --solver sde --order 2) ;;
      *) a=(--sampler "$s") ;;
    esac
    $BIN eval-restore --model assets/fmnist-sr4 "${a[@]}" --steps "$k" --num-samples "$P" \
      --batch "$P" --seed 0 --json "$f" 2>/dev/null
  done ;;
esac
