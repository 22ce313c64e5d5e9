"""The paper's published Table 2, as data, to print beside our numbers (never to mix with them).

Source: Yang et al., "Continual Learning for Segment Anything Model Adaptation", arXiv 2412.06418,
Table 2 (figures/main-results-table.png of yangjl1215/CoSAM), transcribed in the project's reference
(../shared/reference/cosam-reference.md §7.1). The "natural" column (COCO IoU after the last task)
is from the older Table 1 of the same repository (figures/comparison.png, protocol §7.2).

Their setting differs from ours: SAM ViT-B at 1024 px with a pretrained HQ decoder, the original
CoSAM data (RSDDs, MVTec AD, CAMO, Kvasir-SEG, COCO), 24 epochs per task, five seeds. Values are
percentages; ``None`` means "not reported" (the table prints "–").
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

CITATION = (
    "Yang, Wu, Cen, Huang, Wang, Zhang. Continual Learning for Segment Anything Model Adaptation. "
    "arXiv 2412.06418 (2024), Table 2; natural-image column from the repository's older Table 1."
)
SETTING = (
    "SAM ViT-B, 1024 px, original CoSAM data (RSDDs, MVTec AD, CAMO, Kvasir-SEG; COCO probe), "
    "24 epochs/task, 5 seeds"
)

#: Column keys in Table 2's order, matching :func:`cosam.report.summary_rows`' keys.
COLUMNS: Tuple[str, ...] = ("last_iou", "avg_iou", "ff_iou", "last_biou", "avg_biou", "ff_biou")

Value = Optional[Tuple[float, Optional[float]]]  # (mean, std) in percent; std None when single-run

# paper row label -> column -> (mean, std)
TABLE2: Dict[str, Dict[str, Value]] = {
    "Joint Training (Upper Bound)": {"last_iou": (76.3, 0.31), "last_biou": (66.9, 0.26)},
    "SAM": {"last_iou": (69.0, None), "last_biou": (58.9, None)},
    "LwF": {
        "last_iou": (73.3, 0.72),
        "avg_iou": (72.0, 0.68),
        "ff_iou": (2.0, 0.39),
        "last_biou": (63.7, 0.78),
        "avg_biou": (69.1, 0.69),
        "ff_biou": (2.3, 0.31),
    },
    "EWC": {
        "last_iou": (72.9, 1.25),
        "avg_iou": (72.3, 0.97),
        "ff_iou": (3.5, 0.56),
        "last_biou": (63.2, 1.01),
        "avg_biou": (68.9, 0.82),
        "ff_biou": (3.9, 0.48),
    },
    "ER": {
        "last_iou": (73.0, 0.93),
        "avg_iou": (73.2, 0.71),
        "ff_iou": (2.9, 0.39),
        "last_biou": (62.7, 0.89),
        "avg_biou": (69.8, 0.63),
        "ff_biou": (3.4, 0.30),
    },
    "L2P": {
        "last_iou": (63.1, 1.15),
        "avg_iou": (56.5, 1.49),
        "ff_iou": (2.0, 0.43),
        "last_biou": (52.5, 1.24),
        "avg_biou": (53.2, 1.31),
        "ff_biou": (3.3, 0.56),
    },
    "Dual-Prompt": {
        "last_iou": (64.9, 1.43),
        "avg_iou": (64.5, 1.63),
        "ff_iou": (2.7, 0.40),
        "last_biou": (55.0, 1.71),
        "avg_biou": (61.1, 1.56),
        "ff_biou": (2.6, 0.39),
    },
    "Coda-Prompt": {
        "last_iou": (65.9, 1.45),
        "avg_iou": (63.8, 1.62),
        "ff_iou": (2.8, 0.37),
        "last_biou": (55.3, 1.28),
        "avg_biou": (60.3, 1.43),
        "ff_biou": (2.1, 0.35),
    },
    "Decoder-Tuning": {
        "last_iou": (27.3, 1.69),
        "avg_iou": (46.9, 1.37),
        "ff_iou": (45.0, 1.82),
        "last_biou": (19.4, 1.57),
        "avg_biou": (43.3, 1.48),
        "ff_biou": (43.7, 1.66),
    },
    "Decoder-Tuning + MoDA": {
        "last_iou": (55.8, 0.58),
        "avg_iou": (51.2, 0.52),
        "ff_iou": (0.33, 0.12),
        "last_biou": (44.8, 0.49),
        "avg_biou": (47.4, 0.43),
        "ff_biou": (0.27, 0.09),
    },
    "SAM-Adapter": {
        "last_iou": (67.4, 0.75),
        "avg_iou": (69.3, 0.63),
        "ff_iou": (8.2, 0.59),
        "last_biou": (56.9, 0.81),
        "avg_biou": (65.8, 0.74),
        "ff_biou": (9.1, 0.65),
    },
    "SAM-Adapter + MoDA": {
        "last_iou": (74.3, 0.37),
        "avg_iou": (73.4, 0.45),
        "ff_iou": (0.36, 0.1),
        "last_biou": (64.3, 0.41),
        "avg_biou": (69.9, 0.38),
        "ff_biou": (0.27, 0.11),
    },
    "HQ-SAM": {
        "last_iou": (68.7, 0.59),
        "avg_iou": (70.9, 0.37),
        "ff_iou": (4.9, 0.44),
        "last_biou": (58.6, 0.23),
        "avg_biou": (67.9, 0.35),
        "ff_biou": (9.3, 0.40),
    },
    "HQ-SAM + MoDA": {
        "last_iou": (75.2, 0.42),
        "avg_iou": (74.9, 0.61),
        "ff_iou": (0.28, 0.09),
        "last_biou": (65.3, 0.37),
        "avg_biou": (71.6, 0.50),
        "ff_biou": (0.14, 0.07),
    },
}

#: COCO IoU after the last task ("Natural", old Table 1); SAM's value is its zero-shot score.
NATURAL: Dict[str, Tuple[float, Optional[float]]] = {
    "Joint Training (Upper Bound)": (76.9, 0.51),
    "SAM": (78.1, None),
    "HQ-SAM": (72.7, 0.68),
    "LwF": (72.5, 0.74),
    "EWC": (72.4, 0.53),
    "ER": (75.9, 0.72),
    "L2P": (67.8, 1.27),
    "Dual-Prompt": (66.5, 1.54),
    "Coda-Prompt": (69.9, 1.77),
    "HQ-SAM + MoDA": (77.6, 0.83),
}

#: cosam method name -> the paper's row label.
PAPER_NAME: Dict[str, str] = {
    "joint": "Joint Training (Upper Bound)",
    "zeroshot": "SAM",
    "lwf": "LwF",
    "ewc": "EWC",
    "replay": "ER",
    "l2p": "L2P",
    "dualprompt": "Dual-Prompt",
    "coda": "Coda-Prompt",
    "decoder_tuning": "Decoder-Tuning",
    "sam_adapter": "SAM-Adapter",
    "sequential": "HQ-SAM",
    "sequential_moda": "HQ-SAM + MoDA",
    "decoder_tuning_moda": "Decoder-Tuning + MoDA",
    "sam_adapter_moda": "SAM-Adapter + MoDA",
}


HEADERS: Dict[str, str] = {
    "last_iou": "Last-IoU↑",
    "avg_iou": "Avg-IoU↑",
    "ff_iou": "FF-IoU↓",
    "last_biou": "Last-BIoU↑",
    "avg_biou": "Avg-BIoU↑",
    "ff_biou": "FF-BIoU↓",
}


def fmt(value: Value) -> str:
    """ "mean±std" as printed in the paper (one decimal, two below 1), "–" when not reported."""
    if value is None:
        return "–"
    mean, std = value
    text = f"{mean:.1f}" if round(mean, 1) == mean else f"{mean:.2f}"
    return text if std is None else f"{text}±{std:.2f}"


def published_rows(methods: Optional[List[str]] = None) -> List[Dict[str, str]]:
    """Table 2 rows as strings, for :func:`cosam.report.markdown_table`.

    Arguments:
      methods: cosam method names to keep, in this order (those without a paper row are skipped);
        None keeps every paper row in the paper's order.

    Returns:
      One dict per row: method (cosam name or "–"), paper (row label), the six Table 2 columns
      (headed as :data:`HEADERS`) and natural (COCO IoU after the last task, old Table 1).
    """
    inverse = {v: k for k, v in PAPER_NAME.items()}
    labels = (
        list(TABLE2) if methods is None else [PAPER_NAME[m] for m in methods if m in PAPER_NAME]
    )
    rows = []
    for label in labels:
        row = {"method": inverse.get(label, "–"), "paper": label}
        row.update({HEADERS[c]: fmt(TABLE2[label].get(c)) for c in COLUMNS})
        row["natural"] = fmt(NATURAL.get(label))
        rows.append(row)
    return rows
