"""Run one method over a task sequence: train, evaluate every task and the probe, checkpoint.

    run(cfg) -> run folder with config.json, matrix.json, metrics.csv, per_image.csv, costs.json,
                timing.json and DONE

One loop (:func:`fit`) trains every method; methods differ only through their hooks
(:mod:`cosam.methods.base`). After every experience the whole state is checkpointed atomically
(``state/step_<t>.pt``), so a killed run resumes from the last finished task; each task draws its
randomness from a generator seeded by (seed, task index), so a resumed run equals an
uninterrupted one.

Device and precision come from :mod:`cosam.accel` (no-ops on the CPU); under ``torchrun`` the
loop runs data-parallel, sharding batches and evaluation (:mod:`cosam.distributed`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import distributed, faults, metrics
from .accel import CPU, Accel, keep_on_device, maybe_compile
from .accel import setup as setup_accel
from .config import Config, from_dict
from .data.benchmark import Benchmark, build_benchmark
from .data.custom import data_root_for, is_layout_file, load_custom_layout
from .data.prompts import Prompt, draw_prompt_types, make_prompt
from .data.reader import SamplePath, load_pair
from .data.synthetic import make_synthetic_benchmark
from .data.transforms import large_scale_jitter
from .errors import CheckpointError, ConfigError, CosamError
from .features import FeatureCache, SampleStore, default_cache_dir, feature_cache_dir
from .io import REPO_ROOT, provenance, read_json, torch_save, write_csv, write_json
from .matrix import TaskMatrix
from .methods import get_method
from .methods.base import Batch, Strategy
from .metrics import score_logits
from .models.registry import build_sam, find_checkpoint
from .models.sam import SamModel
from .rundir import RunDir

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Resolving data, model and folders
# ---------------------------------------------------------------------------------------------


#: training pairs per domain the generated benchmark keeps after the validation carve
SYNTHETIC_TRAIN = 12


def _synthetic_root(cfg: Config) -> Path:
    """The generated benchmark for ``cfg``: SYNTHETIC_TRAIN training pairs per domain plus the
    ``data.val_cap`` that the validation split carves out of them (the ``cpu`` profile holds out
    16, more than the 12 a fixed size would give), in ``<cache>/synthetic-data``."""
    return make_synthetic_benchmark(
        default_cache_dir(cfg) / "synthetic-data", n_train=SYNTHETIC_TRAIN + cfg.data.val_cap
    )


def resolve_data_root(cfg: Config) -> Path:
    """``data.root`` -> the ``root`` of a custom layout file -> ``$COSAM_DATA`` ->
    ``../shared/data/cosam-mini`` -> generated synthetic data."""
    root = cfg.data.root
    if is_layout_file(cfg.data.layout):
        # a layout file's own root wins over the generated data of a profile (smoke)
        given = Path(root).expanduser() if root and root != "synthetic" else None
        own = data_root_for(load_custom_layout(Path(cfg.data.layout)), given)
        if own is not None:
            return own
    if root == "synthetic":
        return _synthetic_root(cfg)
    if root:
        return Path(root).expanduser()
    env = os.environ.get("COSAM_DATA")
    if env:
        return Path(env).expanduser()
    shared = REPO_ROOT.parent / "shared" / "data" / "cosam-mini"
    if shared.is_dir():
        return shared
    if cfg.data.synthetic_if_missing:
        log.warning(
            "no data found (data.root, $COSAM_DATA, %s): using a generated SYNTHETIC benchmark",
            shared,
        )
        return _synthetic_root(cfg)
    raise CosamError(
        f"no benchmark data: set data.root or COSAM_DATA, or place cosam-mini at {shared}"
    )


def build_model(cfg: Config) -> SamModel:
    """The frozen SAM model of ``cfg.model``, falling back to ``fallback_backbone`` if its weights are absent."""
    m = cfg.model
    wdir = Path(m.weights_dir) if m.weights_dir else None
    if (
        m.pretrained
        and not m.checkpoint
        and find_checkpoint(m.backbone, wdir) is None
        and m.fallback_backbone
    ):
        if find_checkpoint(m.fallback_backbone, wdir) is not None:
            log.warning(
                "no %s checkpoint found; falling back to %s at %s px",
                m.backbone,
                m.fallback_backbone,
                m.fallback_image_size,
            )
            return build_sam(m.fallback_backbone, None, m.fallback_image_size, wdir)
    return build_sam(
        m.backbone, Path(m.checkpoint) if m.checkpoint else None, m.image_size, wdir, m.pretrained
    )


def run_dir_for(cfg: Config) -> Path:
    """The folder ``cfg`` writes (:meth:`cosam.rundir.RunDir.for_config`)."""
    return RunDir.for_config(cfg).path


# ---------------------------------------------------------------------------------------------
# Training batches
# ---------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def task_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one training step; depends only on (seed, step), so resume is exact."""
    return torch.Generator().manual_seed(1_000_003 * int(seed) + 7919 * int(step) + 17)


def make_prompts(labels: Tensor, cfg: Config, gen: torch.Generator, mask_size: int) -> List[Prompt]:
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


# ---------------------------------------------------------------------------------------------
# The one training loop and evaluation
# ---------------------------------------------------------------------------------------------


def fit(
    strategy: Strategy, source: TrainSource, cfg: Config, gen: torch.Generator, desc: str = ""
) -> Dict[str, Any]:
    """Train ``strategy.trainable_parameters()`` on ``source`` for ``train.epochs`` epochs.

    Adam (protocol §5) with StepLR; returns loss history and timing. Forward passes and the
    loss run under ``source.accel``'s autocast; under torchrun the gradients are averaged over
    the ranks before each step and the loss history is that of the global batches.
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


@dataclass
class EvalSet:
    """A test set ready to score: cached features (or samples to encode), boxes and original masks."""

    name: str
    task_id: int
    samples: List[SamplePath]
    boxes: Tensor
    gts: List[Tensor]
    emb: Optional[Tensor] = None
    interm: Optional[Tensor] = None
    gt_boundaries: Optional[List[Optional[Tensor]]] = None

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
    test, or validation, where there is no probe)."""
    sets = []
    split = bench.eval_split
    if encode_now:
        prefill_cache(
            cache,
            store,
            [s for t in bench.with_probe() for s in t.eval_samples(split)],
        )
    for task in bench.with_probe():
        samples = list(task.eval_samples(split))
        items = [store.get(s) for s in samples]
        es = EvalSet(
            task.name,
            task.task_id,
            samples,
            torch.stack([i.box for i in items]),
            [i.gt for i in items],
        )
        if encode_now:
            es.emb, es.interm = cache.get(es.samples, store)
        sets.append(es)
    return sets


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
        iou[es.name] = sum(s[0] for s in scores) / len(scores)
        biou[es.name] = sum(s[1] for s in scores) / len(scores)
    if me.enabled:
        chunks: Dict[Tuple[int, int], list] = {}
        for part in distributed.gather_objects(mine):
            chunks.update(part)
        for si, es in enumerate(sets):
            scores = [s for start in range(0, len(es.samples), bs) for s in chunks[(si, start)]]
            per_image[es.name] = scores
            faults.point("eval")
            iou[es.name] = sum(s[0] for s in scores) / len(scores)
            biou[es.name] = sum(s[1] for s in scores) / len(scores)
    strategy.after_eval()
    return iou, biou, per_image


# ---------------------------------------------------------------------------------------------
# A whole run
# ---------------------------------------------------------------------------------------------


# Where a run is written and how it reports progress never change its numbers. ``threads`` does
# (torch's CPU kernels split reductions by thread), but the config's value may be None ("torch's
# default"), so the thread count actually used is compared instead (run_identity: "threads").
_IGNORED_FOR_RESUME = ("progress", "threads", "results_dir", "cache_dir")

RESULTS_SCHEMA = 3
"""Version of what a run's numbers mean and how they are computed, shared by every method.

Bump it with any change that alters the numbers of an existing configuration (data handling,
evaluation, the training loop, metrics); a finished or unfinished run recorded under another
version is then not reused. A change to one method bumps that method's ``code_version``
instead (:class:`cosam.methods.base.Strategy`). 1: runs before identities were recorded.
2: identities recorded. 3: the fast decoder/HQ path (:mod:`cosam.models.fastpath`), whose
trained matrices differ from 2's by up to about 2e-3 (float order of operations).
"""


def data_fingerprint(bench: Benchmark) -> str:
    """sha1 over every pair a run reads: task, split, name and the bytes of image and mask.

    Covers each task's train pairs and its evaluation split (``bench.eval_split``: test plus the
    probe, or validation), in training order. Only file names enter, not folders, so a moved
    copy of the same data has the same fingerprint; an edited, added or removed file changes it.
    All of cosam-mini (37 MB) hashes in well under a second.

    Arguments:
      bench (Benchmark): the benchmark a run uses.

    Returns:
      (str): the hex digest.
    """
    h = hashlib.sha1()
    split = bench.eval_split
    for task in bench.with_probe():
        for part, samples in (("train", task.train), (split, task.eval_samples(split))):
            for s in samples:
                h.update(f"{task.name}/{part}/{s.name}\n".encode())
                h.update(hashlib.sha1(Path(s.image).read_bytes()).digest())
                h.update(hashlib.sha1(Path(s.mask).read_bytes()).digest())
    return h.hexdigest()


def method_version(method_cls: Any) -> str:
    """``"<method>/<code_version>"``, e.g. ``"sequential/1"``."""
    return f"{method_cls.name or method_cls.__name__}/{getattr(method_cls, 'code_version', 1)}"


def run_identity(
    bench: Benchmark, model: SamModel, accel: Accel, method_cls: Any
) -> Dict[str, Any]:
    """What decides a run's numbers beyond its config: recorded in config.json (``resolved.identity``)
    and compared before a finished run is reused or an unfinished one resumed.

    Returns:
      (dict): results_schema, method (name and its ``code_version``), threads (torch's intra-op
        thread count in use), device type and name, precision, tf32, world_size, weights_id
        (hash of the checkpoint file, or "<backbone>-random"), data_sha1 (:func:`data_fingerprint`).
    """
    described = accel.describe()
    return {
        "results_schema": RESULTS_SCHEMA,
        "method_version": method_version(method_cls),
        "threads": torch.get_num_threads(),
        "device": accel.device.type,
        "device_name": described["device_name"],
        "precision": accel.precision,
        "tf32": accel.tf32,
        "world_size": distributed.info().world_size,
        "weights_id": model.weights_id,
        "data_sha1": data_fingerprint(bench),
    }


def static_identity(cfg: Config) -> Dict[str, Any]:
    """The part of :func:`run_identity` known without data or model: the code versions, and the
    thread count when the config fixes it. What ``aggregate`` can check of a finished run."""
    method_cls = get_method(cfg.method)
    out: Dict[str, Any] = {
        "results_schema": RESULTS_SCHEMA,
        "method_version": method_version(method_cls),
    }
    if cfg.threads:
        out["threads"] = cfg.threads
    return out


def _flat(d: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "method_options":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(
    old_meta: Dict[str, Any], cfg: Config, identity: Optional[Dict[str, Any]] = None
) -> List[str]:
    """What differs between a recorded run (its config.json) and a run of ``cfg`` now.

    Arguments:
      old_meta (dict): the recorded config.json.
      cfg (Config): the config of the run asked for.
      identity (dict or None): :func:`run_identity` of the run asked for; None compares
        :func:`static_identity` only. Every key it holds must be recorded with the same value.

    Returns:
      (list(str)): one "key: recorded X, now Y" entry per difference; empty when the recorded
        run can be reused.
    """
    old = _with_new_defaults(old_meta.get("config", {}))
    resolved = old_meta.get("resolved", {}) or {}
    used_fallback = None
    if "backbone" in resolved and "model" in old:
        used_fallback = resolved["backbone"] != old["model"]["backbone"]
    a = _flat(_comparable(old, used_fallback))
    b = _flat(_comparable(cfg.to_dict(), used_fallback))
    diffs = [
        f"{k}: recorded {a.get(k, '(absent)')!r}, now {b.get(k, '(absent)')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, "(absent)") != b.get(k, "(absent)")
    ]
    recorded = resolved.get("identity")
    want = identity if identity is not None else static_identity(cfg)
    if not isinstance(recorded, dict):
        diffs.append(
            f"identity: not recorded (a run of results schema 1, made before the thread count, device, "
            f"data content and code version were recorded), now {want!r}"
        )
        return diffs
    for k, v in want.items():
        if recorded.get(k, "(absent)") != v:
            diffs.append(f"{k}: recorded {recorded.get(k, '(absent)')!r}, now {v!r}")
    return diffs


def check_reusable(
    run_dir: Path, cfg: Config, identity: Optional[Dict[str, Any]], what: str
) -> None:
    """Raise unless the run recorded in ``run_dir`` may be reused (finished) or resumed (unfinished).

    Raises:
      CosamError: naming every differing key and the way out.
    """
    diffs = config_differences(read_run_meta(run_dir, what), cfg, identity)
    if diffs:
        fix = "pass --force to re-run it" if what == "finished" else "pass --force to restart it"
        raise CosamError(
            f"{run_dir} holds a {what} run whose numbers would differ from this one; it differs in: "
            f"{'; '.join(diffs)}. Fix: {fix} (its results are replaced), or set run_name to keep both"
        )


def _comparable(d: Dict[str, Any], used_fallback: Optional[bool] = None) -> Dict[str, Any]:
    """The config entries that decide a run's results. ``used_fallback=False`` (the recorded run
    ran on its requested backbone) drops the fallback settings, which it never used."""
    out = {k: v for k, v in d.items() if k not in _IGNORED_FOR_RESUME}
    if used_fallback is False:
        out["model"] = {k: v for k, v in out["model"].items() if not k.startswith("fallback_")}
    return out


def _with_new_defaults(old: Dict[str, Any]) -> Dict[str, Any]:
    """A recorded config with keys added since it was written (e.g. ``device``) at their defaults."""
    try:
        return from_dict(Config, old).to_dict()
    except ConfigError:
        return old


def _same_config(
    old_meta: Dict[str, Any], cfg: Config, identity: Optional[Dict[str, Any]] = None
) -> bool:
    """Whether a recorded run (its config.json) was made with ``cfg`` (see :func:`config_differences`)."""
    return not config_differences(old_meta, cfg, identity)


def read_run_meta(run_dir: Path, kind: str) -> Dict[str, Any]:
    """The ``config.json`` of a ``kind`` ("finished" / "unfinished") run folder, checked enough to be
    compared with a config; an unreadable one is a CosamError that names the file and the fix."""
    path = run_dir / "config.json"
    meta: Any = None
    try:
        meta = read_json(path)
        why = (
            None
            if isinstance(meta, dict) and isinstance(meta.get("config"), dict)
            else "it has no 'config' entry"
        )
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
        why = (
            exc.strerror
            if isinstance(exc, OSError) and exc.strerror
            else " ".join(str(exc).split())
        )
    if why is not None:
        raise CosamError(
            f"{path} of the {kind} run in {run_dir} cannot be read ({why}), so it cannot be "
            f"compared with this config; fix: pass --force to rerun it from scratch, or set run_name "
            f"to use another folder"
        )
    return meta


@dataclass
class Context:
    """Objects shared by the runs of one process (the study reuses one model and one cache)."""

    model: Optional[SamModel] = None
    cache: Optional[FeatureCache] = None
    store: Optional[SampleStore] = None
    key: Any = None
    accel: Accel = CPU


def run(cfg: Config, force: bool = False, ctx: Optional[Context] = None) -> Path:
    """Run ``cfg`` to completion (resuming if possible) and return its run folder.

    On ``cfg.device``; under torchrun as one rank of a data-parallel run in which only rank 0
    writes (every rank returns the run folder once it is written).
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accel = setup_accel(cfg)
    me = distributed.init(accel.device)
    rd = RunDir.for_config(cfg)
    run_dir = rd.path
    ctx = ctx or Context()
    method_cls = get_method(cfg.method)
    t_start = time.perf_counter()
    if rd.is_done() and not force:
        # reused only when everything that decides its numbers matches (config and identity)
        bench = _benchmark(cfg)
        _ensure_model(cfg, ctx, accel)
        assert ctx.model is not None
        check_reusable(run_dir, cfg, run_identity(bench, ctx.model, accel, method_cls), "finished")
        log.info("%s is finished; reusing it (pass --force to rerun)", run_dir)
        return run_dir
    bench = prepare(cfg, ctx, accel)  # every input is read and validated before anything is written
    assert ctx.model is not None
    identity = run_identity(bench, ctx.model, accel, method_cls)
    with rd.lock() if me.is_main else contextlib.nullcontext():
        try:
            out = _run_locked(cfg, run_dir, force, ctx, bench, method_cls, t_start, identity)
        except BaseException:
            if me.is_main:  # no partial result: a folder without a finished step goes
                rd.remove_if_empty()
            raise
    distributed.barrier()
    return out


def _benchmark(cfg: Config) -> Benchmark:
    """The file lists of ``cfg``'s run: train and validation only when ``eval.split`` is ``val``."""
    root = resolve_data_root(cfg)
    return build_benchmark(
        root,
        cfg.data.layout,
        cfg.data.order,
        cfg.seed,
        cfg.data.train_cap,
        cfg.data.test_cap,
        cfg.data.probe_cap,
        cfg.data.include_probe,
        val_cap=cfg.data.val_cap,
        eval_split=cfg.eval.split,
        domains=cfg.data.tasks,
    )


def prepare(cfg: Config, ctx: Context, accel: Accel = CPU) -> Benchmark:
    """Resolve data and model, and load every image/mask pair the run uses once (bad input fails
    here): train pairs and the evaluation split's (test and probe, or validation)."""
    bench = _benchmark(cfg)
    _ensure_model(cfg, ctx, accel)
    assert ctx.store is not None
    for task in bench.with_probe():
        for sample in list(task.train) + list(task.eval_samples(bench.eval_split)):
            ctx.store.get(sample)
    return bench


def _ensure_model(cfg: Config, ctx: Context, accel: Accel = CPU) -> None:
    """Build ``ctx``'s model, sample store and feature cache unless it holds them for ``cfg``."""
    key = (
        cfg.model.backbone,
        cfg.model.checkpoint,
        cfg.model.image_size,
        cfg.model.pretrained,
        cfg.model.weights_dir,
        cfg.data.allow_nonbinary_masks,
        accel,
        cfg.train.compile,
        torch.get_num_threads(),
    )
    if ctx.model is None or ctx.key != key:
        ctx.model = build_model(cfg)
        if accel.device.type != "cpu":
            ctx.model.to(accel.device)
        maybe_compile(ctx.model.image_encoder, cfg.train.compile)
        ctx.key = key
        ctx.accel = accel
        ctx.store = SampleStore(ctx.model.image_size, cfg.data.allow_nonbinary_masks)
        ctx.cache = FeatureCache(
            feature_cache_dir(cfg, accel),
            ctx.model,
            cfg.train.cache_dtype,
            progress=cfg.progress and distributed.info().is_main,
            enabled=cfg.train.cache_features,
            accel=accel,
            batch_size=16 if accel.is_cuda else 4,
        )


def _run_locked(
    cfg: Config,
    run_dir: Path,
    force: bool,
    ctx: Context,
    bench: Benchmark,
    method_cls: Any,
    t_start: float,
    identity: Dict[str, Any],
) -> Path:
    rd = RunDir(run_dir)
    me, accel = distributed.info(), ctx.accel
    if force and me.is_main:
        rd.drop_steps()
        rd.done_path.unlink(missing_ok=True)
    distributed.barrier()
    cfg_path = rd.config_path
    if cfg_path.exists() and rd.steps():
        check_reusable(run_dir, cfg, identity, "unfinished")
    root = bench.root
    model, cache, store = ctx.model, ctx.cache, ctx.store
    assert model is not None and cache is not None and store is not None
    enc0 = cache.encode_seconds

    torch.manual_seed(cfg.seed)
    strategy = method_cls(model, cfg)
    if accel.device.type != "cpu":
        strategy.to(accel.device)
    experiences = strategy.plan(bench.tasks)
    meta = {
        "config": cfg.to_dict(),
        "provenance": provenance(),
        "resolved": {
            "data_root": str(root),
            "synthetic": bench.synthetic,
            "order": list(bench.order),
            "backbone": model.backbone,
            "checkpoint": model.checkpoint,
            "weights_id": model.weights_id,
            "image_size": model.image_size,
            "method_options": strategy.options_dict(),
            "benchmark": bench.summary(),
            "eval_split": bench.eval_split,
            "layout": bench.layout,
            "accel": {**accel.describe(), "world_size": me.world_size},
            "identity": identity,
        },
    }
    if me.is_main:
        write_json(cfg_path, meta)

    tasks = [t.name for t in bench.tasks]
    matrix = TaskMatrix(tasks, bench.probe.name if bench.probe is not None else None)
    timing: Dict[str, Any] = {"encode_s": 0.0, "train_s": 0.0, "eval_s": 0.0, "steps": []}
    start_step = 0
    ckpts = [rd.step_path(t) for t in rd.steps()]
    if ckpts:
        try:
            state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or not {"strategy", "matrix", "timing", "step"} <= set(
                state
            ):
                raise ValueError("not a cosam resume state")
        except Exception as exc:
            why = (
                "it is not a cosam resume state"
                if isinstance(exc, ValueError) and "cosam" in str(exc)
                else "the file is truncated or corrupt"
            )
            # older steps are deleted once a newer one is written: normally this is the only one kept
            fix = (
                f"delete it to resume from {ckpts[-2].name}, or pass --force to restart the run"
                if len(ckpts) > 1
                else "it is the only saved step of this run, so pass --force to restart the run from the beginning"
            )
            raise CheckpointError(
                f"cannot read the resume state {ckpts[-1]}: {why}; fix: {fix}"
            ) from None
        strategy.load_method_state(state["strategy"])
        matrix = TaskMatrix.from_dict(state["matrix"])
        timing = state["timing"]
        timing["resumed"] = timing.get("resumed", 0) + 1
        start_step = state["step"] + 1
        log.info("resuming %s after step %d", run_dir, state["step"])

    encode_eval = not strategy.needs_pixels
    sets = make_eval_sets(bench, cache, store, encode_now=encode_eval)

    # Wall seconds of the earlier invocations, each up to its last checkpoint (the work a kill
    # threw away is not counted: it is redone, and counted, in this invocation).
    prior_s, prior_encode_s = float(timing.get("elapsed_s", 0.0)), float(timing["encode_s"])

    def account() -> None:
        """Bring ``elapsed_s`` and ``encode_s`` up to now: the earlier invocations' plus this one's."""
        timing["elapsed_s"] = prior_s + time.perf_counter() - t_start
        timing["encode_s"] = prior_encode_s + cache.encode_seconds - enc0

    def checkpoint(step: int) -> None:
        account()
        if not me.is_main:
            return
        torch_save(
            rd.step_path(step),
            {
                "strategy": strategy.method_state(),
                "matrix": matrix.to_dict(),
                "timing": timing,
                "step": step,
            },
        )
        faults.point("checkpoint")
        rd.drop_steps(below=step)

    # Step 0 is the evaluation before any training (the zero-shot row).
    if start_step == 0:
        t0 = time.perf_counter()
        iou, biou, per = evaluate(strategy, sets, cfg, store, accel)
        timing["eval_s"] += time.perf_counter() - t0
        matrix.add_row("before", iou, biou, per)
        checkpoint(0)
        start_step = 1
    if strategy.trains:
        for exp in experiences:
            step = exp.index + 1
            if step < start_step:
                continue
            gen = task_generator(cfg.seed, step)
            samples = strategy.training_samples(exp)
            source = TrainSource(samples, strategy, cfg, cache, store, accel)
            strategy.before_task(exp)
            stats = fit(
                strategy,
                source,
                cfg,
                gen,
                desc=f"{cfg.method} {step}/{len(experiences)} {exp.name}",
            )
            strategy.after_task(exp, source.unsharded())
            t0 = time.perf_counter()
            iou, biou, per = evaluate(strategy, sets, cfg, store, accel)
            eval_s = time.perf_counter() - t0
            matrix.add_row(exp.name, iou, biou, per)
            timing["train_s"] += stats["seconds"]
            timing["eval_s"] += eval_s
            timing["steps"].append(
                {
                    "step": step,
                    "name": exp.name,
                    "n_train": len(source),
                    "train_s": stats["seconds"],
                    "epoch_s": stats["seconds"] / max(stats["epochs"], 1),
                    "eval_s": eval_s,
                    "peak_rss_mb": peak_rss_mb(),
                    "loss": stats["loss"],
                }
            )
            log.info(
                "%s step %d (%s): IoU on it %.3f",
                cfg.method,
                step,
                exp.name,
                iou.get(exp.name, float("nan")) if len(exp.tasks) == 1 else float("nan"),
            )
            checkpoint(step)

    account()
    timing["total_s"] = timing["elapsed_s"]  # over every invocation
    if me.is_main:
        _write_results(run_dir, matrix, strategy, timing, cfg, bench)
    return run_dir


def _write_results(
    run_dir: Path,
    matrix: TaskMatrix,
    strategy: Strategy,
    timing: Dict[str, Any],
    cfg: Config,
    bench: Benchmark,
) -> None:
    write_json(run_dir / "matrix.json", matrix.to_dict())
    faults.point("write")
    write_csv(run_dir / "matrix.csv", matrix.to_long_rows())
    rows = []
    for metric in ("iou", "biou"):
        s = matrix.summary(metric)
        rows.append({"method": cfg.method, "metric": metric, "synthetic": bench.synthetic, **s})
    write_csv(run_dir / "metrics.csv", rows)
    per_rows = []
    for r in range(matrix.n_rows):
        per = matrix.per_image(r) or {}
        for col, scores in per.items():
            for i, (a, b) in enumerate(scores):
                per_rows.append(
                    {
                        "row": r,
                        "row_label": matrix.rows[r],
                        "dataset": col,
                        "index": i,
                        "iou": a,
                        "biou": b,
                    }
                )
    write_csv(run_dir / "per_image.csv", per_rows)
    write_json(run_dir / "costs.json", {**strategy.cost(), "timing": timing})
    write_json(run_dir / "timing.json", timing)
    faults.point("write")
    for name, obj in strategy.artifacts().items():
        write_json(run_dir / f"{name}.json", obj)
    RunDir(run_dir).mark_done()
