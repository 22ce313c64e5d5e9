"""MoDA's options, router and route record: the heads that pick an adapter from a GFT query, their
training on the task buffers, and where the test images went.

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
scale). :func:`train_router` trains one for ``router_epochs`` epochs of Adam (``router_lr``,
batch ``router_batch``; 10 / 1e-3 / 4 as released) with cross-entropy on the adapter index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.benchmark import Task
from ..errors import ConfigError
from ..models.tokens import TokenReader
from .moda_cache import TokenInputs


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


class LinearRouter(nn.Module):
    """The released router: logits = W q + b, (B,D) -> (B,T).

    Arguments:
      dim (int): the query width D.
      n (int): the number of adapters T.
      generator (torch.Generator): draws the initial weights (PyTorch's Linear init).
    """

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
    """A learned key per adapter: logits = s · cos(q, k_t), s = exp(log_scale) learned (init 10).

    Arguments:
      dim (int): the query width D.
      n (int): the number of adapters T.
      generator (torch.Generator): draws the initial keys.
    """

    def __init__(self, dim: int, n: int, generator: torch.Generator) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.randn(n, dim, generator=generator))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, q: Tensor) -> Tensor:
        return self.log_scale.exp() * F.normalize(q, dim=-1) @ F.normalize(self.keys, dim=-1).t()


ROUTERS = {"linear": LinearRouter, "cosine": CosineRouter}


def train_router(
    router: nn.Module,
    reader: TokenReader,
    samples: Sequence[Any],
    labels: Tensor,
    opts: MoDAOptions,
    generator: torch.Generator,
    inputs: TokenInputs,
    queries: Callable[[Sequence[Any]], Tensor],
) -> None:
    """Train ``router`` (and ``reader``'s tokens, if ``opts.train_tokens``) to name each buffer
    image's adapter; both end frozen.

    Arguments:
      router (nn.Module): a fresh router, (B,D) queries -> (B,T) logits.
      reader (TokenReader): the tokens, at their initial values.
      samples (Sequence[Any]): the buffer images of every adapter's task.
      labels (Tensor): (N,) the adapter index of each sample.
      opts (MoDAOptions): ``train_tokens``, ``attention``, ``router_epochs``, ``router_lr``,
        ``router_batch``.
      generator (torch.Generator): shuffles the samples every epoch.
      inputs (TokenInputs): the samples' block inputs and images.
      queries (Callable[[Sequence[Any]], Tensor]): (B,D) fixed queries of samples, used when
        the tokens do not train.
    """
    params = list(router.parameters())
    kv: Optional[List[Any]] = None
    fixed_q: Optional[Tensor] = None
    if opts.train_tokens:
        reader.requires_grad_(True)
        params += list(reader.parameters())
        if opts.attention == "one_way":
            # patch keys/values do not depend on the tokens: once per image (float16 in RAM)
            block_inputs = inputs.inputs(samples)
            kv = [
                [
                    (k.half(), v.half())
                    for k, v in reader.patch_kv([t[i : i + 1] for t in block_inputs])
                ]
                for i in range(len(samples))
            ]
            del block_inputs
    else:
        fixed_q = torch.cat([queries(samples[i : i + 16]) for i in range(0, len(samples), 16)])
    opt = torch.optim.Adam(params, lr=opts.router_lr)
    bs = opts.router_batch
    for _ in range(opts.router_epochs):
        perm = torch.randperm(len(samples), generator=generator)
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
                q = reader.read(batch_kv)[:, 0]
            else:  # full attention with trained tokens: backprop through the encoder pass
                q = inputs.full_query(reader, [samples[i] for i in idx])
            loss = F.cross_entropy(router(q.float()), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    reader.requires_grad_(False)
    router.requires_grad_(False)


def route_summary(
    routes: Sequence[Tuple[int, int]], adapters: Sequence[Task], tasks: Mapping[str, Task]
) -> Dict[str, Any]:
    """One evaluation's routing, as ``router.json`` records it.

    Arguments:
      routes (Sequence[Tuple[int, int]]): (true task id, chosen pool index) per routed image.
      adapters (Sequence[Task]): the pool's tasks, in pool order.
      tasks (Mapping[str, Task]): the run's tasks by name (to name the task ids).

    Returns:
      (Dict[str, Any]): ``step`` (pool size), ``adapters`` (their task names), ``accuracy``
        (task-id accuracy over the images of the pool's tasks; None without any),
        ``per_task`` accuracy, and ``confusion`` (per true task, or "probe": images per adapter).
    """
    ids = [t.task_id for t in adapters]
    names = [t.name for t in adapters]
    per: Dict[int, List[int]] = {}
    for true, j in routes:
        per.setdefault(true, []).append(j)
    seen = [tid for tid in ids if tid in per]
    correct = sum(sum(1 for j in per[tid] if ids[j] == tid) for tid in seen)
    total = sum(len(per[tid]) for tid in seen)
    rows = {}
    for tid, js in sorted(per.items()):
        counts = [sum(1 for j in js if j == k) for k in range(len(ids))]
        rows[str(tid)] = counts
    name_of = {t.task_id: t.name for t in tasks.values()}
    return {
        "step": len(adapters),
        "adapters": names,
        "accuracy": (correct / total) if total else None,
        "per_task": {
            name_of.get(tid, str(tid)): sum(1 for j in per[tid] if ids[j] == tid) / len(per[tid])
            for tid in seen
        },
        "confusion": {name_of.get(int(tid), "probe"): counts for tid, counts in rows.items()},
    }
