"""Command line: ``python -m cosam {run,study,sweep,aggregate,tables,tune,check-data,methods}``.

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
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .config import PROFILES, location_overrides, make_config
from .errors import CosamError

if TYPE_CHECKING:
    from .sweep import SweepSpec

log = logging.getLogger("cosam")

STUDY_METHODS = ("zeroshot", "sequential", "joint")


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    o = location_overrides(args.data, args.results_dir, args.backbone)
    if getattr(args, "method", None):
        o["method"] = args.method
    if getattr(args, "seed", None) is not None:
        o["seed"] = args.seed
    if getattr(args, "order", None):
        o.setdefault("data", {})["order"] = (
            args.order if "," not in args.order else args.order.split(",")
        )
    return o


def cmd_run(args: argparse.Namespace) -> int:
    cfg = make_config(
        args.profile, _overrides(args), args.set
    )  # a bad value fails before the engine loads
    from .engine import run

    t0 = time.perf_counter()
    path = run(cfg, force=args.force)
    from .distributed import info

    if not info().is_main:  # under torchrun rank 0 reports
        return 0
    _print_run(path)
    print(f"run folder: {path}  ({time.perf_counter() - t0:.0f} s)")
    return 0


def _print_run(path: Path) -> None:
    from .report import load_run, markdown_table, matrix_markdown, summary_rows

    rec = load_run(path)
    print(
        f"\n{rec.method} — {'SYNTHETIC DATA' if rec.synthetic else 'real data'} — IoU matrix (%):"
    )
    print(matrix_markdown(rec.matrix))
    print(
        markdown_table(
            summary_rows([rec]),
            ["method", "last_iou", "avg_iou", "ff_iou", "last_biou", "avg_biou", "ff_biou"],
            pct=["last_iou", "avg_iou", "ff_iou", "last_biou", "avg_biou", "ff_biou"],
        )
    )


def run_study(
    profile: str,
    methods: Sequence[str],
    overrides: Dict[str, Any],
    dotted: Sequence[str] = (),
    force: bool = False,
    out_dir: Optional[Path] = None,
) -> Path:
    """Run ``methods`` on one profile in one process (shared model and feature cache), then
    write ``study.md``, ``summary.csv``, ``per_domain.csv`` and ``timing.csv`` into ``out_dir``."""
    from .engine import Context, run
    from .io import write_csv, write_text
    from .report import (
        data_label,
        load_run,
        markdown_table,
        matrix_markdown,
        per_domain_rows,
        summary_rows,
    )

    ctx = Context()
    runs = {}
    t_all = time.perf_counter()
    walls = {}
    for m in methods:
        cfg = make_config(profile, {**overrides, "method": m}, dotted)
        t0 = time.perf_counter()
        runs[m] = load_run(run(cfg, force=force, ctx=ctx))
        walls[m] = time.perf_counter() - t0
        log.info("%s finished in %.0f s", m, walls[m])
    wall = time.perf_counter() - t_all
    first = next(iter(runs.values()))
    out = Path(out_dir) if out_dir else first.path.parent / "study"
    from .distributed import info

    if not info().is_main:  # under torchrun only rank 0 writes
        return out
    recs = list(runs.values())
    summary = summary_rows(recs)
    per_domain = per_domain_rows(runs.get("zeroshot"), runs.get("sequential"), runs.get("joint"))
    timing = [
        {
            "method": m,
            "wall_s": walls[m],
            "encode_s": r.timing.get("encode_s"),
            "train_s": r.timing.get("train_s"),
            "eval_s": r.timing.get("eval_s"),
        }
        for m, r in runs.items()
    ]
    write_csv(out / "summary.csv", summary)
    write_csv(out / "per_domain.csv", per_domain)
    write_csv(out / "timing.csv", timing)
    pct = [k for k in summary[0] if k.endswith(("_iou", "_biou")) or k.startswith("probe")]
    res = first.meta["resolved"]
    text = [
        f"# cosam study — profile `{profile}`",
        "",
        f"Data: **{data_label(recs)}**. Backbone `{res['backbone']}` at {res['image_size']} px "
        f"(`{res['checkpoint']}`); order {', '.join(res['order'])}; seed {first.meta['config']['seed']}.",
        "",
        "## Last / Avg / FF (IoU and BIoU, %)",
        "",
        markdown_table(summary, pct=pct),
        "## Per task (IoU, %): zero-shot; sequential just before and right after its own task, "
        "and after the last task; joint",
        "",
        markdown_table(
            per_domain,
            pct=[
                "zero_shot",
                "sequential_before_own",
                "sequential_own",
                "sequential_last",
                "forgetting",
                "joint",
            ],
        ),
    ]
    if "sequential" in runs:
        text += [
            "## Sequential task matrix (IoU, %)",
            "",
            matrix_markdown(runs["sequential"].matrix),
        ]
    text += ["## Time (s)", "", markdown_table(timing + [{"method": "total", "wall_s": wall}]), ""]
    write_text(out / "study.md", "\n".join(text))
    return out


def cmd_study(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = run_study(args.profile, args.methods, _overrides(args), args.set, args.force)
    from .distributed import info

    if not info().is_main:
        return 0
    print((out / "study.md").read_text())
    print(f"study written to {out}  ({time.perf_counter() - t0:.0f} s)")
    return 0


def _sweep_spec(args: argparse.Namespace) -> "SweepSpec":
    from .sweep import SweepSpec

    return SweepSpec(
        profile=args.profile,
        methods=args.methods or [],
        seeds=args.seeds or [],
        orders=args.orders or [],
        data=args.data,
        backbone=args.backbone,
        results_dir=args.results_dir,
        dotted=args.set,
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import run_sweep, sweep_commands

    spec = _sweep_spec(args)
    if args.print_commands:
        for line in sweep_commands(spec, force=args.force):
            print(line)
        out = Path(args.out) if args.out else None
        print(f"# then, from the same folder: {spec.aggregate_command(out)}", file=sys.stderr)
        return 0
    t0 = time.perf_counter()
    out_arg = Path(args.out) if args.out else None
    if args.launcher == "submitit":
        from .launch import launch_sweep, parse_options

        outcomes, out = launch_sweep(
            spec,
            cluster=args.cluster,
            parallel=args.parallel,
            options=parse_options(args.launcher_opt),
            force=args.force,
            out=out_arg,
            folder=Path(args.submitit_folder) if args.submitit_folder else None,
        )
    else:
        outcomes, out = run_sweep(spec, force=args.force, out=out_arg)
    print((out / "sweep.md").read_text())
    counts: Dict[str, int] = {}
    for oc in outcomes:
        counts[oc.status] = counts.get(oc.status, 0) + 1
    print(
        f"sweep: {len(outcomes)} runs ({', '.join(f'{n} {k}' for k, n in counts.items())}); "
        f"aggregate written to {out}  ({time.perf_counter() - t0:.0f} s)"
    )
    return 1 if counts.get("failed") else 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from .io import read_json
    from .sweep import MANIFEST, SweepSpec, aggregate, discover

    spec = _sweep_spec(args)
    out = Path(args.out) if args.out else spec.default_out()
    check = True
    saved = read_json(out / MANIFEST)["spec"] if (out / MANIFEST).is_file() else None
    if saved is not None and saved.get("profile") == spec.profile:
        # the grid and options the sweep ran with, unless given again here
        spec = SweepSpec(
            profile=spec.profile,
            methods=spec.methods or saved["methods"],
            seeds=spec.seeds or saved["seeds"],
            orders=spec.orders or saved["orders"],
            data=spec.data or saved.get("data"),
            backbone=spec.backbone or saved.get("backbone"),
            results_dir=spec.results_dir or saved.get("results_dir"),
            dotted=spec.dotted or saved.get("dotted", []),
        )
    elif not (spec.methods and spec.seeds and spec.orders):
        methods, seeds, orders = discover(spec.default_out().parent.parent, spec.profile)
        spec.methods, spec.seeds, spec.orders = (
            spec.methods or methods,
            spec.seeds or seeds,
            spec.orders or orders,
        )
        check = bool(args.set or args.data or args.backbone)
        if not spec.methods:
            print(
                f"error: no run folders under {spec.default_out().parent} and no {MANIFEST} in {out}",
                file=sys.stderr,
            )
            return 2
    spec.validate()
    tables = aggregate(spec, out, check_config=check)
    print(tables.markdown)
    print(
        f"aggregate of {len(tables.records)} finished runs ({len(tables.missing)} missing) written to {out}"
    )
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from .tables import write_tables

    spec = _sweep_spec(args)
    rows, verdicts, md = write_tables(spec, Path(args.out))
    print(md)
    print(
        f"table2.csv ({len(rows)} rows), claims.csv ({len(verdicts)} verdicts) and claims.md written to {args.out}"
    )
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune import TuneSpec, describe, parse_grid, run_tune

    spec = TuneSpec(
        profile=args.profile,
        method=args.method,
        grid=parse_grid(args.grid),
        overrides=_overrides(args),
        dotted=list(args.set),
        criterion=args.criterion,
    )
    t0 = time.perf_counter()
    result = run_tune(spec, force=args.force)
    for line in describe(result):
        print(line)
    print(f"tuning took {time.perf_counter() - t0:.0f} s")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from .data.check import check_data

    report = check_data(
        Path(args.root) if args.root else None, args.layout, allow_nonbinary=args.allow_nonbinary
    )
    print(report.text())
    return 0 if report.ok else 1


def cmd_methods(args: argparse.Namespace) -> int:
    from .methods import BASES, METHODS, PLUGINS

    for name, cls in METHODS.items():
        print(f"{name:12s} {(cls.__doc__ or '').strip().splitlines()[0]}")
    print(
        f"\nRegulariser plugins over any base: --method BASE+PLUGIN[+PLUGIN...] (e.g. decoder_tuning+ewc, "
        f"sam_adapter+replay)\n  bases: {', '.join(BASES)}"
    )
    for name, plugin in PLUGINS.items():
        print(f"  {name:10s} {(plugin.__doc__ or '').strip().splitlines()[0]}")
    return 0


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
    t.add_argument("--methods", nargs="+", required=True)
    t.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    t.add_argument("--orders", nargs="+", default=["paper"])
    t.add_argument(
        "--out", default="results/tables", help="folder for table2.csv, claims.csv, claims.md"
    )
    common(t, axes=False, force=False)
    t.set_defaults(fn=cmd_tables)
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
