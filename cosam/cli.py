"""Command line: ``python -m cosam {run,study,sweep,aggregate,tables,archive,tune,check-data,methods}``.

python -m cosam run --method sequential --order shuffled --seed 0 --profile cpu
python -m cosam run --method joint --set train.epochs=2 --set data.train_cap=16
python -m cosam study                      # zero-shot + sequential + joint, cpu profile
python -m cosam sweep --methods sequential lwf --seeds 0 1 2 3 4 --orders paper reverse shuffled
python -m cosam sweep ... --print-commands # one independent `cosam run` command per run
python -m cosam aggregate                  # mean ± std tables of whatever has finished
python -m cosam tune --method sequential --grid train.lr=1e-4,3e-4,1e-3   # choose on validation
python -m cosam check-data /path/to/data   # validate a folder in the benchmark layout
python -m cosam check-data /path/to/data --layout my_domains.yaml   # ... or in a YAML domain list
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from .commands import (
    STUDY_METHODS,
    cmd_aggregate,
    cmd_archive,
    cmd_check_data,
    cmd_methods,
    cmd_run,
    cmd_study,
    cmd_sweep,
    cmd_tables,
    cmd_tune,
)
from .config import PROFILES
from .errors import CosamError


def grid_args(p: argparse.ArgumentParser, out: str, out_help: str, gft_help: str) -> None:
    """The 3-seed grid options that ``tables`` and ``archive`` share (``common`` adds the rest)."""
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--orders", nargs="+", default=["paper"])
    p.add_argument("--out", default=out, help=out_help)
    p.add_argument("--no-gft", action="store_true", help=gft_help)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cosam", description="Continual adaptation of SAM (CoSAM / MoDA)."
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser, axes: bool = True, force: bool = True) -> None:
        sp.add_argument("--profile", default="cpu", choices=list(PROFILES))
        if axes:
            sp.add_argument(
                "--order", help="paper | reverse | shuffled | comma-separated task names"
            )
            sp.add_argument("--seed", type=int)
        sp.add_argument(
            "--data",
            help="data root (default: $COSAM_DATA, ../shared/data/cosam-mini, else synthetic)",
        )
        sp.add_argument("--backbone", help="vit_t | litemedsam | vit_b | vit_l | vit_h")
        sp.add_argument("--results-dir", dest="results_dir")
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="config override, e.g. train.epochs=3",
        )
        if force:
            sp.add_argument(
                "--force", action="store_true", help="rerun even if a finished run exists"
            )

    r = sub.add_parser("run", help="run one method over the task sequence")
    r.add_argument(
        "--method",
        required=True,
        help="a method (cosam methods) or BASE+PLUGIN, e.g. decoder_tuning+ewc",
    )
    common(r)
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("study", help="the default study: zero-shot, sequential, joint")
    s.add_argument("--methods", nargs="+", default=list(STUDY_METHODS))
    common(s)
    s.set_defaults(fn=cmd_study)
    w = sub.add_parser(
        "sweep", help="every method x seed x order as its own run, then mean ± std tables"
    )
    w.add_argument("--methods", nargs="+", required=True)
    w.add_argument("--seeds", nargs="+", type=int, default=[0])
    w.add_argument(
        "--orders", nargs="+", default=["paper"], help="named orders: paper reverse shuffled"
    )
    w.add_argument(
        "--print-commands",
        action="store_true",
        help="print one independent `python -m cosam run` command per run instead of running",
    )
    w.add_argument("--out", help="aggregate folder (default <results_dir>/<profile>/sweep)")
    w.add_argument(
        "--launcher",
        choices=("inprocess", "submitit"),
        default="inprocess",
        help="inprocess (default: every run in this process, one model and feature cache) or "
        "submitit (one job per run: Slurm on a cluster, subprocesses locally)",
    )
    w.add_argument(
        "--cluster",
        default="local",
        choices=("local", "slurm", "debug", "auto"),
        help="submitit's executor (with --launcher submitit; auto = slurm when sbatch exists)",
    )
    w.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="local submitit jobs at once (a cluster's scheduler takes every job at once)",
    )
    w.add_argument(
        "--launcher-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="submitit executor parameter, e.g. partition=gpu, gpus_per_node=1, time=600 (Slurm) "
        "or timeout_min=60 (local)",
    )
    w.add_argument(
        "--submitit-folder", help="submitit's job files and logs (default <out>/submitit)"
    )
    common(w, axes=False)
    w.set_defaults(fn=cmd_sweep)
    a = sub.add_parser(
        "aggregate",
        help="mean ± std tables of a sweep's finished runs (grid from sweep.json, "
        "else the given lists, else the run folders)",
    )
    a.add_argument("--methods", nargs="+")
    a.add_argument("--seeds", nargs="+", type=int)
    a.add_argument("--orders", nargs="+")
    a.add_argument("--out", help="aggregate folder (default <results_dir>/<profile>/sweep)")
    common(a, axes=False, force=False)
    a.set_defaults(fn=cmd_aggregate)
    t = sub.add_parser(
        "tables",
        help="table2.csv and claims.csv (claims judged over seeds) from a grid's finished runs",
    )
    grid_args(
        t,
        "results/tables",
        "folder for table2.csv, claims.csv, claims.md",
        "skip the GFT-separation claim (it re-reads every MoDA run's test queries)",
    )
    common(t, axes=False, force=False)
    t.set_defaults(fn=cmd_tables)
    v = sub.add_parser(
        "archive",
        help="copy a grid's finished runs, without their saved state, into a folder small enough "
        "to commit (tables read it as a results dir)",
    )
    grid_args(
        v,
        "results/archive",
        "the archive's root folder",
        "do not compute and store the MoDA runs' GFT silhouettes first",
    )
    common(v, axes=False, force=False)
    v.set_defaults(fn=cmd_archive)
    u = sub.add_parser(
        "tune", help="choose a method's settings on the validation split from a small grid"
    )
    u.add_argument("--method", required=True)
    u.add_argument(
        "--grid",
        action="append",
        default=[],
        required=True,
        metavar="KEY=V1,V2",
        help="a config key and its values, e.g. train.lr=1e-4,3e-4,1e-3 (repeat for a product grid)",
    )
    u.add_argument(
        "--criterion",
        default="last_iou",
        choices=["last_iou", "avg_iou"],
        help="validation score to maximise (default last_iou: mean IoU over tasks after the last one)",
    )
    common(u)
    u.set_defaults(fn=cmd_tune)
    c = sub.add_parser(
        "check-data", help="validate a data folder in the benchmark layout or a YAML domain list"
    )
    c.add_argument(
        "root", nargs="?", help="the data folder (optional with a --layout file that sets 'root')"
    )
    c.add_argument(
        "--layout",
        default="cosam-mini",
        help="cosam-mini | cosam-original | a YAML/JSON domain list (see README: Your own domains)",
    )
    c.add_argument("--allow-nonbinary", action="store_true")
    c.set_defaults(fn=cmd_check_data)
    m = sub.add_parser("methods", help="list the methods")
    m.set_defaults(fn=cmd_methods)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO
        if args.verbose or args.cmd in ("run", "study", "sweep", "tune")
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.fn(args)
    except CosamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (
        OSError
    ) as exc:  # a file-system error no check above foresaw: still one line, no traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"error: cannot access{where}: {exc.strerror or exc}; fix the file's permissions or path, or choose "
            f"another folder (rerun with -v and report it if the cause is unclear)",
            file=sys.stderr,
        )
        if args.verbose:
            raise
        return 2


if __name__ == "__main__":
    sys.exit(main())
