"""Method registry: name -> Strategy class."""
from __future__ import annotations

from typing import Dict, Type

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
from .moda import DecoderTuningMoDA, SamAdapterMoDA, SequentialMoDA
from .replay import Replay
from .sam_adapter import SamAdapter
from .zeroshot import ZeroShot

METHODS: Dict[str, Type[Strategy]] = {
    cls.name: cls
    for cls in (ZeroShot, HQSequential, Joint, LwF, EWC, Replay, L2P, DualPrompt, CodaPrompt, DecoderTuning, SamAdapter,
                SequentialMoDA, DecoderTuningMoDA, SamAdapterMoDA, DecoderTuningJoint, SamAdapterJoint)
}


def get_method(name: str) -> Type[Strategy]:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "Batch", "Experience", "Strategy", "get_method"]
