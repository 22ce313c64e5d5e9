"""A sweep's aggregate read back from disk, for the notebooks (:func:`load_sweep`).

The files are as the last ``python -m cosam sweep`` or ``aggregate`` wrote them
(:func:`cosam.aggregate.aggregate`): numbers come back as fractions, NaN where undefined.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .aggregate import KEYS
from .grid import MANIFEST, SweepSpec
from .io import read_json
from .stats import Stat


def _typed(value: str) -> Any:
    if value == "":
        return math.nan
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def read_csv_typed(path: Path) -> List[Dict[str, Any]]:
    """A CSV written by :func:`cosam.io.write_csv`, numbers as int/float and empty cells as NaN.

    Arguments:
      path (Path): the CSV file.

    Returns:
      (List[Dict]): one dict per row; the columns seeds, task_order, run and std stay text.
    """
    with open(path, newline="") as f:
        return [
            {
                k: (v if k in ("seeds", "task_order", "run", "std") else _typed(v))
                for k, v in r.items()
            }
            for r in csv.DictReader(f)
        ]


@dataclass
class SweepResult:
    """An aggregate read back from disk (see :func:`load_sweep`).

    Arguments:
      path (Path): the aggregate folder.
      summary (List[Dict]): rows of ``summary_mean_std.csv`` (order, method, n_seeds, seeds,
        data, std, ``<key>_mean``, ``<key>_std``; fractions, NaN where undefined).
      per_seed (List[Dict]): rows of ``per_seed.csv`` (order, method, seed, data, the keys,
        task_order, run).
      sensitivity (List[Dict]): rows of ``order_sensitivity.csv``.
      spec (SweepSpec): the sweep's grid and options (None when ``sweep.json`` is absent).
      markdown (str): ``sweep.md`` ("" when absent).
    """

    path: Path
    summary: List[Dict[str, Any]]
    per_seed: List[Dict[str, Any]]
    sensitivity: List[Dict[str, Any]]
    spec: Optional[SweepSpec]
    markdown: str

    @property
    def orders(self) -> List[str]:
        return list(dict.fromkeys(r["order"] for r in self.summary))

    @property
    def synthetic(self) -> bool:
        return any(r["data"] == "synthetic" for r in self.summary)

    @property
    def methods(self) -> List[str]:
        """The swept methods, in the grid's order (else the table's)."""
        if self.spec is not None:
            return list(self.spec.methods)
        return list(dict.fromkeys(r["method"] for r in self.summary))

    def figure(self, keys: Sequence[str] = ("last_iou", "ff_iou")) -> Any:
        """The order-sensitivity figure (:func:`cosam.sweep_plots.order_sensitivity`), drawn anew.

        Drawn from the tables, so a notebook shows it inline rather than linking the PNG beside
        ``sweep.md``.

        Arguments:
          keys (Sequence[str]): the metrics, one panel each.

        Returns:
          (Figure): the matplotlib figure.
        """
        from .sweep_plots import order_sensitivity

        return order_sensitivity(
            self.summary,
            self.per_seed,
            self.methods,
            self.orders,
            keys=keys,
            synthetic=self.synthetic,
        )

    def embedded_markdown(self, shift: int = 2) -> str:
        """``sweep.md`` for embedding in a larger report.

        Arguments:
          shift (int): headings go this many levels deeper.

        Returns:
          (str): the markdown without the figure's link (relative to the sweep folder; show
            :meth:`figure` instead).
        """
        out = []
        for line in self.markdown.splitlines():
            if line.startswith("![") and line.rstrip().endswith("(order_sensitivity.png)"):
                continue
            if line.startswith("#"):
                line = "#" * shift + line
            out.append(line)
        return "\n".join(out).strip() + "\n"

    def stats(self, order: str = "paper") -> Dict[str, Dict[str, Stat]]:
        """The mean ± std table of one order, as :data:`cosam.stats.Stat` per method and key.

        Arguments:
          order (str): the task order.

        Returns:
          (Dict[str, Dict[str, Stat]]): {method: {key: (mean, std, n_seeds)}}, the form of
            :func:`cosam.report_tables.seed_stats` (so :func:`cosam.report_tables.table2_rows`
            draws it).
        """
        return {
            r["method"]: {k: (r[f"{k}_mean"], r[f"{k}_std"], r["n_seeds"]) for k in KEYS}
            for r in self.summary
            if r["order"] == order
        }


def load_sweep(
    results_dir: Any = "results/runs", profile: str = "cpu", out: Optional[Path] = None
) -> Optional[SweepResult]:
    """The last aggregate of a sweep, or None when none was written.

    Arguments:
      results_dir (Path): where the runs are; the aggregate is ``<results_dir>/<profile>/sweep``.
      profile (str): the config profile of the runs.
      out (Path): read this folder instead (a sweep or aggregate given ``--out``).

    Returns:
      (SweepResult): the mean ± std table, per-seed rows, order sensitivity, the grid; None when
        ``summary_mean_std.csv`` is absent. The files are as the last ``sweep`` or ``aggregate``
        wrote them; call :func:`cosam.aggregate.aggregate` to include runs finished since.
    """
    folder = Path(out) if out else Path(results_dir) / profile / "sweep"
    if not (folder / "summary_mean_std.csv").is_file():
        return None
    manifest = folder / MANIFEST
    spec = SweepSpec.from_dict(read_json(manifest)["spec"]) if manifest.is_file() else None
    sens = folder / "order_sensitivity.csv"
    per_seed = folder / "per_seed.csv"
    md = folder / "sweep.md"
    return SweepResult(
        folder,
        read_csv_typed(folder / "summary_mean_std.csv"),
        read_csv_typed(per_seed) if per_seed.is_file() else [],
        read_csv_typed(sens) if sens.is_file() else [],
        spec,
        md.read_text(encoding="utf-8") if md.is_file() else "",
    )
