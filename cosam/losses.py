"""Point-sampled mask loss of HQ-SAM / Mask2Former (protocol §5 "Loss").

Per mask, the loss is evaluated on P points rather than on every pixel: most points are the
ones where the prediction is least certain (|logit| smallest), the rest uniform. Logits and
targets are read at the same normalised coordinates with bilinear ``grid_sample``, so the targets
may have a different resolution than the logits (e.g. 1024² labels against 256² logits).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(input: Tensor, coords: Tensor) -> Tensor:
    """
    Bilinearly sample feature maps at normalised point coordinates.

    Arguments:
      input (torch.Tensor): maps, float, shape (N, C, H, W).
      coords (torch.Tensor): points, float, shape (N, P, 2), (x, y) in [0, 1] where 0 and 1 are
        the outer edges of the first and last pixels (align_corners=False).

    Returns:
      (torch.Tensor): sampled values, shape (N, C, P).

    Outside the pixel centres' hull (within half a pixel of the image edge) grid_sample's zero
    padding pulls values toward 0, as in HQ-SAM / Mask2Former; kept for fidelity to the reference.
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2).to(input.dtype)  # (N, P, 1, 2)
    return F.grid_sample(input, grid, align_corners=False).squeeze(3)


def _rand(shape: tuple, generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    # Draw on the generator's own device (a CPU generator cannot fill a CUDA tensor), then move.
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


@torch.no_grad()
def uncertain_points(
    logits: Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_ratio: float = 0.75,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """
    Choose loss points: uncertain ones (smallest |logit|) plus uniform ones.

    Draws int(oversample_ratio · P) uniform candidates per mask, keeps the
    int(importance_ratio · P) with the smallest |logit| there, and adds the remaining
    P − int(importance_ratio · P) uniform points (Mask2Former's
    get_uncertain_point_coords_with_randomness).

    Arguments:
      logits (torch.Tensor): mask logits, float, shape (N, 1, h, w).
      num_points (int): P, points per mask.
      oversample_ratio (float): candidates per point, ≥ 1.
      importance_ratio (float): fraction of the P points chosen by uncertainty, in [0, 1].
      generator (torch.Generator or None): source of all randomness; None uses torch's global RNG.

    Returns:
      (torch.Tensor): coordinates, float, shape (N, P, 2), (x, y) in [0, 1].
    """
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits must have shape (N, 1, h, w), got {tuple(logits.shape)}")
    if num_points < 1:
        raise ValueError(f"num_points must be ≥ 1, got {num_points}")
    if oversample_ratio < 1.0:
        raise ValueError(f"oversample_ratio must be ≥ 1, got {oversample_ratio}")
    if not 0.0 <= importance_ratio <= 1.0:
        raise ValueError(f"importance_ratio must be in [0, 1], got {importance_ratio}")
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_ratio * num_points)
    num_random = num_points - num_uncertain

    candidates = _rand((n, num_sampled, 2), generator, logits.device)
    uncertainty = -point_sample(logits.detach().float(), candidates)[:, 0].abs()  # (N, S)
    idx = torch.topk(uncertainty, k=num_uncertain, dim=1).indices  # (N, K)
    coords = torch.gather(candidates, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat([coords, _rand((n, num_random, 2), generator, logits.device)], dim=1)
    return coords


def sigmoid_bce_points(logits_pts: Tensor, target_pts: Tensor, num_masks: float) -> Tensor:
    """
    Binary cross-entropy with logits, averaged over points, summed over masks, / num_masks.

    Arguments:
      logits_pts (torch.Tensor): logits at the points, float, shape (N, P).
      target_pts (torch.Tensor): targets at the points, float in [0, 1], shape (N, P).
      num_masks (float): normaliser, usually N.

    Returns:
      (torch.Tensor): the scalar loss.
    """
    loss = F.binary_cross_entropy_with_logits(logits_pts, target_pts, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_points(logits_pts: Tensor, target_pts: Tensor, num_masks: float) -> Tensor:
    """
    Soft Dice loss with +1 smoothing, 1 − (2Σpt + 1)/(Σp + Σt + 1) per mask, summed, / num_masks.

    Arguments:
      logits_pts (torch.Tensor): logits at the points, float, shape (N, P).
      target_pts (torch.Tensor): targets at the points, float in [0, 1], shape (N, P).
      num_masks (float): normaliser, usually N.

    Returns:
      (torch.Tensor): the scalar loss.
    """
    p = logits_pts.sigmoid()
    numerator = 2.0 * (p * target_pts).sum(-1)
    denominator = p.sum(-1) + target_pts.sum(-1)
    loss = 1.0 - (numerator + 1.0) / (denominator + 1.0)
    return loss.sum() / num_masks


def mask_loss(
    logits: Tensor,
    targets: Tensor,
    num_points: int = 112 * 112,
    generator: Optional[torch.Generator] = None,
    oversample_ratio: float = 3.0,
    importance_ratio: float = 0.75,
) -> Dict[str, Tensor]:
    """
    HQ-SAM's training loss: point-sampled BCE + Dice, weighted 1:1.

    Arguments:
      logits (torch.Tensor): predicted mask logits, float, shape (N, 1, h, w).
      targets (torch.Tensor): target masks, float in [0, 1] (soft targets allowed, e.g. a
        teacher's probabilities for distillation) or bool, shape (N, 1, H, W); H, W may differ
        from h, w.
      num_points (int): P, points per mask (HQ-SAM: 112² = 12544).
      generator (torch.Generator or None): source of the point randomness.
      oversample_ratio (float): candidate points per point for the uncertainty selection.
      importance_ratio (float): fraction of points chosen by uncertainty.

    Returns:
      (dict(str, torch.Tensor)): scalar tensors "bce", "dice" and "loss" = bce + dice; gradients
        flow to ``logits`` only.
    """
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits must have shape (N, 1, h, w), got {tuple(logits.shape)}")
    if targets.dim() != 4 or targets.shape[1] != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must have shape (N, 1, H, W) with N = {logits.shape[0]}, got {tuple(targets.shape)}"
        )
    if targets.dtype == torch.bool:
        targets = targets.float()
    elif not targets.is_floating_point():
        # uint8 labels are 0-255 in the data code; scaling here would hide a missing /255.
        raise ValueError(f"targets must be float in [0, 1] or bool, got {targets.dtype}")
    num_masks = float(logits.shape[0])

    with torch.no_grad():
        coords = uncertain_points(logits, num_points, oversample_ratio, importance_ratio, generator)
        target_pts = point_sample(targets.to(logits.device).float(), coords)[:, 0]
    logits_pts = point_sample(logits, coords)[:, 0]
    target_pts = target_pts.to(logits_pts.dtype)
    bce = sigmoid_bce_points(logits_pts, target_pts, num_masks)
    dice = dice_points(logits_pts, target_pts, num_masks)
    return {"bce": bce, "dice": dice, "loss": bce + dice}
