"""Run a sweep's runs as jobs on an existing engine through submitit: Slurm on a cluster, its
local executor on one machine.

``python -m cosam sweep ... --launcher submitit`` submits one job per run that is not finished
yet; each job is ``cosam.runner.run`` on exactly the config that ``python -m cosam run`` builds
for that run (:meth:`cosam.grid.SweepSpec.config`), so a job writes only its own run folder,
resumes an interrupted run from its last task, and is refused by the run lock while another
process works there. When every job has ended the aggregate is written, as after an in-process
sweep. A killed launcher is restarted with the same command: finished runs are reused, the
interrupted ones resume.

::

    python -m cosam sweep --methods sequential replay --seeds 0 1 2 --launcher submitit   # local
    python -m cosam sweep ... --launcher submitit --cluster slurm \\
        --launcher-opt partition=gpu --launcher-opt gpus_per_node=1 --launcher-opt time=600

The submitit folder (job pickles and logs; default ``<aggregate folder>/submitit``) holds one
``<job id>_0_log.out``/``.err`` per job.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .aggregate import aggregate
from .config import parse_value
from .errors import ConfigError
from .grid import MANIFEST, Combo, SweepSpec
from .io import write_json
from .rundir import RunDir
from .sweep import RunOutcome

log = logging.getLogger(__name__)

#: ``--cluster`` values: ``local`` (subprocesses on this machine), ``slurm``, ``debug``
#: (in this process, for debugging a job), ``auto`` (Slurm when ``sbatch`` is found, else local).
CLUSTERS: Tuple[str, ...] = ("local", "slurm", "debug", "auto")
#: A local job's time limit in minutes (submitit's own default, 2 minutes, would kill real runs).
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
#: What submitit's local executor reads (it ignores anything else without a word).
LOCAL_PARAMETERS: Tuple[str, ...] = (
    "timeout_min",
    "gpus_per_node",
    "visible_gpus",
    "tasks_per_node",
    "nodes",
    "signal_delay_s",
    "stderr_to_stdout",
    "setup",
)


def run_combo(
    spec: Mapping[str, Any], method: str, order: str, seed: int, force: bool = False
) -> str:
    """The body of one job: run one combination of a sweep to completion.

    Arguments:
      spec (Mapping): :meth:`SweepSpec.to_dict` of the sweep (plain data, so the job pickle does
        not depend on this process's objects).
      method, order, seed: the combination.
      force (bool): re-run a finished run instead of reusing it.

    Returns:
      The run folder (str).
    """
    from .runner import run

    sweep = SweepSpec.from_dict(spec)
    return str(run(sweep.config(Combo(method, order, int(seed))), force=force))


def parse_options(items: Sequence[str]) -> Dict[str, Any]:
    """``["partition=gpu", "time=600"]`` -> ``{"partition": "gpu", "time": 600}``."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--launcher-opt {item!r} must look like key=value (e.g. partition=gpu)"
            )
        out[key.strip()] = parse_value(value)
    return out


def make_executor(cluster: str, folder: Path, options: Mapping[str, Any]) -> Any:
    """A submitit executor for ``cluster`` writing its pickles and logs to ``folder``.

    The executor classes are used directly (``LocalExecutor``, ``SlurmExecutor``,
    ``DebugExecutor``), so ``options`` take each executor's own parameter names: on Slurm
    ``partition``, ``time`` (minutes), ``gpus_per_node``, ``cpus_per_task``, ``mem``...; locally
    ``timeout_min``, ``gpus_per_node``. (``AutoExecutor`` would need setuptools' deprecated
    ``pkg_resources`` at run time.)
    """
    import shutil

    try:
        import submitit
    except ImportError:  # pragma: no cover - submitit is in requirements.txt
        raise ConfigError(
            "--launcher submitit needs the submitit package: pip install submitit"
        ) from None
    if cluster not in CLUSTERS:
        raise ConfigError(f"--cluster {cluster!r}; valid: {', '.join(CLUSTERS)}")
    if cluster == "auto":
        cluster = "slurm" if shutil.which("sbatch") else "local"
    params: Dict[str, Any] = {}
    if cluster == "slurm":
        executor = submitit.SlurmExecutor(folder=str(folder))
        params["job_name"] = "cosam"
    elif cluster == "debug":
        executor = submitit.DebugExecutor(folder=str(folder))
    else:
        unknown = sorted(set(options) - set(LOCAL_PARAMETERS))
        if unknown:  # the local executor would ignore them silently
            raise ConfigError(
                f"--launcher-opt for the {cluster} executor: unknown {', '.join(unknown)}; "
                f"valid: {', '.join(LOCAL_PARAMETERS)}"
            )
        executor = submitit.LocalExecutor(folder=str(folder))
        params["timeout_min"] = LOCAL_TIMEOUT_MIN
    params.update(options)
    try:
        executor.update_parameters(**params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--launcher-opt for the {cluster} executor: {exc}") from None
    executor.cosam_cluster = cluster
    return executor


def launch_sweep(
    spec: SweepSpec,
    cluster: str = "local",
    parallel: int = 1,
    options: Optional[Mapping[str, Any]] = None,
    folder: Optional[Path] = None,
    force: bool = False,
    out: Optional[Path] = None,
    poll_s: float = 1.0,
    echo: Callable[[str], None] = print,
) -> Tuple[List[RunOutcome], Path]:
    """Submit every unfinished combination of ``spec`` as a submitit job, wait, then aggregate.

    Arguments:
      spec (SweepSpec): the grid and shared options (validated here, before any job).
      cluster (str): one of :data:`CLUSTERS`.
      parallel (int): on the local executor, at most this many jobs at once (the others wait
        in this process); a cluster scheduler takes every job at once.
      options (Mapping): extra ``executor.update_parameters`` arguments (``--launcher-opt``).
      folder (Path): submitit's folder; default ``<out>/submitit``.
      force (bool): re-run finished runs.
      out (Path): the aggregate folder; default :meth:`SweepSpec.default_out`.
      poll_s (float): seconds between looks at the running jobs.
      echo (Callable[[str], None]): where progress lines go (default ``print``).

    Returns:
      (outcomes in :meth:`SweepSpec.combos` order, the aggregate folder). A finished run is
      ``reused`` without a job; a run locked by another process is ``busy``; a job that raised
      or was killed is ``failed`` with its error.
    """
    if parallel < 1:
        raise ConfigError(f"--parallel must be a positive integer, got {parallel}")
    spec.validate()
    out = Path(out) if out else spec.default_out()
    folder = Path(folder) if folder else out / "submitit"
    executor = make_executor(cluster, folder, options or {})
    local = executor.cosam_cluster in ("local", "debug")
    write_json(
        out / MANIFEST,
        {
            "spec": spec.to_dict(),
            "launcher": {
                "name": "submitit",
                "cluster": executor.cosam_cluster,
                "parallel": parallel,
                "folder": str(folder),
            },
            "note": "grid of `python -m cosam sweep`; read by aggregate",
        },
    )
    combos = spec.combos()
    outcomes: Dict[Combo, RunOutcome] = {}
    queue: List[Tuple[Combo, Path, str]] = []
    for combo in combos:
        rd = spec.run_dir(combo)
        status = RunDir(rd).plan(force)
        if status == "reused":
            outcomes[combo] = RunOutcome(combo, rd, "reused")
        elif RunDir(rd).busy():
            outcomes[combo] = RunOutcome(combo, rd, "busy", error="locked by another process")
        else:
            queue.append((combo, rd, status))
    for combo, oc in outcomes.items():
        echo(f"{combo.name}: {oc.status}")
    running: List[Tuple[Any, Combo, Path, str, float]] = []
    limit = parallel if local else len(queue)
    while queue or running:
        while queue and len(running) < limit:
            combo, rd, status = queue.pop(0)
            job = executor.submit(
                run_combo, spec.to_dict(), combo.method, combo.order, combo.seed, force
            )
            echo(f"{combo.name}: submitted as job {job.job_id}")
            running.append((job, combo, rd, status, time.perf_counter()))
        still: List[Tuple[Any, Combo, Path, str, float]] = []
        for job, combo, rd, status, t0 in running:
            if not job.done():
                still.append((job, combo, rd, status, t0))
                continue
            exc = job.exception()
            if exc is None:
                oc = RunOutcome(combo, rd, status)
            else:
                text = str(exc).strip().splitlines()
                oc = RunOutcome(
                    combo,
                    rd,
                    "busy" if RunDir(rd).busy() else "failed",
                    error=(text[-1] if text else type(exc).__name__)[:500],
                )
            oc.wall_s = time.perf_counter() - t0
            outcomes[combo] = oc
            echo(
                f"{combo.name}: {oc.status} ({oc.wall_s:.0f} s, job {job.job_id})"
                f"{'  ' + oc.error if oc.error else ''}"
            )
        running = still
        if running:
            time.sleep(poll_s)
    aggregate(spec, out)
    return [outcomes[c] for c in combos], out
