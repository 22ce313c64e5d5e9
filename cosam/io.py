"""Atomic writes and run provenance (git SHA, package versions, command)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

import torch

from .errors import CosamError

REPO_ROOT = Path(__file__).resolve().parents[1]
TRACKED_PACKAGES = ("torch", "torchvision", "segment-anything", "numpy", "pillow", "cosam")


def portable(path: Any, root: Optional[Path] = None) -> str:
    """A path as a report shows it: relative to the repository when it lies inside it, else by
    what it is (its last component: ``cosam-mini``, ``minisam_vit_t.pth``), never the absolute
    folder of the machine the report ran on. Anything that is not an absolute path (``None``,
    ``"synthetic"``, a relative path) is returned as text unchanged.

    Arguments:
      path: a str or Path (or None).
      root (Path): the repository root; default :data:`REPO_ROOT`.
    """
    if path is None:
        return ""
    text = str(path)
    if not os.path.isabs(text):
        return text
    p = Path(os.path.normpath(text))
    base = Path(os.path.normpath(str(root or REPO_ROOT)))
    try:
        rel = p.relative_to(base)
    except ValueError:
        return p.name or text
    return str(rel) if str(rel) != "." else "."


def portable_text(text: str, root: Optional[Path] = None) -> str:
    """``text`` with every absolute path in it (a word starting with ``/``, or a ``key=/path``
    override) replaced by :func:`portable`."""

    def one(word: str) -> str:
        key, sep, value = word.partition("=")
        if sep and value.startswith("/"):
            return f"{key}={portable(value, root)}"
        return portable(word, root) if word.startswith("/") else word

    return " ".join(one(w) for w in text.split(" "))


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, Paths -> str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _file_mode() -> int:
    """0666 less the process umask (what ``open(path, "w")`` would give)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync, then rename over ``path``.

    A crash leaves either the old file or the new one, never a partial one. Errors (read-only
    folder, full disk) are re-raised as CosamError naming the file; the temp file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CosamError(
            f"cannot write {path}: {exc.strerror or exc} (choose a writable results_dir/cache_dir)"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; results are ordinary files others may read
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CosamError(
            f"cannot write {path}: {exc.strerror or exc} (free disk space or choose another folder)"
        ) from None


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    """The JSON value in ``path`` (gzipped when its name ends in ``.gz``)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def write_csv(
    path: Path, rows: Iterable[Mapping[str, Any]], fieldnames: Optional[List[str]] = None
) -> None:
    rows = list(rows)
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(
            {
                k: ("" if (isinstance(v, float) and not math.isfinite(v)) else v)
                for k, v in r.items()
            }
        )
    write_text(path, buf.getvalue())


def torch_save(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def git_sha(root: Path = REPO_ROOT) -> Dict[str, Any]:
    """The commit the code ran at, and whether the work tree had uncommitted changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return {"sha": sha or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def package_versions() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance() -> Dict[str, Any]:
    """Everything needed to say what produced a result file."""
    return {
        "git": git_sha(),
        "versions": package_versions(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else None,
        "host": platform.node(),
        "torch_threads": torch.get_num_threads(),
    }
