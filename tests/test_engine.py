"""End-to-end tests of cosam.runner on the smoke profile (synthetic data, random vit_t at 64 px).

Runs are kept tiny (4 train / 2 test images per task, 2 probe images) and use one torch thread:
these tensors are too small to gain from two, and on a loaded 2-core machine two threads
oversubscribe the cores and run many times slower.
"""

from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch

import cosam.resources as resources
import cosam.runner as runner
from cosam.cli import main
from cosam.config import Config, make_config, merge
from cosam.data import PAPER_ORDER, PROBE, resolve_order
from cosam.errors import CosamError
from cosam.rundir import RunDir
from cosam.runner import Context, run

METHODS = ("zeroshot", "sequential", "joint")
SMALL: Dict[str, Any] = {"data": {"train_cap": 4, "test_cap": 2, "probe_cap": 2}}
RESULT_FILES = (
    "config.json",
    "matrix.json",
    "metrics.csv",
    "per_image.csv",
    "costs.json",
    "timing.json",
    "DONE",
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache (and generated data set) for the whole module."""
    return tmp_path_factory.mktemp("cache")


def smoke(method: str, results: Path, cache: Path, **overrides: Any) -> Config:
    return make_config(
        "smoke",
        merge(
            SMALL,
            {"method": method, "results_dir": str(results), "cache_dir": str(cache), **overrides},
        ),
    )


def matrix(run_dir: Path) -> Dict[str, Any]:
    return json.loads((run_dir / "matrix.json").read_text())


def losses(run_dir: Path) -> list:
    """Per-step training-loss histories (timing.json): sensitive to every weight and every batch."""
    return [s["loss"] for s in json.loads((run_dir / "timing.json").read_text())["steps"]]


def final_state(run_dir: Path) -> Dict[str, torch.Tensor]:
    """The trained modules of the last checkpoint (state/step_<last>.pt)."""
    (path,) = list((run_dir / "state").glob("step_*.pt"))
    return torch.load(path, map_location="cpu", weights_only=False)["strategy"]["modules"]


def own_task_gain(run_dir: Path) -> float:
    """The largest rise, over the tasks, of a task's IoU from row 0 to the row after training on it
    (sequential: the diagonal; joint: its one trained row)."""
    iou = np.array(matrix(run_dir)["iou"], dtype=float)
    n = iou.shape[1] - 1  # the last column is the probe
    trained = np.array([iou[i + 1, i] for i in range(n)]) if iou.shape[0] == n + 1 else iou[-1, :n]
    return float((trained - iou[0, :n]).max())


# The smoke profile learns the generated CAMO blobs: sequential's own-task IoU rose by 13.6 to 40.6
# points (seeds 0-1, paper and reverse orders); a run that did not train, or trained the wrong
# weights, stays at row 0 or falls to empty masks (0.0).
MIN_GAIN = 0.10
JOINT_MIN_GAIN = 0.05


def assert_learns(run_dir: Path, margin: float = MIN_GAIN) -> None:
    """Training raised some task's own IoU above row 0 by ``margin`` (a comparison of trained rows
    that differ from row 0, not of two all-zero matrices)."""
    gain = own_task_gain(run_dir)
    assert gain >= margin, (
        f"{run_dir.name}: own-task IoU rose by at most {gain:.3f} over row 0 (want >= {margin})"
    )


def assert_same_run(a: Path, b: Path) -> None:
    """Identical matrices, loss histories and trained weights. (The random smoke model learns
    only some domains and predicts empty masks on the others, so the IoU matrix alone would be a
    weak check.)"""
    assert matrix(a) == matrix(b)
    assert losses(a) == losses(b)
    sa, sb = final_state(a), final_state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Dict[str, Any]:
    """The three smoke runs, in one results folder; each with a fresh Context (reads the disk cache)."""
    results = tmp_path_factory.mktemp("runs")
    out: Dict[str, Any] = {"results": results, "ctx": {}}
    for m in METHODS:
        ctx = Context()
        out[m] = run(smoke(m, results, cache), ctx=ctx)
        out["ctx"][m] = ctx
    return out


def test_methods_write_every_result_file(runs: Dict[str, Any]) -> None:
    """Each method finishes and writes the result files, provenance and the SYNTHETIC flag."""
    for m in METHODS:
        d = runs[m]
        assert d.name == f"{m}-paper-s0" and d.parent.name == "smoke"
        for f in RESULT_FILES:
            assert (d / f).is_file(), f"{m}: {f} missing"
        meta = json.loads((d / "config.json").read_text())
        assert meta["config"]["method"] == m and meta["config"]["profile"] == "smoke"
        assert "sha" in meta["provenance"]["git"]
        assert meta["provenance"]["versions"]["torch"] == metadata.version("torch")
        assert meta["resolved"]["synthetic"] is True
        assert meta["resolved"]["backbone"] == "vit_t" and meta["resolved"]["image_size"] == 64
        assert meta["resolved"]["weights_id"] == "vit_t-random"
        assert (Path(meta["resolved"]["data_root"]) / "SYNTHETIC.md").is_file()
        metrics = (d / "metrics.csv").read_text().splitlines()
        assert len(metrics) == 3 and "synthetic" in metrics[0] and ",True," in metrics[1]
    shapes = {"zeroshot": 1, "sequential": 9, "joint": 2}
    for m, n_rows in shapes.items():
        mat = matrix(runs[m])
        assert mat["tasks"] == list(PAPER_ORDER) and mat["probe"] == PROBE
        assert np.array(mat["iou"], dtype=float).shape == (n_rows, 9)
        assert np.array(mat["biou"], dtype=float).shape == (n_rows, 9)
    # every cell scored but the tasks not trained yet (eval.unseen_tasks off): the upper triangle
    for m in METHODS:
        iou = np.array(matrix(runs[m])["iou"], dtype=float)
        unscored = np.zeros_like(iou, dtype=bool)
        if m == "sequential":
            unscored[:, :8] = np.triu(np.ones((9, 8), dtype=bool))
            unscored[0] = False
        assert (np.isnan(iou) == unscored).all(), m
    assert matrix(runs["sequential"])["rows"] == ["before", *PAPER_ORDER]
    assert matrix(runs["joint"])["rows"] == ["before", "joint"]
    per_image = (runs["sequential"] / "per_image.csv").read_text().splitlines()
    # header + row 0 (8 tasks x 2 test images + 2 probe) + row t (t seen tasks x 2 + 2 probe)
    assert len(per_image) == 1 + (8 * 2 + 2) + sum(t * 2 + 2 for t in range(1, 9))


def test_unseen_tasks_are_scored_on_request_and_change_nothing_else(
    runs: Dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """eval.unseen_tasks fills the upper triangle; every other cell, per-image score and summary
    is the same bytes, so skipping it (the default) changes no reported number."""
    full = run(smoke("sequential", tmp_path, cache, eval={"unseen_tasks": True}), ctx=Context())
    a, b = matrix(runs["sequential"]), matrix(full)
    for metric in ("iou", "biou"):
        x, y = np.array(a[metric], dtype=float), np.array(b[metric], dtype=float)
        assert not np.isnan(y).any()
        seen = ~np.isnan(x)
        assert seen.sum() == 9 * 9 - 28  # the 28 cells above the diagonal are the only ones skipped
        assert (x[seen] == y[seen]).all()
    assert losses(full) == losses(runs["sequential"])
    read = {d: (d / "metrics.csv").read_text().splitlines() for d in (runs["sequential"], full)}
    assert read[full] == read[runs["sequential"]]


def test_untrained_hq_row_equals_zeroshot(runs: Dict[str, Any]) -> None:
    """Row 0 of the HQ methods (untrained branch) reproduces SAM's zero-shot row."""
    zs = matrix(runs["zeroshot"])
    for m in ("sequential", "joint"):
        mat = matrix(runs[m])
        for metric in ("iou", "biou"):
            np.testing.assert_allclose(mat[metric][0], zs[metric][0], atol=1e-6, rtol=0)
    # and training did change something afterwards (the last row scores every task)
    assert not np.allclose(matrix(runs["sequential"])["iou"][-1], zs["iou"][0], atol=1e-6)
    assert (
        all(len(h) == 4 for h in losses(runs["sequential"]))
        and len(losses(runs["sequential"])) == 8
    )


def test_training_raises_own_task_iou(runs: Dict[str, Any]) -> None:
    """The trained rows the other tests compare differ from row 0: training raises an own-task IoU."""
    assert_learns(runs["sequential"])
    assert_learns(runs["joint"], margin=JOINT_MIN_GAIN)


def test_same_config_is_deterministic_and_seed_matters(
    runs: Dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """The same config in another folder gives the identical matrix; another seed gives another one."""
    again = run(smoke("sequential", tmp_path / "again", cache), ctx=Context())
    assert_same_run(again, runs["sequential"])
    assert_learns(again)
    other = run(smoke("sequential", tmp_path / "seed1", cache, seed=1), ctx=Context())
    assert_learns(other)
    assert other.name == "sequential-paper-s1"
    a = np.array(matrix(runs["sequential"])["iou"], dtype=float)
    b = np.array(matrix(other)["iou"], dtype=float)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)  # before training the seed plays no part
    assert np.nanmax(np.abs(a[1:] - b[1:])) > 1e-4
    la, lb = losses(runs["sequential"]), losses(other)
    assert all(x != y for x, y in zip(la, lb))  # every task saw other batches / prompts / init


def test_resume_after_failure_equals_uninterrupted(
    runs: Dict[str, Any], cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed in task 4 keeps state/step_3.pt; rerunning resumes there and ends identical."""
    real_fit = runner.fit
    calls = {"n": 0}

    def failing_fit(*args: Any, **kwargs: Any) -> Dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash in task 4")
        return real_fit(*args, **kwargs)

    cfg = smoke("sequential", tmp_path / "resume", cache)
    monkeypatch.setattr(runner, "fit", failing_fit)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg, ctx=Context())
    run_dir = RunDir.for_config(cfg).path
    assert sorted(p.name for p in (run_dir / "state").glob("step_*.pt")) == ["step_3.pt"]
    assert not (run_dir / "DONE").exists() and not (run_dir / "matrix.json").exists()

    resumed_calls = {"n": 0}

    def counting_fit(*args: Any, **kwargs: Any) -> Dict[str, Any]:
        resumed_calls["n"] += 1
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runner, "fit", counting_fit)
    before_s = torch.load(run_dir / "state" / "step_3.pt", weights_only=False)["timing"][
        "elapsed_s"
    ]
    t0 = time.perf_counter()
    assert run(cfg, ctx=Context()) == run_dir
    second_s = time.perf_counter() - t0
    assert resumed_calls["n"] == 5  # tasks 4..8 only: tasks 1..3 were not retrained
    assert_same_run(run_dir, runs["sequential"])
    assert_learns(run_dir)  # the identical matrices are trained ones, not row 0 or all-zero rows
    # total_s spans both invocations (the first up to its last checkpoint), not only the second
    timing = json.loads((run_dir / "timing.json").read_text())
    assert timing["resumed"] == 1 and before_s > 0.0
    assert before_s < timing["total_s"] <= before_s + second_s
    assert "resumed" not in json.loads((runs["sequential"] / "timing.json").read_text())


def test_finished_run_is_reused_and_a_different_config_refused(
    runs: Dict[str, Any], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished run is returned without training; another config in its folder needs --force."""

    def no_fit(*args: Any, **kwargs: Any) -> Dict[str, Any]:
        raise AssertionError("fit must not be called for a finished run")

    monkeypatch.setattr(runner, "fit", no_fit)
    before = (runs["sequential"] / "matrix.json").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert run(smoke("sequential", runs["results"], cache), ctx=Context()) == runs["sequential"]
    assert time.perf_counter() - t0 < 2.0
    assert (runs["sequential"] / "matrix.json").stat().st_mtime_ns == before
    changed = smoke("sequential", runs["results"], cache, train={"lr": 0.5})
    with pytest.raises(CosamError, match="--force"):
        run(changed, ctx=Context())


def test_feature_cache_is_reused_across_methods(
    runs: Dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """The first run encodes into the disk cache; later runs (fresh Context) encode nothing."""
    entries = list((cache / "features-t1").rglob("*.pt"))  # the smoke profile's one thread
    n_images = 8 * (4 + 2) + 2
    assert len(entries) >= n_images
    zs, seq, joint = (runs["ctx"][m].cache for m in METHODS)
    assert (zs.misses, zs.hits) == (8 * 2 + 2, 0)  # zero-shot encodes the test + probe images
    assert (seq.misses, seq.hits) == (8 * 4, 8 * 2 + 2)  # sequential adds only the training images
    assert (joint.misses, joint.hits) == (0, n_images)  # joint finds everything on disk
    assert json.loads((runs["joint"] / "timing.json").read_text())["encode_s"] == 0.0
    assert json.loads((runs["zeroshot"] / "timing.json").read_text())["encode_s"] > 0.0
    ctx = Context()
    run(smoke("zeroshot", tmp_path / "other", cache), ctx=ctx)
    assert ctx.cache is not None and ctx.cache.misses == 0 and ctx.cache.hits == 8 * 2 + 2


def test_shuffled_order_follows_resolve_order(
    runs: Dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """data.order=shuffled orders the columns as resolve_order(seed) and tags the run folder."""
    zs = matrix(runs["zeroshot"])
    paper_iou = dict(zip(zs["tasks"], zs["iou"][0]))
    orders = []
    for seed in (0, 1):
        d = run(
            smoke("zeroshot", tmp_path, cache, seed=seed, data={"order": "shuffled"}), ctx=Context()
        )
        assert "shuffled" in d.name and d.name.endswith(f"s{seed}")
        mat = matrix(d)
        assert mat["tasks"] == resolve_order("shuffled", seed)
        assert json.loads((d / "config.json").read_text())["resolved"]["order"] == mat["tasks"]
        # The same domain scores the same wherever it sits in the order.
        for name, value in zip(mat["tasks"], mat["iou"][0]):
            assert value == pytest.approx(paper_iou[name], abs=1e-9)
        orders.append(mat["tasks"])
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(PAPER_ORDER)


def test_cli_run_and_unknown_method(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cosam run`` returns 0 and prints the SYNTHETIC matrix; an unknown method returns 2 and lists the methods."""
    args = [
        "--profile",
        "smoke",
        "--results-dir",
        str(tmp_path / "cli"),
        "--set",
        f"cache_dir={cache}",
        "--set",
        "data.train_cap=4",
        "--set",
        "data.test_cap=2",
        "--set",
        "data.probe_cap=2",
    ]
    assert main(["run", "--method", "zeroshot", *args]) == 0
    out = capsys.readouterr().out
    assert (
        "SYNTHETIC" in out and (tmp_path / "cli" / "smoke" / "zeroshot-paper-s0" / "DONE").is_file()
    )
    assert main(["run", "--method", "nope", *args]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and all(m in err for m in METHODS)


def test_default_profile_runs_on_generated_data_without_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh machine (no ../shared, no COSAM_DATA): the `cpu` profile's benchmark is generated
    with enough training pairs for its validation carve (16) and still trains on 12 per domain."""
    monkeypatch.delenv("COSAM_DATA", raising=False)
    monkeypatch.setattr(resources, "REPO_ROOT", tmp_path / "repo")  # ../shared does not exist there
    cfg = make_config("cpu", {"cache_dir": str(tmp_path / "cache")})
    assert cfg.data.val_cap == 16 and cfg.data.root is None
    bench = resources.load_benchmark(cfg)
    assert bench.synthetic
    assert all(len(t.train) == resources.SYNTHETIC_TRAIN and len(t.val) == 16 for t in bench.tasks)
