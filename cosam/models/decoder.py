"""Batched SAM mask decoding with optional one-way "reader" tokens.

segment-anything's ``MaskDecoder`` repeats the image embedding once per prompt, so it takes one
image per call. Here B images with one prompt each are decoded in one call, through the same
modules (same state dict). Extra tokens (HQ-SAM's output token, L2P prompts, ...) can be appended:

* ``one_way=True`` (cosam's default for HQ): the extra tokens attend to the image and to SAM's
  tokens, but nothing attends to them, so SAM's own outputs are exactly unchanged and an HQ
  token initialised as a copy of mask token 0 starts from SAM's mask.
* ``one_way=False``: the extra tokens join the sequence like prompt tokens (HQ-SAM's original
  behaviour: they also perturb SAM's tokens and the image features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, List, Optional, Sequence, Tuple

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import Tensor

from .fastpath import attend, enabled, project, project_kv, upscale

if TYPE_CHECKING:  # the data package imports nothing from models; keep it that way
    from ..data.prompts import Prompt


@dataclass
class DecoderOutput:
    """What one decoder pass produces.

    Attributes:
      masks: (B,1,4e,4e) SAM single-mask logits (mask token 0).
      iou: (B,1) SAM's IoU prediction for that mask.
      upscaled: (B,32,4e,4e) upscaled image features SAM's hypernetworks read (channels-last
        memory format on the fast path: use ``reshape``, not ``view``).
      extra: (B,k,256) output of the extra tokens (k may be 0).
    """

    masks: Tensor
    iou: Tensor
    upscaled: Tensor
    extra: Tensor


def _two_way(
    t: TwoWayTransformer, src: Tensor, pos: Tensor, tokens: Tensor, n_readers: int
) -> Tuple[Tensor, Tensor]:
    """TwoWayTransformer.forward where the last ``n_readers`` tokens are read-only queries.

    src, pos: (B,C,h,w); tokens: (B,N,C). Returns queries (B,N,C) and keys (B,hw,C).
    With n_readers=0 this is exactly segment-anything's forward.
    """
    keys = src.flatten(2).permute(0, 2, 1)
    key_pe = pos.flatten(2).permute(0, 2, 1)
    n_main = tokens.shape[1] - n_readers
    queries, query_pe = tokens, tokens
    for layer in t.layers:
        # Self-attention: every token queries, only SAM's tokens are keys/values.
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries[:, :n_main], v=queries[:, :n_main])
        else:
            q = queries + query_pe
            queries = queries + layer.self_attn(q=q, k=q[:, :n_main], v=queries[:, :n_main])
        queries = layer.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = layer.norm2(queries + layer.cross_attn_token_to_image(q=q, k=k, v=keys))
        queries = layer.norm3(queries + layer.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = layer.norm4(
            keys + layer.cross_attn_image_to_token(q=k, k=q[:, :n_main], v=queries[:, :n_main])
        )
    q, k = queries + query_pe, keys + key_pe
    queries = t.norm_final_attn(queries + t.final_attn_token_to_image(q=q, k=k, v=keys))
    return queries, keys


def _two_way_split(
    t: TwoWayTransformer, src: Tensor, pos: Tensor, main: Tensor, readers: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`_two_way` with read-only tokens, computing SAM's tokens and the readers apart.

    SAM's tokens ``main`` (B,n,C) and the image keys never read the ``readers`` (B,k,C), so they
    are exactly SAM's pass without readers; the readers then attend to the projected keys and
    values of that pass. With SAM frozen, autograd records only the readers' path (issue 16).
    Returns main queries (B,n,C), reader queries (B,k,C) and keys (B,hw,C).
    """
    keys = src.flatten(2).permute(0, 2, 1)
    key_pe = pos.flatten(2).permute(0, 2, 1)
    m, m_pe = main, main
    r, r_pe = readers, readers
    for layer in t.layers:
        sa = layer.self_attn
        if layer.skip_first_layer_pe:
            kv = project_kv(sa, m, m)
            m, r = attend(sa, m, *kv), attend(sa, r, *kv)
        else:
            q = m + m_pe
            kv = project_kv(sa, q, m)
            m, r = m + attend(sa, q, *kv), r + attend(sa, r + r_pe, *kv)
        m, r = layer.norm1(m), layer.norm1(r)
        ca = layer.cross_attn_token_to_image
        kv = project_kv(ca, keys + key_pe, keys)
        m = layer.norm2(m + attend(ca, m + m_pe, *kv))
        r = layer.norm2(r + attend(ca, r + r_pe, *kv))
        m, r = layer.norm3(m + layer.mlp(m)), layer.norm3(r + layer.mlp(r))
        q = m + m_pe
        keys = layer.norm4(keys + layer.cross_attn_image_to_token(q=keys + key_pe, k=q, v=m))
    fa = t.final_attn_token_to_image
    kv = project_kv(fa, keys + key_pe, keys)
    m = t.norm_final_attn(m + attend(fa, m + m_pe, *kv))
    r = t.norm_final_attn(r + attend(fa, r + r_pe, *kv))
    return m, r, keys


def decode(
    md: MaskDecoder,
    image_embeddings: Tensor,
    image_pe: Tensor,
    sparse: Tensor,
    dense: Tensor,
    extra_tokens: Optional[Tensor] = None,
    one_way: bool = True,
) -> DecoderOutput:
    """Decode B images, one prompt each.

    Arguments:
      md (MaskDecoder): segment-anything's mask decoder (its weights; possibly trainable).
      image_embeddings (Tensor): (B,256,e,e).
      image_pe (Tensor): (1,256,e,e) from ``PromptEncoder.get_dense_pe()``.
      sparse (Tensor): (B,n,256) prompt tokens.
      dense (Tensor): (B,256,e,e) mask-prompt embedding.
      extra_tokens (Tensor or None): (B,k,256) or (k,256) tokens appended after the prompt
        tokens.
      one_way (bool): extra tokens are read-only (see module docstring).

    Returns:
      (DecoderOutput): SAM's single-mask logits and IoU prediction, the upscaled features
        and the extra tokens' outputs.
    """
    b = image_embeddings.shape[0]
    out_tokens = (
        torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        .unsqueeze(0)
        .expand(b, -1, -1)
    )
    parts = [out_tokens, sparse]
    k = 0
    if extra_tokens is not None:
        extra = (
            extra_tokens if extra_tokens.dim() == 3 else extra_tokens.unsqueeze(0).expand(b, -1, -1)
        )
        k = extra.shape[1]
        parts.append(extra)
    src = image_embeddings + dense
    pos = image_pe.expand(b, -1, -1, -1)
    if not enabled("readers"):
        hs, keys = _two_way(md.transformer, src, pos, torch.cat(parts, dim=1), k if one_way else 0)
        extra_out = hs[:, hs.shape[1] - k :]
    elif one_way and k > 0:
        hs, extra_out, keys = _two_way_split(
            md.transformer, src, pos, torch.cat(parts[:2], dim=1), parts[2]
        )
    else:
        hs, keys = _two_way(md.transformer, src, pos, torch.cat(parts, dim=1), 0)
        extra_out = hs[:, hs.shape[1] - k :]
    src = keys.transpose(1, 2).reshape(src.shape)
    hyper = md.output_hypernetworks_mlps[0](hs[:, 1])
    if not enabled("layernorm"):
        upscaled = md.output_upscaling(src)
        bb, c, h, w = upscaled.shape
        masks = (hyper.unsqueeze(1) @ upscaled.view(bb, c, h * w)).view(bb, 1, h, w)
    else:  # channels-last upscaled features (fused LayerNorm)
        upscaled = upscale(md.output_upscaling, src)
        masks = project(upscaled, hyper)
    iou = md.iou_prediction_head(hs[:, 0])[:, :1]
    return DecoderOutput(masks=masks, iou=iou, upscaled=upscaled, extra=extra_out)


def embed_prompts(
    pe: PromptEncoder, prompts: Sequence["Prompt"], device: torch.device
) -> Tuple[Tensor, Tensor]:
    """Embed prompts of ONE kind. Returns sparse (B,n,256) and dense (B,256,e,e), float32.

    Runs in fp32 even under autocast: the random-Fourier positional encoding takes sin/cos of
    arguments up to ~33 rad, which bf16 perturbs by up to 0.2 rad (measured on vit_t's 64x64 grid:
    the dense encoding then differs by up to 0.17).
    """
    with torch.autocast(torch.device(device).type, enabled=False):
        return _embed_prompts(pe, prompts, device)


def _embed_prompts(
    pe: PromptEncoder, prompts: Sequence["Prompt"], device: torch.device
) -> Tuple[Tensor, Tensor]:
    kinds = {p.kind for p in prompts}
    if len(kinds) != 1:
        raise ValueError(f"embed_prompts takes one prompt kind per call, got {sorted(kinds)}")
    kind = kinds.pop()
    if kind == "box":
        boxes = torch.stack([p.box for p in prompts]).to(device)
        return pe(points=None, boxes=boxes, masks=None)
    if kind == "points":
        coords = torch.stack([p.points for p in prompts]).to(device)
        labels = torch.stack([p.point_labels for p in prompts]).to(device)
        return pe(points=(coords, labels), boxes=None, masks=None)
    if kind == "mask":
        masks = torch.stack([p.mask for p in prompts]).to(device)
        return pe(points=None, boxes=None, masks=masks)
    raise ValueError(f"unknown prompt kind {kind!r}")


def group_by_kind(prompts: Sequence["Prompt"]) -> List[List[int]]:
    """Indices of the batch grouped by prompt kind (a batch may mix kinds, one per image)."""
    groups: dict = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p.kind, []).append(i)
    return list(groups.values())


def scatter_groups(n: int, groups: Iterable[Tensor], run: Callable[[Tensor], Tensor]) -> Tensor:
    """Run ``run(ix)`` on each group of batch indices and put its rows back in batch order.

    Arguments:
      n: the batch size B.
      groups: index tensors (each (b_g,), long) that together cover 0..B-1 once, e.g. the
        images of one prompt kind or of one routed adapter.
      run: maps a group's indices to its outputs (b_g, ...).

    Returns:
      (B, ...) the outputs of every group, row i from the group that holds i.
    """
    out: Optional[Tensor] = None
    for ix in groups:
        part = run(ix)
        if out is None:
            out = part.new_zeros((n,) + part.shape[1:])
        out = out.index_copy(0, ix, part)
    assert out is not None, "no group to run"
    return out


def kind_groups(prompts: Sequence["Prompt"], device: torch.device) -> List[Tensor]:
    """:func:`group_by_kind` as index tensors on ``device`` (for :func:`scatter_groups`)."""
    return [torch.tensor(idx, device=device) for idx in group_by_kind(prompts)]
