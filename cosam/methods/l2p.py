"""L2P prompt pool in SAM's mask decoder (Table 2's "L2P" row; protocol §4 "L2P", §8.11).

A pool of ``pool_size`` (40) prompts, each ``length`` (5) tokens of 256-d, with one key per
prompt (40×256). Keys are initialised U(−1, 1) as the reference's ``PromptPool``; prompts are
U(−1, 1) scaled to the norm of SAM's own prompt tokens (``init="sam"``, the default; see
:func:`sam_prompt_token_norm`): 11.8 for the pretrained ``vit_t``, where U(−1, 1) gives
√(256/3) ≈ 9.2, and 19.4 for the random-weight smoke model. ``init="reference"`` keeps the
reference's U(−1, 1) (the published notebooks' L2P rows were run with it).
The query is the spatial mean of SAM's image embedding, (B,256); it is matched by cosine to the
keys and the ``top_k`` (5) best prompts are chosen:

* training: batch-wise majority vote (L2P's ``batchwise_prompt``): the ``top_k`` prompts chosen
  most often in the batch are used for every image of the batch (ties: lower prompt id);
* test: per image. The reference's vote is also active at test, but its evaluation batch is 1,
  so per-image selection is exactly its behaviour, and our scores do not depend on eval batching.

The 25 selected tokens are appended to the mask decoder's sparse prompt tokens as full members
of the token sequence (``one_way=False``: they change SAM's tokens and image features). The
output is SAM's single mask. Loss = seg loss − ``key_match_weight`` · Σ_k cos(q, key_k) / B over
the ``top_k`` selected keys (the reference's ``reduce_sim``: a sum over the selected keys, mean
over the batch, i.e. ``top_k`` × the mean cosine). Only the pool and the keys train.

Deviations from the reference and why:

* The reference reads its output from the HQ decoder held frozen at its pretrained init (§2.3).
  Our HQ branch's init reproduces SAM's mask exactly (:mod:`cosam.models.hq`), so the frozen
  HQ output *is* SAM's mask; we decode SAM's mask directly and skip the no-op branch.
* Before any training (row 0 of the matrix) the random prompts already act on SAM, as in the
  reference; L2P's row 0 is therefore not SAM's zero-shot row.

:class:`PromptStrategy` holds what L2P, DualPrompt and CODA-Prompt share: the query, appending
tokens to the decoder, and the query–key matching loss.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.prompts import Prompt
from ..errors import ConfigError
from ..models.decoder import decode, embed_prompts, kind_groups, scatter_groups
from .base import Batch, Strategy

INITS = ("sam", "reference")


@torch.no_grad()
def sam_prompt_token_norm(model: Any, n: int = 4) -> float:
    """Mean L2 norm of the sparse tokens SAM's prompt encoder gives a box prompt.

    A box enters SAM's decoder as two corner tokens, each the random-Fourier encoding of the
    corner (norm √128 ≈ 11.3 for any position) plus a learned corner embedding. The mean is taken
    over an ``n`` × ``n`` grid of boxes (a deterministic set: no random draw, so the methods' other
    initial values do not depend on it). Measured: 11.84 for the pretrained ``vit_t`` (11.84 ± 0.11
    on 24 ground-truth boxes of cosam-mini), 19.4 for the random-weight ``vit_t``.

    Arguments:
      model: a :class:`cosam.models.sam.SamModel` (its ``prompt_encoder`` and ``image_size``).
      n: boxes per side of the grid.

    Returns:
      The mean per-token norm, a float.
    """
    size = float(model.image_size)
    device = next(model.prompt_encoder.parameters()).device
    lo = torch.arange(n, dtype=torch.float32) * size / (n + 1)
    y0, x0 = torch.meshgrid(lo, lo, indexing="ij")
    boxes = torch.stack(
        [x0.flatten(), y0.flatten(), x0.flatten() + size / (n + 1), y0.flatten() + size / (n + 1)],
        dim=1,
    ).to(device)
    with torch.autocast(device.type, enabled=False):
        sparse, _ = model.prompt_encoder(points=None, boxes=boxes, masks=None)
    return float(sparse.float().norm(dim=-1).mean())


def check_init(init: str) -> None:
    """Raise ConfigError unless ``init`` is a known prompt initialisation."""
    if init not in INITS:
        raise ConfigError(f"method_options.init={init!r}; valid values: {', '.join(INITS)}")


def uniform_prompts(shape: Sequence[int], model: Any, init: str, scale: float = 1.0) -> Tensor:
    """U(−1, 1) prompt tokens (last dim D), scaled for ``init="sam"`` so that a token's expected
    norm, √(D/3) unscaled, equals ``scale`` × :func:`sam_prompt_token_norm`; ``"reference"``:
    unscaled (``scale`` ignored)."""
    t = torch.empty(*shape).uniform_(-1.0, 1.0)
    if init == "sam":
        t.mul_(scale * sam_prompt_token_norm(model) / (shape[-1] / 3.0) ** 0.5)
    return t


def mean_direction(q: Tensor) -> Tensor:
    """(B,256) queries -> (256,) unit vector: the mean of their unit directions (a key started at
    a task's query direction, as DualPrompt's and CODA-Prompt's ``key_init="query"``)."""
    return F.normalize(F.normalize(q, dim=1).mean(dim=0), dim=0)


def check_prompt_scale(scale: Any) -> None:
    """Raise ConfigError unless ``scale`` (``method_options.prompt_scale``) is a positive number."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ConfigError(f"method_options.prompt_scale must be a positive number, got {scale!r}")


class PromptStrategy(Strategy, abc.ABC):
    """Frozen SAM whose mask decoder reads extra prompt tokens chosen per image from a pool.

    Subclasses implement :meth:`select` (query -> tokens, matching score). The decoder is SAM's
    own, frozen; the tokens join its token sequence (two-way attention, ``one_way=False``).
    """

    #: the last ``predict``'s matching score (Σ cos / B), read by ``penalty`` in the same step;
    #: weighted by the subclass option ``key_match_weight`` (absent = no matching loss).
    _match: Optional[Tensor] = None

    @staticmethod
    def query(emb: Tensor) -> Tensor:
        """(B,256,e,e) frozen image embedding -> (B,256) query (spatial mean, no gradient)."""
        return emb.detach().float().mean(dim=(2, 3))

    @abc.abstractmethod
    def select(self, q: Tensor, task_ids: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """Tokens (B,n,256) for each image and the matching score (sum of cosines / B) or None."""

    def predict(
        self,
        emb: Tensor,
        interm: Tensor,
        prompts: Sequence[Prompt],
        task_ids: Tensor,
        samples: Optional[Sequence[Any]] = None,
    ) -> Tensor:
        tokens, match = self.select(self.query(emb), task_ids.to(emb.device))
        self._match = match
        pe = self.model.image_pe()

        def run(ix: Tensor) -> Tensor:
            sparse, dense = embed_prompts(
                self.model.prompt_encoder, [prompts[i] for i in ix.tolist()], emb.device
            )
            return decode(
                self.model.mask_decoder,
                emb[ix],
                pe,
                sparse,
                dense,
                extra_tokens=tokens[ix],
                one_way=False,
            ).masks

        return scatter_groups(len(prompts), kind_groups(prompts, emb.device), run)

    def penalty(self, batch: Batch, logits: Tensor) -> Dict[str, Tensor]:
        w = float(getattr(self.opts, "key_match_weight", 0.0))
        if self._match is None or w == 0.0:
            return {}
        return {"key_match": -w * self._match}


@dataclass
class L2POptions:
    """pool_size, length, top_k, embed_dim: the reference's PromptPool(40, 5, 5, 256);
    batchwise_prompt: majority vote over the batch during training; key_match_weight: 1.0;
    init: ``sam`` (prompts at SAM's prompt-token norm) | ``reference`` (U(−1, 1))."""

    pool_size: int = 40
    length: int = 5
    top_k: int = 5
    embed_dim: int = 256
    batchwise_prompt: bool = True
    key_match_weight: float = 1.0
    init: str = "sam"

    def __post_init__(self) -> None:
        check_init(self.init)
        for k in ("pool_size", "length", "top_k"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ConfigError(
                    f"method_options.{k} must be a positive integer, got {getattr(self, k)!r}"
                )
        if self.top_k > self.pool_size:
            raise ConfigError(
                f"method_options.top_k={self.top_k} exceeds pool_size={self.pool_size}"
            )
        if self.embed_dim != 256:
            raise ConfigError("method_options.embed_dim must be 256 (SAM's decoder width)")


class L2P(PromptStrategy):
    """Prompt pool with key-query selection; SAM stays frozen."""

    name = "l2p"
    code_version = (
        2  # 2: prompts start at SAM's prompt-token norm (init=sam); 1 was the released init
    )
    Options = L2POptions

    def __init__(self, model, cfg) -> None:
        super().__init__(model, cfg)
        o = self.opts
        self.prompts = nn.Parameter(
            uniform_prompts((o.pool_size, o.length, o.embed_dim), model, o.init)
        )
        self.keys = nn.Parameter(torch.empty(o.pool_size, o.embed_dim).uniform_(-1.0, 1.0))

    def select(self, q: Tensor, task_ids: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        o = self.opts
        b = q.shape[0]
        sim = F.normalize(q, dim=1) @ F.normalize(self.keys, dim=1).t()  # (B,P)
        idx = sim.detach().topk(o.top_k, dim=1).indices  # (B,k)
        if self.training and o.batchwise_prompt:
            counts = torch.bincount(idx.flatten(), minlength=o.pool_size)
            # Most frequent first; ties -> lower prompt id (deterministic).
            score = counts * o.pool_size + (
                o.pool_size - 1 - torch.arange(o.pool_size, device=q.device)
            )
            idx = score.topk(o.top_k).indices.unsqueeze(0).expand(b, -1)
        tokens = self.prompts[idx].reshape(b, o.top_k * o.length, o.embed_dim)
        match = sim.gather(1, idx).sum() / b
        return tokens, match

    def cost(self):
        n = self.prompts.numel() + self.keys.numel()
        return {"trainable_params": n, "stored_params_per_task": 0, "stored_params_total": n}
