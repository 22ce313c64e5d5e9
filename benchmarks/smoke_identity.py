"""Every method's smoke matrix with this checkout's code against another checkout's: byte-identical?

A restructuring that changes no numbers leaves every ``matrix.json`` byte-identical. This runs
each method once per checkout (``python -m cosam run --profile smoke``, three tasks so that the
regularisers act, one thread), then compares the files and prints how far each method's trained
rows moved from row 0 (a comparison of untrained matrices would prove little)::

    git worktree add /tmp/before <commit>
    python benchmarks/smoke_identity.py --before /tmp/before      # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
METHODS = (
    "zeroshot sequential lwf ewc replay l2p dualprompt coda decoder_tuning sam_adapter "
    "sequential_moda decoder_tuning_moda sam_adapter_moda joint decoder_tuning_joint "
    "sam_adapter_joint"
).split()


def run_all(code: Path, out: Path, methods: List[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    env.pop("COSAM_DATA", None)
    for m in methods:
        cmd = [sys.executable, "-m", "cosam", "run", "--method", m, "--profile", "smoke"]
        cmd += ["--order", "BSData,CAMO,Polyp", "--results-dir", str(out / "runs")]
        cmd += ["--set", f"cache_dir={out / 'cache'}", "--set", "threads=1"]
        cmd += ["--set", "progress=false"]
        p = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{m} failed with {code}:\n{p.stderr[-1500:]}", file=sys.stderr)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="the other checkout")
    ap.add_argument("--methods", nargs="*", default=METHODS)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="cosam-identity-"))
    run_all(args.before.resolve(), root / "before", args.methods)
    run_all(REPO, root / "after", args.methods)
    print("| method | matrix.json | trained rows moved from row 0 (IoU points, max) |")
    print("|---|---|---|")
    bad = 0
    for m in args.methods:
        a, b = (
            root / s / "runs" / "smoke" / f"{m}-custom-s0" / "matrix.json"
            for s in ("before", "after")
        )
        if not (a.is_file() and b.is_file()):
            print(f"| {m} | missing | |")
            bad += 1
            continue
        same = a.read_bytes() == b.read_bytes()
        bad += not same
        iou = json.loads(a.read_text())["iou"]
        moved = max((abs(v - r0) for row in iou[1:] for v, r0 in zip(row, iou[0])), default=0.0)
        print(f"| {m} | {'identical bytes' if same else 'DIFFERENT'} | {100 * moved:.1f} |")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
