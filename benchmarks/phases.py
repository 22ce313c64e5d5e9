"""Phase timings and the speed levers of issue 16, as ratios measured in one process.

    OMP_NUM_THREADS=2 python benchmarks/phases.py                  # vit_t, 512 px, batch 4 (~3 min)
    python benchmarks/phases.py --rounds 3 --eval-images 8         # quicker

Every lever is timed against its baseline *in the same process*, the variants alternating
round by round; a lever's speed-up is the median over rounds of (baseline seconds / variant
seconds) of that round, which cancels most of the load of a shared machine (absolute seconds
are printed too, but are not comparable between runs). Variants (``cosam.models.fastpath``):

* ``reference``: every lever off (the literal implementation);
* ``+readers``: the one-way HQ token computed apart from SAM's tokens (no autograd through
  SAM's frozen transformer and upscaling);
* ``+layernorm``: also the fused LayerNorm2d and channels-last convolutions;
* ``fast``: also the HQ fusion heads folded into the token (all levers: the default);
* ``fast+bf16``: the fast path under CPU bf16 autocast (opt-in ``train.precision=bf16``; not
  equivalent: it moves gradients and scores, see benchmarks/README.md).

Phases: ``encode`` (vit_t forward, no lever), ``train_step`` (``sequential`` on cached features,
forward + loss + backward + Adam step, batch 4), ``train_step_l2p`` (the prompt methods' path:
only the LayerNorm lever applies), ``eval_pass`` (``cosam.evaluation.evaluate`` with scoring on
``--eval-images`` box prompts at varied original sizes, ground truths 300-1100 px a side;
variants ``reference``, ``+metrics`` (reference model, fast Boundary IoU), ``fast`` (everything,
the ground-truth boundary bands computed afresh: a run's first evaluation) and
``fast_cached_gt`` (the bands cached: the run's later evaluations)), ``moda_capture`` (an
encoder pass that also captures MoDA's block inputs, as the feature-cache pass now does when a
MoDA run reads them, against a plain one: the cost that replaced a second pass) and
``sam_adapter_step`` (a SAM-Adapter training step, live encoder with adapters; ``fast``: its
frozen stem memoised, as in every epoch after a task's first, and all levers). The steps and
the evaluation forward are also counted in
FLOPs (``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions, attention; the
element-wise work is not counted) and given as achieved GFLOP/s against this machine's measured
fp32 matmul rate (a 1024³ matmul, same threads, same moment).

Writes ``--out`` (default ``benchmarks/results/phases.csv``): one row per phase and variant.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from throughput import synthetic_batch  # noqa: E402

from cosam import metrics  # noqa: E402
from cosam.accel import Accel  # noqa: E402
from cosam.config import make_config  # noqa: E402
from cosam.data.prompts import Prompt  # noqa: E402
from cosam.engine import make_prompts  # noqa: E402
from cosam.evaluation import EvalSet, evaluate  # noqa: E402
from cosam.methods import METHODS  # noqa: E402
from cosam.methods.base import Batch  # noqa: E402
from cosam.models.fastpath import reference_path  # noqa: E402
from cosam.models.registry import build_sam  # noqa: E402

#: (variant name, levers switched back to the reference); cumulative, in the issue's order.
TRAIN_VARIANTS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("reference", ("readers", "layernorm", "fold")),
    ("+readers", ("layernorm", "fold")),
    ("+layernorm", ("fold",)),
    ("fast", ()),
)


def matmul_gflops(n: int = 1024, reps: int = 5) -> float:
    """GFLOP/s of an fp32 n³ matmul on this machine now (best of ``reps``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        a @ b
        best = min(best, time.process_time() - t0)
    return 2 * n**3 / best / 1e9


def count_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of one call of ``fn`` (FlopCounterMode: matmul, conv, attention, forward and backward)."""
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def alternate(
    variants: Dict[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> Dict[str, List[float]]:
    """CPU seconds of each variant per round, the variants run back to back in every round.

    CPU time of this process (``time.process_time``), not wall time: on a shared machine other
    processes stretch the wall clock but hardly this process's own CPU seconds (with one
    thread, ``--threads 1``, the default, it is the compute time itself).
    """
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {k: [] for k in variants}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(list(variants)))
        for k in order:
            t0 = time.process_time()
            variants[k]()
            times[k].append(time.process_time() - t0)
    return times


def ratio_rows(
    phase: str,
    times: Dict[str, List[float]],
    base: str,
    flops: Dict[str, float],
    peak: float,
    note: str = "",
) -> List[Dict[str, Any]]:
    """CSV rows: per variant the median seconds and the median of per-round ratios to ``base``."""
    rows = []
    for k, ts in times.items():
        ratios = [b / t for b, t in zip(times[base], ts)]
        med = statistics.median(ts)
        f = flops.get(k)
        rows.append(
            {
                "phase": phase,
                "variant": k,
                "median_s": round(med, 4),
                "speedup_vs_" + "baseline": round(statistics.median(ratios), 3),
                "ratio_min": round(min(ratios), 3),
                "ratio_max": round(max(ratios), 3),
                "rounds": len(ts),
                "gflop": round(f / 1e9, 2) if f else "",
                "achieved_gflops": round(f / 1e9 / med, 1) if f else "",
                "fraction_of_matmul": round(f / 1e9 / med / peak, 3) if f else "",
                "note": note,
            }
        )
        print(
            f"{phase:16s} {k:11s} {med:8.3f} s  x{statistics.median(ratios):5.2f} "
            f"[{min(ratios):.2f}-{max(ratios):.2f}]"
            + (f"  {f / 1e9:7.2f} GFLOP  {f / 1e9 / med:6.1f} GFLOP/s" if f else ""),
            flush=True,
        )
    return rows


def make_strategy(name: str, model: Any, batch: int) -> Tuple[Any, Any]:
    cfg = make_config(
        "cpu", {"method": name, "progress": False, "train": {"batch_size": batch, "epochs": 1}}
    )
    torch.manual_seed(0)
    strategy = METHODS[name](model, cfg)
    # A trained-looking branch: the zero-initialised last layers would make some gradients trivial.
    with torch.no_grad():
        for p in strategy.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.02)
    strategy.train()
    return strategy, cfg


def train_step_fn(
    strategy: Any,
    cfg: Any,
    emb: torch.Tensor,
    interm: torch.Tensor,
    labels: torch.Tensor,
    levers_off: Sequence[str],
    bf16: bool = False,
) -> Callable[[], float]:
    """One engine-like training step (predict, loss, backward, Adam) with ``levers_off`` slow;
    ``bf16``: forward and loss under CPU bf16 autocast (``train.precision=bf16``, as ``fit``)."""
    params = strategy.trainable_parameters()
    opt = torch.optim.Adam(params, lr=0.0)  # lr 0: every call sees the same weights
    gen = torch.Generator().manual_seed(0)
    prompts = make_prompts(labels, cfg, gen, strategy.model.mask_size)
    tids = torch.ones(labels.shape[0], dtype=torch.long)

    def step() -> float:
        with reference_path(*levers_off, enabled=bool(levers_off)):
            batch = Batch(
                emb, interm, labels, prompts, tids, None, torch.Generator().manual_seed(1)
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = strategy.predict(emb, interm, prompts, tids)
                loss = strategy.training_loss(batch, logits.float())["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return float(loss.detach())

    return step


def eval_set(model: Any, n: int, seed: int = 0) -> EvalSet:
    """``n`` synthetic test images with ellipse ground truths at varied original sizes."""
    images, labels = synthetic_batch(n, model.image_size, seed)
    g = torch.Generator().manual_seed(seed)
    gts, boxes = [], []
    for lab in labels:
        h, w = (int(x) for x in torch.randint(300, 1100, (2,), generator=g))
        gt = torch.nn.functional.interpolate(lab[None], size=(h, w), mode="nearest")[0, 0] > 0.5
        gts.append(gt)
        ys, xs = torch.nonzero(lab[0] > 0.5, as_tuple=True)
        boxes.append(torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float())
    es = EvalSet("bench", 0, list(range(n)), torch.stack(boxes), gts)
    with torch.no_grad():
        es.emb, es.interm = model.encode(images)
    return es


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--weights",
        default=str(REPO.parent / "shared" / "weights"),
        help="folder with minisam_vit_t.pth",
    )
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (CPU seconds are exact with 1)"
    )
    ap.add_argument("--eval-images", type=int, default=16)
    ap.add_argument(
        "--phases",
        default="encode,train_step,train_step_l2p,eval_pass,moda_capture,sam_adapter_step",
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "phases.csv"))
    args = ap.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    torch.set_num_threads(args.threads)
    weights = Path(args.weights)
    pretrained = (weights / "minisam_vit_t.pth").is_file()
    model = build_sam(
        "vit_t",
        image_size=args.size,
        pretrained=pretrained,
        weights_dir=weights if pretrained else None,
    ).freeze()
    peak = matmul_gflops()
    print(
        f"vit_t {'pretrained' if pretrained else 'RANDOM weights'} at {args.size} px, batch {args.batch}, "
        f"{torch.get_num_threads()} threads; fp32 matmul 1024^3: {peak:.1f} GFLOP/s",
        flush=True,
    )
    images, labels = synthetic_batch(args.batch, args.size)
    with torch.no_grad():
        emb, interm = model.encode(images)
    rows: List[Dict[str, Any]] = []

    if "encode" in phases:

        def enc() -> None:
            with torch.no_grad():
                model.encode(images)

        f = count_flops(enc)
        rows += ratio_rows(
            "encode",
            alternate({"reference": enc}, max(3, args.rounds // 2)),
            "reference",
            {"reference": f},
            peak,
            note=f"batch {args.batch}, no lever",
        )

    for phase, method in (("train_step", "sequential"), ("train_step_l2p", "l2p")):
        if phase not in phases:
            continue
        strategy, cfg = make_strategy(method, model, args.batch)
        variants = (
            TRAIN_VARIANTS if method == "sequential" else (TRAIN_VARIANTS[0], TRAIN_VARIANTS[-1])
        )
        fns = {k: train_step_fn(strategy, cfg, emb, interm, labels, off) for k, off in variants}
        fns["fast+bf16"] = train_step_fn(strategy, cfg, emb, interm, labels, (), bf16=True)
        flops = {k: count_flops(fn) for k, fn in fns.items()}
        rows += ratio_rows(
            phase,
            alternate(fns, args.rounds),
            "reference",
            flops,
            peak,
            note=f"{method}, batch {args.batch}, cached features",
        )

    if "eval_pass" in phases:
        strategy, cfg = make_strategy("sequential", model, args.batch)
        strategy.eval()
        es = eval_set(model, args.eval_images)

        def ev_ref() -> None:
            with reference_path(), metrics.reference_metrics():
                es.gt_boundaries = None
                evaluate(strategy, [es], cfg, None)

        def ev_metrics() -> None:  # the model at the reference, the fast metrics (band cache warm)
            with reference_path():
                evaluate(strategy, [es], cfg, None)

        def ev_fast() -> None:
            es.gt_boundaries = None  # the first pass of a run fills the boundary cache ...
            evaluate(strategy, [es], cfg, None)

        def ev_fast_cached() -> None:  # ... every later pass (9 per run) reuses it
            evaluate(strategy, [es], cfg, None)

        def ev_bf16() -> None:  # opt-in train.precision=bf16 (CPU autocast), boundary cache warm
            evaluate(strategy, [es], cfg, None, accel=Accel(torch.device("cpu"), "bf16"))

        def fwd(ref: bool) -> Callable[[], None]:
            def f() -> None:  # the evaluation's forward alone (for the FLOP count)
                bs = cfg.eval.batch_size
                with torch.no_grad(), reference_path(enabled=ref):
                    for s in range(0, len(es.samples), bs):
                        pr = [
                            Prompt(kind="box", box=b, points=None, point_labels=None, mask=None)
                            for b in es.boxes[s : s + bs]
                        ]
                        tids = torch.zeros(len(pr), dtype=torch.long)
                        strategy.predict(es.emb[s : s + bs], es.interm[s : s + bs], pr, tids)

            return f

        # FlopCounterMode's module hooks trip over views of trainable leaves under no_grad
        params = strategy.trainable_parameters()
        strategy.requires_grad_(False)
        flops = {"reference": count_flops(fwd(True)), "fast": count_flops(fwd(False))}
        for p in params:
            p.requires_grad_(True)
        flops["fast_cached_gt"] = flops["fast"]
        flops["+metrics"] = flops["reference"]
        flops["fast+bf16"] = flops["fast"]
        times = alternate(
            {
                "reference": ev_ref,
                "+metrics": ev_metrics,
                "fast": ev_fast,
                "fast_cached_gt": ev_fast_cached,
                "fast+bf16": ev_bf16,
            },
            max(3, args.rounds // 2),
        )
        rows += ratio_rows(
            "eval_pass",
            times,
            "reference",
            flops,
            peak,
            note=f"sequential, {args.eval_images} images, scoring included (FLOPs: forward only)",
        )

    if "moda_capture" in phases:
        # MoDA's block-input cache used to be filled by a second encoder pass per image; the
        # feature-cache pass now captures the inputs (FeatureCache.capture_blocks), which costs
        # only the hooks. "encode+capture" against "encode": that pass against a plain one.
        from cosam.models.tokens import capture

        def enc_plain() -> None:
            with torch.no_grad():
                model.encode(images)

        def enc_capture() -> None:
            with torch.no_grad(), capture(model.image_encoder) as inputs:
                model.encode(images)
            del inputs

        rows += ratio_rows(
            "moda_capture",
            alternate(
                {"encode": enc_plain, "encode+capture": enc_capture}, max(3, args.rounds // 2)
            ),
            "encode",
            {},
            peak,
            note="capture in the feature-cache pass (replaces a separate re-encode)",
        )

    if "sam_adapter_step" in phases:
        strategy, cfg = make_strategy("sam_adapter", model, args.batch)
        params = strategy.trainable_parameters()
        opt = torch.optim.Adam(params, lr=0.0)
        prompts = make_prompts(labels, cfg, torch.Generator().manual_seed(0), model.mask_size)
        tids = torch.ones(args.batch, dtype=torch.long)

        def sa_step(ref: bool) -> Callable[[], None]:
            def step() -> None:
                with reference_path("stem", enabled=ref):
                    e, m = strategy.encode(images)
                    batch = Batch(
                        e, m, labels, prompts, tids, images, torch.Generator().manual_seed(1)
                    )
                    loss = strategy.training_loss(
                        batch, strategy.predict(e, m, prompts, tids).float()
                    )["loss"]
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

            return step

        fns = {
            "reference": sa_step(True),
            "fast": sa_step(False),
        }  # fast: the stem memo is warm after warm-up
        rows += ratio_rows(
            "sam_adapter_step",
            alternate(fns, max(3, args.rounds // 2)),
            "reference",
            {k: count_flops(f) for k, f in fns.items()},
            peak,
            note="live encode with adapters; fast: stem memo (an epoch after the first)",
        )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    keys: List[str] = []
    for r in rows:
        r.update(
            {
                "date": stamp,
                "threads": torch.get_num_threads(),
                "size": args.size,
                "weights": "minisam_vit_t" if pretrained else "random",
                "matmul_gflops": round(peak, 1),
            }
        )
        keys += [k for k in r if k not in keys]
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
