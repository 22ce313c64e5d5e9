"""Why joint training loses MVTec_III: per evaluation image, the IoU change (last row − row 0)
against how much of its ground-truth box the mask fills (the box is the evaluation prompt).

    python benchmarks/analysis_box_fill.py RUN_DIR   # a finished run evaluated on validation

Prints, per task, the median box fill (mask area / area of its tight box), the mean IoU change of
the fuller and the sparser half of the images, and the correlation between fill and change.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from cosam.data import build_benchmark
from cosam.data.reader import load_pair


def main(run: Path) -> None:
    meta = json.loads((run / "config.json").read_text())
    d = meta["config"]["data"]
    if meta["config"]["eval"]["split"] != "val":
        raise SystemExit(
            f"{run} was evaluated on {meta['config']['eval']['split']}; this analysis reads validation runs"
        )
    bench = build_benchmark(
        Path(meta["resolved"]["data_root"]),
        d["layout"],
        list(meta["resolved"]["order"]),
        0,
        d["train_cap"],
        None,
        None,
        False,
        val_cap=d["val_cap"],
        eval_split="val",
    )
    rows = list(csv.DictReader(open(run / "per_image.csv")))
    last = max(int(r["row"]) for r in rows)
    for task in bench.tasks:
        before = {
            int(r["index"]): float(r["iou"])
            for r in rows
            if r["dataset"] == task.name and r["row"] == "0"
        }
        after = {
            int(r["index"]): float(r["iou"])
            for r in rows
            if r["dataset"] == task.name and int(r["row"]) == last
        }
        fills, deltas = [], []
        for i, sample in enumerate(task.val):
            _, mask = load_pair(sample)
            fg = mask > 127 if mask.dtype != bool else mask
            ys, xs = np.nonzero(fg)
            fills.append(fg.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)))
            deltas.append(after[i] - before[i])
        f, c = np.array(fills), np.array(deltas)
        full = f >= np.median(f)
        print(
            f"{task.name:10s} n={len(f):2d} box fill median {np.median(f):.2f}; IoU change (points): fuller half "
            f"{100 * c[full].mean():+6.1f}, sparser half {100 * c[~full].mean():+6.1f}; "
            f"corr(fill, change) {np.corrcoef(f, c)[0, 1]:+.2f}"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
