#!/usr/bin/env bash
# Measures the quality tables of README.md with `diffuse eval` / `diffuse eval-restore` on the
# shipped models (by hand; hours on a CPU-only machine; never in CI). One JSON per cell in $OUT.
#   tools/eval_tables.sh gen|lml|flow|cond|restore|inverse|quant|table [OUT=eval-results]
# `table` prints the README's markdown tables from the JSON reports in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-eval-results}
mkdir -p "$OUT"
BIN=${BIN:-target/release/diffuse}
REAL=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
N=${N:-200}
case "${1:-gen}" in
gen)
  # sampler:steps pairs giving NFE 5/10/20 (Heun: 2·steps − 1 NFE).
  for cell in dpm-solver++:5 dpm-solver++:10 ddim:5 ddim:10 euler:5 euler:10 heun:3 heun:5 \
              dpm-solver++-3m:5 dpm-solver++-3m:10 unipc:5 unipc:10 ddpm:10 dpm-solver++:20 ddim:20 \
              dpm-solver++:50 ddim:50 dpm-solver++:100 ddpm:100 evodiff:5 evodiff:10 evodiff:20; do
    s=${cell%%:*}; k=${cell##*:}
    f="$OUT/gen-$s-$k.json"; [ -f "$f" ] && continue
    $BIN eval --model assets/fmnist-ddpm --scheduler "$s" --steps "$k" --num-samples "$N" \
      --batch 100 --seed 0 --real-images "$REAL" --json "$f" 2>/dev/null
  done ;;
lml)
  # LML rows (DDIMLMScheduler, DPMSolverMultistepLMScheduler) at κ = $KAPPA (default 0.5) with the
  # official README's λ (DDIM: CelebA-HQ's 0.005; DPM-Solver++: CIFAR-10's table, 0.0008 at 5 and
  # 10 NFE, 0.0005 at 20). κ = 0, the released default, is the base sampler exactly (same program).
  # Base fields as `--scheduler ddim` / `dpm-solver++` on this model (DPM: final σ zero).
  KAPPA=${KAPPA:-0.5}
  TRAIN='"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "prediction_type": "epsilon"'
  for cell in ddim-lml:5:0.005 dpm-solver++-lml:5:0.0008 ddim-lml:10:0.005 \
              dpm-solver++-lml:10:0.0008 ddim-lml:20:0.005 dpm-solver++-lml:20:0.0005; do
    IFS=: read -r s k lamb <<<"$cell"
    name="$s (κ $KAPPA)"
    f="$OUT/gen-$s-k$KAPPA-$k.json"; [ -f "$f" ] && continue
    case $s in
      ddim-lml) c="{\"_class_name\": \"DDIMLMScheduler\", $TRAIN, \"lm\": true, \"lamb\": $lamb, \"kappa\": $KAPPA}" ;;
      *) c="{\"_class_name\": \"DPMSolverMultistepLMScheduler\", $TRAIN, \"final_sigmas_type\": \"zero\", \"lm\": true, \"lamb\": $lamb, \"kappa\": $KAPPA}" ;;
    esac
    echo "$c" > "$OUT/$s-k$KAPPA-$k.config.json"
    r=(); [ -f "$REAL" ] && r=(--real-images "$REAL")
    $BIN eval --model assets/fmnist-ddpm --scheduler-config "$OUT/$s-k$KAPPA-$k.config.json" --steps "$k" \
      --num-samples "$N" --batch 100 --seed 0 "${r[@]}" --json "$f" 2>/dev/null
    python3 -c "import json,sys; j=json.load(open(sys.argv[1])); j['sampler']=sys.argv[2]; json.dump(j,open(sys.argv[1],'w'))" "$f" "$name"
  done ;;
cond)
  for w in 0 1 3 5; do
    f="$OUT/cond-w$w.json"; [ -f "$f" ] && continue
    g=(); [ "$w" != 0 ] && g=(--guidance "$w")
    $BIN eval --model assets/fmnist-cond --scheduler dpm-solver++ --steps 10 --num-samples "${NC:-100}" \
      --batch 100 --seed 0 "${g[@]}" --json "$f" 2>/dev/null
  done ;;
flow)
  # The rectified-flow model: flow-euler at NFE 5/10/20/50, flow-heun (2·steps − 1 NFE).
  for cell in flow-euler:5 flow-euler:10 flow-euler:20 flow-euler:50 flow-heun:3 flow-heun:5 flow-heun:10 flow-heun:25; do
    [ -n "${ONLY:-}" ] && [[ $cell != $ONLY ]] && continue
    s=${cell%%:*}; k=${cell##*:}
    f="$OUT/flow-$s-$k.json"; [ -f "$f" ] && continue
    $BIN eval --model assets/fmnist-flow --scheduler "$s" --steps "$k" --num-samples "$N" \
      --batch 100 --seed 0 --real-images "$REAL" --json "$f" 2>/dev/null
  done ;;
restore)
  # MRS rows: ODE and SDE of order 2 on the paper's default schedule (linspace) and on linear-λ,
  # both with the official α/σ/λ interpolation (the default), NFE 5…100 (cheapest first);
  # CONSISTENT=1 adds linear-λ with λ = ln(α/σ) (`--interpolation consistent`).
  P=${P:-32}
  cells=()
  for k in 5 10 20 50 100; do
    for s in mrs-ode-linspace mrs-ode-linear-lambda mrs-sde-linspace mrs-sde-linear-lambda; do cells+=("$s:$k"); done
  done
  cells+=(mr-posterior:5 mr-posterior:10 mr-posterior:20 mr-posterior:50 mr-posterior:100 mr-euler:100)
  [ -n "${CONSISTENT:-}" ] && for k in 5 10 20 50 100; do
    cells+=("mrs-ode-linear-lambda-consistent:$k" "mrs-sde-linear-lambda-consistent:$k"); done
  for cell in "${cells[@]}"; do
    s=${cell%%:*}; k=${cell##*:}
    # ONLY=pattern restricts the run to matching cells (e.g. ONLY='*consistent:[0-9]').
    [ -n "${ONLY:-}" ] && [[ $cell != $ONLY ]] && continue
    f="$OUT/restore-$s-$k.json"; [ -f "$f" ] && continue
    case $s in
      mrs-*) IFS=- read -r _ solver sched <<<"$s"
             interp=official; case $sched in *-consistent) interp=consistent; sched=${sched%-consistent} ;; esac
             a=(--sampler mrs --solver "$solver" --order 2 --time-schedule "$sched" --interpolation "$interp") ;;
      *) a=(--sampler "$s") ;;
    esac
    $BIN eval-restore --model assets/fmnist-sr4 "${a[@]}" --steps "$k" --num-samples "$P" \
      --batch "$P" --seed 0 --json "$f" 2>/dev/null
  done ;;
inverse)
  # Training-free inverse problems (issue 15): every method × operator at NFE 20/50/100 on the
  # first $NI (default 16) held-out images; pinv comes with every report. DDS and RED-diff on
  # fmnist-ddpm, FlowChef on fmnist-flow. ONLY=pattern restricts the cells (e.g. ONLY='*:50').
  NI=${NI:-16}
  for k in 50 20 100; do
    for op in sr4 inpaint-box mri4x sr2 inpaint-random blur-gauss blur-box; do
      for m in dds red-diff flowchef; do
        cell="$m:$op:$k"
        [ -n "${ONLY:-}" ] && [[ $cell != $ONLY ]] && continue
        f="$OUT/inverse-$m-$op-$k.json"; [ -f "$f" ] && continue
        model=assets/fmnist-ddpm; [ "$m" = flowchef ] && model=assets/fmnist-flow
        $BIN eval-inverse --model "$model" --operator "$op" --method "$m" --steps "$k" \
          --num-samples "$NI" --seed 0 --json "$f" 2>/dev/null
      done
    done
  done
  # The blurs have no A†: their baseline is the blurred measurement itself (the report's
  # `measurement`, the same whatever the method; a 2-step DDS is the cheapest run that has it).
  for op in blur-gauss blur-box; do
    f="$OUT/measurement-$op.json"; [ -f "$f" ] && continue
    $BIN eval-inverse --model assets/fmnist-ddpm --operator "$op" --method dds --steps 2 \
      --num-samples "$NI" --seed 0 --json "$f" 2>/dev/null
  done ;;
quant)
  # PTQ4DM rows (issue 16) at DDIM 50 NFE: f32, f16, W8A32, W8A8 (NDTC and uniform calibration,
  # and NDTC with MSE-fitted ranges; 64 samples, seed 0) on fmnist-ddpm (200 samples) and
  # fmnist-cond (NC=100 samples, no guidance).
  q() { [ -d "$OUT/$1" ] || $BIN quantize --model "$2" --out "$OUT/$1" "${@:3}" >/dev/null; }
  for m in ddpm cond; do
    n=$N; [ $m = cond ] && n=${NC:-100}
    q "$m-w8a32" "assets/fmnist-$m" --weights int8
    q "$m-w8a8-nd" "assets/fmnist-$m" --weights int8 --activations int8 --calibration nd --calibration-samples 64 --seed 0
    q "$m-w8a8-uniform" "assets/fmnist-$m" --weights int8 --activations int8 --calibration uniform --calibration-samples 64 --seed 0
    q "$m-w8a8-nd-mse" "assets/fmnist-$m" --weights int8 --activations int8 --calibration nd --calibration-samples 64 --seed 0 --activation-range mse
    for cell in f32:assets/fmnist-$m f16:assets/fmnist-$m w8a32:$OUT/$m-w8a32 w8a8-nd:$OUT/$m-w8a8-nd \
                w8a8-uniform:$OUT/$m-w8a8-uniform w8a8-nd-mse:$OUT/$m-w8a8-nd-mse; do
      k=${cell%%:*}; dir=${cell#*:}
      # ONLY=pattern restricts the cells, named model:weights (e.g. ONLY='cond:*').
      [ -n "${ONLY:-}" ] && [[ $m:$k != $ONLY ]] && continue
      f="$OUT/quant-$m-$k-ddim50.json"; [ -f "$f" ] && continue
      d=(); [ "$k" = f16 ] && d=(--dtype f16)
      $BIN eval --model "$dir" --scheduler ddim --steps 50 --num-samples "$n" --batch 100 --seed 0 "${d[@]}" \
        --json "$f" 2>/dev/null
    done
  done ;;
table)
  python3 - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
def load(pat):
    return [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, pat)))]
gen = load("gen-*.json")
if gen:
    # Columns at NFE 5/10/20/50…; Heun's 2·steps − 1 NFE go to the nearest column, marked.
    cols = sorted({min((5, 10, 20, 50, 100, 1000), key=lambda c: abs(c - g["nfe"])) for g in gen})
    names = []
    for g in gen:
        if g["sampler"] not in names:
            names.append(g["sampler"])
    print("**FID-FMNIST vs NFE — `assets/fmnist-ddpm`** (lower is better)\n")
    print("| sampler | " + " | ".join(f"NFE {n}" for n in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for s in names:
        cells = []
        for n in cols:
            m = [g for g in gen if g["sampler"] == s
                 and min((5, 10, 20, 50, 100, 1000), key=lambda c: abs(c - g["nfe"])) == n]
            if not m:
                cells.append("–")
            else:
                mark = "" if m[0]["nfe"] == n else f" ({m[0]['nfe']} NFE)"
                cells.append(f"{m[0]['fid_fmnist']:.2f}{mark}")
        print(f"| {s} | " + " | ".join(cells) + " |")
    g0 = gen[0]
    print(f"\n{g0['num_samples']} samples per cell; FID floor at {g0['num_samples']} real train images: "
          f"{g0['fid_floor_at_num_samples']:.2f}; train vs test (60000 vs 10000): {g0['fid_floor_train_vs_test']:.3f}. "
          f"{g0['adapter']}, {g0['driver']}.")
flow = load("flow-*.json")
if flow:
    print("\n**FID-FMNIST vs NFE — `assets/fmnist-flow`** (rectified flow; lower is better)\n")
    print("| sampler | NFE 5 | NFE 10 | NFE 20 | NFE 50 |\n|---|---|---|---|---|")
    for s in ["flow-euler", "flow-heun"]:
        cells = []
        for n in (5, 10, 20, 50):
            m = [g for g in flow if g["sampler"] == s
                 and min((5, 10, 20, 50), key=lambda c: abs(c - g["nfe"])) == n]
            cells.append("–" if not m else f"{m[0]['fid_fmnist']:.2f}"
                         + ("" if m[0]["nfe"] == n else f" ({m[0]['nfe']} NFE)"))
        print(f"| {s} | " + " | ".join(cells) + " |")
cond = load("cond-*.json")
if cond:
    print("\n**Class accuracy vs guidance — `assets/fmnist-cond`** (the classifier's argmax against the requested label)\n")
    print("| guidance w | class accuracy | FID-FMNIST |\n|---|---|---|")
    for c in sorted(cond, key=lambda c: c["guidance"] or 0):
        print(f"| {c['guidance'] or 0} | {100 * c['class_accuracy']:.1f} % | {c['fid_fmnist']:.2f} |")
    print(f"\n{cond[0]['num_samples']} samples per row ({cond[0]['num_samples'] // 10} per class), "
          f"{cond[0]['sampler']} {cond[0]['steps']} steps.")
res = load("restore-*.json")
if res:
    rows = {}
    for r in res:
        # Reports from before the time-schedule options ran linear-λ with λ = ln(α/σ).
        sched = r.get("time_schedule") or "linear-lambda"
        interp = r.get("interpolation") or "consistent"
        name = r["sampler"] if r["sampler"] != "mrs" else (
            f"MRS-{r['solver'].upper()} order {r['order']}, {sched}"
            + (" (paper default)" if sched == "linspace" and r["solver"] == "ode" else "")
            + (", consistent λ" if interp == "consistent" else ""))
        rows.setdefault(name, {})[r["nfe"]] = r
    nfes = sorted({r["nfe"] for r in res})
    print("\n**PSNR / SSIM vs NFE — `assets/fmnist-sr4`** (4× super-resolution, higher is better)\n")
    print("| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
    print("|---|" + "---|" * len(nfes))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(
            f"{cells[n]['psnr']:.2f} / {cells[n]['ssim']:.3f}" if n in cells else "–" for n in nfes) + " |")
    r0 = res[0]
    print(f"\nPSNR dB / SSIM over {r0['pairs']} held-out pairs; the degraded input itself: "
          f"{r0['psnr_input']:.2f} dB / {r0['ssim_input']:.3f}.")
quant = load("quant-*.json")
if quant:
    print("\n**PTQ4DM — FID-FMNIST (class accuracy) at DDIM 50 NFE**\n")
    print("| weights | fmnist-ddpm | fmnist-cond |\n|---|---|---|")
    files = sorted(glob.glob(os.path.join(out, "quant-*-ddim50.json")))
    quant = [json.load(open(f)) for f in files]
    by = {os.path.basename(f)[len("quant-"):-len("-ddim50.json")]: q for f, q in zip(files, quant)}
    for k in ["f32", "f16", "w8a32", "w8a8-uniform", "w8a8-nd", "w8a8-nd-mse"]:
        cells = []
        for m in ["ddpm", "cond"]:
            q = by.get(f"{m}-{k}")
            acc = q.get("class_accuracy") if q else None
            cells.append("–" if not q else f"{q['fid_fmnist']:.3f}"
                         + (f" ({100 * acc:.1f} %)" if acc is not None else ""))
        print(f"| {k} | " + " | ".join(cells) + " |")
inv = load("inverse-*.json")
if inv:
    ops = [o for o in ["sr4", "inpaint-box", "mri4x", "sr2", "inpaint-random", "blur-gauss", "blur-box"]
           if any(r["operator"] == o for r in inv)]
    nfes = sorted({r["nfe"] for r in inv})
    print("\n**Training-free inverse problems — PSNR dB / SSIM [‖A(x̂) − y‖/‖y‖]** (higher is better)\n")
    print("| method | NFE | " + " | ".join(ops) + " |")
    print("|---|---|" + "---|" * len(ops))
    cell = lambda s: f"{s['psnr']:.2f} / {s['ssim']:.3f} [{s['consistency']:.3f}]"
    pin = {r["operator"]: r["pinv"] for r in inv if r.get("pinv")}
    print("| pinv | – | " + " | ".join(cell(pin[o]) if o in pin else "–" for o in ops) + " |")
    meas = {r["operator"]: r["measurement"] for r in inv + load("measurement-*.json") if r.get("measurement")}
    if meas:
        print("| y itself (blurs) | – | " + " | ".join(cell(meas[o]) if o in meas else "–" for o in ops) + " |")
    for m in ["dds", "red-diff", "flowchef"]:
        for n in nfes:
            rs = {r["operator"]: r for r in inv if r["method"] == m and r["nfe"] == n}
            if rs:
                print(f"| {m} | {n} | " + " | ".join(cell(rs[o]["result"]) if o in rs else "–" for o in ops) + " |")
    r0 = inv[0]
    print(f"\n{r0['images']} held-out images, noiseless, seed 0; {r0['adapter']}, {r0['driver']}.")
PY
  ;;
esac
