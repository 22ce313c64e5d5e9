"""CODA-Prompt in SAM's mask decoder (Table 2's "Coda-Prompt" row).

The released code has no CODA-Prompt and the paper's adaptation text (supplementary Sec. B)
was not available (protocol §4, §8.16); this follows CODA-Prompt (Smith et al., CVPR 2023) with
the reference L2P's placement (tokens in SAM's mask decoder):

* ``pool_size`` (40) components, each a prompt P_m (``length`` 5 × 256), a key K_m (256) and an
  attention vector A_m (256);
* query q = spatial mean of SAM's frozen image embedding (B,256);
  α_m = cos(q ⊙ A_m, K_m); prompt = Σ_m α_m P_m, (B,5,256) (no top-k: every active component
  contributes, weighted);
* the pool is split in ``n_tasks`` equal slices (8 tasks → 5 components each). Task t trains
  slice t only and uses slices 0..t (older slices contribute, frozen); evaluation after task t
  uses slices 0..t. Slices are separate parameters and only the current one is given to the
  optimiser, so older slices cannot move (not even through weight decay);
* initialisation: the whole pool orthogonal (``nn.init.orthogonal_`` per tensor, as CODA's
  ``tensor_prompt(..., ortho=True)``); before task t > 0 slice t is redrawn at random and
  Gram–Schmidt-orthonormalised (QR) against slices 0..t−1, separately for P (flattened), K and A,
  as CODA's ``gram_schmidt``. The redraw uses a generator seeded by (seed, t), so resume is exact.
  Orthonormal rows of P (``length`` × 256 flattened) give tokens of norm √(1/5) ≈ 0.45, and the
  weights α (cosines of 256-d vectors, about ±0.06 at init) shrink the prompt SAM reads to a
  norm of about 0.08, against 11.8 for a box-corner token of the pretrained ``vit_t``: at lr 1e-4
  the prompt then barely acts (its matrix stayed within about a point of row 0). With
  ``init="sam"`` (the default) P is scaled by √length × :func:`cosam.methods.l2p.sam_prompt_token_norm`
  after orthonormalisation, so each component's tokens have the norm of SAM's prompt tokens
  (the rows stay mutually orthogonal; K and A enter only through cosines and keep unit rows).
  The prompt SAM reads at init is then about 1.4 (pretrained ``vit_t``), not 11.8: α is a cosine,
  and a component the query selects fully (α → 1) is read at SAM's scale.
  P is *stored* with unit rows, like K and A, and multiplied by that scale where it is read
  (:meth:`CodaPrompt.components`), so that Adam's steps (about lr per coordinate, whatever the
  gradient's size) move P, K and A by comparable fractions of their size (P's rows, 5 × 256 long,
  √5 more per coordinate), as in CODA's released parametrisation, where all three have unit rows.
  Stored at SAM's scale (code version 2), P moved 26× more slowly relative to its size than K
  and A: at lr 1e-4 nothing moved (0 of 8 domains rose by 3 points on cpu validation); at 1e-3
  and 1e-2 the keys and attention vectors turned the untrained components on faster than P
  learned, and training lowered CAMO by 11 points. Scaling P instead so that the initial
  mixture has SAM's norm (×9) lowered CAMO's row 0 from 90.0 to 83.0 IoU and training (8
  images, lr 1e-4) took it to 74.6 (measured on cosam-mini, RSDD_I then CAMO).
  ``init="reference"`` keeps unit rows (the published notebooks' CODA rows were run with it);
* the prompt tokens are appended to the decoder's sparse tokens (``one_way=False``); output =
  SAM's single mask; loss = seg loss only (CODA's orthogonality regulariser has weight 0 in its
  released configs and is not implemented).

With fewer tasks in the order than ``n_tasks`` the later slices stay unused (the slice size is
``pool_size // n_tasks`` regardless, so results do not depend on the order's length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.benchmark import Task
from ..data.domains import PAPER_ORDER
from ..errors import ConfigError
from .base import Experience
from .l2p import (
    PromptStrategy,
    check_init,
    check_prompt_scale,
    mean_direction,
    sam_prompt_token_norm,
)

KEY_INITS = ("query", "ortho")


@dataclass
class CodaOptions:
    """pool_size: components M (40); length: tokens per prompt (5); n_tasks: slices (8);
    init: ``sam`` (component tokens at SAM's prompt-token norm) | ``reference`` (unit rows);
    prompt_scale: with ``init="sam"``, the components' token norm as a multiple of SAM's (0.03,
    chosen on cpu validation with ``key_init="query"``: at 1.0 every slice reads every domain at
    α ≈ 0.9 and SAM's masks collapse, results/tuning/cpu/coda*);
    key_init: ``query`` (a slice's keys start at its task's first-batch query direction and its
    attention vectors uniform, so α starts near 1 on its task) | ``ortho`` (CODA's random
    orthonormal K and A, α about ±0.06 at the start)."""

    pool_size: int = 40
    length: int = 5
    n_tasks: int = len(PAPER_ORDER)
    embed_dim: int = 256
    init: str = "sam"
    prompt_scale: float = 0.03
    key_init: str = "query"

    def __post_init__(self) -> None:
        check_init(self.init)
        if self.key_init not in KEY_INITS:
            raise ConfigError(
                f"method_options.key_init={self.key_init!r}; valid values: {', '.join(KEY_INITS)}"
            )
        check_prompt_scale(self.prompt_scale)
        for k in ("pool_size", "length", "n_tasks"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ConfigError(
                    f"method_options.{k} must be a positive integer, got {getattr(self, k)!r}"
                )
        if self.pool_size % self.n_tasks:
            raise ConfigError(
                f"method_options.pool_size={self.pool_size} must be a multiple of n_tasks={self.n_tasks}"
            )
        if self.embed_dim != 256:
            raise ConfigError("method_options.embed_dim must be 256 (SAM's decoder width)")


def orthonormal_complement(old: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """``n`` random unit rows orthogonal to each other and to the rows of ``old`` (s,D), via QR."""
    d = old.shape[1]
    if old.shape[0] + n > d:
        raise ConfigError(f"cannot orthogonalise {old.shape[0] + n} components in {d} dimensions")
    new = torch.randn(n, d, generator=gen, dtype=torch.float64)
    # on the host whatever the device: the generator is a CPU one, and QR then matches the CPU run
    q, _ = torch.linalg.qr(torch.cat([old.detach().double().cpu(), new], 0).t())  # (D, s+n)
    return q[:, old.shape[0] :].t().to(old.device, old.dtype)


def _ortho(shape: Sequence[int]) -> Tensor:
    t = torch.empty(*shape)
    nn.init.orthogonal_(t.view(shape[0], -1))
    return t


class CodaPrompt(PromptStrategy):
    """Attention-weighted sum of prompt components, one new slice of components per task."""

    name = "coda"
    # 2: prompts start at SAM's prompt-token norm (init=sam); 1 was the released init;
    # 3: P stored with unit rows and scaled where read, so Adam moves P, K and A alike; keys
    # start at their task's query direction (key_init=query)
    code_version = 3
    Options = CodaOptions

    def __init__(self, model, cfg) -> None:
        super().__init__(model, cfg)
        o = self.opts
        m, per = o.pool_size, o.pool_size // o.n_tasks
        self.per_slice = per
        # P's stored orthonormal rows (length x 256 flattened) are read times this: tokens at
        # SAM's prompt-token norm
        self.p_scale = (
            o.prompt_scale * sam_prompt_token_norm(model) * o.length**0.5
            if o.init == "sam"
            else 1.0
        )
        P, K, A = (
            _ortho((m, o.length, o.embed_dim)),
            _ortho((m, o.embed_dim)),
            _ortho((m, o.embed_dim)),
        )
        self.p_slices = nn.ParameterList(
            [nn.Parameter(P[i * per : (i + 1) * per].clone()) for i in range(o.n_tasks)]
        )
        self.k_slices = nn.ParameterList(
            [nn.Parameter(K[i * per : (i + 1) * per].clone()) for i in range(o.n_tasks)]
        )
        self.a_slices = nn.ParameterList(
            [nn.Parameter(A[i * per : (i + 1) * per].clone()) for i in range(o.n_tasks)]
        )
        self.register_buffer("active_slices", torch.ones((), dtype=torch.long))
        self.register_buffer("key_ready", torch.zeros(o.n_tasks, dtype=torch.bool))
        self._set_trainable(0)

    def _set_trainable(self, t: int) -> None:
        self._current = t
        for group in (self.p_slices, self.k_slices, self.a_slices):
            for i, p in enumerate(group):
                p.requires_grad_(i == t)

    def plan(self, tasks: Sequence[Task]) -> List[Experience]:
        exps = super().plan(tasks)
        if len(exps) > self.opts.n_tasks:
            raise ConfigError(
                f"coda has {self.opts.n_tasks} component slices (method_options.n_tasks) but the "
                f"order has {len(exps)} tasks; raise n_tasks"
            )
        return exps

    def slice_generator(self, t: int) -> torch.Generator:
        return torch.Generator().manual_seed(3_000_017 * int(self.cfg.seed) + 7_919 * int(t) + 101)

    @torch.no_grad()
    def init_slice(self, t: int) -> None:
        """Redraw slice t orthonormal to slices 0..t-1 (P flattened, K and A separately)."""
        gen = self.slice_generator(t)
        for group in (self.p_slices, self.k_slices, self.a_slices):
            old = torch.cat([group[i].reshape(self.per_slice, -1) for i in range(t)], 0)
            group[t].copy_(orthonormal_complement(old, self.per_slice, gen).view_as(group[t]))

    def before_task(self, exp: Experience) -> None:
        t = exp.index
        if t > 0:
            self.init_slice(t)
        self._set_trainable(t)
        self.active_slices.fill_(t + 1)

    def trainable_parameters(self) -> List[nn.Parameter]:
        t = self._current
        return [self.p_slices[t], self.k_slices[t], self.a_slices[t]]

    def components(self, f: Optional[int] = None) -> Tensor:
        """The prompt components P of slices 0..f−1 as SAM reads them (stored rows × ``p_scale``).

        Arguments:
          f (int or None): the number of slices (None: all).

        Returns:
          (Tensor): (f · per_slice, length, 256).
        """
        slices = self.p_slices if f is None else self.p_slices[:f]
        return torch.cat(list(slices), 0) * self.p_scale

    @torch.no_grad()
    def _init_keys(self, q: Tensor) -> None:
        """``key_init="query"``: before the current slice's first step, set its keys to the mean
        direction of this batch's normalised queries ``q`` (B,256) and its attention vectors to
        uniform unit rows, so that α = cos(q ⊙ A, K) starts near 1 on the slice's task.

        With CODA's random orthonormal K and A, α starts at about ±0.06: the prompt SAM reads is
        then about 6 % of the components, and at 64 steps per task nothing rose by 3 points on cpu
        validation at any lr (results/tuning/cpu/coda_other_grids/key_init_ortho). SAM's mean embeddings of different
        domains have cosines 0.82-0.99 on cosam-mini, so at the start every slice reads every
        domain; training A and K is what separates them, as in CODA.
        """
        t = self._current
        if self.opts.key_init != "query" or bool(self.key_ready[t]):
            return
        key = mean_direction(q)
        self.k_slices[t].copy_(key.expand_as(self.k_slices[t]))
        self.a_slices[t].fill_(self.opts.embed_dim**-0.5)
        self.key_ready[t] = True

    def select(self, q: Tensor, task_ids: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        if self.training:
            self._init_keys(q)
        f = int(self.active_slices)
        P = self.components(f)  # (m,L,256)
        K = torch.cat(list(self.k_slices[:f]), 0)  # (m,256)
        A = torch.cat(list(self.a_slices[:f]), 0)  # (m,256)
        qa = F.normalize(q.unsqueeze(1) * A.unsqueeze(0), dim=2)  # (B,m,256)
        alpha = (qa * F.normalize(K, dim=1).unsqueeze(0)).sum(-1)  # (B,m)
        return torch.einsum("bm,mld->bld", alpha, P), None

    def cost(self):
        per = sum(p.numel() for p in (self.p_slices[0], self.k_slices[0], self.a_slices[0]))
        return {
            "trainable_params": per,
            "stored_params_per_task": per,
            "stored_params_total": per * self.opts.n_tasks,
        }
