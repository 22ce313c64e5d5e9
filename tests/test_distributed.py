"""Data-parallel runs (cosam.distributed) on the CPU: two gloo processes against one process.

Marked ``ddp`` (see pyproject.toml): these start processes (torchrun, torch.multiprocessing);
``pytest -m "not ddp"`` leaves them out. About 45 s together on a loaded 2-core machine.

What "the same as one process" means here (cosam.distributed's docstring): the gradient of a
two-rank step equals the one-process gradient of the whole batch (checked exactly, to float
rounding, in ``test_gradient_average_equals_the_global_batch_gradient``), evaluation is the same
computation (row 0 of the matrix is bit-identical), but each rank draws its own prompts and loss
points (seed + rank), so the trained rows and losses agree within a tolerance, not bitwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from cosam import distributed
from cosam.config import make_config
from cosam.distributed import DistInfo
from cosam.errors import CosamError
from cosam.runner import Context, run

pytestmark = pytest.mark.ddp

REPO = Path(__file__).resolve().parents[1]
ORDER = ["BSData", "CAMO", "Polyp"]
# Batch 4 (2 images per rank): with the smoke profile's batch 2 each rank's single image and its
# own prompts and loss points make 8 steps per task drift beyond the 0.05 IoU tolerance.
SMOKE: Dict[str, Any] = {
    "data": {"train_cap": 4, "test_cap": 2, "probe_cap": 2, "order": ORDER},
    "train": {"batch_size": 4},
}


# ---- pure pieces (no process group) ------------------------------------------------------------


def test_shards_partition_every_global_batch() -> None:
    """idx[rank::world] over the ranks covers each global batch exactly once, whatever its size."""
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    for world in (1, 2, 3, 4):
        for size in (4, 5, 11):
            batch = perm[:size]
            parts = [distributed.shard(batch, DistInfo(r, world)) for r in range(world)]
            assert sorted(torch.cat(parts).tolist()) == sorted(batch.tolist())
            assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_rank_generators_differ_and_keep_the_shared_stream_in_step() -> None:
    """One process uses the task generator itself; with two, each rank gets its own stream while
    the shared generator (the epoch permutation) advances identically on every rank."""
    g = torch.Generator().manual_seed(5)
    assert distributed.rank_generator(g, DistInfo(0, 1)) is g
    shared = [torch.Generator().manual_seed(5) for _ in range(2)]
    local = [distributed.rank_generator(shared[r], DistInfo(r, 2)) for r in range(2)]
    assert torch.equal(shared[0].get_state(), shared[1].get_state())
    assert not torch.equal(torch.rand(4, generator=local[0]), torch.rand(4, generator=local[1]))


# ---- collectives, in two spawned gloo processes ------------------------------------------------


def _grad_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # identical data and start on every rank
        w, b = nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(2))
        only0, unused = nn.Parameter(torch.randn(2)), nn.Parameter(torch.randn(2))
        x, y = torch.randn(5, 3), torch.randn(5, 2)
        params = [w, b, only0, unused]
        on0 = torch.zeros(5, 1)
        on0[torch.arange(5)[0::world]] = 1.0  # samples of rank 0, the only ones that use `only0`

        def loss_of(ix: torch.Tensor) -> torch.Tensor:  # mean over the samples given
            pred = x[ix] @ w + b + on0[ix] * only0
            return ((pred - y[ix]) ** 2).mean()

        mine = distributed.shard(
            torch.arange(5), DistInfo(rank, world)
        )  # 3 and 2 samples: unequal shares
        loss_of(mine).backward()
        n_global = distributed.average_gradients(params, len(mine))
        got = [None if p.grad is None else p.grad.clone() for p in params]
        for p in params:
            p.grad = None
        loss_of(torch.arange(5)).backward()  # the one-process gradient of the whole batch
        ref = [None if p.grad is None else p.grad.clone() for p in params]

        distributed.assert_in_sync(params)  # equal start: passes
        with torch.no_grad():
            w.add_(float(rank))  # rank 1 drifts
        try:
            distributed.assert_in_sync(params)
            diverged = False
        except CosamError:
            diverged = True
        distributed.broadcast_parameters(params)  # rank 0's values everywhere again
        distributed.assert_in_sync(params)
        gathered = distributed.gather_objects({"rank": rank})
        torch.save(
            {
                "got": got,
                "ref": ref,
                "n_global": n_global,
                "diverged": diverged,
                "gathered": gathered,
                "w": w.detach().clone(),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_gradient_average_equals_the_global_batch_gradient(tmp_path: Path) -> None:
    """Weighted gradient averaging over unequal shares gives the whole batch's gradient on every
    rank; a parameter used on one rank only is averaged with zeros; an unused one keeps no grad;
    divergence is detected; broadcast and gather work."""
    mp.spawn(_grad_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for r in (r0, r1):
        assert r["n_global"] == 5 and r["diverged"] is True
        assert r["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert r["got"][3] is None and r["ref"][3] is None
        for got, ref in zip(r["got"][:3], r["ref"][:3]):
            torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(r0["got"][:3], r1["got"][:3]):
        assert torch.equal(a, b)  # the reduced gradient is the same bits everywhere
    assert torch.equal(r0["w"], r1["w"])


# ---- a whole run under torchrun against one process --------------------------------------------


def _matrix(d: Path) -> Dict[str, Any]:
    return json.loads((d / "matrix.json").read_text())


def _losses(d: Path) -> list:
    return [s["loss"] for s in json.loads((d / "timing.json").read_text())["steps"]]


def _torchrun_smoke(
    method: str, results: Path, cache: Path, *sets: str
) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 -m cosam run`` on the smoke profile with SMOKE's data caps
    (then ``sets``, later ones winning); fails the test unless it exits 0."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("COSAM_FAULT", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "cosam",
        "run",
        "--method",
        method,
        "--profile",
        "smoke",
        "--results-dir",
        str(results),
        "--set",
        f"cache_dir={cache}",
        "--set",
        "data.train_cap=4",
        "--set",
        "data.test_cap=2",
        "--set",
        "data.probe_cap=2",
        "--set",
        "data.order=" + json.dumps(ORDER),
        "--set",
        f"train.batch_size={SMOKE['train']['batch_size']}",
    ]
    for kv in sets:
        cmd += ["--set", kv]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_process_run_matches_one_process(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node=2 -m cosam run`` (gloo, smoke profile) gives the one-process task
    matrix: row 0 bit-identical, trained rows within 0.05 IoU, losses within 10 %; only rank 0
    writes, and the ranks' weights are checked equal after every task (else the run fails)."""
    cache = tmp_path / "cache"
    one = run(
        make_config(
            "smoke",
            {
                **SMOKE,
                "method": "sequential",
                "results_dir": str(tmp_path / "one"),
                "cache_dir": str(cache),
            },
        ),
        ctx=Context(),
    )
    proc = _torchrun_smoke("sequential", tmp_path / "two", cache)
    assert proc.stdout.count("IoU matrix") == 1  # rank 0 reports, rank 1 does not
    two = tmp_path / "two" / "smoke" / one.name
    assert (two / "DONE").is_file() and not list(two.glob(".*.tmp"))
    meta = json.loads((two / "config.json").read_text())
    assert meta["resolved"]["accel"]["world_size"] == 2
    same = {
        **json.loads((one / "config.json").read_text())["config"],
        "results_dir": meta["config"]["results_dir"],
    }
    assert same == meta["config"]  # the same run config: the number of processes is not part of it

    a, b = _matrix(one), _matrix(two)
    assert a["rows"] == b["rows"] and a["tasks"] == b["tasks"] == ORDER
    assert (
        a["iou"][0] == b["iou"][0] and a["biou"][0] == b["biou"][0]
    )  # evaluation is sharded, not changed
    for metric in ("iou", "biou"):
        np.testing.assert_allclose(
            np.array(b[metric], dtype=float), np.array(a[metric], dtype=float), atol=0.05
        )
    la, lb = np.array(_losses(one)), np.array(_losses(two))
    assert la.shape == lb.shape
    np.testing.assert_allclose(lb, la, rtol=0.10)
    assert not np.array_equal(la, lb)  # ranks did draw their own prompts and loss points


def test_two_process_moda_router_log_covers_every_rank(tmp_path: Path) -> None:
    """MoDA under ``torchrun --nproc_per_node=2``: each rank routes only its share of the test
    batches, and ``router.json`` must still count every test image (gathered over the ranks), as
    the one-process run does. The router reads the frozen encoder and is trained from the same
    seeded buffer on every rank, so its routes, and hence the confusion matrices, are the same."""
    cache = tmp_path / "cache"
    overrides = {**SMOKE, "data": {**SMOKE["data"], "test_cap": 3}, "eval": {"batch_size": 2}}
    one = run(
        make_config(
            "smoke",
            {
                **overrides,
                "method": "sequential_moda",
                "results_dir": str(tmp_path / "one"),
                "cache_dir": str(cache),
            },
        ),
        ctx=Context(),
    )
    _torchrun_smoke(
        "sequential_moda", tmp_path / "two", cache, "data.test_cap=3", "eval.batch_size=2"
    )
    two = tmp_path / "two" / "smoke" / one.name
    a, b = (json.loads((d / "router.json").read_text()) for d in (one, two))
    assert len(a["log"]) == len(b["log"]) == len(ORDER)
    for la, lb in zip(a["log"], b["log"]):
        totals = {name: sum(counts) for name, counts in lb["confusion"].items()}
        assert totals == {name: sum(counts) for name, counts in la["confusion"].items()}
        # every seen task's 3 test images (batches of 2 and 1, dealt over the ranks)
        assert all(totals[name] == 3 for name in lb["adapters"])
        assert lb["confusion"] == la["confusion"] and lb["accuracy"] == la["accuracy"]
