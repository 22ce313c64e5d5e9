"""Tables of the reports, built from loaded run folders (never recomputed results).

Rows are lists of dicts for :func:`cosam.report.markdown_table` (or a CSV); scores are
fractions, or "mean ± std" text in percent (:mod:`cosam.stats`). Over seeds:
:func:`seed_stats`, :func:`table2_rows`, :func:`summary_csv_rows`; the probe after every step:
:func:`probe_series`, :func:`probe_rows`; the benchmark tour: :func:`domain_rows`,
:func:`licence_rows`, :func:`readme_section`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from .data.benchmark import Benchmark
from .data.domains import LAYOUTS
from .published import COLUMNS, HEADERS
from .report import RunRecord, summary_rows
from .stats import Stat, fmt_stat, mean_std


def seed_stats(
    runs: Mapping[str, Sequence[RunRecord]],
    keys: Sequence[str] = COLUMNS + ("probe_zero_shot", "probe_last", "train_s"),
) -> Dict[str, Dict[str, Stat]]:
    """Per method and key of :func:`cosam.report.summary_rows`: (mean, sample std, n seeds).

    Arguments:
      runs (Mapping[str, Sequence[RunRecord]]): method -> its finished runs, one per seed.
      keys (Sequence[str]): the keys of :func:`cosam.report.summary_rows`.

    Returns:
      (Dict[str, Dict[str, Stat]]): {method: {key: :func:`cosam.stats.mean_std`}}; NaN where
        undefined.
    """
    out: Dict[str, Dict[str, Stat]] = {}
    for method, recs in runs.items():
        rows = summary_rows(recs)
        out[method] = {k: mean_std([r.get(k) for r in rows]) for k in keys}
    return out


def table2_rows(
    stats: Mapping[str, Mapping[str, Stat]], columns: Sequence[str] = COLUMNS
) -> List[Dict[str, str]]:
    """Table-2 layout: one row per method, Last/Avg/FF for IoU and BIoU as "mean ± std" percent.

    Arguments:
      stats (Mapping[str, Mapping[str, Stat]]): {method: {key: (mean, std, n)}}
        (:func:`seed_stats` or :meth:`cosam.sweep_result.SweepResult.stats`).
      columns (Sequence[str]): the keys, one column each.

    Returns:
      (List[Dict[str, str]]): method, seeds, then one :func:`cosam.stats.fmt_stat` per column;
        in a table where no method has more than one seed, the mean alone (a "± –" in every
        cell would say nothing the seeds column does not).
    """
    spread = any(st[2] > 1 for s in stats.values() for st in s.values())
    rows = []
    for method, s in stats.items():
        row = {"method": method, "seeds": str(next(iter(s.values()))[2]) if s else "0"}
        row.update({HEADERS.get(c, c): fmt_stat(s[c], spread=spread) for c in columns})
        rows.append(row)
    return rows


def summary_csv_rows(stats: Mapping[str, Mapping[str, Stat]]) -> List[Dict[str, Any]]:
    """Numeric form of :func:`seed_stats` for a CSV.

    Arguments:
      stats (Mapping[str, Mapping[str, Stat]]): {method: {key: (mean, std, n)}}.

    Returns:
      (List[Dict]): method, n_seeds, <key>_mean, <key>_std (fractions).
    """
    rows = []
    for method, s in stats.items():
        row: Dict[str, Any] = {"method": method, "n_seeds": next(iter(s.values()))[2] if s else 0}
        for k, (mean, std, _) in s.items():
            row[f"{k}_mean"], row[f"{k}_std"] = mean, std
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# Probe (zero-shot retention)
# ----------------------------------------------------------------------------------------------


def probe_series(rec: RunRecord, metric: str = "iou") -> Tuple[List[int], List[float]]:
    """(steps, probe score) of one run.

    Arguments:
      rec (RunRecord): the run; one that is not a full sequence (joint) maps its last row to the
        last step.
      metric (str): ``iou`` or ``biou``.

    Returns:
      (Tuple[List[int], List[float]]): the steps and the probe score (fraction) after each;
        empty when the run has no probe.
    """
    m = rec.matrix
    if m.probe is None:
        return [], []
    vals = list(m.array(metric)[:, len(m.tasks)])
    steps = list(range(m.n_rows)) if m.is_full_sequence else [0] + [len(m.tasks)] * (m.n_rows > 1)
    return steps, vals[: len(steps)]


def probe_rows(runs: Mapping[str, RunRecord], metric: str = "iou") -> List[Dict[str, Any]]:
    """Probe score (fraction) after every step per method.

    Arguments:
      runs (Mapping[str, RunRecord]): method -> run.
      metric (str): ``iou`` or ``biou``.

    Returns:
      (List[Dict]): method, columns "0 before", "1 <task>", ..., then drop = before − after the
        last step.
    """
    ref = next(
        (r.matrix for r in runs.values() if r.matrix.is_full_sequence),
        next(iter(runs.values())).matrix,
    )
    cols = ["0 before"] + [f"{i + 1} {t}" for i, t in enumerate(ref.tasks)]
    rows = []
    for method, rec in runs.items():
        steps, vals = probe_series(rec, metric)
        row: Dict[str, Any] = {"method": method, **{c: math.nan for c in cols}}
        for s, v in zip(steps, vals):
            row[cols[s]] = v
        row["drop"] = vals[0] - vals[-1] if vals else math.nan
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# The benchmark tour
# ----------------------------------------------------------------------------------------------


def domain_rows(full: Benchmark, used: Benchmark) -> List[Dict[str, Any]]:
    """Per domain in training order, then the probe: counts on disk, counts a profile uses, source.

    Arguments:
      full (Benchmark): the benchmark as on disk.
      used (Benchmark): the same benchmark as a profile caps it.

    Returns:
      (List[Dict]): step, slot, task_id, train, test, train_used, val_used, test_used, source.
    """
    specs = LAYOUTS.get(full.layout, {})
    used_by = {r["name"]: r for r in used.summary()}
    rows = []
    for i, r in enumerate(full.summary()):
        u = used_by.get(r["name"], {})
        rows.append(
            {
                "step": i + 1 if i < len(full.tasks) else "probe",
                "slot": r["name"],
                "task_id": r["task_id"],
                "train": r["n_train"],
                "test": r["n_test"],
                "train_used": u.get("n_train"),
                "val_used": u.get("n_val"),
                "test_used": u.get("n_test"),
                "source": specs[r["name"]].source if r["name"] in specs else "(custom layout)",
            }
        )
    return rows


def licence_rows(root: Path) -> List[Dict[str, Any]]:
    """From ``MANIFEST.tsv``: per domain folder, its CoSAM slot, source repositories and licences.

    Arguments:
      root (Path): the data folder.

    Returns:
      (List[Dict]): domain, slot, pairs, repos, licences; empty when the folder has no manifest
        (e.g. generated data).
    """
    path = Path(root) / "MANIFEST.tsv"
    if not path.is_file():
        return []
    by: Dict[str, Dict[str, Any]] = {}
    with open(path, newline="") as f:
        for rec in csv.DictReader(f, delimiter="\t"):
            d = by.setdefault(
                rec["domain"],
                {
                    "domain": rec["domain"],
                    "slot": rec["cosam_slot"],
                    "pairs": 0,
                    "repos": set(),
                    "licences": set(),
                },
            )
            d["pairs"] += 1
            d["repos"].add(rec["src_repo"])
            d["licences"].add(rec["license"])
    return [
        {**d, "repos": "; ".join(sorted(d["repos"])), "licences": "; ".join(sorted(d["licences"]))}
        for d in by.values()
    ]


def readme_section(path: Path, heading: str) -> str:
    """The markdown under a heading, up to the next heading of the same or a higher level.

    Arguments:
      path (Path): the markdown file.
      heading (str): the heading line, e.g. "### Notes on the substitutes".

    Returns:
      (str): the section's text; "" when the file or heading is absent.
    """
    path = Path(path)
    if not path.is_file():
        return ""
    level = len(heading) - len(heading.lstrip("#"))
    out: List[str] = []
    inside = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() == heading.strip():
            inside = True
            continue
        if inside and line.startswith("#") and len(line) - len(line.lstrip("#")) <= level:
            break
        if inside:
            out.append(line)
    return "\n".join(out).strip()
