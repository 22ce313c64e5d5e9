"""Learning without Forgetting on the HQ-SAM branch (Table 2's "LwF" row; reference §4, §8.11).

Before every task t > 0 the current HQ branch is copied into a frozen *teacher*. While training
task t, each batch is also decoded by the teacher with the same prompts, and the student is
pulled towards it::

    penalty = weight · mask_loss(student_logits, sigmoid(teacher_logits))

``mask_loss`` is the reference's point-sampled BCE + Dice (:func:`cosam.losses.mask_loss`) with
the teacher's probabilities as soft targets; ``weight`` is the reference's 3. The teacher sees
the current task's images only (LwF keeps no exemplars).

Deviations from the reference and why:

* The teacher is a copy of the *HQ branch* (the only trained part); SAM's own decoder is frozen
  and shared, so copying it would change nothing.
* ``distill="kl"`` (not the default) replaces the soft-target BCE + Dice by the point-sampled
  binary KL divergence, i.e. BCE minus the teacher's entropy, without Dice. The reference form
  is *not* zero when student == teacher (soft-target BCE has the teacher's entropy as its floor
  and soft Dice is not minimised at equality); the KL form is zero exactly there, which makes
  its size a readable measure of drift. Default = reference.

Resume: the teacher is a registered submodule, so it is part of ``method_state``; the flag
``teacher_active`` (a buffer) records whether a teacher has been taken.

Cost: trainable = the HQ branch; the teacher is a training-time copy (reported as
``training_state_params``), nothing extra is stored per task.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..losses import mask_loss, point_sample, uncertain_points
from .base import Batch, Experience
from ..models.hq import HQBranch
from .hq import HQOptions, HQSequential


@dataclass
class LwFOptions(HQOptions):
    """weight: distillation weight (reference 3); distill: "mask_loss" (reference: point-sampled
    BCE + Dice against sigmoid(teacher)) or "kl" (point-sampled binary KL, 0 iff equal)."""

    weight: float = 3.0
    distill: str = "mask_loss"

    def __post_init__(self) -> None:
        super().__post_init__()
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


class LwF(HQSequential):
    """HQ branch fine-tuned sequentially with distillation from the previous task's branch."""

    name = "lwf"
    Options = LwFOptions

    def __init__(self, model, cfg) -> None:
        super().__init__(model, cfg)
        self.teacher = copy.deepcopy(self.hq)
        self.teacher.requires_grad_(False)
        self.register_buffer("teacher_active", torch.zeros((), dtype=torch.bool))
        self._use_teacher = False

    def before_task(self, exp: Experience) -> None:
        if exp.index > 0:
            self.teacher.load_state_dict(self.hq.state_dict())
            self.teacher.requires_grad_(False)
            self.teacher_active.fill_(True)

    def active_branch(self) -> HQBranch:
        return self.teacher if self._use_teacher else self.hq

    @torch.no_grad()
    def teacher_logits(self, batch: Batch) -> Tensor:
        """(B,1,4e,4e) the teacher's HQ logits for the batch, same prompts."""
        self._use_teacher = True
        try:
            return self.predict(batch.embeddings, batch.interm, batch.prompts, batch.task_ids)
        finally:
            self._use_teacher = False

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

    def cost(self):
        n = sum(p.numel() for p in self.hq.parameters())
        return {"trainable_params": n, "stored_params_per_task": 0, "stored_params_total": n,
                "training_state_params": sum(p.numel() for p in self.teacher.parameters())}
