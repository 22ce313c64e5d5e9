"""User-defined domain lists: run any set of domains exactly like the built-in benchmark.

``data.layout`` may name a YAML (or JSON) file instead of a built-in layout::

    # my_domains.yaml  (paths relative to data.root)
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


def is_layout_file(layout: str) -> bool:
    return str(layout).lower().endswith((".yaml", ".yml", ".json"))


def _split(entry: Any, where: str, path: Path) -> SplitSpec:
    if not isinstance(entry, dict) or "images" not in entry or "masks" not in entry:
        raise ConfigError(f"{path}: {where} must be a mapping with 'images' and 'masks' folders (relative to data.root)")
    unknown = [k for k in entry if k not in _SPLIT_KEYS]
    if unknown:
        raise ConfigError(f"{path}: {where} has unknown keys {unknown}; valid keys: {', '.join(_SPLIT_KEYS)}")
    exts = entry.get("image_exts", [".jpg", ".jpeg", ".png"])
    exts = [exts] if isinstance(exts, str) else list(exts)
    return SplitSpec(str(entry["images"]), str(entry["masks"]), tuple(e.lower() for e in exts), str(entry.get("mask_ext", ".png")))


def load_custom_layout(path: Path) -> CustomLayout:
    """Read and validate a domain-list file (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data.layout file {path} does not exist (give a built-in layout name or a YAML file)")
    text = path.read_text()
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
    unknown = [k for k in data if k not in ("tasks", "probe")]
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {unknown}; valid keys: tasks, probe")
    specs: Dict[str, DomainSpec] = {}
    names = []
    for i, t in enumerate(data["tasks"]):
        if not isinstance(t, dict) or "name" not in t:
            raise ConfigError(f"{path}: tasks[{i}] needs a 'name', a 'train' and a 'test' entry")
        bad = [k for k in t if k not in ("name", "train", "test", "source")]
        if bad:
            raise ConfigError(f"{path}: tasks[{i}] has unknown keys {bad}; valid keys: name, train, test, source")
        name = str(t["name"])
        if name in specs:
            raise ConfigError(f"{path}: task name {name!r} appears twice")
        specs[name] = DomainSpec(name, _split(t.get("train"), f"tasks[{i}].train", path),
                                 _split(t.get("test"), f"tasks[{i}].test", path), str(t.get("source", "user-defined")))
        names.append(name)
    probe = None
    if data.get("probe") is not None:
        p = data["probe"]
        if not isinstance(p, dict) or "name" not in p:
            raise ConfigError(f"{path}: probe needs a 'name' and a 'test' entry")
        probe = str(p["name"])
        if probe in specs:
            raise ConfigError(f"{path}: the probe name {probe!r} is also a task name")
        specs[probe] = DomainSpec(probe, None, _split(p.get("test"), "probe.test", path), str(p.get("source", "user-defined probe")))
    return CustomLayout(path, specs, tuple(names), probe)
