"""TinyViT-5M image encoder in the MobileSAM ``vit_t`` / LiteMedSAM state-dict layout.

Written for cosam from the published architecture (Wu et al., "TinyViT", ECCV 2022; MobileSAM's
SAM variant). It differs from MobileSAM's file in three ways that matter here:

* the input size is free: the final reshape follows the input (MobileSAM hard-codes 64x64), so
  ``vit_t`` runs at 512 px with a 32x32 embedding;
* the attention-bias table is gathered on every call instead of being cached in an ``ab`` buffer
  when ``.eval()`` is called, so a checkpoint loaded after ``.eval()`` is never stale
  (../shared/weights/README.md, caveats);
* ``forward`` also returns the output of stage 1 (the early feature HQ-SAM fuses, 160 channels),
  and exposes the attention blocks so the MoDA token pass can read them.

Two variants share the layout: ``patch_stride=4`` (two 3x3 stride-2 convs, MobileSAM ``vit_t``)
and ``patch_stride=1`` (two 1x1 stride-1 convs, LiteMedSAM at 256 px).
"""

from __future__ import annotations

import itertools
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Conv2dBN(nn.Sequential):
    """Conv2d (no bias) followed by BatchNorm2d; keys ``c.*`` and ``bn.*``."""

    def __init__(
        self, cin: int, cout: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class PatchEmbed(nn.Module):
    """Stem: (B,3,H,W) -> (B,C,H/stride,W/stride)."""

    def __init__(self, in_chans: int, embed_dim: int, stride: int) -> None:
        super().__init__()
        if stride == 4:
            ks, st, pad = 3, 2, 1
        elif stride == 1:
            ks, st, pad = 1, 1, 0
        else:
            raise ValueError(f"patch_stride must be 4 (vit_t) or 1 (LiteMedSAM), got {stride}")
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, ks, st, pad),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, ks, st, pad),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block of stage 0. (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, dim: int, expand_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden, 1)
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = Conv2dBN(hidden, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        return self.act(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Downsample between stages. (B,C,H,W) -> (B,C',H',W'); stride 1 into the 320-wide stage."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        stride = 1 if out_dim in (320, 448, 576) else 2
        self.conv1 = Conv2dBN(dim, out_dim, 1)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim, 1)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class Attention(nn.Module):
    """Window attention with a learned per-offset bias table (TinyViT).

    Keys: ``norm``, ``qkv``, ``proj``, ``attention_biases`` (heads, #offsets).
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer(
            "attention_bias_idxs",
            torch.tensor(idxs).view(len(points), len(points)),
            persistent=False,
        )

    def qkv_heads(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(B,N,C) -> q, k, v each (B,heads,N,key_dim), after the block's LayerNorm."""
        b, n, _ = x.shape
        q, k, v = (
            self.qkv(self.norm(x))
            .view(b, n, self.num_heads, 3 * self.key_dim)
            .split(self.key_dim, dim=3)
        )
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def bias(self) -> Tensor:
        """(heads, N, N) relative-position bias of one window."""
        return self.attention_biases[:, self.attention_bias_idxs]

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv_heads(x)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.bias()
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class Mlp(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear; keys ``norm``, ``fc1``, ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def window_partition(x: Tensor, w: int) -> Tuple[Tensor, Tuple[int, int]]:
    """(B,H,W,C) -> (B*nH*nW, w*w, C) after zero-padding H and W up to multiples of w."""
    b, h, wd, c = x.shape
    pb, pr = (w - h % w) % w, (w - wd % w) % w
    if pb or pr:
        x = F.pad(x, (0, 0, 0, pr, 0, pb))
    ph, pw = h + pb, wd + pr
    x = x.view(b, ph // w, w, pw // w, w, c).transpose(2, 3).reshape(-1, w * w, c)
    return x, (ph, pw)


def window_unpartition(x: Tensor, w: int, padded: Tuple[int, int], hw: Tuple[int, int]) -> Tensor:
    """Inverse of :func:`window_partition`: (B*nH*nW, w*w, C) -> (B,H,W,C)."""
    ph, pw = padded
    c = x.shape[-1]
    b = x.shape[0] // ((ph // w) * (pw // w))
    x = x.view(b, ph // w, pw // w, w, w, c).transpose(2, 3).reshape(b, ph, pw, c)
    return x[:, : hw[0], : hw[1]].contiguous()


class TinyViTBlock(nn.Module):
    """Window attention + depthwise local conv + MLP. (B,H,W,C) -> (B,H,W,C)."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.local_conv = Conv2dBN(dim, dim, 3, 1, 1, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def attend(self, x: Tensor) -> Tensor:
        """The attention branch alone (no residual). (B,H,W,C) -> (B,H,W,C)."""
        b, h, w, c = x.shape
        if h == self.window and w == self.window:
            return self.attn(x.reshape(b, h * w, c)).view(b, h, w, c)
        win, padded = window_partition(x, self.window)
        return window_unpartition(self.attn(win), self.window, padded, (h, w))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attend(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks then a downsample. (B,C,H,W) -> (B,C',H',W')."""

    def __init__(self, dim: int, depth: int, out_dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([MBConv(dim) for _ in range(depth)])
        self.downsample = PatchMerging(dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x)


class AttnStage(nn.Module):
    """Stages 1-3: TinyViT blocks, then an optional downsample. (B,C,H,W) -> (B,C',H',W')."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, window: int, out_dim: Optional[int]
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([TinyViTBlock(dim, num_heads, window) for _ in range(depth)])
        self.downsample = PatchMerging(dim, out_dim) if out_dim is not None else None

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        x = x.permute(0, 3, 1, 2)
        return self.downsample(x) if self.downsample is not None else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B,C,H,W) tensor (as in segment-anything)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class TinyViT(nn.Module):
    """TinyViT-5M encoder with the SAM neck.

    Arguments:
      patch_stride (int): 4 for MobileSAM ``vit_t`` (1024 px in), 1 for LiteMedSAM (256 px in).
      with_head (bool): keep the unused ImageNet classifier (``norm_head``, ``head``) so that
        MobileSAM-layout checkpoints load strictly.
      embed_dims, depths, num_heads, windows: the TinyViT-5M defaults.
      out_chans (int): channels of the SAM neck output.

    ``forward(x)`` takes normalised images (B,3,S,S) and returns ``(embedding, interm)``:
    embedding (B,256,S/16,S/16) for ``patch_stride=4`` (S/4 for stride 1) and the stage-1
    output (B,160,same H,W), the early feature HQ-SAM's branch fuses.
    """

    interm_channels = 160

    def __init__(
        self,
        patch_stride: int = 4,
        with_head: bool = True,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        windows: Sequence[int] = (7, 7, 14, 7),
        out_chans: int = 256,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.patch_stride = patch_stride
        self.patch_embed = PatchEmbed(3, embed_dims[0], patch_stride)
        layers: List[nn.Module] = [ConvStage(embed_dims[0], depths[0], embed_dims[1])]
        for i in range(1, len(depths)):
            out = embed_dims[i + 1] if i + 1 < len(depths) else None
            layers.append(AttnStage(embed_dims[i], depths[i], num_heads[i], windows[i], out))
        self.layers = nn.ModuleList(layers)
        if with_head:
            self.norm_head = nn.LayerNorm(embed_dims[-1])
            self.head = nn.Linear(embed_dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        return self.forward_from_stem(self.stem(x))

    def stem(self, x: Tensor) -> Tensor:
        """Patch embedding and stage 0 (convolutions, no attention): (B,3,S,S) -> (B,C0,S/4,S/4)."""
        return self.layers[0](self.patch_embed(x))

    def forward_from_stem(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """The rest of :meth:`forward` from the :meth:`stem` output."""
        interm = x
        for i in range(1, len(self.layers)):
            x = self.layers[i](x)
            if i == 1:
                interm = x
        return self.neck(x), interm
