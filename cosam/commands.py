"""The commands behind ``python -m cosam``: one ``cmd_<name>(args) -> exit code`` per subcommand.

:mod:`cosam.cli` builds the argument parser and dispatches to these; each command turns its
arguments into a :class:`cosam.config.Config` (so a bad value fails before anything is written)
and calls the package: :func:`cosam.runner.run`, :func:`run_study`, the sweep, aggregation,
tables, tuning and data checks.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

from .config import location_overrides, make_config

if TYPE_CHECKING:
    from .grid import SweepSpec

log = logging.getLogger("cosam")

STUDY_METHODS = ("zeroshot", "sequential", "joint")


def overrides_from_args(args: argparse.Namespace) -> Dict[str, Any]:
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
        args.profile, overrides_from_args(args), args.set
    )  # a bad value fails before the engine loads
    from .runner import run

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
    from .io import write_csv, write_text
    from .report import (
        data_label,
        load_run,
        markdown_table,
        matrix_markdown,
        per_domain_rows,
        summary_rows,
    )
    from .runner import Context, run

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
        "## Per task (IoU, %): zero-shot; sequential right after its own task (and just before "
        "it, where the run scored unseen tasks) and after the last task; joint",
        "",
        markdown_table(
            per_domain, pct=[k for k in per_domain[0] if k != "task"] if per_domain else []
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
    out = run_study(args.profile, args.methods, overrides_from_args(args), args.set, args.force)
    from .distributed import info

    if not info().is_main:
        return 0
    print((out / "study.md").read_text())
    print(f"study written to {out}  ({time.perf_counter() - t0:.0f} s)")
    return 0


def _sweep_spec(args: argparse.Namespace) -> "SweepSpec":
    from .grid import SweepSpec

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
    from .aggregate import aggregate, discover
    from .grid import MANIFEST, SweepSpec
    from .io import read_json

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
    rows, verdicts, md = write_tables(spec, Path(args.out), gft=not args.no_gft)
    print(md)
    print(
        f"table2.csv ({len(rows)} rows), claims.csv ({len(verdicts)} verdicts) and claims.md written to {args.out}"
    )
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    from .archive import archive_grid

    spec = _sweep_spec(args)
    done = archive_grid(spec, Path(args.out), gft=not args.no_gft)
    print(
        f"{len(done)} of {len(spec.combos())} runs archived under {Path(args.out) / spec.profile}"
    )
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune import TuneSpec, describe, parse_grid, run_tune

    spec = TuneSpec(
        profile=args.profile,
        method=args.method,
        grid=parse_grid(args.grid),
        overrides=overrides_from_args(args),
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
