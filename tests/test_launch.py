"""Sweeps through submitit's local executor: one job per run, killed half-way and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cosam.errors import ConfigError
from cosam.grid import SweepSpec
from cosam.launch import launch_sweep, make_executor, parse_options

pytest.importorskip("submitit")

REPO = Path(__file__).resolve().parents[1]
SETS = [
    "data.train_cap=2",
    "data.test_cap=1",
    "data.probe_cap=1",
    "train.epochs=1",
    "progress=false",
]


def _cmd(tmp: Path) -> list:
    args = [
        sys.executable,
        "-m",
        "cosam",
        "sweep",
        "--methods",
        "zeroshot",
        "--seeds",
        "0",
        "1",
        "2",
        "--profile",
        "smoke",
        "--results-dir",
        str(tmp / "runs"),
        "--set",
        f"cache_dir={tmp / 'cache'}",
        "--launcher",
        "submitit",
        "--parallel",
        "1",
    ]
    for s in SETS:
        args += ["--set", s]
    return args


def test_launcher_options_are_checked_before_any_job(tmp_path: Path) -> None:
    assert parse_options(["partition=gpu", "time=600", "gpus_per_node=1"]) == {
        "partition": "gpu",
        "time": 600,
        "gpus_per_node": 1,
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_options(["partition"])
    with pytest.raises(ConfigError, match="--cluster"):
        make_executor("kubernetes", tmp_path, {})
    with pytest.raises(ConfigError, match="--launcher-opt for the local executor"):
        make_executor("local", tmp_path, {"no_such_parameter": 1})
    spec = SweepSpec(profile="smoke", methods=["zeroshot"], results_dir=str(tmp_path / "runs"))
    with pytest.raises(ConfigError, match="--parallel"):
        launch_sweep(spec, parallel=0)
    assert not (tmp_path / "runs").exists()  # nothing written for a bad call


def test_debug_executor_gives_the_in_process_matrix(tmp_path: Path) -> None:
    """A job runs exactly the config `cosam run` builds: same matrix as the in-process sweep."""
    from cosam.sweep import run_sweep

    common = dict(
        profile="smoke",
        methods=["sequential"],
        seeds=[0],
        orders=["paper"],
        dotted=SETS + [f"cache_dir={tmp_path / 'cache'}"],
    )
    a = SweepSpec(results_dir=str(tmp_path / "a"), **common)
    b = SweepSpec(results_dir=str(tmp_path / "b"), **common)
    (oa,), _ = run_sweep(a, echo=lambda _: None)
    (ob,), _ = launch_sweep(b, cluster="debug", echo=lambda _: None)
    assert (oa.status, ob.status) == ("ran", "ran")
    ma = json.loads((oa.run_dir / "matrix.json").read_text())
    mb = json.loads((ob.run_dir / "matrix.json").read_text())
    assert ma == mb


def test_killed_submitit_sweep_restarts_to_completion(tmp_path: Path) -> None:
    """SIGKILL the launcher and its jobs once the first run is done; the same command then reuses
    that run, runs the others through new jobs and writes the aggregate of all three."""
    runs = tmp_path / "runs" / "smoke"
    first = runs / "zeroshot-paper-s0" / "DONE"
    proc = subprocess.Popen(
        _cmd(tmp_path),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not first.exists():
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the first job did not finish in 240 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every job it started
        proc.wait()
    done = sorted(p.parent.name for p in runs.glob("*/DONE"))
    assert len(done) < 3, "the sweep finished before it was killed: the test proves nothing"
    out = subprocess.run(_cmd(tmp_path), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "zeroshot-paper-s0: reused" in out.stdout
    assert sorted(p.parent.name for p in runs.glob("*/DONE")) == [
        f"zeroshot-paper-s{s}" for s in range(3)
    ]
    per_seed = (runs / "sweep" / "per_seed.csv").read_text().strip().splitlines()
    assert len(per_seed) == 1 + 3
    manifest = json.loads((runs / "sweep" / "sweep.json").read_text())
    assert manifest["launcher"]["name"] == "submitit" and manifest["launcher"]["cluster"] == "local"
    assert list((runs / "sweep" / "submitit").glob("*_log.out"))
