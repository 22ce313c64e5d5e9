"""Every base has its own joint-training upper bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cosam.config import make_config
from cosam.inspect import load_strategy
from cosam.runner import run

SMALL = {
    "data": {"order": ["BSData", "CAMO"], "train_cap": 2, "test_cap": 1, "probe_cap": 1},
    "train": {"epochs": 1, "lr": 1e-3},
}


@pytest.mark.parametrize(
    "method, trained", [("decoder_tuning_joint", "decoder"), ("sam_adapter_joint", "decoder")]
)
def test_base_joint_bound_trains_its_base_on_all_tasks_at_once(
    tmp_path: Path, method: str, trained: str
) -> None:
    cfg = make_config(
        "smoke",
        {
            **SMALL,
            "method": method,
            "results_dir": str(tmp_path / "r"),
            "cache_dir": str(tmp_path / "c"),
        },
    )
    run_dir = run(cfg)
    matrix = json.loads((run_dir / "matrix.json").read_text())
    assert matrix["rows"] == ["before", "joint"]  # one experience over the union of the tasks
    strategy, _, step = load_strategy(run_dir)
    assert step == 1
    moved = [
        not torch.equal(a, b)
        for a, b in zip(
            getattr(strategy, trained).state_dict().values(),
            strategy.model.mask_decoder.state_dict().values(),
        )
    ]
    assert any(moved), f"{method} did not train its {trained}"
    assert type(strategy).plan.__qualname__ == "JointPlan.plan"
