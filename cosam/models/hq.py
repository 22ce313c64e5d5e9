"""HQ-SAM's trainable branch on top of a frozen SAM mask decoder (protocol §2.1).

Parts (names as in SysCV/sam-hq ``MaskDecoderHQ``): ``hf_token`` (1x256), ``hf_mlp``
(256->256->256->32), ``compress_vit_feat`` (ConvT D->256, LN, GELU, ConvT 256->32; D = the
encoder's early-feature width: 768 ViT-B, 1024 ViT-L, 1280 ViT-H, 160 TinyViT),
``embedding_encoder`` (ConvT 256->64, LN, GELU, ConvT 64->32) and ``embedding_maskfeature``
(Conv3 32->64, LN, GELU, Conv3 64->32).

Initialisation: the pretrained HQ decoder the reference starts from is not available, so the
branch starts from SAM itself: ``hf_token`` and ``hf_mlp`` are copies of mask token 0 and its
hypernetwork MLP, the last layer of each fusion path is zero, and the fused feature is
``upscaled_sam + embedding_maskfeature(upscaled_sam) + hq_features`` (HQ-SAM omits the first
term; with it, a zero-initialised branch reproduces SAM's mask exactly). With the one-way
decoder pass (:mod:`cosam.models.decoder`) the untrained HQ mask therefore equals the frozen SAM
mask, and training starts from SAM's zero-shot quality.
"""

from __future__ import annotations

import copy

import torch
from segment_anything.modeling import MaskDecoder
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP
from torch import Tensor, nn

from .fastpath import conv_ln_gelu, enabled, folded_conv3, folded_convt2, project


class HQBranch(nn.Module):
    """Trainable HQ parts; ``forward`` returns HQ mask logits (B,1,4e,4e)."""

    def __init__(self, interm_channels: int, base: MaskDecoder, transformer_dim: int = 256) -> None:
        super().__init__()
        d = transformer_dim
        self.hf_token = nn.Embedding(1, d)
        self.hf_mlp = MLP(d, d, d // 8, 3)
        self.compress_vit_feat = nn.Sequential(
            nn.ConvTranspose2d(interm_channels, d, 2, 2),
            LayerNorm2d(d),
            nn.GELU(),
            nn.ConvTranspose2d(d, d // 8, 2, 2),
        )
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(d, d // 4, 2, 2),
            LayerNorm2d(d // 4),
            nn.GELU(),
            nn.ConvTranspose2d(d // 4, d // 8, 2, 2),
        )
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(d // 8, d // 4, 3, 1, 1),
            LayerNorm2d(d // 4),
            nn.GELU(),
            nn.Conv2d(d // 4, d // 8, 3, 1, 1),
        )
        self.reset_from(base)

    @torch.no_grad()
    def reset_from(self, base: MaskDecoder) -> None:
        """Start from SAM: copy mask token 0 and its MLP, zero the last layer of each fusion path."""
        self.hf_token.weight.copy_(base.mask_tokens.weight[:1])
        self.hf_mlp.load_state_dict(copy.deepcopy(base.output_hypernetworks_mlps[0].state_dict()))
        for seq in (self.compress_vit_feat, self.embedding_encoder, self.embedding_maskfeature):
            nn.init.zeros_(seq[-1].weight)
            nn.init.zeros_(seq[-1].bias)

    def tokens(self) -> Tensor:
        """(1,256) the HQ output token, appended to the decoder's tokens."""
        return self.hf_token.weight

    def forward(
        self, hf_out: Tensor, upscaled_sam: Tensor, image_embeddings: Tensor, interm: Tensor
    ) -> Tensor:
        """
        Arguments:
          hf_out (Tensor): (B,256) the HQ token after the decoder transformer.
          upscaled_sam (Tensor): (B,32,4e,4e) SAM's upscaled features.
          image_embeddings (Tensor): (B,256,e,e).
          interm (Tensor): (B,D,e,e) early encoder feature.

        Returns:
          (Tensor): (B,1,4e,4e) HQ mask logits.
        """
        enc, vit, mf = self.embedding_encoder, self.compress_vit_feat, self.embedding_maskfeature
        if not enabled("fold"):
            if not enabled("layernorm"):
                return self.reference_forward(hf_out, upscaled_sam, image_embeddings, interm)
            hq = enc[3](conv_ln_gelu(enc, image_embeddings)) + vit[3](conv_ln_gelu(vit, interm))
            feat = upscaled_sam + mf[3](conv_ln_gelu(mf, upscaled_sam)) + hq
            return project(feat, self.hf_mlp(hf_out))
        # The last layer of each fusion path is linear and the mask is h · (sum of the paths):
        # fold h into those layers (one output channel instead of 32); see cosam.models.fastpath.
        h = self.hf_mlp(hf_out)
        up = upscaled_sam
        if enabled("layernorm"):
            up = up.contiguous(memory_format=torch.channels_last)
        out = project(up, h)
        out = out + folded_convt2(h, enc[3], conv_ln_gelu(enc, image_embeddings))
        out = out + folded_convt2(h, vit[3], conv_ln_gelu(vit, interm))
        return out + folded_conv3(h, mf[3], conv_ln_gelu(mf, up))

    def reference_forward(
        self, hf_out: Tensor, upscaled_sam: Tensor, image_embeddings: Tensor, interm: Tensor
    ) -> Tensor:
        """:meth:`forward` computed literally (32-channel fusion, element-wise LayerNorm2d)."""
        hq = self.embedding_encoder(image_embeddings) + self.compress_vit_feat(interm)
        feat = upscaled_sam + self.embedding_maskfeature(upscaled_sam) + hq
        b, c, h, w = feat.shape
        return (self.hf_mlp(hf_out).unsqueeze(1) @ feat.reshape(b, c, h * w)).view(b, 1, h, w)
