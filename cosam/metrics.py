"""Segmentation and continual-learning metrics.

Per image: IoU and Boundary IoU exactly as the CoSAM / HQ-SAM evaluation code computes them
(protocol §6.1). Per run: a :class:`TaskMatrix` holding a[t][j], the dataset score on column j
after training step t, with a "before training" row 0 and an optional natural-image probe column,
and the standard continual-learning summaries over it (protocol §6.2).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

METRICS = ("iou", "biou")


# --------------------------------------------------------------------------------------------
# Per-image metrics
# --------------------------------------------------------------------------------------------


def _check_pair(pred: Tensor, gt: Tensor) -> None:
    if pred.dtype != torch.bool or gt.dtype != torch.bool:
        # A 0-255 mask silently cast to bool would threshold at >0 instead of the reference's >128.
        raise ValueError(
            f"pred and gt must be bool tensors, got {pred.dtype} and {gt.dtype}; "
            "threshold them first (pred = logits > 0, gt = label > 128)"
        )
    if pred.dim() != 2 or pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt must be 2-D masks of the same shape (H, W), got {tuple(pred.shape)} "
            f"and {tuple(gt.shape)}"
        )
    if not bool(gt.any()):
        # The reference gives 0/0 = NaN here; an empty GT is a data problem, not a score.
        raise ValueError(
            "gt is empty: IoU and Boundary IoU are undefined for an empty ground truth"
        )


def iou(pred: Tensor, gt: Tensor) -> float:
    """
    Intersection over union of two binary masks, |P ∩ G| / |P ∪ G|.

    Arguments:
      pred (torch.Tensor): the predicted mask, bool, shape (H, W).
      gt (torch.Tensor): the ground-truth mask, bool, shape (H, W). Must be non-empty.

    Returns:
      (float): the IoU in [0, 1].

    Raises:
      ValueError: if the masks are not bool, differ in shape, or gt is empty.
    """
    _check_pair(pred, gt)
    inter = torch.logical_and(pred, gt).sum().item()
    union = torch.logical_or(pred, gt).sum().item()
    return float(inter) / float(union)


def boundary_dilation(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """
    The erosion depth d of Boundary IoU for an image of the given size.

    Arguments:
      height (int): image height H in pixels (original size, not the model's input size).
      width (int): image width W in pixels.
      dilation_ratio (float): fraction of the image diagonal.

    Returns:
      (int): d = max(1, round(dilation_ratio * sqrt(H² + W²))).
    """
    # Python's round (half to even) matches the reference's int(round(np.float64)).
    return max(1, int(round(dilation_ratio * math.sqrt(height**2 + width**2))))


def _erode_square(mask: Tensor, d: int) -> Tensor:
    """
    Binary erosion by a (2d+1)×(2d+1) square whose outside-of-image is neutral.

    This equals d iterations of cv2.erode with a 3×3 ones kernel (cv2's default border is
    neutral for erosion): on a rectangle every pixel within Chebyshev distance d is reachable in
    d in-image 3×3 steps. A pixel survives iff its window, clipped to the image, holds no zero.
    Counting zeros with a summed-area table costs O(H·W) whatever d is; a direct
    max_pool2d(2d+1) costs O(H·W·d²) (3.4 s for one 1024² mask on a CPU core) and a separable
    pair of max-pools O(H·W·d) (3x slower than this on CPUs).

    Arguments:
      mask (torch.Tensor): bool, shape (H, W).
      d (int): erosion radius, d ≥ 1.

    Returns:
      (torch.Tensor): the eroded mask, bool, shape (H, W).
    """
    h, w = mask.shape
    zeros = (~mask).to(torch.int64)
    # Leading zero row/column so that window sums are S[r1, c1] - S[r0, c1] - S[r1, c0] + S[r0, c0].
    table = F.pad(zeros.cumsum(0).cumsum(1), (1, 0, 1, 0))
    rows = torch.arange(h, device=mask.device)
    cols = torch.arange(w, device=mask.device)
    r0, r1 = (rows - d).clamp(min=0), (rows + d + 1).clamp(max=h)
    c0, c1 = (cols - d).clamp(min=0), (cols + d + 1).clamp(max=w)
    count = table[r1][:, c1] - table[r0][:, c1] - table[r1][:, c0] + table[r0][:, c0]
    return count == 0


def _erode_square_separable(mask: Tensor, d: int) -> Tensor:
    """
    :func:`_erode_square` (same result, exactly) as two 1-D window counts with slices.

    The clipped (2d+1)² window holds a zero iff some row of its vertical span holds a zero in
    its horizontal span, so a horizontal then a vertical running count (int32 prefix sums read
    through slices of a zero-padded table, instead of four gathers of a 2-D int64 table) decide
    it. About 3x faster than :func:`_erode_square` on a 1000² mask.

    Arguments:
      mask (torch.Tensor): bool, shape (H, W).
      d (int): erosion radius, d ≥ 1.

    Returns:
      (torch.Tensor): the eroded mask, bool, shape (H, W).
    """
    w = 2 * d + 1

    def any_zero(z: Tensor, dim: int) -> Tensor:
        # pad d+1 before (one for the prefix-sum difference) and d after: outside is neutral
        pad = (d + 1, d) if dim == 1 else (0, 0, d + 1, d)
        c = F.pad(z, pad).cumsum(dim, dtype=torch.int32)
        n = c.shape[dim]
        return c.narrow(dim, w, n - w) != c.narrow(dim, 0, n - w)

    rows = any_zero((~mask).to(torch.int32), 1)
    return ~any_zero(rows.to(torch.int32), 0)


_REFERENCE_METRICS = False


@contextmanager
def reference_metrics(enabled: bool = True) -> Iterator[None]:
    """Score with the reference (summed-area-table) erosion and no ground-truth boundary cache:
    for tests and ``benchmarks/phases.py``. Process-wide, not thread-local."""
    global _REFERENCE_METRICS
    old = _REFERENCE_METRICS
    _REFERENCE_METRICS = bool(enabled)
    try:
        yield
    finally:
        _REFERENCE_METRICS = old


def reference_metrics_active() -> bool:
    """True inside :func:`reference_metrics`."""
    return _REFERENCE_METRICS


def mask_boundary(mask: Tensor, dilation_ratio: float = 0.02) -> Tensor:
    """
    The inner boundary band of a mask used by Boundary IoU (Cheng et al. 2021, HQ-SAM misc.py).

    boundary(M) = M − erode(pad₁(M), 3×3 ones, iterations=d) cropped back to (H, W), with
    d = max(1, round(dilation_ratio · √(H² + W²))). The one-pixel zero padding makes a mask cut by
    the image border count as boundary there.

    Arguments:
      mask (torch.Tensor): bool, shape (H, W).
      dilation_ratio (float): band width as a fraction of the image diagonal.

    Returns:
      (torch.Tensor): the boundary band, bool, shape (H, W).
    """
    h, w = mask.shape
    d = boundary_dilation(h, w, dilation_ratio)
    padded = torch.zeros((h + 2, w + 2), dtype=torch.bool, device=mask.device)
    padded[1 : h + 1, 1 : w + 1] = mask
    erode = _erode_square if _REFERENCE_METRICS else _erode_square_separable
    eroded = erode(padded, d)[1 : h + 1, 1 : w + 1]
    return torch.logical_and(mask, ~eroded)


def boundary_index(gt: Tensor, dilation_ratio: float = 0.02) -> Tensor:
    """
    The flat indices (int32) of a ground truth's boundary band: what :func:`boundary_iou` needs
    of the ground truth, computed once per image and reused by every evaluation of a run (a
    band is a few % of the image: a few hundred kB per 1000² ground truth).

    Arguments:
      gt (torch.Tensor): the ground-truth mask, bool, shape (H, W).
      dilation_ratio (float): band width as a fraction of the image diagonal.

    Returns:
      (torch.Tensor): 1-D int32 indices into ``gt.flatten()`` of :func:`mask_boundary` (gt).
    """
    return torch.nonzero(mask_boundary(gt, dilation_ratio).flatten(), as_tuple=True)[0].to(
        torch.int32
    )


def boundary_iou(
    pred: Tensor, gt: Tensor, dilation_ratio: float = 0.02, gt_boundary: Optional[Tensor] = None
) -> float:
    """
    Boundary IoU (Cheng et al. 2021) as the CoSAM / HQ-SAM evaluation computes it.

    BIoU = |B_g ∩ B_p| / |B_g ∪ B_p| with B = :func:`mask_boundary`. For masks thinner than the
    band (2·d pixels) the boundary is the whole mask and BIoU = IoU.

    Arguments:
      pred (torch.Tensor): the predicted mask, bool, shape (H, W), at the original image size.
      gt (torch.Tensor): the ground-truth mask, bool, shape (H, W). Must be non-empty.
      dilation_ratio (float): band width as a fraction of the image diagonal.
      gt_boundary (torch.Tensor): optional :func:`boundary_index` (gt), cached by the caller
        (the same counts, hence exactly the same score, without recomputing the gt's band).

    Returns:
      (float): the Boundary IoU in [0, 1].

    Raises:
      ValueError: if the masks are not bool, differ in shape, or gt is empty.
    """
    _check_pair(pred, gt)
    # A non-empty gt always has a non-empty boundary (the zero padding touches it), so union > 0.
    bp = mask_boundary(pred, dilation_ratio)
    if gt_boundary is not None and not _REFERENCE_METRICS:
        inter = int(bp.flatten()[gt_boundary].sum().item())
        union = int(gt_boundary.numel()) + int(bp.sum().item()) - inter
        return float(inter) / float(union)
    bg = mask_boundary(gt, dilation_ratio)
    inter = torch.logical_and(bg, bp).sum().item()
    union = torch.logical_or(bg, bp).sum().item()
    return float(inter) / float(union)


def score_logits(
    logits: Tensor,
    gts: Sequence[Tensor],
    dilation_ratio: float = 0.02,
    gt_boundaries: Optional[Sequence[Tensor]] = None,
) -> List[Tuple[float, float]]:
    """
    Score a batch of low-resolution mask logits against ground truths of their original sizes.

    Each image's logits are upsampled bilinearly (align_corners=False) to its GT size, thresholded
    at 0, and scored with :func:`iou` and :func:`boundary_iou` (protocol §6.1).

    Arguments:
      logits (torch.Tensor): mask logits, float, shape (B, 1, h, w), e.g. the 256² decoder output.
      gts (list(torch.Tensor)): B ground-truth masks, bool, shapes (H_i, W_i).
      dilation_ratio (float): Boundary IoU band width as a fraction of the image diagonal.
      gt_boundaries (list(torch.Tensor)): optional B :func:`boundary_index` of the ground truths
        (cached across evaluations; same scores).

    Returns:
      (list(tuple(float, float))): B pairs (IoU, BIoU).
    """
    if gt_boundaries is not None and len(gt_boundaries) != len(gts):
        raise ValueError(
            f"got {len(gt_boundaries)} ground-truth boundaries for {len(gts)} ground truths"
        )
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits must have shape (B, 1, h, w), got {tuple(logits.shape)}")
    if logits.shape[0] != len(gts):
        raise ValueError(f"got {logits.shape[0]} logit maps but {len(gts)} ground truths")
    scores: List[Tuple[float, float]] = []
    for i, (logit, gt) in enumerate(zip(logits, gts)):
        if gt.dim() != 2:
            raise ValueError(f"each gt must have shape (H, W), got {tuple(gt.shape)}")
        up = F.interpolate(
            logit[None].float(), size=tuple(gt.shape), mode="bilinear", align_corners=False
        )
        pred = up[0, 0] > 0
        gt = gt.to(pred.device)
        gb = None if gt_boundaries is None else gt_boundaries[i].to(pred.device)
        scores.append((iou(pred, gt), boundary_iou(pred, gt, dilation_ratio, gt_boundary=gb)))
    return scores


def dataset_scores(scores: Sequence[Sequence[float]]) -> Tuple[float, float]:
    """A dataset's IoU and BIoU: the means over its images' scores.

    Each mean is ``sum(...) / len(...)`` in image order (the arithmetic of every stored result;
    ``np.mean`` sums pairwise and may differ in the last bit).

    Arguments:
      scores (list(tuple(float, float))): per-image (IoU, BIoU) pairs, as :func:`score_logits`
        returns them; at least one.

    Returns:
      (tuple(float, float)): the dataset's (IoU, BIoU).
    """
    return sum(s[0] for s in scores) / len(scores), sum(s[1] for s in scores) / len(scores)
