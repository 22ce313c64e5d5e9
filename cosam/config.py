"""One typed configuration with profiles; unknown keys are rejected with the valid names.

A run is fully described by a :class:`Config`. It is built from a profile (``smoke``, ``cpu``,
``demo``, ``paper``) plus overrides, written beside every result, and read back for resume and reports::

    cfg = make_config("cpu", {"method": "sequential", "data": {"order": "shuffled"}, "seed": 1})
    cfg = make_config("cpu", dotted=["train.epochs=3"])         # CLI form

Profiles (the single switch between a seconds-long test and the paper protocol) are described,
and set, in :mod:`cosam.profiles`.

Every profile runs where ``device`` says (``auto``: the GPU when there is one). On CUDA,
``train.precision="auto"`` means bf16 autocast (TF32 for what stays fp32); on the CPU it means
fp32, so CPU results do not depend on these settings (:mod:`cosam.accel`).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any, Dict, Mapping, Optional, Sequence

from .errors import ConfigError
from .profiles import METHOD_PROFILE_OVERRIDES, PROFILES
from .schema import (  # the typed dataclasses live below the methods, which take a Config
    Config,
    bad_value,
    check_fields,
    from_dict,
)


def merge(base: Dict[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and k != "method_options":
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_value(text: str) -> Any:
    """CLI value: JSON if it parses (numbers, true/false/null, lists), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def location_overrides(
    data: Optional[str] = None, results_dir: Optional[str] = None, backbone: Optional[str] = None
) -> Dict[str, Any]:
    """The nested overrides of the CLI's ``--data``, ``--results-dir`` and ``--backbone`` (unset
    ones left out), shared by ``run``/``study`` and ``sweep``."""
    o: Dict[str, Any] = {}
    if data:
        o.setdefault("data", {})["root"] = data
    if results_dir:
        o["results_dir"] = results_dir
    if backbone:
        o.setdefault("model", {})["backbone"] = backbone
    return o


def dotted_to_dict(items: Sequence[str]) -> Dict[str, Any]:
    """``["train.epochs=3", "data.order=reverse"]`` -> nested dict."""
    out: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} must look like section.key=value (e.g. train.epochs=3)"
            )
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = parse_value(value)
    return out


def make_config(
    profile: str = "cpu", overrides: Optional[Mapping[str, Any]] = None, dotted: Sequence[str] = ()
) -> Config:
    """Defaults <- profile <- overrides <- dotted overrides, validated."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    values = merge(Config().to_dict(), PROFILES[profile])
    values["profile"] = profile
    method = (
        (overrides or {}).get("method") or dotted_to_dict(dotted).get("method") or values["method"]
    )
    per_method = METHOD_PROFILE_OVERRIDES.get(profile, {})
    # a combination ``base+plugin`` takes its base's adjustments (sam_adapter+replay: sam_adapter's)
    base = method.split("+", 1)[0] if isinstance(method, str) else method
    values = merge(values, per_method.get(method, per_method.get(base, {})))
    if overrides:
        # Validate the overrides' keys before merging so a typo names itself.
        from_dict(Config, merge(values, overrides))
        values = merge(values, overrides)
    if dotted:
        values = merge(values, dotted_to_dict(dotted))
    cfg = from_dict(Config, values)
    validate(cfg)
    return cfg


_POSITIVE_INTS = (
    "train.epochs",
    "train.batch_size",
    "train.lr_step",
    "train.loss_points",
    "train.n_points",
    "eval.batch_size",
)
_POSITIVE_INTS_OR_NULL = (
    "threads",
    "data.train_cap",
    "data.test_cap",
    "data.probe_cap",
    "model.image_size",
    "model.fallback_image_size",
)
_CHOICES = {
    "train.augment": ("lsj", "none"),
    "train.cache_dtype": ("float16", "bfloat16", "float32"),
    "train.precision": ("auto", "fp32", "bf16"),
    "train.cache_on_device": ("auto", "always", "never"),
}


def _get(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def validate(cfg: Config) -> None:
    """Check every value's type, range and choice (each error names the key and what is valid).

    ``from_dict`` has already checked the types against the annotations; this re-checks them (a
    Config built in code skips ``from_dict``) and adds the ranges and choices.
    """
    check_fields(cfg)
    if cfg.profile not in PROFILES:
        raise bad_value("profile", cfg.profile, "one of " + ", ".join(PROFILES))
    if cfg.seed < 0:
        raise bad_value("seed", cfg.seed, "an integer >= 0")
    for key in _POSITIVE_INTS + _POSITIVE_INTS_OR_NULL:
        v = _get(cfg, key)
        if v is not None and v < 1:
            raise bad_value(
                key, v, "a positive integer" + (" or null" if key in _POSITIVE_INTS_OR_NULL else "")
            )
    t = cfg.train
    for key in ("train.lr", "train.lr_gamma"):
        v = _get(cfg, key)
        if not (math.isfinite(v) and v > 0):
            raise bad_value(key, v, "a number > 0 (e.g. 1e-4)")
    if not (math.isfinite(t.weight_decay) and t.weight_decay >= 0):
        raise bad_value("train.weight_decay", t.weight_decay, "a number >= 0")
    for key, valid in _CHOICES.items():
        if _get(cfg, key) not in valid:
            raise bad_value(key, _get(cfg, key), "one of " + ", ".join(valid))
    bad = [p for p in t.prompt_types if p not in ("box", "points", "mask")]
    if bad or not t.prompt_types:
        raise bad_value(
            "train.prompt_types", t.prompt_types, "a non-empty list of box, points, mask"
        )
    if not (
        cfg.device in ("auto", "cpu", "cuda")
        or (cfg.device.startswith("cuda:") and cfg.device[5:].isdigit())
    ):
        raise bad_value("device", cfg.device, "one of auto, cpu, cuda, cuda:N")
    for key in (
        "results_dir",
        "run_name",
        "cache_dir",
        "data.root",
        "model.checkpoint",
        "model.weights_dir",
    ):
        if _get(cfg, key) is not None and not _get(cfg, key).strip():
            raise bad_value(
                key,
                _get(cfg, key),
                "a non-empty string" + ("" if key == "results_dir" else " or null"),
            )
    if cfg.run_name is not None and (
        cfg.run_name.startswith("/") or ".." in cfg.run_name.split("/")
    ):
        raise bad_value(
            "run_name", cfg.run_name, "a folder name under results_dir (relative, without '..')"
        )
    from .data.custom import is_layout_file
    from .data.domains import LAYOUTS, NAMED_ORDERS

    if cfg.data.layout not in LAYOUTS and not is_layout_file(cfg.data.layout):
        raise bad_value(
            "data.layout",
            cfg.data.layout,
            "one of " + ", ".join(LAYOUTS) + ", or the path of a .yaml/.yml/.json domain list",
        )
    order = cfg.data.order
    if (isinstance(order, list) and not order) or (
        isinstance(order, str) and not order.strip(" ,")
    ):
        raise bad_value(
            "data.order", order, "one of " + ", ".join(NAMED_ORDERS) + ", or a list of task names"
        )
    from .models.registry import BACKBONES  # late: imports torch

    if cfg.model.backbone not in BACKBONES:
        raise bad_value("model.backbone", cfg.model.backbone, "one of " + ", ".join(BACKBONES))
    if cfg.model.fallback_backbone is not None and cfg.model.fallback_backbone not in BACKBONES:
        raise bad_value(
            "model.fallback_backbone",
            cfg.model.fallback_backbone,
            "one of " + ", ".join(BACKBONES) + ", or null",
        )
    if cfg.eval.split not in ("test", "val"):
        raise bad_value("eval.split", cfg.eval.split, "one of test, val")
    if cfg.data.val_cap < 0:
        raise bad_value(
            "data.val_cap", cfg.data.val_cap, "an integer >= 0 (0: no validation split)"
        )
    if cfg.eval.split == "val" and cfg.data.val_cap == 0:
        raise ConfigError(
            "eval.split=val needs a validation split; fix: set data.val_cap to a positive integer"
        )
    # in a function: the methods import torch (2.6 s), and the CLI and notebooks check the rest
    # of a config without it
    from .methods import get_method

    # the method name and its options (unknown keys and bad values name themselves)
    from_dict(get_method(cfg.method).Options, cfg.method_options, where="method_options.")


def config_from_file(path: str) -> Config:
    """Read a ``config.json`` written beside a run (its ``config`` entry or the whole file)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise ConfigError(
            f"cannot read the config file {path}: {getattr(exc, 'strerror', None) or exc}; "
            f"expected the JSON written beside a run (config.json)"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds {type(data).__name__}, not a config mapping")
    data = data.get("config", data)
    cfg = from_dict(Config, data)
    validate(cfg)
    return cfg
