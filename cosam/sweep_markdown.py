"""``sweep.md``: a sweep's aggregate in words and tables (written by :func:`cosam.aggregate.aggregate`).

The sections, in order: the data, backbone and grid, which runs finished and which are missing;
the Table 2 layout (mean ± std over seeds, %) per task order; the paper's published Table 2 as a
separate block (its backbone and data differ from ours); order sensitivity; compute (measured
minutes per run); the per-seed numbers. Only finished runs are reported.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence

from .grid import Combo, SweepSpec
from .io import portable, portable_text
from .published import CITATION, COLUMNS, HEADERS, SETTING, published_rows
from .report import RunRecord, data_label, markdown_table
from .stats import STD_NOTE, fmt_mean_std


def sweep_markdown(
    spec: SweepSpec,
    records: Mapping[Combo, RunRecord],
    missing: Mapping[str, Sequence[str]],
    summary: Sequence[Mapping[str, Any]],
    sensitivity: Sequence[Mapping[str, Any]],
    per_seed: Sequence[Mapping[str, Any]],
    compute: Sequence[Mapping[str, Any]],
    figure: bool,
    check_config: bool,
) -> str:
    """The text of ``sweep.md``.

    Arguments:
      spec (SweepSpec): the grid.
      records (Mapping[Combo, RunRecord]): the finished runs.
      missing (Mapping[str, Sequence[str]]): why a run is missing -> the run names missing so.
      summary (Sequence[Mapping]): rows of :func:`cosam.aggregate.summary_stats`.
      sensitivity (Sequence[Mapping]): rows of :func:`cosam.aggregate.sensitivity_rows`.
      per_seed (Sequence[Mapping]): rows of :func:`cosam.aggregate.per_seed_rows`.
      compute (Sequence[Mapping]): rows of :func:`cosam.aggregate.compute_rows`.
      figure (bool): link ``order_sensitivity.png`` (written beside ``sweep.md``).
      check_config (bool): the runs' configs were checked against the grid's.

    Returns:
      (str): the markdown.
    """
    recs = list(records.values())
    label = data_label(recs) if recs else "no finished runs"
    text = _header(spec, records, missing, label, check_config)
    if not records:
        return "\n".join(text) + "\n"
    for order in spec.orders:
        if not any(r["order"] == order for r in summary):
            continue
        text += [
            "",
            f"## Table 2 layout — order `{order}` ({_order_text(order, records)})",
            "",
            f"Last / Avg / FF for IoU and BIoU, mean ± std over seeds (%); {label}.",
            "",
            _table2_markdown(summary, order),
        ]
    text += _published(spec, _backbones(recs), label)
    text += _sensitivity(spec, sensitivity, label, figure)
    text += _compute(compute, len(per_seed))
    text += _per_seed(per_seed)
    return "\n".join(text)


def _backbones(recs: Sequence[RunRecord]) -> List[str]:
    return sorted(
        {
            f"`{r.meta['resolved']['backbone']}` at {r.meta['resolved']['image_size']} px"
            for r in recs
        }
    )


def _header(
    spec: SweepSpec,
    records: Mapping[Combo, RunRecord],
    missing: Mapping[str, Sequence[str]],
    label: str,
    check_config: bool,
) -> List[str]:
    """Title, data, backbone, grid, finished and missing runs, the std's definition."""
    recs = list(records.values())
    text = [f"# cosam sweep — profile `{spec.profile}`", "", f"Data: **{label}**."]
    if recs:
        res = recs[0].meta["resolved"]
        ckpt = f"`{portable(res['checkpoint'])}`" if res.get("checkpoint") else "random weights"
        text[-1] += f" Backbone {', '.join(_backbones(recs))} ({ckpt})."
    text += [
        "",
        f"Grid: methods {', '.join(spec.methods)}; seeds {', '.join(map(str, spec.seeds))}; "
        f"orders {', '.join(spec.orders)}"
        + (f"; overrides `{portable_text(' '.join(spec.dotted))}`" if spec.dotted else "")
        + ".",
        "",
        f"Finished: **{len(records)} of {len(spec.combos())}** runs. Only finished runs are reported."
        + (
            ""
            if check_config
            else " (Grid discovered from the run folders; their configs were not checked.)"
        ),
    ]
    if missing:
        n_missing = sum(len(names) for names in missing.values())
        text += ["", f"Missing ({n_missing}, not in any table):"]
        text += [f"- {status}: {', '.join(names)}" for status, names in missing.items()]
    text += ["", STD_NOTE + ". Numbers in %."]
    return text


def _table2_markdown(summary: Sequence[Mapping[str, Any]], order: str) -> str:
    rows = []
    for r in summary:
        if r["order"] != order:
            continue
        row = {"method": r["method"], "seeds": str(r["n_seeds"])}
        row.update(
            {HEADERS[c]: fmt_mean_std(r[f"{c}_mean"], r[f"{c}_std"], r["n_seeds"]) for c in COLUMNS}
        )
        rows.append(row)
    return markdown_table(rows)


def _order_text(order: str, records: Mapping[Combo, RunRecord]) -> str:
    if order == "shuffled":
        return (
            "a permutation drawn from each run's seed (numpy default_rng(seed)); see per_seed.csv"
        )
    recs = [r for c, r in records.items() if c.order == order]
    return " → ".join(recs[0].meta["resolved"]["order"]) if recs else ""


def _published(spec: SweepSpec, backbones: Sequence[str], label: str) -> List[str]:
    """The paper's Table 2 rows of the swept methods, captioned as not comparable."""
    pub = published_rows(spec.methods)
    return [
        "",
        "## Published Table 2 (the paper's numbers, not ours)",
        "",
        f"From {CITATION} Their setting: {SETTING}; the paper task order (the released code runs no other, "
        "protocol §1.5); std over their five seeds, printed as published. "
        f"**The backbone and the data differ from ours** ({', '.join(backbones)}; {label}), "
        "so these rows are for orientation only, not a comparison.",
        "",
        markdown_table(pub)
        if pub
        else "(none of the swept methods has a row in the paper's Table 2)\n",
    ]


def _sensitivity(
    spec: SweepSpec, sensitivity: Sequence[Mapping[str, Any]], label: str, figure: bool
) -> List[str]:
    """Mean ± std per method, metric and task order, and the range of the order means."""
    text = [
        "## Order sensitivity",
        "",
        "Mean ± std over seeds per task order (%); range = max − min of the order means (points). "
        f"{label}.",
        "",
    ]
    sens_md = []
    for r in sensitivity:
        row = {"method": r["method"], "metric": HEADERS.get(r["metric"], r["metric"])}
        for o in spec.orders:
            row[o] = fmt_mean_std(r[f"{o}_mean"], r[f"{o}_std"], r[f"{o}_n"])
        row["range"] = "–" if not math.isfinite(r["range"]) else f"{100 * r['range']:.1f}"
        sens_md.append(row)
    text.append(markdown_table(sens_md))
    if figure:
        text += ["![Last and FF per method and order](order_sensitivity.png)", ""]
    return text


def _compute(compute: Sequence[Mapping[str, Any]], n_runs: int) -> List[str]:
    """Measured minutes per (order, method) and their total in hours."""
    total_h = sum(r["total min"] for r in compute if math.isfinite(r["total min"])) / 60.0
    return [
        "## Compute",
        "",
        f"Measured seconds (training + evaluation + encoding, summed over each run's invocations; start-up, "
        f"and work a kill threw away, not counted): **{total_h:.2f} h** over the {n_runs} finished runs. "
        "These are wall-clock seconds of those phases: a run that shared the machine or was paused counts "
        "its waits, so compare them only between runs made alike. Runs share the feature cache, so the first "
        "run to need an image pays for its encoding.",
        "",
        markdown_table(compute),
    ]


def _per_seed(per_seed: Sequence[Mapping[str, Any]]) -> List[str]:
    """Table 2's columns of every finished run (%)."""
    heads = [HEADERS[c] for c in COLUMNS]
    rows: List[Dict[str, Any]] = [
        {
            "order": r["order"],
            "method": r["method"],
            "seed": r["seed"],
            **{HEADERS[c]: r[c] for c in COLUMNS},
        }
        for r in per_seed
    ]
    return ["## Per seed (%)", "", markdown_table(rows, pct=heads)]
