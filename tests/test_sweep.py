"""Sweeps (methods x seeds x orders): kill and restart, --print-commands, aggregation math,
the published block and load_sweep. Smoke profile, one epoch, tiny caps (< 30 s in all)."""

from __future__ import annotations

import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from cosam.aggregate import aggregate
from cosam.cli import build_parser, main
from cosam.commands import overrides_from_args
from cosam.config import make_config
from cosam.errors import ConfigError
from cosam.grid import Combo, SweepSpec
from cosam.io import write_json
from cosam.matrix import TaskMatrix
from cosam.provenance import static_identity
from cosam.rundir import RunDir
from cosam.stats import fmt_mean_std, fmt_stat, mean_std
from cosam.sweep import sweep_commands
from cosam.sweep_result import load_sweep

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=1", "data.train_cap=4", "data.test_cap=2", "data.probe_cap=2"]


def _sweep_argv(
    results: Path,
    cache: Path,
    methods=("zeroshot", "sequential"),
    seeds=("0", "1"),
    orders=("paper",),
) -> List[str]:
    argv = [
        "sweep",
        "--methods",
        *methods,
        "--seeds",
        *seeds,
        "--orders",
        *orders,
        "--profile",
        "smoke",
        "--results-dir",
        str(results),
        "--set",
        f"cache_dir={cache}",
    ]
    for s in TINY:
        argv += ["--set", s]
    return argv


def _mtimes(run_dir: Path) -> Dict[str, int]:
    return {
        n: (run_dir / n).stat().st_mtime_ns
        for n in ("DONE", "metrics.csv", "matrix.json", "config.json")
    }


# ---------------------------------------------------------------------------------------------
# Kill half-way, start again
# ---------------------------------------------------------------------------------------------


def test_killed_sweep_restarts_only_the_missing_runs(tmp_path: Path) -> None:
    """SIGKILL inside the last run; the same command then reuses the finished runs untouched and
    resumes the interrupted one from its last checkpoint."""
    results, cache = tmp_path / "runs", tmp_path / "cache"
    cmd = [sys.executable, "-m", "cosam"] + _sweep_argv(results, cache)
    # checkpoints: zeroshot 1 (step 0), sequential 1 + 8 tasks. The 15th is step 3 of the 4th
    # run (sequential, seed 1): three runs are finished, the fourth is interrupted.
    killed = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COSAM_FAULT": "checkpoint:15", "OMP_NUM_THREADS": "1"},
    )
    assert killed.returncode == -9, f"the fail point was not reached: {killed.stderr[-1500:]}"
    base = results / "smoke"
    names = ["zeroshot-paper-s0", "sequential-paper-s0", "zeroshot-paper-s1", "sequential-paper-s1"]
    done = [n for n in names if (base / n / "DONE").exists()]
    partial = [n for n in names if n not in done and list((base / n / "state").glob("step_*.pt"))]
    assert done == names[:3] and partial == ["sequential-paper-s1"], (done, partial)
    before = {n: _mtimes(base / n) for n in done}

    # The aggregate of a half-finished sweep reports the finished runs and names the missing one.
    assert main(["aggregate", "--profile", "smoke", "--results-dir", str(results)]) == 0
    md = (base / "sweep" / "sweep.md").read_text()
    assert "Finished: **3 of 4** runs" in md
    assert "- interrupted after step 3; rerun to resume: sequential-paper-s1" in md
    partial_view = load_sweep(results, "smoke")
    assert partial_view is not None
    assert {(r["method"], r["n_seeds"]) for r in partial_view.summary} == {
        ("zeroshot", 2),
        ("sequential", 1),
    }

    again = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert again.returncode == 0, again.stderr[-2000:]
    for i, n in enumerate(names[:3], 1):
        assert f"[{i}/4] {n}: reused" in again.stdout
    assert "[4/4] sequential-paper-s1: resumed" in again.stdout
    assert "resuming" in again.stderr and "after step 3" in again.stderr
    assert {n: _mtimes(base / n) for n in done} == before, "a finished run was rewritten"
    assert all((base / n / "DONE").exists() for n in names)
    full = load_sweep(results, "smoke")
    assert full is not None and full.synthetic
    assert [(r["order"], r["method"], r["n_seeds"]) for r in full.summary] == [
        ("paper", "zeroshot", 2),
        ("paper", "sequential", 2),
    ]
    assert len(full.per_seed) == 4
    for f in (
        "summary_mean_std.csv",
        "per_seed.csv",
        "order_sensitivity.csv",
        "sweep.md",
        "order_sensitivity.png",
        "sweep.json",
    ):
        assert (base / "sweep" / f).is_file(), f
    assert "Finished: **4 of 4** runs" in full.markdown and "SYNTHETIC" in full.markdown


# ---------------------------------------------------------------------------------------------
# --print-commands
# ---------------------------------------------------------------------------------------------


def test_print_commands_are_independent_runnable_run_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    results, cache = tmp_path / "my runs", tmp_path / "cache"  # a space: the commands must quote
    argv = _sweep_argv(results, cache, orders=("paper", "shuffled")) + ["--print-commands"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert "python -m cosam aggregate" in captured.err
    assert not results.exists(), "--print-commands must not run anything"
    spec = SweepSpec(
        "smoke",
        ["zeroshot", "sequential"],
        [0, 1],
        ["paper", "shuffled"],
        results_dir=str(results),
        dotted=[f"cache_dir={cache}", *TINY],
    )
    assert len(lines) == len(spec.combos()) == 8
    folders = set()
    for line, combo in zip(lines, spec.combos()):
        words = shlex.split(line)
        assert words[:4] == ["python", "-m", "cosam", "run"], line
        args = build_parser().parse_args(words[3:])
        assert (args.method, args.order, args.seed, args.profile) == (
            combo.method,
            combo.order,
            combo.seed,
            "smoke",
        )
        cfg = make_config(args.profile, overrides_from_args(args), args.set)
        assert cfg.to_dict() == spec.config(combo).to_dict()  # the same run the sweep would make
        folders.add(RunDir.for_config(cfg).path)
    assert len(folders) == 8 and all(f.parent == results / "smoke" for f in folders)
    # each is runnable on its own: run one (in-process) and aggregate what exists
    words = shlex.split(lines[-1])
    assert main(words[3:]) == 0
    assert (results / "smoke" / "sequential-shuffled-s1" / "DONE").exists()
    capsys.readouterr()
    assert (
        main(
            [
                "aggregate",
                "--profile",
                "smoke",
                "--results-dir",
                str(results),
                "--set",
                f"cache_dir={cache}",
                *[a for s in TINY for a in ("--set", s)],
            ]
        )
        == 0
    )
    md = (results / "smoke" / "sweep" / "sweep.md").read_text()
    assert (
        "Finished: **1 of 1** runs" in md and "sequential" in md
    )  # grid discovered from the folders
    assert sweep_commands(spec, force=True)[0].endswith("--force")


def test_sweep_refuses_bad_grids() -> None:
    with pytest.raises(ConfigError, match="not a named order"):
        SweepSpec("smoke", ["sequential"], [0], ["BSData,CAMO"]).validate()
    with pytest.raises(ConfigError, match="unknown method"):
        SweepSpec("smoke", ["nope"], [0], ["paper"]).validate()
    with pytest.raises(ConfigError, match="conflicts with the sweep's own axes"):
        SweepSpec("smoke", ["sequential"], [0], ["paper"], dotted=["seed=3"]).validate()
    with pytest.raises(ConfigError, match="unknown config key"):
        SweepSpec("smoke", ["sequential"], [0], ["paper"], dotted=["train.epoch=3"]).validate()


# ---------------------------------------------------------------------------------------------
# Aggregation math on hand-made run folders
# ---------------------------------------------------------------------------------------------


def test_mean_std_is_the_sample_std() -> None:
    mean, std, n = mean_std([0.5, 0.6, 0.7])
    assert (
        n == 3 and mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    )  # ddof=1; population would be 0.0816
    assert std == pytest.approx(float(np.std([0.5, 0.6, 0.7], ddof=1)))
    one = mean_std([0.42])
    assert one[0] == pytest.approx(0.42) and math.isnan(one[1]) and one[2] == 1
    assert math.isnan(mean_std([0.1, math.nan])[0])
    assert fmt_mean_std(0.6, 0.1, 3) == "60.0 ± 10.0"
    assert fmt_mean_std(0.42, math.nan, 1) == "42.0 ± –"
    assert fmt_mean_std(math.nan, math.nan, 2) == "–"
    # the notebooks' formatter prints exactly what sweep.md prints
    for s in [(0.6, 0.1, 3), (0.57123, 0.01234, 5), (0.42, math.nan, 1), (math.nan, math.nan, 2)]:
        assert fmt_stat(s) == fmt_mean_std(*s)


TASKS = ["A", "B", "C"]


def _fake_run(spec: SweepSpec, combo: Combo, c: float, d: float, synthetic: bool = True) -> Path:
    """A finished run folder whose summaries are known: every entry c, except each task's own
    step (the diagonal) c + d. Then with T = 3: Last = c + d/3, Avg = c + d(1 + 1/2 + 1/3)/3, FF = d,
    and BIoU half of each."""
    cfg = spec.config(combo)
    rd = RunDir.for_config(cfg).path
    m = TaskMatrix(TASKS, "P")
    m.add_row("before", {t: c for t in TASKS + ["P"]}, {t: c / 2 for t in TASKS + ["P"]})
    if combo.method == "joint":
        m.add_row("joint", {t: c for t in TASKS + ["P"]}, {t: c / 2 for t in TASKS + ["P"]})
    else:
        for _i, task in enumerate(TASKS):
            iou = {t: (c + d if t == task else c) for t in TASKS + ["P"]}
            m.add_row(task, iou, {t: v / 2 for t, v in iou.items()})
    order = TASKS if combo.order == "paper" else TASKS[::-1]
    write_json(
        rd / "config.json",
        {
            "config": cfg.to_dict(),
            "resolved": {
                "data_root": "/fake",
                "synthetic": synthetic,
                "order": order,
                "backbone": cfg.model.backbone,
                "checkpoint": None,
                "image_size": 64,
                "identity": static_identity(cfg),
            },
        },
    )
    write_json(rd / "matrix.json", m.to_dict())
    write_json(
        rd / "costs.json",
        {"trainable_params": 10, "timing": {"train_s": 60.0 * (1 + combo.seed), "eval_s": 30.0}},
    )
    (rd / "DONE").write_text("finished\n")
    return rd


def md_section(md: str, heading: str) -> str:
    """The text of one '## ' section of a markdown report."""
    return md.split(heading, 1)[1].split("\n## ", 1)[0]


def test_aggregate_math_layout_missing_and_published_block(tmp_path: Path) -> None:
    spec = SweepSpec(
        "smoke",
        ["sequential", "joint"],
        [0, 1, 2],
        ["paper", "reverse"],
        results_dir=str(tmp_path / "r"),
        dotted=["train.epochs=1"],
    )
    for s in (0, 1, 2):
        _fake_run(spec, Combo("sequential", "paper", s), c=0.5 + 0.1 * s, d=0.05 * (s + 1))
        _fake_run(spec, Combo("joint", "paper", s), c=0.8, d=0.0)
    _fake_run(spec, Combo("sequential", "reverse", 0), c=0.3, d=0.0)  # one seed only
    other = SweepSpec(
        "smoke",
        ["joint"],
        [0],
        ["reverse"],
        results_dir=str(tmp_path / "r"),
        dotted=["train.epochs=2"],
    )
    _fake_run(other, Combo("joint", "reverse", 0), c=0.9, d=0.0)  # a different config: not counted
    state = spec.run_dir(Combo("sequential", "reverse", 1)) / "state"  # an interrupted run
    state.mkdir(parents=True)
    (state / "step_2.pt").write_bytes(b"")

    t = aggregate(spec)
    out = tmp_path / "r" / "smoke" / "sweep"
    assert t.out == out
    by = {(r["order"], r["method"]): r for r in t.summary}
    assert set(by) == {("paper", "sequential"), ("paper", "joint"), ("reverse", "sequential")}
    seq = by[("paper", "sequential")]
    c = np.array([0.5, 0.6, 0.7])
    d = np.array([0.05, 0.10, 0.15])
    assert seq["n_seeds"] == 3 and seq["seeds"] == "0 1 2"
    assert seq["last_iou_mean"] == pytest.approx(np.mean(c + d / 3))
    assert seq["last_iou_std"] == pytest.approx(np.std(c + d / 3, ddof=1))
    assert seq["avg_iou_mean"] == pytest.approx(np.mean(c + d * (1 + 1 / 2 + 1 / 3) / 3))
    assert seq["ff_iou_mean"] == pytest.approx(0.10) and seq["ff_iou_std"] == pytest.approx(0.05)
    assert seq["ff_biou_mean"] == pytest.approx(0.05) and seq["ff_biou_std"] == pytest.approx(0.025)
    joint = by[("paper", "joint")]
    assert joint["last_iou_mean"] == pytest.approx(0.8) and joint["last_iou_std"] == pytest.approx(
        0.0
    )
    assert math.isnan(joint["ff_iou_mean"])  # joint has no FF
    rev = by[("reverse", "sequential")]
    assert rev["n_seeds"] == 1 and math.isnan(rev["last_iou_std"])

    missing = {m.combo.name: m.status for m in t.missing}
    assert set(missing) == {
        "joint-reverse-s0",
        "joint-reverse-s1",
        "joint-reverse-s2",
        "sequential-reverse-s1",
        "sequential-reverse-s2",
    }
    assert "different config" in missing["joint-reverse-s0"]
    assert missing["sequential-reverse-s1"].startswith("interrupted after step 2")
    assert missing["sequential-reverse-s2"] == "not started"

    # compute: training + evaluation seconds per run, summed per order and method
    assert [
        r["compute_s"] for r in t.per_seed if r["order"] == "paper" and r["method"] == "sequential"
    ] == [90.0, 150.0, 210.0]
    comp = md_section(t.markdown, "## Compute")
    assert (
        "| paper | sequential | 3 | 2.5 | 7.5 |" in comp
        and "| reverse | sequential | 1 | 1.5 | 1.5 |" in comp
    )
    assert "**0.28 h** over the 7 finished runs" in comp  # (7.5 + 7.5 + 1.5) min

    sens = {(r["method"], r["metric"]): r for r in t.sensitivity}
    s = sens[("sequential", "last_iou")]
    assert s["paper_n"] == 3 and s["reverse_n"] == 1 and s["n_orders"] == 2
    assert s["range"] == pytest.approx(np.mean(c + d / 3) - 0.3)
    assert sens[("joint", "last_iou")]["n_orders"] == 1 and math.isnan(
        sens[("joint", "last_iou")]["range"]
    )

    md = t.markdown
    assert "SYNTHETIC" in md and "ddof=1" in md and "sample standard deviation" in md
    assert (
        "Finished: **7 of 12** runs" in md
        and "- interrupted after step 2; rerun to resume: sequential-reverse-s1" in md
    )
    assert "- not started: joint-reverse-s1, sequential-reverse-s2, joint-reverse-s2" in md
    last = np.mean(c + d / 3) * 100
    assert f"| sequential | 3 | {last:.1f} ± {np.std(c + d / 3, ddof=1) * 100:.1f} |" in md
    assert "| sequential | 1 | 30.0 ± – |" in md  # one seed: mean and "–"
    # the published block: separate, captioned, the paper's own numbers for our method names
    pub = md.split("## Published Table 2")[1].split("## Order sensitivity")[0]
    assert "backbone and the data differ" in pub and "SAM ViT-B" in pub
    assert "| sequential | HQ-SAM | 68.7±0.59 | 70.9±0.37 | 4.9±0.44 |" in pub
    assert "| joint | Joint Training (Upper Bound) | 76.3±0.31 | – | – |" in pub
    for f in (
        "summary_mean_std.csv",
        "per_seed.csv",
        "order_sensitivity.csv",
        "sweep.md",
        "order_sensitivity.png",
    ):
        assert (out / f).is_file()
    assert (out / "order_sensitivity.png").read_bytes()[:4] == b"\x89PNG"

    loaded = load_sweep(tmp_path / "r", "smoke")
    assert loaded is not None and loaded.synthetic and loaded.orders == ["paper", "reverse"]
    stats = loaded.stats("paper")
    assert stats["sequential"]["ff_iou"] == pytest.approx((0.10, 0.05, 3))
    assert [
        r["seed"] for r in loaded.per_seed if r["order"] == "paper" and r["method"] == "sequential"
    ] == [0, 1, 2]
    assert all(r["data"] == "synthetic" for r in loaded.per_seed)
    from cosam import report_tables

    rows = report_tables.table2_rows(stats)  # the notebooks' table helper takes it as is
    assert rows[0]["method"] == "sequential" and rows[0]["seeds"] == "3"
    assert rows[0]["Last-IoU↑"] in md  # the same text as sweep.md's table
    assert rows[0]["FF-IoU↓"] == "10.0 ± 5.0"
    one = {m: {k: (v[0], float("nan"), 1) for k, v in s.items()} for m, s in stats.items()}
    assert report_tables.table2_rows(one)[0]["FF-IoU↓"] == "10.0"  # one seed only: no "± –"
    mixed = {**one, "extra": stats["sequential"]}
    assert report_tables.table2_rows(mixed)[0]["FF-IoU↓"] == "10.0 ± –"  # beside 3-seed rows
    # embedded in a notebook: headings two levels down, no link to the PNG beside sweep.md, the
    # figure drawn inline from the tables instead
    emb = loaded.embedded_markdown()
    assert "order_sensitivity.png" in md and "order_sensitivity.png" not in emb
    assert emb.startswith("### cosam sweep") and "\n#### Order sensitivity\n" in emb
    fig = loaded.figure()
    assert [ax.get_title() for ax in fig.axes] == ["Last-IoU↑", "FF-IoU↓"]
    import matplotlib.pyplot as plt

    plt.close(fig)
    assert load_sweep(tmp_path / "nothing", "smoke") is None
