"""Models: the SAM-family builder registry, TinyViT, the HQ branch and batched decoding."""

from .decoder import DecoderOutput, decode, embed_prompts, group_by_kind
from .hq import HQBranch
from .registry import BACKBONES, BackboneSpec, build_sam, find_checkpoint, get_spec, read_state_dict
from .sam import SamModel

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "DecoderOutput",
    "HQBranch",
    "SamModel",
    "build_sam",
    "decode",
    "embed_prompts",
    "find_checkpoint",
    "get_spec",
    "group_by_kind",
    "read_state_dict",
]
