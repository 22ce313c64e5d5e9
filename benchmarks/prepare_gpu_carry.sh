#!/usr/bin/env bash
# Fill .carry/ (git-ignored) with what benchmarks/gpu_check.sh needs on a lent GPU machine, which
# sees only this checkout (not ../shared) and has no package registry:
#
#   .carry/whl/       wheels missing there (segment-anything; torch, numpy, pillow, tqdm, PyYAML are there)
#   .carry/weights/   minisam_vit_t.pth from ../shared/weights (40.7 MB)
#   .carry/data/cosam-mini-subset/   a deterministic subset of ../shared/data/cosam-mini
#                     (benchmarks/make_subset.py; named in SUBSET.json and in every result)
#   .carry/SOURCE.txt the commit this was prepared at (the device copy has no .git)
#
# Then, with the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".carry"], timeout_s=600).
# Everything that travels (tracked + untracked-not-ignored files + .carry) must stay under 64 MiB;
# this script checks it.
#
#   bash benchmarks/prepare_gpu_carry.sh                     # 16 train / 8 test per domain, 16 probe
#   SUBSET_TRAIN=24 bash benchmarks/prepare_gpu_carry.sh     # larger, if the size and time allow
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${COSAM_SHARED:-../shared}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
TRAIN=${SUBSET_TRAIN:-16}
TEST=${SUBSET_TEST:-8}
PROBE=${SUBSET_PROBE:-16}
LIMIT=$((64 * 1024 * 1024))

rm -rf .carry
mkdir -p .carry/whl .carry/weights .carry/data

# 1. Wheels, for the device's Python 3.12 (README of the device tool).
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .carry/whl segment-anything==1.0

# 2. Weights.
cp "$SHARED/weights/minisam_vit_t.pth" .carry/weights/

# 3. Data subset.
NAME=$("$PY" benchmarks/make_subset.py "$SHARED/data/cosam-mini" .carry/data/cosam-mini-subset \
  --train "$TRAIN" --test "$TEST" --probe "$PROBE")

{
  echo "prepared: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "subset: $NAME"
} > .carry/SOURCE.txt

# 4. Size of what travels.
git check-ignore -q .carry || { echo "error: .carry is not git-ignored (add it to .gitignore)" >&2; exit 1; }
TREE=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
CARRY=$(find .carry -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
TOTAL=$((TREE + CARRY))
printf 'working tree %.1f MiB + .carry %.1f MiB = %.1f MiB of 64 MiB\n' \
  "$(echo "$TREE / 1048576" | bc -l)" "$(echo "$CARRY / 1048576" | bc -l)" "$(echo "$TOTAL / 1048576" | bc -l)"
ls -la .carry/whl .carry/weights
cat .carry/SOURCE.txt
if [ "$TOTAL" -gt "$LIMIT" ]; then
  echo "error: over the device tool's 64 MiB limit; use a smaller subset (SUBSET_TRAIN=...)" >&2
  exit 1
fi
