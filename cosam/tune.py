"""Choose a method's settings on the validation split: a small grid, one ordinary run per point.

    python -m cosam tune --method sequential --grid train.lr=1e-4,3e-4,1e-3 --grid train.epochs=4,8

Every grid point is an ordinary run (:func:`cosam.runner.run`) with ``eval.split=val``: each task
is trained on its train pairs and the task matrix is measured on the validation pairs that
``data.val_cap`` carves out of each domain's train split. No test file is listed or read, and the
probe (test only) is left out. The points' run folders are
``<results_dir>/<profile>/tune/<method>/<point>/``, so they are reused and resumed like any run.

Criterion (``--criterion``, default ``last_iou``): the mean validation IoU over all tasks after
training the last one ("Last" on validation), the paper's headline metric, which counts
forgetting as well as learning. ``avg_iou`` (the mean over steps of the mean IoU of the tasks
seen so far) is the alternative. The choice is the grid point with the highest score; on a tie,
the first in grid order.

``tune.json`` and ``tune.csv`` in ``<results_dir>/<profile>/tune/<method>/`` record the grid,
every point's score (and its other validation summaries), the criterion and the choice.
``learning.csv`` has, per point and task, how far the task's own validation IoU rose over its
row 0 when it was trained (``tasks_rising`` in ``tune.json`` counts the tasks that rose by
:data:`RISE_POINTS` or more): a point whose training moved nothing is seen as such.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

from .config import Config, dotted_to_dict, make_config, merge, parse_value
from .errors import ConfigError
from .io import portable, portable_text, write_csv, write_json

log = logging.getLogger(__name__)

CRITERIA = ("last_iou", "avg_iou")
RISE_POINTS = 3.0
"""A task counts as learned when its own validation IoU rises this many points over row 0
(the evidence issue's bar for "every method learns"; ``tasks_rising`` in ``tune.json``)."""
# Keys a grid may not set: the method and the split are the tuning's own, a point's folder is its own.
_FORBIDDEN = ("method", "run_name", "eval.split", "results_dir", "profile")


def parse_grid(items: Sequence[str]) -> Dict[str, List[Any]]:
    """``["train.lr=1e-4,1e-3", "train.epochs=4,8"]`` -> ``{"train.lr": [0.0001, 0.001], "train.epochs": [4, 8]}``.

    Values are parsed as on ``--set`` (JSON if it parses, else the string); a value may not
    itself hold a comma.

    Raises:
      ConfigError: an item without ``=``, an empty value list, a repeated key or a reserved key.
    """
    grid: Dict[str, List[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(
                f"grid entry {item!r} must look like section.key=v1,v2 (e.g. train.lr=1e-4,1e-3)"
            )
        key, values = item.split("=", 1)
        key = key.strip()
        parsed = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
        if not parsed:
            raise ConfigError(f"grid entry {item!r} lists no values; e.g. {key}=1e-4,1e-3")
        if key in grid:
            raise ConfigError(f"grid key {key!r} is given twice; list all its values in one --grid")
        if key in _FORBIDDEN:
            raise ConfigError(
                f"grid key {key!r} is set by the tuning itself; valid grid keys are config keys "
                f"other than {', '.join(_FORBIDDEN)}"
            )
        grid[key] = parsed
    if not grid:
        raise ConfigError(
            "tuning needs a grid: --grid section.key=v1,v2 (e.g. --grid train.lr=1e-4,3e-4,1e-3)"
        )
    return grid


def grid_points(grid: Mapping[str, Sequence[Any]]) -> List[Dict[str, Any]]:
    """Every combination of the grid's values, in grid order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_name(point: Mapping[str, Any]) -> str:
    """A folder name for one grid point, e.g. ``train.lr=0.0001+train.epochs=4``."""
    return "+".join(
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in point.items()
    ).replace("/", "_")


def _dotted(point: Mapping[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in point.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


@dataclass
class TuneSpec:
    """One tuning: a method, a profile, the grid, the shared overrides and the criterion.

    overrides: nested overrides every point shares (``--data``, ``--order``, ``--seed``, ...);
    dotted: ``--set`` overrides, applied after them; grid: see :func:`parse_grid`.
    """

    profile: str
    method: str
    grid: Dict[str, List[Any]]
    overrides: Dict[str, Any] = field(default_factory=dict)
    dotted: List[str] = field(default_factory=list)
    criterion: str = "last_iou"

    def config(self, point: Mapping[str, Any]) -> Config:
        """The run config of one grid point (validation split, its own run folder)."""
        if self.criterion not in CRITERIA:
            raise ConfigError(f"criterion {self.criterion!r}; valid: {', '.join(CRITERIA)}")
        fixed = [item.split("=", 1)[0].strip() for item in self.dotted]
        clash = [k for k in fixed if k in point or k in _FORBIDDEN]
        if clash:
            raise ConfigError(
                f"--set {', '.join(clash)} clashes with the tuning's grid or its own keys "
                f"({', '.join(_FORBIDDEN)}); give each key once, in --grid or --set"
            )
        own = {
            "method": self.method,
            "eval": {"split": "val"},
            "run_name": f"tune/{self.method}/{point_name(point)}",
        }
        values = merge(
            merge(merge(self.overrides, dotted_to_dict(self.dotted)), _dotted(point)), own
        )
        return make_config(self.profile, values)

    def out_dir(self) -> Path:
        """``<results_dir>/<profile>/tune/<method>/``: tune.json, tune.csv and the points' run folders."""
        cfg = self.config(grid_points(self.grid)[0])
        return Path(cfg.results_dir) / cfg.profile / "tune" / self.method


@dataclass
class TuneResult:
    """What :func:`run_tune` found and wrote."""

    out: Path
    rows: List[Dict[str, Any]]
    choice: Dict[str, Any]
    criterion: str


def choose(rows: Sequence[Mapping[str, Any]], criterion: str) -> int:
    """Index of the row with the highest finite ``criterion`` (the first on a tie).

    Raises:
      ConfigError: no row has a finite score (e.g. avg_iou of a method without a task sequence).
    """
    best, best_score = -1, -math.inf
    for i, row in enumerate(rows):
        score = row[criterion]
        if score is not None and math.isfinite(score) and score > best_score:
            best, best_score = i, score
    if best < 0:
        raise ConfigError(
            f"no grid point has a finite {criterion}; choose another --criterion ({', '.join(CRITERIA)})"
        )
    return best


def run_tune(
    spec: TuneSpec, force: bool = False, echo: Callable[[str], None] = print
) -> TuneResult:
    """Run every grid point on the validation split, score it, pick the best, write tune.json/.csv.

    Arguments:
      spec (TuneSpec): what to tune.
      force (bool): re-run finished points instead of reusing them.
      echo: where progress lines go.

    Returns:
      (TuneResult): the rows (one per point: the grid values, the criterion and the other
        validation summaries, the run folder) and the choice.
    """
    from .report import load_run
    from .runner import Context, run

    points = grid_points(spec.grid)
    configs = [spec.config(p) for p in points]  # every point is validated before anything runs
    ctx = Context()
    rows: List[Dict[str, Any]] = []
    for i, (point, cfg) in enumerate(zip(points, configs), 1):
        t0 = time.perf_counter()
        run_dir = run(cfg, force=force, ctx=ctx)
        rec = load_run(run_dir)
        s = rec.matrix.summary("iou")
        sb = rec.matrix.summary("biou")
        row = {
            **point,
            "last_iou": s["last"],
            "avg_iou": s["avg"],
            "ff_iou": s["ff"],
            "last_biou": sb["last"],
            "avg_biou": sb["avg"],
            "run_dir": portable(run_dir),
        }
        rise = rec.matrix.own_task_rise("iou")
        row["own_task_rise"] = rise
        row["tasks_rising"] = sum(1 for v in rise.values() if v >= RISE_POINTS / 100)
        rows.append(row)
        echo(
            f"[{i}/{len(points)}] {point_name(point)}: validation {spec.criterion} = "
            f"{100 * row[spec.criterion]:.1f} ({time.perf_counter() - t0:.0f} s)"
        )
    best = choose(rows, spec.criterion)
    out = spec.out_dir()
    choice = {k: rows[best][k] for k in spec.grid}
    write_json(
        out / "tune.json",
        {
            "method": spec.method,
            "profile": spec.profile,
            "grid": spec.grid,
            "criterion": spec.criterion,
            "criterion_text": _CRITERION_TEXT[spec.criterion],
            "split": "val",
            "val_cap": configs[0].data.val_cap,
            "order": list(rec.meta["resolved"]["order"]),
            "overrides": {
                k: (portable(v) if k == "results_dir" else v) for k, v in spec.overrides.items()
            },
            "dotted": [portable_text(d) for d in spec.dotted],
            "points": rows,
            "choice": choice,
            "choice_score": rows[best][spec.criterion],
            "choice_run_dir": rows[best]["run_dir"],
        },
    )
    write_csv(
        out / "tune.csv",
        [
            {**{k: v for k, v in r.items() if k != "own_task_rise"}, "chosen": i == best}
            for i, r in enumerate(rows)
        ],
    )
    write_csv(out / "learning.csv", learning_rows(rows, spec.grid))
    return TuneResult(out, rows, choice, spec.criterion)


def learning_rows(
    rows: Sequence[Mapping[str, Any]], grid: Mapping[str, Sequence[Any]]
) -> List[Dict[str, Any]]:
    """One row per (grid point, task): the own-task validation IoU rise of ``learning.csv``.

    Arguments:
      rows (Sequence[Mapping[str, Any]]): :func:`run_tune`'s point rows (with ``own_task_rise``).
      grid (Mapping[str, Sequence[Any]]): the grid, whose keys lead each row.

    Returns:
      (List[Dict[str, Any]]): the grid values, ``task``, ``rise_points`` (IoU on the task right
        after training it minus its row 0, in points; the trained row for a joint run) and
        ``rises`` (True when the rise is at least :data:`RISE_POINTS`).
    """
    out: List[Dict[str, Any]] = []
    for r in rows:
        for task, v in r["own_task_rise"].items():
            pts = 100.0 * v
            out.append(
                {
                    **{k: r[k] for k in grid},
                    "task": task,
                    "rise_points": round(pts, 2) if math.isfinite(pts) else None,
                    "rises": bool(math.isfinite(pts) and pts >= RISE_POINTS),
                }
            )
    return out


_CRITERION_TEXT = {
    "last_iou": "mean validation IoU over all tasks after training the last task (Last on validation)",
    "avg_iou": "mean over steps t of the mean validation IoU of tasks 1..t after step t (Avg on validation)",
}


def describe(result: TuneResult) -> Tuple[str, ...]:
    """Lines for the terminal: one per point and the choice."""
    lines = [
        f"{point_name({k: r[k] for k in result.choice})}: {result.criterion} = "
        f"{100 * r[result.criterion]:.1f}; own task +{RISE_POINTS:g} points or more on "
        f"{r['tasks_rising']} of {len(r['own_task_rise'])} tasks"
        for r in result.rows
    ]
    lines.append(f"choice ({result.criterion} on validation): {point_name(result.choice)}")
    lines.append(f"written: {result.out / 'tune.json'}, {result.out / 'tune.csv'}")
    return tuple(lines)


__all__ = [
    "CRITERIA",
    "TuneResult",
    "TuneSpec",
    "RISE_POINTS",
    "choose",
    "describe",
    "grid_points",
    "learning_rows",
    "parse_grid",
    "point_name",
    "run_tune",
]
