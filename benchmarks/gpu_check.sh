#!/usr/bin/env bash
# The prepared GPU check of issue 9: throughput benchmark + the `paper` profile of `sequential` and
# `sequential_moda` (vit_t, 1024 px, bf16) on a carried subset of cosam-mini, in about 9 minutes.
#
#   here, once:   bash benchmarks/prepare_gpu_carry.sh
#   on the GPU:   device tool run(command="bash benchmarks/gpu_check.sh", carry=[".carry"], timeout_s=600)
#   rehearsal:    COSAM_GPU_CHECK_PROFILE=smoke OUT=/tmp/out bash benchmarks/gpu_check.sh   (CPU, ~1-2 min)
#
# Writes into $OUT (flat, 7 files; the device tool returns at most 8):
#   summary.md   device, date, subset, throughput tables, each run's Last/Avg/FF, timing and matrix
#   gpu_check.log  everything printed          env.txt  nvidia-smi, versions, .carry/SOURCE.txt
#   throughput_methods.csv  throughput_encoders.csv  throughput.md      (benchmarks/throughput.py)
#   runs.tar.gz  the run folders (config.json, matrix.json/csv, metrics.csv, per_image.csv, timing.json;
#                resume states left out) and SUBSET.json
# Methods not in cosam.methods.METHODS (e.g. sequential_moda before MoDA is merged) are skipped with
# a message. Each phase has a time limit inside COSAM_GPU_CHECK_BUDGET_S (default 540 s), and the
# files are written whatever happens (a trap packs what exists).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PROFILE=${COSAM_GPU_CHECK_PROFILE:-paper}
OUT=${OUT:?set OUT to the folder the results go to}
BUDGET=${COSAM_GPU_CHECK_BUDGET_S:-540}
CARRY=${COSAM_CARRY:-$ROOT/.carry}
METHODS=${COSAM_GPU_CHECK_METHODS:-sequential sequential_moda}
START=$(date +%s)
DATA=$CARRY/data/cosam-mini-subset
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/cosam-gpu-check.XXXXXX)
mkdir -p "$WORK/runs" "$WORK/bench"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

elapsed() { echo $(( $(date +%s) - START )); }
# Seconds a phase may take: at most $1, leaving $2 s of the budget for what follows.
allow() { local want=$1 keep=${2:-30} left=$(( BUDGET - $(elapsed) - ${2:-30} )); (( left < want )) && want=$left; (( want < 0 )) && want=0; echo "$want"; }

pack() {
  cp -f "$WORK"/bench/throughput_methods_*.csv "$OUT/throughput_methods.csv" 2>/dev/null
  cp -f "$WORK"/bench/throughput_encoders_*.csv "$OUT/throughput_encoders.csv" 2>/dev/null
  cp -f "$WORK"/bench/throughput_*.md "$OUT/throughput.md" 2>/dev/null
  cp -f "$DATA/SUBSET.json" "$WORK/runs/" 2>/dev/null
  tar -czf "$OUT/runs.tar.gz" -C "$WORK" --exclude='state' runs 2>/dev/null
  echo "gpu_check: done in $(elapsed) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
}
trap pack EXIT

# --- Python and packages ------------------------------------------------------------------------
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
# (COSAM_GPU_CHECK_FORCE_WHEELS=1 installs them even where segment_anything is importable: rehearsal)
if [ -n "${COSAM_GPU_CHECK_FORCE_WHEELS:-}" ] || ! "$PY" -c 'import segment_anything' 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CARRY"/whl/*.whl \
    || { echo "gpu_check: cannot install the carried wheels from $CARRY/whl (run benchmarks/prepare_gpu_carry.sh here first)"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export COSAM_WEIGHTS=$CARRY/weights
[ -f "$DATA/SUBSET.json" ] || { echo "gpu_check: no data subset at $DATA (run benchmarks/prepare_gpu_carry.sh)"; exit 1; }
SUBSET=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['name'])" "$DATA/SUBSET.json")

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)   profile: $PROFILE   subset: $SUBSET"
  cat "$CARRY/SOURCE.txt" 2>/dev/null
  nvidia-smi 2>&1 | head -20 || true
  "$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"{p.total_memory / 2**30:.1f} GiB", p.multi_processor_count, "SMs")
import segment_anything, numpy, PIL
print("segment_anything", segment_anything.__file__, "numpy", numpy.__version__, "pillow", PIL.__version__)
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# --- 1. throughput --------------------------------------------------------------------------------
if [ "$PROFILE" = smoke ]; then
  BENCH_ARGS=(--size 256 --steps 2 --warmup 1 --batch 2 --eval-batch 4 --loss-points 1024 --time-encoders vit_t
              --encoder-batch 1 --encoder-steps 1 --data-lsj 4 --methods "sequential,sequential_moda")
  RUN_ARGS=(--set model.pretrained=true --set model.fallback_backbone=null)
  T_BENCH=150
else
  BENCH_ARGS=(--compile-encoders vit_t)
  RUN_ARGS=()
  T_BENCH=170
fi
limit=$(allow $T_BENCH 300)
if (( limit < 10 )); then
  echo "=== throughput: skipped, no time left in the budget ==="
else
  echo "=== throughput (limit $limit s) ==="
  timeout "$limit" "$PY" benchmarks/throughput.py "${BENCH_ARGS[@]}" --data "$DATA" --out "$WORK/bench" --tag gpu_check
  echo "throughput: exit $? (124 = stopped at its time limit; what it measured is kept)"
fi

# --- 2. the paper profile on the subset ---------------------------------------------------------
declare -A RC WALL
AVAILABLE=()
for m in $METHODS; do
  if "$PY" -c "import sys; from cosam.methods import METHODS; sys.exit(0 if sys.argv[1] in METHODS else 1)" "$m"; then
    AVAILABLE+=("$m")
  else
    echo "=== $m: skipped, not in cosam.methods.METHODS (not merged into this checkout yet) ==="
    RC[$m]="skipped (not in cosam.methods.METHODS)"
  fi
done
n=${#AVAILABLE[@]}
i=0
for m in "${AVAILABLE[@]}"; do
  i=$((i + 1))
  # an equal share of what is left; the last method may use all of it
  limit=$(allow $(( (BUDGET - $(elapsed) - 20) / (n - i + 1) )) 20)
  if (( limit < 10 )); then
    echo "=== $m: skipped, no time left in the budget ==="
    RC[$m]="skipped (no time left)"
    continue
  fi
  echo "=== $PROFILE profile: $m on $SUBSET (limit $limit s) ==="
  t0=$(date +%s)
  timeout "$limit" "$PY" -m cosam run --profile "$PROFILE" --method "$m" --data "$DATA" \
    --results-dir "$WORK/runs" --set cache_dir="$WORK/cache" --set progress=false "${RUN_ARGS[@]}"
  RC[$m]=$?
  WALL[$m]=$(( $(date +%s) - t0 ))
  echo "$m: exit ${RC[$m]} after ${WALL[$m]} s"
done

# --- 3. summary -----------------------------------------------------------------------------------
{
  echo "# GPU check ($PROFILE profile), $(date -u +%Y-%m-%d)"
  echo
  echo "Data: \`$SUBSET\` (benchmarks/make_subset.py; SUBSET.json in runs.tar.gz)."
  echo
  sed -n '1,3p' "$OUT/env.txt" | sed 's/^/    /'
  echo
  echo "## Throughput"
  echo
  cat "$WORK"/bench/throughput_*.md 2>/dev/null || echo "(no throughput results)"
  echo
  echo "## Runs"
  echo
  for m in $METHODS; do
    echo "- $m: exit ${RC[$m]:-not run}${WALL[$m]:+ after ${WALL[$m]} s} (0 = finished, 124 = stopped at its time limit)"
  done
  echo
  "$PY" - "$WORK/runs" <<'EOF'
import json, sys
from pathlib import Path
for d in sorted(p for p in Path(sys.argv[1]).glob("*/*") if p.is_dir()):
    meta = json.loads((d / "config.json").read_text()) if (d / "config.json").is_file() else {}
    res = meta.get("resolved", {})
    steps = sorted(int(p.stem.split("_")[1]) for p in (d / "state").glob("step_*.pt"))
    print(f"### {d.name}\n")
    print(f"{res.get('backbone')} at {res.get('image_size')} px, {res.get('accel')}; "
          f"finished: {(d / 'DONE').is_file()}; last finished step: {steps[-1] if steps else None}\n")
    if (d / "timing.json").is_file():
        t = json.loads((d / "timing.json").read_text())
        print(f"time (s): total {t.get('total_s', 0):.0f}, train {t.get('train_s', 0):.0f}, "
              f"eval {t.get('eval_s', 0):.0f}, encode {t.get('encode_s', 0):.0f}; "
              "epoch times (s): " + ", ".join("%.2f" % s["epoch_s"] for s in t.get("steps", [])) + "\n")
    if (d / "metrics.csv").is_file():
        print("```\n" + (d / "metrics.csv").read_text() + "```\n")
    if (d / "matrix.json").is_file():
        m = json.loads((d / "matrix.json").read_text())
        cols = m["tasks"] + ([m["probe"]] if m.get("probe") else [])
        print("| IoU % | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
        for label, row in zip(m["rows"], m["iou"]):
            print(f"| {label} | " + " | ".join("" if v is None else f"{100 * v:.1f}" for v in row) + " |")
        print()
EOF
} > "$OUT/summary.md" 2>&1
cat "$OUT/summary.md"
