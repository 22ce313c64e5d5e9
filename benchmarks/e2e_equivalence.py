"""A short real-data run four ways: reference path (fp32, 1 and 2 threads), fast path, fast + bf16.

    python benchmarks/e2e_equivalence.py --results /tmp/e2e      # cpu profile, capped (~10 min)

The cpu profile (vit_t, 512 px, pretrained weights, the real cosam-mini data) capped to
``--train-cap`` training and ``--test-cap`` test/probe images per domain, ``--epochs`` epochs.
Compares every per-image (IoU, BIoU) score and every matrix entry with the 1-thread reference
run and prints the largest differences (benchmarks/README.md, "Speed levers"). The 2-thread
reference is a pure rounding change (another matmul blocking). After training, the loss's
uncertain-point selection (top-k of -|logit|) and Adam amplify rounding differences: the fast
path's trained matrix agrees with the reference's to about 1e-3, not 1e-5.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosam import metrics  # noqa: E402
from cosam.config import make_config  # noqa: E402
from cosam.models.fastpath import reference_path  # noqa: E402
from cosam.runner import Context, run  # noqa: E402


def per_image(run_dir: Path) -> Dict[Tuple[str, str, str], Tuple[float, float]]:
    """(row, dataset, index) -> (IoU, BIoU) of every scored image of a run."""
    with (run_dir / "per_image.csv").open() as fh:
        return {
            (r["row"], r["dataset"], r["index"]): (float(r["iou"]), float(r["biou"]))
            for r in csv.DictReader(fh)
        }


def matrix(run_dir: Path) -> List[float]:
    m = json.loads((run_dir / "matrix.json").read_text())
    return [float(v) for k in ("iou", "biou") for row in m[k] for v in row if v is not None]


def compare(ref: Path, other: Path) -> Dict[str, Any]:
    """How far ``other``'s per-image scores and matrix entries are from ``ref``'s."""
    a, b = per_image(ref), per_image(other)
    d = {k: max(abs(a[k][0] - b[k][0]), abs(a[k][1] - b[k][1])) for k in a}
    row0 = [v for k, v in d.items() if k[0] == "0"]
    dm = [abs(x - y) for x, y in zip(matrix(ref), matrix(other))]
    return {
        "images_scored": len(d),
        "images_moved": sum(v > 0 for v in d.values()),
        "max_score_diff": max(d.values()),
        "row0_images_moved": sum(v > 0 for v in row0),
        "row0_max_score_diff": max(row0),
        "matrix_entries": len(dm),
        "max_matrix_diff": max(dm),
        "mean_matrix_diff": sum(dm) / len(dm),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--cache", default=None, help="feature cache folder (default <results>/cache)")
    ap.add_argument("--method", default="sequential")
    ap.add_argument("--train-cap", type=int, default=4)
    ap.add_argument("--test-cap", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    root = Path(args.results)
    dirs: Dict[str, Path] = {}
    runs = (
        ("reference", True, "fp32", 1),
        ("reference_2threads", True, "fp32", 2),
        ("fast", False, "fp32", 1),
        ("fast_bf16", False, "bf16", 1),
    )
    for name, ref, precision, threads in runs:
        cfg = make_config(
            "cpu",
            {
                "method": args.method,
                "results_dir": str(root / name),
                "progress": False,
                "cache_dir": args.cache or str(root / "cache"),
                "threads": threads,
                "data": {
                    "train_cap": args.train_cap,
                    "test_cap": args.test_cap,
                    "probe_cap": args.test_cap,
                },
                "train": {"epochs": args.epochs, "precision": precision},
            },
        )
        with reference_path(enabled=ref), metrics.reference_metrics(enabled=ref):
            dirs[name] = run(cfg, ctx=Context())
        print(f"{name}: {dirs[name]}", flush=True)
    out: Dict[str, Any] = {}
    for name, *_ in runs[1:]:
        out[name] = compare(dirs["reference"], dirs[name])
        print(name, out[name], flush=True)
    (root / "e2e_equivalence.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
