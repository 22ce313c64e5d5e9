"""Feature cache: cost of later epochs relative to the first (cold-cache) epoch.

    python benchmarks/cache_speed.py [--images 32] [--epochs 4] [--size 512]

Epoch 1 encodes every image (cold cache) and trains; epochs 2.. only read cached features and
train. For comparison the same epochs are also timed with the encoder run on every batch (what a
cache-less loop pays). Ratios are measured in one process, on one machine, back to back.
Writes benchmarks/results/cache_speed.csv.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from cosam.config import make_config
from cosam.data.benchmark import build_benchmark
from cosam.engine import TrainSource, task_generator
from cosam.features import FeatureCache, SampleStore
from cosam.methods import get_method
from cosam.resources import build_model, resolve_data_root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--task", default="CAMO")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = make_config(
        "cpu",
        {
            "progress": False,
            "model": {"image_size": args.size},
            "train": {"epochs": 1},
            "data": {"train_cap": args.images},
        },
    )
    model = build_model(cfg)
    bench = build_benchmark(
        resolve_data_root(cfg), order=[args.task], train_cap=args.images, test_cap=1, probe_cap=1
    )
    samples = [(s, bench.tasks[0].task_id) for s in bench.tasks[0].train]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SampleStore(model.image_size)
        cache = FeatureCache(Path(tmp), model, progress=False)
        strategy = get_method("sequential")(model, cfg)
        opt = torch.optim.Adam(strategy.trainable_parameters(), 1e-4)
        gen = task_generator(0, 1)

        def train_epoch(source: TrainSource) -> None:
            for batch in source.batches(gen):
                logits = strategy.predict(
                    batch.embeddings, batch.interm, batch.prompts, batch.task_ids
                )
                loss = strategy.training_loss(batch, logits)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()

        for epoch in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            source = TrainSource(samples, strategy, cfg, cache, store)  # epoch 1 fills the cache
            train_epoch(source)
            rows.append({"mode": "cached", "epoch": epoch, "seconds": time.perf_counter() - t0})
        live_cfg = make_config(
            "cpu",
            {
                "progress": False,
                "model": {"image_size": args.size},
                "train": {"augment": "none", "cache_features": False},
            },
        )
        strategy.needs_pixels = True  # force the live path: encode on every batch
        strategy.cfg = live_cfg
        for epoch in range(1, 3):
            t0 = time.perf_counter()
            train_epoch(TrainSource(samples, strategy, live_cfg, cache, store))
            rows.append({"mode": "uncached", "epoch": epoch, "seconds": time.perf_counter() - t0})
    first = rows[0]["seconds"]
    later = [r["seconds"] for r in rows if r["mode"] == "cached" and r["epoch"] > 1]
    unc = [r["seconds"] for r in rows if r["mode"] == "uncached"]
    for r in rows:
        r["ratio_to_first"] = r["seconds"] / first
    out = Path(__file__).parent / "results" / "cache_speed.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(
        f"{args.images} images of {args.task} at {args.size} px, backbone {model.backbone}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"epoch 1 (cold cache, encodes): {first:.1f} s")
    print(
        f"later cached epochs: {', '.join(f'{s:.1f}' for s in later)} s  -> {max(later) / first:.1%} of epoch 1 (max)"
    )
    print(f"uncached epochs (encoder every batch): {', '.join(f'{s:.1f}' for s in unc)} s")
    print(f"written {out}")


if __name__ == "__main__":
    main()
