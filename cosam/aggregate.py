"""A sweep's aggregate: its finished runs read into tables of mean ± std over seeds.

:func:`aggregate` reads finished run folders only (never recomputes results) and writes, under
``<results_dir>/<profile>/sweep/`` (or another ``out`` folder):

* ``summary_mean_std.csv``: per (order, method): number of seeds, ``<key>_mean`` and
  ``<key>_std`` (fractions) for Last/Avg/FF/BWT x IoU/BIoU and the probe;
* ``per_seed.csv``: one row per finished run (the numbers the means are taken over);
* ``order_sensitivity.csv``: per method and metric, mean/std/n per order and the range of the
  order means; ``order_sensitivity.png`` draws Last and FF per method and order;
* ``sweep.md``: the Table 2 layout per order, the paper's published numbers as a separate block,
  order sensitivity, per-seed numbers, and which combinations are missing
  (:mod:`cosam.sweep_markdown`).

The grid and options are in ``sweep.json`` (:data:`cosam.grid.MANIFEST`, written by the sweep).
Std is the **sample** standard deviation over seeds (:mod:`cosam.stats`); with one seed it is
undefined (NaN in the CSVs, "–" in the tables). Notebooks read the aggregate back with
:func:`cosam.sweep_result.load_sweep`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .data.domains import NAMED_ORDERS
from .grid import Combo, SweepSpec
from .io import atomic_write_bytes, write_csv, write_text
from .published import COLUMNS
from .report import RunRecord, load_run, summary_rows
from .rundir import RunDir, parse_run_name
from .stats import STD_DDOF, mean_std
from .sweep_markdown import sweep_markdown

#: Keys of :func:`cosam.report.summary_rows` aggregated over seeds (Table 2's six first).
KEYS: Tuple[str, ...] = COLUMNS + ("bwt_iou", "bwt_biou", "probe_zero_shot", "probe_last")
#: Metrics of the order-sensitivity table and figure.
SENSITIVITY_KEYS: Tuple[str, ...] = ("last_iou", "ff_iou", "last_biou", "ff_biou")
OUTPUT_FILES = (
    "summary_mean_std.csv",
    "per_seed.csv",
    "order_sensitivity.csv",
    "sweep.md",
    "order_sensitivity.png",
)


@dataclass
class Missing:
    """A combination of the grid without a finished run that counts, and why."""

    combo: Combo
    run_dir: Path
    status: str  # not started | interrupted after step k | running | different config | unreadable

    def text(self) -> str:
        return f"{self.combo.name} ({self.status})"


@dataclass
class SweepTables:
    """What :func:`aggregate` computed and wrote."""

    out: Path
    spec: SweepSpec
    records: Dict[Combo, RunRecord]
    missing: List[Missing]
    per_seed: List[Dict[str, Any]]
    summary: List[Dict[str, Any]]
    sensitivity: List[Dict[str, Any]]
    markdown: str


def collect(
    spec: SweepSpec, check_config: bool = True
) -> Tuple[Dict[Combo, RunRecord], List[Missing]]:
    """The finished runs of ``spec``'s grid and, for the others, why they are missing.

    A finished run whose config.json differs from the one the sweep would build (other
    ``--set`` values, say, or another code version: :func:`cosam.provenance.config_differences`
    without the data and weights, which only a run re-checks) is not counted: it is listed as
    missing with "different config" and the first differing keys.

    Arguments:
      spec (SweepSpec): the grid.
      check_config (bool): compare each finished run's config with the grid's.

    Returns:
      (Tuple[Dict[Combo, RunRecord], List[Missing]]): the finished runs, and the others.
    """
    from .provenance import config_differences

    done: Dict[Combo, RunRecord] = {}
    missing: List[Missing] = []
    for combo in spec.combos():
        rd = spec.run_dir(combo)
        folder = RunDir(rd)
        if folder.is_done():
            try:
                rec = load_run(rd)
            except (OSError, ValueError, KeyError) as exc:
                missing.append(Missing(combo, rd, f"unreadable: {exc}"))
                continue
            diffs = config_differences(rec.meta, spec.config(combo)) if check_config else []
            if diffs:
                missing.append(
                    Missing(
                        combo,
                        rd,
                        f"finished with a different config ({'; '.join(diffs[:3])}"
                        f"{'; ...' if len(diffs) > 3 else ''}); not counted",
                    )
                )
                continue
            done[combo] = rec
        elif folder.busy():
            missing.append(Missing(combo, rd, "running"))
        elif (step := folder.last_step()) is not None:
            missing.append(Missing(combo, rd, f"interrupted after step {step}; rerun to resume"))
        else:
            missing.append(Missing(combo, rd, "not started"))
    return done, missing


def compute_rows(per_seed: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per (order, method): finished runs, mean and total measured minutes.

    Arguments:
      per_seed (Sequence[Mapping]): rows of :func:`per_seed_rows` (``compute_s``:
        :attr:`cosam.report.RunRecord.compute_s`).

    Returns:
      (List[Dict]): order, method, runs, min/run, total min (NaN where none was measured).
    """
    groups: Dict[Tuple[str, str], List[float]] = {}
    for r in per_seed:
        groups.setdefault((r["order"], r["method"]), []).append(
            float(r.get("compute_s", float("nan")))
        )
    rows = []
    for (order, method), secs in groups.items():
        ok = [x for x in secs if math.isfinite(x)]
        rows.append(
            {
                "order": order,
                "method": method,
                "runs": len(secs),
                "min/run": (sum(ok) / len(ok) / 60.0) if ok else float("nan"),
                "total min": sum(ok) / 60.0 if ok else float("nan"),
            }
        )
    return rows


def per_seed_rows(records: Mapping[Combo, RunRecord]) -> List[Dict[str, Any]]:
    """One row per finished run, in grid order (by order, then method, then seed).

    Arguments:
      records (Mapping[Combo, RunRecord]): the finished runs (:func:`collect`).

    Returns:
      (List[Dict]): order, method, seed, data, Table 2 columns and the rest of
        :func:`cosam.report.summary_rows` (fractions), train_s, compute_s, the task order it
        trained in, its folder.
    """
    rows = []
    for combo, rec in records.items():
        (s,) = summary_rows([rec])
        row: Dict[str, Any] = {
            "order": combo.order,
            "method": combo.method,
            "seed": combo.seed,
            "data": s["data"],
        }
        row.update({k: s.get(k) for k in KEYS})
        row["train_s"] = s.get("train_s")
        row["compute_s"] = rec.compute_s
        row["task_order"] = " > ".join(rec.meta["resolved"]["order"])
        row["run"] = str(rec.path)
        rows.append(row)
    rank: Dict[Tuple[str, str], int] = {}
    for c in records:  # grid order: by order, then method, then seed
        rank.setdefault((c.order, c.method), len(rank))
    rows.sort(key=lambda r: (rank[(r["order"], r["method"])], r["seed"]))
    return rows


def summary_stats(per_seed: Sequence[Mapping[str, Any]], spec: SweepSpec) -> List[Dict[str, Any]]:
    """Mean and sample std over seeds per (order, method), in the grid's order.

    Arguments:
      per_seed (Sequence[Mapping]): rows of :func:`per_seed_rows`.
      spec (SweepSpec): the grid (its orders and methods give the row order).

    Returns:
      (List[Dict]): only pairs with at least one finished seed; keys order, method, n_seeds,
        seeds, data, std, <key>_mean, <key>_std.
    """
    rows = []
    for order in spec.orders:
        for method in spec.methods:
            group = [r for r in per_seed if r["order"] == order and r["method"] == method]
            if not group:
                continue
            row: Dict[str, Any] = {
                "order": order,
                "method": method,
                "n_seeds": len(group),
                "seeds": " ".join(str(r["seed"]) for r in group),
                "data": "synthetic" if any(r["data"] == "synthetic" for r in group) else "real",
                "std": f"sample (ddof={STD_DDOF})",
            }
            for k in KEYS:
                mean, std, _ = mean_std([r[k] for r in group])
                row[f"{k}_mean"], row[f"{k}_std"] = mean, std
            rows.append(row)
    return rows


def sensitivity_rows(
    summary: Sequence[Mapping[str, Any]], spec: SweepSpec, keys: Sequence[str] = SENSITIVITY_KEYS
) -> List[Dict[str, Any]]:
    """Per method and metric: n/mean/std per order, and the range of the order means.

    Arguments:
      summary (Sequence[Mapping]): rows of :func:`summary_stats`.
      spec (SweepSpec): the grid.
      keys (Sequence[str]): the metrics.

    Returns:
      (List[Dict]): method, metric, ``<order>_n``/``_mean``/``_std``, n_orders and range
        (max − min of the order means; NaN for fewer than two orders).
    """
    rows = []
    for method in spec.methods:
        by_order = {r["order"]: r for r in summary if r["method"] == method}
        if not by_order:
            continue
        for k in keys:
            row: Dict[str, Any] = {"method": method, "metric": k}
            means = []
            for o in spec.orders:
                r = by_order.get(o)
                row[f"{o}_n"] = r["n_seeds"] if r else 0
                row[f"{o}_mean"] = r[f"{k}_mean"] if r else math.nan
                row[f"{o}_std"] = r[f"{k}_std"] if r else math.nan
                if r and math.isfinite(r[f"{k}_mean"]):
                    means.append(r[f"{k}_mean"])
            row["n_orders"] = len(means)
            row["range"] = (max(means) - min(means)) if len(means) > 1 else math.nan
            rows.append(row)
    return rows


def aggregate(
    spec: SweepSpec, out: Optional[Path] = None, check_config: bool = True
) -> SweepTables:
    """Aggregate the finished runs of ``spec``'s grid: the CSVs, ``sweep.md`` and the figure.

    Reads run folders only; combinations without a finished run are listed as missing.

    Arguments:
      spec (SweepSpec): the grid.
      out (Path): the aggregate folder; default ``<results_dir>/<profile>/sweep``.
      check_config (bool): count only finished runs made with the grid's config (:func:`collect`).

    Returns:
      (SweepTables): what was computed and written.
    """
    out = Path(out) if out else spec.default_out()
    records, missing = collect(spec, check_config)
    per_seed = per_seed_rows(records)
    summary = summary_stats(per_seed, spec)
    sensitivity = sensitivity_rows(summary, spec)
    per_seed_cols = [
        "order",
        "method",
        "seed",
        "data",
        *KEYS,
        "train_s",
        "compute_s",
        "task_order",
        "run",
    ]
    summary_cols = ["order", "method", "n_seeds", "seeds", "data", "std"] + [
        f"{k}_{s}" for k in KEYS for s in ("mean", "std")
    ]
    sens_cols = (
        ["method", "metric"]
        + [f"{o}_{s}" for o in spec.orders for s in ("n", "mean", "std")]
        + ["n_orders", "range"]
    )
    write_csv(out / "per_seed.csv", per_seed, per_seed_cols)
    write_csv(out / "summary_mean_std.csv", summary, summary_cols)
    write_csv(out / "order_sensitivity.csv", sensitivity, sens_cols)
    figure = bool(summary)
    if figure:
        from .plots import png_bytes
        from .sweep_plots import order_sensitivity

        fig = order_sensitivity(
            summary,
            per_seed,
            spec.methods,
            spec.orders,
            synthetic=any(r.synthetic for r in records.values()),
        )
        atomic_write_bytes(out / "order_sensitivity.png", png_bytes(fig))
    else:
        (out / "order_sensitivity.png").unlink(missing_ok=True)
    groups: Dict[str, List[str]] = {}
    for m in missing:
        groups.setdefault(m.status, []).append(m.combo.name)
    compute = compute_rows(per_seed)
    md = sweep_markdown(
        spec, records, groups, summary, sensitivity, per_seed, compute, figure, check_config
    )
    write_text(out / "sweep.md", md)
    return SweepTables(out, spec, records, missing, per_seed, summary, sensitivity, md)


def discover(results_dir: Path, profile: str) -> Tuple[List[str], List[int], List[str]]:
    """Methods, seeds and orders of the run folders under ``<results_dir>/<profile>``.

    For aggregating without a sweep manifest: every ``<method>-<order>-s<seed>`` folder counts,
    in any state (validation runs do not).

    Arguments:
      results_dir (Path): the results folder.
      profile (str): the config profile.

    Returns:
      (Tuple[List[str], List[int], List[str]]): methods (registry order, then combinations
        sorted), seeds and orders (named-order order).
    """
    from .methods import METHODS, is_method

    methods, seeds, orders = set(), set(), set()
    base = Path(results_dir) / profile
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        n = parse_run_name(d.name)  # validation runs (-val) are not part of a sweep's test results
        if d.is_dir() and n and not n.val and is_method(n.method):
            methods.add(n.method)
            seeds.add(n.seed)
            orders.add(n.order)
    named = [
        m for m in METHODS if m in methods
    ]  # registry order, then combinations (base+plugin) sorted
    return (
        named + sorted(methods - set(named)),
        sorted(seeds),
        [o for o in NAMED_ORDERS if o in orders],
    )
