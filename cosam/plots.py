"""Figures of the reports, drawn from loaded run folders (never recomputed results).

Every function takes what :mod:`cosam.report` loads (``RunRecord``, ``TaskMatrix``), the
statistics of :mod:`cosam.report_tables`, or plain arrays, draws on a given matplotlib ``Axes``
(or makes a figure) and returns it. Scores are fractions in the data and percent on screen. A
title gets " (SYNTHETIC data)" from :func:`title` when the runs used generated data. Images with
masks and prompts are drawn by :mod:`cosam.gallery`, a sweep's order sensitivity by
:mod:`cosam.sweep_plots`; the tables are in :mod:`cosam.report_tables`.
"""

from __future__ import annotations

import io
import math
from typing import Any, Dict, Mapping, Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .matrix import TaskMatrix
from .published import HEADERS
from .report import RunRecord
from .report_tables import probe_series
from .stats import Stat

#: seaborn's colour-blind-safe palette (domains, task orders, ablation groups).
PALETTE = (
    "#0173B2",
    "#DE8F05",
    "#029E73",
    "#D55E00",
    "#CC78BC",
    "#CA9161",
    "#FBAFE4",
    "#949494",
    "#ECE133",
    "#56B4E9",
)
#: One colour per domain slot, the same in every figure, from :data:`PALETTE`; the two look-alike
#: slots MVTec_I and MVTec_III get far-apart colours (sky blue and yellow).
DOMAIN_COLOURS: Dict[str, str] = {
    "BSData": PALETTE[0],
    "RSDD_I": PALETTE[1],
    "RSDD_II": PALETTE[2],
    "MVTec_I": PALETTE[9],
    "MVTec_II": PALETTE[4],
    "MVTec_III": PALETTE[8],
    "CAMO": PALETTE[3],
    "Polyp": PALETTE[6],
    "COCO": PALETTE[7],
}


def domain_colour(name: str, index: int = 0) -> str:
    """The colour of domain ``name`` (:data:`DOMAIN_COLOURS`).

    Arguments:
      name (str): the domain slot.
      index (int): an unknown name (a custom layout) gets the palette's ``index``-th colour.

    Returns:
      (str): a hex colour.
    """
    return DOMAIN_COLOURS.get(name, PALETTE[index % len(PALETTE)])


def setup(dpi: int = 100) -> None:
    """Readable PNG figures at 100 % zoom (text ≥ 9 pt at 100 dpi) that keep reports small."""
    matplotlib.rcParams.update(
        {
            "figure.dpi": dpi,
            "savefig.dpi": dpi,
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "xtick.labelsize": 9,
            "ytick.labelsize": 9,
            "legend.fontsize": 9,
            "figure.max_open_warning": 0,
        }
    )


def title(text: str, synthetic: bool) -> str:
    """``text``, marked SYNTHETIC when the data were generated."""
    return f"{text} (SYNTHETIC data)" if synthetic else text


def _pct(x: float) -> float:
    return 100.0 * x


# ----------------------------------------------------------------------------------------------
# Task matrices
# ----------------------------------------------------------------------------------------------


def _heatmap(arr: np.ndarray, ax: Axes, cmap: str, label: str, annotate: Any) -> None:
    """seaborn heat map in percent (0-100) with a colour bar and cell numbers."""
    import seaborn as sns

    annot = np.vectorize(annotate, otypes=[object])(arr)
    sns.heatmap(
        arr,
        ax=ax,
        cmap=cmap,
        vmin=0,
        vmax=100,
        annot=annot,
        fmt="",
        annot_kws={"fontsize": 8},
        mask=~np.isfinite(arr),
        cbar_kws={"label": label, "shrink": 0.9},
        linewidths=0.5,
        linecolor="white",
        square=False,
    )


def matrix_heatmap(
    m: TaskMatrix, metric: str = "iou", ax: Optional[Axes] = None, name: str = ""
) -> Axes:
    """Heat map of the task matrix in percent, with a colour bar.

    Rows = evaluation points, columns = tasks + probe; the probe column is set off by a white line.
    """
    ax = ax or plt.subplots(figsize=(6, 4.5))[1]
    arr = 100.0 * m.array(metric)
    _heatmap(
        arr,
        ax,
        "viridis",
        f"{metric.upper()} (%)",
        lambda v: f"{v:.0f}" if math.isfinite(v) else "",
    )
    ax.set_xticks(np.arange(len(m.columns)) + 0.5, m.columns, rotation=45, ha="right")
    ax.set_yticks(np.arange(m.n_rows) + 0.5, [f"{i} {r}" for i, r in enumerate(m.rows)], rotation=0)
    if m.probe is not None:
        ax.axvline(len(m.tasks), color="white", lw=3)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("after training")
    ax.set_title(f"{name} {metric.upper()} (%)".strip())
    return ax


def task_curves(
    m: TaskMatrix, metric: str = "iou", ax: Optional[Axes] = None, name: str = ""
) -> Axes:
    """Score of each task (and the probe, dashed) after every step; a dot marks its training step."""
    ax = ax or plt.subplots(figsize=(5, 3))[1]
    arr = 100.0 * m.array(metric)
    x = np.arange(m.n_rows)
    for j, task in enumerate(m.tasks):
        ok = np.isfinite(arr[:, j])
        colour = domain_colour(task, j)
        # a task is not scored before it is trained (eval.unseen_tasks off): a dotted line joins
        # row 0 to its first scored row, solid lines join consecutive scored rows
        ax.plot(x[ok], arr[ok, j], color=colour, lw=0.8, ls=":")
        in_run = ok & (np.r_[False, ok[:-1]] | np.r_[ok[1:], False])
        ax.plot(x, np.where(in_run, arr[:, j], np.nan), color=colour, lw=1.5, label=task)
        if j + 1 < m.n_rows and m.is_full_sequence:
            ax.plot([j + 1], [arr[j + 1, j]], "o", color=domain_colour(task, j), ms=5)
    if m.probe is not None:
        ax.plot(x, arr[:, len(m.tasks)], "k--", lw=1.2, label=m.probe)
    ax.set_xticks(x, [f"{i}" for i in x])
    ax.set_xlabel("after step (0 = before training)")
    ax.set_ylabel(f"{metric.upper()} (%)")
    ax.set_ylim(0, 100)
    ax.set_title(name)
    return ax


# ----------------------------------------------------------------------------------------------
# Summaries over methods and seeds
# ----------------------------------------------------------------------------------------------


def summary_bars(
    stats: Mapping[str, Mapping[str, Stat]],
    keys: Sequence[str] = ("last_iou", "avg_iou", "ff_iou"),
    ax: Optional[Axes] = None,
    name: str = "",
) -> Axes:
    """Grouped bars of the Table 2 columns per method (error bars = std over seeds).

    Arguments:
      stats (Mapping[str, Mapping[str, Stat]]): {method: {key: (mean, std, n)}}
        (:func:`cosam.report_tables.seed_stats`).
      keys (Sequence[str]): the columns, one bar each.
      ax (Axes): draw here (None: a new figure).
      name (str): title.

    Returns:
      (Axes): the axes drawn on.
    """
    ax = ax or plt.subplots(figsize=(8, 3), layout="constrained")[1]
    methods = list(stats)
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        means = [_pct(stats[m][key][0]) for m in methods]
        stds = [_pct(stats[m][key][1]) if math.isfinite(stats[m][key][1]) else 0.0 for m in methods]
        ax.bar(
            np.arange(len(methods)) + (k - (len(keys) - 1) / 2) * width,
            np.nan_to_num(means),
            width,
            yerr=stds,
            label=HEADERS.get(key, key),
        )
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never over a bar
    ax.set_title(name)
    return ax


# ----------------------------------------------------------------------------------------------
# Probe (zero-shot retention)
# ----------------------------------------------------------------------------------------------


def probe_curves(
    runs: Mapping[str, RunRecord],
    zero_shot: float,
    metric: str = "iou",
    ax: Optional[Axes] = None,
    name: str = "",
) -> Axes:
    """Probe score after every step per method; SAM zero-shot as a dashed horizontal line.

    Arguments:
      runs (Mapping[str, RunRecord]): method -> run (``zeroshot`` is drawn as the line only).
      zero_shot (float): SAM's zero-shot probe score (fraction).
      metric (str): ``iou`` or ``biou``.
      ax (Axes): draw here (None: a new figure).
      name (str): title.

    Returns:
      (Axes): the axes drawn on.
    """
    ax = ax or plt.subplots(figsize=(7, 3.2))[1]
    n_tasks = 0
    for method, rec in runs.items():
        steps, vals = probe_series(rec, metric)
        if not steps or method == "zeroshot":
            continue
        n_tasks = max(n_tasks, len(rec.matrix.tasks))
        style = "-o" if rec.matrix.is_full_sequence else "s"
        ax.plot(steps, [_pct(v) for v in vals], style, ms=3, lw=1.2, label=method)
    ax.axhline(
        _pct(zero_shot),
        color="black",
        ls="--",
        lw=1.2,
        label=f"SAM zero-shot {_pct(zero_shot):.1f}",
    )
    ax.set_xticks(range(n_tasks + 1))
    ax.set_xlabel("after step (0 = before training)")
    ax.set_ylabel(f"probe {metric.upper()} (%)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the data
    ax.set_title(name)
    return ax


# ----------------------------------------------------------------------------------------------
# Figure output
# ----------------------------------------------------------------------------------------------


def png_bytes(fig: Figure) -> bytes:
    """``fig`` as PNG bytes (for an atomic write), then closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# MoDA
# ----------------------------------------------------------------------------------------------


def confusion_heatmap(final: Mapping[str, Any], ax: Optional[Axes] = None, name: str = "") -> Axes:
    """Router confusion after the last task, cells = share of the row's images (%).

    Arguments:
      final (Mapping): the router's final record (``adapters``, ``confusion``: true domain and
        the probe -> counts per adapter chosen, ``accuracy``).
      ax (Axes): draw here (None: a new figure).
      name (str): title prefix.

    Returns:
      (Axes): the axes drawn on.
    """
    ax = ax or plt.subplots(figsize=(5, 4))[1]
    adapters = list(final["adapters"])
    rows = [r for r in adapters if r in final["confusion"]] + [
        r for r in final["confusion"] if r not in adapters
    ]
    arr = np.array([final["confusion"][r] for r in rows], dtype=float)
    arr = 100.0 * arr / np.maximum(arr.sum(1, keepdims=True), 1)
    _heatmap(arr, ax, "Blues", "% of the domain's images", lambda v: f"{v:.0f}" if v > 0 else "")
    ax.set_xticks(np.arange(len(adapters)) + 0.5, adapters, rotation=45, ha="right")
    ax.set_yticks(np.arange(len(rows)) + 0.5, rows, rotation=0)
    ax.set_xlabel("adapter chosen")
    ax.set_ylabel("image's domain")
    acc = final.get("accuracy")
    ax.set_title(f"{name} router accuracy {100 * acc:.1f}%".strip() if acc is not None else name)
    return ax


def tsne_scatter(
    embedding: np.ndarray, domains: Sequence[str], ax: Optional[Axes] = None, name: str = ""
) -> Axes:
    """2-D t-SNE points coloured by domain."""
    ax = ax or plt.subplots(figsize=(4.5, 4))[1]
    names = list(dict.fromkeys(domains))
    d = np.array(domains)
    for i, n in enumerate(names):
        pts = embedding[d == n]
        ax.scatter(pts[:, 0], pts[:, 1], s=12, color=domain_colour(n, i), label=n, alpha=0.85)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(name)
    return ax


def ablation_bars(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = ("router_accuracy", "last_iou"),
    name: str = "",
) -> Figure:
    """Grouped bars per ablation variant.

    Arguments:
      rows (Sequence[Mapping]): one per variant: ``variant``, the keys (fractions), ``group``
        (colour index, optional).
      keys (Sequence[str]): the metrics, one panel each.
      name (str): title.

    Returns:
      (Figure): the figure.
    """
    fig, axes = plt.subplots(
        1,
        len(keys),
        figsize=(6.0 * len(keys), 0.35 * len(rows) + 1.4),
        squeeze=False,
        layout="constrained",
        sharey=True,
    )
    labels = [r["variant"] for r in rows]
    for ax, k in zip(axes[0], keys):
        vals = [100.0 * float(r[k]) if r.get(k) is not None else np.nan for r in rows]
        y = np.arange(len(rows))
        ax.barh(y, vals, color=[PALETTE[int(r.get("group", 0)) % len(PALETTE)] for r in rows])
        for yi, v in zip(y, vals):
            if math.isfinite(v):
                ax.text(v, yi, f" {v:.1f}", va="center", fontsize=9)
        ax.set_yticks(y, labels)
        if ax is axes[0][0]:
            ax.invert_yaxis()  # shared y: invert once
        ax.set_xlabel(f"{k} (%)")
        ax.set_xlim(0, 105)
    fig.suptitle(name)
    return fig
