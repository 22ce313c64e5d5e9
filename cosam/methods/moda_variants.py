"""The three MoDA methods of Table 2: MoDA (:mod:`cosam.methods.moda`) over HQ-SAM,
Decoder-Tuning and SAM-Adapter, each with the options of MoDA and of its base."""

from __future__ import annotations

from dataclasses import dataclass

from .base import NoOptions
from .decoder_tuning import DecoderTuning
from .hq import HQOptions, HQSequential
from .moda import MoDA
from .moda_router import MoDAOptions
from .sam_adapter import SamAdapter, SamAdapterOptions


@dataclass
class HQMoDAOptions(MoDAOptions, HQOptions):
    """MoDA's options plus HQ-SAM's (``hq_attention``)."""


@dataclass
class DecoderMoDAOptions(MoDAOptions, NoOptions):
    """MoDA's options (Decoder-Tuning has none)."""


@dataclass
class AdapterMoDAOptions(MoDAOptions, SamAdapterOptions):
    """MoDA's options plus SAM-Adapter's (``adapter_ratio``)."""


class SequentialMoDA(MoDA):
    """HQ-SAM + MoDA: one HQ branch per task."""

    name = "sequential_moda"
    Base = HQSequential
    Options = HQMoDAOptions


class DecoderTuningMoDA(MoDA):
    """Decoder-Tuning + MoDA: one mask-decoder copy per task."""

    name = "decoder_tuning_moda"
    Base = DecoderTuning
    Options = DecoderMoDAOptions


class SamAdapterMoDA(MoDA):
    """SAM-Adapter + MoDA: one set of encoder adapters + decoder per task; the query comes from
    the un-adapted encoder."""

    name = "sam_adapter_moda"
    Base = SamAdapter
    Options = AdapterMoDAOptions
    needs_pixels = True
    # 2: routes by queries from the block-input cache, not a second frozen pass; 3: folded pass
    code_version = 3
