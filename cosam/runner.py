"""Run one method over a task sequence: train, evaluate the tasks seen so far and the probe
(every task with ``eval.unseen_tasks``), checkpoint.

    run(cfg) -> run folder with config.json, matrix.json, metrics.csv, per_image.csv, costs.json,
                timing.json and DONE

Training is :mod:`cosam.engine`'s, scoring :mod:`cosam.evaluation`'s. After every experience
the whole state is checkpointed atomically (``state/step_<t>.pt``), so a killed run resumes
from the last finished task; each task draws its randomness from a generator seeded by (seed,
task index), so a resumed run equals an uninterrupted one. A finished run is reused, and an unfinished one resumed, only
when its config and identity match (:mod:`cosam.provenance`).

Device and precision come from :mod:`cosam.accel` (no-ops on the CPU); under ``torchrun`` the
run is data-parallel and only rank 0 writes (:mod:`cosam.distributed`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from . import distributed, faults
from .accel import CPU, Accel, maybe_compile
from .accel import setup as setup_accel
from .config import Config
from .data.benchmark import Benchmark
from .engine import TrainSource, fit, peak_rss_mb, task_generator
from .errors import CheckpointError
from .evaluation import evaluate, make_eval_sets, row_sets
from .features import FeatureCache, SampleStore, feature_cache_dir
from .io import provenance as code_provenance
from .io import torch_save, write_csv, write_json
from .matrix import TaskMatrix
from .methods import get_method
from .methods.base import Strategy
from .models.sam import SamModel
from .provenance import check_reusable, run_identity
from .resources import build_model, load_benchmark
from .rundir import RunDir

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Objects shared by the runs of one process (the study reuses one model and one cache)."""

    model: Optional[SamModel] = None
    cache: Optional[FeatureCache] = None
    store: Optional[SampleStore] = None
    key: Any = None
    accel: Accel = CPU
    #: every run's feature pass also writes MoDA's block inputs (set when MoDA runs will follow
    #: in this process, so they never re-encode what an earlier run encoded)
    capture_blocks: bool = False


def run(cfg: Config, force: bool = False, ctx: Optional[Context] = None) -> Path:
    """Run ``cfg`` to completion (resuming if possible) and return its run folder.

    On ``cfg.device``; under torchrun as one rank of a data-parallel run in which only rank 0
    writes (every rank returns the run folder once it is written).

    Arguments:
      cfg (Config): the run's config.
      force (bool): rerun a finished run, or restart an unfinished one, instead of reusing it.
      ctx (Context or None): model, sample store and feature cache shared with other runs.

    Returns:
      (Path): the run folder (:meth:`cosam.rundir.RunDir.for_config`).
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
        bench = load_benchmark(cfg)
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


def prepare(cfg: Config, ctx: Context, accel: Accel = CPU) -> Benchmark:
    """Resolve data and model, and load every image/mask pair the run uses once (bad input fails
    here): train pairs and the evaluation split's (test and probe, or validation).

    Arguments:
      cfg (Config): the run's config.
      ctx (Context): filled with the model, sample store and feature cache of ``cfg``.
      accel (Accel): device and precision.

    Returns:
      (Benchmark): the run's benchmark (:func:`cosam.resources.load_benchmark`).
    """
    bench = load_benchmark(cfg)
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


def _run_meta(
    cfg: Config,
    bench: Benchmark,
    model: SamModel,
    strategy: Strategy,
    accel: Accel,
    identity: Dict[str, Any],
) -> Dict[str, Any]:
    """The run's config.json: its config, the code's provenance and what the run resolved."""
    return {
        "config": cfg.to_dict(),
        "provenance": code_provenance(),
        "resolved": {
            "data_root": str(bench.root),
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
            "accel": {**accel.describe(), "world_size": distributed.info().world_size},
            "identity": identity,
        },
    }


def _read_resume_state(ckpts: List[Path]) -> Dict[str, Any]:
    """The resume state in the last of ``ckpts``; CheckpointError (with the fix) if unreadable."""
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
    return state


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
    model, cache, store = ctx.model, ctx.cache, ctx.store
    assert model is not None and cache is not None and store is not None
    enc0 = cache.encode_seconds

    torch.manual_seed(cfg.seed)
    strategy = method_cls(model, cfg)
    if accel.device.type != "cpu":
        strategy.to(accel.device)
    experiences = strategy.plan(bench.tasks)
    if me.is_main:
        write_json(cfg_path, _run_meta(cfg, bench, model, strategy, accel, identity))

    tasks = [t.name for t in bench.tasks]
    matrix = TaskMatrix(tasks, bench.probe.name if bench.probe is not None else None)
    timing: Dict[str, Any] = {"encode_s": 0.0, "train_s": 0.0, "eval_s": 0.0, "steps": []}
    start_step = 0
    ckpts = [rd.step_path(t) for t in rd.steps()]
    if ckpts:
        state = _read_resume_state(ckpts)
        strategy.load_method_state(state["strategy"])
        matrix = TaskMatrix.from_dict(state["matrix"])
        timing = state["timing"]
        timing["resumed"] = timing.get("resumed", 0) + 1
        start_step = state["step"] + 1
        log.info("resuming %s after step %d", run_dir, state["step"])

    if ctx.capture_blocks or strategy.reads_block_inputs():
        cache.capture_blocks()
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
            desc = f"{cfg.method} {step}/{len(experiences)} {exp.name}"
            stats = fit(strategy, source, cfg, gen, desc=desc)
            strategy.after_task(exp, source.unsharded())
            t0 = time.perf_counter()
            trained = [t for e in experiences[:step] for t in e.tasks]
            iou, biou, per = evaluate(strategy, row_sets(sets, trained, cfg), cfg, store, accel)
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
