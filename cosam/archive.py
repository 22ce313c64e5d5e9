"""A grid's finished runs, kept small enough to commit: what the tables read, without the state.

``python -m cosam archive --methods ... --seeds 0 1 2 --orders paper --profile cpu --out
results/archive`` copies each finished run of the grid (made with the grid's config) from
``--results-dir`` into ``<out>/<profile>/<name>/``: ``DONE``, ``config.json``, ``costs.json``,
``router.json`` (MoDA), ``timing.json``, ``metrics.csv`` and ``matrix.json`` gzipped
(``matrix.json.gz``: its per-image scores are most of a run's bytes; a cpu ``sequential`` run's
287 KB gzip to 66 KB, about 80 KB archived in all). For a MoDA run it first computes and stores
the GFT claim's value (``silhouette.json``, which needs the run's saved state). The saved
state (``state/``, MBs per run) is left behind.

The archive is itself a results folder: ``python -m cosam tables --results-dir <out> ...``
reads it like the run folders (a run's config must still match the grid's, as everywhere), and
runs archived on different days join one table. An archived run cannot be resumed, re-routed
or inspected (no state): the notebooks and the sweep keep their own ``results_dir``.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import List, Tuple

from .aggregate import collect
from .config import Config, from_dict
from .errors import ConfigError, CosamError
from .grid import SweepSpec
from .io import write_text
from .provenance import config_differences, read_run_meta
from .rundir import RunDir

#: The small files of a finished run that the tables and reports read, copied as they are.
COPIED = (
    "config.json",
    "costs.json",
    "router.json",
    "timing.json",
    "metrics.csv",
    "silhouette.json",
)


def archived_differences(run_dir: Path, dest: Path) -> List[str]:
    """What differs, in everything that changes its numbers, between the finished run in
    ``run_dir`` and the run already archived in ``dest`` (empty when ``dest`` holds no finished
    run, or the same run).

    Arguments:
      run_dir (Path): a finished run folder.
      dest (Path): an archived run's folder, possibly absent.

    Returns:
      (list(str)): :func:`cosam.provenance.config_differences` of the two recorded configs.
    """
    if not RunDir(dest).done_path.is_file():
        return []
    new = read_run_meta(run_dir, "finished")
    try:
        cfg = from_dict(Config, new.get("config", {}))
    except ConfigError as e:
        raise CosamError(f"{run_dir / 'config.json'}: cannot be read as a config ({e})") from e
    identity = (new.get("resolved") or {}).get("identity")
    return config_differences(
        read_run_meta(dest, "finished"), cfg, identity if isinstance(identity, dict) else None
    )


def archive_run(run_dir: Path, dest: Path) -> Path:
    """Copy one finished run's small files into ``dest`` (created), ``matrix.json`` gzipped;
    ``DONE`` is written last, so a torn copy is never read as finished.

    An archived run is finished work that may no longer be reproducible on this machine, so it is
    replaced only by the same run (same numbers-deciding config and identity): archiving a run of
    another protocol over it raises instead of silently replacing it.

    Arguments:
      run_dir (Path): a finished run folder.
      dest (Path): the archived run's folder.

    Returns:
      (Path): ``dest``.

    Raises:
      CosamError: ``dest`` holds a finished run whose numbers would differ; names the
        differences and the fix.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    _refuse_clashes([(dest, archived_differences(run_dir, dest))])
    return _copy_run(run_dir, dest)


def _refuse_clashes(checked: List[Tuple[Path, List[str]]]) -> None:
    """Raise naming every (archived folder, differences) pair with differences; else nothing."""
    clashes = [f"{dest}: {'; '.join(diffs)}" for dest, diffs in checked if diffs]
    if clashes:
        raise CosamError(
            f"{len(clashes)} archived run(s) would be replaced by runs whose numbers differ: "
            f"{' | '.join(clashes)}. Fix: archive into another folder (--out), or move those runs "
            "away first if they are to be replaced"
        )


def _copy_run(run_dir: Path, dest: Path) -> Path:
    """:func:`archive_run`'s copy, once ``dest`` is known not to hold a different run."""
    dest.mkdir(parents=True, exist_ok=True)
    src_done, dest_done = RunDir(run_dir).done_path, RunDir(dest).done_path
    dest_done.unlink(missing_ok=True)
    for name in COPIED:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, dest / name)
    with open(run_dir / "matrix.json", "rb") as src, gzip.open(dest / "matrix.json.gz", "wb") as f:
        shutil.copyfileobj(src, f)
    write_text(dest_done, src_done.read_text())
    return dest


def archive_grid(spec: SweepSpec, out: Path, gft: bool = True) -> List[Path]:
    """Archive every finished run of ``spec``'s grid (:func:`archive_run`) under
    ``<out>/<profile>/``, the GFT silhouette of each MoDA run computed and stored first.

    Arguments:
      spec (SweepSpec): the grid; its ``results_dir`` holds the runs.
      out (Path): the archive's root (a results folder).
      gft (bool): compute the MoDA runs' ``silhouette.json`` where missing.

    Returns:
      (List[Path]): the archived run folders.
    """
    from .claims import BASES
    from .tables import by_method_seed, gft_silhouettes

    spec.validate()
    records, _ = collect(spec)
    todo = [
        (combo, rec, Path(out) / spec.profile / rec.path.name)
        for combo, rec in sorted(records.items(), key=lambda kv: kv[0].name)
    ]
    # checked before the silhouettes and before anything is copied: a refused grid changes nothing
    _refuse_clashes([(dest, archived_differences(rec.path, dest)) for _, rec, dest in todo])
    if gft:
        for order in spec.orders:
            gft_silhouettes(by_method_seed(records, order))  # stores silhouette.json per run
    moda = set(BASES.values())
    done = []
    for combo, rec, dest in todo:
        if gft and combo.method in moda and not (rec.path / "silhouette.json").is_file():
            raise FileNotFoundError(f"{rec.path}: no silhouette.json after computing it")
        done.append(_copy_run(rec.path, dest))
    return done
