"""Scoring a method on the test sets: one set per task and the probe, one GT box per image.

:func:`make_eval_sets` builds the sets once per run (cached features, or samples for a method
whose encoder trains), :func:`evaluate` scores a method on some of them (the task matrix's row),
and :func:`row_sets` picks a row's sets (the tasks not trained yet are skipped unless
``eval.unseen_tasks``). The training loop is :mod:`cosam.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import distributed, faults, metrics
from .accel import CPU, Accel
from .config import Config
from .data.benchmark import Benchmark, Task
from .data.prompts import Prompt
from .data.reader import SamplePath
from .engine import prefill_cache
from .features import FeatureCache, SampleStore
from .methods.base import Strategy
from .metrics import dataset_scores, score_logits


@dataclass
class EvalSet:
    """A test set ready to score: cached features (or samples to encode), boxes and original masks;
    ``probe`` marks the natural-image probe's set (scored after every step)."""

    name: str
    task_id: int
    samples: List[SamplePath]
    boxes: Tensor
    gts: List[Tensor]
    emb: Optional[Tensor] = None
    interm: Optional[Tensor] = None
    gt_boundaries: Optional[List[Optional[Tensor]]] = None
    probe: bool = False

    def boundary_indices(self, sl: slice) -> Optional[List[Tensor]]:
        """:func:`cosam.metrics.boundary_index` of the ground truths in ``sl``, each computed once
        per set and reused by the run's later evaluations (None under ``reference_metrics``)."""
        if metrics.reference_metrics_active():
            return None
        if self.gt_boundaries is None:
            self.gt_boundaries = [None] * len(self.gts)
        out = []
        for i in range(len(self.gts))[sl]:
            if self.gt_boundaries[i] is None:
                self.gt_boundaries[i] = metrics.boundary_index(self.gts[i])
            out.append(self.gt_boundaries[i])
        return out


def make_eval_sets(
    bench: Benchmark, cache: FeatureCache, store: SampleStore, encode_now: bool
) -> List[EvalSet]:
    """One set per task (and the probe) on the benchmark's evaluation split (``bench.eval_split``:
    test, or validation, where there is no probe).

    Arguments:
      bench (Benchmark): the run's benchmark.
      cache (FeatureCache): the frozen encoder's feature cache.
      store (SampleStore): the loaded image / mask pairs.
      encode_now (bool): fill the sets' features from the cache (False for a method whose
        encoder trains: its images are encoded at each evaluation).

    Returns:
      (list(EvalSet)): one per task, the probe last.
    """
    sets = []
    split = bench.eval_split
    if encode_now:
        prefill_cache(cache, store, [s for t in bench.with_probe() for s in t.eval_samples(split)])
    for task in bench.with_probe():
        samples = list(task.eval_samples(split))
        items = [store.get(s) for s in samples]
        boxes = torch.stack([i.box for i in items])
        es = EvalSet(
            task.name,
            task.task_id,
            samples,
            boxes,
            [i.gt for i in items],
            probe=bench.probe is not None and task.name == bench.probe.name,
        )
        if encode_now:
            es.emb, es.interm = cache.get(es.samples, store)
        sets.append(es)
    return sets


def row_sets(sets: Sequence[EvalSet], trained: Iterable[Task], cfg: Config) -> List[EvalSet]:
    """The sets a task-matrix row scores after training ``trained``: every set under
    ``eval.unseen_tasks``, else the trained tasks' and the probe's.

    Arguments:
      sets (list(EvalSet)): the run's sets (:func:`make_eval_sets`), in their order.
      trained (Iterable[Task]): the tasks trained so far.
      cfg (Config): the run's config (``eval.unseen_tasks``).

    Returns:
      (list(EvalSet)): the sets to score, in the order of ``sets``.
    """
    if cfg.eval.unseen_tasks:
        return list(sets)
    names = {t.name for t in trained}
    return [es for es in sets if es.probe or es.name in names]


@torch.no_grad()
def evaluate(
    strategy: Strategy,
    sets: Sequence[EvalSet],
    cfg: Config,
    store: SampleStore,
    accel: Optional[Accel] = None,
) -> Tuple[Dict[str, float], Dict[str, float], Dict[str, list]]:
    """Dataset IoU and BIoU (mean over images) of every set, with a GT-box prompt per image.

    Under torchrun the batches are dealt round-robin over the ranks and the scores gathered, so
    every rank returns the whole result (each batch is the same as in one process).

    Arguments:
      strategy (Strategy): the method to evaluate (set to eval mode).
      cfg (Config): the run's config (``eval.batch_size``).
      sets (list(EvalSet)): the sets to score (:func:`make_eval_sets`).
      store (SampleStore): the loaded pairs (images of sets without features).
      accel (Accel or None): device and precision; None is the CPU.

    Returns:
      (tuple(dict, dict, dict)): IoU and BIoU per set name, and each set's per-image
        (IoU, BIoU) pairs.
    """
    strategy.eval()
    accel = accel or CPU
    me = distributed.info()
    iou: Dict[str, float] = {}
    biou: Dict[str, float] = {}
    per_image: Dict[str, list] = {}
    bs = cfg.eval.batch_size
    mine: Dict[Tuple[int, int], list] = {}
    k = 0
    for si, es in enumerate(sets):
        scores = []
        for start in range(0, len(es.samples), bs):
            k += 1
            if (k - 1) % me.world_size != me.rank:
                continue
            sl = slice(start, start + bs)
            with accel.autocast():
                prompts = [
                    Prompt(kind="box", box=b, points=None, point_labels=None, mask=None)
                    for b in es.boxes[sl]
                ]
                tids = accel.move(torch.full((len(prompts),), es.task_id, dtype=torch.long))
                if es.emb is not None:
                    logits = strategy.predict(
                        accel.move(es.emb[sl]),
                        accel.move(es.interm[sl]),
                        prompts,
                        tids,
                        samples=es.samples[sl],
                    )
                else:
                    images = accel.move(
                        torch.stack([store.get(s, keep_image=True).image for s in es.samples[sl]])
                    )
                    logits = strategy.predict_images(images, prompts, tids, samples=es.samples[sl])
            batch_scores = score_logits(
                logits.float(), es.gts[sl], gt_boundaries=es.boundary_indices(sl)
            )
            scores.extend(batch_scores)
            mine[(si, start)] = batch_scores
        if me.enabled:
            continue
        per_image[es.name] = scores
        faults.point("eval")
        iou[es.name], biou[es.name] = dataset_scores(scores)
    if me.enabled:
        chunks: Dict[Tuple[int, int], list] = {}
        for part in distributed.gather_objects(mine):
            chunks.update(part)
        for si, es in enumerate(sets):
            scores = [s for start in range(0, len(es.samples), bs) for s in chunks[(si, start)]]
            per_image[es.name] = scores
            faults.point("eval")
            iou[es.name], biou[es.name] = dataset_scores(scores)
    strategy.after_eval()
    return iou, biou, per_image
