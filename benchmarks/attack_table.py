"""The table of bad-input and fault cases (tests/test_attack.py) as a user would see it.

For each case: the exit code, the first line of the error the user saw (or of the report, for
check-data), whether a traceback reached the user and whether a run folder was left half-written.
Point ``--code`` at another checkout (a ``git worktree`` of an older commit) to get the "before"
column of the same table::

    git worktree add /tmp/before <commit>
    python benchmarks/attack_table.py --code /tmp/before > before.md
    python benchmarks/attack_table.py > after.md
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]


def _load_cases():
    spec = importlib.util.spec_from_file_location("cosam_attack", REPO / "tests" / "test_attack.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cosam_attack"] = mod
    spec.loader.exec_module(mod)
    return mod


def first_error_line(out: str, err: str) -> str:
    """The line a user reads first: the exception of a traceback, an 'error:' line, else stdout's."""
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    if any(ln.startswith("Traceback") for ln in lines):
        # the exception line is the last non-indented line of the traceback
        tail = [ln for ln in err.splitlines() if ln and not ln.startswith((" ", "\t"))]
        return tail[-1].strip() if tail else lines[-1]
    errors = [ln for ln in lines if ln.lower().startswith(("error", "warning"))]
    if errors:
        return errors[0]
    outs = [ln.strip() for ln in out.splitlines() if ln.strip()]
    if "Problems:" in outs and outs.index("Problems:") + 1 < len(outs):  # check-data's report
        return outs[outs.index("Problems:") + 1]
    return outs[-1] if outs else (lines[-1] if lines else "")


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", type=Path, default=REPO, help="checkout whose cosam to run")
    ap.add_argument("--only", nargs="*", default=None, help="case names to run")
    args = ap.parse_args(argv)
    mod = _load_cases()
    from cosam.data import make_synthetic_benchmark

    root = Path(tempfile.mkdtemp(prefix="cosam-attack-"))
    data = make_synthetic_benchmark(root / "tiny", n_train=2, n_test=1, n_probe=1, size=64)
    print(f"code: {args.code.resolve()}\n")
    print("| case | expected exit | exit | traceback | half-written | first line the user sees |")
    print("|---|---|---|---|---|---|")
    for case in mod.CASES:
        if args.only and case.name not in args.only:
            continue
        reason = mod.skip_reason(case)
        if reason:
            print(f"| {case.name} | {case.rc} | skipped | | | {reason} |")
            continue
        tmp = root / case.name
        tmp.mkdir()
        e = mod.prepare(case, data, tmp)
        e.code = args.code.resolve()
        if e.cwd == mod.REPO:
            e.cwd = e.code
        t0 = time.time()
        o = mod.execute(case, e)
        half = mod._half_written(e.res) if case.runs != "kept" else []
        line = (
            first_error_line(o.out, o.err).replace(str(tmp), "<tmp>").replace(str(data), "<data>")
        )
        line = line.replace("|", "\\|")[:180]
        tb = "yes" if "Traceback" in o.err else "no"
        print(
            f"| {case.name} | {case.rc} | {o.rc} | {tb} | {'yes' if half else 'no'} | {line} |",
            flush=True,
        )
        print(f"{case.name}: {time.time() - t0:.1f} s", file=sys.stderr)
        if e.prefix:
            mod.unlock(tmp)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
