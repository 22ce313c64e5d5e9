"""Method registry: name -> Strategy class; ``BASE+PLUGIN[+PLUGIN...]`` names a combination.

``METHODS`` holds the named methods (Table 2's rows and MoDA). Any trainable base in ``BASES``
takes the regulariser plugins of ``PLUGINS`` (:mod:`cosam.methods.plugins`), spelt with ``+``:
``decoder_tuning+ewc``, ``sam_adapter+replay``, ``sequential+lwf+ewc``. ``lwf``, ``ewc`` and
``replay`` are the combinations ``sequential+lwf``, ``sequential+ewc`` and ``sequential+replay``
under their Table 2 names. :func:`get_method` resolves both forms and explains a bad spelling.
"""

from __future__ import annotations

import functools
from typing import Dict, List, Type

from ..errors import ConfigError
from .base import Batch, Experience, Strategy
from .coda import CodaPrompt
from .decoder_tuning import DecoderTuning
from .dualprompt import DualPrompt
from .ewc import EWC
from .hq import HQSequential, Joint
from .joint import DecoderTuningJoint, SamAdapterJoint
from .l2p import L2P
from .lwf import LwF
from .moda_variants import DecoderTuningMoDA, SamAdapterMoDA, SequentialMoDA
from .plugins import Composed, Regulariser, compose
from .replay import Replay
from .sam_adapter import SamAdapter
from .zeroshot import ZeroShot

#: Trainable bases that take regulariser plugins.
BASES: Dict[str, Type[Strategy]] = {
    cls.name: cls for cls in (HQSequential, DecoderTuning, SamAdapter)
}
#: Regulariser plugins, in the order ``cosam methods`` lists them.
PLUGINS: Dict[str, Type[Regulariser]] = {cls.name: cls for cls in (LwF, EWC, Replay)}

_TABLE2_DOCS = {
    "lwf": "HQ branch fine-tuned sequentially with distillation from the previous task's branch (= sequential+lwf).",
    "ewc": "HQ branch fine-tuned sequentially with an EWC penalty towards the previous tasks' solution "
    "(= sequential+ewc).",
    "replay": "HQ branch fine-tuned sequentially on the current task plus a small exemplar buffer "
    "(= sequential+replay).",
}

METHODS: Dict[str, Type[Strategy]] = {
    cls.name: cls
    for cls in (
        ZeroShot,
        HQSequential,
        Joint,
        *(
            compose(HQSequential, [PLUGINS[p]], name=p, doc=_TABLE2_DOCS[p])
            for p in ("lwf", "ewc", "replay")
        ),
        L2P,
        DualPrompt,
        CodaPrompt,
        DecoderTuning,
        SamAdapter,
        SequentialMoDA,
        DecoderTuningMoDA,
        SamAdapterMoDA,
        DecoderTuningJoint,
        SamAdapterJoint,
    )
}

#: Why a named method cannot be the base of a combination.
_NOT_A_BASE = {
    "zeroshot": "it trains nothing",
    "joint": "it trains once on all tasks together, so there is no earlier task to protect",
    "decoder_tuning_joint": "it trains once on all tasks together, so there is no earlier task to protect",
    "sam_adapter_joint": "it trains once on all tasks together, so there is no earlier task to protect",
    "l2p": "prompt methods keep their own prompt pool against forgetting; plugins are not supported on them",
    "dualprompt": "prompt methods keep their own prompt pool against forgetting; plugins are not supported on them",
    "coda": "prompt methods keep their own prompt pool against forgetting; plugins are not supported on them",
    "sequential_moda": "MoDA trains every task's adapter from the same initial state, so a regulariser towards "
    "earlier tasks would not act; plugins are not supported on MoDA",
    "decoder_tuning_moda": "MoDA trains every task's adapter from the same initial state, so a regulariser towards "
    "earlier tasks would not act; plugins are not supported on MoDA",
    "sam_adapter_moda": "MoDA trains every task's adapter from the same initial state, so a regulariser towards "
    "earlier tasks would not act; plugins are not supported on MoDA",
}


def combination_help() -> str:
    """One line on how to spell a combination."""
    return (
        f"or BASE+PLUGIN[+PLUGIN...] with a base in {', '.join(BASES)} and plugins from {', '.join(PLUGINS)} "
        f"(e.g. decoder_tuning+ewc)"
    )


def split_method(name: str) -> List[str]:
    """``"decoder_tuning+ewc"`` -> ``["decoder_tuning", "ewc"]``, checked (ConfigError names the problem).

    Returns:
      [base, plugin, ...]; for a named method (no ``+``) just ``[name]``.
    """
    if not isinstance(name, str):
        raise ConfigError(f"method must be a string, got {name!r}")
    if "+" not in name:
        if name not in METHODS:
            raise ConfigError(
                f"unknown method {name!r}; valid methods: {', '.join(METHODS)}, {combination_help()}"
            )
        return [name]
    parts = name.split("+")
    if any(not p for p in parts):
        raise ConfigError(
            f"method {name!r} has an empty part; spell a combination BASE+PLUGIN without spaces or "
            f"doubled '+', e.g. decoder_tuning+ewc"
        )
    base, plugins = parts[0], parts[1:]
    if base in PLUGINS:
        raise ConfigError(
            f"method {name!r}: {base!r} is a regulariser plugin, not a base; a combination starts with "
            f"its base ({', '.join(BASES)}), e.g. sequential+{'+'.join(parts)}"
        )
    if base in _NOT_A_BASE:
        raise ConfigError(
            f"method {name!r}: {base!r} cannot take regulariser plugins: {_NOT_A_BASE[base]}. "
            f"Bases: {', '.join(BASES)}"
        )
    if base not in BASES:
        raise ConfigError(f"method {name!r}: unknown base {base!r}; bases: {', '.join(BASES)}")
    for p in plugins:
        if p not in PLUGINS:
            hint = " (a combination has one base, first)" if p in BASES or p in METHODS else ""
            raise ConfigError(
                f"method {name!r}: unknown regulariser plugin {p!r}{hint}; plugins: {', '.join(PLUGINS)}"
            )
    dup = sorted({p for p in plugins if plugins.count(p) > 1})
    if dup:
        raise ConfigError(
            f"method {name!r}: plugin {', '.join(map(repr, dup))} appears more than once"
        )
    return parts


@functools.lru_cache(maxsize=None)
def _combination(name: str) -> Type[Composed]:
    base, *plugins = split_method(name)
    return compose(BASES[base], [PLUGINS[p] for p in plugins], name=name)


def get_method(name: str) -> Type[Strategy]:
    """The strategy class of a method name or a ``BASE+PLUGIN[+PLUGIN...]`` combination.

    Raises:
      ConfigError: an unknown name or a combination that is not allowed (why, and what is valid).
    """
    if isinstance(name, str) and name in METHODS:
        return METHODS[name]
    split_method(name)  # raises with the reason
    return _combination(name)


def is_method(name: str) -> bool:
    """Whether ``name`` is a valid method name or combination."""
    try:
        get_method(name)
    except ConfigError:
        return False
    return True


def base_method(name: str) -> str:
    """The base of a combination (``"sam_adapter+replay"`` -> ``"sam_adapter"``); a named method itself."""
    return name.split("+", 1)[0] if isinstance(name, str) else name


__all__ = [
    "BASES",
    "METHODS",
    "PLUGINS",
    "Batch",
    "Composed",
    "Experience",
    "Regulariser",
    "Strategy",
    "base_method",
    "combination_help",
    "get_method",
    "is_method",
    "split_method",
]
