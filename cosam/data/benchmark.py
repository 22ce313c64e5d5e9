"""Build a benchmark: the task sequence with its file lists, plus the natural-image probe."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosam.data.custom import data_root_for, is_layout_file, load_custom_layout
from cosam.data.domains import LAYOUTS, PROBE, PROBE_TASK_ID, TASK_IDS, DomainSpec, resolve_order
from cosam.data.reader import SamplePath, check_root, folder_problem, list_samples
from cosam.errors import ConfigError, DataError

LOGGER = logging.getLogger(__name__)

SYNTHETIC_MARKER = "SYNTHETIC.md"


@dataclass(frozen=True)
class Task:
    """One domain of the sequence (or the probe) with its file lists.

    Arguments:
      name (str): the slot name, e.g. "BSData" or "COCO".
      task_id (int): the domain's identity (TASK_IDS; PROBE_TASK_ID for the probe), independent of
        its position in the order.
      train (tuple(SamplePath)): training pairs sorted by name; empty for the probe.
      test (tuple(SamplePath)): test pairs sorted by name; empty when the benchmark was built for
        validation (eval_split="val"), which never lists the test split.
      val (tuple(SamplePath)): validation pairs sorted by name, carved from the train split's
        files (see split_validation; their ``split`` reads "val"); disjoint from train.
    """

    name: str
    task_id: int
    train: tuple[SamplePath, ...]
    test: tuple[SamplePath, ...]
    val: tuple[SamplePath, ...] = ()

    def eval_samples(self, split: str = "test") -> tuple[SamplePath, ...]:
        """The pairs a run scores this task on: ``test`` or ``val``."""
        return self.val if split == "val" else self.test


@dataclass(frozen=True)
class Benchmark:
    """A task sequence on one data root.

    Arguments:
      root (Path): the data root.
      layout (str): the key of LAYOUTS used to find the folders.
      order (tuple(str)): task names in training order.
      tasks (tuple(Task)): the tasks in training order.
      probe (Task or None): the zero-shot retention probe, test only.
      synthetic (bool): True when the root holds generated data (a SYNTHETIC.md file).
      eval_split (str): "test", or "val" when only train and validation pairs were listed.
    """

    root: Path
    layout: str
    order: tuple[str, ...]
    tasks: tuple[Task, ...]
    probe: Task | None
    synthetic: bool
    eval_split: str = "test"

    def with_probe(self) -> list[Task]:
        """The tasks in training order, then the probe if there is one."""
        return list(self.tasks) + ([self.probe] if self.probe is not None else [])

    def summary(self) -> list[dict[str, Any]]:
        """One row per task in order, then the probe: name, task_id, n_train, n_val, n_test."""
        rows = self.with_probe()
        return [
            {
                "name": t.name,
                "task_id": t.task_id,
                "n_train": len(t.train),
                "n_val": len(t.val),
                "n_test": len(t.test),
            }
            for t in rows
        ]


def _check_cap(value: int | None, key: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(
            f"{key}={value!r} is invalid; expected a positive integer or None (no cap)"
        )


def _rank(sample: SamplePath) -> str:
    return hashlib.sha1(f"{sample.domain}/{sample.name}".encode()).hexdigest()


def split_validation(
    samples: Sequence[SamplePath], val_cap: int | None
) -> tuple[tuple[SamplePath, ...], tuple[SamplePath, ...]]:
    """Carve a validation set from a train split: the LAST val_cap pairs of the sha1 ranking.

    The ranking is the one cap_samples uses, so cap_samples(pool, train_cap) keeps the same
    training pairs as cap_samples(samples, train_cap) whenever train_cap <= len(pool): adding a
    validation split does not change a capped training set. Validation pairs come only from the
    train split (never from test) and are marked ``split="val"``.

    Arguments:
      samples (Sequence(SamplePath)): one domain's train split.
      val_cap (int or None): how many pairs to hold out; 0 or None holds out none.

    Returns:
      (pool, val): the pairs left for training (ranking order) and the validation pairs sorted
        by name; disjoint.

    Raises:
      DataError: val_cap leaves no training pair.
    """
    if not val_cap:
        return tuple(samples), ()
    ranked = sorted(samples, key=_rank)
    if val_cap >= len(ranked):
        domain = ranked[0].domain if ranked else "?"
        raise DataError(
            f"data.val_cap={val_cap} holds out every one of the {len(ranked)} training pairs of domain {domain!r}; "
            f"fix: set data.val_cap below {len(ranked)}"
        )
    val = tuple(
        sorted(
            (dataclasses.replace(s, split="val") for s in ranked[-val_cap:]), key=lambda s: s.name
        )
    )
    return tuple(ranked[:-val_cap]), val


def cap_samples(samples: Sequence[SamplePath], cap: int | None) -> tuple[SamplePath, ...]:
    """Keep a deterministic, random-looking subset of at most cap pairs.

    Pairs are ranked by sha1("<domain>/<name>"), the first cap are kept and then re-sorted by
    name. A cap therefore never favours the alphabetically first files, and a smaller cap is a
    subset of a larger one.

    Arguments:
      samples (Sequence(SamplePath)): the candidates.
      cap (int or None): how many to keep; None keeps all.

    Returns:
      (tuple(SamplePath)): the kept pairs, sorted by name.
    """
    if cap is None or cap >= len(samples):
        return tuple(sorted(samples, key=lambda s: s.name))
    ranked = sorted(samples, key=_rank)
    return tuple(sorted(ranked[:cap], key=lambda s: s.name))


def _check_domain_folder(root: Path, spec: DomainSpec, layout: str) -> None:
    folder = spec.folder
    problem = folder_problem(root / folder) if folder else None
    if problem is not None:
        raise DataError(
            f"folder {root / folder} of domain {spec.name!r} ({spec.source}) {problem}; "
            f"expected it under the data root {root} for layout {layout!r}; fix: add the folder, "
            f"point data.root / COSAM_DATA at the benchmark folder, or choose the matching data.layout"
        )


def build_benchmark(
    root: Path,
    layout: str = "cosam-mini",
    order: str | Sequence[str] = "paper",
    seed: int = 0,
    train_cap: int | None = None,
    test_cap: int | None = None,
    probe_cap: int | None = None,
    include_probe: bool = True,
    val_cap: int | None = 0,
    eval_split: str = "test",
    domains: Sequence[str] | None = None,
) -> Benchmark:
    """List every task's files on a data root.

    Only file names are read here; images are decoded later by load_pair.

    Arguments:
      root (Path): the data root.
      layout (str): a key of LAYOUTS, or the path of a YAML/JSON domain list (cosam.data.custom).
      order (str or Sequence(str)): see resolve_order.
      seed (int): seeds a "shuffled" order.
      train_cap (int or None): at most this many training pairs per task (see cap_samples).
      test_cap (int or None): at most this many test pairs per task.
      probe_cap (int or None): at most this many probe pairs.
      include_probe (bool): also list the natural-image probe.
      val_cap (int or None): validation pairs per task carved from its train split before
        train_cap applies (see split_validation); 0 or None: no validation split.
      eval_split (str): "test" lists every split; "val" lists only train (and validation): the
        test splits and the probe are never listed, so nothing downstream can read them.
      domains (Sequence(str) or None): the task slots that run (None: all); ``order`` is resolved
        over all slots, then restricted to these, keeping its order (``shuffled`` thus gives a
        seeded order of the subset). An explicit order naming a slot outside them is refused.

    Returns:
      (Benchmark): tasks in training order, each with its fixed task id.

    Raises:
      ConfigError: unknown layout, order or task name, or an invalid cap.
      DataError: the root, a domain folder or a split folder is missing, or a split is malformed.
    """
    for value, key in ((train_cap, "train_cap"), (test_cap, "test_cap"), (probe_cap, "probe_cap")):
        _check_cap(value, key)
    if val_cap is not None and (
        isinstance(val_cap, bool) or not isinstance(val_cap, int) or val_cap < 0
    ):
        raise ConfigError(
            f"val_cap={val_cap!r} is invalid; expected a non-negative integer (0: no validation split)"
        )
    if eval_split not in ("test", "val"):
        raise ConfigError(f"eval_split={eval_split!r} is invalid; valid: test, val")
    if eval_split == "val" and not val_cap:
        raise ConfigError(
            "eval.split=val needs a validation split; fix: set data.val_cap to a positive integer"
        )
    if is_layout_file(layout):
        custom = load_custom_layout(Path(layout))
        root = data_root_for(custom, Path(root))  # the file's own root, if it sets one
        specs, universe, probe_name = custom.specs, custom.tasks, custom.probe
        task_ids = {n: i for i, n in enumerate(universe)}
        names = resolve_order(order, seed, universe=universe, probe=probe_name)
    else:
        if layout not in LAYOUTS:
            raise ConfigError(
                f"unknown data layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}, or a YAML file of domains"
            )
        specs, probe_name, task_ids = LAYOUTS[layout], PROBE, dict(TASK_IDS)
        names = resolve_order(order, seed)
    if domains is not None:
        universe_names = list(universe) if is_layout_file(layout) else list(specs)
        keep = resolve_order(
            list(domains),
            seed,
            universe=[n for n in universe_names if n != probe_name],
            probe=probe_name,
        )
        outside = (
            [n for n in names if n not in keep]
            if not isinstance(order, str) or "," in order
            else []
        )
        if outside:
            raise ConfigError(
                f"data.order names {', '.join(outside)}, which data.tasks={list(domains)} leaves out; "
                f"fix: add them to data.tasks or drop them from the order"
            )
        names = [n for n in names if n in keep]
    root = check_root(root)

    tasks: list[Task] = []
    for name in names:
        spec = specs[name]
        _check_domain_folder(root, spec, layout)
        if spec.train is None:
            raise ConfigError(
                f"domain {name!r} of layout {layout!r} has no training split and cannot be a task"
            )
        pool, val = split_validation(list_samples(root, spec.train, name, "train"), val_cap)
        test = list_samples(root, spec.test, name, "test") if eval_split == "test" else []
        tasks.append(
            Task(
                name, task_ids[name], cap_samples(pool, train_cap), cap_samples(test, test_cap), val
            )
        )

    probe: Task | None = None
    if include_probe and probe_name is not None and eval_split == "test":
        spec = specs[probe_name]
        _check_domain_folder(root, spec, layout)
        test = list_samples(root, spec.test, probe_name, "test")
        probe = Task(
            probe_name,
            len(task_ids) if probe_name != PROBE else PROBE_TASK_ID,
            (),
            cap_samples(test, probe_cap),
        )

    bench = Benchmark(
        root=root,
        layout=layout,
        order=tuple(names),
        tasks=tuple(tasks),
        probe=probe,
        synthetic=(root / SYNTHETIC_MARKER).is_file(),
        eval_split=eval_split,
    )
    LOGGER.info(
        "benchmark %s (layout %s%s): train/val/test %s",
        root,
        layout,
        ", synthetic" if bench.synthetic else "",
        "; ".join(
            f"{r['name']} {r['n_train']}/{r['n_val']}/{r['n_test']}" for r in bench.summary()
        ),
    )
    return bench
