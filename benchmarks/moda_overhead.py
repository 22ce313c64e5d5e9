"""MoDA's inference cost over its base, per image, from pixels (one frozen encoder pass).

For each base (HQ-SAM ``sequential``, ``decoder_tuning``, ``sam_adapter``) this times live
inference, :meth:`Strategy.predict_images` (image -> encoder -> mask), for the base alone and
for base + MoDA with a full pool of 8 adapters and a router over 8 tasks (the adapters are
copies of the initial state and the router is untrained: routing and adapter switching cost the
same whatever their values). Timings alternate base / MoDA in the same process (ABAB...), and
the ratio of medians is reported, since this machine is noisy.

    python benchmarks/moda_overhead.py                      # vit_t at 512 and 1024, batch 4
    python benchmarks/moda_overhead.py --sizes 512 --repeats 5 --bases sequential

Writes ``benchmarks/results/moda_overhead.csv`` (one row per base and size) and prints a markdown table.
``sam_adapter_moda`` needs two encoder passes by design (the query comes from the un-adapted
encoder, the mask from the routed adapter's), so its ratio is near 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosam.config import make_config  # noqa: E402
from cosam.data.prompts import Prompt  # noqa: E402
from cosam.io import write_csv  # noqa: E402
from cosam.methods import get_method  # noqa: E402
from cosam.methods.moda_router import ROUTERS  # noqa: E402
from cosam.report import markdown_table  # noqa: E402
from cosam.resources import build_model  # noqa: E402


class _Task:
    def __init__(self, i: int) -> None:
        self.name, self.task_id, self.train = f"T{i}", i, []


def fill_pool(moda, n: int = 8) -> None:
    """A pool of ``n`` adapters and an ``n``-way router, as after the last task."""
    state = {k: v.clone() for k, v in moda.base.method_state()["modules"].items()}
    moda.restore_pool([state for _ in range(n)], [_Task(i) for i in range(n)])
    moda.router = ROUTERS[moda.opts.router](
        moda.reader.query_dim, n, torch.Generator().manual_seed(0)
    ).to(moda.device)
    moda.eval()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--bases", nargs="+", default=["sequential", "decoder_tuning", "sam_adapter"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "moda_overhead.csv"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        cfg0 = make_config("cpu", {"model": {"image_size": size}, "progress": False})
        model = build_model(cfg0)
        gen = torch.Generator().manual_seed(0)
        images = torch.rand(args.batch, 3, size, size, generator=gen) * 255
        box = torch.tensor([size * 0.25, size * 0.25, size * 0.75, size * 0.6])
        prompts = [
            Prompt(kind="box", box=box, points=None, point_labels=None, mask=None)
            for _ in range(args.batch)
        ]
        tids = torch.zeros(args.batch, dtype=torch.long)
        for base in args.bases:
            strategies = {}
            for name in (base, f"{base}_moda"):
                cfg = make_config(
                    "cpu", {"method": name, "model": {"image_size": size}, "progress": False}
                )
                s = get_method(name)(model, cfg)
                if name.endswith("_moda"):
                    fill_pool(s)
                s.eval()
                strategies[name] = s
            times = {k: [] for k in strategies}
            with torch.no_grad():
                for _name, s in strategies.items():  # warm-up
                    s.predict_images(images, prompts, tids)
                for _ in range(args.repeats):
                    for name, s in strategies.items():
                        t0 = time.perf_counter()
                        s.predict_images(images, prompts, tids)
                        times[name].append((time.perf_counter() - t0) / args.batch)
            b, m = (statistics.median(times[k]) for k in strategies)
            rows.append(
                {
                    "backbone": model.backbone,
                    "size": size,
                    "base": base,
                    "base_s_per_image": b,
                    "moda_s_per_image": m,
                    "ratio": m / b,
                    "batch": args.batch,
                    "repeats": args.repeats,
                    "threads": torch.get_num_threads(),
                }
            )
            print(
                f"{model.backbone} {size}px {base}: base {b:.3f} s/img, +MoDA {m:.3f} s/img, ratio {m / b:.3f}",
                flush=True,
            )
    write_csv(Path(args.out), rows)
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
