"""MoDA's Global Feature Token (GFT) and Global Assistant Tokens (GAT): the token pass.

A set of ``1 + k`` learnable tokens (token 0 = GFT, the router's query; tokens 1..k = GAT)
is carried through every attention block of a frozen SAM image encoder and, at each block,
updated through *that block's own frozen weights*:

    t <- t + proj(softmax(q(t) · [k(t); k(x)]ᵀ · scale) · [v(t); v(x)])     (LayerNorm'd inputs)
    t <- t + mlp(t)

where ``x`` are the block's patch tokens. Two modes (protocol §3.2, §8.1-2):

* ``one_way`` (cosam default, the architecture figure's local→global arrows): the tokens read
  the patches and each other; the patches never read the tokens, so the segmentation features
  are exactly SAM's and **one encoder pass** gives both (:func:`capture` hooks each block's
  LayerNorm'd input while the ordinary forward runs). Because a block's patch keys/values do not
  depend on the tokens, they can be computed once per image (:meth:`TokenReader.patch_kv`) and
  reused while the tokens train; only the tiny token path carries gradients.
* ``full`` (the released code): tokens are prepended to the patch sequence and every block runs
  global attention over tokens and patches together (patches also read the tokens), with no
  relative-position bias or window: a separate encoder pass (:meth:`TokenReader.full_pass`)
  whose patch features differ from SAM's.

Encoder families:

* TinyViT (``vit_t``, ``litemedsam``): the tokens start at the first attention stage (stage 1;
  stage 0 is convolutional). TinyViT's window biases are per window offset, which tokens do not
  have, so token attention has no bias; the depthwise ``local_conv`` is spatial and applies to
  patches only. The stages have different widths (128, 160, 320 for TinyViT-5M): the token set
  is carried across stages through a trainable ``Linear`` per width change (choice documented
  here; the alternative, one token set per stage, would give the router several queries).
  The query has the last stage's width (320).
* segment-anything ViT-B/L/H: all blocks share one width; token attention is global (the
  patches' windows and relative positions do not apply to tokens). The query is 768/1024/1280-d.

Shapes: B images, G = 1 + k tokens, N_b patches at block b, C_b the block's width.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Block as ViTBlock
from torch import Tensor, nn

from .tiny_vit import AttnStage, TinyViT, TinyViTBlock
from .vit import ViTEncoder

KV = Tuple[Tensor, Tensor]


@dataclass
class BlockSpec:
    """One attention block the tokens pass through: its module, family and width."""

    block: nn.Module
    family: str  # "tinyvit" | "vit"
    dim: int
    heads: int


def attention_blocks(encoder: nn.Module) -> List[BlockSpec]:
    """The attention blocks of a TinyViT or ViT encoder, in forward order.

    Wrapped blocks (SAM-Adapter's ``AdaptedBlock``) are not expected here: the query always
    comes from the frozen, un-adapted encoder.
    """
    specs: List[BlockSpec] = []
    if isinstance(encoder, TinyViT):
        for layer in encoder.layers:
            if isinstance(layer, AttnStage):
                for blk in layer.blocks:
                    assert isinstance(blk, TinyViTBlock)
                    specs.append(
                        BlockSpec(blk, "tinyvit", blk.attn.qkv.in_features, blk.attn.num_heads)
                    )
    elif isinstance(encoder, ViTEncoder):
        for blk in encoder.blocks:
            assert isinstance(blk, ViTBlock)
            specs.append(BlockSpec(blk, "vit", blk.attn.qkv.in_features, blk.attn.num_heads))
    if not specs:
        raise TypeError(
            f"no attention blocks found in {type(encoder).__name__}; MoDA supports TinyViT and ViT encoders"
        )
    return specs


def _norm_in(spec: BlockSpec, x: Tensor) -> Tensor:
    """A block's LayerNorm applied to (..., C) tokens (the attention input)."""
    blk = spec.block
    return blk.attn.norm(x) if spec.family == "tinyvit" else blk.norm1(x)  # type: ignore[union-attr]


def _heads(spec: BlockSpec, y: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """qkv Linear output (B,N,3C) -> q, k, v each (B,heads,N,C/heads), in the block's layout."""
    b, n, _ = y.shape
    h = spec.heads
    d = spec.dim // h
    if spec.family == "tinyvit":  # per head [q k v] (TinyViT's qkv layout)
        q, k, v = y.view(b, n, h, 3 * d).split(d, dim=3)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    q, k, v = y.view(b, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # segment-anything's layout
    return q, k, v


def _mlp(spec: BlockSpec, t: Tensor) -> Tensor:
    blk = spec.block
    return blk.mlp(t) if spec.family == "tinyvit" else blk.mlp(blk.norm2(t))  # type: ignore[union-attr]


def _attend(spec: BlockSpec, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q kᵀ · scale) v through the block's output projection. q (B,h,G,d) -> (B,G,C)."""
    out = F.scaled_dot_product_attention(
        q, k.to(q.dtype), v.to(q.dtype), scale=spec.block.attn.scale
    )
    return spec.block.attn.proj(out.transpose(1, 2).reshape(q.shape[0], q.shape[2], spec.dim))


def _head_weights(spec: BlockSpec, part: int) -> Tuple[Tensor, Optional[Tensor]]:
    """The qkv Linear's rows of ``part`` (0 q, 1 k, 2 v) per head: weight (h,d,C), bias (h,d)."""
    lin = spec.block.attn.qkv
    h, d, c = spec.heads, spec.dim // spec.heads, spec.dim
    if spec.family == "tinyvit":  # per head [q k v]
        w = lin.weight.view(h, 3, d, c)[:, part]
        bias = None if lin.bias is None else lin.bias.view(h, 3, d)[:, part]
    else:  # [q; k; v], each per head
        w = lin.weight.view(3, h, d, c)[part]
        bias = None if lin.bias is None else lin.bias.view(3, h, d)[part]
    return w, bias


def _attend_folded(spec: BlockSpec, q: Tensor, kt: Tensor, vt: Tensor, x: Tensor) -> Tensor:
    """:func:`_attend` over ``[tokens; patches]`` with the patches' keys and values folded into
    the token side. q, kt, vt (B,h,G,d) from the tokens; x (B,N,C) the block's LayerNorm'd patch
    input. -> (B,G,C), through the block's output projection."""
    scale = spec.block.attn.scale
    wk, bk = _head_weights(spec, 1)
    wv, bv = _head_weights(spec, 2)
    b, h, g, _ = q.shape
    qf = torch.einsum("bhgd,hdc->bhgc", q, wk).reshape(b, h * g, -1)  # heads x tokens as rows
    logits_p = torch.bmm(qf, x.transpose(1, 2)).view(b, h, g, -1)  # (B,h,G,N)
    if bk is not None:
        logits_p = logits_p + torch.einsum("bhgd,hd->bhg", q, bk).unsqueeze(-1)
    logits = torch.cat([q @ kt.transpose(-1, -2), logits_p], -1) * scale
    a = logits.softmax(-1)
    a_t, a_p = a[..., :g], a[..., g:]
    ctx = torch.bmm(a_p.reshape(b, h * g, -1), x).view(b, h, g, -1)  # (B,h,G,C)
    out = a_t @ vt + torch.einsum("bhgc,hdc->bhgd", ctx, wv)
    if bv is not None:
        out = out + bv[None, :, None, :] * a_p.sum(-1, keepdim=True)
    return spec.block.attn.proj(out.transpose(1, 2).reshape(b, g, spec.dim))


@contextmanager
def capture(encoder: nn.Module) -> Iterator[List[Tensor]]:
    """Record each attention block's LayerNorm'd input during an ordinary forward.

    Usage::

        with capture(encoder) as inputs:
            emb, interm = encoder(x)
        # inputs[b]: (B, N_b, C_b)

    The hooks only read: the forward's outputs are unchanged (one-way token pass).
    """
    specs = attention_blocks(encoder)
    inputs: List[Tensor] = []
    handles = []
    for spec in specs:

        def hook(_m: nn.Module, args: Tuple[Tensor, ...], spec: BlockSpec = spec) -> None:
            x = args[0]
            inputs.append(_norm_in(spec, x.reshape(x.shape[0], -1, x.shape[-1])))

        handles.append(spec.block.register_forward_pre_hook(hook))
    try:
        yield inputs
    finally:
        for h in handles:
            h.remove()


@contextmanager
def capture_kv(encoder: nn.Module) -> Iterator[List[KV]]:
    """Record each attention block's patch keys and values *as the block computes them*.

    The live inference path: the tokens need the patches' k and v at every block, which the
    block's own ``qkv`` projection already computes for its (windowed) attention, so reading them
    there costs nothing extra (recomputing them from the captured inputs, as
    :meth:`TokenReader.patch_kv` does for cached inputs, costs about a third of the encoder's
    MACs). Windows are stitched back and their zero padding cropped. Yields a list that holds
    ``(k, v)`` per block, each (B, heads, N_b, d), once the forward has run.
    """
    specs = attention_blocks(encoder)
    out: List[KV] = []
    handles = []
    for spec in specs:
        shape: dict = {}

        def pre(_m: nn.Module, args: Tuple[Tensor, ...], shape: dict = shape) -> None:
            shape["bhwc"] = tuple(args[0].shape)  # (B,H,W,C): both families' block input

        def post(
            _m: nn.Module,
            _args: Tuple[Tensor, ...],
            y: Tensor,
            spec: BlockSpec = spec,
            shape: dict = shape,
        ) -> None:
            b, h, w, _ = shape["bhwc"]
            c3 = y.shape[-1]
            if spec.family == "tinyvit":
                ws = spec.block.window  # type: ignore[union-attr]
                windowed = not (h == ws and w == ws)  # TinyViTBlock.attend's rule
            else:
                ws = spec.block.window_size  # type: ignore[union-attr]
                windowed = ws > 0
            if windowed:  # windows (B*nW, ws*ws, 3C) or (B*nW, ws, ws, 3C): stitch, crop padding
                ph, pw = h + (ws - h % ws) % ws, w + (ws - w % ws) % ws
                y = (
                    y.reshape(b, ph // ws, pw // ws, ws, ws, c3)
                    .transpose(2, 3)
                    .reshape(b, ph, pw, c3)[:, :h, :w]
                )
            _, k, v = _heads(spec, y.reshape(b, h * w, c3))
            out.append((k, v))

        handles.append(spec.block.register_forward_pre_hook(pre))
        handles.append(spec.block.attn.qkv.register_forward_hook(post))
    try:
        yield out
    finally:
        for hd in handles:
            hd.remove()


class TokenReader(nn.Module):
    """GFT + GAT tokens and their pass through a frozen encoder's attention blocks.

    Arguments:
      encoder: the frozen SAM image encoder (TinyViT or ViT); referenced, never modified.
      n_gat: number of assistant tokens k (0 allowed: GFT only).
      generator: seeds the token and projection initialisation.

    Trainable: ``tokens`` (1, 1+k, C_first) initialised ~ N(0, 1) as released, and one
    ``Linear(C_b, C_{b+1})`` per width change (TinyViT). The encoder's weights are frozen and
    excluded from this module's parameters.
    """

    def __init__(
        self, encoder: nn.Module, n_gat: int = 9, generator: Optional[torch.Generator] = None
    ) -> None:
        super().__init__()
        self._specs = attention_blocks(encoder)
        self.n_tokens = 1 + int(n_gat)
        dims = [s.dim for s in self._specs]
        self.tokens = nn.Parameter(torch.randn(1, self.n_tokens, dims[0], generator=generator))
        self.proj = nn.ModuleDict()
        for i in range(1, len(dims)):
            if dims[i] != dims[i - 1]:
                lin = nn.Linear(dims[i - 1], dims[i])
                bound = dims[i - 1] ** -0.5
                with torch.no_grad():
                    lin.weight.uniform_(-bound, bound, generator=generator)
                    lin.bias.zero_()
                self.proj[str(i)] = lin
        self.query_dim = dims[-1]

    @property
    def specs(self) -> List[BlockSpec]:
        return self._specs

    def _carry(self, i: int, t: Tensor) -> Tensor:
        key = str(i)
        return self.proj[key](t) if key in self.proj else t

    # ---- one-way -------------------------------------------------------------------------------
    @torch.no_grad()
    def patch_kv(self, inputs: Sequence[Tensor]) -> List[KV]:
        """Patch keys/values of every block. inputs[b] (B,N_b,C_b) -> [(k, v) each (B,h,N_b,d)]."""
        out = []
        for spec, n in zip(self._specs, inputs):
            _, k, v = _heads(spec, spec.block.attn.qkv(n.float()))
            out.append((k, v))
        return out

    def read(self, kv: Sequence[KV]) -> Tensor:
        """One-way token pass over precomputed patch keys/values. -> tokens (B,G,C_last)."""
        b = kv[0][0].shape[0]
        t = self.tokens.expand(b, -1, -1)
        for i, (spec, (kp, vp)) in enumerate(zip(self._specs, kv)):
            t = self._carry(i, t)
            q, kt, vt = _heads(spec, spec.block.attn.qkv(_norm_in(spec, t)))
            t = t + _attend(
                spec, q, torch.cat([kt, kp.to(kt.dtype)], 2), torch.cat([vt, vp.to(vt.dtype)], 2)
            )
            t = t + _mlp(spec, t)
        return t

    def query_from_inputs(self, inputs: Sequence[Tensor]) -> Tensor:
        """GFT query (B,C_last) from captured block inputs (gradient flows to the tokens only).

        The same as ``read(patch_kv(inputs))`` with the patch keys and values never formed: a
        head's logits ``q·(W_k x + b_k)`` are ``(q W_k)·x + q·b_k``, and its output
        ``Σ a (W_v x + b_v)`` is ``W_v (Σ a x) + b_v Σ a``. Per block that is 4·h·G·N·C
        multiply-adds instead of the 3·N·C² of the patches' qkv projection, about 4.8x fewer
        for TinyViT (C/h = 32, G = 10); equal to the unfolded pass to float rounding (tested).
        """
        b = inputs[0].shape[0]
        t = self.tokens.expand(b, -1, -1)
        for i, (spec, x) in enumerate(zip(self._specs, inputs)):
            t = self._carry(i, t)
            q, kt, vt = _heads(spec, spec.block.attn.qkv(_norm_in(spec, t)))
            t = t + _attend_folded(spec, q, kt, vt, x.to(q.dtype))
            t = t + _mlp(spec, t)
        return t[:, 0]

    # ---- full (released) -----------------------------------------------------------------------
    def full_pass(self, encoder: nn.Module, x: Tensor) -> Tensor:
        """The released separate pass: tokens and patches attend to each other globally in every
        block, without relative-position bias. x: (B,3,S,S) normalised -> tokens (B,G,C_last)."""
        b = x.shape[0]
        t = self.tokens.expand(b, -1, -1)
        i = 0
        if isinstance(encoder, TinyViT):
            h = encoder.layers[0](encoder.patch_embed(x))
            for layer in encoder.layers[1:]:
                assert isinstance(layer, AttnStage)
                p = h.permute(0, 2, 3, 1)
                hh, ww = p.shape[1:3]
                for blk in layer.blocks:
                    spec = self._specs[i]
                    t = self._carry(i, t)
                    seq = torch.cat([t, p.reshape(b, hh * ww, -1)], 1)
                    q, k, v = _heads(spec, blk.attn.qkv(blk.attn.norm(seq)))
                    seq = seq + _attend(spec, q, k, v)
                    t, p = seq[:, : self.n_tokens], seq[:, self.n_tokens :].reshape(b, hh, ww, -1)
                    p = blk.local_conv(p.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
                    t, p = t + blk.mlp(t), p + blk.mlp(p)
                    i += 1
                h = p.permute(0, 3, 1, 2)
                if layer.downsample is not None:
                    h = layer.downsample(h)
            return t
        assert isinstance(encoder, ViTEncoder)
        p = encoder.patch_embed(x)
        if encoder.pos_embed is not None:
            p = p + encoder.pos_embed
        hh, ww = p.shape[1:3]
        seq = torch.cat([t, p.reshape(b, hh * ww, -1)], 1)
        for blk in encoder.blocks:
            spec = self._specs[i]
            q, k, v = _heads(spec, blk.attn.qkv(blk.norm1(seq)))
            seq = seq + _attend(spec, q, k, v)
            seq = seq + blk.mlp(blk.norm2(seq))
            i += 1
        return seq[:, : self.n_tokens]
