"""Regularisers as plugins over any trainable base: ``BASE+PLUGIN[+PLUGIN...]``.

A continual *regulariser* (LwF, EWC, experience replay) does not own a model: it watches the
training of one. Each is a :class:`Regulariser`, a small module with the hooks of a
:class:`~cosam.methods.base.Strategy` that concern it (``plan``, ``training_samples``,
``before_task``, ``after_task``, ``penalty``, ``method_state``, ``cost``, ``artifacts``), and
:func:`compose` attaches one or more of them to a *base* strategy, the one that owns the
trainable modules and predicts::

    decoder_tuning+ewc        Decoder-Tuning with an EWC penalty
    sam_adapter+replay        SAM-Adapter trained on the current task plus a replay buffer
    sequential+lwf+ewc        HQ-SAM with distillation and EWC

The spelling is the method name everywhere: ``--method decoder_tuning+ewc`` on the command line,
``"method": "decoder_tuning+ewc"`` in a config, in sweeps (``--methods``) and notebooks; the run
folder is ``decoder_tuning+ewc-<order>-s<seed>``. Bases: ``sequential`` (HQ-SAM),
``decoder_tuning``, ``sam_adapter``; plugins: ``lwf``, ``ewc``, ``replay``. Table 2's ``lwf``,
``ewc`` and ``replay`` are the combinations ``sequential+lwf``, ``sequential+ewc`` and
``sequential+replay`` under their own names (their run folders keep those names).

The plugins read the base generically: its trainable parameters are
``base.trainable_parameters()`` (EWC's Fisher and anchor), a frozen copy of the base strategy
that shares the frozen SAM model is LwF's teacher, and replay adds its buffer to the base's
``training_samples``.

Hook order: the base first, then the plugins in the order they are spelt. The loss is the
base's ``training_loss`` plus every plugin's ``penalty`` terms.

Options: ``method_options`` of a combination are the base's options plus each plugin's, under
their own names (``decoder_tuning+ewc``: ``weight``, ``fisher``); an option name that two parts
share is spelt ``<part>_<name>`` (``sequential+lwf+ewc``: ``lwf_weight``, ``ewc_weight``).
Unknown keys are refused, as for every method.

Resume: ``method_state`` is the base's state; each plugin's tensors are added to its ``modules``
under the prefix ``+<plugin>.``, and its other entries (e.g. replay's file names) under
``plugins.<plugin>``. Cost: the base's counts, updated by each plugin (what it stores).
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Type

from torch import Tensor, nn

from ..data.benchmark import Task
from ..errors import CheckpointError, ConfigError
from .base import Batch, Experience, NoOptions, Strategy, Wrapper


def trainable_named_parameters(strategy: Strategy) -> List[Tuple[str, nn.Parameter]]:
    """(name, parameter) of ``strategy.trainable_parameters()``, in registration order."""
    ids = {id(p) for p in strategy.trainable_parameters()}
    return [(n, p) for n, p in strategy.named_parameters() if id(p) in ids]


def frozen_copy(strategy: Strategy) -> Strategy:
    """A deep copy of ``strategy`` that shares its frozen SAM model, with no trainable parameter."""
    model = strategy.model
    memo: Dict[int, Any] = {id(model): model}
    memo.update({id(m): m for m in model.modules()})
    memo.update({id(t): t for t in list(model.parameters()) + list(model.buffers())})
    twin = copy.deepcopy(strategy, memo)
    twin.requires_grad_(False)
    return twin


class Regulariser(nn.Module):
    """A continual regulariser attached to a base strategy (hooks default to doing nothing).

    Arguments:
      host (Composed): the combined strategy; ``host.base`` is the base that trains.
      opts: this plugin's options (an instance of ``Options``).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, host: "Composed", opts: Any) -> None:
        super().__init__()
        object.__setattr__(self, "_host", host)  # not a submodule: the host holds this plugin
        self.opts = opts
        self.cfg = host.cfg

    @property
    def host(self) -> "Composed":
        """The combined strategy (train/eval modes, ``predict``)."""
        return self._host  # type: ignore[no-any-return]

    @property
    def base(self) -> Strategy:
        """The base strategy whose trainable parameters this plugin regularises."""
        return self._host.base  # type: ignore[no-any-return]

    # ---- hooks (called by :class:`Composed` after the base's) -------------------------------
    def plan(self, tasks: Sequence[Task]) -> None:
        """Sees the run's tasks once, before training (e.g. to map resume state back to samples)."""

    def training_samples(
        self, exp: Experience, samples: List[Tuple[Any, int]]
    ) -> List[Tuple[Any, int]]:
        """The (sample, task_id) pairs to train on, given those of the base and earlier plugins."""
        return samples

    def before_task(self, exp: Experience) -> None:
        """Called before training on ``exp``."""

    def after_task(self, exp: Experience, source: Any) -> None:
        """Called after training on ``exp``; ``source`` yields its training batches."""

    def penalty(self, batch: Batch, logits: Tensor) -> Dict[str, Tensor]:
        """Loss terms added to the base's training loss (``{}``: none on this batch)."""
        return {}

    def method_state(self) -> Dict[str, Any]:
        """``{"modules": tensors, ...}``: what resume needs (default: this module's state_dict)."""
        return {"modules": dict(self.state_dict())}

    def load_method_state(self, state: Dict[str, Any]) -> None:
        missing, unexpected = self.load_state_dict(state.get("modules", {}), strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"resume state does not match the {self.name} plugin: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}; restart the run with --force"
            )

    def cost(self, cost: Dict[str, Any]) -> Dict[str, Any]:
        """The base's cost counts updated with what this plugin stores."""
        return cost

    def artifacts(self) -> Dict[str, Any]:
        return {}


class Composed(Wrapper):
    """A base strategy with regulariser plugins (subclasses made by :func:`compose`); the model
    calls (``encode``, ``predict``, ...) are the base's."""

    Base: ClassVar[Type[Strategy]] = Strategy
    Plugins: ClassVar[Tuple[Type[Regulariser], ...]] = ()
    #: option key in ``Options`` -> (part name, option name in that part's Options)
    option_keys: ClassVar[Dict[str, Tuple[str, str]]] = {}

    def __init__(self, model, cfg) -> None:
        super().__init__(model, cfg)
        values = self.part_options(self.opts)
        base_cfg = dataclasses.replace(cfg, method_options=values[self.Base.name])
        self.base: Strategy = self.Base(model, base_cfg)
        self.plugins = nn.ModuleDict()
        for plugin in self.Plugins:
            opts = plugin.Options(**values[plugin.name])
            self.plugins[plugin.name] = plugin(self, opts)

    @classmethod
    def part_options(cls, opts: Any) -> Dict[str, Dict[str, Any]]:
        """{part name: its option values} from the combination's options."""
        out: Dict[str, Dict[str, Any]] = {cls.Base.name: {}, **{p.name: {} for p in cls.Plugins}}
        for key, (part, name) in cls.option_keys.items():
            out[part][name] = getattr(opts, key)
        return out

    def plugin(self, name: str) -> Regulariser:
        """The attached plugin called ``name`` (``lwf``, ``ewc``, ``replay``)."""
        if name not in self.plugins:
            raise KeyError(
                f"{self.name} has no {name!r} plugin; it has {', '.join(self.plugins) or 'none'}"
            )
        return self.plugins[name]  # type: ignore[return-value]

    # ---- the sequence ---------------------------------------------------------------------------
    def plan(self, tasks: Sequence[Task]) -> List[Experience]:
        experiences = self.base.plan(tasks)
        for p in self.plugins.values():
            p.plan(tasks)
        return experiences

    def training_samples(self, exp: Experience) -> List[Tuple[Any, int]]:
        samples = self.base.training_samples(exp)
        for p in self.plugins.values():
            samples = p.training_samples(exp, samples)
        return samples

    def before_task(self, exp: Experience) -> None:
        self.base.before_task(exp)
        for p in self.plugins.values():
            p.before_task(exp)

    def after_task(self, exp: Experience, source: Any) -> None:
        self.base.after_task(exp, source)
        for p in self.plugins.values():
            p.after_task(exp, source)

    def after_eval(self) -> None:
        self.base.after_eval()

    def penalty(self, batch: Batch, logits: Tensor) -> Dict[str, Tensor]:
        out = dict(self.base.penalty(batch, logits))
        for p in self.plugins.values():
            out.update(p.penalty(batch, logits))
        return out

    def training_loss(self, batch: Batch, logits: Tensor) -> Dict[str, Tensor]:
        losses = self.base.training_loss(batch, logits)
        for p in self.plugins.values():
            for k, v in p.penalty(batch, logits).items():
                losses[k] = v
                losses["loss"] = losses["loss"] + v
        return losses

    # ---- bookkeeping ------------------------------------------------------------------------------
    def method_state(self) -> Dict[str, Any]:
        state = dict(self.base.method_state())
        modules = dict(state["modules"])
        extra: Dict[str, Any] = {}
        for name, p in self.plugins.items():
            ps = p.method_state()
            modules.update({f"+{name}.{k}": v for k, v in ps.get("modules", {}).items()})
            extra[name] = {k: v for k, v in ps.items() if k != "modules"}
        state["modules"] = modules
        state["plugins"] = extra
        return state

    def load_method_state(self, state: Dict[str, Any]) -> None:
        modules = state["modules"]
        base_state = {k: v for k, v in state.items() if k != "plugins"}
        base_state["modules"] = {k: v for k, v in modules.items() if not k.startswith("+")}
        self.base.load_method_state(base_state)
        extra = state.get("plugins", {})
        for name, p in self.plugins.items():
            if name not in extra:
                raise CheckpointError(
                    f"resume state of {self.name} has no state for its {name!r} plugin (it was "
                    "written by another method or version); restart the run with --force"
                )
            prefix = f"+{name}."
            mine = {k[len(prefix) :]: v for k, v in modules.items() if k.startswith(prefix)}
            p.load_method_state({**extra[name], "modules": mine})

    def cost(self) -> Dict[str, Any]:
        c = dict(self.base.cost())
        for p in self.plugins.values():
            c = p.cost(c)
        return c

    def artifacts(self) -> Dict[str, Any]:
        out = dict(self.base.artifacts())
        for p in self.plugins.values():
            out.update(p.artifacts())
        return out


def _options_class(
    cls_name: str, parts: Sequence[Tuple[str, type]]
) -> Tuple[type, Dict[str, Tuple[str, str]]]:
    """The combination's Options dataclass: every part's fields (``<part>_<name>`` where two parts
    share a name), whose ``__post_init__`` validates each part's values with its own Options."""
    counts = Counter(f.name for _, opts in parts for f in dataclasses.fields(opts))
    specs: List[Tuple[str, Any, Any]] = []
    keys: Dict[str, Tuple[str, str]] = {}
    for part, opts in parts:
        for f in dataclasses.fields(opts):
            key = f.name if counts[f.name] == 1 else f"{part}_{f.name}"
            if f.default is not dataclasses.MISSING:
                default = dataclasses.field(default=f.default)
            else:
                default = dataclasses.field(default_factory=f.default_factory)  # type: ignore[arg-type]
            specs.append((key, f.type, default))
            keys[key] = (part, f.name)

    def __post_init__(self: Any) -> None:
        for part, opts in parts:
            values = {name: getattr(self, key) for key, (p, name) in keys.items() if p == part}
            try:
                opts(**values)
            except ConfigError as exc:
                renamed = [key for key, (p, name) in keys.items() if p == part and key != name]
                if not renamed:
                    raise
                raise ConfigError(
                    f"{exc} (in this combination the {part} option is spelt "
                    f"{', '.join('method_options.' + k for k in renamed)})"
                ) from None

    doc = (
        "Options of " + " + ".join(p for p, _ in parts) + ": " + ", ".join(keys)
        if keys
        else "No options."
    )
    options = dataclasses.make_dataclass(
        cls_name, specs, namespace={"__post_init__": __post_init__, "__doc__": doc}
    )
    options.__module__ = __name__
    return options, keys


def compose(
    base: Type[Strategy],
    plugins: Sequence[Type[Regulariser]],
    name: Optional[str] = None,
    doc: Optional[str] = None,
) -> Type[Composed]:
    """The strategy class of ``base`` with ``plugins`` attached.

    Arguments:
      base: a trainable base strategy class (``HQSequential``, ``DecoderTuning``, ``SamAdapter``).
      plugins: regulariser classes, applied in this order after the base.
      name: the method name (default ``base+plugin+...``).
      doc: the class docstring (its first line is what ``cosam methods`` prints).

    Returns:
      A :class:`Composed` subclass with the combined ``Options``.
    """
    spelled = "+".join([base.name] + [p.name for p in plugins])
    name = name or spelled
    ident = "".join(c if c.isalnum() else "_" for c in spelled)
    options, keys = _options_class(
        f"Options_{ident}", [(base.name, base.Options)] + [(p.name, p.Options) for p in plugins]
    )
    attrs = {
        "name": name,
        "Base": base,
        "Plugins": tuple(plugins),
        "Options": options,
        "option_keys": keys,
        "needs_pixels": base.needs_pixels,
        "trains": base.trains,
        "__module__": __name__,
        "__doc__": doc
        or f"{base.name} with the {', '.join(p.name for p in plugins)} regulariser"
        f"{'s' if len(plugins) > 1 else ''} (= {spelled}).",
    }
    return type(f"Composed_{ident}", (Composed,), attrs)
