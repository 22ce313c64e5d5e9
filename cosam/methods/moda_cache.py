"""What MoDA's token pass reads: images, captured block inputs (the ``token_cache``) and queries
(from dataset samples, or from live images).

``token_cache="disk"`` stores each image's captured block inputs (:class:`cosam.features.
BlockInputCache`; vit_t at 512 px: 5.3 MB/image in float16) so evaluation and router training
never rerun the encoder; ``"none"`` recomputes them with one frozen encoder pass per batch;
``"auto"`` is ``"disk"`` for TinyViT encoders up to 512 px and ``"none"`` otherwise (ViT-B at
1024 px would need 75 MB/image).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..accel import Accel
from ..features import BlockInputCache, SampleStore, feature_cache_dir
from ..models.sam import SamModel
from ..models.tiny_vit import TinyViT
from ..models.tokens import TokenReader, capture, capture_kv
from ..schema import Config


def resolve_token_cache(option: str, model: SamModel) -> str:
    """The cache MoDA's ``token_cache`` option means for ``model``.

    Arguments:
      option (str): "auto", "disk" or "none".
      model (SamModel): the frozen SAM model.

    Returns:
      (str): "disk" or "none" ("auto": "disk" for a TinyViT encoder up to 512 px).
    """
    if option != "auto":
        return option
    small = isinstance(model.image_encoder, TinyViT) and model.image_size <= 512
    return "disk" if small else "none"


class TokenInputs:
    """Images, block inputs and GFT queries of dataset samples, on the model's device.

    Arguments:
      model (SamModel): the frozen SAM model.
      cfg (Config): the run's config (feature cache folder and dtype, progress, mask rule).
      token_cache (str): "disk" or "none" (see :func:`resolve_token_cache`).
      attention (str): the token pass, "one_way" or "full".
    """

    def __init__(self, model: SamModel, cfg: Config, token_cache: str, attention: str) -> None:
        self.model = model
        self.cfg = cfg
        self.token_cache = token_cache
        self.attention = attention
        self._store = None
        self._block_cache = None
        self._full_queries: Dict[str, Tensor] = {}

    @property
    def device(self) -> torch.device:
        """Where the frozen SAM model lives."""
        return next(self.model.parameters()).device

    def _sample_store(self) -> SampleStore:
        if self._store is None:
            self._store = SampleStore(self.model.image_size, self.cfg.data.allow_nonbinary_masks)
        return self._store

    def images(self, samples: Sequence[Any]) -> Tensor:
        """(B,3,S,S) 0..255 images of ``samples`` on the model's device.

        Arguments:
          samples (Sequence[Any]): dataset samples.

        Returns:
          (Tensor): the images, (B,3,S,S).
        """
        store = self._sample_store()
        return torch.stack([store.get(s, keep_image=True).image for s in samples]).to(self.device)

    def inputs(self, samples: Sequence[Any]) -> List[Tensor]:
        """Captured block inputs of ``samples`` (from the disk cache, or one encoder pass).

        Arguments:
          samples (Sequence[Any]): dataset samples.

        Returns:
          (List[Tensor]): one (B,N,C) LayerNorm'd input per attention block.
        """
        if self.token_cache == "disk":
            if self._block_cache is None:
                # per thread count on the CPU, like the feature cache (features.feature_cache_dir)
                self._block_cache = BlockInputCache(
                    feature_cache_dir(self.cfg, Accel(torch.device(self.device))),
                    self.model,
                    self.cfg.train.cache_dtype,
                    progress=self.cfg.progress,
                    enabled=self.cfg.train.cache_features,
                )
            return [t.to(self.device) for t in self._block_cache.get(samples, self._sample_store())]
        images = self.images(samples)
        with torch.no_grad(), capture(self.model.image_encoder) as inputs:
            self.model.encode(images)
        return list(inputs)

    def full_query(self, reader: TokenReader, samples: Sequence[Any]) -> Tensor:
        """GFT queries (B,D) of ``samples`` through the full token pass (gradient as the caller's).

        Arguments:
          reader (TokenReader): the tokens.
          samples (Sequence[Any]): dataset samples.

        Returns:
          (Tensor): the queries, (B,D).
        """
        images = self.images(samples)
        return reader.full_pass(self.model.image_encoder, self.model.preprocess(images))[:, 0]

    @torch.no_grad()
    def live(
        self, reader: TokenReader, images: Tensor
    ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """Queries of live images and, one-way, their features, from one frozen encoder pass.

        Arguments:
          reader (TokenReader): the tokens.
          images (Tensor): (B,3,S,S) 0..255 images.

        Returns:
          (Tuple[Tensor, Optional[Tensor], Optional[Tensor]]): the queries (B,D), then the
            embedding and interm features (None with the full token pass, a pass of its own).
        """
        if self.attention == "full":
            q = reader.full_pass(self.model.image_encoder, self.model.preprocess(images))[:, 0]
            return q, None, None
        with capture_kv(self.model.image_encoder) as kv:
            emb, interm = self.model.encode(images)
        return reader.read(kv)[:, 0], emb, interm

    def queries(self, reader: TokenReader, samples: Sequence[Any], memo: bool) -> Tensor:
        """GFT queries (B,D) of ``samples`` with ``reader``'s tokens.

        Arguments:
          reader (TokenReader): the tokens.
          samples (Sequence[Any]): dataset samples.
          memo (bool): the tokens never change (released random tokens): full-pass queries are
            computed once per image and kept.

        Returns:
          (Tensor): the queries, (B,D).
        """
        if self.attention == "one_way":
            return reader.query_from_inputs(self.inputs(samples))
        if not memo:  # the tokens change with every retraining
            return self.full_query(reader, samples)
        missing = [s for s in samples if str(s.image) not in self._full_queries]
        if missing:  # a query never changes: compute it once
            q = self.full_query(reader, missing)
            self._full_queries.update({str(s.image): q[i] for i, s in enumerate(missing)})
        return torch.stack([self._full_queries[str(s.image)] for s in samples])
