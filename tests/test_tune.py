"""Validation split and `python -m cosam tune`: choices are made on train + validation only.

Smoke profile, 2 tasks (BSData, CAMO), 4 train and 2 validation images per task, 1 epoch: each
grid point is a run of about 2 s. The data loading is instrumented: during tuning no test-split
file is listed or opened, training sees only train pairs and evaluation only validation pairs.
"""

from __future__ import annotations

import builtins
import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import cosam.data.benchmark as benchmark
import cosam.runner as runner
from cosam.cli import main
from cosam.config import make_config
from cosam.data import build_benchmark
from cosam.data.synthetic import make_synthetic_benchmark
from cosam.errors import ConfigError, DataError
from cosam.methods import get_method
from cosam.tune import TuneSpec, choose, parse_grid, run_tune

COMMON = [
    "--profile",
    "smoke",
    "--order",
    "BSData,CAMO",
    "--set",
    "data.train_cap=4",
    "--set",
    "data.val_cap=2",
    "--set",
    "train.epochs=1",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_validation_split_is_carved_from_train_and_keeps_capped_training_sets(
    tmp_path: Path,
) -> None:
    root = make_synthetic_benchmark(tmp_path / "data", n_train=12, n_test=4, n_probe=2, size=32)
    plain = build_benchmark(root, order=["BSData", "CAMO"], train_cap=4)
    held = build_benchmark(root, order=["BSData", "CAMO"], train_cap=4, val_cap=3)
    for a, b in zip(plain.tasks, held.tasks):
        assert len(b.val) == 3 and all(
            s.split == "val" and "/train/" in str(s.image) for s in b.val
        )
        assert not {s.name for s in b.val} & {s.name for s in b.train}  # disjoint
        assert a.train == b.train and a.test == b.test  # the capped training set is unchanged
    uncapped = build_benchmark(root, order=["BSData"], val_cap=3)
    assert len(uncapped.tasks[0].train) == 9  # everything but validation
    only_val = build_benchmark(root, order=["BSData", "CAMO"], val_cap=3, eval_split="val")
    assert only_val.probe is None and all(t.test == () for t in only_val.tasks)
    assert [t.val for t in only_val.tasks] == [t.val for t in held.tasks]
    with pytest.raises(DataError, match="val_cap=12 holds out every one of the 12 training pairs"):
        build_benchmark(root, order=["BSData"], val_cap=12)
    with pytest.raises(ConfigError, match="eval.split=val needs a validation split"):
        make_config("smoke", {"eval": {"split": "val"}})


def test_parse_grid_and_choose() -> None:
    assert parse_grid(["train.lr=1e-4,1e-3", "train.epochs=4"]) == {
        "train.lr": [1e-4, 1e-3],
        "train.epochs": [4],
    }
    for bad, message in (
        (["train.lr"], "must look like"),
        (["eval.split=val,test"], "set by the tuning itself"),
        (["train.lr=1e-4", "train.lr=1e-3"], "given twice"),
        ([], "needs a grid"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_grid(bad)
    rows = [{"s": 0.2}, {"s": math.nan}, {"s": 0.5}, {"s": 0.5}]
    assert choose(rows, "s") == 2  # the highest finite score, the first on a tie
    with pytest.raises(ConfigError, match="no grid point has a finite"):
        choose([{"s": math.nan}], "s")


def test_tune_writes_grid_scores_and_the_argmax(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # lr 1e-3 wrecks the random-weight smoke model; 1e-7 leaves it near its zero-shot IoU
    argv = [
        "tune",
        "--method",
        "sequential",
        "--grid",
        "train.lr=1e-3,1e-7",
        *COMMON,
        "--results-dir",
        str(tmp_path),
        "--set",
        f"cache_dir={cache}",
    ]
    assert main(argv) == 0
    out = tmp_path / "smoke" / "tune" / "sequential"
    record = json.loads((out / "tune.json").read_text())
    scores = [p["last_iou"] for p in record["points"]]
    assert record["grid"] == {"train.lr": [1e-3, 1e-7]} and record["criterion"] == "last_iou"
    assert (
        record["split"] == "val"
        and record["val_cap"] == 2
        and record["order"] == ["BSData", "CAMO"]
    )
    assert scores[1] > scores[0]
    assert record["choice"] == {"train.lr": 1e-7} and record["choice_score"] == max(scores)
    with open(out / "tune.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["train.lr"] for r in rows] == ["0.001", "1e-07"] and [r["chosen"] for r in rows] == [
        "False",
        "True",
    ]
    for point in record[
        "points"
    ]:  # ordinary run folders measured on validation: tasks only, no probe
        run_dir = (
            out / Path(point["run_dir"]).name
        )  # recorded portably: the folder's name outside the repo
        meta = json.loads((run_dir / "config.json").read_text())
        assert run_dir.parent == out and meta["config"]["eval"]["split"] == "val"
        mat = json.loads((run_dir / "matrix.json").read_text())
        assert mat["tasks"] == ["BSData", "CAMO"] and mat["probe"] is None
        assert [r["n_test"] for r in meta["resolved"]["benchmark"]] == [0, 0]
    assert "choice (last_iou on validation): train.lr=1e-07" in capsys.readouterr().out
    # learning.csv: per point and task, the own-task rise read from that point's matrix
    with open(out / "learning.csv") as f:
        learning = list(csv.DictReader(f))
    assert [(r["train.lr"], r["task"]) for r in learning] == [
        ("0.001", "BSData"),
        ("0.001", "CAMO"),
        ("1e-07", "BSData"),
        ("1e-07", "CAMO"),
    ]
    for point, pair in zip(record["points"], (learning[:2], learning[2:])):
        iou = json.loads((out / Path(point["run_dir"]).name / "matrix.json").read_text())["iou"]
        expected = [100 * (iou[j + 1][j] - iou[0][j]) for j in range(2)]
        assert [float(r["rise_points"]) for r in pair] == pytest.approx(expected, abs=0.01)
        assert [r["rises"] == "True" for r in pair] == [e >= 3.0 for e in expected]
        assert point["tasks_rising"] == sum(e >= 3.0 for e in expected)
    # a second tuning reuses the finished points
    assert (
        main(argv) == 0
        and json.loads((out / "tune.json").read_text())["points"] == record["points"]
    )


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Dict[str, List[Any]]]:
    """Record every file opened for reading, every split listed, and the splits of the samples
    that training (fit) and evaluation (evaluate) receive."""
    log: Dict[str, List[Any]] = {"opened": [], "listed": [], "trained": [], "evaluated": []}
    real_open, real_io_open = builtins.open, io.open

    def record(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, Path)) and not any(c in mode for c in "wax+"):
            log["opened"].append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def record_io(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, Path)) and not any(c in mode for c in "wax+"):
            log["opened"].append(str(file))
        return real_io_open(file, mode, *args, **kwargs)

    real_list, real_fit, real_evaluate = benchmark.list_samples, runner.fit, runner.evaluate

    def list_samples(root: Path, spec: Any, name: str, split: str) -> Any:
        log["listed"].append(split)
        return real_list(root, spec, name, split)

    def fit(strategy: Any, source: Any, *args: Any, **kwargs: Any) -> Any:
        log["trained"].extend(s.split for s, _ in source.samples)
        return real_fit(strategy, source, *args, **kwargs)

    def evaluate(strategy: Any, sets: Any, *args: Any, **kwargs: Any) -> Any:
        log["evaluated"].extend(s.split for es in sets for s in es.samples)
        return real_evaluate(strategy, sets, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", record)
    monkeypatch.setattr(io, "open", record_io)
    monkeypatch.setattr(benchmark, "list_samples", list_samples)
    monkeypatch.setattr(runner, "fit", fit)
    monkeypatch.setattr(runner, "evaluate", evaluate)
    yield log


def test_tuning_never_reads_the_test_split(
    cache: Path, tmp_path: Path, reads: Dict[str, List[Any]]
) -> None:
    data = make_synthetic_benchmark(tmp_path / "data", n_train=12, n_test=4, n_probe=2, size=48)
    spec = TuneSpec(
        "smoke",
        "sequential",
        {"train.lr": [1e-4, 1e-3]},
        {
            "results_dir": str(tmp_path / "runs"),
            "cache_dir": str(cache),
            "data": {"root": str(data)},
        },
        ["data.order=BSData,CAMO", "data.train_cap=4", "data.val_cap=2", "train.epochs=1"],
    )
    reads["opened"].clear()
    run_tune(spec, echo=lambda _: None)
    opened = [p for p in reads["opened"] if p.startswith(str(data))]
    assert opened and any("/train/" in p for p in opened)  # the instrumentation sees the data files
    assert not [p for p in opened if "/test/" in p]
    assert set(reads["listed"]) == {"train"}
    assert reads["trained"] and set(reads["trained"]) == {"train"}
    assert reads["evaluated"] and set(reads["evaluated"]) == {"val"}

    # the same instrumentation does see the test split of an ordinary run (so it can fail)
    for key in reads:
        reads[key].clear()
    cfg = make_config(
        "smoke",
        {
            "results_dir": str(tmp_path / "runs"),
            "cache_dir": str(cache),
            "run_name": "on-test",
            "data": {
                "root": str(data),
                "order": ["BSData", "CAMO"],
                "train_cap": 4,
                "val_cap": 2,
                "test_cap": 2,
                "probe_cap": 2,
            },
            "train": {"epochs": 1},
        },
    )
    runner.run(cfg, ctx=runner.Context())
    assert any("/test/" in p for p in reads["opened"]) and "test" in reads["listed"]
    assert set(reads["evaluated"]) == {"test"} and set(reads["trained"]) == {"train"}


TUNING = Path(__file__).resolve().parents[1] / "results" / "tuning"


@pytest.mark.parametrize(
    "profile, method",
    [(p.parent.parent.name, p.parent.name) for p in sorted(TUNING.glob("*/*/tune.json"))],
)
def test_profile_learning_rates_are_the_recorded_validation_choices(
    profile: str, method: str
) -> None:
    """Every committed tuning decides its profile's default: among the grid points whose other
    axes hold the profile's values (joint's budget axis: the profile's train_cap), the learning
    rate with the best validation score (the first on a tie) is the one the profile gives."""
    record = json.loads((TUNING / profile / method / "tune.json").read_text())
    assert record["split"] == "val"
    cfg = make_config(profile, {"method": method})
    profile_value = {"data.train_cap": cfg.data.train_cap, "train.epochs": cfg.train.epochs}
    opts_cls = getattr(get_method(method), "Options", None)
    if opts_cls is not None:  # the method's options, their defaults included
        options = opts_cls(**cfg.method_options)
        profile_value.update({f"method_options.{k}": v for k, v in vars(options).items()})
    points = [
        p
        for p in record["points"]
        if all(p[k] == profile_value[k] for k in record["grid"] if k != "train.lr")
    ]
    assert points, f"{method}: no grid point at the {profile} profile's settings"
    best = choose(points, record["criterion"])
    assert cfg.train.lr == pytest.approx(points[best]["train.lr"])
