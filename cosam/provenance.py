"""Whether a recorded run may be reused: its config and identity against a run asked for now.

A run records in its ``config.json`` the config and ``resolved.identity`` (:func:`run_identity`:
results schema, method code version, threads, device, precision, weights and data content). A
finished run is reused, and an unfinished one resumed, only when both match
(:func:`check_reusable`); :func:`config_differences` names what differs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from . import distributed
from .accel import Accel
from .config import Config, from_dict
from .data.benchmark import Benchmark
from .errors import ConfigError, CosamError
from .io import read_json
from .methods import get_method
from .models.sam import SamModel

# Where a run is written and how it reports progress never change its numbers. ``threads`` does
# (torch's CPU kernels split reductions by thread), but the config's value may be None ("torch's
# default"), so the thread count actually used is compared instead (run_identity: "threads").
_IGNORED_FOR_RESUME = ("progress", "threads", "results_dir", "cache_dir")

RESULTS_SCHEMA = 3
"""Version of what a run's numbers mean and how they are computed, shared by every method.

Bump it with any change that alters the numbers of an existing configuration (data handling,
evaluation, the training loop, metrics); a finished or unfinished run recorded under another
version is then not reused. A change to one method bumps that method's ``code_version``
instead (:class:`cosam.methods.base.Strategy`). 1: runs before identities were recorded.
2: identities recorded. 3: the fast decoder/HQ path (:mod:`cosam.models.fastpath`), whose
trained matrices differ from 2's by up to about 2e-3 (float order of operations).
"""


def data_fingerprint(bench: Benchmark) -> str:
    """sha1 over every pair a run reads: task, split, name and the bytes of image and mask.

    Covers each task's train pairs and its evaluation split (``bench.eval_split``: test plus the
    probe, or validation), in training order. Only file names enter, not folders, so a moved
    copy of the same data has the same fingerprint; an edited, added or removed file changes it.
    All of cosam-mini (37 MB) hashes in well under a second.

    Arguments:
      bench (Benchmark): the benchmark a run uses.

    Returns:
      (str): the hex digest.
    """
    h = hashlib.sha1()
    split = bench.eval_split
    for task in bench.with_probe():
        for part, samples in (("train", task.train), (split, task.eval_samples(split))):
            for s in samples:
                h.update(f"{task.name}/{part}/{s.name}\n".encode())
                h.update(hashlib.sha1(Path(s.image).read_bytes()).digest())
                h.update(hashlib.sha1(Path(s.mask).read_bytes()).digest())
    return h.hexdigest()


def method_version(method_cls: Any) -> str:
    """``"<method>/<code_version>"``, e.g. ``"sequential/1"``.

    Arguments:
      method_cls (type): a :class:`cosam.methods.base.Strategy` subclass.

    Returns:
      (str): its name and ``code_version``.
    """
    return f"{method_cls.name or method_cls.__name__}/{getattr(method_cls, 'code_version', 1)}"


def run_identity(
    bench: Benchmark, model: SamModel, accel: Accel, method_cls: Any
) -> Dict[str, Any]:
    """What decides a run's numbers beyond its config: recorded in config.json (``resolved.identity``)
    and compared before a finished run is reused or an unfinished one resumed.

    Arguments:
      bench (Benchmark): the run's benchmark (hashed by :func:`data_fingerprint`).
      model (SamModel): the run's frozen model (its ``weights_id``).
      accel (Accel): the run's device and precision.
      method_cls (type): the run's method class.

    Returns:
      (dict): results_schema, method (name and its ``code_version``), threads (torch's intra-op
        thread count in use), device type and name, precision, tf32, world_size, weights_id
        (hash of the checkpoint file, or "<backbone>-random"), data_sha1 (:func:`data_fingerprint`).
    """
    described = accel.describe()
    return {
        "results_schema": RESULTS_SCHEMA,
        "method_version": method_version(method_cls),
        "threads": torch.get_num_threads(),
        "device": accel.device.type,
        "device_name": described["device_name"],
        "precision": accel.precision,
        "tf32": accel.tf32,
        "world_size": distributed.info().world_size,
        "weights_id": model.weights_id,
        "data_sha1": data_fingerprint(bench),
    }


def static_identity(cfg: Config) -> Dict[str, Any]:
    """The part of :func:`run_identity` known without data or model. What ``aggregate`` can check
    of a finished run.

    Arguments:
      cfg (Config): the run's config.

    Returns:
      (dict): the code versions (results_schema, method_version), and threads when the config
        fixes it.
    """
    method_cls = get_method(cfg.method)
    out: Dict[str, Any] = {
        "results_schema": RESULTS_SCHEMA,
        "method_version": method_version(method_cls),
    }
    if cfg.threads:
        out["threads"] = cfg.threads
    return out


def _flat(d: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "method_options":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(
    old_meta: Dict[str, Any], cfg: Config, identity: Optional[Dict[str, Any]] = None
) -> List[str]:
    """What differs between a recorded run (its config.json) and a run of ``cfg`` now.

    Arguments:
      old_meta (dict): the recorded config.json.
      cfg (Config): the config of the run asked for.
      identity (dict or None): :func:`run_identity` of the run asked for; None compares
        :func:`static_identity` only. Every key it holds must be recorded with the same value.

    Returns:
      (list(str)): one "key: recorded X, now Y" entry per difference; empty when the recorded
        run can be reused.
    """
    old = _with_new_defaults(old_meta.get("config", {}))
    resolved = old_meta.get("resolved", {}) or {}
    used_fallback = None
    if "backbone" in resolved and "model" in old:
        used_fallback = resolved["backbone"] != old["model"]["backbone"]
    a = _flat(_comparable(old, used_fallback))
    b = _flat(_comparable(cfg.to_dict(), used_fallback))
    diffs = [
        f"{k}: recorded {a.get(k, '(absent)')!r}, now {b.get(k, '(absent)')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, "(absent)") != b.get(k, "(absent)")
    ]
    recorded = resolved.get("identity")
    want = identity if identity is not None else static_identity(cfg)
    if not isinstance(recorded, dict):
        diffs.append(
            f"identity: not recorded (a run of results schema 1, made before the thread count, device, "
            f"data content and code version were recorded), now {want!r}"
        )
        return diffs
    for k, v in want.items():
        if recorded.get(k, "(absent)") != v:
            diffs.append(f"{k}: recorded {recorded.get(k, '(absent)')!r}, now {v!r}")
    return diffs


def check_reusable(
    run_dir: Path, cfg: Config, identity: Optional[Dict[str, Any]], what: str
) -> None:
    """Raise unless the run recorded in ``run_dir`` may be reused (finished) or resumed (unfinished).

    Arguments:
      run_dir (Path): the run folder.
      cfg (Config): the config of the run asked for.
      identity (dict or None): its :func:`run_identity` (None: :func:`static_identity` only).
      what (str): "finished" or "unfinished", the kind of run recorded there.

    Raises:
      CosamError: naming every differing key and the way out.
    """
    diffs = config_differences(read_run_meta(run_dir, what), cfg, identity)
    if diffs:
        fix = "pass --force to re-run it" if what == "finished" else "pass --force to restart it"
        raise CosamError(
            f"{run_dir} holds a {what} run whose numbers would differ from this one; it differs in: "
            f"{'; '.join(diffs)}. Fix: {fix} (its results are replaced), or set run_name to keep both"
        )


def _comparable(d: Dict[str, Any], used_fallback: Optional[bool] = None) -> Dict[str, Any]:
    """The config entries that decide a run's results. ``used_fallback=False`` (the recorded run
    ran on its requested backbone) drops the fallback settings, which it never used."""
    out = {k: v for k, v in d.items() if k not in _IGNORED_FOR_RESUME}
    if used_fallback is False:
        out["model"] = {k: v for k, v in out["model"].items() if not k.startswith("fallback_")}
    return out


def _with_new_defaults(old: Dict[str, Any]) -> Dict[str, Any]:
    """A recorded config with keys added since it was written (e.g. ``device``) at their defaults."""
    try:
        return from_dict(Config, old).to_dict()
    except ConfigError:
        return old


def same_config(
    old_meta: Dict[str, Any], cfg: Config, identity: Optional[Dict[str, Any]] = None
) -> bool:
    """Whether a recorded run (its config.json) was made with ``cfg``.

    Arguments:
      old_meta (dict): the recorded config.json.
      cfg (Config): the config of the run asked for.
      identity (dict or None): as in :func:`config_differences`.

    Returns:
      (bool): True when :func:`config_differences` finds nothing.
    """
    return not config_differences(old_meta, cfg, identity)


def read_run_meta(run_dir: Path, kind: str) -> Dict[str, Any]:
    """The ``config.json`` of a run folder, checked enough to be compared with a config.

    Arguments:
      run_dir (Path): the run folder.
      kind (str): "finished" or "unfinished", named in the error.

    Returns:
      (dict): the recorded config.json (it holds a ``config`` dict).

    Raises:
      CosamError: when it cannot be read; it names the file and the fix.
    """
    path = run_dir / "config.json"
    meta: Any = None
    try:
        meta = read_json(path)
        why = (
            None
            if isinstance(meta, dict) and isinstance(meta.get("config"), dict)
            else "it has no 'config' entry"
        )
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
        why = (
            exc.strerror
            if isinstance(exc, OSError) and exc.strerror
            else " ".join(str(exc).split())
        )
    if why is not None:
        raise CosamError(
            f"{path} of the {kind} run in {run_dir} cannot be read ({why}), so it cannot be "
            f"compared with this config; fix: pass --force to rerun it from scratch, or set run_name "
            f"to use another folder"
        )
    return meta
