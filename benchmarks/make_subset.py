"""Copy a deterministic subset of a cosam-mini data folder (for a GPU machine that cannot see ../shared).

    python benchmarks/make_subset.py ../shared/data/cosam-mini .carry/data/cosam-mini-subset \
        --train 16 --test 8 --probe 16

The subset is exactly what ``data.train_cap / test_cap / probe_cap`` select on the full folder
(:func:`cosam.data.benchmark.cap_samples`: the first N pairs of each domain and split ranked by
sha1("<domain>/<name>")), so a run on the subset with no caps equals a run on the full data with
those caps. Writes the filtered ``MANIFEST.tsv`` and ``SUBSET.json`` (the rule, the counts and a
content id: sha1 over every copied file's path and bytes), and prints the subset's name.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosam.data.benchmark import build_benchmark  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--train", type=int, default=16)
    ap.add_argument("--test", type=int, default=8)
    ap.add_argument("--probe", type=int, default=16)
    args = ap.parse_args()
    src, dst = Path(args.src).resolve(), Path(args.dst)
    bench = build_benchmark(src, train_cap=args.train, test_cap=args.test, probe_cap=args.probe)
    if dst.exists():
        shutil.rmtree(dst)
    files = []
    counts = {}
    for task in list(bench.tasks) + ([bench.probe] if bench.probe is not None else []):
        counts[task.name] = {"train": len(task.train), "test": len(task.test)}
        for s in list(task.train) + list(task.test):
            for f in (s.image, s.mask):
                rel = Path(f).resolve().relative_to(src)
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dst / rel)
                files.append(rel.as_posix())
    files.sort()
    h = hashlib.sha1()
    for rel in files:
        h.update(rel.encode())
        h.update(hashlib.sha1((dst / rel).read_bytes()).digest())
    keep = set(files)
    manifest = src / "MANIFEST.tsv"
    if manifest.is_file():
        lines = manifest.read_text().splitlines()
        head, rows = lines[0], lines[1:]
        col = head.split("\t").index("image")
        (dst / "MANIFEST.tsv").write_text(
            "\n".join([head] + [r for r in rows if r.split("\t")[col] in keep]) + "\n"
        )
    name = f"{src.name}-subset-t{args.train}-e{args.test}-p{args.probe}-{h.hexdigest()[:10]}"
    info = {
        "name": name,
        "source": str(src),
        "rule": (
            f"cosam.data.benchmark.cap_samples on {src.name}: train_cap={args.train}, test_cap={args.test}, "
            f"probe_cap={args.probe} (first N per domain and split by sha1('<domain>/<name>'))"
        ),
        "content_sha1": h.hexdigest(),
        "n_files": len(files),
        "bytes": sum((dst / rel).stat().st_size for rel in files),
        "counts": counts,
    }
    (dst / "SUBSET.json").write_text(json.dumps(info, indent=2) + "\n")
    print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
