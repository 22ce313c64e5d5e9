"""data.tasks: a run over some of the task slots (the demo profile runs four)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosam.config import make_config
from cosam.data import build_benchmark, make_synthetic_benchmark
from cosam.data.domains import REVERSE_ORDER, resolve_order
from cosam.errors import ConfigError

SUBSET = ["Polyp", "BSData", "CAMO", "RSDD_I"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_benchmark(
        tmp_path_factory.mktemp("subset") / "bench", n_train=2, n_test=1, n_probe=1, size=48
    )


def test_named_orders_are_taken_over_the_subset(root: Path) -> None:
    paper = build_benchmark(root, order="paper", domains=SUBSET)
    assert list(paper.order) == ["BSData", "RSDD_I", "CAMO", "Polyp"]
    assert [t.task_id for t in paper.tasks] == [0, 1, 6, 7]  # ids stay the domains' own
    assert list(build_benchmark(root, order="reverse", domains=SUBSET).order) == [
        n for n in REVERSE_ORDER if n in SUBSET
    ]
    for seed in (0, 1, 2):
        shuffled = build_benchmark(root, order="shuffled", seed=seed, domains=SUBSET).order
        assert list(shuffled) == [n for n in resolve_order("shuffled", seed) if n in SUBSET]
    assert paper.probe is not None  # the probe is not a task slot and stays


def test_an_explicit_order_outside_the_subset_is_refused(root: Path) -> None:
    assert list(build_benchmark(root, order="CAMO,BSData", domains=SUBSET).order) == [
        "CAMO",
        "BSData",
    ]
    with pytest.raises(ConfigError, match="MVTec_I.*data.tasks"):
        build_benchmark(root, order=["CAMO", "MVTec_I"], domains=SUBSET)
    with pytest.raises(ConfigError, match="unknown"):
        build_benchmark(root, order="paper", domains=["BSData", "Nope"])


def test_config_key_reaches_the_run(root: Path, tmp_path: Path) -> None:
    from cosam.resources import load_benchmark

    cfg = make_config(
        "smoke",
        {"data": {"root": str(root), "tasks": ["polyp", "bsdata"]}, "results_dir": str(tmp_path)},
    )
    assert list(load_benchmark(cfg).order) == ["BSData", "Polyp"]
