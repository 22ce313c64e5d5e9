"""The study's two small result tables, written from finished runs for the reports and anyone else.

``python -m cosam tables --methods ... --seeds 0 1 2 --orders paper --profile cpu`` reads the run
folders of that grid (``<results_dir>/<profile>/<method>-<order>-s<seed>``, finished and made
with the grid's config) and writes to ``--out`` (default ``results/tables``):

* ``table2.csv``: one row per (method, order): ``method, order, n_seeds``, then
  ``<metric>_mean`` and ``<metric>_std`` (sample std over seeds, ddof=1) in percent for
  ``last_iou, avg_iou, ff_iou, last_biou, avg_biou, ff_biou``, then ``test_images`` (test images
  scored per evaluation over the tasks; a capped method such as SAM-Adapter has fewer);
* ``claims.csv``: one row per (claim, base) per order: ``claim, base, target, mean, ci_low,
  ci_high, n_seeds, status`` (:mod:`cosam.claims`), then ``order`` and a ``note``;
* ``claims.md``: the claims in words with their verdicts, and what is missing.

The GFT claim's per-seed values (:func:`gft_silhouettes`) are computed from the MoDA runs'
test queries unless ``--no-gft`` is given, and stored in each run's ``silhouette.json``
(:func:`run_silhouette`), so the runs' archive (:mod:`cosam.archive`, no saved state) still
gives them: ``--results-dir results/archive`` reads it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .aggregate import collect, per_seed_rows
from .claims import BASES, Verdict, claims_markdown, judge_runs
from .grid import Combo, SweepSpec
from .io import read_json, write_csv, write_json, write_text
from .report import RunRecord, n_test_images
from .stats import mean_std

TABLE2_METRICS: Tuple[str, ...] = (
    "last_iou",
    "avg_iou",
    "ff_iou",
    "last_biou",
    "avg_biou",
    "ff_biou",
)
TABLE2_COLUMNS: Tuple[str, ...] = (
    ("method", "order", "n_seeds")
    + tuple(f"{m}_{s}" for m in TABLE2_METRICS for s in ("mean", "std"))
    + ("test_images",)
)
CLAIMS_COLUMNS: Tuple[str, ...] = (
    "claim",
    "base",
    "target",
    "mean",
    "ci_low",
    "ci_high",
    "n_seeds",
    "status",
    "order",
    "note",
)


def table2_rows(
    records: Mapping[Combo, RunRecord], methods: Sequence[str], orders: Sequence[str]
) -> List[Dict[str, Any]]:
    """Table 2: mean and sample std over seeds per (method, order), in percent (NaN where a
    metric is undefined, e.g. Avg/FF of zero-shot). ``test_images`` is the number the runs
    scored; runs of one (method, order) that scored different numbers raise ValueError."""
    per_seed = per_seed_rows(records)
    rows = []
    for order in orders:
        for method in methods:
            group = [r for r in per_seed if r["order"] == order and r["method"] == method]
            if not group:
                continue
            row: Dict[str, Any] = {"method": method, "order": order, "n_seeds": len(group)}
            for k in TABLE2_METRICS:
                mean, std, _ = mean_std([r[k] for r in group])
                row[f"{k}_mean"] = 100.0 * mean if math.isfinite(mean) else math.nan
                row[f"{k}_std"] = 100.0 * std if math.isfinite(std) else math.nan
            counts = {
                n_test_images(rec)
                for c, rec in records.items()
                if c.order == order and c.method == method
            }
            if len(counts) > 1:
                raise ValueError(
                    f"{method} ({order}) runs scored different numbers of test images: {sorted(counts)}"
                )
            row["test_images"] = counts.pop()
            rows.append(row)
    return rows


def by_method_seed(
    records: Mapping[Combo, RunRecord], order: str
) -> Dict[str, Dict[int, RunRecord]]:
    """method -> seed -> run, for one order."""
    out: Dict[str, Dict[int, RunRecord]] = {}
    for c, rec in records.items():
        if c.order == order:
            out.setdefault(c.method, {})[c.seed] = rec
    return out


def gft_silhouettes(runs: Mapping[str, Mapping[int, RunRecord]]) -> Dict[str, Dict[int, float]]:
    """base -> seed -> GFT-minus-pooled silhouette (:func:`cosam.analysis.silhouette_gain`) of
    every finished MoDA run in ``runs`` (method -> seed -> run, one order), the values the
    ``gft_separates_domains`` claim judges. One model and cache serve them all.

    Arguments:
      runs (Mapping[str, Mapping[int, RunRecord]]): method -> seed -> finished run.

    Returns:
      (Dict[str, Dict[int, float]]): per base with a MoDA run, per seed, the difference.
    """
    from .runner import Context

    ctx = Context()
    return {
        base: {s: run_silhouette(rec, ctx) for s, rec in runs[moda].items()}
        for base, moda in BASES.items()
        if runs.get(moda)
    }


#: Version of the stored GFT silhouette (bump when :func:`cosam.analysis.silhouette_gain`'s
#: numbers change: older ``silhouette.json`` files are then recomputed).
SILHOUETTE_VERSION = 1


def run_silhouette(rec: RunRecord, ctx: Any = None) -> float:
    """A MoDA run's GFT-minus-pooled silhouette (:func:`cosam.analysis.silhouette_gain`),
    stored in the run's ``silhouette.json`` the first time it is computed (from the run's saved
    state) and read from there afterwards: an archived run (:mod:`cosam.archive`) has no state.

    Arguments:
      rec (RunRecord): a finished ``*_moda`` run.
      ctx (Any): a :class:`cosam.runner.Context` to share model and caches.

    Returns:
      (float): the difference, in silhouette units.
    """
    path = rec.path / "silhouette.json"
    if path.is_file():
        got = read_json(path)
        if got.get("version") == SILHOUETTE_VERSION:
            return float(got["gft_minus_pooled"])
    from .analysis import silhouette_gain

    value = silhouette_gain(rec.path, ctx=ctx)
    write_json(
        path,
        {
            "gft_minus_pooled": value,
            "version": SILHOUETTE_VERSION,
            "what": "silhouette of the GFT queries minus that of pooled encoder features, "
            "over the run's test images by domain (cosam.analysis.silhouette_gain)",
        },
    )
    return value


def write_tables(
    spec: SweepSpec,
    out: Path = Path("results/tables"),
    silhouettes: Optional[Mapping[str, Mapping[int, float]]] = None,
    gft: bool = False,
) -> Tuple[List[Dict[str, Any]], List[Verdict], str]:
    """Collect ``spec``'s finished runs, then write table2.csv, claims.csv and claims.md to ``out``.

    Arguments:
      spec (SweepSpec): the grid.
      out (Path): the folder written.
      silhouettes (Optional[Mapping[str, Mapping[int, float]]]): given GFT silhouette gains for
        every order (base -> seed -> value); None: see ``gft``.
      gft (bool): compute them from each order's finished MoDA runs (:func:`gft_silhouettes`;
        about half a minute per run on the cpu profile). Without either, the GFT claim is left out.

    Returns:
      (table 2 rows, verdicts of every order, the markdown written to claims.md).
    """
    spec.validate()
    records, missing = collect(spec)
    out = Path(out)
    rows = table2_rows(records, spec.methods, spec.orders)
    write_csv(out / "table2.csv", rows, list(TABLE2_COLUMNS))
    verdicts: List[Verdict] = []
    claim_rows: List[Dict[str, Any]] = []
    text = [f"# Claims judged over seeds — profile `{spec.profile}`", ""]
    synthetic = any(rec.synthetic for rec in records.values())
    if synthetic:
        text += ["**SYNTHETIC generated data: not a real benchmark result.**", ""]
    for order in spec.orders:
        runs = by_method_seed(records, order)
        sil = gft_silhouettes(runs) if silhouettes is None and gft else silhouettes
        vs = judge_runs(runs, sil)
        verdicts += vs
        claim_rows += [dict(v.row(), order=order) for v in vs]
        text += [
            f"## Order `{order}`",
            "",
            claims_markdown(vs) if vs else "No MoDA run finished.",
            "",
        ]
    write_csv(out / "claims.csv", claim_rows, list(CLAIMS_COLUMNS))
    text += [f"Finished runs: {len(records)} of {len(spec.combos())}."]
    if missing:
        text += [
            "",
            "Missing (not in any table): "
            + ", ".join(f"{m.combo.name} ({m.status})" for m in missing),
        ]
    md = "\n".join(text) + "\n"
    write_text(out / "claims.md", md)
    return rows, verdicts, md
