"""MoDA (Mixture of Domain Adapters): a per-task adapter pool chosen per image by a router
that reads MoDA's Global Feature Token (protocol §3; Table 2's "+MoDA" rows).

One MoDA class wraps a *base* strategy, whose trainable part is the adapter:

=======================  ==========================  ===========================================
method                   base                        adapter (one per task, in the pool)
=======================  ==========================  ===========================================
``sequential_moda``      ``sequential`` (HQ-SAM)     the HQ branch
``decoder_tuning_moda``  ``decoder_tuning``          a copy of SAM's mask decoder
``sam_adapter_moda``     ``sam_adapter``             encoder adapters + mask decoder
=======================  ==========================  ===========================================

The sequence, for task t (any order):

1. ``before_task``: the base's trainable state is reset to its *initial* state (each adapter
   starts from the base's init, i.e. from SAM's zero-shot behaviour), and the base trains on
   task t alone with the engine's one loop: the last epoch is kept (no model selection on test
   data, unlike the released code, §8.6).
2. ``after_task``: the trained state enters the pool as adapter t; ``buffer_size`` training
   images of task t (deterministic: sha1-ranked, as ER) enter the router buffer; when ≥ 2
   adapters exist the router (and, by default, the GFT/GAT tokens) is retrained from scratch
   on the buffers of all seen tasks with cross-entropy on the *adapter index*, so labels
   follow task identity under any order (the released code hard-codes ids by name, §8.9).
3. Evaluation, every task included (the released code skips the last, §8.5): each image is
   routed on its own (batched inference: images of one batch may go to different adapters),
   and the chosen adapter predicts its mask. The true task id is used only to score routing.

Tokens (:mod:`cosam.models.tokens`): 1 GFT + ``n_gat`` GAT read the frozen encoder's blocks;
``attention="one_way"`` (default: one encoder pass, cached block inputs, patch features
unchanged) or ``"full"`` (released: a separate pass, patches also attend to tokens).
``train_tokens=True`` (default) trains tokens and router together on the buffer (gradients only
through the token path); ``False`` is the released behaviour (random frozen tokens, seeded
once per run; only the router learns). Tokens and router restart from the same seeded initial
values at every retraining, so the routing after task t is a function of the buffers of tasks
0..t alone (and :mod:`cosam.ablation` can re-route a finished pool under other router settings,
reproducing exactly the rows a full run with those settings would give).

Router: ``"linear"`` (released: argmax of a Linear head on the GFT, re-initialised per
retraining) or ``"cosine"`` (a learned key per adapter, logits = s·cos(q, k) with a learned
scale). Retrained for ``router_epochs`` epochs of Adam (``router_lr``, batch
``router_batch``), 10 / 1e-3 / 4 as released.

``token_cache``: ``"disk"`` stores each image's captured block inputs (vit_t at 512 px:
5.3 MB/image in float16) so evaluation and router training never rerun the encoder;
``"none"`` recomputes them with one frozen encoder pass per evaluated batch; ``"auto"`` (default)
is ``"disk"`` for TinyViT encoders up to 512 px and ``"none"`` otherwise (ViT-B at 1024 px
would need 75 MB/image). Live inference (:meth:`predict_images`) always uses one encoder pass
for features and query together, except ``sam_adapter_moda``, whose query comes from the
un-adapted encoder and whose mask from the adapted one (two passes, by design).

Written beside the results: ``router.json`` (per evaluation step: task-id accuracy per task and
overall on the seen tasks' test sets, confusion matrix, where probe images go; buffer contents;
router training seconds). Cost: stored per task = one adapter + ``buffer_size`` images.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed
from ..accel import Accel
from ..data.benchmark import Task
from ..data.prompts import Prompt
from ..errors import CheckpointError, ConfigError
from ..features import BlockInputCache, SampleStore, feature_cache_dir
from ..models.decoder import scatter_groups
from ..models.tiny_vit import TinyViT
from ..models.tokens import TokenReader, capture, capture_kv
from ..schema import Config
from .base import Experience, NoOptions, Strategy
from .decoder_tuning import DecoderTuning
from .hq import HQOptions, HQSequential
from .replay import select_buffer
from .sam_adapter import SamAdapter, SamAdapterOptions

log = logging.getLogger(__name__)


@dataclass
class MoDAOptions:
    """MoDA's switches (the released behaviour: ``attention="full"``, ``train_tokens=False``,
    ``router="linear"``, ``buffer_size=10``).

    n_gat: assistant tokens k (0 = GFT only).
    attention: "one_way" | "full".
    train_tokens: train GFT/GAT with the router (True) or keep them random (False).
    router: "linear" | "cosine".
    buffer_size: training images kept per task for the router.
    router_epochs, router_lr, router_batch: the router's training.
    token_cache: "auto" | "disk" | "none".
    """

    n_gat: int = 9
    attention: str = "one_way"
    train_tokens: bool = True
    router: str = "linear"
    buffer_size: int = 10
    router_epochs: int = 10
    router_lr: float = 1e-3
    router_batch: int = 4
    token_cache: str = "auto"

    def __post_init__(self) -> None:
        choices = {
            "attention": ("one_way", "full"),
            "router": ("linear", "cosine"),
            "token_cache": ("auto", "disk", "none"),
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ConfigError(
                    f"method_options.{name}={getattr(self, name)!r}; valid: {', '.join(valid)}"
                )
        for name in ("buffer_size", "router_epochs", "router_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"method_options.{name} must be a positive integer, got {v!r}")
        if isinstance(self.n_gat, bool) or not isinstance(self.n_gat, int) or self.n_gat < 0:
            raise ConfigError(f"method_options.n_gat must be an integer >= 0, got {self.n_gat!r}")
        if not isinstance(self.train_tokens, bool):
            raise ConfigError(
                f"method_options.train_tokens must be true or false, got {self.train_tokens!r}"
            )
        if not (isinstance(self.router_lr, (int, float)) and self.router_lr > 0):
            raise ConfigError(f"method_options.router_lr must be > 0, got {self.router_lr!r}")
        post = getattr(super(), "__post_init__", None)
        if post is not None:
            post()


@dataclass
class HQMoDAOptions(MoDAOptions, HQOptions):
    """MoDA's options plus HQ-SAM's (``hq_attention``)."""


@dataclass
class DecoderMoDAOptions(MoDAOptions, NoOptions):
    """MoDA's options (Decoder-Tuning has none)."""


@dataclass
class AdapterMoDAOptions(MoDAOptions, SamAdapterOptions):
    """MoDA's options plus SAM-Adapter's (``adapter_ratio``)."""


class LinearRouter(nn.Module):
    """The released router: logits = W q + b. q (B,D) -> (B,T)."""

    def __init__(self, dim: int, n: int, generator: torch.Generator) -> None:
        super().__init__()
        self.head = nn.Linear(dim, n)
        bound = 1.0 / math.sqrt(dim)
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound, generator=generator)
            self.head.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, q: Tensor) -> Tensor:
        return self.head(q)


class CosineRouter(nn.Module):
    """A learned key per adapter: logits = s · cos(q, k_t), s = exp(log_scale) learned (init 10)."""

    def __init__(self, dim: int, n: int, generator: torch.Generator) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.randn(n, dim, generator=generator))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, q: Tensor) -> Tensor:
        return self.log_scale.exp() * F.normalize(q, dim=-1) @ F.normalize(self.keys, dim=-1).t()


ROUTERS = {"linear": LinearRouter, "cosine": CosineRouter}


def _clone_state(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


class MoDA(Strategy):
    """Adapter pool + router over a base strategy (subclasses set ``Base`` and ``name``)."""

    Base: ClassVar[type] = HQSequential
    Options = HQMoDAOptions

    def __init__(self, model, cfg: Config) -> None:
        super().__init__(model, cfg)
        base_fields = {f.name for f in dataclasses.fields(self.Base.Options)}
        base_cfg = dataclasses.replace(
            cfg, method_options={k: v for k, v in cfg.method_options.items() if k in base_fields}
        )
        self.base: Strategy = self.Base(model, base_cfg)
        self.reader = self.new_reader()
        self.router: Optional[nn.Module] = None
        self._init_state = _clone_state(self.base.method_state()["modules"])
        self.pool: List[Dict[str, Tensor]] = []
        self.pool_tasks: List[Task] = []
        self.buffer: Dict[str, List[Any]] = {}
        self.router_seconds: List[float] = []
        self.router_log: List[Dict[str, Any]] = []
        self._routes: List[Tuple[int, int]] = []
        self._loaded: Optional[int] = (
            None  # pool index the base holds (None: the task being trained)
        )
        self._tasks: Dict[str, Task] = {}
        self._store = None
        self._block_cache = None
        self._full_queries: Dict[str, Tensor] = {}
        cache = self.opts.token_cache
        if cache == "auto":
            cache = (
                "disk"
                if isinstance(model.image_encoder, TinyViT) and model.image_size <= 512
                else "none"
            )
        self.token_cache = cache

    @property
    def device(self) -> torch.device:
        """Where the frozen SAM model lives (the engine moves it to the run's device)."""
        return next(self.model.parameters()).device

    def new_reader(self) -> TokenReader:
        """Tokens (and stage projections) at their seeded initial values, frozen."""
        gen = torch.Generator().manual_seed(10_007 * int(self.cfg.seed) + 4242)
        return (
            TokenReader(self.model.image_encoder, self.opts.n_gat, gen)
            .requires_grad_(False)
            .to(self.device)
        )

    def train(self, mode: bool = True) -> "MoDA":
        super().train(mode)
        self.base.train(mode)
        return self

    # ---- the sequence -----------------------------------------------------------------------
    def plan(self, tasks: Sequence[Task]) -> List[Experience]:
        self._tasks = {t.name: t for t in tasks}
        return self.base.plan(tasks)

    def training_samples(self, exp: Experience) -> List[Tuple[Any, int]]:
        return self.base.training_samples(exp)

    def before_task(self, exp: Experience) -> None:
        self.flush_routes()
        self._use(None)  # every adapter starts from the base's initial state
        self.base.before_task(exp)

    def after_task(self, exp: Experience, source: Any) -> None:
        self.base.after_task(exp, source)
        for task in exp.tasks:
            self.pool.append(_clone_state(self.base.method_state()["modules"]))
            self.pool_tasks.append(task)
            self.buffer[task.name] = select_buffer(task, self.opts.buffer_size, self.cfg.seed)
        self._loaded = len(self.pool) - 1
        t0 = time.perf_counter()
        if len(self.pool) >= 2:
            self.retrain_router()
        self.router_seconds.append(time.perf_counter() - t0)

    # ---- model ------------------------------------------------------------------------------
    def trainable_parameters(self) -> List[nn.Parameter]:
        return self.base.trainable_parameters()

    def encode(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        return self.base.encode(images)

    def forward_masks(self, emb, interm, sparse, dense, task_ids) -> Tensor:
        return self.base.forward_masks(emb, interm, sparse, dense, task_ids)

    def _use(self, j: Optional[int]) -> None:
        """Load pool adapter ``j`` into the base (``None``: the base's initial state).

        ``load_method_state`` copies the values into the base's own parameters, so the pool's
        tensors are never aliased and need no copy of their own here.
        """
        if j == self._loaded and j is not None:
            return
        state = self._init_state if j is None else self.pool[j]
        self.base.load_method_state({"modules": state})
        self._loaded = j

    def predict(
        self,
        emb: Tensor,
        interm: Tensor,
        prompts: Sequence[Prompt],
        task_ids: Tensor,
        samples: Optional[Sequence[Any]] = None,
    ) -> Tensor:
        if self.training:  # the adapter being trained sees only its own task
            return self.base.predict(emb, interm, prompts, task_ids)
        if not self.pool:
            self._use(None)
            return self.base.predict(emb, interm, prompts, task_ids)
        if samples is None:
            raise ValueError(
                "MoDA routes each image by its query: evaluation must pass the samples"
            )
        route = (
            self.route(self.queries(samples))
            if self._routing()
            else torch.zeros(len(prompts), dtype=torch.long, device=emb.device)
        )
        return self._predict_routed(
            route,
            task_ids,
            lambda ix: self.base.predict(
                emb[ix], interm[ix], [prompts[i] for i in ix.tolist()], task_ids[ix]
            ),
        )

    def predict_images(
        self,
        images: Tensor,
        prompts: Sequence[Prompt],
        task_ids: Tensor,
        samples: Optional[Sequence[Any]] = None,
    ) -> Tensor:
        """Live inference: one frozen encoder pass gives the features *and* the query (one-way),
        then each image goes through its routed adapter."""
        if self.training or not self.pool:
            return super().predict_images(images, prompts, task_ids, samples)
        with torch.no_grad():
            if self.opts.attention == "full":
                q = self.reader.full_pass(self.model.image_encoder, self.model.preprocess(images))[
                    :, 0
                ]
                emb = interm = None
            else:
                with capture_kv(self.model.image_encoder) as kv:
                    emb, interm = self.model.encode(images)
                q = self.reader.read(kv)[:, 0]
        route = self.route(q)

        def run(ix: Tensor) -> Tensor:
            if self.Base.needs_pixels or emb is None:
                e, m = self.base.encode(images[ix])
            else:
                e, m = emb[ix], interm[ix]
            return self.base.predict(e, m, [prompts[i] for i in ix.tolist()], task_ids[ix])

        return self._predict_routed(route, task_ids, run)

    def _predict_routed(self, route: Tensor, task_ids: Tensor, run: Any) -> Tensor:
        self._routes.extend(zip(task_ids.tolist(), route.tolist()))
        groups = [(route == j).nonzero().flatten() for j in route.unique().tolist()]

        def run_adapter(ix: Tensor) -> Tensor:
            self._use(int(route[ix[0]]))  # the group's adapter, loaded before its images run
            return run(ix)

        return scatter_groups(len(route), groups, run_adapter)

    # ---- queries and routing ---------------------------------------------------------------------
    def _sample_store(self):
        if self._store is None:
            self._store = SampleStore(self.model.image_size, self.cfg.data.allow_nonbinary_masks)
        return self._store

    def _images(self, samples: Sequence[Any]) -> Tensor:
        """(B,3,S,S) 0..255 images of ``samples`` on the model's device."""
        store = self._sample_store()
        return torch.stack([store.get(s, keep_image=True).image for s in samples]).to(self.device)

    def _inputs(self, samples: Sequence[Any]) -> List[Tensor]:
        """Captured block inputs of ``samples`` (from the disk cache, or one encoder pass)."""
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
        images = self._images(samples)
        with torch.no_grad(), capture(self.model.image_encoder) as inputs:
            self.model.encode(images)
        return list(inputs)

    @torch.no_grad()
    def queries(self, samples: Sequence[Any]) -> Tensor:
        """GFT queries (B,D) of ``samples`` with the current tokens."""
        if self.opts.attention == "one_way":
            return self.reader.query_from_inputs(self._inputs(samples))
        if self.opts.train_tokens:  # the tokens change with every retraining: no memo
            images = self._images(samples)
            return self.reader.full_pass(self.model.image_encoder, self.model.preprocess(images))[
                :, 0
            ]
        missing = [s for s in samples if str(s.image) not in self._full_queries]
        if missing:  # fixed random tokens (released): a query never changes, compute it once
            images = self._images(missing)
            q = self.reader.full_pass(self.model.image_encoder, self.model.preprocess(images))[:, 0]
            self._full_queries.update({str(s.image): q[i] for i, s in enumerate(missing)})
        return torch.stack([self._full_queries[str(s.image)] for s in samples])

    def _routing(self) -> bool:
        """Whether there is a choice to make (a trained router over two or more adapters)."""
        return self.router is not None and len(self.pool) >= 2

    @torch.no_grad()
    def route(self, q: Tensor) -> Tensor:
        """Pool index (B,) of each query: argmax of the router (0 while the pool has one adapter)."""
        if not self._routing():
            return torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return self.router(q.float()).argmax(-1)

    def retrain_router(self) -> None:
        """Retrain the router (and the tokens, if trainable) on the buffers of every seen task."""
        step = len(self.pool)
        gen = torch.Generator().manual_seed(1_000_003 * int(self.cfg.seed) + 7919 * step + 99)
        samples = [s for task in self.pool_tasks for s in self.buffer[task.name]]
        labels = torch.tensor(
            [j for j, task in enumerate(self.pool_tasks) for _ in self.buffer[task.name]],
            device=self.device,
        )
        # Router and tokens restart from their initial values at every retraining (the released
        # code builds new ones each task), so the router after task t depends only on the buffers
        # of tasks 0..t: cosam.ablation re-routes a finished pool exactly.
        self.reader = self.new_reader()
        self.router = ROUTERS[self.opts.router](self.reader.query_dim, len(self.pool), gen).to(
            self.device
        )
        params = list(self.router.parameters())
        train_tokens = self.opts.train_tokens
        kv: Optional[List[Any]] = None
        fixed_q: Optional[Tensor] = None
        if train_tokens:
            self.reader.requires_grad_(True)
            params += list(self.reader.parameters())
            if self.opts.attention == "one_way":
                # patch keys/values do not depend on the tokens: once per image (float16 in RAM)
                inputs = self._inputs(samples)
                kv = [
                    [
                        (k.half(), v.half())
                        for k, v in self.reader.patch_kv([t[i : i + 1] for t in inputs])
                    ]
                    for i in range(len(samples))
                ]
                del inputs
        else:
            fixed_q = torch.cat(
                [self.queries(samples[i : i + 16]) for i in range(0, len(samples), 16)]
            )
        opt = torch.optim.Adam(params, lr=self.opts.router_lr)
        bs = self.opts.router_batch
        for _ in range(self.opts.router_epochs):
            perm = torch.randperm(len(samples), generator=gen)
            for start in range(0, len(samples), bs):
                idx = perm[start : start + bs].tolist()
                if fixed_q is not None:
                    q = fixed_q[idx]
                elif kv is not None:
                    batch_kv = [
                        (
                            torch.cat([kv[i][b][0] for i in idx]),
                            torch.cat([kv[i][b][1] for i in idx]),
                        )
                        for b in range(len(kv[0]))
                    ]
                    q = self.reader.read(batch_kv)[:, 0]
                else:  # full attention with trained tokens: backprop through the encoder pass
                    images = self._images([samples[i] for i in idx])
                    q = self.reader.full_pass(
                        self.model.image_encoder, self.model.preprocess(images)
                    )[:, 0]
                loss = F.cross_entropy(self.router(q.float()), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.reader.requires_grad_(False)
        self.router.requires_grad_(False)

    # ---- router bookkeeping ------------------------------------------------------------------------
    def after_eval(self) -> None:
        """Log this evaluation's routes. Under torchrun each rank routed only its share of the
        batches, so the routes are gathered first and every rank logs the whole test set."""
        self.base.after_eval()
        if distributed.info().enabled:
            self._routes = [r for part in distributed.gather_objects(self._routes) for r in part]
        self.flush_routes()

    def flush_routes(self) -> None:
        """Summarise the routes of the evaluation that just ran into ``router_log``."""
        if not self._routes:
            return
        ids = [t.task_id for t in self.pool_tasks]
        names = [t.name for t in self.pool_tasks]
        per: Dict[int, List[int]] = {}
        for true, j in self._routes:
            per.setdefault(true, []).append(j)
        seen = [tid for tid in ids if tid in per]
        correct = sum(sum(1 for j in per[tid] if ids[j] == tid) for tid in seen)
        total = sum(len(per[tid]) for tid in seen)
        rows = {}
        for tid, js in sorted(per.items()):
            counts = [sum(1 for j in js if j == k) for k in range(len(ids))]
            rows[str(tid)] = counts
        name_of = {t.task_id: t.name for t in self._tasks.values()}
        self.router_log.append(
            {
                "step": len(self.pool),
                "adapters": names,
                "accuracy": (correct / total) if total else None,
                "per_task": {
                    name_of.get(tid, str(tid)): sum(1 for j in per[tid] if ids[j] == tid)
                    / len(per[tid])
                    for tid in seen
                },
                "confusion": {
                    name_of.get(int(tid), "probe"): counts for tid, counts in rows.items()
                },
            }
        )
        self._routes = []

    # ---- bookkeeping ---------------------------------------------------------------------------
    def method_state(self) -> Dict[str, Any]:
        self.flush_routes()
        return {
            "modules": self.base.method_state()["modules"],
            "pool": self.pool,
            "pool_tasks": [t.name for t in self.pool_tasks],
            "reader": self.reader.state_dict(),
            "router": None if self.router is None else self.router.state_dict(),
            "router_seconds": self.router_seconds,
            "router_log": self.router_log,
        }

    def load_method_state(self, state: Dict[str, Any]) -> None:
        self.base.load_method_state({"modules": state["modules"]})
        self.pool = [_clone_state(p) for p in state["pool"]]
        self.pool_tasks = []
        for name in state["pool_tasks"]:
            if name not in self._tasks:
                raise CheckpointError(
                    f"resume state holds an adapter for task {name!r}, not in this run's plan"
                )
            task = self._tasks[name]
            self.pool_tasks.append(task)
            self.buffer[name] = select_buffer(task, self.opts.buffer_size, self.cfg.seed)
        self.reader.load_state_dict(state["reader"])
        self.router = None
        if state["router"] is not None:
            self.router = ROUTERS[self.opts.router](
                self.reader.query_dim, len(self.pool), torch.Generator()
            )
            self.router.load_state_dict(state["router"])
            self.router.to(self.device)
            self.router.requires_grad_(False)
        self.router_seconds = list(state["router_seconds"])
        self.router_log = list(state["router_log"])
        self._loaded = None

    def cost(self) -> Dict[str, Any]:
        per_task = sum(v.numel() for v in self._init_state.values())
        tokens = sum(p.numel() for p in self.reader.parameters())
        router = 0 if self.router is None else sum(p.numel() for p in self.router.parameters())
        base = self.base.cost()
        return {
            "trainable_params": base["trainable_params"]
            + (tokens if self.opts.train_tokens else 0)
            + router,
            "stored_params_per_task": per_task,
            "stored_params_total": per_task * max(len(self.pool), 1) + tokens + router,
            "token_params": tokens,
            "router_params": router,
            "buffer_images_per_task": self.opts.buffer_size,
            "router_seconds": self.router_seconds,
        }

    def artifacts(self) -> Dict[str, Any]:
        self.flush_routes()
        final = self.router_log[-1] if self.router_log else None
        return {
            "router": {
                "final": final,
                "log": self.router_log,
                "buffer": {
                    name: [s.image.name for s in samples] for name, samples in self.buffer.items()
                },
                "router_seconds": self.router_seconds,
                "options": self.options_dict(),
            }
        }


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
