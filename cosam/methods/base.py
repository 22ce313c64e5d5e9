"""Strategy base class: what a continual method adds to the one training loop.

The engine (:mod:`cosam.engine`) owns the loop: for each experience it calls the hooks below in
this order (Avalanche's plugin style, without the framework)::

    before_task(exp)                       # snapshot a teacher, grow a pool, ...
    for epoch, for batch:
        logits = predict(batch.features, batch.prompts, batch.task_ids)
        losses = training_loss(batch, logits)  # seg loss + penalty(batch, logits)
        backward, optimizer step
    after_task(exp, source)                # Fisher, buffers, router, ...

and evaluates with ``predict`` under ``torch.no_grad``. A method is a small subclass: it builds
its trainable modules in ``__init__``, returns them from ``trainable_parameters`` and overrides
``forward_masks`` and whichever hooks it needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..data.benchmark import Task
from ..data.prompts import Prompt
from ..losses import mask_loss
from ..models.decoder import embed_prompts, kind_groups, scatter_groups
from ..models.sam import SamModel
from ..schema import Config, from_dict


@dataclass
class Batch:
    """One training batch.

    Attributes:
      embeddings: (B,256,e,e) encoder output; interm: (B,D,e',e') early feature.
      labels: (B,1,S,S) float targets in [0,1] at the input resolution.
      prompts: B prompts (one kind per image; kinds may mix in a batch).
      task_ids: (B,) int64 task identity (domain id, independent of the order).
      images: (B,3,S,S) float 0..255, only when the encoder is not cached.
      generator: the run's torch.Generator (loss point sampling, ...).
    """

    embeddings: Tensor
    interm: Tensor
    labels: Tensor
    prompts: List[Prompt]
    task_ids: Tensor
    images: Optional[Tensor] = None
    generator: Optional[torch.Generator] = None


@dataclass
class Experience:
    """One training step of the sequence: usually one task; the joint bound trains on all at once."""

    index: int
    tasks: Tuple[Task, ...]

    @property
    def name(self) -> str:
        return self.tasks[0].name if len(self.tasks) == 1 else "joint"


@dataclass
class NoOptions:
    """This method has no options."""


class Strategy(nn.Module):
    """Base class; the defaults train nothing and predict with SAM's own decoder."""

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True
    #: True when encoder features depend on trainable parameters (no feature cache).
    needs_pixels: ClassVar[bool] = False
    Options: ClassVar[type] = NoOptions
    #: Bump (in the subclass) with any change that alters this method's numbers: its finished and
    #: unfinished runs are then not reused (recorded as config.json's resolved.identity).
    code_version: ClassVar[int] = 1

    def __init__(self, model: SamModel, cfg: Config) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.opts = from_dict(self.Options, cfg.method_options, where="method_options.")

    def reads_block_inputs(self) -> bool:
        """Whether this run reads MoDA's block-input cache (then the run's feature pass fills
        it too: :meth:`cosam.features.FeatureCache.capture_blocks`)."""
        return False

    # ---- the sequence -----------------------------------------------------------------
    def plan(self, tasks: Sequence[Task]) -> List[Experience]:
        """Experiences in training order (default: one per task)."""
        return [Experience(i, (t,)) for i, t in enumerate(tasks)]

    # ---- hooks --------------------------------------------------------------------------
    def training_samples(self, exp: Experience) -> List[Tuple[Any, int]]:
        """(sample, task_id) pairs to train on for ``exp``; replay methods add their buffer."""
        return [(s, t.task_id) for t in exp.tasks for s in t.train]

    def before_task(self, exp: Experience) -> None:
        """Called before training on ``exp``."""

    def after_task(self, exp: Experience, source: Any) -> None:
        """Called after training on ``exp``; ``source`` yields its training batches."""

    def after_eval(self) -> None:
        """Called after every evaluation of the seen tasks, on every rank under torchrun (so a
        strategy may gather what each rank saw there)."""

    def penalty(self, batch: Batch, logits: Tensor) -> Dict[str, Tensor]:
        """Extra loss terms (regularisers, distillation); summed into the loss."""
        return {}

    # ---- model ----------------------------------------------------------------------------
    def trainable_parameters(self) -> List[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def encode(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """(B,3,S,S) 0..255 -> (embedding, interm). Frozen by default."""
        with torch.no_grad():
            return self.model.encode(images)

    def forward_masks(
        self, emb: Tensor, interm: Tensor, sparse: Tensor, dense: Tensor, task_ids: Tensor
    ) -> Tensor:
        """Mask logits (B,1,4e,4e) for one group of same-kind prompts. Default: SAM's decoder."""
        from ..models.decoder import decode

        return decode(self.model.mask_decoder, emb, self.model.image_pe(), sparse, dense).masks

    def predict(
        self,
        emb: Tensor,
        interm: Tensor,
        prompts: Sequence[Prompt],
        task_ids: Tensor,
        samples: Optional[Sequence[Any]] = None,
    ) -> Tensor:
        """Mask logits (B,1,4e,4e) for a batch whose prompts may be of mixed kinds.

        ``task_ids`` are the images' true domains: methods may use them during training (and for
        bookkeeping) but never to choose a model at evaluation. ``samples`` (the images' files,
        at evaluation) lets a method look up per-image data of its own, e.g. MoDA's token inputs.
        """

        def run(ix: Tensor) -> Tensor:
            sparse, dense = embed_prompts(
                self.model.prompt_encoder, [prompts[i] for i in ix.tolist()], emb.device
            )
            return self.forward_masks(emb[ix], interm[ix], sparse, dense, task_ids[ix])

        return scatter_groups(len(prompts), kind_groups(prompts, emb.device), run)

    def predict_images(
        self,
        images: Tensor,
        prompts: Sequence[Prompt],
        task_ids: Tensor,
        samples: Optional[Sequence[Any]] = None,
    ) -> Tensor:
        """Evaluation from pixels (methods whose features are not cached): (B,3,S,S) 0..255 ->
        mask logits (B,1,4e,4e). Default: :meth:`encode` then :meth:`predict`."""
        emb, interm = self.encode(images)
        return self.predict(emb, interm, prompts, task_ids, samples)

    def training_loss(self, batch: Batch, logits: Tensor) -> Dict[str, Tensor]:
        losses = mask_loss(
            logits, batch.labels, num_points=self.cfg.train.loss_points, generator=batch.generator
        )
        extra = self.penalty(batch, logits)
        for k, v in extra.items():
            losses[k] = v
            losses["loss"] = losses["loss"] + v
        return losses

    # ---- bookkeeping --------------------------------------------------------------------
    def method_state(self) -> Dict[str, Any]:
        """Everything needed to resume after a task (trainable modules + method buffers)."""
        return {
            "modules": {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}
        }

    def load_method_state(self, state: Dict[str, Any]) -> None:
        missing, unexpected = self.load_state_dict(state["modules"], strict=False)
        unexpected = [k for k in unexpected if not k.startswith("model.")]
        missing = [k for k in missing if not k.startswith("model.")]
        if missing or unexpected:
            raise RuntimeError(
                f"resume state does not match method {self.name}: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )

    def cost(self) -> Dict[str, Any]:
        """Parameter counts: trainable now, and stored per task (what a deployment keeps)."""
        n = sum(p.numel() for p in self.trainable_parameters())
        return {"trainable_params": n, "stored_params_per_task": 0, "stored_params_total": n}

    def artifacts(self) -> Dict[str, Any]:
        """JSON-able records written beside the results (e.g. a replay buffer's contents)."""
        return {}

    def options_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self.opts)


class Wrapper(Strategy):
    """A strategy around a *base* strategy, ``self.base`` (built by the subclass), which owns the
    trainable modules: the model calls go to the base unless the subclass overrides them."""

    base: Strategy

    def trainable_parameters(self) -> List[nn.Parameter]:
        return self.base.trainable_parameters()

    def reads_block_inputs(self) -> bool:
        return self.base.reads_block_inputs()

    def encode(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        return self.base.encode(images)

    def forward_masks(
        self, emb: Tensor, interm: Tensor, sparse: Tensor, dense: Tensor, task_ids: Tensor
    ) -> Tensor:
        return self.base.forward_masks(emb, interm, sparse, dense, task_ids)

    def predict(
        self,
        emb: Tensor,
        interm: Tensor,
        prompts: Sequence[Prompt],
        task_ids: Tensor,
        samples: Optional[Sequence[Any]] = None,
    ) -> Tensor:
        return self.base.predict(emb, interm, prompts, task_ids, samples)

    def predict_images(
        self,
        images: Tensor,
        prompts: Sequence[Prompt],
        task_ids: Tensor,
        samples: Optional[Sequence[Any]] = None,
    ) -> Tensor:
        return self.base.predict_images(images, prompts, task_ids, samples)
