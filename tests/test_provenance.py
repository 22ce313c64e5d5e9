"""A finished (or unfinished) run is reused only when everything that decides its numbers matches.

Tiny smoke runs (2 tasks, 4 train / 2 test images, 1 epoch; about 2 s each): the thread count,
the data's content, the recorded code versions and an old run without a recorded identity each
make a finished run non-reusable, with a message naming what differs; the same everything reuses it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator

import numpy as np
import pytest
import torch
from PIL import Image

import cosam.provenance as provenance
import cosam.runner as runner
from cosam.config import Config, make_config, merge
from cosam.data.benchmark import build_benchmark
from cosam.errors import CosamError
from cosam.methods import get_method
from cosam.resources import load_benchmark, resolve_data_root
from cosam.runner import Context, run

SMALL: Dict[str, Any] = {
    "data": {"order": ["BSData", "CAMO"], "train_cap": 4, "test_cap": 2, "probe_cap": 2},
    "train": {"epochs": 1},
}


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def smoke(results: Path, cache: Path, **overrides: Any) -> Config:
    return make_config(
        "smoke",
        merge(
            SMALL,
            {
                "method": "sequential",
                "results_dir": str(results),
                "cache_dir": str(cache),
                **overrides,
            },
        ),
    )


def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any training fail: a reused run must not train."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the finished run was not reused")

    monkeypatch.setattr(runner, "fit", fail)


def test_reused_only_with_the_same_thread_count(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = smoke(tmp_path, cache, threads=1)
    run_dir = run(cfg, ctx=Context())
    identity = json.loads((run_dir / "config.json").read_text())["resolved"]["identity"]
    assert identity["threads"] == 1 and identity["results_schema"] == provenance.RESULTS_SCHEMA
    assert identity["method_version"] == "sequential/1" and identity["weights_id"] == "vit_t-random"
    mtime = (run_dir / "matrix.json").stat().st_mtime_ns

    with monkeypatch.context() as m:
        no_training(m)
        assert run(cfg, ctx=Context()) == run_dir  # same everything: reused
        with pytest.raises(
            CosamError, match=r"differs in: threads: recorded 1, now 2\. Fix: pass --force"
        ):
            run(smoke(tmp_path, cache, threads=2), ctx=Context())
        # threads=None means torch's default: compared as the count in use, here 2
        torch.set_num_threads(2)
        with pytest.raises(CosamError, match=r"threads: recorded 1, now 2"):
            run(smoke(tmp_path, cache, threads=None), ctx=Context())
    assert (run_dir / "matrix.json").stat().st_mtime_ns == mtime  # nothing was overwritten

    # --force re-runs it with the new thread count, recorded
    run(smoke(tmp_path, cache, threads=2), force=True, ctx=Context())
    assert json.loads((run_dir / "config.json").read_text())["resolved"]["identity"]["threads"] == 2
    # its CPU features were computed by 2 threads, in their own cache folder (float16 features
    # differ between thread counts, so a run never reads another thread count's)
    assert list((cache / "features-t2").rglob("*.pt")) and list(
        (cache / "features-t1").rglob("*.pt")
    )


def test_unfinished_run_resumes_only_with_the_same_thread_count(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fit = runner.fit
    calls = {"n": 0}

    def failing_fit(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash in task 2")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runner, "fit", failing_fit)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(smoke(tmp_path, cache, threads=1), ctx=Context())
    monkeypatch.setattr(runner, "fit", real_fit)
    with pytest.raises(
        CosamError,
        match=r"unfinished run .* threads: recorded 1, now 2\. Fix: pass --force to restart",
    ):
        run(smoke(tmp_path, cache, threads=2), ctx=Context())
    assert (
        run(smoke(tmp_path, cache, threads=1), ctx=Context()) / "DONE"
    ).exists()  # same threads: resumes


def test_changed_data_content_is_not_reused(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One edited training image (same name, same size) makes the finished run non-reusable."""
    source = resolve_data_root(smoke(tmp_path, cache))  # the generated smoke data
    data = tmp_path / "data"
    shutil.copytree(source, data)
    cfg = smoke(tmp_path / "runs", cache, data={"root": str(data)})
    run_dir = run(cfg, ctx=Context())
    bench = load_benchmark(cfg)
    image = bench.tasks[0].train[0].image
    pixels = np.asarray(Image.open(image)).copy()
    pixels[:4, :4] = 255 - pixels[:4, :4]
    Image.fromarray(pixels).save(image, quality=95)

    with monkeypatch.context() as m:
        no_training(m)
        with pytest.raises(
            CosamError, match=r"differs in: data_sha1: recorded '[0-9a-f]{40}', now '[0-9a-f]{40}'"
        ):
            run(cfg, ctx=Context())
    # an image the run does not use (a test image beyond test_cap) leaves the fingerprint alone
    full = build_benchmark(data, "cosam-mini", ["BSData", "CAMO"], include_probe=False)
    unused = sorted({s.image for s in full.tasks[1].test} - {s.image for s in bench.tasks[1].test})[
        0
    ]
    before = provenance.data_fingerprint(bench)
    Image.fromarray(255 - np.asarray(Image.open(unused))).save(unused, quality=95)
    assert provenance.data_fingerprint(load_benchmark(cfg)) == before
    assert run(cfg, force=True, ctx=Context()) == run_dir


def test_code_versions_and_old_runs_are_not_reused(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = smoke(tmp_path, cache)
    run_dir = run(cfg, ctx=Context())
    no_training(monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(provenance, "RESULTS_SCHEMA", provenance.RESULTS_SCHEMA + 1)
        with pytest.raises(CosamError, match=r"results_schema: recorded \d+, now \d+"):
            run(cfg, ctx=Context())
    with monkeypatch.context() as m:
        m.setattr(get_method("sequential"), "code_version", 2)
        with pytest.raises(
            CosamError, match=r"method_version: recorded 'sequential/1', now 'sequential/2'"
        ):
            run(cfg, ctx=Context())
    # another config value names its dotted key
    with pytest.raises(CosamError, match=r"train\.lr: recorded 0\.001, now 0\.0003"):
        run(smoke(tmp_path, cache, train={"epochs": 1, "lr": 3e-4}), ctx=Context())
    # a run recorded before identities were (results schema 1) is refused, by run and by the sweep's check
    path = run_dir / "config.json"
    meta = json.loads(path.read_text())
    del meta["resolved"]["identity"]
    path.write_text(json.dumps(meta))
    with pytest.raises(CosamError, match=r"identity: not recorded \(a run of results schema 1"):
        run(cfg, ctx=Context())
    assert not provenance.same_config(meta, cfg)
