"""Image / label transforms of the reference (HQ-SAM's dataloader), in torch.

All randomness comes from the torch.Generator passed in, so a transform is reproducible from the
generator's seed and never touches the global RNG.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

LOGGER = logging.getLogger(__name__)

IMAGE_PAD_VALUE = 128.0
LABEL_PAD_VALUE = 0.0
# Draws of the random scale / crop before falling back to the native size / a centred crop.
_SCALE_TRIES = 10
_CROP_TRIES = 10


def _to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape HxWx3, got {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape[:2]}")
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(torch.float32)
    lab = torch.from_numpy(np.ascontiguousarray(mask)).to(torch.float32)[None]
    return img, lab


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a (C, H, W) float tensor, as HQ-SAM's F.interpolate call."""
    return F.interpolate(x[None], size=hw, mode="bilinear", align_corners=False, antialias=False)[0]


def resize_eval(
    image: np.ndarray, mask: np.ndarray, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation / memory-bank transform: stretch image and label to size x size.

    The aspect ratio is not kept, as in the reference (Resize([1024, 1024])).

    Arguments:
      image (np.ndarray): uint8 array of shape HxWx3.
      mask (np.ndarray): bool array of shape HxW.
      size (int): the output side S.

    Returns:
      image (torch.Tensor): float32 tensor of shape 3xSxS with values in [0, 255].
      label (torch.Tensor): float32 tensor of shape 1xSxS with values in [0, 1] (bilinear on the
        0/1 mask, so edges are fractional).
    """
    img, lab = _to_tensors(image, mask)
    return _resize(img, (size, size)), _resize(lab, (size, size))


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, high_inclusive: int) -> int:
    return int(torch.randint(0, high_inclusive + 1, (), generator=generator))


def _centred_offset(centre: int, crop: int, full: int) -> int:
    # Clamping keeps the centre pixel inside [offset, offset + crop).
    return min(max(centre - crop // 2, 0), full - crop)


def large_scale_jitter(
    image: np.ndarray,
    mask: np.ndarray,
    size: int,
    generator: torch.Generator,
    scale_range: tuple[float, float] = (0.1, 2.0),
    hflip_p: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training transform: random flip, then HQ-SAM's LargeScaleJitter.

    Steps: horizontal flip with probability hflip_p; resize keeping the aspect ratio so that the
    long side becomes scale x size with scale ~ U(scale_range); random crop to at most
    size x size; pad bottom-right to size x size with image value 128 and label value 0.

    Unlike the reference, the output keeps at least one foreground pixel (label > 0.5) whenever
    the mask has one, so that box and point prompts always exist (the reference would make an
    empty target and a meaningless box):

    - if the drawn scale shrinks the object away (thin or tiny defects at small scales), the
      scale is redrawn, up to 10 draws; if every draw loses it, the image keeps its native size,
      where the bilinear resize is exact. This biases the scale upwards for tiny objects only.
    - a crop without a foreground pixel is redrawn, up to 10 draws, then the crop is centred on
      the foreground pixel nearest the foreground's centroid.

    Arguments:
      image (np.ndarray): uint8 array of shape HxWx3.
      mask (np.ndarray): bool array of shape HxW.
      size (int): the output side S.
      generator (torch.Generator): the only source of randomness.
      scale_range (tuple(float, float)): bounds of the uniform scale.
      hflip_p (float): probability of a horizontal flip.

    Returns:
      image (torch.Tensor): float32 tensor of shape 3xSxS with values in [0, 255].
      label (torch.Tensor): float32 tensor of shape 1xSxS with values in [0, 1].
    """
    img, lab = _to_tensors(image, mask)
    if float(torch.rand((), generator=generator)) < hflip_p:
        img, lab = img.flip(-1), lab.flip(-1)

    height, width = img.shape[-2:]
    has_fg = bool(mask.any())
    for _ in range(_SCALE_TRIES):
        scale = _uniform(generator, scale_range[0], scale_range[1])
        # Same rounding as the reference: the long side is round(scale * size).
        long_side = round(scale * size)
        factor = min(long_side / height, long_side / width)
        new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
        scaled_lab = _resize(lab, (new_h, new_w))
        if not has_fg or (scaled_lab[0] > 0.5).any():
            break
    else:
        LOGGER.debug(
            "foreground lost at %d drawn scales of a %dx%d image; keeping its native size",
            _SCALE_TRIES,
            width,
            height,
        )
        new_h, new_w, scaled_lab = height, width, lab
    img = _resize(img, (new_h, new_w)) if (new_h, new_w) != (height, width) else img
    lab = scaled_lab

    crop_h, crop_w = min(size, new_h), min(size, new_w)
    margin_h, margin_w = new_h - crop_h, new_w - crop_w
    fg = lab[0] > 0.5
    top = _randint(generator, margin_h)
    left = _randint(generator, margin_w)
    if has_fg and (margin_h or margin_w):
        tries = 1
        while not fg[top : top + crop_h, left : left + crop_w].any() and tries < _CROP_TRIES:
            top, left = _randint(generator, margin_h), _randint(generator, margin_w)
            tries += 1
        if not fg[top : top + crop_h, left : left + crop_w].any():
            ys, xs = torch.nonzero(fg, as_tuple=True)
            cy, cx = ys.float().mean(), xs.float().mean()
            k = int(torch.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
            top = _centred_offset(int(ys[k]), crop_h, new_h)
            left = _centred_offset(int(xs[k]), crop_w, new_w)

    img = img[:, top : top + crop_h, left : left + crop_w]
    lab = lab[:, top : top + crop_h, left : left + crop_w]
    pad = [0, size - crop_w, 0, size - crop_h]  # (left, right, top, bottom): pad bottom-right only
    img = F.pad(img, pad, value=IMAGE_PAD_VALUE)
    lab = F.pad(lab, pad, value=LABEL_PAD_VALUE)
    return img.contiguous(), lab.contiguous()
