"""The training template every method runs through: batches and one loop (scoring is
:mod:`cosam.evaluation`).

One loop (:func:`fit`) trains every method; methods differ only through their hooks
(:mod:`cosam.methods.base`). Each step's randomness comes from a generator seeded by (seed, step)
(:func:`task_generator`), so a resumed run equals an uninterrupted one; a whole run is
:func:`cosam.runner.run`. Device and precision come from :mod:`cosam.accel`; under ``torchrun``
the loop runs data-parallel, sharding batches and evaluation (:mod:`cosam.distributed`).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import distributed, faults
from .accel import CPU, Accel, keep_on_device
from .config import Config
from .data.prompts import Prompt, draw_prompt_types, make_prompt
from .data.reader import SamplePath, load_pair
from .data.transforms import large_scale_jitter
from .errors import ConfigError
from .features import FeatureCache, SampleStore
from .methods.base import Batch, Strategy


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def task_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one training step; depends only on (seed, step), so resume is exact.

    Arguments:
      seed (int): the run's seed.
      step (int): the training step (1 for the first experience).
    """
    return torch.Generator().manual_seed(1_000_003 * int(seed) + 7919 * int(step) + 17)


def make_prompts(labels: Tensor, cfg: Config, gen: torch.Generator, mask_size: int) -> List[Prompt]:
    """One training prompt per label, of a kind drawn from ``train.prompt_types``.

    Arguments:
      labels (torch.Tensor): (B,1,S,S) float targets in [0,1].
      cfg (Config): the run's config (``train.prompt_types``, ``train.n_points``).
      gen (torch.Generator): the step's generator (kinds, boxes, points, noisy masks).
      mask_size (int): the side of a mask prompt.
    """
    kinds = draw_prompt_types(labels.shape[0], gen, cfg.train.prompt_types)
    return [
        make_prompt(labels[i], k, gen, n_points=cfg.train.n_points, mask_size=mask_size)
        for i, k in enumerate(kinds)
    ]


class TrainSource:
    """Training batches of one experience.

    Cached mode (frozen encoder, no augmentation): features and stretched labels are gathered
    once. Live mode (``train.augment="lsj"`` or a method whose encoder trains): each batch is
    loaded, jittered and encoded through ``strategy.encode``.

    Batches are on ``accel.device`` (cached features stay there for the task when
    ``train.cache_on_device`` allows). Under torchrun each rank yields its share of every
    global batch (:mod:`cosam.distributed`).
    """

    def __init__(
        self,
        samples: Sequence[Tuple[SamplePath, int]],
        strategy: Strategy,
        cfg: Config,
        cache: FeatureCache,
        store: SampleStore,
        accel: Optional[Accel] = None,
    ) -> None:
        """
        Arguments:
          samples (list(tuple(SamplePath, int))): the (sample, task id) pairs to train on.
          strategy (Strategy): the method being trained (its encoder serves live mode).
          cfg (Config): the run's config (``train.*``, ``data.allow_nonbinary_masks``).
          cache (FeatureCache): the frozen encoder's feature cache (cached mode).
          store (SampleStore): the loaded image / mask pairs.
          accel (Accel or None): device and precision; None is the CPU.
        """
        self.samples = list(samples)
        self.strategy = strategy
        self.cfg = cfg
        self.store = store
        self.accel = accel or CPU
        self.dist = distributed.info()
        self.task_ids = torch.tensor([t for _, t in self.samples], dtype=torch.long)
        self.cached = cfg.train.augment == "none" and not strategy.needs_pixels
        self.model = strategy.model
        if (
            self.dist.enabled
            and min(cfg.train.batch_size, len(self.samples)) < self.dist.world_size
        ):
            raise ConfigError(
                f"train.batch_size={cfg.train.batch_size} on {len(self.samples)} training images "
                f"cannot feed {self.dist.world_size} processes; use fewer processes or a larger batch"
            )
        if self.cached:
            paths = [s for s, _ in self.samples]
            prefill_cache(cache, store, paths)
            self.emb, self.interm = cache.get(paths, store)
            self.labels = torch.stack([store.get(s).label for s in paths])
            nbytes = (self.emb.numel() + self.interm.numel()) * cache.dtype.itemsize
            if keep_on_device(nbytes, self.accel, cfg.train.cache_on_device):
                # stored at the cache's dtype on the device; each batch is widened to fp32
                self.emb = self.accel.move(self.emb.to(cache.dtype))
                self.interm = self.accel.move(self.interm.to(cache.dtype))

    def unsharded(self) -> "TrainSource":
        """This source yielding whole global batches on every rank (for ``after_task`` hooks)."""
        if not self.dist.enabled:
            return self
        full = copy.copy(self)
        full.dist = distributed.SINGLE
        return full

    def __len__(self) -> int:
        return len(self.samples)

    def n_batches(self) -> int:
        return max(1, len(self.samples) // self.cfg.train.batch_size)

    def batches(self, gen: torch.Generator) -> Iterator[Batch]:
        """One epoch: a seeded shuffle, full batches only (drop_last, as the reference)."""
        bs = self.cfg.train.batch_size
        perm = torch.randperm(len(self.samples), generator=gen)
        local_gen = distributed.rank_generator(gen, self.dist)
        for b in range(self.n_batches()):
            idx = distributed.shard(perm[b * bs : (b + 1) * bs], self.dist)
            yield self.batch(idx, local_gen)

    def batch(self, idx: Tensor, gen: torch.Generator) -> Batch:
        move = self.accel.move
        if self.cached:
            labels = self.labels[idx].float() / 255.0
            emb, interm, images = self.emb[idx], self.interm[idx], None
            if self.accel.is_cuda:
                emb, interm = move(emb).float(), move(interm).float()
        else:
            pairs = [
                load_pair(self.samples[i][0], self.cfg.data.allow_nonbinary_masks)
                for i in idx.tolist()
            ]
            size = self.model.image_size
            if self.cfg.train.augment == "lsj":
                out = [large_scale_jitter(im, m, size, gen) for im, m in pairs]
            else:
                out = [
                    (
                        self.store.get(self.samples[i][0], keep_image=True).image,
                        self.store.get(self.samples[i][0]).label.float() / 255.0,
                    )
                    for i in idx.tolist()
                ]
            images = move(torch.stack([o[0] for o in out]))
            labels = torch.stack([o[1] for o in out]).float()
            with self.accel.autocast():
                emb, interm = self.strategy.encode(images)
        prompts = make_prompts(labels, self.cfg, gen, self.model.mask_size)
        return Batch(emb, interm, move(labels), prompts, move(self.task_ids[idx]), images, gen)


def prefill_cache(cache: FeatureCache, store: SampleStore, samples: Sequence[SamplePath]) -> None:
    """Under torchrun, each rank encodes its share of ``samples`` into the shared disk cache
    first, so the ranks then read, rather than each recompute, every entry. No-op in one process."""
    me = distributed.info()
    if me.enabled:
        cache.get(list(samples)[me.rank :: me.world_size], store)
        distributed.barrier()


def fit(
    strategy: Strategy, source: TrainSource, cfg: Config, gen: torch.Generator, desc: str = ""
) -> Dict[str, Any]:
    """Train ``strategy.trainable_parameters()`` on ``source`` for ``train.epochs`` epochs.

    Adam (protocol §5) with StepLR. Forward passes and the loss run under ``source.accel``'s
    autocast; under torchrun the gradients are averaged over the ranks before each step and the
    loss history is that of the global batches.

    Arguments:
      strategy (Strategy): the method to train (left in eval mode).
      source (TrainSource): the experience's training batches.
      cfg (Config): the run's config (``train.*``, ``progress``).
      gen (torch.Generator): the step's generator (:func:`task_generator`).
      desc (str): the progress bar's label.

    Returns:
      (dict): ``epochs``, ``seconds`` (training time) and ``loss`` (the mean loss of each epoch).
    """
    params = strategy.trainable_parameters()
    t = cfg.train
    if not params:
        return {"epochs": 0, "seconds": 0.0, "loss": []}
    # a duck-typed source (tests, benchmarks) without these runs on the CPU in one process
    accel, me = getattr(source, "accel", CPU), getattr(source, "dist", distributed.SINGLE)
    distributed.broadcast_parameters(params)
    opt = torch.optim.Adam(
        params, lr=t.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=t.weight_decay
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=t.lr_step, gamma=t.lr_gamma)
    strategy.train()
    history: List[float] = []
    t0 = time.perf_counter()
    bar = tqdm(
        total=t.epochs * source.n_batches(),
        desc=desc or "train",
        unit="batch",
        disable=not cfg.progress or not me.is_main,
        leave=False,
    )
    for epoch in range(t.epochs):
        total, n = 0.0, 0
        for batch in source.batches(gen):
            with accel.autocast():
                logits = strategy.predict(
                    batch.embeddings, batch.interm, batch.prompts, batch.task_ids
                )
                losses = strategy.training_loss(batch, logits.float())
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if me.enabled:
                n_global = distributed.average_gradients(params, len(batch.prompts))
            opt.step()
            faults.point("train")
            if me.enabled:  # this rank's share of the global batch's mean loss
                total += float(losses["loss"].detach()) * len(batch.prompts) / n_global
            else:
                total += float(losses["loss"].detach())
            n += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{total / n:.3f}")
        sched.step()
        if me.enabled:
            total = distributed.all_reduce_sum([total], accel.device)[0]
        history.append(total / max(n, 1))
    bar.close()
    distributed.assert_in_sync(params)
    strategy.eval()
    return {"epochs": t.epochs, "seconds": time.perf_counter() - t0, "loss": history}
