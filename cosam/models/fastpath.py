"""The fast compute path of the decoder and the HQ branch, and a switch back to the reference.

The fast path (the default) computes the same functions as the reference (slow) path, in
another order; results agree within float rounding (fp32: outputs to ~1e-6 relative, gradients
of the trainable parameters to ~1e-5 relative; ``tests/test_speed_equivalence.py`` holds the
tolerances). Over a whole run, Adam and the loss's uncertain-point choice amplify any rounding
difference to about 1e-3 in a trained run's matrix, as a same-math memory-layout change of
the reference path does (``benchmarks/README.md``, "Speed levers"). Its levers (issue 16):

* the one-way reader tokens (HQ-SAM's token, ``one_way=True``) are computed apart from SAM's own
  tokens: SAM's tokens and image keys never read the readers, so when SAM is frozen autograd
  records only the readers' small path, not SAM's transformer and upscaling;
* ``LayerNorm2d`` (segment-anything's element-wise form) as one ``F.layer_norm`` over the
  channel dimension of a channels-last tensor (same formula: biased variance, eps inside sqrt);
* channels-last convolutions in the HQ branch;
* the HQ branch's last (linear) layer of each fusion path folded into the HQ token: the mask is
  ``h · Σ (W x + b)``, computed as ``Σ (hᵀW) x + h·b``, one output channel instead of 32;
* SAM-Adapter's frozen TinyViT stem (before the first adapter) memoised per image.

:func:`reference_path` switches the reference implementation back on (tests compare the two in
one process; the benchmark ``benchmarks/phases.py`` times both).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The levers, each switchable back to the reference for tests and benchmarks:
#: ``readers`` (one-way readers computed apart from SAM's tokens), ``layernorm`` (fused
#: LayerNorm2d, channels-last convolutions), ``fold`` (HQ fusion heads folded into the token),
#: ``stem`` (SAM-Adapter's frozen encoder stem memoised per image, ``methods.sam_adapter``).
LEVERS = ("readers", "layernorm", "fold", "stem")
_disabled: frozenset = frozenset()


def enabled(lever: str) -> bool:
    """Whether the fast implementation of ``lever`` (one of :data:`LEVERS`) is in use."""
    return lever not in _disabled


def reference_enabled() -> bool:
    """True while every lever is switched back to the reference (slow, literal) implementation."""
    return all(lv in _disabled for lv in LEVERS)


@contextmanager
def reference_path(*levers: str, enabled: bool = True) -> Iterator[None]:
    """Run the block with the reference implementation of ``levers`` (all when none is named).

    ``enabled=False`` leaves every lever fast (handy for ``with reference_path(enabled=flag)``).
    Process-wide (not thread-local): meant for tests and benchmarks, not for concurrent use.

    Raises:
      ValueError: for a name not in :data:`LEVERS`.
    """
    global _disabled
    bad = [lv for lv in levers if lv not in LEVERS]
    if bad:
        raise ValueError(f"unknown lever(s) {bad}; valid: {', '.join(LEVERS)}")
    old = _disabled
    if enabled:
        _disabled = frozenset(levers or LEVERS)
    try:
        yield
    finally:
        _disabled = old


def layer_norm_2d(x: Tensor, ln: nn.Module) -> Tensor:
    """segment-anything's ``LayerNorm2d`` (normalise over channels of (B,C,H,W)) as ``F.layer_norm``.

    Arguments:
      x: (B,C,H,W) input, any memory format (channels-last avoids a copy).
      ln: the ``LayerNorm2d`` module whose ``weight``, ``bias`` and ``eps`` are used.
    Returns:
      (B,C,H,W) normalised tensor in channels-last memory format.
    """
    y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), ln.weight, ln.bias, ln.eps)
    return y.permute(0, 3, 1, 2)


def conv_ln_gelu(seq: nn.Sequential, x: Tensor) -> Tensor:
    """The first three layers (conv, LayerNorm2d, GELU) of a fusion path: channels-last with the
    fused LayerNorm, or the modules themselves when the ``layernorm`` lever is off."""
    if not enabled("layernorm"):
        return seq[2](seq[1](seq[0](x)))
    y = seq[0](x.contiguous(memory_format=torch.channels_last))
    return seq[2](layer_norm_2d(y, seq[1]))


def upscale(seq: nn.Sequential, x: Tensor) -> Tensor:
    """SAM's ``output_upscaling`` (ConvT, LayerNorm2d, GELU, ConvT, GELU) with the fused LayerNorm."""
    y = conv_ln_gelu(seq, x)
    return seq[4](seq[3](y))


def folded_convt2(h: Tensor, conv: nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """``(h · conv(x))`` per image for a kernel-2 stride-2 transposed conv, without its C outputs.

    Arguments:
      h: (B,C) per-image weights over the conv's C output channels.
      conv: ConvTranspose2d(ci, C, 2, 2) (weight (ci,C,2,2)).
      x: (B,ci,H,W).
    Returns:
      (B,1,2H,2W) = Σ_c h_c · conv(x)_c.
    """
    b, ci, hh, ww = x.shape
    w = torch.einsum("nc,icab->niab", h, conv.weight).reshape(b, ci, 4)
    xf = x.permute(0, 2, 3, 1).reshape(b, hh * ww, ci)
    y = torch.bmm(xf, w).view(b, hh, ww, 2, 2).permute(0, 1, 3, 2, 4).reshape(b, 1, 2 * hh, 2 * ww)
    return y + (h @ conv.bias).view(b, 1, 1, 1)


def folded_conv3(h: Tensor, conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``(h · conv(x))`` per image for a 3x3, stride-1, padding-1 conv, without its C outputs.

    The per-image kernel ``Σ_c h_c W_c`` is applied as one matmul to 9 taps, then the shifted
    taps are summed (exactly a cross-correlation with zero padding).

    Arguments:
      h (Tensor): (B,C).
      conv (nn.Conv2d): Conv2d(ci, C, 3, padding=1), weight (C,ci,3,3).
      x (Tensor): (B,ci,H,W).

    Returns:
      (Tensor): (B,1,H,W) = Σ_c h_c · conv(x)_c.
    """
    b, ci, hh, ww = x.shape
    w = torch.einsum("nc,ciab->niab", h, conv.weight).reshape(b, ci, 9)
    z = torch.bmm(x.permute(0, 2, 3, 1).reshape(b, hh * ww, ci), w).view(b, hh, ww, 9)
    z = F.pad(z, (0, 0, 1, 1, 1, 1))
    out = z[:, 0:hh, 0:ww, 0]
    for t in range(1, 9):
        a, c = divmod(t, 3)
        out = out + z[:, a : a + hh, c : c + ww, t]
    return (out + (h @ conv.bias).view(b, 1, 1)).unsqueeze(1)


def project(x: Tensor, h: Tensor) -> Tensor:
    """(B,C,H,W) features, (B,C) weights -> (B,1,H,W) = Σ_c h_c x_c, any memory format."""
    b, c, hh, ww = x.shape
    return torch.bmm(x.permute(0, 2, 3, 1).reshape(b, hh * ww, c), h.unsqueeze(2)).view(
        b, 1, hh, ww
    )


def attend(attn: nn.Module, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """segment-anything ``Attention.forward`` on queries ``q`` and already projected, head-split
    keys ``k`` and values ``v`` (B,heads,N,c) from :func:`project_kv` (same operations)."""
    qh = attn._separate_heads(attn.q_proj(q), attn.num_heads)
    a = qh @ k.permute(0, 1, 3, 2)
    a = torch.softmax(a / math.sqrt(qh.shape[-1]), dim=-1)
    return attn.out_proj(attn._recombine_heads(a @ v))


def project_kv(attn: nn.Module, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
    """The key and value projections of segment-anything's ``Attention``, split into heads."""
    return (
        attn._separate_heads(attn.k_proj(k), attn.num_heads),
        attn._separate_heads(attn.v_proj(v), attn.num_heads),
    )
