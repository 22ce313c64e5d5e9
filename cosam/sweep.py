"""Sweeps over methods x seeds x task orders, and their aggregate (Table 2 with mean ± std).

    python -m cosam sweep --methods sequential lwf --seeds 0 1 2 3 4 --orders paper reverse shuffled
    python -m cosam sweep ... --print-commands     # one independent `python -m cosam run ...` per run
    python -m cosam aggregate --profile cpu        # the tables again, from whatever has finished

Every combination is an ordinary run folder (:func:`cosam.engine.run_dir_for`:
``<results_dir>/<profile>/<method>-<order>-s<seed>``), so a sweep inherits the engine's
behaviour: a finished run is reused, an interrupted one resumes from its last finished task,
two processes never write one folder. :func:`run_sweep` runs the combinations in one process
(one model and one feature cache, the engine's :class:`~cosam.engine.Context`) and then calls
:func:`aggregate`, which reads finished run folders only (never recomputes results) and writes,
under ``<results_dir>/<profile>/sweep/`` (or another ``out`` folder):

* ``summary_mean_std.csv``: per (order, method): number of seeds, ``<key>_mean`` and
  ``<key>_std`` (fractions) for Last/Avg/FF/BWT x IoU/BIoU and the probe;
* ``per_seed.csv``: one row per finished run (the numbers the means are taken over);
* ``order_sensitivity.csv``: per method and metric, mean/std/n per order and the range of the
  order means; ``order_sensitivity.png`` draws Last and FF per method and order;
* ``sweep.md``: the Table 2 layout per order, the paper's published numbers as a separate block,
  order sensitivity, per-seed numbers, and which combinations are missing;
* ``sweep.json``: the grid and options (what ``aggregate`` and :func:`load_sweep` read back).

Std is the **sample** standard deviation over seeds (``ddof=1``); with one seed it is undefined
(NaN in the CSVs, "–" in the tables). Notebooks read the aggregate with :func:`load_sweep`.
"""

from __future__ import annotations

import csv
import logging
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .config import Config, dotted_to_dict, location_overrides, make_config
from .data.domains import NAMED_ORDERS
from .errors import ConfigError, CosamError
from .io import (
    atomic_write_bytes,
    portable,
    portable_text,
    read_json,
    write_csv,
    write_json,
    write_text,
)
from .matrix import fmt1
from .published import CITATION, COLUMNS, HEADERS, SETTING, published_rows
from .report import RunRecord, data_label, load_run, markdown_table, summary_rows
from .rundir import RunDir, parse_run_name, run_name

log = logging.getLogger(__name__)

#: Standard deviation over seeds: sample (n - 1 in the denominator).
STD_DDOF = 1
STD_NOTE = (
    "± is the sample standard deviation over seeds (ddof=1, n−1 in the denominator); "
    '"± –" where only one seed has finished'
)
#: Keys of :func:`cosam.report.summary_rows` aggregated over seeds (Table 2's six first).
KEYS: Tuple[str, ...] = COLUMNS + ("bwt_iou", "bwt_biou", "probe_zero_shot", "probe_last")
#: Metrics of the order-sensitivity table and figure.
SENSITIVITY_KEYS: Tuple[str, ...] = ("last_iou", "ff_iou", "last_biou", "ff_biou")
#: ``--set`` keys a sweep sets itself (one value per run); overriding them would merge runs.
AXIS_KEYS = ("method", "seed", "data.order", "run_name")
OUTPUT_FILES = (
    "summary_mean_std.csv",
    "per_seed.csv",
    "order_sensitivity.csv",
    "sweep.md",
    "order_sensitivity.png",
)
MANIFEST = "sweep.json"


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Combo:
    """One run of a sweep."""

    method: str
    order: str
    seed: int

    @property
    def name(self) -> str:
        return run_name(self.method, self.order, self.seed)


@dataclass
class SweepSpec:
    """A sweep: the grid and the options shared by every run, as given on the command line.

    Arguments:
      profile: config profile of every run.
      methods, seeds, orders: the grid; orders are named orders (paper, reverse, shuffled), since
        run folders are named after them (``shuffled`` draws each seed's own permutation).
      data, backbone, results_dir: as ``--data``, ``--backbone``, ``--results-dir`` (None: default).
      dotted: ``--set KEY=VALUE`` overrides, applied to every run; the axis keys (method, seed,
        data.order, run_name) are refused.
    """

    profile: str = "cpu"
    methods: List[str] = field(default_factory=list)
    seeds: List[int] = field(default_factory=lambda: [0])
    orders: List[str] = field(default_factory=lambda: ["paper"])
    data: Optional[str] = None
    backbone: Optional[str] = None
    results_dir: Optional[str] = None
    dotted: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.methods = list(dict.fromkeys(self.methods))
        self.seeds = [int(s) for s in dict.fromkeys(self.seeds)]
        self.orders = [str(o).strip().lower() for o in dict.fromkeys(self.orders)]
        self.dotted = list(self.dotted)

    def validate(self) -> None:
        """Refuse an empty grid, unknown methods or orders, and ``--set`` on an axis."""
        from .methods import get_method

        if not self.methods or not self.seeds or not self.orders:
            raise ConfigError("a sweep needs at least one method, one seed and one order")
        for (
            m
        ) in self.methods:  # a named method or a BASE+PLUGIN combination; the error says why not
            get_method(m)
        bad = [o for o in self.orders if o not in NAMED_ORDERS]
        if bad:
            raise ConfigError(
                f"sweep order {', '.join(bad)} is not a named order; valid: {', '.join(NAMED_ORDERS)} "
                f"(run folders are named after the order; run a custom order with `cosam run --order`)"
            )
        flat = _flatten(dotted_to_dict(self.dotted))
        clash = [k for k in flat if k in AXIS_KEYS]
        if clash:
            raise ConfigError(
                f"--set {', '.join(clash)} conflicts with the sweep's own axes; use --methods/--seeds/--orders"
            )
        self.config(self.combos()[0])  # unknown keys and bad values fail here, before any run

    def combos(self) -> List[Combo]:
        """Every combination, seed-major: all methods and orders of seed 0 finish before seed 1,
        so an interrupted sweep already has complete single-seed tables."""
        return [Combo(m, o, s) for s in self.seeds for o in self.orders for m in self.methods]

    def overrides(self) -> Dict[str, Any]:
        return location_overrides(self.data, self.results_dir, self.backbone)

    def config(self, combo: Combo) -> Config:
        """The config of one run: exactly what ``python -m cosam run`` builds from :meth:`command`."""
        o = self.overrides()
        o["method"] = combo.method
        o["seed"] = combo.seed
        o.setdefault("data", {})["order"] = combo.order
        return make_config(self.profile, o, self.dotted)

    def run_dir(self, combo: Combo) -> Path:
        return RunDir.for_config(self.config(combo)).path

    def default_out(self) -> Path:
        """``<results_dir>/<profile>/sweep``."""
        cfg = make_config(self.profile, self.overrides(), self.dotted)
        return Path(cfg.results_dir) / self.profile / "sweep"

    def common_args(self) -> List[str]:
        """The shared command-line options (``--profile`` ... ``--set``), as a list of arguments."""
        args = ["--profile", self.profile]
        if self.data:
            args += ["--data", self.data]
        if self.backbone:
            args += ["--backbone", self.backbone]
        if self.results_dir:
            args += ["--results-dir", self.results_dir]
        for d in self.dotted:
            args += ["--set", d]
        return args

    def command(self, combo: Combo, force: bool = False, python: str = "python") -> str:
        """One independent shell command that runs ``combo`` (and writes only its run folder)."""
        args = (
            [
                python,
                "-m",
                "cosam",
                "run",
                "--method",
                combo.method,
                "--order",
                combo.order,
                "--seed",
                str(combo.seed),
            ]
            + self.common_args()
            + (["--force"] if force else [])
        )
        return " ".join(shlex.quote(a) for a in args)

    def aggregate_command(self, out: Optional[Path] = None, python: str = "python") -> str:
        args = (
            [
                python,
                "-m",
                "cosam",
                "aggregate",
                "--methods",
                *self.methods,
                "--seeds",
                *map(str, self.seeds),
                "--orders",
                *self.orders,
            ]
            + self.common_args()
            + (["--out", str(out)] if out else [])
        )
        return " ".join(shlex.quote(a) for a in args)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SweepSpec":
        names = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
        return cls(**{k: v for k, v in d.items() if k in names})


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and k != "method_options":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def sweep_commands(spec: SweepSpec, force: bool = False, python: str = "python") -> List[str]:
    """One shell command per combination (``python -m cosam run --method m --order o --seed s ...``),
    in :meth:`SweepSpec.combos` order. Each is independent: any machine that sees the same
    results folder can run any of them, in any order, at the same time as the others."""
    spec.validate()
    return [spec.command(c, force=force, python=python) for c in spec.combos()]


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What one combination did in this sweep process."""

    combo: Combo
    run_dir: Path
    status: str  # reused | ran | resumed | busy | failed
    wall_s: float = 0.0
    error: str = ""


def run_sweep(
    spec: SweepSpec,
    force: bool = False,
    out: Optional[Path] = None,
    echo: Callable[[str], None] = print,
) -> Tuple[List[RunOutcome], Path]:
    """Run every combination of ``spec`` in this process, then :func:`aggregate` into ``out``.

    Finished runs are reused (rerun with ``force``), interrupted ones resume from their last
    task; one model and feature cache serve every run. A run locked by another process is
    skipped (``busy``); a run that fails is reported (``failed``) and the sweep goes on.

    Returns:
      (outcomes, out folder).
    """
    from .engine import Context, run

    spec.validate()
    out = Path(out) if out else spec.default_out()
    write_json(
        out / MANIFEST,
        {"spec": spec.to_dict(), "note": "grid of `python -m cosam sweep`; read by aggregate"},
    )
    ctx = Context()
    combos = spec.combos()
    outcomes: List[RunOutcome] = []
    for i, combo in enumerate(combos, 1):
        cfg = spec.config(combo)
        folder = RunDir.for_config(cfg)
        rd = folder.path
        before = folder.plan(force)
        t0 = time.perf_counter()
        if folder.busy():
            oc = RunOutcome(combo, rd, "busy", error="locked by another process")
        else:
            try:
                run(cfg, force=force, ctx=ctx)
                oc = RunOutcome(combo, rd, before)
            except CosamError as exc:
                oc = RunOutcome(combo, rd, "busy" if folder.busy() else "failed", error=str(exc))
            except Exception as exc:  # one broken run must not cost the rest of a long sweep
                log.exception("%s failed", combo.name)
                oc = RunOutcome(combo, rd, "failed", error=f"{type(exc).__name__}: {exc}")
        oc.wall_s = time.perf_counter() - t0
        outcomes.append(oc)
        echo(
            f"[{i}/{len(combos)}] {combo.name}: {oc.status} ({oc.wall_s:.0f} s){'  ' + oc.error if oc.error else ''}"
        )
    aggregate(spec, out)
    return outcomes, out


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float], ddof: int = STD_DDOF) -> Tuple[float, float, int]:
    """(mean, std, n) of ``values``; std with ``ddof`` (sample std by default), NaN for n <= ddof.
    A NaN value (a metric a method does not define, e.g. FF of joint) makes the mean NaN."""
    a = np.asarray([math.nan if v is None else float(v) for v in values], dtype=float)
    n = len(a)
    mean = float(a.mean()) if n else math.nan
    std = float(a.std(ddof=ddof)) if n > ddof else math.nan
    return mean, std, n


def fmt_mean_std(mean: float, std: float, n: int, scale: float = 100.0) -> str:
    """ "73.3 ± 0.72" in percent (one decimal, two for the std, as the paper prints); "73.3 ± –"
    for one seed; "–" when the metric is undefined."""
    if not n or not math.isfinite(mean):
        return "–"
    text = fmt1(scale * mean)
    return f"{text} ± {scale * std:.2f}" if math.isfinite(std) else f"{text} ± –"


@dataclass
class Missing:
    combo: Combo
    run_dir: Path
    status: str  # not started | interrupted after step k | running | different config | unreadable

    def text(self) -> str:
        return f"{self.combo.name} ({self.status})"


@dataclass
class SweepTables:
    """What :func:`aggregate` computed and wrote."""

    out: Path
    spec: SweepSpec
    records: Dict[Combo, RunRecord]
    missing: List[Missing]
    per_seed: List[Dict[str, Any]]
    summary: List[Dict[str, Any]]
    sensitivity: List[Dict[str, Any]]
    markdown: str


def collect(
    spec: SweepSpec, check_config: bool = True
) -> Tuple[Dict[Combo, RunRecord], List[Missing]]:
    """The finished runs of ``spec``'s grid and, for the others, why they are missing.

    A finished run whose config.json differs from the one the sweep would build (other
    ``--set`` values, say, or another code version: :func:`cosam.engine.config_differences`
    without the data and weights, which only a run re-checks) is not counted: it is listed as
    missing with "different config" and the first differing keys.
    """
    from .engine import config_differences

    done: Dict[Combo, RunRecord] = {}
    missing: List[Missing] = []
    for combo in spec.combos():
        rd = spec.run_dir(combo)
        folder = RunDir(rd)
        if folder.is_done():
            try:
                rec = load_run(rd)
            except (OSError, ValueError, KeyError) as exc:
                missing.append(Missing(combo, rd, f"unreadable: {exc}"))
                continue
            diffs = config_differences(rec.meta, spec.config(combo)) if check_config else []
            if diffs:
                missing.append(
                    Missing(
                        combo,
                        rd,
                        f"finished with a different config ({'; '.join(diffs[:3])}"
                        f"{'; ...' if len(diffs) > 3 else ''}); not counted",
                    )
                )
                continue
            done[combo] = rec
        elif folder.busy():
            missing.append(Missing(combo, rd, "running"))
        elif (step := folder.last_step()) is not None:
            missing.append(Missing(combo, rd, f"interrupted after step {step}; rerun to resume"))
        else:
            missing.append(Missing(combo, rd, "not started"))
    return done, missing


def compute_rows(per_seed: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per (order, method): finished runs, mean and total measured minutes (``RunRecord.compute_s``)."""
    groups: Dict[Tuple[str, str], List[float]] = {}
    for r in per_seed:
        groups.setdefault((r["order"], r["method"]), []).append(
            float(r.get("compute_s", float("nan")))
        )
    rows = []
    for (order, method), secs in groups.items():
        ok = [x for x in secs if math.isfinite(x)]
        rows.append(
            {
                "order": order,
                "method": method,
                "runs": len(secs),
                "min/run": (sum(ok) / len(ok) / 60.0) if ok else float("nan"),
                "total min": sum(ok) / 60.0 if ok else float("nan"),
            }
        )
    return rows


def per_seed_rows(records: Mapping[Combo, RunRecord]) -> List[Dict[str, Any]]:
    """One row per finished run: order, method, seed, Table 2 columns and the rest of
    :func:`cosam.report.summary_rows` (fractions), the task order it trained in, its folder."""
    rows = []
    for combo, rec in records.items():
        (s,) = summary_rows([rec])
        row: Dict[str, Any] = {
            "order": combo.order,
            "method": combo.method,
            "seed": combo.seed,
            "data": s["data"],
        }
        row.update({k: s.get(k) for k in KEYS})
        row["train_s"] = s.get("train_s")
        row["compute_s"] = rec.compute_s
        row["task_order"] = " > ".join(rec.meta["resolved"]["order"])
        row["run"] = str(rec.path)
        rows.append(row)
    rank: Dict[Tuple[str, str], int] = {}
    for c in records:  # grid order: by order, then method, then seed
        rank.setdefault((c.order, c.method), len(rank))
    rows.sort(key=lambda r: (rank[(r["order"], r["method"])], r["seed"]))
    return rows


def summary_stats(per_seed: Sequence[Mapping[str, Any]], spec: SweepSpec) -> List[Dict[str, Any]]:
    """Mean and sample std over seeds per (order, method), in the grid's order; only pairs with at
    least one finished seed. Keys: order, method, n_seeds, seeds, data, std, <key>_mean, <key>_std."""
    rows = []
    for order in spec.orders:
        for method in spec.methods:
            group = [r for r in per_seed if r["order"] == order and r["method"] == method]
            if not group:
                continue
            row: Dict[str, Any] = {
                "order": order,
                "method": method,
                "n_seeds": len(group),
                "seeds": " ".join(str(r["seed"]) for r in group),
                "data": "synthetic" if any(r["data"] == "synthetic" for r in group) else "real",
                "std": f"sample (ddof={STD_DDOF})",
            }
            for k in KEYS:
                mean, std, _ = mean_std([r[k] for r in group])
                row[f"{k}_mean"], row[f"{k}_std"] = mean, std
            rows.append(row)
    return rows


def sensitivity_rows(
    summary: Sequence[Mapping[str, Any]], spec: SweepSpec, keys: Sequence[str] = SENSITIVITY_KEYS
) -> List[Dict[str, Any]]:
    """Per method and metric: n/mean/std per order, and the range (max − min) of the order means."""
    rows = []
    for method in spec.methods:
        by_order = {r["order"]: r for r in summary if r["method"] == method}
        if not by_order:
            continue
        for k in keys:
            row: Dict[str, Any] = {"method": method, "metric": k}
            means = []
            for o in spec.orders:
                r = by_order.get(o)
                row[f"{o}_n"] = r["n_seeds"] if r else 0
                row[f"{o}_mean"] = r[f"{k}_mean"] if r else math.nan
                row[f"{o}_std"] = r[f"{k}_std"] if r else math.nan
                if r and math.isfinite(r[f"{k}_mean"]):
                    means.append(r[f"{k}_mean"])
            row["n_orders"] = len(means)
            row["range"] = (max(means) - min(means)) if len(means) > 1 else math.nan
            rows.append(row)
    return rows


def _table2_markdown(summary: Sequence[Mapping[str, Any]], order: str) -> str:
    rows = []
    for r in summary:
        if r["order"] != order:
            continue
        row = {"method": r["method"], "seeds": str(r["n_seeds"])}
        row.update(
            {HEADERS[c]: fmt_mean_std(r[f"{c}_mean"], r[f"{c}_std"], r["n_seeds"]) for c in COLUMNS}
        )
        rows.append(row)
    return markdown_table(rows)


def _order_text(order: str, records: Mapping[Combo, RunRecord]) -> str:
    if order == "shuffled":
        return (
            "a permutation drawn from each run's seed (numpy default_rng(seed)); see per_seed.csv"
        )
    recs = [r for c, r in records.items() if c.order == order]
    return " → ".join(recs[0].meta["resolved"]["order"]) if recs else ""


def _markdown(
    spec: SweepSpec,
    records: Mapping[Combo, RunRecord],
    missing: Sequence[Missing],
    summary: Sequence[Mapping[str, Any]],
    sensitivity: Sequence[Mapping[str, Any]],
    per_seed: Sequence[Mapping[str, Any]],
    figure: bool,
    check_config: bool,
) -> str:
    recs = list(records.values())
    n_all = len(spec.combos())
    label = data_label(recs) if recs else "no finished runs"
    text = [f"# cosam sweep — profile `{spec.profile}`", "", f"Data: **{label}**."]
    if recs:
        res = recs[0].meta["resolved"]
        backbones = sorted(
            {
                f"`{r.meta['resolved']['backbone']}` at {r.meta['resolved']['image_size']} px"
                for r in recs
            }
        )
        ckpt = f"`{portable(res['checkpoint'])}`" if res.get("checkpoint") else "random weights"
        text[-1] += f" Backbone {', '.join(backbones)} ({ckpt})."
    text += [
        "",
        f"Grid: methods {', '.join(spec.methods)}; seeds {', '.join(map(str, spec.seeds))}; "
        f"orders {', '.join(spec.orders)}"
        + (f"; overrides `{portable_text(' '.join(spec.dotted))}`" if spec.dotted else "")
        + ".",
        "",
        f"Finished: **{len(records)} of {n_all}** runs. Only finished runs are reported."
        + (
            ""
            if check_config
            else " (Grid discovered from the run folders; their configs were not checked.)"
        ),
    ]
    if missing:
        groups: Dict[str, List[str]] = {}
        for m in missing:
            groups.setdefault(m.status, []).append(m.combo.name)
        text += ["", f"Missing ({len(missing)}, not in any table):"]
        text += [f"- {status}: {', '.join(names)}" for status, names in groups.items()]
    text += ["", STD_NOTE + ". Numbers in %."]
    if not records:
        return "\n".join(text) + "\n"
    for order in spec.orders:
        if not any(r["order"] == order for r in summary):
            continue
        text += [
            "",
            f"## Table 2 layout — order `{order}` ({_order_text(order, records)})",
            "",
            f"Last / Avg / FF for IoU and BIoU, mean ± std over seeds (%); {label}.",
            "",
            _table2_markdown(summary, order),
        ]
    pub = published_rows(spec.methods)
    text += [
        "",
        "## Published Table 2 (the paper's numbers, not ours)",
        "",
        f"From {CITATION} Their setting: {SETTING}; the paper task order (the released code runs no other, "
        "protocol §1.5); std over their five seeds, printed as published. "
        f"**The backbone and the data differ from ours** ({', '.join(backbones)}; {label}), "
        "so these rows are for orientation only, not a comparison.",
        "",
    ]
    text.append(
        markdown_table(pub)
        if pub
        else "(none of the swept methods has a row in the paper's Table 2)\n"
    )
    text += [
        "## Order sensitivity",
        "",
        "Mean ± std over seeds per task order (%); range = max − min of the order means (points). "
        f"{label}.",
        "",
    ]
    sens_md = []
    for r in sensitivity:
        row = {"method": r["method"], "metric": HEADERS.get(r["metric"], r["metric"])}
        for o in spec.orders:
            row[o] = fmt_mean_std(r[f"{o}_mean"], r[f"{o}_std"], r[f"{o}_n"])
        row["range"] = "–" if not math.isfinite(r["range"]) else f"{100 * r['range']:.1f}"
        sens_md.append(row)
    text.append(markdown_table(sens_md))
    if figure:
        text += ["![Last and FF per method and order](order_sensitivity.png)", ""]
    comp = compute_rows(per_seed)
    total_h = sum(r["total min"] for r in comp if math.isfinite(r["total min"])) / 60.0
    text += [
        "## Compute",
        "",
        f"Measured seconds (training + evaluation + encoding, summed over each run's invocations; start-up, "
        f"and work a kill threw away, not counted): **{total_h:.2f} h** over the {len(per_seed)} finished runs. "
        "These are wall-clock seconds of those phases: a run that shared the machine or was paused counts "
        "its waits, so compare them only between runs made alike. Runs share the feature cache, so the first "
        "run to need an image pays for its encoding.",
        "",
        markdown_table(comp),
    ]
    text += ["## Per seed (%)", ""]
    heads = [HEADERS[c] for c in COLUMNS]
    text.append(
        markdown_table(
            [
                {
                    "order": r["order"],
                    "method": r["method"],
                    "seed": r["seed"],
                    **{HEADERS[c]: r[c] for c in COLUMNS},
                }
                for r in per_seed
            ],
            pct=heads,
        )
    )
    return "\n".join(text)


def aggregate(
    spec: SweepSpec, out: Optional[Path] = None, check_config: bool = True
) -> SweepTables:
    """Aggregate the finished runs of ``spec``'s grid into ``out`` (default
    ``<results_dir>/<profile>/sweep``): the CSVs, ``sweep.md`` and the order-sensitivity figure.
    Reads run folders only; combinations without a finished run are listed as missing."""
    out = Path(out) if out else spec.default_out()
    records, missing = collect(spec, check_config)
    per_seed = per_seed_rows(records)
    summary = summary_stats(per_seed, spec)
    sensitivity = sensitivity_rows(summary, spec)
    per_seed_cols = [
        "order",
        "method",
        "seed",
        "data",
        *KEYS,
        "train_s",
        "compute_s",
        "task_order",
        "run",
    ]
    summary_cols = ["order", "method", "n_seeds", "seeds", "data", "std"] + [
        f"{k}_{s}" for k in KEYS for s in ("mean", "std")
    ]
    sens_cols = (
        ["method", "metric"]
        + [f"{o}_{s}" for o in spec.orders for s in ("n", "mean", "std")]
        + ["n_orders", "range"]
    )
    write_csv(out / "per_seed.csv", per_seed, per_seed_cols)
    write_csv(out / "summary_mean_std.csv", summary, summary_cols)
    write_csv(out / "order_sensitivity.csv", sensitivity, sens_cols)
    figure = bool(summary)
    if figure:
        from . import plots

        fig = plots.order_sensitivity(
            summary,
            per_seed,
            spec.methods,
            spec.orders,
            synthetic=any(r.synthetic for r in records.values()),
        )
        atomic_write_bytes(out / "order_sensitivity.png", plots.png_bytes(fig))
    else:
        (out / "order_sensitivity.png").unlink(missing_ok=True)
    md = _markdown(spec, records, missing, summary, sensitivity, per_seed, figure, check_config)
    write_text(out / "sweep.md", md)
    return SweepTables(out, spec, records, missing, per_seed, summary, sensitivity, md)


def discover(results_dir: Path, profile: str) -> Tuple[List[str], List[int], List[str]]:
    """Methods, seeds and orders of the ``<method>-<order>-s<seed>`` folders under
    ``<results_dir>/<profile>`` (any state), for aggregating without a sweep manifest."""
    from .methods import METHODS, is_method

    methods, seeds, orders = set(), set(), set()
    base = Path(results_dir) / profile
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        n = parse_run_name(d.name)  # validation runs (-val) are not part of a sweep's test results
        if d.is_dir() and n and not n.val and is_method(n.method):
            methods.add(n.method)
            seeds.add(n.seed)
            orders.add(n.order)
    named = [
        m for m in METHODS if m in methods
    ]  # registry order, then combinations (base+plugin) sorted
    return (
        named + sorted(methods - set(named)),
        sorted(seeds),
        [o for o in NAMED_ORDERS if o in orders],
    )


# ---------------------------------------------------------------------------------------------
# Reading an aggregate back (notebooks)
# ---------------------------------------------------------------------------------------------


def _typed(value: str) -> Any:
    if value == "":
        return math.nan
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def read_csv_typed(path: Path) -> List[Dict[str, Any]]:
    """A CSV written by :func:`cosam.io.write_csv`, numbers as int/float and empty cells as NaN."""
    with open(path, newline="") as f:
        return [
            {
                k: (v if k in ("seeds", "task_order", "run", "std") else _typed(v))
                for k, v in r.items()
            }
            for r in csv.DictReader(f)
        ]


Stat = Tuple[float, float, int]


@dataclass
class SweepResult:
    """An aggregate read back from disk (see :func:`load_sweep`).

    summary: rows of ``summary_mean_std.csv`` (order, method, n_seeds, seeds, data, std,
      ``<key>_mean``, ``<key>_std``; fractions, NaN where undefined).
    per_seed: rows of ``per_seed.csv`` (order, method, seed, data, the keys, task_order, run).
    sensitivity: rows of ``order_sensitivity.csv``.
    spec: the sweep's grid and options (None when ``sweep.json`` is absent).
    """

    path: Path
    summary: List[Dict[str, Any]]
    per_seed: List[Dict[str, Any]]
    sensitivity: List[Dict[str, Any]]
    spec: Optional[SweepSpec]
    markdown: str

    @property
    def orders(self) -> List[str]:
        return list(dict.fromkeys(r["order"] for r in self.summary))

    @property
    def synthetic(self) -> bool:
        return any(r["data"] == "synthetic" for r in self.summary)

    @property
    def methods(self) -> List[str]:
        """The swept methods, in the grid's order (else the table's)."""
        if self.spec is not None:
            return list(self.spec.methods)
        return list(dict.fromkeys(r["method"] for r in self.summary))

    def figure(self, keys: Sequence[str] = ("last_iou", "ff_iou")) -> Any:
        """The order-sensitivity figure (:func:`cosam.plots.order_sensitivity`) drawn anew from the
        tables, so a notebook shows it inline rather than linking the PNG beside ``sweep.md``."""
        from . import plots

        return plots.order_sensitivity(
            self.summary,
            self.per_seed,
            self.methods,
            self.orders,
            keys=keys,
            synthetic=self.synthetic,
        )

    def embedded_markdown(self, shift: int = 2) -> str:
        """``sweep.md`` for embedding in a larger report: headings ``shift`` levels deeper and
        without the figure's link (relative to the sweep folder; show :meth:`figure` instead)."""
        out = []
        for line in self.markdown.splitlines():
            if line.startswith("![") and line.rstrip().endswith("(order_sensitivity.png)"):
                continue
            if line.startswith("#"):
                line = "#" * shift + line
            out.append(line)
        return "\n".join(out).strip() + "\n"

    def stats(self, order: str = "paper") -> Dict[str, Dict[str, Stat]]:
        """{method: {key: (mean, std, n_seeds)}} of one order, the form of
        :func:`cosam.plots.seed_stats` (so :func:`cosam.plots.table2_rows` draws it)."""
        return {
            r["method"]: {k: (r[f"{k}_mean"], r[f"{k}_std"], r["n_seeds"]) for k in KEYS}
            for r in self.summary
            if r["order"] == order
        }


def load_sweep(
    results_dir: Any = "results/runs", profile: str = "cpu", out: Optional[Path] = None
) -> Optional[SweepResult]:
    """The last aggregate of a sweep, or None when none was written.

    Arguments:
      results_dir, profile: where the runs are; the aggregate is ``<results_dir>/<profile>/sweep``.
      out: read this folder instead (a sweep or aggregate given ``--out``).

    Returns:
      A :class:`SweepResult` (mean ± std table, per-seed rows, order sensitivity, the grid), or
      None when ``summary_mean_std.csv`` is absent. The files are as the last ``sweep`` or
      ``aggregate`` wrote them; call :func:`aggregate` to include runs finished since.
    """
    folder = Path(out) if out else Path(results_dir) / profile / "sweep"
    if not (folder / "summary_mean_std.csv").is_file():
        return None
    manifest = folder / MANIFEST
    spec = SweepSpec.from_dict(read_json(manifest)["spec"]) if manifest.is_file() else None
    sens = folder / "order_sensitivity.csv"
    per_seed = folder / "per_seed.csv"
    md = folder / "sweep.md"
    return SweepResult(
        folder,
        read_csv_typed(folder / "summary_mean_std.csv"),
        read_csv_typed(per_seed) if per_seed.is_file() else [],
        read_csv_typed(sens) if sens.is_file() else [],
        spec,
        md.read_text(encoding="utf-8") if md.is_file() else "",
    )
