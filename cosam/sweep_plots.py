"""The figure of a sweep's aggregate: order sensitivity (``order_sensitivity.png``).

Drawn from the rows :mod:`cosam.aggregate` writes (or :mod:`cosam.sweep_result` reads back),
never from recomputed results: per method and task order, the mean over seeds with the sample
std as error bars and one dot per seed.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .plots import PALETTE, title
from .published import HEADERS


def _pct(x: float) -> float:
    return 100.0 * x


def order_sensitivity(
    summary: Sequence[Mapping[str, Any]],
    per_seed: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    orders: Sequence[str],
    keys: Sequence[str] = ("last_iou", "ff_iou"),
    synthetic: bool = False,
) -> Figure:
    """One panel per metric: per method, one bar per task order at the mean over seeds (%).

    Error bars = the std over seeds (sample std, none for one seed), dots = the individual seeds.

    Arguments:
      summary (Sequence[Mapping]): rows of :func:`cosam.aggregate.summary_stats` (order, method,
        n_seeds, <key>_mean, <key>_std).
      per_seed (Sequence[Mapping]): rows of :func:`cosam.aggregate.per_seed_rows` (order,
        method, seed, <key>).
      methods (Sequence[str]): the methods, in this order.
      orders (Sequence[str]): the task orders, one bar colour each.
      keys (Sequence[str]): the metrics (Last-IoU and FF-IoU by default).
      synthetic (bool): mark the title SYNTHETIC.

    Returns:
      (Figure): the figure.
    """
    fig, axes = plt.subplots(
        1,
        len(keys),
        figsize=(max(4.0, 1.2 + 0.9 * len(methods)) * len(keys) / 1.4, 3.2),
        squeeze=False,
        layout="constrained",
    )
    width = 0.8 / max(len(orders), 1)
    colours = PALETTE
    by = {(r["order"], r["method"]): r for r in summary}
    for ax, key in zip(axes[0], keys):
        for k, order in enumerate(orders):
            xs = np.arange(len(methods)) + (k - (len(orders) - 1) / 2) * width
            bars = []  # (x, mean, std) where the metric is defined
            for x, m in zip(xs, methods):
                r = by.get((order, m))
                mean = float(r[f"{key}_mean"]) if r else math.nan
                std = float(r[f"{key}_std"]) if r else math.nan
                if math.isfinite(mean):
                    bars.append((x, _pct(mean), _pct(std) if math.isfinite(std) else 0.0))
            ax.bar(
                [b[0] for b in bars],
                [b[1] for b in bars],
                width,
                yerr=[b[2] for b in bars],
                capsize=2,
                color=colours[k % len(colours)],
                alpha=0.75,
                label=order,
            )
            for x, m in zip(xs, methods):
                vals = [
                    _pct(float(r[key]))
                    for r in per_seed
                    if r["order"] == order
                    and r["method"] == m
                    and r.get(key) is not None
                    and math.isfinite(float(r[key]))
                ]
                ax.scatter([x] * len(vals), vals, s=6, color="black", zorder=3)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_ylabel("%")
        ax.set_title(HEADERS.get(key, key))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        title="task order",
        fontsize=9,
        title_fontsize=9,
        loc="outside lower center",
        ncols=max(len(labels), 1),
    )
    fig.suptitle(title("Order sensitivity: mean ± sample std over seeds (dots: seeds)", synthetic))
    return fig
