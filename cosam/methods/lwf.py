"""Learning without Forgetting as a regulariser plugin (Table 2's "LwF" row = ``sequential+lwf``;
protocol §4, §8.11).

Before every task t > 0 the base's current trainable state is copied into a frozen *teacher*
(a copy of the base strategy that shares the frozen SAM model). While training task t, each
batch is also decoded by the teacher with the same prompts, and the student is pulled towards
it::

    penalty = weight · mask_loss(student_logits, sigmoid(teacher_logits))

``mask_loss`` is the reference's point-sampled BCE + Dice (:func:`cosam.losses.mask_loss`) with
the teacher's probabilities as soft targets; ``weight`` is the reference's 3. The teacher sees
the current task's images only (LwF keeps no exemplars). Over a base whose encoder trains
(``sam_adapter``), the teacher encodes the batch's images with its own (frozen) encoder.

Deviations from the reference and why:

* Over HQ-SAM (``lwf``) the teacher is in effect a copy of the *HQ branch* (the only trained
  part); SAM's own decoder is frozen and shared, so copying it would change nothing.
* ``distill="kl"`` (not the default) replaces the soft-target BCE + Dice by the point-sampled
  binary KL divergence, i.e. BCE minus the teacher's entropy, without Dice. The reference form
  is *not* zero when student == teacher (soft-target BCE has the teacher's entropy as its floor
  and soft Dice is not minimised at equality); the KL form is zero exactly there, which makes
  its size a readable measure of drift. Default = reference.

Resume: the teacher's trainable state (the base's ``method_state`` of the copy) and the flag
``teacher_active`` (whether a teacher has been taken) are the plugin's ``method_state``.

Cost: trainable = the base's; the teacher is a training-time copy of the base's trainable
parameters (reported as ``training_state_params``), nothing extra is stored per task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..losses import mask_loss, point_sample, uncertain_points
from .base import Batch, Experience
from .plugins import Regulariser, frozen_copy, trainable_named_parameters


@dataclass
class LwFOptions:
    """weight: distillation weight (reference 3); distill: "mask_loss" (reference: point-sampled
    BCE + Dice against sigmoid(teacher)) or "kl" (point-sampled binary KL, 0 iff equal)."""

    weight: float = 3.0
    distill: str = "mask_loss"

    def __post_init__(self) -> None:
        if self.distill not in ("mask_loss", "kl"):
            raise ConfigError(f"method_options.distill={self.distill!r}; valid: mask_loss, kl")
        if self.weight < 0:
            raise ConfigError(f"method_options.weight must be >= 0, got {self.weight}")


def binary_kl_points(student: Tensor, teacher: Tensor, num_points: int, generator=None) -> Tensor:
    """Point-sampled KL(sigmoid(teacher) || sigmoid(student)), mean over points, sum/N over masks.

    student, teacher: (N,1,h,w) logits. Points are chosen by the student's uncertainty, as in
    :func:`cosam.losses.mask_loss`. Zero iff the two agree at every sampled point.
    """
    with torch.no_grad():
        coords = uncertain_points(student, num_points, generator=generator)
        t = point_sample(teacher.float(), coords)[:, 0]
    s = point_sample(student, coords)[:, 0]
    p = torch.sigmoid(t)
    bce = F.binary_cross_entropy_with_logits(s, p, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(t, p, reduction="none")
    return (bce - entropy).mean(1).sum() / float(student.shape[0])


class LwF(Regulariser):
    """Distillation from a frozen copy of the base taken before each task t > 0."""

    name = "lwf"
    Options = LwFOptions

    def __init__(self, host, opts: LwFOptions) -> None:
        super().__init__(host, opts)
        self.teacher = frozen_copy(self.base)
        self.register_buffer("teacher_active", torch.zeros((), dtype=torch.bool))

    def before_task(self, exp: Experience) -> None:
        if exp.index > 0:
            self.teacher.load_method_state(self.base.method_state())
            self.teacher.requires_grad_(False)
            self.teacher_active.fill_(True)

    @torch.no_grad()
    def teacher_logits(self, batch: Batch) -> Tensor:
        """(B,1,4e,4e) the teacher's logits for the batch, same prompts."""
        if self.base.needs_pixels:
            if batch.images is None:
                raise ValueError(
                    f"LwF over {self.base.name} needs the batch's images (its encoder trains)"
                )
            return self.teacher.predict_images(batch.images, batch.prompts, batch.task_ids)
        return self.teacher.predict(batch.embeddings, batch.interm, batch.prompts, batch.task_ids)

    def penalty(self, batch: Batch, logits: Tensor) -> Dict[str, Tensor]:
        if not bool(self.teacher_active):
            return {}
        t = self.teacher_logits(batch)
        n = self.cfg.train.loss_points
        if self.opts.distill == "kl":
            d = binary_kl_points(logits, t, n, generator=batch.generator)
        else:
            d = mask_loss(logits, torch.sigmoid(t), num_points=n, generator=batch.generator)["loss"]
        return {"lwf": self.opts.weight * d}

    def method_state(self) -> Dict[str, Any]:
        teacher = self.teacher.method_state()["modules"]
        return {
            "modules": {
                "teacher_active": self.teacher_active,
                **{f"teacher.{k}": v for k, v in teacher.items()},
            }
        }

    def load_method_state(self, state: Dict[str, Any]) -> None:
        modules = state["modules"]
        self.teacher.load_method_state(
            {
                "modules": {
                    k[len("teacher.") :]: v for k, v in modules.items() if k.startswith("teacher.")
                }
            }
        )
        self.teacher.requires_grad_(False)
        self.teacher_active.copy_(modules["teacher_active"])

    def cost(self, cost: Dict[str, Any]) -> Dict[str, Any]:
        cost["training_state_params"] = sum(
            p.numel() for _, p in trainable_named_parameters(self.base)
        )
        return cost
