"""Data-parallel runs under ``torchrun``: one process per GPU (or per CPU slot, with gloo).

    torchrun --nproc_per_node=N -m cosam run --method sequential --profile paper

Without torchrun (no ``WORLD_SIZE`` > 1 in the environment) everything here is a no-op and a run
is the ordinary single process, bit for bit. Under torchrun:

* **Sharding.** ``train.batch_size`` stays the *global* batch: every rank draws the same epoch
  permutation from the task's generator (seeded by seed and task, not rank) and takes its share
  ``idx[rank::world]`` of each global batch, as ``DistributedSampler`` does. Evaluation batches are
  dealt round-robin over the ranks and the per-image scores gathered, so the matrix holds every
  test image once. The frozen-encoder cache is filled in shards (each rank encodes a part and
  writes it to the shared disk cache).
* **Randomness.** What a batch draws (prompt kinds and points, noisy masks, jitter, loss points)
  comes from a generator seeded by a draw from the shared task generator plus the rank, so ranks
  differ and every run is reproducible for a given world size. A W-process run is therefore
  statistically equivalent to the one-process run, not bitwise equal (its batches see other
  loss points and prompts).
* **Gradients.** After ``backward`` the trainable gradients are averaged over ranks weighted by
  each rank's share of the global batch (one coalesced all-reduce per dtype), which equals the
  gradient of the global batch's mean loss. This is what ``DistributedDataParallel`` does; a
  :class:`cosam.methods.base.Strategy` is not one ``forward`` and its trainable set changes from
  task to task (prompt pools, per-task branches), so the engine reduces explicitly instead of
  wrapping. Parameters start equal (broadcast from rank 0 at the start of every task) and are
  checked equal after it.
* **Writing.** Only rank 0 takes the run lock and writes files; the other ranks read the resume
  state. ``after_task`` hooks see the whole (unsharded) training set, so method state (Fisher,
  buffers, routers) is the same on every rank.

Single node assumed for the run folder and the feature cache (a shared file system otherwise).
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import CosamError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run.

    Attributes:
      rank: global rank, 0..world_size-1.
      world_size: number of processes (1 = no process group).
      local_rank: rank on this node (selects ``cuda:<local_rank>``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and logs progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE = DistInfo()


def info() -> DistInfo:
    """The current process group's ranks, or :data:`SINGLE` when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(),
            dist.get_world_size(),
            int(os.environ.get("LOCAL_RANK", dist.get_rank())),
        )
    return SINGLE


def init(device: torch.device, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes, once; a single process otherwise.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. The backend
    is NCCL for CUDA devices and gloo for the CPU. Non-zero ranks log warnings only.

    Arguments:
      device: this process's device (from :func:`cosam.accel.setup`).
      timeout_s: collective timeout (a rank that dies makes the others fail after it).
    """
    if dist.is_available() and dist.is_initialized():
        return info()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    if not dist.is_available():
        raise CosamError(
            "WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict = {"backend": backend, "timeout": timedelta(seconds=timeout_s)}
    if device.type == "cuda":
        kwargs["device_id"] = device
    try:
        dist.init_process_group(**kwargs)
    except TypeError:  # torch without device_id
        kwargs.pop("device_id", None)
        dist.init_process_group(**kwargs)
    atexit.register(_shutdown)
    me = info()
    if not me.is_main:
        logging.getLogger("cosam").setLevel(logging.WARNING)
    log.info("process group: %d processes, backend %s", me.world_size, backend)
    return me


def _shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if info().enabled:
        dist.barrier()


def shard(idx: Tensor, me: Optional[DistInfo] = None) -> Tensor:
    """This rank's share ``idx[rank::world]`` of a global batch of indices (all of it in one process)."""
    me = me or info()
    return idx if not me.enabled else idx[me.rank :: me.world_size]


def rank_generator(shared: torch.Generator, me: Optional[DistInfo] = None) -> torch.Generator:
    """The generator a rank draws its batch randomness from.

    One process: ``shared`` itself (so nothing changes). Several: a new generator seeded by one
    draw from ``shared`` (the same on every rank, which keeps ``shared`` in step) plus the rank.
    """
    me = me or info()
    if not me.enabled:
        return shared
    base = int(torch.randint(0, 2**62, (1,), generator=shared))
    return torch.Generator().manual_seed(base + me.rank)


def all_reduce_sum(values: Sequence[float], device: torch.device) -> List[float]:
    """Element-wise sum over ranks of a few floats (float64)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if info().enabled:
        dist.all_reduce(t)
    return t.tolist()


def average_gradients(params: Sequence[nn.Parameter], n_local: int) -> int:
    """Replace each gradient by the batch-weighted mean over ranks; returns the global batch size.

    Each rank's loss is a mean over its ``n_local`` masks, so ``sum_r n_r g_r / sum_r n_r`` is the
    gradient of the mean loss over the global batch. A parameter that has a gradient on some rank
    only gets zeros for it elsewhere; one with no gradient anywhere keeps ``grad=None`` (so Adam
    skips it, as in one process).

    Arguments:
      params: the trainable parameters, in the same order on every rank.
      n_local: masks in this rank's share of the batch.
    """
    me = info()
    if not me.enabled:
        return n_local
    if not params:
        return int(all_reduce_sum([n_local], torch.device("cpu"))[0])
    device = params[0].device
    head = torch.tensor(
        [float(p.grad is not None) for p in params] + [float(n_local)],
        dtype=torch.float64,
        device=device,
    )
    dist.all_reduce(head)
    n_global = int(head[-1].item())
    has = [bool(h > 0) for h in head[:-1].tolist()]
    scale = n_local / max(n_global, 1)
    by_dtype: dict = {}
    for p, h in zip(params, has):
        if not h:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group]).mul_(scale)
        dist.all_reduce(flat)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n
    return n_global


@torch.no_grad()
def broadcast_parameters(params: Sequence[Tensor]) -> None:
    """Copy rank 0's values into every rank's tensors (as DDP does when it wraps a module)."""
    if not info().enabled:
        return
    for p in params:
        dist.broadcast(p.data, src=0)


@torch.no_grad()
def assert_in_sync(params: Sequence[Tensor], what: str = "trainable parameters") -> None:
    """Raise if the ranks' copies of ``params`` differ (compares float64 sums and sums of squares)."""
    if not info().enabled or not params:
        return
    sig = torch.stack(
        [torch.stack([p.double().sum(), p.double().pow(2).sum()]) for p in params]
    ).flatten()
    lo, hi = sig.clone(), sig.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise CosamError(
            f"data-parallel ranks diverged: their {what} differ after a task "
            f"(max difference {float((hi - lo).abs().max()):.3g}); this is a bug, please report it"
        )


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    me = info()
    if not me.enabled:
        return [obj]
    out: List[Any] = [None] * me.world_size
    dist.all_gather_object(out, obj)
    return out
