"""Teaching figures drawn by code: MoDA's data flow, and the boundary band of Boundary IoU.

Both return a matplotlib Figure and read nothing from disk, so a notebook shows them on any
machine (with or without data)::

    from cosam.diagrams import moda_diagram, boundary_band_figure
    moda_diagram(n_gat=9, n_tasks=8)
    boundary_band_figure(gt_mask, pred_mask)
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch

from .metrics import boundary_dilation, boundary_iou, iou, mask_boundary

#: Colours of the diagram's parts (the Okabe–Ito colour-blind-safe palette).
FROZEN, TOKENS, POOL, ROUTER, DATA = "#999999", "#E69F00", "#56B4E9", "#CC79A7", "#009E73"


def _box(
    ax: Any,
    xy: Tuple[float, float],
    w: float,
    h: float,
    text: str,
    colour: str,
    fontsize: float = 10,
    alpha: float = 0.9,
) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            xy,
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.05",
            fc=colour,
            ec="black",
            lw=1.0,
            alpha=alpha,
        )
    )
    ax.text(
        xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=fontsize, wrap=True
    )


def _arrow(
    ax: Any,
    start: Tuple[float, float],
    end: Tuple[float, float],
    text: str = "",
    colour: str = "black",
    style: str = "-|>",
    ls: str = "-",
) -> None:
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops=dict(arrowstyle=style, color=colour, lw=1.6, ls=ls, shrinkA=2, shrinkB=2),
    )
    if text:
        ax.text(
            (start[0] + end[0]) / 2,
            (start[1] + end[1]) / 2 + 0.12,
            text,
            ha="center",
            va="bottom",
            fontsize=9,
            color=colour,
        )


def moda_diagram(n_gat: int = 9, n_tasks: int = 8, routed: int = 3, ax: Any = None) -> Any:
    """MoDA at test time, as boxes and arrows.

    The image passes once through SAM's frozen encoder. MoDA's tokens, one Global Feature Token
    (GFT) and ``n_gat`` Global Assistant Tokens (GAT), are carried through the encoder's blocks
    and read the patches one way (the patches never read the tokens, so the segmentation
    features are SAM's own). The GFT's output is the query; the router scores it against one key
    per trained task and picks an adapter from the pool (one adapter per task: what the base
    trains); the chosen adapter decodes the mask from the frozen features and the prompt.

    Arguments:
      n_gat (int): Global Assistant Tokens drawn.
      n_tasks (int): adapters in the pool.
      routed (int): the 1-based adapter the router picks in the drawing.
      ax: a matplotlib Axes, or None for a new figure.

    Returns:
      The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(12, 5.2), layout="constrained")
    else:
        fig = ax.figure
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 5.6)
    ax.axis("off")
    _box(ax, (0.1, 2.3), 1.3, 1.0, "image\n+ box prompt", DATA)
    # the frozen encoder: a stack of blocks, patches flowing left to right
    for i in range(4):
        _box(
            ax,
            (1.9 + 0.75 * i, 2.0),
            0.6,
            1.6,
            f"block\n{i + 1}" if i < 3 else "…",
            FROZEN,
            fontsize=8,
        )
    ax.text(3.3, 1.75, "SAM's image encoder (frozen)", ha="center", va="top", fontsize=10)
    _arrow(ax, (1.4, 2.8), (1.9, 2.8))
    # the tokens: carried through the blocks, reading the patches one way
    _box(ax, (1.9, 4.3), 2.85, 0.7, f"GFT + {n_gat} GAT tokens (trained)", TOKENS, fontsize=9)
    for i in range(3):
        x = 2.2 + 0.75 * i
        _arrow(ax, (x, 3.6), (x, 4.3), colour="#B8860B")
    ax.text(
        4.95,
        4.05,
        "tokens read the patches;\npatches never read the tokens",
        fontsize=8,
        color="#8B6508",
        va="center",
    )
    # outputs: features (to the adapter) and the query (to the router)
    _arrow(ax, (4.9, 2.8), (7.6, 2.8), "image features (SAM's own)")
    _arrow(ax, (4.75, 4.65), (6.2, 4.65), "GFT query q")
    _box(ax, (6.2, 4.25), 1.8, 0.8, "router\nargmax_t s(q, k_t)", ROUTER, fontsize=9)
    # the pool of adapters, one per task
    pool_x, pool_y, h = 7.6, 0.35, 3.45
    step = h / n_tasks
    for t in range(n_tasks):
        y = pool_y + h - (t + 1) * step
        chosen = t + 1 == routed
        _box(
            ax,
            (pool_x, y + 0.03),
            1.6,
            step - 0.08,
            f"adapter {t + 1}" + (" ✓" if chosen else ""),
            POOL if chosen else "#D6EAF8",
            fontsize=8,
            alpha=1.0 if chosen else 0.7,
        )
    ax.text(
        pool_x + 1.75,
        pool_y + 0.6,
        "adapter pool:\none per task,\nfrozen once\ntrained",
        ha="left",
        fontsize=9,
        va="bottom",
    )
    ytop = pool_y + h - (routed - 1) * step
    _arrow(ax, (7.1, 4.25), (pool_x + 0.1, ytop - 0.1), colour=ROUTER)
    ax.text(7.35, 3.93, f"picks adapter {routed}", ha="left", va="bottom", fontsize=9, color=ROUTER)
    _arrow(ax, (9.2, pool_y + h - (routed - 0.5) * step), (10.3, 2.8))
    _box(ax, (10.3, 2.3), 1.5, 1.0, "mask", DATA)
    ax.text(
        6.0,
        0.05,
        "Training task t: train adapter t as the base would (HQ branch, decoder, or encoder adapters),"
        " then the tokens and router on a small buffer of every task seen.",
        ha="center",
        fontsize=9,
    )
    return fig


def boundary_band_figure(
    gt: np.ndarray,
    pred: Optional[np.ndarray] = None,
    dilation_ratio: float = 0.02,
    axes: Optional[Sequence[Any]] = None,
) -> Any:
    """IoU and Boundary IoU on one mask pair, with the boundary bands drawn.

    Boundary IoU compares only the inner band of width d = max(1, round(dilation_ratio · image
    diagonal)) along each mask's contour: |B(P) ∩ B(G)| / |B(P) ∪ B(G)|. A prediction with the
    right area but a wrong outline scores high IoU and low Boundary IoU.

    Arguments:
      gt (np.ndarray): ground-truth mask, bool (H, W).
      pred (np.ndarray): predicted mask, bool (H, W); default: ``gt`` shifted by d pixels.
      dilation_ratio (float): band width as a fraction of the diagonal.
      axes: three matplotlib Axes, or None for a new figure.

    Returns:
      The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    g = torch.as_tensor(np.asarray(gt, dtype=bool))
    h, w = g.shape
    d = boundary_dilation(h, w, dilation_ratio)
    if pred is None:
        pred = np.roll(np.asarray(gt, dtype=bool), shift=(d, d), axis=(0, 1))
    p = torch.as_tensor(np.asarray(pred, dtype=bool))
    bg, bp = mask_boundary(g, dilation_ratio).numpy(), mask_boundary(p, dilation_ratio).numpy()
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), layout="constrained")
    fig = axes[0].figure

    def show(ax: Any, layers: Sequence[Tuple[np.ndarray, str]], title: str) -> None:
        rgb = np.ones((h, w, 3))
        for m, colour in layers:
            rgb[m] = plt.matplotlib.colors.to_rgb(colour)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(title, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])

    gn, pn = g.numpy(), p.numpy()
    show(
        axes[0],
        [(gn & ~pn, DATA), (pn & ~gn, TOKENS), (gn & pn, "#555555")],
        f"masks: IoU = {100 * iou(p, g):.1f}%\n(green: GT only, orange: prediction only)",
    )
    show(axes[1], [(bg, DATA)], f"GT boundary band (d = {d} px)")
    show(
        axes[2],
        [(bg & ~bp, DATA), (bp & ~bg, TOKENS), (bg & bp, "#555555")],
        f"bands: Boundary IoU = {100 * boundary_iou(p, g, dilation_ratio):.1f}%\n(grey: bands agree)",
    )
    return fig
