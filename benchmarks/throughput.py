"""Throughput: images/s of training and evaluation per method, and of each SAM image encoder.

    python benchmarks/throughput.py                                   # GPU defaults (1024 px, bf16)
    python benchmarks/throughput.py --methods sequential,sequential_moda --steps 20
    python benchmarks/throughput.py --size 256 --steps 2 --time-encoders vit_t   # quick, CPU

Methods (``--methods``, a comma list; names not in ``cosam.methods.METHODS`` are skipped with a
message, so the MoDA variants are measured as soon as they exist). Each is timed through the
engine's own code (``cosam.engine.fit`` and ``cosam.evaluation.evaluate``) on synthetic tensors, so
what is measured is compute, not JPEG decoding:

* ``train_cached``: a training step on cached encoder features (the frozen-encoder protocol);
* ``train_live``: a step that also runs the encoder on the batch (the paper protocol, where
  large-scale jitter makes every batch new; SAM-Adapter-style methods always run this way);
* ``eval_cached`` / ``eval_live``: box-prompt evaluation with scoring (IoU and Boundary IoU at the
  original size), from cached features / from pixels.

``data_lsj`` times the CPU side of a paper-protocol step (read + decode + flip + large-scale
jitter of one image), which one process does serially: on a GPU it can bound the live step.

Encoders (``--encoders``): FLOPs of one forward at ``--encoder-size`` are *counted* with
``torch.utils.flop_counter.FlopCounterMode`` on the meta device (matmuls, convolutions and
attention products; element-wise work is not counted), for every name; ``--time-encoders``
are also timed (random weights; speed does not depend on them). Achieved TFLOP/s =
counted FLOPs x images/s; it is given as a fraction of the device's dense bf16 peak (spec sheet,
when the device is in :data:`BF16_PEAK_TFLOPS`) and of a measured large bf16 matmul.

Writes ``<out>/throughput_methods_<tag>.csv``, ``<out>/throughput_encoders_<tag>.csv`` and
``<out>/throughput_<tag>.md`` (the tables, naming the device and the date).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import logging
import platform
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosam import distributed  # noqa: E402
from cosam.accel import Accel, maybe_compile, resolve_device, resolve_precision, set_tf32  # noqa: E402
from cosam.config import make_config  # noqa: E402
from cosam.data.benchmark import Task  # noqa: E402
from cosam.engine import fit, make_prompts  # noqa: E402
from cosam.evaluation import EvalSet, evaluate  # noqa: E402
from cosam.methods import METHODS  # noqa: E402
from cosam.methods.base import Batch  # noqa: E402
from cosam.models.registry import BACKBONES, build_sam  # noqa: E402

log = logging.getLogger("throughput")

DEFAULT_METHODS = (
    "sequential,sequential_moda,decoder_tuning,decoder_tuning_moda,sam_adapter,sam_adapter_moda,"
    "lwf,ewc,replay,l2p,dualprompt,coda"
)
#: Dense (no sparsity) bf16 tensor-core peak in TFLOP/s from NVIDIA's spec sheets, by a substring
#: of torch.cuda.get_device_name(). First match wins, so the specific names come first.
BF16_PEAK_TFLOPS: Tuple[Tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
)


# ------------------------------------------------------------------------------------------------
# Devices, timing, memory
# ------------------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def spec_peak_tflops(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in BF16_PEAK_TFLOPS:
        if key in name:
            return peak
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float:
    """Peak device memory since the last reset (CUDA), else the process's peak RSS (monotone)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measured_matmul_tflops(device: torch.device, precision: str) -> float:
    """TFLOP/s of a large square matmul (bf16 8192^3 on CUDA; fp32 2048^3 on the CPU)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    if device.type == "cuda" and precision == "fp32":
        dtype = torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 10 if device.type == "cuda" else 2
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


# ------------------------------------------------------------------------------------------------
# Synthetic inputs
# ------------------------------------------------------------------------------------------------


def synthetic_batch(n: int, size: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(n,3,S,S) float images 0..255 and (n,1,S,S) float labels: one ellipse per image."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g) * 255.0
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    labels = []
    for _ in range(n):
        cx, cy = (torch.rand(2, generator=g) - 0.5) * 0.6
        rx, ry = 0.2 + 0.4 * torch.rand(2, generator=g)
        labels.append((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0).float())
    return images, torch.stack(labels)[:, None]


#: The methods are timed on the second of two tasks, where teachers (LwF), penalties (EWC), pools
#: and buffers are active: the steady-state cost of a step, not the first task's.
BENCH_TASK_ID = 1


class BenchSource:
    """The engine's TrainSource interface over in-memory tensors (one batch reused every step)."""

    def __init__(
        self,
        strategy: Any,
        cfg: Any,
        accel: Accel,
        images: torch.Tensor,
        labels: torch.Tensor,
        steps: int,
        live: bool,
    ) -> None:
        self.strategy, self.cfg, self.accel, self.live = strategy, cfg, accel, live
        self.dist = distributed.SINGLE
        self.images, self.labels, self.steps = images, labels, steps
        self.task_ids = torch.full((images.shape[0],), BENCH_TASK_ID, dtype=torch.long)
        if not live:
            with torch.no_grad(), accel.autocast():
                emb, interm = strategy.model.encode(accel.move(images))
            self.emb, self.interm = emb.float(), interm.float()

    def n_batches(self) -> int:
        return self.steps

    def batches(self, gen: torch.Generator) -> Iterator[Batch]:
        a = self.accel
        for _ in range(self.steps):
            prompts = make_prompts(self.labels, self.cfg, gen, self.strategy.model.mask_size)
            if self.live:
                images = a.move(self.images)  # host -> device each step, as a real batch
                with a.autocast():
                    emb, interm = self.strategy.encode(images)
            else:
                emb, interm, images = self.emb, self.interm, None
            yield Batch(
                emb, interm, a.move(self.labels), prompts, a.move(self.task_ids), images, gen
            )


def time_train(
    strategy: Any,
    cfg: Any,
    accel: Accel,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    warmup: int,
    live: bool,
) -> Tuple[float, float]:
    """(seconds per image, peak MiB) of training steps through ``cosam.engine.fit``."""
    gen = torch.Generator().manual_seed(0)
    fit(strategy, BenchSource(strategy, cfg, accel, images, labels, max(1, warmup), live), cfg, gen)
    sync(accel.device)
    reset_peak(accel.device)
    t0 = time.perf_counter()
    fit(strategy, BenchSource(strategy, cfg, accel, images, labels, steps, live), cfg, gen)
    sync(accel.device)
    return (time.perf_counter() - t0) / (steps * images.shape[0]), peak_mb(accel.device)


class _Store:
    """The SampleStore interface evaluate() uses for live encoding: sample i -> images[i]."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def get(self, i: int, keep_image: bool = False) -> SimpleNamespace:
        return SimpleNamespace(image=self.images[i])


def time_eval(
    strategy: Any,
    cfg: Any,
    accel: Accel,
    images: torch.Tensor,
    labels: torch.Tensor,
    reps: int,
    warmup: int,
    live: bool,
) -> Tuple[float, float]:
    """(seconds per image, peak MiB) of ``cosam.evaluation.evaluate`` on one set of the images."""
    n = images.shape[0]
    boxes = []
    for lab in labels:
        ys, xs = torch.nonzero(lab[0] > 0.5, as_tuple=True)
        boxes.append(torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float())
    gts = [lab[0] > 0.5 for lab in labels]
    es = EvalSet("bench", 0, list(range(n)), torch.stack(boxes), gts)
    if not live:
        with torch.no_grad(), accel.autocast():
            emb, interm = strategy.model.encode(accel.move(images))
        es.emb, es.interm = (
            emb.float().cpu(),
            interm.float().cpu(),
        )  # the engine keeps eval features on the host
    store = _Store(images)
    for _ in range(warmup):
        evaluate(strategy, [es], cfg, store, accel)
    sync(accel.device)
    reset_peak(accel.device)
    t0 = time.perf_counter()
    for _ in range(reps):
        evaluate(strategy, [es], cfg, store, accel)
    sync(accel.device)
    return (time.perf_counter() - t0) / (reps * n), peak_mb(accel.device)


def time_data_lsj(size: int, n: int, data_root: Optional[Path]) -> Tuple[float, str]:
    """Seconds per image of load + decode + flip + large-scale jitter (the live step's CPU side)."""
    from cosam.data.reader import load_pair
    from cosam.data.transforms import large_scale_jitter

    gen = torch.Generator().manual_seed(0)
    samples: List[Any] = []
    if data_root is not None and data_root.is_dir():
        from cosam.data.benchmark import build_benchmark

        bench = build_benchmark(data_root, train_cap=max(1, n // 8 + 1), include_probe=False)
        samples = [s for t in bench.tasks for s in t.train][:n]
    t0 = time.perf_counter()
    if samples:
        for s in samples:
            image, mask = load_pair(s)
            large_scale_jitter(image, mask, size, gen)
        return (time.perf_counter() - t0) / len(
            samples
        ), f"{len(samples)} images of {data_root.name}"
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (384, 512, 3), dtype=np.uint8)
    mask = np.zeros((384, 512), dtype=bool)
    mask[100:250, 150:400] = True
    for _ in range(n):
        large_scale_jitter(image, mask, size, gen)
    return (time.perf_counter() - t0) / n, "synthetic 512x384 arrays (no decode)"


# ------------------------------------------------------------------------------------------------
# The two benchmarks
# ------------------------------------------------------------------------------------------------


def bench_methods(
    args: argparse.Namespace,
    accel: Accel,
    rows: Optional[List[Dict[str, Any]]] = None,
    save: Any = None,
) -> List[Dict[str, Any]]:
    """Time every method in ``args.methods`` into ``rows`` (``save()`` after each method)."""
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    missing = [m for m in names if m not in METHODS]
    for m in missing:
        print(
            f"skipping method {m!r}: not in cosam.methods.METHODS ({', '.join(METHODS)})",
            flush=True,
        )
    names = [m for m in names if m in METHODS]
    model = build_sam(args.backbone, None, args.size, pretrained=False)
    model.to(accel.device)
    if args.compile:
        maybe_compile(model.image_encoder, True)
    images, labels = synthetic_batch(max(args.batch, args.eval_batch), args.size)
    tr_images, tr_labels = images[: args.batch], labels[: args.batch]
    ev_images, ev_labels = images[: args.eval_batch], labels[: args.eval_batch]
    rows = [] if rows is None else rows
    tasks = [Task(name=f"bench{i}", task_id=i, train=(), test=()) for i in range(BENCH_TASK_ID + 1)]
    for name in names:
        cfg = make_config(
            "paper",
            {
                "method": name,
                "progress": False,
                "device": str(accel.device),
                "model": {"backbone": args.backbone, "image_size": args.size},
                "train": {
                    "batch_size": args.batch,
                    "epochs": 1,
                    "precision": accel.precision,
                    "loss_points": args.loss_points,
                },
                "eval": {"batch_size": args.eval_batch},
            },
        )
        torch.manual_seed(0)
        try:
            strategy = METHODS[name](model, cfg).to(accel.device)
            exps = strategy.plan(tasks)
            for exp in exps[
                :-1
            ]:  # finish the earlier task(s) so the method's state is that of a later one
                strategy.before_task(exp)
                strategy.after_task(
                    exp,
                    BenchSource(
                        strategy, cfg, accel, tr_images, tr_labels, 1, strategy.needs_pixels
                    ),
                )
            strategy.before_task(exps[-1])
        except Exception as exc:
            print(f"{name}: setup FAILED {type(exc).__name__}: {exc}", flush=True)
            rows.append(
                {"method": name, "mode": "setup", "error": f"{type(exc).__name__}: {exc}"[:200]}
            )
            continue
        modes = [("train_live", True), ("eval_live", True)]
        if not strategy.needs_pixels:
            modes = [("train_cached", False)] + modes[:1] + [("eval_cached", False)] + modes[1:]
        for mode, live in modes:
            if name.endswith("_moda") and mode.startswith("eval"):
                if mode == "eval_cached":
                    # cached evaluation reads each image's token inputs from the block-input cache,
                    # which synthetic tensors do not have; moda_overhead.py times routed inference
                    print(
                        f"{name} eval_cached: skipped (see benchmarks/moda_overhead.py)", flush=True
                    )
                    continue
                from moda_overhead import fill_pool  # a full pool (8 adapters) and an 8-way router

                fill_pool(strategy)
            t_start = time.perf_counter()
            try:
                if mode.startswith("train"):
                    if not strategy.trains:
                        continue
                    s, mem = time_train(
                        strategy, cfg, accel, tr_images, tr_labels, args.steps, args.warmup, live
                    )
                    batch = args.batch
                else:
                    s, mem = time_eval(
                        strategy, cfg, accel, ev_images, ev_labels, max(1, args.steps // 4), 1, live
                    )
                    batch = args.eval_batch
            except Exception as exc:  # one method failing must not lose the others' numbers
                print(f"{name} {mode}: FAILED {type(exc).__name__}: {exc}", flush=True)
                rows.append(
                    {"method": name, "mode": mode, "error": f"{type(exc).__name__}: {exc}"[:200]}
                )
                continue
            rows.append(
                {
                    "method": name,
                    "mode": mode,
                    "images_per_s": 1.0 / s,
                    "ms_per_image": 1000.0 * s,
                    "peak_mem_mb": mem,
                    "batch": batch,
                    "size": args.size,
                    "backbone": args.backbone,
                    "precision": accel.precision,
                    "device": device_name(accel.device),
                    "compiled": bool(args.compile),
                    "wall_s": time.perf_counter() - t_start,
                }
            )
            print(
                f"{name:22s} {mode:13s} {1.0 / s:9.2f} img/s  {1000 * s:9.2f} ms/img  peak {mem:8.0f} MiB",
                flush=True,
            )
        del strategy
        if accel.is_cuda:
            torch.cuda.empty_cache()
        if save is not None:
            save()
    by = {(r["method"], r["mode"]): r for r in rows if "ms_per_image" in r}
    for r in rows:
        base = r["method"][: -len("_moda")] if r["method"].endswith("_moda") else None
        r["base_method"] = base or ""
        b = by.get((base, r["mode"])) if base else None
        r["overhead_vs_base"] = (
            (r["ms_per_image"] / b["ms_per_image"] - 1.0) if (b and "ms_per_image" in r) else ""
        )
    if args.data_lsj:
        s, what = time_data_lsj(args.size, args.data_lsj, Path(args.data) if args.data else None)
        rows.append(
            {
                "method": "(data)",
                "mode": "data_lsj",
                "images_per_s": 1.0 / s,
                "ms_per_image": 1000.0 * s,
                "size": args.size,
                "device": f"cpu, 1 process ({what})",
                "precision": "",
                "base_method": "",
                "overhead_vs_base": "",
            }
        )
        print(f"data: load + LSJ to {args.size} px: {1000 * s:.1f} ms/img ({what})", flush=True)
    return rows


def count_encoder_flops(name: str, size: int) -> Tuple[float, float]:
    """(GFLOPs of one image's forward, parameters in millions), counted on the meta device."""
    with torch.device("meta"):
        enc = BACKBONES[name].build_encoder(size)
        x = torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        enc(x)
    return fc.get_total_flops() / 1e9, sum(p.numel() for p in enc.parameters()) / 1e6


def time_encoder(
    name: str, size: int, batch: int, steps: int, warmup: int, accel: Accel, compile_: bool
) -> Tuple[float, float, float]:
    """(seconds per image, peak MiB, seconds of the first call) of the encoder's forward (no grad)."""
    with torch.device(
        accel.device
    ):  # random init on the device itself (vit_h has 637 M parameters)
        enc = BACKBONES[name].build_encoder(size).eval()
    enc.requires_grad_(False)
    if compile_:
        maybe_compile(enc, True)
    x = torch.randn(batch, 3, size, size, device=accel.device)
    sync(accel.device)
    t0 = time.perf_counter()
    with torch.no_grad(), accel.autocast():
        enc(x)
        sync(accel.device)
        first = time.perf_counter() - t0
        for _ in range(max(0, warmup - 1)):
            enc(x)
        sync(accel.device)
        reset_peak(accel.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            enc(x)
        sync(accel.device)
    s = (time.perf_counter() - t0) / (steps * batch)
    mem = peak_mb(accel.device)
    del enc, x
    if accel.is_cuda:
        torch.cuda.empty_cache()
    return s, mem, first


def bench_encoders(
    args: argparse.Namespace, accel: Accel, save: Any = None
) -> List[Dict[str, Any]]:
    """Count every encoder's FLOPs, then time the ``--time-encoders`` and last the compiled ones
    (``save(rows)`` after each, so a run stopped at a time limit keeps what it measured)."""
    rows: List[Dict[str, Any]] = []
    peak = spec_peak_tflops(accel.device) if accel.precision == "bf16" else None
    mm = measured_matmul_tflops(accel.device, accel.precision)
    print(f"large matmul: {mm:.1f} TFLOP/s; spec bf16 peak: {peak or 'unknown'}", flush=True)
    names = [e.strip() for e in args.encoders.split(",") if e.strip()]
    timed = [e.strip() for e in args.time_encoders.split(",") if e.strip()]
    compiled = [e.strip() for e in args.compile_encoders.split(",") if e.strip()]
    counted = {name: count_encoder_flops(name, args.encoder_size) for name in names}
    for name in names:
        if name not in timed + compiled:
            gflops, params = counted[name]
            rows.append(
                {
                    "encoder": name,
                    "size": args.encoder_size,
                    "params_m": params,
                    "gflops_per_image": gflops,
                    "device": device_name(accel.device),
                    "precision": accel.precision,
                    "note": "counted only",
                }
            )
            print(
                f"{name}: {params:.1f} M params, {gflops:.1f} GFLOP/image (not timed)", flush=True
            )
    jobs = [(n, False) for n in names if n in timed] + [(n, True) for n in names if n in compiled]
    for name, comp in jobs:
        gflops, params = counted[name]
        batch = (
            args.encoder_batch if name in ("vit_t", "vit_b") else max(1, args.encoder_batch // 2)
        )
        try:
            s, mem, first = time_encoder(
                name, args.encoder_size, batch, args.encoder_steps, args.warmup, accel, comp
            )
        except Exception as exc:
            print(f"{name}: FAILED {type(exc).__name__}: {exc}", flush=True)
            rows.append(
                {"encoder": name, "compiled": comp, "error": f"{type(exc).__name__}: {exc}"[:200]}
            )
            continue
        tflops = gflops * (1.0 / s) / 1e3
        rows.append(
            {
                "encoder": name,
                "size": args.encoder_size,
                "batch": batch,
                "params_m": params,
                "gflops_per_image": gflops,
                "images_per_s": 1.0 / s,
                "achieved_tflops": tflops,
                "spec_peak_tflops": peak or "",
                "frac_of_spec_peak": (tflops / peak) if peak else "",
                "matmul_tflops": mm,
                "frac_of_matmul": tflops / mm,
                "peak_mem_mb": mem,
                "first_call_s": first,
                "compiled": comp,
                "precision": accel.precision,
                "device": device_name(accel.device),
                "note": "random weights",
            }
        )
        print(
            f"{name}{' (compiled)' if comp else ''}: {1.0 / s:8.2f} img/s, {tflops:7.2f} TFLOP/s"
            f"{f' = {tflops / peak:.1%} of spec peak' if peak else ''}, {tflops / mm:.1%} of matmul, "
            f"peak {mem:.0f} MiB, first call {first:.1f} s",
            flush=True,
        )
        if save is not None:
            save(rows)
    return rows


def write_csv(path: Path, rows: List[Dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def fmt(v: Any, spec: str = ".1f") -> str:
    if v == "" or v is None:
        return ""
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def markdown(
    methods: List[Dict[str, Any]],
    encoders: List[Dict[str, Any]],
    accel: Accel,
    args: argparse.Namespace,
) -> str:
    lines = [
        f"Device: **{device_name(accel.device)}**, precision {accel.precision}, torch {torch.__version__}, "
        f"{dt.date.today().isoformat()}. Methods: {args.backbone} at {args.size} px, train batch {args.batch}, "
        f"eval batch {args.eval_batch}, synthetic tensors, random weights.",
        "",
    ]
    if methods:
        lines += [
            "| method | mode | images/s | ms/image | peak MiB | overhead vs base |",
            "|---|---|---|---|---|---|",
        ]
        for r in methods:
            if "error" in r:
                lines.append(f"| {r['method']} | {r['mode']} | failed: {r['error'][:60]} | | | |")
                continue
            ov = r.get("overhead_vs_base")
            lines.append(
                f"| {r['method']} | {r['mode']} | {fmt(r['images_per_s'], '.2f')} | {fmt(r['ms_per_image'])} "
                f"| {fmt(r.get('peak_mem_mb', ''), '.0f')} | {'' if ov in ('', None) else f'{ov:+.0%}'} |"
            )
        lines.append("")
    if encoders:
        lines += [
            "| encoder | px | params (M) | GFLOP/img (counted) | batch | images/s | TFLOP/s | of spec peak "
            "| of matmul | peak MiB | compiled |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in encoders:
            if "error" in r:
                lines.append(f"| {r['encoder']} | failed: {r['error'][:60]} |||||||||")
                continue
            f = r.get("frac_of_spec_peak", "")
            fm = r.get("frac_of_matmul", "")
            lines.append(
                f"| {r['encoder']} | {r['size']} | {fmt(r['params_m'])} | {fmt(r['gflops_per_image'])} "
                f"| {r.get('batch', '')} | {fmt(r.get('images_per_s', ''), '.2f')} "
                f"| {fmt(r.get('achieved_tflops', ''), '.2f')} | {'' if f == '' else f'{f:.1%}'} "
                f"| {'' if fm == '' else f'{fm:.1%}'} | {fmt(r.get('peak_mem_mb', ''), '.0f')} "
                f"| {r.get('compiled', '')} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--no-tf32", action="store_true")
    ap.add_argument(
        "--methods", default=DEFAULT_METHODS, help="comma list; unknown names are skipped"
    )
    ap.add_argument("--backbone", default="vit_t")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4, help="training batch (the paper's 4)")
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--loss-points", type=int, default=12544)
    ap.add_argument(
        "--steps", type=int, default=10, help="timed training steps (evaluation: steps/4 passes)"
    )
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--compile", action="store_true", help="torch.compile the encoder in the method benchmark"
    )
    ap.add_argument(
        "--data-lsj", type=int, default=32, help="images for the data-pipeline timing (0: skip)"
    )
    ap.add_argument(
        "--data", help="data root for the data-pipeline timing (default: synthetic arrays)"
    )
    ap.add_argument("--encoders", default="vit_t,vit_b,vit_l,vit_h", help="FLOPs counted for these")
    ap.add_argument(
        "--time-encoders",
        default=None,
        help="timed too (default: all on CUDA, vit_t,vit_b on the CPU)",
    )
    ap.add_argument(
        "--compile-encoders", default="", help="also time these compiled (torch.compile)"
    )
    ap.add_argument("--encoder-size", type=int, default=1024)
    ap.add_argument(
        "--encoder-batch", type=int, default=None, help="default 8 on CUDA, 1 on the CPU"
    )
    ap.add_argument(
        "--encoder-steps", type=int, default=None, help="default 10 on CUDA, 1 on the CPU"
    )
    ap.add_argument("--skip-methods", action="store_true")
    ap.add_argument("--skip-encoders", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument(
        "--tag", default=None, help="file-name tag (default: cuda device name or 'cpu')"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    accel = Accel(device, precision, set_tf32(not args.no_tf32, device))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    cuda = device.type == "cuda"
    if args.time_encoders is None:
        args.time_encoders = args.encoders if cuda else "vit_t,vit_b"
    args.encoder_batch = args.encoder_batch or (8 if cuda else 1)
    args.encoder_steps = args.encoder_steps or (10 if cuda else 1)
    tag = args.tag or (torch.cuda.get_device_name(device).replace(" ", "_") if cuda else "cpu")
    print(
        f"device {device_name(device)}, precision {precision}, tf32 {accel.tf32}, torch {torch.__version__}",
        flush=True,
    )
    t0 = time.perf_counter()
    out = Path(args.out)
    methods: List[Dict[str, Any]] = []

    def save(encoders: List[Dict[str, Any]]) -> None:  # written after each phase / encoder
        if methods:
            write_csv(out / f"throughput_methods_{tag}.csv", methods)
        if encoders:
            write_csv(out / f"throughput_encoders_{tag}.csv", encoders)
        (out / f"throughput_{tag}.md").write_text(markdown(methods, encoders, accel, args))

    if not args.skip_methods:
        bench_methods(args, accel, methods, lambda: save([]))
        save([])
    encoders = [] if args.skip_encoders else bench_encoders(args, accel, save)
    save(encoders)
    print("\n" + (out / f"throughput_{tag}.md").read_text())
    print(f"written to {out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
