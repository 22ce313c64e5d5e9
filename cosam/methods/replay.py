"""Experience replay as a regulariser plugin (Table 2's "ER" row = ``sequential+replay``;
protocol §4 "ER", §1.6, §8.12).

After each task, ``per_task`` of its training images enter a buffer. Training on task t uses
the current task's samples plus the buffer of every earlier task, as one list that the engine
shuffles uniformly into batches (the reference's ``ConcatDataset``: old and new images mix in
each batch, with the same prompts/augmentation as the current task). Replayed samples keep their
own task id.

Buffer selection (deterministic, filesystem-independent): a task's training list ranked by
``sha1("<seed>/<domain>/<file name>")``, first ``per_task`` kept (all of them if the task has
fewer). A different seed draws a different buffer; a larger ``per_task`` is a superset.

Deviations from the reference and why:

* The reference replays the authors' precomputed ``membank`` folders of unknown size, uncapped,
  taken in unsorted ``glob`` order (§1.6, §8.12). Those folders do not exist for our data, so the
  buffer is drawn from the training list, capped at ``per_task`` (default 10 = MoDA's
  ``--buffer_size``, so ER and MoDA use the same exemplar memory).

Resume: the buffer's file names are in ``method_state``; on load they are mapped back to the
plan's samples and checked against the deterministic selection (a mismatch means the data or
the seed changed and raises). The contents are written beside the results as
``replay_buffer.json`` = ``{task: [file names]}``.

Over any base (``decoder_tuning+replay``, ``sam_adapter+replay``) the buffer is added to the
base's own training samples; the engine loads (and, for an encoder that trains, encodes) them
like the current task's.

Cost: trainable = the base's; stored per task = ``per_task`` images (no parameters).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

from ..data.benchmark import Task
from ..errors import CheckpointError, ConfigError
from .base import Experience
from .plugins import Regulariser


@dataclass
class ReplayOptions:
    """per_task: images kept per finished task (default 10, MoDA's buffer size)."""

    per_task: int = 10

    def __post_init__(self) -> None:
        if (
            isinstance(self.per_task, bool)
            or not isinstance(self.per_task, int)
            or self.per_task < 1
        ):
            raise ConfigError(
                f"method_options.per_task must be a positive integer, got {self.per_task!r}"
            )


def select_buffer(task: Task, per_task: int, seed: int) -> List[Any]:
    """The first ``per_task`` training samples of ``task`` ranked by sha1(seed/domain/file name)."""

    def rank(s: Any) -> str:
        return hashlib.sha1(f"{seed}/{s.domain}/{s.image.name}".encode()).hexdigest()

    return sorted(task.train, key=rank)[:per_task]


class Replay(Regulariser):
    """The current task's samples plus a small exemplar buffer of every earlier task."""

    name = "replay"
    Options = ReplayOptions

    def __init__(self, host, opts: ReplayOptions) -> None:
        super().__init__(host, opts)
        #: task name -> (task id, buffered samples), in training order.
        self.buffer: Dict[str, Tuple[int, List[Any]]] = {}
        self._tasks: Dict[str, Task] = {}

    def plan(self, tasks: Sequence[Task]) -> None:
        self._tasks = {t.name: t for t in tasks}

    def training_samples(
        self, exp: Experience, samples: List[Tuple[Any, int]]
    ) -> List[Tuple[Any, int]]:
        current_names = {t.name for t in exp.tasks}
        old = [
            (s, tid)
            for name, (tid, buf) in self.buffer.items()
            if name not in current_names
            for s in buf
        ]
        return samples + old

    def after_task(self, exp: Experience, source: Any) -> None:
        for task in exp.tasks:
            self.buffer[task.name] = (
                task.task_id,
                select_buffer(task, self.opts.per_task, self.cfg.seed),
            )

    def buffer_names(self) -> Dict[str, List[str]]:
        return {name: [s.image.name for s in samples] for name, (_, samples) in self.buffer.items()}

    def method_state(self) -> Dict[str, Any]:
        return {"modules": {}, "replay_buffer": self.buffer_names()}

    def load_method_state(self, state: Dict[str, Any]) -> None:
        self.buffer = {}
        for name, files in state.get("replay_buffer", {}).items():
            task = self._tasks.get(name)
            if task is None:
                raise CheckpointError(
                    f"resume state holds a replay buffer for task {name!r}, not in this run's plan "
                    f"({', '.join(self._tasks)}); restart the run with --force"
                )
            samples = select_buffer(task, self.opts.per_task, self.cfg.seed)
            if [s.image.name for s in samples] != list(files):
                raise CheckpointError(
                    f"the replay buffer of {name!r} in the resume state differs from the one this "
                    "data and seed select; the data changed: restart the run with --force"
                )
            self.buffer[name] = (task.task_id, samples)

    def artifacts(self) -> Dict[str, Any]:
        return {"replay_buffer": self.buffer_names()}

    def cost(self, cost: Dict[str, Any]) -> Dict[str, Any]:
        cost["stored_images_per_task"] = self.opts.per_task
        return cost
