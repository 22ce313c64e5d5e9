"""User-defined domain lists: run any set of domains exactly like the built-in benchmark.

``data.layout`` may name a YAML (or JSON) file instead of a built-in layout::

    # my_domains.yaml
    root: .                       # optional data root: relative to this file's folder, or absolute
    tasks:                        # training order of "paper"; task ids follow this list
      - name: Cracks
        train: {images: cracks/train/images, masks: cracks/train/masks}
        test:  {images: cracks/test/images,  masks: cracks/test/masks}
      - name: Tumours
        train: {images: mri/train/img, masks: mri/train/gt, image_exts: [.png], mask_ext: .png}
        test:  {images: mri/test/img,  masks: mri/test/gt,  image_exts: [.png], mask_ext: .png}
    probe:                        # optional zero-shot probe (test only)
      name: Natural
      test: {images: coco/images, masks: coco/masks}

Folder paths: an absolute path is used as is; a relative one is resolved from the data root. The
data root is ``root`` when the file gives it (a relative ``root`` is resolved from the folder the
file is in, as its path is written: through a symbolic link to the file, from the link's folder),
else ``data.root`` (``check-data ROOT``); giving both, they must name the same folder. Symbolic
links anywhere in these paths are followed.

Orders: ``paper`` is the file's order, ``reverse`` its reverse, ``shuffled`` a seeded permutation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from cosam.data.domains import DomainSpec
from cosam.data.reader import SplitSpec
from cosam.errors import ConfigError

_SPLIT_KEYS = ("images", "masks", "image_exts", "mask_ext")


@dataclass(frozen=True)
class CustomLayout:
    """A layout read from a file: domain specs, the task names in file order, the probe name."""

    path: Path
    specs: Dict[str, DomainSpec]
    tasks: Tuple[str, ...]
    probe: Optional[str]
    root: Optional[Path] = None


def data_root_for(layout: CustomLayout, given: Optional[Path]) -> Optional[Path]:
    """The data root of a custom layout: its own ``root`` and/or ``given`` (data.root, check-data's
    ROOT); None when neither is set. Both set must be the same folder.

    Raises:
      ConfigError: the two name different folders.
    """
    if layout.root is None:
        return given
    if given is not None and Path(given).resolve() != layout.root.resolve():
        raise ConfigError(
            f"{layout.path} sets root {layout.root} but the data root given is {given}; expected one data root; "
            f"fix: drop data.root (--data / check-data's ROOT) or the file's 'root' entry"
        )
    return layout.root


def is_layout_file(layout: str) -> bool:
    return str(layout).lower().endswith((".yaml", ".yml", ".json"))


def _split(entry: Any, where: str, path: Path) -> SplitSpec:
    if not isinstance(entry, dict) or "images" not in entry or "masks" not in entry:
        raise ConfigError(
            f"{path}: {where} must be a mapping with 'images' and 'masks' folders "
            f"(absolute, or relative to the data root)"
        )
    unknown = [k for k in entry if k not in _SPLIT_KEYS]
    if unknown:
        raise ConfigError(
            f"{path}: {where} has unknown keys {unknown}; valid keys: {', '.join(_SPLIT_KEYS)}"
        )
    exts = entry.get("image_exts", [".jpg", ".jpeg", ".png"])
    exts = [exts] if isinstance(exts, str) else list(exts)
    return SplitSpec(
        str(entry["images"]),
        str(entry["masks"]),
        tuple(e.lower() for e in exts),
        str(entry.get("mask_ext", ".png")),
    )


def load_custom_layout(path: Path) -> CustomLayout:
    """Read and validate a domain-list file (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        from cosam.data.reader import folder_problem

        why = "is a folder" if path.is_dir() else (folder_problem(path) or "is not a regular file")
        raise ConfigError(
            f"data.layout file {path} {why}; expected a built-in layout name "
            f"(cosam-mini, cosam-original) or the path of a YAML/JSON domain list"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the data.layout file {path}: {getattr(exc, 'strerror', None) or exc}; "
            f"fix: make it a readable UTF-8 YAML/JSON file"
        ) from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list) or not data["tasks"]:
        raise ConfigError(f"{path} must hold a non-empty 'tasks' list (and optionally a 'probe')")
    unknown = [k for k in data if k not in ("tasks", "probe", "root")]
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level keys {unknown}; valid keys: root, tasks, probe"
        )
    root = None
    if data.get("root") is not None:
        if not isinstance(data["root"], str) or not data["root"].strip():
            raise ConfigError(
                f"{path}: root must be a folder path (relative to the file's folder, or absolute), "
                f"got {data['root']!r}"
            )
        root = path.parent / Path(data["root"]).expanduser()
    specs: Dict[str, DomainSpec] = {}
    names = []
    for i, t in enumerate(data["tasks"]):
        if not isinstance(t, dict) or "name" not in t:
            raise ConfigError(f"{path}: tasks[{i}] needs a 'name', a 'train' and a 'test' entry")
        bad = [k for k in t if k not in ("name", "train", "test", "source")]
        if bad:
            raise ConfigError(
                f"{path}: tasks[{i}] has unknown keys {bad}; valid keys: name, train, test, source"
            )
        name = str(t["name"])
        if name in specs:
            raise ConfigError(f"{path}: task name {name!r} appears twice")
        specs[name] = DomainSpec(
            name,
            _split(t.get("train"), f"tasks[{i}].train", path),
            _split(t.get("test"), f"tasks[{i}].test", path),
            str(t.get("source", "user-defined")),
        )
        names.append(name)
    probe = None
    if data.get("probe") is not None:
        p = data["probe"]
        if not isinstance(p, dict) or "name" not in p:
            raise ConfigError(f"{path}: probe needs a 'name' and a 'test' entry")
        probe = str(p["name"])
        if probe in specs:
            raise ConfigError(f"{path}: the probe name {probe!r} is also a task name")
        specs[probe] = DomainSpec(
            probe,
            None,
            _split(p.get("test"), "probe.test", path),
            str(p.get("source", "user-defined probe")),
        )
    return CustomLayout(path, specs, tuple(names), probe, root)
