"""MoDA router ablations on a finished adapter pool.

Every ablation axis of MoDA's router (tokens trained or random, GAT count, one-way or full
attention, linear or cosine router, buffer size) leaves the adapters untouched: each adapter
trains on its own task from the base's initial state, whatever the router. And the router
(tokens included) restarts from the same seeded values at every retraining, so the routing after
task t depends only on the buffers of tasks 0..t. Re-routing a finished run's pool under other
router options therefore gives *exactly* the rows a full run with those options would give (a
test checks this), at the cost of the router trainings and the evaluations alone.

    rows = reroute(run_dir, {"train_tokens": False}, steps="last")

Results are written to ``<run_dir>/ablations/<name>.json`` and reused when the options match.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from .config import Config, from_dict, merge, validate
from .errors import CosamError
from .io import read_json, write_json
from .matrix import TaskMatrix
from .rundir import RunDir


def variant_name(options: Mapping[str, Any]) -> str:
    """A stable file name for a set of router options, e.g. ``n_gat=0,train_tokens=False``."""
    if not options:
        return "default"
    text = ",".join(f"{k}={options[k]}" for k in sorted(options))
    safe = "".join(c if c.isalnum() or c in "=,._-" else "_" for c in text)
    return safe if len(safe) <= 80 else hashlib.sha1(text.encode()).hexdigest()[:16]


ROUTER_KEYS = (
    "n_gat",
    "attention",
    "train_tokens",
    "router",
    "buffer_size",
    "router_epochs",
    "router_lr",
    "router_batch",
    "token_cache",
)


def reroute(
    run_dir: Path,
    options: Mapping[str, Any],
    steps: str = "last",
    ctx: Optional[Any] = None,
    force: bool = False,
) -> Dict[str, Any]:
    """Retrain MoDA's router with ``options`` on a finished run's pool and evaluate.

    Arguments:
      run_dir: a finished ``*_moda`` run (its ``state/step_T.pt`` holds the pool).
      options: router options to change (keys of :class:`cosam.methods.moda_router.MoDAOptions` that do
        not touch the adapters).
      steps: "last" (the final row: Last and final router accuracy) or "all" (every row: the
        whole matrix, so Avg and FF too).
      ctx: a :class:`cosam.runner.Context` to share the model and caches between calls.
      force: recompute even when ``<run_dir>/ablations`` holds a result for these options.

    Returns a dict: ``options``, ``name``, ``summary`` (last_iou, last_biou, router_accuracy, and
    with steps="all" the full IoU/BIoU summary), ``per_task`` router accuracy, ``router_log``,
    ``router_seconds``, ``iou`` and ``biou`` of the final row.
    """
    from .evaluation import evaluate, make_eval_sets, row_sets
    from .inspect import rebuild_strategy
    from .runner import Context

    run_dir = Path(run_dir)
    bad = [k for k in options if k not in ROUTER_KEYS]
    if bad:
        raise CosamError(
            f"reroute changes router options only; {bad} would change the adapters (retrain instead)"
        )
    if steps not in ("last", "all"):
        raise CosamError(f"steps={steps!r}; valid: last, all")
    if not RunDir(run_dir).is_done():
        raise CosamError(f"{run_dir} is not a finished run; run it first")
    meta = read_json(run_dir / "config.json")
    base_cfg = from_dict(Config, meta["config"])
    if not base_cfg.method.endswith("_moda"):
        raise CosamError(f"{run_dir} is a {base_cfg.method} run; reroute needs a MoDA run")
    name = variant_name(options)
    out = run_dir / "ablations" / f"{name}-{steps}.json"
    if out.exists() and not force:
        old = read_json(out)
        if old.get("options") == dict(options):
            return old
    # method_options replace as a whole in config merges: merge the router options in here
    cfg = from_dict(
        Config,
        merge(
            base_cfg.to_dict(),
            {"method_options": {**base_cfg.method_options, **options}, "progress": False},
        ),
    )
    validate(cfg)
    ctx = ctx or Context()
    strategy, bench, state = rebuild_strategy(run_dir, cfg, ctx)
    by_name = {t.name: t for t in bench.tasks}  # the tasks the strategy was planned over
    tasks = [by_name[n] for n in state["pool_tasks"]]
    pool = state["pool"]
    sets = make_eval_sets(bench, ctx.cache, ctx.store, encode_now=not strategy.needs_pixels)
    original = TaskMatrix.from_dict(read_json(run_dir / "matrix.json"))
    matrix = TaskMatrix(original.tasks, original.probe) if steps == "all" else None
    if matrix is not None:
        cols = original.columns
        matrix.add_row(
            original.rows[0],
            {c: original.value("iou", 0, c) for c in cols},
            {c: original.value("biou", 0, c) for c in cols},
        )
    first = 1 if steps == "all" else len(pool)
    t_start = time.perf_counter()
    iou: Dict[str, float] = {}
    biou: Dict[str, float] = {}
    for t in range(first, len(pool) + 1):
        strategy.restore_pool(pool[:t], tasks[:t])  # with their buffers, no router
        strategy.update_router()
        iou, biou, _ = evaluate(strategy, row_sets(sets, tasks[:t], cfg), cfg, ctx.store)
        strategy.flush_routes()
        if matrix is not None:
            matrix.add_row(tasks[t - 1].name, iou, biou, None)
    final = strategy.router_log[-1]
    seen = [t.name for t in tasks]
    summary: Dict[str, Any] = {
        "last_iou": sum(iou[n] for n in seen) / len(seen),
        "last_biou": sum(biou[n] for n in seen) / len(seen),
        "router_accuracy": final["accuracy"],
    }
    if matrix is not None:
        summary.update({f"{k}_iou": v for k, v in matrix.summary("iou").items()})
        summary.update({f"{k}_biou": v for k, v in matrix.summary("biou").items()})
    result = {
        "run": str(run_dir),
        "method": cfg.method,
        "options": dict(options),
        "name": name,
        "steps": steps,
        "resolved_options": dataclasses.asdict(strategy.opts),
        "summary": summary,
        "per_task": final["per_task"],
        "confusion": final["confusion"],
        "router_log": strategy.router_log,
        "router_seconds": strategy.router_seconds,
        "iou": iou,
        "biou": biou,
        "seconds": time.perf_counter() - t_start,
        "matrix": None if matrix is None else matrix.to_dict(),
    }
    write_json(out, json.loads(json.dumps(result, default=float)))
    return result
