"""Figures and tables of the reports, drawn from loaded run folders (never recomputed results).

Every function takes what :mod:`cosam.report` loads (``RunRecord``, ``TaskMatrix``) or plain arrays,
draws on a given matplotlib ``Axes`` (or makes a figure) and returns it; tables are lists of
dicts for :func:`cosam.report.markdown_table`. Scores are fractions in the data and percent on
screen. A title gets " (SYNTHETIC data)" from :func:`title` when the runs used generated data.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib
import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from .data.benchmark import Benchmark
from .data.domains import LAYOUTS
from .data.prompts import Prompt
from .matrix import TaskMatrix, fmt1
from .published import COLUMNS, HEADERS
from .report import RunRecord, summary_rows

#: Table 2's columns, in its order (keys of :func:`cosam.report.summary_rows`), and their headers.
TABLE2_COLUMNS: Tuple[str, ...] = COLUMNS
TABLE2_HEADERS: Dict[str, str] = HEADERS
MASK_COLOUR = (1.0, 0.15, 0.15)
PRED_COLOUR = (0.1, 0.6, 1.0)

Stat = Tuple[float, float, int]  # mean, sample std (NaN for one seed), number of seeds


#: One colour per domain slot, the same in every figure, from seaborn's colour-blind-safe palette;
#: the two look-alike slots MVTec_I and MVTec_III get far-apart colours (sky blue and yellow).
_CB = (
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
DOMAIN_COLOURS: Dict[str, str] = {
    "BSData": _CB[0],
    "RSDD_I": _CB[1],
    "RSDD_II": _CB[2],
    "MVTec_I": _CB[9],
    "MVTec_II": _CB[4],
    "MVTec_III": _CB[8],
    "CAMO": _CB[3],
    "Polyp": _CB[6],
    "COCO": _CB[7],
}


def domain_colour(name: str, index: int = 0) -> str:
    """The colour of domain ``name`` (:data:`DOMAIN_COLOURS`); an unknown name (a custom layout)
    gets the palette's ``index``-th colour."""
    return DOMAIN_COLOURS.get(name, _CB[index % len(_CB)])


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


def show_jpeg(fig: Figure, quality: int = 80) -> None:
    """Display a photo-heavy figure as JPEG in a notebook (PNG of photographs is 5-10x larger) and close it."""
    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", pil_kwargs={"quality": quality})
    plt.close(fig)
    display(Image(buf.getvalue(), format="jpeg"))


def title(text: str, synthetic: bool) -> str:
    """``text``, marked SYNTHETIC when the data were generated."""
    return f"{text} (SYNTHETIC data)" if synthetic else text


def _pct(x: float) -> float:
    return 100.0 * x


# ----------------------------------------------------------------------------------------------
# Images and prompts
# ----------------------------------------------------------------------------------------------


def to_rgb(image: Any) -> np.ndarray:
    """HxWx3 uint8 / (3,H,W) 0..255 tensor -> HxWx3 float in [0, 1]."""
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] == 3:
            image = image.transpose(1, 2, 0)
    return np.clip(np.asarray(image, dtype=np.float32) / 255.0, 0.0, 1.0)


def overlay(
    image: Any, mask: Any, colour: Tuple[float, float, float] = MASK_COLOUR, alpha: float = 0.45
) -> np.ndarray:
    """The image with ``mask`` (HxW, bool or 0..1; resized to the image by nearest neighbour) tinted."""
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
    """A grid of images with their masks overlaid (red, yellow outline, foreground % on top): one row
    per (label, [(image, mask), ...])."""
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
    """The first training pair (in task order, ``limit`` per task) whose foreground covers between
    ``low`` and ``high`` of the image and whose box at most ``max_box`` of it, for drawing prompts;
    else the first pair. Returns (sample, image, mask)."""
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
    """One panel per prompt on the same (model-size) image: box rectangle, points, noisy mask."""
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
    """Rows = images; columns = ground truth (red), then each model's mask (blue, with the ground
    truth's outline in red) and its IoU in the title."""
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
            axes[i, j + 1].set_title(f"{name}: IoU {_pct(score):.1f}")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if suptitle:
        fig.suptitle(suptitle)
    return fig


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
    """Heat map of the task matrix in percent: rows = evaluation points, columns = tasks + probe,
    with a colour bar; the probe column is set off by a white line."""
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
    """Score of each task (and the probe, dashed) after every step; a dot marks the step that trains it."""
    ax = ax or plt.subplots(figsize=(5, 3))[1]
    arr = 100.0 * m.array(metric)
    x = np.arange(m.n_rows)
    for j, task in enumerate(m.tasks):
        ax.plot(x, arr[:, j], color=domain_colour(task, j), lw=1.5, label=task)
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


def seed_stats(
    runs: Mapping[str, Sequence[RunRecord]],
    keys: Sequence[str] = TABLE2_COLUMNS + ("probe_zero_shot", "probe_last", "train_s"),
) -> Dict[str, Dict[str, Stat]]:
    """Per method and key of :func:`summary_rows`: (mean, sample std, n seeds); NaN when undefined."""
    out: Dict[str, Dict[str, Stat]] = {}
    for method, recs in runs.items():
        rows = summary_rows(recs)
        out[method] = {}
        for k in keys:
            vals = np.array(
                [np.nan if r.get(k) is None else float(r[k]) for r in rows], dtype=float
            )
            mean = float(np.mean(vals)) if len(vals) else math.nan
            std = float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan
            out[method][k] = (mean, std, len(vals))
    return out


def fmt_stat(s: Stat, scale: float = 100.0) -> str:
    """ "mean ± std" (std only for several seeds), "–" when undefined."""
    mean, std, _ = s
    if not math.isfinite(mean):
        return "–"
    return fmt1(scale * mean) + (f" ± {scale * std:.1f}" if math.isfinite(std) else "")


def table2_rows(
    stats: Mapping[str, Mapping[str, Stat]], columns: Sequence[str] = TABLE2_COLUMNS
) -> List[Dict[str, str]]:
    """Table-2 layout: one row per method, Last/Avg/FF for IoU and BIoU as "mean ± std" percent."""
    rows = []
    for method, s in stats.items():
        row = {"method": method, "seeds": str(next(iter(s.values()))[2]) if s else "0"}
        row.update({TABLE2_HEADERS.get(c, c): fmt_stat(s[c]) for c in columns})
        rows.append(row)
    return rows


def summary_csv_rows(stats: Mapping[str, Mapping[str, Stat]]) -> List[Dict[str, Any]]:
    """Numeric form of :func:`seed_stats` for a CSV: method, n_seeds, <key>_mean, <key>_std (fractions)."""
    rows = []
    for method, s in stats.items():
        row: Dict[str, Any] = {"method": method, "n_seeds": next(iter(s.values()))[2] if s else 0}
        for k, (mean, std, _) in s.items():
            row[f"{k}_mean"], row[f"{k}_std"] = mean, std
        rows.append(row)
    return rows


def summary_bars(
    stats: Mapping[str, Mapping[str, Stat]],
    keys: Sequence[str] = ("last_iou", "avg_iou", "ff_iou"),
    ax: Optional[Axes] = None,
    name: str = "",
) -> Axes:
    """Grouped bars of the Table 2 columns per method (error bars = std over seeds)."""
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
            label=TABLE2_HEADERS.get(key, key),
        )
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never over a bar
    ax.set_title(name)
    return ax


# ----------------------------------------------------------------------------------------------
# Probe (zero-shot retention)
# ----------------------------------------------------------------------------------------------


def probe_series(rec: RunRecord, metric: str = "iou") -> Tuple[List[int], List[float]]:
    """(steps, probe score) of one run; a run that is not a full sequence (joint) maps its last
    row to the last step. Empty when the run has no probe."""
    m = rec.matrix
    if m.probe is None:
        return [], []
    vals = list(m.array(metric)[:, len(m.tasks)])
    steps = list(range(m.n_rows)) if m.is_full_sequence else [0] + [len(m.tasks)] * (m.n_rows > 1)
    return steps, vals[: len(steps)]


def probe_rows(runs: Mapping[str, RunRecord], metric: str = "iou") -> List[Dict[str, Any]]:
    """Probe score (fraction) after every step per method; columns "0 before", "1 <task>", ...,
    then drop = before − after the last step."""
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


def probe_curves(
    runs: Mapping[str, RunRecord],
    zero_shot: float,
    metric: str = "iou",
    ax: Optional[Axes] = None,
    name: str = "",
) -> Axes:
    """Probe score after every step per method; SAM zero-shot as a dashed horizontal line."""
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
# The benchmark tour
# ----------------------------------------------------------------------------------------------


def domain_rows(full: Benchmark, used: Benchmark) -> List[Dict[str, Any]]:
    """Per domain in training order, then the probe: counts on disk, counts a profile uses, source."""
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
    Empty when the folder has no manifest (e.g. generated data)."""
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
    """The markdown under ``heading`` (e.g. "### Notes on the substitutes") up to the next heading
    of the same or a higher level; "" when the file or heading is absent."""
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


# ----------------------------------------------------------------------------------------------
# Sweeps: order sensitivity
# ----------------------------------------------------------------------------------------------


def png_bytes(fig: Figure) -> bytes:
    """``fig`` as PNG bytes (for an atomic write), then closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def order_sensitivity(
    summary: Sequence[Mapping[str, Any]],
    per_seed: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    orders: Sequence[str],
    keys: Sequence[str] = ("last_iou", "ff_iou"),
    synthetic: bool = False,
) -> Figure:
    """One panel per metric (Last-IoU and FF-IoU by default): per method, one bar per task order
    at the mean over seeds (percent), error bars = the std over seeds (sample std, none for one
    seed), dots = the individual seeds.

    Arguments:
      summary: rows of :func:`cosam.sweep.summary_stats` (order, method, n_seeds, <key>_mean, <key>_std).
      per_seed: rows of :func:`cosam.sweep.per_seed_rows` (order, method, seed, <key>).
    """
    fig, axes = plt.subplots(
        1,
        len(keys),
        figsize=(max(4.0, 1.2 + 0.9 * len(methods)) * len(keys) / 1.4, 3.2),
        squeeze=False,
        layout="constrained",
    )
    width = 0.8 / max(len(orders), 1)
    colours = _CB
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
        ax.set_title(TABLE2_HEADERS.get(key, key))
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


# ----------------------------------------------------------------------------------------------
# MoDA
# ----------------------------------------------------------------------------------------------


def confusion_heatmap(final: Mapping[str, Any], ax: Optional[Axes] = None, name: str = "") -> Axes:
    """Router confusion after the last task: rows = true domain (and the probe), columns = the
    adapter chosen, cells = share of the row's images (%)."""
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
    """Grouped bars per ablation variant (rows need ``variant`` and the keys, as fractions)."""
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
        ax.barh(y, vals, color=[_CB[int(r.get("group", 0)) % len(_CB)] for r in rows])
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
