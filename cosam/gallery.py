"""Figures of images: samples with their masks, prompts, and models' masks side by side.

Images are HxWx3 uint8 arrays or (3,H,W) 0..255 tensors, masks HxW (bool or 0..1). The ground
truth is tinted red, a model's mask blue. Photo-heavy figures are shown as JPEG in a notebook
(:func:`show_jpeg`).
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence, Tuple

import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from .data.prompts import Prompt

MASK_COLOUR = (1.0, 0.15, 0.15)
PRED_COLOUR = (0.1, 0.6, 1.0)


def show_jpeg(fig: Figure, quality: int = 80) -> None:
    """Display a photo-heavy figure as JPEG in a notebook and close it.

    PNG of photographs is 5-10x larger.

    Arguments:
      fig (Figure): the figure.
      quality (int): JPEG quality (1-95).
    """
    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", pil_kwargs={"quality": quality})
    plt.close(fig)
    display(Image(buf.getvalue(), format="jpeg"))


def to_rgb(image: Any) -> np.ndarray:
    """An image as RGB floats in [0, 1].

    Arguments:
      image (array or Tensor): HxWx3 uint8, or a (3,H,W) 0..255 tensor.

    Returns:
      (np.ndarray): HxWx3 float32 in [0, 1].
    """
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] == 3:
            image = image.transpose(1, 2, 0)
    return np.clip(np.asarray(image, dtype=np.float32) / 255.0, 0.0, 1.0)


def overlay(
    image: Any, mask: Any, colour: Tuple[float, float, float] = MASK_COLOUR, alpha: float = 0.45
) -> np.ndarray:
    """The image with ``mask`` tinted.

    Arguments:
      image (array or Tensor): as :func:`to_rgb` takes it.
      mask (array or Tensor): HxW, bool or 0..1 (or 0..255); resized to the image by nearest
        neighbour.
      colour (Tuple[float, float, float]): the tint, RGB in [0, 1].
      alpha (float): the tint's weight inside the mask.

    Returns:
      (np.ndarray): HxWx3 float in [0, 1].
    """
    rgb = to_rgb(image)
    m = np.asarray(
        mask.detach().cpu().numpy() if isinstance(mask, Tensor) else mask, dtype=np.float32
    )
    m = np.squeeze(m)
    if m.max() > 1.0:
        m = m / 255.0
    if m.shape != rgb.shape[:2]:
        ys = (np.arange(rgb.shape[0]) * m.shape[0] // rgb.shape[0]).clip(0, m.shape[0] - 1)
        xs = (np.arange(rgb.shape[1]) * m.shape[1] // rgb.shape[1]).clip(0, m.shape[1] - 1)
        m = m[ys][:, xs]
    m = (m > 0.5)[..., None]
    return np.where(m, (1 - alpha) * rgb + alpha * np.asarray(colour, dtype=np.float32), rgb)


def sample_grid(
    rows: Sequence[Tuple[str, Sequence[Tuple[np.ndarray, np.ndarray]]]],
    suptitle: str = "",
    size: float = 1.6,
) -> Figure:
    """A grid of images with their masks overlaid (red, yellow outline, foreground % on top).

    Arguments:
      rows (Sequence): one row per (label, [(image, mask), ...]).
      suptitle (str): the figure's title.
      size (float): inches per panel.

    Returns:
      (Figure): the figure.
    """
    ncols = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(
        len(rows),
        ncols,
        figsize=(size * ncols + 0.8, size * len(rows)),
        squeeze=False,
        layout="constrained",
    )
    for i, (label, pairs) in enumerate(rows):
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(pairs):
                image, mask = pairs[j]
                ax.imshow(overlay(image, mask))
                # The outline keeps tiny defects and red-on-red masks (polyps) visible in thumbnails.
                ax.contour(
                    np.asarray(mask, dtype=float), levels=[0.5], colors="yellow", linewidths=0.6
                )
                ax.set_title(f"fg {100.0 * float(np.mean(mask)):.1f}%", fontsize=8, pad=1)
            else:
                ax.axis("off")
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def illustrative_sample(
    tasks: Sequence[Any], low: float = 0.05, high: float = 0.5, max_box: float = 0.6, limit: int = 8
) -> Tuple[Any, np.ndarray, np.ndarray]:
    """A training pair with a mid-sized foreground, for drawing prompts.

    Arguments:
      tasks (Sequence): the benchmark's tasks, searched in task order.
      low (float): the foreground covers at least this share of the image...
      high (float): ...and at most this share...
      max_box (float): ...and its box at most this share of it.
      limit (int): training pairs looked at per task.

    Returns:
      (Tuple[Any, np.ndarray, np.ndarray]): (sample, image, mask) of the first such pair; else
        of the first pair.
    """
    from .data.reader import load_pair

    for task in tasks:
        for sample in list(task.train)[:limit]:
            image, mask = load_pair(sample)
            ys, xs = np.nonzero(mask)
            box = (np.ptp(ys) + 1) * (np.ptp(xs) + 1) / mask.size if len(ys) else 1.0
            if low <= float(mask.mean()) <= high and box <= max_box:
                return sample, image, mask
    sample = tasks[0].train[0]
    return (sample, *load_pair(sample))


def draw_prompts(image: Any, label: Any, prompts: Sequence[Prompt], suptitle: str = "") -> Figure:
    """One panel per prompt on the same (model-size) image: box rectangle, points, noisy mask.

    Arguments:
      image (array or Tensor): the image, as :func:`to_rgb` takes it.
      label (array or Tensor): its ground-truth mask (first panel).
      prompts (Sequence[Prompt]): the prompts, one panel each.
      suptitle (str): the figure's title.

    Returns:
      (Figure): the figure.
    """
    fig, axes = plt.subplots(
        1,
        len(prompts) + 1,
        figsize=(2.4 * (len(prompts) + 1), 2.6),
        squeeze=False,
        layout="constrained",
    )
    axes[0, 0].imshow(overlay(image, label))
    axes[0, 0].set_title("image + ground truth")
    for ax, p in zip(axes[0, 1:], prompts):
        if p.kind == "mask" and p.mask is not None:
            ax.imshow(overlay(image, p.mask, PRED_COLOUR))
            ax.set_title(f"noisy mask ({p.mask.shape[-1]}² px)")
        else:
            ax.imshow(to_rgb(image))
        if p.kind == "box" and p.box is not None:
            x0, y0, x1, y1 = [float(v) for v in p.box]
            ax.add_patch(
                matplotlib.patches.Rectangle(
                    (x0, y0), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1.5
                )
            )
            ax.set_title("box (tight, GT)")
        if p.kind == "points" and p.points is not None:
            pts = p.points.numpy()
            ax.scatter(pts[:, 0], pts[:, 1], s=14, c="lime", edgecolors="black", linewidths=0.5)
            ax.set_title(f"{len(pts)} positive points")
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def example_grid(
    images: Sequence[np.ndarray],
    gts: Sequence[Any],
    preds: Mapping[str, Sequence[Tuple[Any, float]]],
    labels: Sequence[str] = (),
    suptitle: str = "",
    size: float = 2.0,
) -> Figure:
    """Ground truth and each model's mask, one row per image.

    Arguments:
      images (Sequence[np.ndarray]): the images, one row each.
      gts (Sequence): their ground-truth masks (first column, red).
      preds (Mapping[str, Sequence[Tuple[Any, float]]]): model -> (mask, IoU) per image; one
        column per model (blue, the ground truth's outline in red, the IoU in the title).
      labels (Sequence[str]): titles of the first column (default "ground truth").
      suptitle (str): the figure's title.
      size (float): inches per panel.

    Returns:
      (Figure): the figure.
    """
    names = list(preds)
    fig, axes = plt.subplots(
        len(images),
        1 + len(names),
        figsize=(size * (1 + len(names)), size * len(images)),
        squeeze=False,
        layout="constrained",
    )
    for i, (img, gt) in enumerate(zip(images, gts)):
        axes[i, 0].imshow(overlay(img, gt))
        axes[i, 0].set_title(labels[i] if i < len(labels) else "ground truth")
        for j, name in enumerate(names):
            mask, score = preds[name][i]
            axes[i, j + 1].imshow(overlay(img, mask, PRED_COLOUR))
            axes[i, j + 1].contour(
                np.asarray(gt, dtype=float), levels=[0.5], colors="red", linewidths=0.8
            )
            axes[i, j + 1].set_title(f"{name}: IoU {100.0 * score:.1f}")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if suptitle:
        fig.suptitle(suptitle)
    return fig
