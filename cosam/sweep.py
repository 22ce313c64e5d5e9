"""Running a sweep over methods x seeds x task orders (:class:`cosam.grid.SweepSpec`).

    python -m cosam sweep --methods sequential lwf --seeds 0 1 2 3 4 --orders paper reverse shuffled
    python -m cosam sweep ... --print-commands     # one independent `python -m cosam run ...` per run
    python -m cosam aggregate --profile cpu        # the tables again, from whatever has finished

Every combination is an ordinary run folder (:meth:`cosam.grid.SweepSpec.run_dir`:
``<results_dir>/<profile>/<method>-<order>-s<seed>``), so a sweep inherits the engine's
behaviour: a finished run is reused, an interrupted one resumes from its last finished task,
two processes never write one folder. :func:`run_sweep` runs the combinations in one process
(one model and one feature cache, the engine's :class:`~cosam.runner.Context`) and then calls
:func:`cosam.aggregate.aggregate`, which reads finished run folders only (never recomputes
results) and writes the mean ± std tables under ``<results_dir>/<profile>/sweep/`` (or another
``out`` folder); :func:`sweep_commands` prints the runs as independent commands instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from .aggregate import aggregate
from .errors import CosamError
from .grid import MANIFEST, Combo, SweepSpec
from .io import write_json
from .rundir import RunDir

log = logging.getLogger(__name__)


def sweep_commands(spec: SweepSpec, force: bool = False, python: str = "python") -> List[str]:
    """One shell command per combination (``python -m cosam run --method m --order o --seed s ...``).

    Each is independent: any machine that sees the same results folder can run any of them, in
    any order, at the same time as the others.

    Arguments:
      spec (SweepSpec): the grid (validated here).
      force (bool): add ``--force`` to every command (rerun finished runs).
      python (str): the interpreter each command starts.

    Returns:
      (List[str]): the commands, in :meth:`SweepSpec.combos` order.
    """
    spec.validate()
    return [spec.command(c, force=force, python=python) for c in spec.combos()]


@dataclass
class RunOutcome:
    """What one combination did in this sweep process."""

    combo: Combo
    run_dir: Path
    status: str  # reused | ran | resumed | busy | failed
    wall_s: float = 0.0
    error: str = ""


def run_sweep(
    spec: SweepSpec,
    force: bool = False,
    out: Optional[Path] = None,
    echo: Callable[[str], None] = print,
) -> Tuple[List[RunOutcome], Path]:
    """Run every combination of ``spec`` in this process, then :func:`aggregate` into ``out``.

    Finished runs are reused (rerun with ``force``), interrupted ones resume from their last
    task; one model and feature cache serve every run. A run locked by another process is
    skipped (``busy``); a run that fails is reported (``failed``) and the sweep goes on.

    Arguments:
      spec (SweepSpec): the grid and shared options (validated here, before any run).
      force (bool): rerun finished runs.
      out (Path): the aggregate folder; default :meth:`SweepSpec.default_out`.
      echo (Callable[[str], None]): receives one progress line per run.

    Returns:
      (Tuple[List[RunOutcome], Path]): (outcomes, out folder).
    """
    from .runner import Context, run

    spec.validate()
    out = Path(out) if out else spec.default_out()
    write_json(
        out / MANIFEST,
        {"spec": spec.to_dict(), "note": "grid of `python -m cosam sweep`; read by aggregate"},
    )
    # a MoDA run later in the grid reads the block inputs the earlier runs' encoding captured
    ctx = Context(capture_blocks=any("moda" in m for m in spec.methods))
    combos = spec.combos()
    outcomes: List[RunOutcome] = []
    for i, combo in enumerate(combos, 1):
        cfg = spec.config(combo)
        folder = RunDir.for_config(cfg)
        rd = folder.path
        before = folder.plan(force)
        t0 = time.perf_counter()
        if folder.busy():
            oc = RunOutcome(combo, rd, "busy", error="locked by another process")
        else:
            try:
                run(cfg, force=force, ctx=ctx)
                oc = RunOutcome(combo, rd, before)
            except CosamError as exc:
                oc = RunOutcome(combo, rd, "busy" if folder.busy() else "failed", error=str(exc))
            except Exception as exc:  # one broken run must not cost the rest of a long sweep
                log.exception("%s failed", combo.name)
                oc = RunOutcome(combo, rd, "failed", error=f"{type(exc).__name__}: {exc}")
        oc.wall_s = time.perf_counter() - t0
        outcomes.append(oc)
        echo(
            f"[{i}/{len(combos)}] {combo.name}: {oc.status} ({oc.wall_s:.0f} s){'  ' + oc.error if oc.error else ''}"
        )
    aggregate(spec, out)
    return outcomes, out
