"""MoDA (Mixture of Domain Adapters): a per-task adapter pool chosen per image by a router
that reads MoDA's Global Feature Token (protocol §3; Table 2's "+MoDA" rows).

One MoDA class wraps a *base* strategy, whose trainable part is the adapter (the three methods
are in :mod:`cosam.methods.moda_variants`):

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

Parts: the options, tokens and router (:mod:`cosam.methods.moda_router`); the resident pool
(:mod:`cosam.methods.moda_pool`: routing points the base at a task's trained modules, copying no
weight); the token pass's inputs (:mod:`cosam.methods.moda_cache`); trained routers kept on disk
(:mod:`cosam.methods.moda_memo`: the router does not depend on the base, so two bases of one seed
and order share it). Live inference uses one encoder pass for features and query, except
``sam_adapter_moda`` (the query comes from the un-adapted encoder: two passes on new images;
dataset images read it from the block-input cache). Written beside the results: ``router.json``
(per evaluation step: task-id accuracy per task and overall on the seen tasks' test sets, confusion
matrix, where probe images go; buffer contents; router training seconds, and ``router_reused``:
which routers were loaded from the router memo, :mod:`cosam.methods.moda_memo`, with the seconds
their training took when it ran). Cost: stored per task = one adapter + ``buffer_size`` images.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import distributed
from ..data.benchmark import Task
from ..data.prompts import Prompt
from ..errors import CheckpointError
from ..models.tokens import TokenReader
from ..schema import Config
from .base import Experience, Strategy, Wrapper
from .moda_cache import TokenInputs, resolve_token_cache
from .moda_memo import RouterMemo
from .moda_pool import AdapterPool
from .moda_router import ROUTERS, MoDAOptions, route_summary, train_router
from .replay import select_buffer


class MoDA(Wrapper):
    """Adapter pool + router over a base strategy (subclasses set ``Base`` and ``name``).

    Arguments:
      model (SamModel): the frozen SAM model.
      cfg (Config): the run's config; ``method_options`` holds MoDA's and the base's options.
    """

    Base: ClassVar[type]  # the base strategy class (moda_variants)
    Options: ClassVar[type] = MoDAOptions
    code_version = 2  # 2: evaluation's queries by the folded token pass (rounding-level change)

    def __init__(self, model, cfg: Config) -> None:
        super().__init__(model, cfg)
        base_fields = {f.name for f in dataclasses.fields(self.Base.Options)}
        base_cfg = dataclasses.replace(
            cfg, method_options={k: v for k, v in cfg.method_options.items() if k in base_fields}
        )
        self.base: Strategy = self.Base(model, base_cfg)
        self.reader = self.new_reader()
        self.router: Optional[nn.Module] = None
        self.pool = AdapterPool(self.base)
        self.pool_tasks: List[Task] = []
        self.buffer: Dict[str, List[Any]] = {}
        self.router_seconds: List[float] = []
        self.router_reused: List[bool] = []
        self.router_log: List[Dict[str, Any]] = []
        self._routes: List[Tuple[int, int]] = []
        self._tasks: Dict[str, Task] = {}
        self.token_inputs = TokenInputs(
            model, cfg, resolve_token_cache(self.opts.token_cache, model), self.opts.attention
        )
        self.router_memo = RouterMemo(cfg, model, self.opts, self.token_inputs.token_cache)

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
        self.pool.reset()  # every adapter starts from the base's initial state
        self.base.before_task(exp)

    def after_task(self, exp: Experience, source: Any) -> None:
        self.base.after_task(exp, source)
        for task in exp.tasks:
            self.pool.add()
            self.pool_tasks.append(task)
            self.buffer[task.name] = select_buffer(task, self.opts.buffer_size, self.cfg.seed)
        self.update_router()

    def update_router(self) -> None:
        """Retrain (or load) the router once the pool has two adapters, and log its training
        seconds (a loaded router's stored ones) and whether it was loaded."""
        t0 = time.perf_counter()
        stored = self.retrain_router() if len(self.pool) >= 2 else None
        self.router_seconds.append(time.perf_counter() - t0 if stored is None else stored)
        self.router_reused.append(stored is not None)

    def restore_pool(self, states: Sequence[Dict[str, Tensor]], tasks: Sequence[Task]) -> None:
        """Set the pool to stored adapters, with their tasks' router buffers and no router.

        Arguments:
          states (Sequence[Dict[str, Tensor]]): one stored adapter per task (the entries of
            ``method_state()["pool"]``).
          tasks (Sequence[Task]): their tasks, in pool order.
        """
        self.pool.load(states)
        self.pool_tasks = list(tasks)
        self.buffer = {
            t.name: select_buffer(t, self.opts.buffer_size, self.cfg.seed) for t in tasks
        }
        self.router = None

    # ---- model ------------------------------------------------------------------------------
    def predict(
        self,
        emb: Tensor,
        interm: Tensor,
        prompts: Sequence[Prompt],
        task_ids: Tensor,
        samples: Optional[Sequence[Any]] = None,
    ) -> Tensor:
        """Mask logits (B,1,4e,4e), each image through its routed adapter (training: the adapter
        being trained; no adapter yet: the base, which holds its initial state)."""
        if self.training or len(self.pool) == 0:
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
        if self.training or len(self.pool) == 0:
            return super().predict_images(images, prompts, task_ids, samples)
        if self.Base.needs_pixels and samples is not None and self.reads_block_inputs():
            # the query's frozen pass is read from the block-input cache, as the other bases route
            q, emb, interm = self.queries(samples), None, None
        else:
            q, emb, interm = self.token_inputs.live(self.reader, images)
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
        return self.pool.run_routed(route, run)

    # ---- queries and routing ---------------------------------------------------------------------
    @torch.no_grad()
    def queries(self, samples: Sequence[Any]) -> Tensor:
        """GFT queries (B,D) of ``samples`` with the current tokens.

        Arguments:
          samples (Sequence[Any]): dataset samples.

        Returns:
          (Tensor): the queries, (B,D).
        """
        return self.token_inputs.queries(self.reader, samples, memo=not self.opts.train_tokens)

    def reads_block_inputs(self) -> bool:
        """Whether :meth:`queries` reads captured block inputs from disk (one-way tokens)."""
        return self.token_inputs.token_cache == "disk" and self.opts.attention == "one_way"

    def _routing(self) -> bool:
        """Whether there is a choice to make (a trained router over two or more adapters)."""
        return self.router is not None and len(self.pool) >= 2

    @torch.no_grad()
    def route(self, q: Tensor) -> Tensor:
        """Pool index of each query: argmax of the router (0 while the pool has one adapter).

        Arguments:
          q (Tensor): (B,D) GFT queries.

        Returns:
          (Tensor): (B,) int64 pool indices.
        """
        if not self._routing():
            return torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return self.router(q.float()).argmax(-1)

    def retrain_router(self) -> Optional[float]:
        """Retrain the router (and the tokens, if trainable) on the buffers of every seen task,
        or load the same router from the memo (:mod:`cosam.methods.moda_memo`).

        Returns:
          (float or None): the training seconds stored with a loaded router; None when trained.
        """
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
        return self.router_memo.train_or_load(
            step,
            samples,
            labels.tolist(),
            self.reader,
            self.router,
            lambda: train_router(
                self.router,
                self.reader,
                samples,
                labels,
                self.opts,
                gen,
                self.token_inputs,
                self.queries,
            ),
        )

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
        self.router_log.append(route_summary(self._routes, self.pool_tasks, self._tasks))
        self._routes = []

    # ---- bookkeeping ---------------------------------------------------------------------------
    def method_state(self) -> Dict[str, Any]:
        self.flush_routes()
        return {
            "modules": self.base.method_state()["modules"],
            "pool": [self.pool.state(j) for j in range(len(self.pool))],
            "pool_tasks": [t.name for t in self.pool_tasks],
            "reader": self.reader.state_dict(),
            "router": None if self.router is None else self.router.state_dict(),
            "router_seconds": self.router_seconds,
            "router_reused": self.router_reused,
            "router_log": self.router_log,
        }

    def load_method_state(self, state: Dict[str, Any]) -> None:
        self.base.load_method_state({"modules": state["modules"]})
        for name in state["pool_tasks"]:
            if name not in self._tasks:
                raise CheckpointError(
                    f"resume state holds an adapter for task {name!r}, not in this run's plan"
                )
        self.restore_pool(state["pool"], [self._tasks[name] for name in state["pool_tasks"]])
        self.reader.load_state_dict(state["reader"])
        if state["router"] is not None:
            self.router = ROUTERS[self.opts.router](
                self.reader.query_dim, len(self.pool), torch.Generator()
            )
            self.router.load_state_dict(state["router"])
            self.router.to(self.device)
            self.router.requires_grad_(False)
        self.router_seconds = list(state["router_seconds"])
        # checkpoints written before the memo existed trained every router
        self.router_reused = list(state.get("router_reused", [False] * len(self.router_seconds)))
        self.router_log = list(state["router_log"])

    def cost(self) -> Dict[str, Any]:
        per_task = self.pool.numel()
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
                "router_reused": self.router_reused,
                "options": self.options_dict(),
            }
        }
