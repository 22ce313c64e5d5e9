"""One run folder: its name, its lock, its saved steps, DONE, and its config.

A run writes ``<results_dir>/<profile>/<name>/``::

    config.json        the config, provenance and resolved identity (written first)
    state/step_<t>.pt  the resume state after step t (only the latest is kept)
    .lock              held (fcntl) by the one process writing the run
    DONE               written last: everything else is complete

``name`` is ``<method>-<order>-s<seed>`` (``-val`` appended for a run measured on the
validation split) unless the config sets ``run_name``. Every module that names, locks, resumes,
finds or reads a run goes through :class:`RunDir` (the engine, sweep, launch, inspect, reports).
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Union

from .data.domains import NAMED_ORDERS
from .errors import CosamError
from .schema import Config

__all__ = ["RunDir", "RunLock", "RunName", "order_tag", "parse_run_name", "run_name"]

_STEP = re.compile(r"^step_(\d+)\.pt$")
_NAME = re.compile(
    r"^(?P<method>.+)-(?P<order>" + "|".join(NAMED_ORDERS) + r")-s(?P<seed>\d+)(?P<val>-val)?$"
)


class RunName(NamedTuple):
    """The parts of a default run-folder name."""

    method: str
    order: str
    seed: int
    val: bool = False


def run_name(method: str, order: str, seed: int, val: bool = False) -> str:
    """``<method>-<order>-s<seed>`` (``-val`` appended for a validation run)."""
    return f"{method}-{order}-s{seed}{'-val' if val else ''}"


def parse_run_name(name: str) -> Optional[RunName]:
    """The parts of a default name with a named order (paper, reverse, shuffled), else None."""
    m = _NAME.match(name)
    return None if m is None else RunName(m["method"], m["order"], int(m["seed"]), bool(m["val"]))


def order_tag(cfg: Config) -> str:
    """The order as a folder-name part: a named order, or ``custom`` for a list of tasks."""
    o = cfg.data.order
    return o if isinstance(o, str) and "," not in o else "custom"


class RunLock:
    """An exclusive lock on a run folder: two processes never write one run."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            raise CosamError(
                f"cannot write the run folder {self.path.parent}: {exc.strerror or exc} "
                f"(choose a writable results_dir)"
            ) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise CosamError(
                f"run folder {self.path.parent} is in use by another cosam process; "
                f"wait for it or use another run_name"
            ) from None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class RunDir:
    """A run folder (it need not exist yet).

    Arguments:
      path: the folder, ``<results_dir>/<profile>/<name>``.
    """

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)

    @classmethod
    def for_config(cls, cfg: Config) -> "RunDir":
        """The folder ``cfg`` writes: ``run_name`` if set, else the default name."""
        name = cfg.run_name or run_name(
            cfg.method, order_tag(cfg), cfg.seed, val=cfg.eval.split == "val"
        )
        return cls(Path(cfg.results_dir) / cfg.profile / name)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---- files -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def state_dir(self) -> Path:
        return self.path / "state"

    @property
    def done_path(self) -> Path:
        return self.path / "DONE"

    def step_path(self, step: int) -> Path:
        """``state/step_<step>.pt``."""
        return self.state_dir / f"step_{step}.pt"

    # ---- state -------------------------------------------------------------------------------
    def is_done(self) -> bool:
        """Whether the run finished (DONE is written last)."""
        return self.done_path.exists()

    def mark_done(self) -> None:
        self.done_path.write_text("finished\n")

    def steps(self) -> List[int]:
        """Saved resume steps, ascending (normally only the latest is kept)."""
        if not self.state_dir.is_dir():
            return []
        found = (_STEP.match(p.name) for p in self.state_dir.iterdir())
        return sorted(int(m[1]) for m in found if m)

    def last_step(self) -> Optional[int]:
        """The latest saved step, None if none."""
        steps = self.steps()
        return steps[-1] if steps else None

    def plan(self, force: bool = False) -> str:
        """What running this folder now would do: "reused" (finished), "resumed" (a saved step)
        or "ran" (from the start; always with ``force``)."""
        if force:
            return "ran"
        if self.is_done():
            return "reused"
        return "resumed" if self.last_step() is not None else "ran"

    def drop_steps(self, below: Optional[int] = None) -> None:
        """Delete saved steps (those below ``below``, or all)."""
        for step in self.steps():
            if below is None or step < below:
                self.step_path(step).unlink(missing_ok=True)

    def remove_if_empty(self) -> None:
        """Remove a folder that holds no finished run and no saved step (after a failure), so
        nothing half-written is left; a folder with a step is kept for resuming."""
        if self.is_done() or self.steps():
            return
        for path in (self.config_path, self.path / ".lock"):
            path.unlink(missing_ok=True)
        for d in (self.state_dir, self.path):
            try:
                d.rmdir()
            except OSError:
                pass

    # ---- the lock ----------------------------------------------------------------------------
    def lock(self) -> RunLock:
        """The exclusive lock a writer holds (``with run.lock(): ...``)."""
        return RunLock(self.path)

    def busy(self) -> bool:
        """Whether another process holds the lock (a run in progress here)."""
        lock = self.path / ".lock"
        if not lock.exists():
            return False
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)
