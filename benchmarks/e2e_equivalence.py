"""A short real-data run three ways: fast path (fp32), reference path (fp32), fast path + bf16.

    python benchmarks/e2e_equivalence.py --results /tmp/e2e      # cpu profile, capped (~10 min)

The cpu profile (vit_t, 512 px, pretrained weights, the real cosam-mini data) capped to
``--train-cap`` training and ``--test-cap`` test/probe images per domain, ``--epochs`` epochs.
Compares every per-image (IoU, BIoU) score and every matrix entry of the fast and the bf16 run
with the reference run, and prints the largest differences (the figures in benchmarks/README.md,
"Speed levers").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosam import metrics  # noqa: E402
from cosam.config import make_config  # noqa: E402
from cosam.engine import Context, run  # noqa: E402
from cosam.models.fastpath import reference_path  # noqa: E402


def per_image(run_dir: Path) -> List[float]:
    rows = (run_dir / "per_image.csv").read_text().splitlines()
    head = rows[0].split(",")
    cols = [i for i, h in enumerate(head) if h in ("iou", "biou")]
    return [float(r.split(",")[i]) for r in rows[1:] for i in cols]


def matrix(run_dir: Path) -> List[float]:
    m = json.loads((run_dir / "matrix.json").read_text())
    return [float(v) for k in ("iou", "biou") for row in m[k] for v in row if v is not None]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--method", default="sequential")
    ap.add_argument("--train-cap", type=int, default=4)
    ap.add_argument("--test-cap", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    root = Path(args.results)
    dirs: Dict[str, Path] = {}
    for name, ref, precision in (("reference", True, "fp32"), ("fast", False, "fp32"), ("fast_bf16", False, "bf16")):
        cfg = make_config("cpu", {"method": args.method, "results_dir": str(root / name), "progress": False,
                                  "cache_dir": str(root / "cache"),
                                  "data": {"train_cap": args.train_cap, "test_cap": args.test_cap,
                                           "probe_cap": args.test_cap},
                                  "train": {"epochs": args.epochs, "precision": precision}})
        with reference_path(enabled=ref), metrics.reference_metrics(enabled=ref):
            dirs[name] = run(cfg, ctx=Context())
        t = json.loads((dirs[name] / "timing.json").read_text())
        print(f"{name}: {dirs[name]}  timing keys {sorted(t)[:6]}", flush=True)
    ref_pi, ref_m = per_image(dirs["reference"]), matrix(dirs["reference"])
    out: Dict[str, Any] = {}
    for name in ("fast", "fast_bf16"):
        pi, m = per_image(dirs[name]), matrix(dirs[name])
        d_pi = [abs(a - b) for a, b in zip(pi, ref_pi)]
        d_m = [abs(a - b) for a, b in zip(m, ref_m)]
        out[name] = {"n_scores": len(d_pi), "scores_moved": sum(d > 0 for d in d_pi), "max_score_diff": max(d_pi),
                     "n_matrix": len(d_m), "max_matrix_diff": max(d_m)}
        print(name, out[name], flush=True)
    (root / "e2e_equivalence.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
