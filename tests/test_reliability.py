"""Reliability: SIGKILL at every fail point then resume; locks; unwritable folders; full disk;
custom domain lists."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cosam.config import make_config
from cosam.data import build_benchmark, make_synthetic_benchmark
from cosam.errors import ConfigError, CosamError
from cosam.rundir import RunDir, RunLock
from cosam.runner import run

REPO = Path(__file__).resolve().parents[1]
ORDER = "BSData,CAMO,Polyp"
# The smoke profile's training (8 steps per task at lr 1e-3), which learns CAMO's generated blobs:
# the resumed matrices are compared on trained rows, not on row 0 or all-zero rows.
SETS = ["data.train_cap=4", "data.test_cap=2", "data.probe_cap=2", "progress=false"]


def _cmd(results: Path, cache: Path) -> list:
    args = [
        sys.executable,
        "-m",
        "cosam",
        "run",
        "--method",
        "sequential",
        "--profile",
        "smoke",
        "--order",
        ORDER,
        "--results-dir",
        str(results),
        "--set",
        f"cache_dir={cache}",
    ]
    for s in SETS:
        args += ["--set", s]
    return args


def _matrix(results: Path) -> dict:
    (run,) = list((results / "smoke").iterdir())
    return json.loads((run / "matrix.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("ref")
    out = subprocess.run(
        _cmd(base / "runs", base / "cache"), cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    matrix = _matrix(base / "runs")
    camo = matrix["tasks"].index("CAMO")
    gain = matrix["iou"][camo + 1][camo] - matrix["iou"][0][camo]
    assert gain >= 0.10, (
        f"training on CAMO raised its IoU by {gain:.3f} only (want >= 0.10 over row 0)"
    )
    return matrix


@pytest.mark.parametrize("point", ["encode:3", "train:3", "eval:5", "checkpoint:2", "write:1"])
def test_sigkill_then_resume_gives_the_uninterrupted_matrix(
    point: str, tmp_path: Path, reference: dict
) -> None:
    """Killed with SIGKILL at a fail point, the same command resumes and ends with the same matrix."""
    cmd = _cmd(tmp_path / "runs", tmp_path / "cache")
    killed = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COSAM_FAULT": point},
    )
    assert killed.returncode == -9, (
        f"the fail point {point} was not reached: {killed.stderr[-1500:]}"
    )
    resumed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _matrix(tmp_path / "runs") == reference


def test_second_process_is_refused_by_the_lock(tmp_path: Path) -> None:
    cfg = make_config(
        "smoke",
        {
            "method": "zeroshot",
            "results_dir": str(tmp_path / "r"),
            "cache_dir": str(tmp_path / "c"),
        },
    )
    with RunLock(RunDir.for_config(cfg).path):
        with pytest.raises(CosamError, match="in use by another cosam process"):
            run(cfg)


def test_unwritable_results_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = make_config(
        "smoke",
        {
            "method": "zeroshot",
            "results_dir": str(blocker / "runs"),
            "cache_dir": str(tmp_path / "c"),
        },
    )
    with pytest.raises(CosamError, match="cannot write the run folder .*writable results_dir"):
        run(cfg)


def test_full_disk_during_a_write_leaves_no_partial_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while writing: the error names the file; no run folder or temp file is left."""
    import cosam.io as cio

    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    cfg = make_config(
        "smoke",
        {
            "method": "zeroshot",
            "results_dir": str(tmp_path / "r"),
            "cache_dir": str(tmp_path / "c"),
        },
    )
    run(
        make_config(
            "smoke",
            {
                "method": "zeroshot",
                "results_dir": str(tmp_path / "warm"),
                "cache_dir": str(tmp_path / "c"),
            },
        )
    )
    monkeypatch.setattr(cio.os, "fsync", full)
    with pytest.raises(CosamError, match=r"cannot write .*config\.json: No space left on device"):
        run(cfg)
    monkeypatch.setattr(cio.os, "fsync", real_fsync)
    assert not RunDir.for_config(cfg).path.exists()
    assert not list((tmp_path / "r").rglob("*.tmp"))


def test_bad_mask_fails_before_anything_is_written(tmp_path: Path) -> None:
    root = make_synthetic_benchmark(tmp_path / "data", n_train=4, n_test=2, n_probe=2)
    victim = sorted((root / "polyp" / "train" / "masks").glob("*.png"))[0]
    victim.unlink()
    cfg = make_config(
        "smoke",
        {
            "method": "zeroshot",
            "results_dir": str(tmp_path / "r"),
            "cache_dir": str(tmp_path / "c"),
            "data": {"root": str(root)},
        },
    )
    with pytest.raises(CosamError, match=victim.stem):
        run(cfg)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("config.json"))


def test_custom_domain_list_runs_like_the_builtin_benchmark(tmp_path: Path) -> None:
    root = make_synthetic_benchmark(tmp_path / "data", n_train=4, n_test=2, n_probe=2)
    layout = tmp_path / "domains.yaml"
    layout.write_text(
        "tasks:\n"
        "  - name: Cracks\n"
        "    train: {images: crackforest/train/images, masks: crackforest/train/masks}\n"
        "    test: {images: crackforest/test/images, masks: crackforest/test/masks}\n"
        "  - name: Salient\n"
        "    train: {images: ecssd/train/images, masks: ecssd/train/masks}\n"
        "    test: {images: ecssd/test/images, masks: ecssd/test/masks}\n"
        "probe:\n"
        "  name: Natural\n"
        "  test: {images: natural_coco/test/images, masks: natural_coco/test/masks}\n"
    )
    bench = build_benchmark(root, str(layout), "reverse")
    assert [t.name for t in bench.tasks] == ["Salient", "Cracks"]
    assert {t.name: t.task_id for t in bench.tasks} == {"Cracks": 0, "Salient": 1}
    assert bench.probe is not None and bench.probe.name == "Natural"
    cfg = make_config(
        "smoke",
        {
            "method": "sequential",
            "results_dir": str(tmp_path / "r"),
            "cache_dir": str(tmp_path / "c"),
            "data": {"root": str(root), "layout": str(layout)},
            "train": {"epochs": 1},
        },
    )
    out = run(cfg)
    m = json.loads((out / "matrix.json").read_text())
    assert m["tasks"] == ["Cracks", "Salient"] and m["probe"] == "Natural"
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - name: X\n    train: {images: a}\n    test: {images: a, masks: b}\n")
    with pytest.raises(
        ConfigError,
        match="bad.yaml: tasks\\[0\\].train must be a mapping with 'images' and 'masks'",
    ):
        build_benchmark(root, str(bad))
