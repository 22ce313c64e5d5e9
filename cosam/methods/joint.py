"""Joint-training upper bounds of the Decoder-Tuning and SAM-Adapter bases.

Each base needs its own bound: ``joint`` trains the HQ branch (HQ-SAM's trainable part) on the
union of all tasks, which bounds the HQ-SAM family but not Decoder-Tuning (a whole mask decoder)
or SAM-Adapter (encoder adapters + decoder), whose continual runs can end above it. The bounds
here train exactly what their base trains, with its loss and options, on every task's training
images at once (one experience), and are reported on Last only (like ``joint``: no Avg or FF).
"""

from __future__ import annotations

from typing import List, Sequence

from ..data.benchmark import Task
from .base import Experience
from .decoder_tuning import DecoderTuning
from .sam_adapter import SamAdapter


class JointPlan:
    """Mixin: one experience over the union of every task."""

    def plan(self, tasks: Sequence[Task]) -> List[Experience]:
        return [Experience(0, tuple(tasks))]


class DecoderTuningJoint(JointPlan, DecoderTuning):
    """SAM's mask decoder trained on all tasks at once (Decoder-Tuning's upper bound)."""

    name = "decoder_tuning_joint"


class SamAdapterJoint(JointPlan, SamAdapter):
    """SAM-Adapter (encoder adapters + decoder) trained on all tasks at once (its upper bound)."""

    name = "sam_adapter_joint"
