"""Elastic Weight Consolidation as a regulariser plugin (Table 2's "EWC" row = ``sequential+ewc``;
protocol §4, §8.11).

After each task, the diagonal Fisher of the base's trainable parameters
(``base.trainable_parameters()``: the HQ branch, the decoder copy, adapters + decoder) is
estimated over one pass of that task's training batches: the square of each *batch* gradient of
the seg loss (BCE + Dice), averaged over the batches (the reference's empirical-Fisher estimate).
The anchor θ* is the trainable state after that task. While training every later task::

    penalty = weight · Σ_i F_i (θ_i − θ*_i)²          (weight 10, no ½ factor, as the reference)

``fisher``:

* ``"accumulate"`` (default): F is the sum of the per-task Fishers, the standard online form
  (every earlier task keeps its importance);
* ``"last"``: F is the last task's Fisher only, the released behaviour (its file is overwritten
  after every task, §8.11).

The Fisher pass draws its batches (shuffle, prompts, loss points) from a generator seeded by
(seed, experience index), independent of the training generator, so it is deterministic and a
resumed run equals an uninterrupted one. Its batches come from the engine's ``TrainSource`` of
the task, i.e. the same data pipeline as training (cached features, or live augmentation under
``train.augment="lsj"`` as the reference's augmented loader, or the base's trainable encoder).

Resume: Fisher, anchor and the number of consolidated tasks are buffers of the plugin, hence in
``method_state``. Cost: stored = the base's + Fisher + anchor (2 × the trainable parameters),
fixed size (not per task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..losses import mask_loss
from .base import Batch, Experience
from .plugins import Regulariser, trainable_named_parameters


@dataclass
class EWCOptions:
    """weight: penalty weight (reference 10); fisher: "accumulate" (sum over tasks) or "last"
    (the released code: only the last task's Fisher)."""

    weight: float = 10.0
    fisher: str = "accumulate"

    def __post_init__(self) -> None:
        if self.fisher not in ("accumulate", "last"):
            raise ConfigError(f"method_options.fisher={self.fisher!r}; valid: accumulate, last")
        if self.weight < 0:
            raise ConfigError(f"method_options.weight must be >= 0, got {self.weight}")


def _key(name: str) -> str:
    return name.replace(".", "__")


def fisher_generator(seed: int, index: int) -> torch.Generator:
    """Generator of the Fisher pass after experience ``index`` (distinct from the training one)."""
    return torch.Generator().manual_seed(2_000_029 * int(seed) + 104_729 * (int(index) + 1) + 31)


class EWC(Regulariser):
    """A quadratic penalty towards the previous tasks' solution, weighted by the Fisher."""

    name = "ewc"
    Options = EWCOptions

    def __init__(self, host, opts: EWCOptions) -> None:
        super().__init__(host, opts)
        self.fisher = nn.Module()
        self.anchor = nn.Module()
        for n, p in trainable_named_parameters(self.base):
            self.fisher.register_buffer(_key(n), torch.zeros_like(p))
            self.anchor.register_buffer(_key(n), p.detach().clone())
        self.register_buffer("ewc_tasks", torch.zeros((), dtype=torch.long))

    def named_params(self) -> List[Tuple[str, nn.Parameter]]:
        """(name, θ) of the base's trainable parameters."""
        return trainable_named_parameters(self.base)

    def named_pairs(self) -> List[Tuple[nn.Parameter, Tensor, Tensor]]:
        """(θ, F, θ*) for every trainable parameter of the base."""
        return [
            (p, getattr(self.fisher, _key(n)), getattr(self.anchor, _key(n)))
            for n, p in self.named_params()
        ]

    def ewc_penalty(self) -> Tensor:
        """Σ F (θ − θ*)² over the base's trainable parameters (unweighted)."""
        terms = [(f * (p - a).pow(2)).sum() for p, f, a in self.named_pairs()]
        return torch.stack(terms).sum()

    def penalty(self, batch: Batch, logits: Tensor) -> Dict[str, Tensor]:
        if int(self.ewc_tasks) == 0:
            return {}
        return {"ewc": self.opts.weight * self.ewc_penalty()}

    def estimate_fisher(self, source: Any, gen: torch.Generator) -> Dict[str, Tensor]:
        """Mean over one pass of ``source`` of the squared batch gradients of the seg loss."""
        named = self.named_params()
        params = [p for _, p in named]
        sums = [torch.zeros_like(p) for p in params]
        n = 0
        host = self.host
        was_training = host.training
        host.eval()
        for batch in source.batches(gen):
            with torch.enable_grad():
                logits = host.predict(batch.embeddings, batch.interm, batch.prompts, batch.task_ids)
                loss = mask_loss(
                    logits,
                    batch.labels,
                    num_points=self.cfg.train.loss_points,
                    generator=batch.generator,
                )["loss"]
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            for s, g in zip(sums, grads):
                if g is not None:
                    s.add_(g.detach().pow(2))
            n += 1
        host.train(was_training)
        return {name: s / max(n, 1) for (name, _), s in zip(named, sums)}

    def after_task(self, exp: Experience, source: Any) -> None:
        new = self.estimate_fisher(source, fisher_generator(self.cfg.seed, exp.index))
        with torch.no_grad():
            for name, p in self.named_params():
                f = getattr(self.fisher, _key(name))
                if self.opts.fisher == "accumulate":
                    f.add_(new[name])
                else:
                    f.copy_(new[name])
                getattr(self.anchor, _key(name)).copy_(p.detach())
            self.ewc_tasks.add_(1)

    def cost(self, cost: Dict[str, Any]) -> Dict[str, Any]:
        n = sum(p.numel() for _, p in self.named_params())
        cost["stored_params_total"] = cost["stored_params_total"] + 2 * n
        cost["fisher_params"] = n
        cost["anchor_params"] = n
        return cost
