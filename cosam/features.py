"""Frozen-encoder feature cache and the per-image tensors training and evaluation need.

The SAM encoder is frozen for most methods and evaluation never augments, so an image's
features are computed once and reused across epochs, tasks, methods and seeds. The cache key is
(weights id, input size, sha1 of the image file's bytes): renaming a file keeps its entry,
editing it does not. Entries are stored as float16 by default (``train.cache_dtype``), written
atomically, and also kept in RAM for the life of the process.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import faults
from .accel import CPU, Accel
from .data.prompts import box_from_label
from .data.reader import SamplePath, load_pair
from .data.transforms import resize_eval
from .errors import CosamError
from .io import REPO_ROOT, torch_save
from .models.sam import SamModel
from .schema import Config

log = logging.getLogger(__name__)


def default_cache_dir(cfg: Config) -> Path:
    """``cfg.cache_dir``, else ``<repository>/.cache/cosam``."""
    return Path(cfg.cache_dir) if cfg.cache_dir else REPO_ROOT / ".cache" / "cosam"


def feature_cache_dir(cfg: Config, accel: Accel) -> Path:
    """The folder of ``cfg``'s encoder-feature caches on ``accel``.

    One folder per precision (``accel.cache_tag``) and, on the CPU, per denormal mode (``-ftz``
    under ``train.flush_denormal``) and per torch thread count (``-t<N>``): the CPU encoder's
    float16 features differ between thread counts (vit_t at 512 px, 1 vs 2 threads: every image,
    0.7 % of the values by one float16 step), so a run must not read features that another
    thread count computed.
    """
    cpu = "" if accel.is_cuda else ("-ftz" if cfg.train.flush_denormal else "")
    tag = accel.cache_tag + cpu + ("" if accel.is_cuda else f"-t{torch.get_num_threads()}")
    return default_cache_dir(cfg) / f"features{tag}"


_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def file_key(path: Path) -> str:
    """sha1 of a file's bytes (the content half of the cache key)."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@dataclass
class PreparedImage:
    """One image ready for SAM at input size S.

    Attributes:
      image: (3,S,S) float32 0..255, stretched (protocol §1.3 evaluation resize).
      label: (1,S,S) uint8 0..255, the bilinearly stretched mask (soft at edges).
      gt: (H,W) bool, the original-size mask IoU is scored against.
      box: (4,) float32 tight xyxy box of label > 0.5, in S-pixel coordinates.
    """

    image: Tensor
    label: Tensor
    gt: Tensor
    box: Tensor


def prepare(sample: SamplePath, size: int, allow_nonbinary: bool = False) -> PreparedImage:
    """Load, validate, stretch to S x S, and derive the evaluation box."""
    image, mask = load_pair(sample, allow_nonbinary=allow_nonbinary)
    img, label = resize_eval(image, mask, size)
    if not bool((label > 0.5).any()):
        # A few-pixel mask can vanish when stretched down; the box prompt would be undefined.
        label = torch.maximum(
            label,
            (
                torch.nn.functional.adaptive_max_pool2d(
                    torch.from_numpy(mask)[None, None].float(), (size, size)
                )[0]
                > 0
            ).float(),
        )
    return PreparedImage(
        image=img,
        label=(label * 255).round().to(torch.uint8),
        gt=torch.from_numpy(mask),
        box=box_from_label(label),
    )


class SampleStore:
    """Loads and memoises :class:`PreparedImage` per (file, size) for the life of the process."""

    def __init__(self, size: int, allow_nonbinary: bool = False) -> None:
        self.size = size
        self.allow_nonbinary = allow_nonbinary
        self._memo: Dict[Tuple[str, int], PreparedImage] = {}

    def get(self, sample: SamplePath, keep_image: bool = False) -> PreparedImage:
        key = (str(sample.image), self.size)
        item = self._memo.get(key)
        if item is None or (keep_image and item.image.numel() == 0):
            item = prepare(sample, self.size, self.allow_nonbinary)
            stored = (
                item if keep_image else PreparedImage(torch.empty(0), item.label, item.gt, item.box)
            )
            self._memo[key] = stored
        return item


def per_image(inputs: Sequence[Tensor], dtype: torch.dtype) -> List[List[Tensor]]:
    """Captured block inputs of a batch (per block (B,N_b,C_b)) -> per image the list of its
    (N_b,C_b) inputs, on the host in ``dtype`` (one block-input cache entry each)."""
    return [[t[j].to(dtype).cpu().clone() for t in inputs] for j in range(inputs[0].shape[0])]


def entry_path(root: Path, key: str) -> Path:
    """Where an encoder cache under ``root`` keeps the entry of the image whose key is ``key``."""
    return Path(root) / key[:2] / f"{key}.pt"


class _EncoderCache(abc.ABC):
    """What the frozen-encoder caches share: entries keyed by (weights id, input size, sha1 of the
    image file) under ``root/<weights_id>/<S>/<sub>/<key[:2]>/<key>.pt``, written atomically,
    kept in RAM for the life of the process, recomputed when unreadable, and filled in batches.

    A subclass names its entries (``what``, ``sub``), packs and unpacks one image's value, and
    encodes a batch of images into one value per image (on the host, in the storage dtype).
    """

    what: str = "encoder cache"
    sub: str = ""
    desc: str = "encoding"

    def __init__(
        self,
        root: Path,
        model: SamModel,
        dtype: str = "float16",
        batch_size: int = 4,
        progress: bool = True,
        enabled: bool = True,
    ) -> None:
        self.root = Path(root) / model.weights_id / str(model.image_size)
        if self.sub:
            self.root = self.root / self.sub
        self.model = model
        self.dtype = _DTYPES[dtype]
        self.batch_size = batch_size
        self.progress = progress
        self.enabled = enabled
        self._ram: Dict[str, Any] = {}
        self._keys: Dict[str, str] = {}
        self.encode_seconds = 0.0
        self.hits = 0
        self.misses = 0

    # ---- a subclass's part ----------------------------------------------------------------
    @abc.abstractmethod
    def _pack(self, value: Any) -> Dict[str, Any]:
        """One image's value -> the dict saved in its entry file."""

    @abc.abstractmethod
    def _unpack(self, entry: Dict[str, Any]) -> Any:
        """An entry file's dict -> the image's value (inverse of :meth:`_pack`)."""

    @abc.abstractmethod
    def _encode(self, images: Tensor) -> List[Any]:
        """(B,3,S,S) 0..255 host images -> B values, each on the host in ``self.dtype``."""

    # ---- shared ---------------------------------------------------------------------------
    def _key(self, path: Path) -> str:
        k = self._keys.get(str(path))
        if k is None:
            k = self._keys[str(path)] = file_key(path)
        return k

    def _path(self, key: str) -> Path:
        return entry_path(self.root, key)

    def _also_write(self, key: str, j: int) -> None:
        """After image ``j`` of the batch just encoded was written as ``key``: write anything
        else that pass produced for it (default nothing)."""
        return None

    def _load(self, key: str) -> Optional[Any]:
        if key in self._ram:
            return self._ram[key]
        path = self._path(key)
        if not (self.enabled and path.is_file()):
            return None
        try:
            value = self._unpack(torch.load(path, map_location="cpu", weights_only=True))
        except Exception:  # a torn or foreign file: recompute it rather than fail the run
            log.warning("%s entry %s is unreadable; recomputing it", self.what, path)
            return None
        self._ram[key] = value
        return value

    @torch.no_grad()
    def values(self, samples: Sequence[SamplePath], store: SampleStore) -> List[Any]:
        """One value per sample, in order: from RAM, else disk, else encoded in batches now."""
        keys = [self._key(s.image) for s in samples]
        missing = [i for i, k in enumerate(keys) if self._load(k) is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            t0 = time.perf_counter()
            bar = tqdm(
                total=len(missing),
                desc=self.desc,
                unit="img",
                disable=not self.progress,
                leave=False,
            )
            for start in range(0, len(missing), self.batch_size):
                idx = missing[start : start + self.batch_size]
                images = torch.stack([store.get(samples[i], keep_image=True).image for i in idx])
                for j, (i, value) in enumerate(zip(idx, self._encode(images))):
                    self._ram[keys[i]] = value
                    if self.enabled:
                        try:
                            torch_save(self._path(keys[i]), self._pack(value))
                            self._also_write(keys[i], j)
                        except CosamError as exc:
                            log.warning("%s not written (%s); continuing in memory", self.what, exc)
                            self.enabled = False
                    faults.point("encode")
                bar.update(len(idx))
            bar.close()
            self.encode_seconds += time.perf_counter() - t0
        return [self._ram[k] for k in keys]


class FeatureCache(_EncoderCache):
    """Encoder features (image embedding and the first block's output) on disk and in RAM.

    Arguments:
      root: cache folder; entries live in ``root/<weights_id>/<S>/<key[:2]>/<key>.pt``.
      model: the frozen SAM model that produces the features.
      dtype: storage dtype name (float16 | bfloat16 | float32).
      batch_size: images encoded per forward pass when filling the cache.
      accel: device and precision the encoder runs at (:mod:`cosam.accel`; default the CPU in
        fp32). Entries are kept on the host either way.
    """

    what = "feature cache"

    def __init__(
        self,
        root: Path,
        model: SamModel,
        dtype: str = "float16",
        batch_size: int = 4,
        progress: bool = True,
        enabled: bool = True,
        accel: Optional[Accel] = None,
    ) -> None:
        super().__init__(root, model, dtype, batch_size, progress, enabled)
        self.accel = accel or CPU
        self.blocks_root: Optional[Path] = None
        self._captured: List[List[Tensor]] = []

    def capture_blocks(self) -> bool:
        """From now on, also write MoDA's block-input entries (:class:`BlockInputCache`, same
        root and keys) from every encoding pass, so a later MoDA run never re-encodes an image
        this cache encoded. Only where the two passes compute the same thing: an fp32 encoder
        (the block cache encodes without autocast) and a cache that writes to disk.

        Returns:
          (bool): whether capturing is on.
        """
        if self.accel.amp_dtype is None and self.enabled:
            self.blocks_root = self.root / BlockInputCache.sub
        return self.blocks_root is not None

    def _pack(self, value: Tuple[Tensor, Tensor]) -> Dict[str, Any]:
        return {"embedding": value[0], "interm": value[1]}

    def _unpack(self, entry: Dict[str, Any]) -> Tuple[Tensor, Tensor]:
        return entry["embedding"], entry["interm"]

    def _encode(self, images: Tensor) -> List[Tuple[Tensor, Tensor]]:
        from .models.tokens import capture

        grab = capture(self.model.image_encoder) if self.blocks_root else contextlib.nullcontext()
        with self.accel.autocast(), grab as inputs:
            emb, interm = self.model.encode(self.accel.move(images))
        n = images.shape[0]
        self._captured = per_image(inputs, self.dtype) if self.blocks_root else []
        return [
            (emb[j].to(self.dtype).cpu().clone(), interm[j].to(self.dtype).cpu().clone())
            for j in range(n)
        ]

    def _also_write(self, key: str, j: int) -> None:
        if self.blocks_root is None or not self._captured:
            return
        path = entry_path(self.blocks_root, key)
        if not path.is_file():  # the entry BlockInputCache would write
            torch_save(path, BlockInputCache.pack(self._captured[j]))

    def get(self, samples: Sequence[SamplePath], store: SampleStore) -> Tuple[Tensor, Tensor]:
        """Features of ``samples`` in order.

        Returns:
          embeddings (N,256,e,e) and interm (N,D,e',e'), float32.
        """
        feats = self.values(samples, store)
        return (
            torch.stack([f[0] for f in feats]).float(),
            torch.stack([f[1] for f in feats]).float(),
        )


class BlockInputCache(_EncoderCache):
    """MoDA's one-way token-pass inputs on disk and in RAM: each attention block's LayerNorm'd
    patch tokens for one image, captured during an ordinary (frozen) encoder pass.

    Same keying as :class:`FeatureCache` (weights id, input size, sha1 of the file), under
    ``root/<weights_id>/<S>/blocks/``. Size per image: the sum over blocks of N_b·C_b values
    (vit_t at 512 px: 2.7 M values, 5.3 MB in float16), so it is meant for small inputs; MoDA's
    ``token_cache`` option decides (see :mod:`cosam.methods.moda_cache`). The encoder runs on the
    model's device in its own precision; entries are kept on the host.

    ``get`` returns per block a (n, N_b, C_b) tensor in the storage dtype.
    """

    what = "block-input cache"
    sub = "blocks"
    desc = "token inputs"

    @staticmethod
    def pack(value: List[Tensor]) -> Dict[str, Any]:
        """One image's block inputs -> its entry (also written by the feature pass)."""
        return {"blocks": value}

    def _pack(self, value: List[Tensor]) -> Dict[str, Any]:
        return self.pack(value)

    def _unpack(self, entry: Dict[str, Any]) -> List[Tensor]:
        return list(entry["blocks"])

    def _encode(self, images: Tensor) -> List[List[Tensor]]:
        from .models.tokens import capture

        device = next(self.model.parameters()).device
        with capture(self.model.image_encoder) as inputs:
            self.model.encode(images.to(device))
        return per_image(inputs, self.dtype)

    def get(self, samples: Sequence[SamplePath], store: SampleStore) -> List[Tensor]:
        per = self.values(samples, store)
        return [torch.stack([p[b] for p in per]) for b in range(len(per[0]))]
