"""cosam.rundir owns the run folder: its name, lock, saved steps and DONE; no other module builds
those names itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from cosam.config import make_config
from cosam.errors import CosamError
from cosam.rundir import RunDir, RunLock, parse_run_name, run_name

PACKAGE = Path(__file__).resolve().parents[1] / "cosam"


def test_names_round_trip_and_follow_the_config(tmp_path: Path) -> None:
    assert run_name("decoder_tuning+ewc", "shuffled", 3) == "decoder_tuning+ewc-shuffled-s3"
    assert parse_run_name(run_name("sequential_moda", "reverse", 12, val=True)) == (
        "sequential_moda",
        "reverse",
        12,
        True,
    )
    assert parse_run_name("sequential-custom-s0") is None
    cfg = make_config("smoke", {"results_dir": str(tmp_path), "method": "ewc", "seed": 4})
    assert RunDir.for_config(cfg).path == tmp_path / "smoke" / "ewc-paper-s4"
    val = make_config(
        "smoke", {"results_dir": str(tmp_path), "eval": {"split": "val"}, "data": {"val_cap": 2}}
    )
    assert RunDir.for_config(val).path.name.endswith("-val")
    named = make_config("smoke", {"results_dir": str(tmp_path), "run_name": "mine"})
    assert RunDir.for_config(named).path == tmp_path / "smoke" / "mine"
    custom = make_config("smoke", {"results_dir": str(tmp_path), "data": {"order": "CAMO,Polyp"}})
    assert RunDir.for_config(custom).path.name == "sequential-custom-s0"


def test_steps_done_and_lock(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "r")
    assert rd.steps() == [] and rd.last_step() is None and not rd.is_done() and not rd.busy()
    assert rd.plan() == "ran"
    rd.state_dir.mkdir(parents=True)
    for t in (10, 2, 9):
        rd.step_path(t).write_bytes(b"x")
    (rd.state_dir / "step_x.pt").write_bytes(b"x")  # not a step file
    (rd.state_dir / "step_3.pt.tmp").write_bytes(b"x")  # an unfinished write
    assert rd.steps() == [2, 9, 10] and rd.last_step() == 10  # numeric, not lexical, order
    assert rd.plan() == "resumed" and rd.plan(force=True) == "ran"
    rd.drop_steps(below=10)
    assert rd.steps() == [10]
    rd.mark_done()
    assert rd.is_done() and rd.plan() == "reused" and rd.plan(force=True) == "ran"
    with rd.lock():
        # another process sees the run as busy, and cannot take the lock
        code = (
            "import sys; from cosam.rundir import RunDir; from cosam.errors import CosamError\n"
            f"rd = RunDir({str(rd.path)!r}); assert rd.busy()\n"
            "try:\n    rd.lock().__enter__()\nexcept CosamError as e:\n    print(e)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "is in use by another cosam process" in out.stdout
    assert not rd.busy()
    rd.remove_if_empty()
    assert rd.path.is_dir()  # finished: kept
    empty = RunDir(tmp_path / "empty")
    with empty.lock():
        empty.config_path.write_text("{}")
    empty.remove_if_empty()
    assert not empty.path.exists()  # nothing finished, no step: nothing left behind
    with pytest.raises(CosamError, match="cannot write the run folder"):
        (tmp_path / "file").write_text("")
        RunLock(tmp_path / "file" / "r").__enter__()


def test_no_other_module_spells_the_run_folder_files() -> None:
    """'DONE', 'step_' and '.lock' string literals appear in cosam.rundir only (the generated data's
    own lock in cosam.data aside)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "rundir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                v = node.value
                lock = v == ".lock" and "data" not in path.parts
                if v == "DONE" or lock or v.startswith("step_") or "step_*" in v:
                    offenders.append(f"{path.name}:{node.lineno} {v!r}")
    assert offenders == []
