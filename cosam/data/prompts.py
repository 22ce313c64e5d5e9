"""Prompt simulation from a label (protocol §5): tight box, foreground points, noisy mask.

Labels are float tensors in [0, 1]; foreground is label > 0.5 (the reference's label > 128 on the
0..255 scale). All randomness comes from the torch.Generator passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cosam.errors import ConfigError

PROMPT_TYPES: tuple[str, ...] = ("box", "points", "mask")
# Factor of the down / up resize that finds the incoherent band of a mask (HQ-SAM's masks_noise).
_NOISE_FACTOR = 8
_INCOHERENT_EPS = 0.01


def _plane(label: torch.Tensor) -> torch.Tensor:
    if label.dim() == 3 and label.shape[0] == 1:
        return label[0]
    if label.dim() == 2:
        return label
    raise ValueError(f"label must have shape 1xHxW or HxW, got {tuple(label.shape)}")


def _foreground_xy(label: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.nonzero(_plane(label) > 0.5, as_tuple=True)
    if ys.numel() == 0:
        raise ValueError(f"label has no pixel > 0.5, so no {what} prompt can be made from it")
    return xs, ys


def box_from_label(label: torch.Tensor) -> torch.Tensor:
    """Tight box of the foreground, as HQ-SAM's masks_to_boxes (inclusive pixel indices, no +1).

    Arguments:
      label (torch.Tensor): float tensor of shape 1xHxW or HxW in [0, 1].

    Returns:
      (torch.Tensor): float32 tensor of shape 4: (x_min, y_min, x_max, y_max).

    Raises:
      ValueError: the label has no pixel > 0.5.
    """
    xs, ys = _foreground_xy(label, "box")
    return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).to(torch.float32)


def sample_points(
    label: torch.Tensor, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample n positive points uniformly on the foreground.

    Points are drawn without replacement. A mask with fewer than n foreground pixels is sampled
    with replacement; this is a fix over the reference, which turns point prompts off for the
    whole batch when any of its masks is that small.

    Arguments:
      label (torch.Tensor): float tensor of shape 1xHxW or HxW in [0, 1].
      n (int): number of points.
      generator (torch.Generator): the only source of randomness.

    Returns:
      points (torch.Tensor): float32 tensor of shape Nx2, (x, y) pixel indices.
      point_labels (torch.Tensor): int64 tensor of shape N, all ones (positive).

    Raises:
      ValueError: n < 1 or the label has no pixel > 0.5.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    xs, ys = _foreground_xy(label, "point")
    count = xs.numel()
    if count >= n:
        idx = torch.randperm(count, generator=generator)[:n]
    else:
        idx = torch.randint(0, count, (n,), generator=generator)
    points = torch.stack([xs[idx], ys[idx]], dim=1).to(torch.float32)
    return points, torch.ones(n, dtype=torch.int64)


def noisy_mask(label: torch.Tensor, out_size: int, generator: torch.Generator) -> torch.Tensor:
    """A dense mask prompt: the label with noise on its edges (HQ-SAM's masks_noise).

    The label is resized bilinearly to out_size x out_size. N(0, 1) noise is added on the
    incoherent band |m - up(down_8(m))| >= 0.01 (bilinear down / up by a factor 8), i.e. near the
    edges only, then the result is thresholded at 0.5 and scaled to {0, 255}.

    Arguments:
      label (torch.Tensor): float tensor of shape 1xHxW (or HxW) in [0, 1].
      out_size (int): the output side M, at least 8.
      generator (torch.Generator): the only source of randomness.

    Returns:
      (torch.Tensor): float32 tensor of shape 1xMxM with values in {0, 255}.
    """
    if out_size < _NOISE_FACTOR:
        raise ValueError(f"out_size must be at least {_NOISE_FACTOR}, got {out_size}")
    m = _plane(label).to(torch.float32)[None, None]
    m = F.interpolate(m, size=(out_size, out_size), mode="bilinear", align_corners=False)
    small = F.interpolate(
        m, size=(out_size // _NOISE_FACTOR,) * 2, mode="bilinear", align_corners=False
    )
    recovered = F.interpolate(
        small, size=(out_size, out_size), mode="bilinear", align_corners=False
    )
    band = ((m - recovered).abs() >= _INCOHERENT_EPS).to(torch.float32)
    noise = torch.randn(m.shape, generator=generator, dtype=torch.float32)
    return ((m + noise * band) > 0.5).to(torch.float32)[0] * 255.0


def _check_types(types: Sequence[str]) -> None:
    unknown = [t for t in types if t not in PROMPT_TYPES]
    if not types or unknown:
        raise ConfigError(
            f"prompt types {list(types)!r} are invalid; expected a non-empty subset of {list(PROMPT_TYPES)}"
        )


def draw_prompt_types(
    n: int, generator: torch.Generator, types: Sequence[str] = PROMPT_TYPES
) -> list[str]:
    """Draw one prompt type per image, uniformly from types (reference: random.choice per image).

    Arguments:
      n (int): number of images.
      generator (torch.Generator): the only source of randomness.
      types (Sequence(str)): allowed types, a subset of PROMPT_TYPES.

    Returns:
      (list(str)): n prompt types.
    """
    _check_types(types)
    idx = torch.randint(0, len(types), (n,), generator=generator)
    return [types[int(i)] for i in idx]


@dataclass
class Prompt:
    """One prompt for one image; only the field of its kind is set.

    Arguments:
      kind (str): one of PROMPT_TYPES.
      box (torch.Tensor or None): float32, shape 4, xyxy.
      points (torch.Tensor or None): float32, shape Nx2, xy.
      point_labels (torch.Tensor or None): int64, shape N, 1 = positive.
      mask (torch.Tensor or None): float32, shape 1xMxM, values in {0, 255}.
    """

    kind: str
    box: torch.Tensor | None = None
    points: torch.Tensor | None = None
    point_labels: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def make_prompt(
    label: torch.Tensor,
    kind: str,
    generator: torch.Generator,
    n_points: int = 10,
    mask_size: int | None = None,
) -> Prompt:
    """Make one prompt of the given kind from a label.

    Arguments:
      label (torch.Tensor): float tensor of shape 1xSxS in [0, 1].
      kind (str): "box", "points" or "mask".
      generator (torch.Generator): the only source of randomness.
      n_points (int): number of points for kind "points".
      mask_size (int or None): side of the mask prompt; default S // 4 (SAM's 256 for 1024).

    Returns:
      (Prompt): the prompt.

    Raises:
      ConfigError: unknown kind.
      ValueError: the label has no foreground (box and points).
    """
    _check_types([kind])
    if kind == "box":
        return Prompt(kind, box=box_from_label(label))
    if kind == "points":
        points, labels = sample_points(label, n_points, generator)
        return Prompt(kind, points=points, point_labels=labels)
    size = mask_size if mask_size is not None else _plane(label).shape[-1] // 4
    return Prompt(kind, mask=noisy_mask(label, size, generator))
