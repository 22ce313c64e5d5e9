"""A small generated benchmark in the cosam-mini layout, for tests and smoke runs without real data:
writing it (into a temporary folder renamed when complete, under a lock) and reusing it.

The images and masks are drawn by :mod:`cosam.data.painters`, one painter per domain, so that
domain identity is learnable. The output is a deterministic function of the parameters.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from cosam import faults
from cosam.data.benchmark import SYNTHETIC_MARKER
from cosam.data.domains import LAYOUTS, PAPER_ORDER, PROBE
from cosam.data.painters import PAINTERS, paint
from cosam.errors import DataError

LOGGER = logging.getLogger(__name__)

# Bump when the painters (cosam.data.painters) change, so old folders are regenerated instead of reused.
_GENERATOR_VERSION = 2  # 2: MVTec_I is written to piped/ (the cosam-mini mapping since 2026-12-02)
_JPEG_QUALITY = 95

_NOTE = """# Synthetic data: generated, NOT real

This folder was written by `cosam.data.synthetic.make_synthetic_benchmark`. Every image and mask
is drawn by a small procedural painter (one per domain: textures, colours and foreground shapes
that differ between domains). Nothing here is a photograph or a real annotation. Use it only for
tests and smoke runs; results on it say nothing about CoSAM or the real benchmark.

The layout is that of cosam-mini: `<folder>/<split>/images/<name>.jpg` (JPEG quality 95) and
`<folder>/<split>/masks/<name>.png` (8-bit, values 0 and 255).
"""


def _parameters_line(params: dict[str, int]) -> str:
    return "parameters: " + json.dumps(params, sort_keys=True)


def _is_current(root: Path, line: str) -> bool:
    """root holds a complete generated benchmark with these parameters."""
    try:
        return line in (root / SYNTHETIC_MARKER).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False


_GENERATED_NAME = re.compile(r"^[a-z_]+_(train|test)_\d{4}\.(jpg|png)$")


def _is_interrupted_generation(root: Path) -> bool:
    """root holds nothing but what this generator writes, without its marker: the leftover of a
    generation that was killed (the code before the atomic rename wrote in place)."""
    dirs = {
        Path(d)
        for spec in LAYOUTS["cosam-mini"].values()
        for sp in (spec.train, spec.test)
        if sp is not None
        for d in (sp.image_dir, sp.mask_dir)
    }
    parents = {q for d in dirs for q in d.parents if str(q) != "."} | dirs
    try:
        for p in root.rglob("*"):
            rel = p.relative_to(root)
            if p.is_symlink():
                return False
            if p.is_dir():
                if rel not in parents:
                    return False
            elif rel.parent not in dirs or not _GENERATED_NAME.match(p.name):
                return False
    except OSError:
        return False
    return True


@contextmanager
def _generation_lock(root: Path) -> Iterator[None]:
    """An exclusive lock (fcntl) beside root, so concurrent generators wait for one another."""
    lock = root.parent / f".{root.name}.lock"
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as exc:
        raise DataError(
            f"cannot create the synthetic benchmark beside {root}: {exc.strerror or exc}; "
            f"fix: choose a writable cache_dir"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_benchmark(root: Path, params: dict[str, int], line: str) -> None:
    n_train, n_test, n_probe, size, seed = (
        params[k] for k in ("n_train", "n_test", "n_probe", "size", "seed")
    )
    for index, name in enumerate((*PAPER_ORDER, PROBE)):
        spec = LAYOUTS["cosam-mini"][name]
        rng = np.random.default_rng([seed, index])
        splits = [("test", spec.test, n_probe)]
        if spec.train is not None:
            splits = [("train", spec.train, n_train), ("test", spec.test, n_test)]
        for split, split_spec, count in splits:
            image_dir, mask_dir = root / split_spec.image_dir, root / split_spec.mask_dir
            image_dir.mkdir(parents=True, exist_ok=True)
            mask_dir.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img, mask = paint(PAINTERS[name], rng, size, name)
                stem = f"{name.lower()}_{split}_{i:04d}"
                Image.fromarray(img).save(image_dir / f"{stem}.jpg", quality=_JPEG_QUALITY)
                Image.fromarray(mask.astype(np.uint8) * 255).save(mask_dir / f"{stem}.png")
                faults.point("synthetic")
    (root / SYNTHETIC_MARKER).write_text(_NOTE + "\n" + line + "\n", encoding="utf-8")


def make_synthetic_benchmark(
    root: Path,
    n_train: int = 12,
    n_test: int = 6,
    n_probe: int = 6,
    size: int = 96,
    seed: int = 0,
) -> Path:
    """Write a small generated benchmark in the cosam-mini layout, safely under kills and concurrency.

    Writes the 8 task domains (n_train + n_test pairs each) and the natural_coco probe (n_probe
    test pairs), with the folder names of LAYOUTS["cosam-mini"], and a SYNTHETIC.md file that
    says the data is generated. Image sides vary per image within [0.75, 1.25] x size. If
    root/SYNTHETIC.md already records the same parameters nothing is rewritten; a synthetic folder
    with other parameters is regenerated.

    The benchmark is written into a temporary sibling folder and renamed to root when complete,
    under an exclusive lock beside root: a killed generation leaves no partial root (its temporary
    folder is removed by the next generation), and concurrent callers wait for the first and then
    reuse its folder. A leftover of an interrupted generation by older code (generated files
    only, no SYNTHETIC.md) is regenerated; any other non-empty folder is never touched.

    Arguments:
      root (Path): the folder to write (its parent is created if needed).
      n_train (int): training pairs per task domain.
      n_test (int): test pairs per task domain.
      n_probe (int): probe pairs.
      size (int): nominal image side in pixels.
      seed (int): seeds numpy.random.default_rng; the output depends only on the parameters.

    Returns:
      (Path): root.

    Raises:
      DataError: root is a non-empty folder that is not a synthetic benchmark, or cannot be written.
    """
    given = Path(root)
    root = Path(
        os.path.realpath(given)
    )  # a symbolic link to the cache folder is kept, its target written
    params = {
        "n_train": n_train,
        "n_test": n_test,
        "n_probe": n_probe,
        "size": size,
        "seed": seed,
        "version": _GENERATOR_VERSION,
    }
    line = _parameters_line(params)
    if _is_current(root, line):
        return given
    with _generation_lock(root):
        if _is_current(root, line):  # another process generated it while this one waited
            return given
        for stale in root.parent.glob(
            f".{root.name}.tmp-*"
        ):  # killed generations (the lock is ours)
            shutil.rmtree(stale, ignore_errors=True)
        if root.exists():
            if (root / SYNTHETIC_MARKER).is_file():
                LOGGER.info("regenerating synthetic benchmark in %s with %s", root, line)
            elif root.is_dir() and _is_interrupted_generation(root):
                LOGGER.warning(
                    "%s holds an interrupted synthetic generation (no %s); regenerating it",
                    root,
                    SYNTHETIC_MARKER,
                )
            elif not root.is_dir() or any(root.iterdir()):
                raise DataError(
                    f"{root} is not empty and has no {SYNTHETIC_MARKER}; expected a new or empty folder for "
                    f"the synthetic benchmark (existing data is never overwritten); fix: choose another folder"
                )
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        try:
            _write_benchmark(tmp, params, line)
            if root.exists():
                old = root.parent / f".{root.name}.tmp-{os.getpid()}-old"
                os.rename(root, old)
                os.rename(tmp, root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, root)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(
                f"cannot write the synthetic benchmark {root}: {exc.strerror or exc}; "
                f"fix: free disk space or choose a writable cache_dir"
            ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return given
