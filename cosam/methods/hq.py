"""HQ-SAM sequential fine-tuning and the joint upper bound.

``sequential`` (Table 2's "HQ-SAM", the reference's ``--CLmethod naive``): one HQ branch trained
task after task with the reference loss; SAM stays frozen. Its evaluation output is the HQ mask.

``joint``: one HQ branch trained once on the union of all training sets for the same number of
epochs: the upper bound the released code mislabels (its "joint" runs sequentially, §8.8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch
from torch import Tensor

from ..data.benchmark import Task
from ..data.prompts import Prompt
from ..models.decoder import decode, embed_prompts, group_by_kind
from ..models.hq import HQBranch
from .base import Experience, Strategy


@dataclass
class HQOptions:
    """hq_attention: "one_way" (cosam: the HQ token reads SAM's tokens, SAM's outputs unchanged, so
    the untrained branch equals SAM) or "full" (HQ-SAM: the token joins the decoder's attention)."""

    hq_attention: str = "one_way"

    def __post_init__(self) -> None:
        if self.hq_attention not in ("one_way", "full"):
            from ..errors import ConfigError

            raise ConfigError(
                f"method_options.hq_attention={self.hq_attention!r}; valid: one_way, full"
            )


class HQSequential(Strategy):
    """HQ branch fine-tuned sequentially over the tasks."""

    name = "sequential"
    Options = HQOptions

    def __init__(self, model, cfg) -> None:
        super().__init__(model, cfg)
        self.hq = HQBranch(model.interm_channels, model.mask_decoder)

    def hq_logits(
        self, hq: HQBranch, emb: Tensor, interm: Tensor, sparse: Tensor, dense: Tensor
    ) -> Tensor:
        """(B,1,4e,4e) HQ mask logits of branch ``hq``."""
        out = decode(
            self.model.mask_decoder,
            emb,
            self.model.image_pe(),
            sparse,
            dense,
            extra_tokens=hq.tokens(),
            one_way=self.opts.hq_attention == "one_way",
        )
        return hq(out.extra[:, 0], out.upscaled, emb, interm)

    def active_branch(self) -> HQBranch:
        """The branch ``predict`` uses (LwF swaps in its teacher)."""
        return self.hq

    def forward_masks(self, emb, interm, sparse, dense, task_ids) -> Tensor:
        return self.hq_logits(self.active_branch(), emb, interm, sparse, dense)

    def predict(
        self,
        emb: Tensor,
        interm: Tensor,
        prompts: Sequence[Prompt],
        task_ids: Tensor,
        samples: Optional[Sequence[Any]] = None,
    ) -> Tensor:
        """Decode each prompt kind separately, then run the HQ branch once on the whole batch.

        Same result as the per-group default; the branch's convolutions at 4e x 4e dominate the
        step on the CPU and run far faster on one batch of B than on up to three smaller ones.
        """
        hq = self.active_branch()
        one_way = self.opts.hq_attention == "one_way"
        hf: Optional[Tensor] = None
        up: Optional[Tensor] = None
        groups = group_by_kind(prompts)
        if len(groups) == 1:  # one prompt kind (every evaluation batch): no gather / scatter
            sparse, dense = embed_prompts(self.model.prompt_encoder, list(prompts), emb.device)
            out = decode(
                self.model.mask_decoder,
                emb,
                self.model.image_pe(),
                sparse,
                dense,
                extra_tokens=hq.tokens(),
                one_way=one_way,
            )
            return hq(out.extra[:, 0], out.upscaled, emb, interm)
        for idx in groups:
            sparse, dense = embed_prompts(
                self.model.prompt_encoder, [prompts[i] for i in idx], emb.device
            )
            ix = torch.tensor(idx, device=emb.device)
            out = decode(
                self.model.mask_decoder,
                emb[ix],
                self.model.image_pe(),
                sparse,
                dense,
                extra_tokens=hq.tokens(),
                one_way=one_way,
            )
            if hf is None or up is None:
                hf = out.extra.new_zeros((len(prompts),) + out.extra.shape[2:])
                up = out.upscaled.new_zeros((len(prompts),) + out.upscaled.shape[1:])
            hf = hf.index_copy(0, ix, out.extra[:, 0])
            up = up.index_copy(0, ix, out.upscaled)
        assert hf is not None and up is not None
        return hq(hf, up, emb, interm)

    def cost(self):
        n = sum(p.numel() for p in self.hq.parameters())
        return {"trainable_params": n, "stored_params_per_task": 0, "stored_params_total": n}


class Joint(HQSequential):
    """One HQ branch trained on the union of all tasks (upper bound; reported on Last only)."""

    name = "joint"

    def plan(self, tasks: Sequence[Task]) -> List[Experience]:
        return [Experience(0, tuple(tasks))]
