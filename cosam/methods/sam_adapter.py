"""SAM-Adapter: bottleneck adapters in the image encoder + a tuned mask decoder (Table 2's
"SAM-Adapter" row).

Not in the released code; the reference's reading (§2.3, §4): encoder adapters fine-tuned
sequentially. Here:

* a deep copy of SAM's image encoder, frozen, in which every attention block (``TinyViTBlock``
  of TinyViT stages 1-3; segment-anything ``Block`` of the ViTs) is wrapped as
  ``y = block(x); y + adapter(y)`` with ``adapter = Linear(d, d·adapter_ratio) → GELU →
  Linear(→ d)`` and the last Linear zero-initialised, so the adapted encoder equals SAM's at
  init (a wrapper module, not a forward hook: the adapters are ordinary submodules and appear
  in the state dict);
* a trainable deep copy of SAM's mask decoder (single-mask output), trained together with the
  adapters; ``self.model`` is never modified;
* the copied encoder is kept in eval mode (its BatchNorm layers never use batch statistics).

Deviation: Chen et al.'s SAM-Adapter (ICCV 2023 workshops) feeds task-specific hand-crafted
features into each layer through MLPs; we use the generic bottleneck adapter (Houlsby/AdaptFormer
form), the common reading of "SAM-Adapter" in continual-SAM work, since the paper's exact
adaptation (its Sec. B) was not available.

``needs_pixels = True``: the encoder's features change during training, so nothing is cached;
the engine loads (and, under ``train.augment="lsj"``, jitters) every training batch and encodes
it through :meth:`encode` with gradients on, and encodes every test image at each evaluation.

CPU-profile note: this is the only baseline whose cost grows with image size for training *and*
evaluation. At 512 px on 2 cores the uncached encoder pass (forward + backward through the
adapters) dominates, so the ``cpu`` profile trains it (and ``sam_adapter_moda``) on 8 images per
domain for 4 epochs and evaluates 10 test images per domain and 20 probe images
(``cosam.profiles.METHOD_PROFILE_OVERRIDES``); :func:`cosam.report.restrict_to_subset` scores other
runs on the same images for a like-for-like comparison.

Resume: ``method_state`` holds only the adapters and the decoder copy (the frozen encoder copy is
rebuilt from the model). Cost: trainable = stored = adapters + decoder.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import torch
from segment_anything.modeling.image_encoder import Block as ViTBlock
from torch import Tensor, nn

from ..errors import ConfigError
from ..models import fastpath
from ..models.decoder import decode
from ..models.tiny_vit import TinyViT, TinyViTBlock
from .base import Experience, Strategy


@dataclass
class SamAdapterOptions:
    """adapter_ratio: bottleneck width / block width (0.25: d -> d/4 -> d)."""

    adapter_ratio: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 < self.adapter_ratio <= 4.0:
            raise ConfigError(
                f"method_options.adapter_ratio must be in (0, 4], got {self.adapter_ratio}"
            )


class AdaptedBlock(nn.Module):
    """An attention block followed by a residual bottleneck adapter. (B,H,W,C) -> (B,H,W,C)."""

    def __init__(self, block: nn.Module, dim: int, hidden: int) -> None:
        super().__init__()
        self.block = block
        self.adapter = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.adapter[2].weight)
        nn.init.zeros_(self.adapter[2].bias)

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return y + self.adapter(y)


def _block_dim(block: nn.Module) -> int:
    if isinstance(block, TinyViTBlock):
        return block.attn.qkv.in_features
    return block.norm1.normalized_shape[0]


def add_adapters(encoder: nn.Module, ratio: float) -> int:
    """Wrap every attention block of ``encoder`` in place; returns how many were wrapped."""
    n = 0
    for module in list(encoder.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (TinyViTBlock, ViTBlock)):
                dim = _block_dim(child)
                setattr(module, name, AdaptedBlock(child, dim, max(1, int(round(dim * ratio)))))
                n += 1
    return n


#: Bytes of stem outputs one SAM-Adapter strategy may keep (host or device memory): 1 GiB, 256
#: images at 512 px (4 MiB each, TinyViT's 64x128x128 stage-0 output in fp32), 64 at 1024.
STEM_MEMO_BYTES = 1 << 30


class StemMemo:
    """The frozen encoder stem's output per image, reused while the adapters train.

    TinyViT's patch embedding and stage 0 (convolutions) come before the first adapter, so their
    output depends on the image alone (issue 16: 42 % of a SAM-Adapter encoder pass). Entries are
    keyed by the sha1 of the image's bytes, its shape, and the autocast state, so a jittered
    (LSJ) image is simply a new key. Two pools: ``eval`` entries (filled under ``no_grad``; the
    test images come back at every evaluation) are kept until the strategy is gone; ``train``
    entries are cleared at every task (a task's images repeat only across its epochs). Entries
    are stored only while the total stays under ``capacity`` bytes (no eviction: evaluation
    visits the images cyclically, which a least-recently-used policy would never hit).
    """

    def __init__(self, capacity: int = STEM_MEMO_BYTES) -> None:
        self.capacity = capacity
        self.pools: Dict[str, Dict[str, Tensor]] = {"train": {}, "eval": {}}
        self.used = {"train": 0, "eval": 0}
        self.hits = 0
        self.misses = 0

    def clear(self, pool: str) -> None:
        self.pools[pool].clear()
        self.used[pool] = 0

    @staticmethod
    def key(image: Tensor) -> str:
        amp = (
            torch.get_autocast_dtype(image.device.type)
            if torch.is_autocast_enabled(image.device.type)
            else None
        )
        data = image.detach().contiguous().cpu().numpy().tobytes()
        return f"{hashlib.sha1(data).hexdigest()}-{tuple(image.shape)}-{image.dtype}-{amp}"

    def __call__(self, x: Tensor, stem: Callable[[Tensor], Tensor]) -> Tensor:
        """``stem(x)`` for a batch (B,3,S,S), computed only for the images not memoised."""
        pool = "train" if torch.is_grad_enabled() else "eval"
        memo = self.pools[pool]
        keys = [self.key(im) for im in x]
        missing = [i for i, k in enumerate(keys) if k not in memo]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        new: Dict[str, Tensor] = {}
        if missing:
            with torch.no_grad():
                out = stem(x[missing] if len(missing) < len(keys) else x)
            for j, i in enumerate(missing):
                v = out[j]
                if self.used[pool] + v.nelement() * v.element_size() <= self.capacity:
                    memo[keys[i]] = v
                    self.used[pool] += v.nelement() * v.element_size()
                new[keys[i]] = v
        return torch.stack([memo[k] if k in memo else new[k] for k in keys])


class SamAdapter(Strategy):
    """Adapters in a copy of the image encoder + a trainable copy of the mask decoder."""

    name = "sam_adapter"
    needs_pixels = True
    Options = SamAdapterOptions

    def __init__(self, model, cfg) -> None:
        super().__init__(model, cfg)
        self.encoder = copy.deepcopy(model.image_encoder)
        self.encoder.requires_grad_(False)
        self.n_adapters = add_adapters(self.encoder, self.opts.adapter_ratio)
        if self.n_adapters == 0:
            raise ConfigError(
                f"sam_adapter found no attention blocks in the {model.backbone} encoder"
            )
        self.encoder.eval()
        self.decoder = copy.deepcopy(model.mask_decoder)
        self.decoder.requires_grad_(True)
        self.stem_memo = StemMemo()
        # the stem can be memoised when it holds no adapter and nothing trainable (TinyViT only)
        stem = (
            [self.encoder.patch_embed, self.encoder.layers[0]]
            if isinstance(self.encoder, TinyViT)
            else []
        )
        self._stem_frozen = bool(stem) and not any(
            isinstance(sub, AdaptedBlock)
            or any(p.requires_grad for p in sub.parameters(recurse=False))
            for m in stem
            for sub in m.modules()
        )

    def before_task(self, exp: Experience) -> None:
        self.stem_memo.clear("train")

    def train(self, mode: bool = True) -> "SamAdapter":
        super().train(mode)
        self.encoder.eval()  # BatchNorm must keep its running statistics
        return self

    def adapter_parameters(self) -> List[nn.Parameter]:
        return [
            p
            for m in self.encoder.modules()
            if isinstance(m, AdaptedBlock)
            for p in m.adapter.parameters()
        ]

    def encode(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """(B,3,S,S) 0..255 -> (embedding, interm) through the adapted encoder, gradient on.

        TinyViT: the frozen stem (patch embedding and stage 0, before the first adapter) is
        memoised per image (:class:`StemMemo`) unless the ``stem`` lever is switched back
        (:func:`cosam.models.fastpath.reference_path`)."""
        x = self.model.preprocess(images)
        enc = self.encoder
        if not self._stem_frozen or not fastpath.enabled("stem"):
            return enc(x)
        return enc.forward_from_stem(self.stem_memo(x, enc.stem))

    def forward_masks(self, emb, interm, sparse, dense, task_ids) -> Tensor:
        return decode(self.decoder, emb, self.model.image_pe(), sparse, dense).masks

    # ---- resume: adapters and decoder only (the frozen encoder copy is rebuilt) ---------------
    @staticmethod
    def _stored(key: str) -> bool:
        return key.startswith("decoder.") or ".adapter." in key

    def method_state(self) -> Dict[str, Any]:
        return {"modules": {k: v for k, v in self.state_dict().items() if self._stored(k)}}

    def load_method_state(self, state: Dict[str, Any]) -> None:
        missing, unexpected = self.load_state_dict(state["modules"], strict=False)
        missing = [k for k in missing if self._stored(k)]
        if missing or unexpected:
            raise RuntimeError(
                f"resume state does not match method {self.name}: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )

    def cost(self):
        a = sum(p.numel() for p in self.adapter_parameters())
        d = sum(p.numel() for p in self.decoder.parameters())
        return {
            "trainable_params": a + d,
            "stored_params_per_task": 0,
            "stored_params_total": a + d,
            "adapter_params": a,
            "decoder_params": d,
            "adapted_blocks": self.n_adapters,
        }
