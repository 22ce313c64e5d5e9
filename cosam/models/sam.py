"""The frozen SAM-family model: image encoder, prompt encoder, mask decoder."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import Tensor, nn

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


class SamModel(nn.Module):
    """A SAM-family model whose state dict has exactly SAM's layout.

    Keys: ``image_encoder.*``, ``prompt_encoder.*`` and ``mask_decoder.*`` (segment-anything's
    ``PromptEncoder`` and ``MaskDecoder``). The encoder returns ``(embedding, interm)``.

    Arguments:
      image_encoder: module mapping (B,3,S,S) normalised images to (B,256,e,e) and (B,D,e',e').
      image_size: S, the square input side length.
      embed_stride: S / e.
      normalization: "sam" (mean/std on 0..255) or "minmax" (per image to [0, 1], LiteMedSAM).
      backbone: registry name, recorded with results.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        image_size: int,
        embed_stride: int,
        normalization: str,
        backbone: str,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.image_size = image_size
        self.embed_size = image_size // embed_stride
        self.normalization = normalization
        self.image_encoder = image_encoder
        self.prompt_encoder = PromptEncoder(
            embed_dim=256,
            image_embedding_size=(self.embed_size, self.embed_size),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
        self.register_buffer(
            "pixel_mean", torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1), persistent=False
        )
        self.checkpoint: Optional[str] = None
        self.weights_id: str = f"{backbone}-unloaded"

    @property
    def interm_channels(self) -> int:
        enc = self.image_encoder
        return int(enc.interm_channels)

    @property
    def mask_size(self) -> int:
        """Side length of the decoder's low-resolution logits (4 x embedding)."""
        return 4 * self.embed_size

    def freeze(self) -> "SamModel":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "SamModel":
        # The encoder's BatchNorm layers must never see batch statistics (weights README, caveats).
        super().train(mode)
        self.image_encoder.eval()
        return self

    def preprocess(self, images: Tensor) -> Tensor:
        """(B,3,S,S) float32 on the 0..255 scale -> normalised input for the encoder."""
        if self.normalization == "minmax":
            lo = images.amin(dim=(1, 2, 3), keepdim=True)
            hi = images.amax(dim=(1, 2, 3), keepdim=True)
            return (images - lo) / (hi - lo).clamp_min(1e-8)
        return (images - self.pixel_mean) / self.pixel_std

    def encode(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """(B,3,S,S) float 0..255 -> embedding (B,256,e,e), interm (B,D,e',e'). Gradient follows the caller."""
        return self.image_encoder(self.preprocess(images))

    def image_pe(self) -> Tensor:
        """(1,256,e,e) dense positional encoding of the embedding grid, float32 even under
        autocast (see :func:`cosam.models.decoder.embed_prompts`)."""
        with torch.autocast(self.pixel_mean.device.type, enabled=False):
            return self.prompt_encoder.get_dense_pe()
