"""Official SAM ViT-B/L/H encoder that also returns HQ-SAM's early feature."""

from __future__ import annotations

from typing import Tuple

from segment_anything.modeling import ImageEncoderViT
from torch import Tensor


class ViTEncoder(ImageEncoderViT):
    """segment-anything's ``ImageEncoderViT`` (same state-dict layout) returning two tensors.

    ``forward(x)``: x (B,3,1024,1024) normalised -> (embedding (B,256,64,64), interm (B,D,64,64)),
    where interm is the output of the first global-attention block (block 2 of ViT-B, 5 of ViT-L,
    7 of ViT-H), the feature upstream HQ-SAM fuses. The released CoSAM code patched every block to
    global attention and fed block 0's output instead (protocol §2.2); cosam runs the official
    encoder.
    """

    def __init__(self, *args, global_attn_indexes: Tuple[int, ...] = (), **kwargs) -> None:
        super().__init__(*args, global_attn_indexes=tuple(global_attn_indexes), **kwargs)
        self.interm_index = int(global_attn_indexes[0])
        self.interm_channels = self.patch_embed.proj.out_channels

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:  # type: ignore[override]
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        interm = x
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == self.interm_index:
                interm = x
        return self.neck(x.permute(0, 3, 1, 2)), interm.permute(0, 3, 1, 2)
