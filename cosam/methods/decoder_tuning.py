"""Decoder-Tuning: SAM's mask decoder fine-tuned sequentially (Table 2's "Decoder-Tuning" row).

Not in the released code; the reference's most likely reading (§2.3, §4): train SAM's mask
decoder, task after task, with the seg loss. A trainable deep copy of the frozen model's mask
decoder is made at construction (so the untrained method equals SAM's zero-shot output
exactly); its single-mask output (mask token 0) is the prediction. The shared ``self.model`` is
never modified (other methods in the same process use it). The prompt encoder and the image
encoder stay frozen (features are cached).

Every decoder parameter is trainable; the unused hypernetwork MLPs of the three multimask tokens
and the IoU head receive no gradient and do not move. Cost: trainable = stored = the decoder
(one copy, shared by all tasks).
"""

from __future__ import annotations

import copy

from torch import Tensor

from ..models.decoder import decode
from .base import Strategy


class DecoderTuning(Strategy):
    """A trainable copy of SAM's mask decoder, fine-tuned over the tasks."""

    name = "decoder_tuning"

    def __init__(self, model, cfg) -> None:
        super().__init__(model, cfg)
        self.decoder = copy.deepcopy(model.mask_decoder)
        self.decoder.requires_grad_(True)

    def forward_masks(self, emb, interm, sparse, dense, task_ids) -> Tensor:
        return decode(self.decoder, emb, self.model.image_pe(), sparse, dense).masks

    def cost(self):
        n = sum(p.numel() for p in self.decoder.parameters())
        return {"trainable_params": n, "stored_params_per_task": 0, "stored_params_total": n}
