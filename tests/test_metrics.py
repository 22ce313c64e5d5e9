"""Metrics (IoU, Boundary IoU, TaskMatrix) and the point-sampled mask loss, checked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cosam.errors import DataError
from cosam.losses import (
    dice_points,
    mask_loss,
    point_sample,
    sigmoid_bce_points,
    uncertain_points,
)
from cosam.matrix import TaskMatrix, fmt_pct
from cosam.metrics import (
    boundary_dilation,
    boundary_iou,
    iou,
    mask_boundary,
    score_logits,
)


def _mask(h: int, w: int, rows: slice, cols: slice) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    m[rows, cols] = True
    return m


# ----------------------------------------------------------------------------- IoU


def test_iou_known_overlaps() -> None:
    gt = _mask(10, 10, slice(0, 4), slice(0, 5))  # 20 px
    assert iou(gt, gt) == 1.0
    assert iou(torch.zeros_like(gt), gt) == 0.0
    pred = _mask(10, 10, slice(2, 6), slice(0, 5))  # 20 px, 10 shared
    assert iou(pred, gt) == pytest.approx(10 / 30)
    pred_full = torch.ones(10, 10, dtype=torch.bool)
    assert iou(pred_full, gt) == pytest.approx(20 / 100)


def test_iou_rejects_bad_inputs() -> None:
    gt = _mask(8, 8, slice(0, 2), slice(0, 2))
    with pytest.raises(ValueError, match="empty"):
        iou(gt, torch.zeros_like(gt))
    with pytest.raises(ValueError, match="bool"):
        iou(gt.to(torch.uint8) * 255, gt)
    with pytest.raises(ValueError, match="shape"):
        iou(gt[:4], gt)
    with pytest.raises(ValueError, match="empty"):
        boundary_iou(gt, torch.zeros_like(gt))


# ----------------------------------------------------------------------------- Boundary IoU


def _slow_boundary(mask: np.ndarray, dilation_ratio: float) -> np.ndarray:
    """HQ-SAM's mask_to_boundary with cv2.erode replaced by explicit 3×3 shifts, iterated d times."""
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    m = np.pad(mask.astype(bool), 1, constant_values=False)
    for _ in range(d):
        # cv2.erode's default border is neutral (+inf), i.e. True for a binary erosion.
        p = np.pad(m, 1, constant_values=True)
        out = np.ones_like(m)
        for dy in range(3):
            for dx in range(3):
                out &= p[dy : dy + m.shape[0], dx : dx + m.shape[1]]
        m = out
    return mask.astype(bool) & ~m[1 : h + 1, 1 : w + 1]


def _slow_biou(pred: np.ndarray, gt: np.ndarray, dilation_ratio: float = 0.02) -> float:
    bg, bp = _slow_boundary(gt, dilation_ratio), _slow_boundary(pred, dilation_ratio)
    return (bg & bp).sum() / (bg | bp).sum()


@pytest.mark.parametrize(
    "h,w,ratio",
    [(1, 1, 0.02), (5, 7, 0.02), (23, 17, 0.02), (64, 48, 0.05), (90, 120, 0.1), (200, 150, 0.02)],
)
def test_fast_erosion_matches_iterated_reference(h: int, w: int, ratio: float) -> None:
    rng = np.random.default_rng(h * 1000 + w)
    for density in (0.3, 0.7, 0.95):
        # Blobby masks (smoothed noise) exercise the interior; raw noise exercises the edges.
        noise = rng.random((h, w))
        if min(h, w) > 4:
            noise = torch.nn.functional.avg_pool2d(
                torch.from_numpy(noise)[None, None], 5, stride=1, padding=2, count_include_pad=False
            )[0, 0].numpy()
        m = noise < np.quantile(noise, density)
        fast = mask_boundary(torch.from_numpy(m), ratio).numpy()
        np.testing.assert_array_equal(fast, _slow_boundary(m, ratio))
        gt = torch.from_numpy(m)
        pred = torch.from_numpy(rng.random((h, w)) < density) | gt.roll(1, 0)
        if gt.any():
            assert boundary_iou(pred, gt, ratio) == pytest.approx(
                _slow_biou(pred.numpy(), m, ratio), abs=1e-12
            )


def test_dilation_depth() -> None:
    assert boundary_dilation(200, 200) == 6  # round(0.02 · 282.84) = round(5.66)
    assert boundary_dilation(10, 10) == 1  # round(0.28) = 0 → clamped to 1
    assert boundary_dilation(1024, 1024) == 29


def test_biou_equals_iou_for_thin_masks() -> None:
    # 2-px-wide lines in 200×200: d = 6, so erosion removes everything and boundary = mask.
    gt = _mask(200, 200, slice(100, 102), slice(20, 180))
    pred = _mask(200, 200, slice(100, 102), slice(40, 190))
    assert torch.equal(mask_boundary(gt), gt)
    assert boundary_iou(pred, gt) == pytest.approx(iou(pred, gt))
    assert iou(pred, gt) == pytest.approx(140 / 170)


def test_biou_identical_and_bounded() -> None:
    gt = _mask(120, 80, slice(10, 90), slice(5, 60))
    assert boundary_iou(gt, gt) == 1.0
    pred = _mask(120, 80, slice(20, 100), slice(10, 70))
    b = boundary_iou(pred, gt)
    assert 0.0 <= b <= 1.0
    # Boundary IoU is stricter than IoU for a large shifted blob.
    assert b < iou(pred, gt)


def test_border_touching_masks_have_boundary() -> None:
    full = torch.ones(200, 200, dtype=torch.bool)
    # d = 6: the pixels within 6 of the image edge count as boundary, 200² − 188².
    assert int(mask_boundary(full).sum()) == 200**2 - 188**2
    assert boundary_iou(full, full) == 1.0
    left = _mask(200, 200, slice(None), slice(0, 100))
    # gt boundary: 200×100 − 188×88 = 3456; pred (full) boundary 4656; shared: top/bottom bands
    # over cols 0..99 (12·100) plus the left band over rows 6..193 (6·188) = 2328.
    assert int(mask_boundary(left).sum()) == 3456
    assert boundary_iou(full, left) == pytest.approx(2328 / (3456 + 4656 - 2328))
    assert iou(full, left) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- score_logits


def test_score_logits_upsamples_to_non_square_original_size() -> None:
    logits = torch.full((2, 1, 4, 4), -10.0)
    logits[0, 0, :, :2] = 10.0  # left half
    logits[1, 0, :2, :] = 10.0  # top half
    # Bilinear (align_corners=False) crosses 0 at input x = 1.5, i.e. output x = 2·12.5 − 0.5 = 24.5
    # for width 50, and at output y = 2·4.5 − 0.5 = 8.5 for height 18.
    gt0 = _mask(30, 50, slice(None), slice(0, 25))
    gt1 = _mask(18, 40, slice(0, 6), slice(None))
    scores = score_logits(logits, [gt0, gt1])
    assert scores[0] == (1.0, 1.0)
    pred1 = _mask(18, 40, slice(0, 9), slice(None))
    assert scores[1][0] == pytest.approx(6 / 9)
    assert scores[1][1] == pytest.approx(boundary_iou(pred1, gt1))
    with pytest.raises(ValueError, match="ground truths"):
        score_logits(logits, [gt0])


# ----------------------------------------------------------------------------- TaskMatrix

TASKS = ["A", "B", "C"]
# Rows: before, after A, after B, after C. Last column: the probe.
IOU = [
    [0.50, 0.40, 0.30, 0.60],
    [0.80, 0.45, 0.35, 0.55],
    [0.85, 0.80, 0.40, 0.50],
    [0.60, 0.85, 0.95, 0.45],
]


def _matrix(rows: list[list[float]] = IOU, labels: tuple = ("before", "A", "B", "C")) -> TaskMatrix:
    m = TaskMatrix(TASKS, probe="COCO")
    for label, r in zip(labels, rows):
        vals = dict(zip(TASKS + ["COCO"], r))
        m.add_row(label, vals, {k: v - 0.1 for k, v in vals.items()})
    return m


def test_task_matrix_summaries_by_hand() -> None:
    m = _matrix()
    assert m.n_rows == 4 and m.rows == ["before", "A", "B", "C"]
    assert m.columns == ["A", "B", "C", "COCO"]
    assert m.value("iou", 2, "A") == 0.85
    assert m.value("biou", 3, "COCO") == pytest.approx(0.35)
    s = m.summary("iou")
    expected = {
        "last": (0.60 + 0.85 + 0.95) / 3,  # 0.8
        "avg": (0.80 + (0.85 + 0.80) / 2 + (0.60 + 0.85 + 0.95) / 3) / 3,  # 0.80833
        # A: max(0.80, 0.85) − 0.60 = 0.25; B: 0.80 − 0.85 = −0.05.
        "ff": (0.25 - 0.05) / 2,  # 0.10
        # A: 0.60 − 0.80 = −0.20; B: 0.85 − 0.80 = 0.05.
        "bwt": (-0.20 + 0.05) / 2,  # −0.075
        "plasticity": (0.80 + 0.80 + 0.95) / 3,  # 0.85
        "zero_shot": (0.50 + 0.40 + 0.30) / 3,  # 0.40
        "probe_zero_shot": 0.60,
        "probe_last": 0.45,
        "probe_drop": 0.15,
    }
    assert s == pytest.approx(expected)
    assert s["avg"] == pytest.approx(0.808333, abs=1e-6)
    sb = m.summary("biou")  # every entry shifted by −0.1
    for k in ("last", "avg", "plasticity", "zero_shot", "probe_zero_shot", "probe_last"):
        assert sb[k] == pytest.approx(expected[k] - 0.1)
    for k in ("ff", "bwt", "probe_drop"):
        assert sb[k] == pytest.approx(expected[k])


def test_own_task_rise_diagonal_minus_row0_and_joint_row() -> None:
    m = _matrix()  # row 0: 0.50 0.40 0.30; diagonal 0.80 0.80 0.95
    assert m.own_task_rise("iou") == pytest.approx({"A": 0.30, "B": 0.40, "C": 0.65})
    assert m.own_task_rise("biou") == pytest.approx({"A": 0.30, "B": 0.40, "C": 0.65})
    joint = TaskMatrix(["A", "B"])
    joint.add_row("before", {"A": 0.5, "B": 0.4}, {"A": 0.5, "B": 0.4})
    joint.add_row("joint", {"A": 0.45, "B": 0.7}, {"A": 0.45, "B": 0.7})
    assert joint.own_task_rise("iou") == pytest.approx({"A": -0.05, "B": 0.30})
    zero = TaskMatrix(["A"])
    zero.add_row("before", {"A": 0.5}, {"A": 0.5})
    assert math.isnan(zero.own_task_rise("iou")["A"])


def test_task_matrix_reference_log_last_and_plasticity() -> None:
    # Reference §6.3 (HQ-SAM naive): rows after tasks 0..7, no zero-shot row logged.
    log = [
        [75.8, 76.6, 67.8, 49.0, 40.7, 33.1, 29.0, 16.6],
        [74.3, 75.4, 67.2, 46.7, 37.8, 26.3, 10.6, 5.7],
        [73.6, 76.5, 66.7, 51.9, 35.6, 17.8, 4.6, 4.5],
        [66.8, 66.8, 58.5, 71.8, 80.0, 75.3, 65.6, 67.2],
        [70.3, 67.5, 59.5, 69.2, 84.5, 74.5, 65.6, 76.7],
        [67.8, 72.6, 59.1, 67.7, 81.7, 80.6, 64.8, 74.1],
        [71.7, 76.5, 64.1, 67.0, 82.3, 72.8, 71.0, 72.7],
        [68.6, 77.8, 64.4, 64.6, 82.1, 69.2, 67.5, 78.7],
    ]
    tasks = [f"t{i}" for i in range(8)]
    m = TaskMatrix(tasks, probe=None)
    m.add_row("before", {}, {})
    for t, r in zip(tasks, log):
        m.add_row(t, {k: v / 100 for k, v in zip(tasks, r)}, {})
    s = m.summary("iou")
    assert s["last"] == pytest.approx(0.716125)
    assert s["plasticity"] == pytest.approx(0.755625)
    assert math.isnan(s["zero_shot"]) and math.isnan(s["probe_drop"])
    assert math.isnan(m.summary("biou")["last"])


def test_task_matrix_joint_and_zero_shot_rows() -> None:
    joint = _matrix(rows=[IOU[0], IOU[3]], labels=("before", "joint"))
    s = joint.summary("iou")
    assert s["last"] == pytest.approx(0.80)
    assert s["zero_shot"] == pytest.approx(0.40)
    assert s["probe_drop"] == pytest.approx(0.15)
    for k in ("avg", "ff", "bwt", "plasticity"):
        assert math.isnan(s[k])
    zs = _matrix(rows=[IOU[0]], labels=("before",)).summary("iou")
    assert zs["last"] == pytest.approx(zs["zero_shot"]) and zs["probe_drop"] == 0.0
    assert all(math.isnan(v) for v in TaskMatrix(TASKS, None).summary("iou").values())


def test_task_matrix_missing_columns_and_validation() -> None:
    m = TaskMatrix(TASKS, probe=None)
    m.add_row("before", {"A": 0.5}, {"A": 0.4})
    assert math.isnan(m.value("iou", 0, "B"))
    assert math.isnan(m.summary("iou")["probe_last"])
    with pytest.raises(ValueError, match="unknown columns"):
        m.add_row("A", {"D": 0.5}, {})
    with pytest.raises(ValueError, match="percent"):
        m.add_row("A", {"A": 75.0}, {})
    with pytest.raises(ValueError, match="probe"):
        TaskMatrix(TASKS, probe="A")
    full = _matrix()
    with pytest.raises(ValueError, match="rows"):
        full.add_row("extra", {}, {})


def test_task_matrix_json_round_trip_and_long_rows() -> None:
    m = TaskMatrix(TASKS, probe="COCO")
    m.add_row(
        "before", {"A": 0.5, "COCO": 0.6}, {"A": 0.4}, per_image={"A": [(0.5, 0.4), (0.5, 0.4)]}
    )
    m.add_row("A", {"A": 0.8, "B": 0.1, "C": 0.2, "COCO": 0.5}, {"A": 0.7})
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert d["iou"][0] == [0.5, None, None, 0.6]
    back = TaskMatrix.from_dict(d)
    assert back.rows == m.rows and back.columns == m.columns and back.probe == "COCO"
    for metric in ("iou", "biou"):
        np.testing.assert_array_equal(back.array(metric), m.array(metric))
    assert back.per_image(0) == {"A": [(0.5, 0.4), (0.5, 0.4)]} and back.per_image(1) is None
    long = m.to_long_rows()
    assert len(long) == 2 * 4
    assert long[1] == {"row": 0, "row_label": "before", "column": "B", "iou": None, "biou": None}
    assert long[4]["iou"] == 0.8 and long[4]["row_label"] == "A"
    with pytest.raises(DataError, match="lacks keys"):
        TaskMatrix.from_dict({"tasks": TASKS})


def test_fmt_pct() -> None:
    assert fmt_pct(0.71613) == "71.6"
    assert fmt_pct(1.0) == "100.0"
    assert fmt_pct(float("nan")) == "–" and fmt_pct(None) == "–"
    # a forgetting of -0.0002 (L2P's FF) rounds to zero and must not print as "-0.0"
    assert fmt_pct(-0.0002) == "0.0" and fmt_pct(-0.0) == "0.0"
    assert fmt_pct(-0.0006) == "-0.1"


# ----------------------------------------------------------------------------- loss


def test_point_sample_reads_pixel_centres() -> None:
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    ys, xs = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    coords = torch.stack([(xs.flatten() + 0.5) / 4, (ys.flatten() + 0.5) / 3], dim=-1)[None]
    torch.testing.assert_close(point_sample(x, coords), x.flatten(2))


def test_uncertain_points_prefer_small_logits() -> None:
    logits = torch.full((2, 1, 32, 32), 10.0)
    logits[:, :, :, 10:22] = 0.0  # 0 exactly between pixel centres 10.5/32 and 21.5/32
    g = torch.Generator().manual_seed(0)
    coords = uncertain_points(logits, 400, generator=g)
    assert coords.shape == (2, 400, 2) and coords.min() >= 0 and coords.max() <= 1
    # 1200 candidates, 34% of them on the zero plateau: all 300 uncertain picks land there.
    x_uncertain = coords[:, :300, 0]
    assert ((x_uncertain >= 10.5 / 32) & (x_uncertain <= 21.5 / 32)).all()
    # The 100 uniform extras are spread over the image.
    assert coords[:, 300:, 0].min() < 0.2 and coords[:, 300:, 0].max() > 0.8


def test_loss_small_for_confident_correct_and_large_for_wrong() -> None:
    # An empty mask with confident background logits has no uncertain region: loss ≈ 0.
    # (A full mask would not: grid_sample's zero padding, as in HQ-SAM, halves logits and
    # targets within half a pixel of the image edge.)
    empty_t = torch.zeros(2, 1, 128, 128)
    empty_l = torch.full((2, 1, 32, 32), -20.0)
    zero = mask_loss(empty_l, empty_t, num_points=1024, generator=torch.Generator().manual_seed(0))
    assert zero["loss"].item() < 0.01  # edge points read logits ≥ −20/4 through the zero padding
    assert set(zero) == {"bce", "dice", "loss"}
    target = torch.zeros(3, 1, 128, 128)
    target[0, :, 10:118, 10:118] = 1.0
    target[2, :, 32:96, 32:96] = 1.0
    logits = torch.nn.functional.interpolate(target, size=(32, 32), mode="nearest") * 40 - 20
    good = mask_loss(logits, target, num_points=1024, generator=torch.Generator().manual_seed(0))
    bad = mask_loss(-logits, target, num_points=1024, generator=torch.Generator().manual_seed(0))
    assert 10 * good["loss"].item() < bad["loss"].item()
    assert bad["dice"].item() > 0.9  # every mask inverted: Dice near 1 each, mean over 3 masks
    torch.testing.assert_close(good["loss"], good["bce"] + good["dice"])


def test_loss_deterministic_with_generator_and_has_gradient() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    target = (torch.rand(2, 1, 64, 64) > 0.5).float()
    a = mask_loss(logits, target, num_points=256, generator=torch.Generator().manual_seed(7))
    b = mask_loss(logits, target, num_points=256, generator=torch.Generator().manual_seed(7))
    c = mask_loss(logits, target, num_points=256, generator=torch.Generator().manual_seed(8))
    assert a["loss"].item() == b["loss"].item()
    assert a["loss"].item() != c["loss"].item()
    a["loss"].backward()
    assert (
        logits.grad is not None
        and torch.isfinite(logits.grad).all()
        and logits.grad.abs().sum() > 0
    )


def test_loss_soft_targets_and_point_losses() -> None:
    p = 0.3
    logits = torch.full((2, 1, 8, 8), math.log(p / (1 - p)), requires_grad=True)
    target = torch.full((2, 1, 24, 24), p)
    out = mask_loss(logits, target, num_points=100, generator=torch.Generator().manual_seed(0))
    # Soft targets go through unthresholded: the loss equals the hand-computed one at the same points.
    coords = uncertain_points(logits, 100, generator=torch.Generator().manual_seed(0))
    lp, tp = point_sample(logits, coords)[:, 0], point_sample(target, coords)[:, 0]
    torch.testing.assert_close(out["bce"], sigmoid_bce_points(lp, tp, 2))
    torch.testing.assert_close(out["dice"], dice_points(lp, tp, 2))
    # Away from the zero-padded edge, BCE at logit(p) is the target's entropy (its minimum).
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert out["bce"].item() == pytest.approx(entropy, abs=0.02)
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all()
    # Point losses by hand: one mask, two points.
    lp = torch.tensor([[0.0, 0.0]])
    tp = torch.tensor([[1.0, 0.0]])
    assert sigmoid_bce_points(lp, tp, 1).item() == pytest.approx(math.log(2))
    assert dice_points(lp, tp, 1).item() == pytest.approx(1 - (2 * 0.5 + 1) / (1.0 + 1.0 + 1))
    with pytest.raises(ValueError, match="float"):
        mask_loss(logits, (target * 255).to(torch.uint8))


def test_markdown_table_formats_pct_floats_and_missing() -> None:
    from cosam.report import markdown_table

    text = markdown_table(
        [{"method": "l2p", "FF": -0.0002, "time_s": -0.01, "note": None}], pct=["FF"]
    )
    lines = text.strip().splitlines()
    assert lines[0] == "| method | FF | time_s | note |"
    assert lines[2] == "| l2p | 0.0 | 0.0 | – |"
    assert markdown_table([]) == "(no rows)\n"
