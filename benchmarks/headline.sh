#!/usr/bin/env bash
# The speed issue's two headline timings, each on its own fresh clone of HEAD (no feature cache, no
# finished run to reuse), appended to benchmarks/results/headline.csv:
#   papermill notebooks/02_moda.ipynb out.ipynb -p order shuffled     (the cpu profile)
#   make study
# Run it from the repository root on a quiet machine; the clones go beside this checkout so that
# ../shared is found as in CI. Each clone builds its own .venv first (not timed; `make env`).
#
#   bash benchmarks/headline.sh            # both
#   bash benchmarks/headline.sh study      # only make study
#   bash benchmarks/headline.sh notebook   # only the notebook
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse --short HEAD)
out="$repo/benchmarks/results/headline.csv"
what=${1:-both}
[ -f "$out" ] || echo "command,profile,wall_s,threads,commit,note" > "$out"

fresh_clone() {  # prints the path of a new clone of HEAD beside the repository, with .venv built
  local dir
  dir=$(mktemp -d "$(dirname "$repo")/headline-XXXX")
  # the clone is $dir/c, so its ../shared is $dir/shared: point that at this checkout's ../shared
  # (as CI has it), else the runs would fall back to generated SYNTHETIC data
  if [ -d "$repo/../shared" ]; then ln -s "$(cd "$repo/../shared" && pwd)" "$dir/shared"; fi
  git clone -q "$repo" "$dir/c"
  (cd "$dir/c" && git checkout -q "$commit" && make env > /dev/null)
  echo "$dir/c"
}

timed() {  # timed <label> <clone> <command...>: appends one row
  local label=$1 clone=$2; shift 2
  local t0 t1 threads
  threads=$(cd "$clone" && .venv/bin/python -c 'import torch; print(torch.get_num_threads())')
  t0=$(date +%s)
  (cd "$clone" && "$@")
  t1=$(date +%s)
  printf '"%s",cpu,%d,%s,%s,"%s"\n' "$label" "$((t1 - t0))" "$threads" "$commit" "${HEADLINE_NOTE:-fresh clone, quiet machine}" >> "$out"
  tail -1 "$out"
}

if [ "$what" = both ] || [ "$what" = notebook ]; then
  c=$(fresh_clone)
  timed "papermill notebooks/02_moda.ipynb out.ipynb -p order shuffled" "$c" \
    .venv/bin/papermill --log-level WARNING notebooks/02_moda.ipynb out.ipynb -p order shuffled
fi
if [ "$what" = both ] || [ "$what" = study ]; then
  c=$(fresh_clone)
  timed "make study" "$c" make study
fi
