"""Regularisers as plugins over any base (``BASE+PLUGIN``): the Table 2 names are the combinations
over HQ-SAM, plugins act on Decoder-Tuning and SAM-Adapter, a killed combination resumes exactly,
and bad spellings say what is wrong.

Smoke profile, 3 tasks, 8 training images (two steps per task, so EWC's penalty acts after its
first step), 2 test images, one epoch; lr 1e-5 and a float32 cache as tests/test_baselines.py
(at the smoke lr the random-weight model's masks collapse to IoU 0 and matrices coincide).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import torch

import cosam.runner as runner
from cosam.aggregate import discover
from cosam.config import make_config
from cosam.errors import ConfigError
from cosam.grid import SweepSpec
from cosam.methods import get_method
from cosam.rundir import parse_run_name

REPO = Path(__file__).resolve().parents[1]
ORDER = "BSData,CAMO,Polyp"
SETS = [
    "data.train_cap=8",
    "data.test_cap=2",
    "data.probe_cap=2",
    "train.epochs=1",
    "train.batch_size=4",  # two steps per task (the smoke profile's own batch of 2 would give four)
    "train.lr=1e-5",
    "train.cache_dtype=float32",
    "threads=1",
    "progress=false",
]
#: EWC's weight is raised so that its penalty steers training at lr 1e-5 (at 10 it changes no bit).
OPTIONS: Dict[str, Dict[str, Any]] = {"ewc": {"weight": 1e6}}


def options_for(method: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for part in method.split("+"):
        out.update(OPTIONS.get(part, {}))
    return out


@pytest.fixture(scope="module", autouse=True)
def _restore_threads() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


class Runs:
    """Runs of this module in one process (one model, one feature cache), each run once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ctx = runner.Context()
        self.done: Dict[str, Path] = {}

    def cfg(self, method: str, results: str):
        return make_config(
            "smoke",
            {
                "method": method,
                "method_options": options_for(method),
                "data": {"order": ORDER},
                "results_dir": str(self.root / results),
                "cache_dir": str(self.root / "cache"),
            },
            SETS,
        )

    def get(self, method: str) -> Path:
        if method not in self.done:
            self.done[method] = runner.run(self.cfg(method, "runs"), ctx=self.ctx)
        return self.done[method]

    def matrix(self, method: str) -> dict:
        return json.loads((self.get(method) / "matrix.json").read_text())

    def losses(self, method: str) -> List[List[float]]:
        return [
            st["loss"] for st in json.loads((self.get(method) / "timing.json").read_text())["steps"]
        ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("plugins"))


# ---------------------------------------------------------------------------------------------
# The Table 2 names are the combinations over HQ-SAM
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plugin", ["lwf", "ewc", "replay"])
def test_table2_name_equals_the_combination_over_sequential(runs, plugin):
    named, spelled = runs.matrix(plugin), runs.matrix(f"sequential+{plugin}")
    assert named == spelled
    assert runs.losses(plugin) == runs.losses(f"sequential+{plugin}")
    assert runs.get(plugin).name == f"{plugin}-custom-s0"  # the run folder keeps its Table 2 name
    assert runs.get(f"sequential+{plugin}").name == f"sequential+{plugin}-custom-s0"
    # ... and the plugin acts: the combination is not plain sequential fine-tuning
    assert runs.losses(plugin) != runs.losses("sequential")
    names = ["costs.json", "config.json"]
    a, b = (
        json.loads((runs.get(m) / names[0]).read_text()) for m in (plugin, f"sequential+{plugin}")
    )
    a.pop("timing"), b.pop("timing")
    assert a == b
    for m in (plugin, f"sequential+{plugin}"):
        resolved = json.loads((runs.get(m) / names[1]).read_text())["resolved"]["method_options"]
        assert resolved == dataclasses.asdict(get_method(m).Options(**options_for(m)))


# ---------------------------------------------------------------------------------------------
# Plugins over Decoder-Tuning and SAM-Adapter
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["decoder_tuning+ewc", "decoder_tuning+lwf", "sam_adapter+replay"]
)
def test_plugin_runs_over_another_base_and_changes_its_results(runs, method):
    base = method.split("+")[0]
    m, b = runs.matrix(method), runs.matrix(base)
    assert m["rows"] == ["before", "BSData", "CAMO", "Polyp"] and len(m["iou"]) == 4
    assert all(v is None or 0.0 <= v <= 1.0 for row in m["iou"] for v in row)
    assert m["iou"][0] == b["iou"][0]  # same start (the base's init)
    assert m["iou"][1] == b["iou"][1]  # the first task has nothing to protect: same as the base
    assert m["iou"][2:] != b["iou"][2:]  # later tasks: the plugin acts
    assert (
        len({tuple(r) for r in m["iou"]}) > 2 and max(m["iou"][-1]) > 0
    )  # not a degenerate matrix
    costs = json.loads((runs.get(method) / "costs.json").read_text())
    base_costs = json.loads((runs.get(base) / "costs.json").read_text())
    assert costs["trainable_params"] == base_costs["trainable_params"]
    if method.endswith("+ewc"):  # Fisher + anchor over the base's trainable parameters
        assert costs["fisher_params"] == costs["anchor_params"] == base_costs["trainable_params"]
        assert (
            costs["stored_params_total"]
            == base_costs["stored_params_total"] + 2 * base_costs["trainable_params"]
        )
    if method.endswith("+replay"):
        buf = json.loads((runs.get(method) / "replay_buffer.json").read_text())
        assert list(buf) == m["tasks"]
        n_train = [
            st["n_train"]
            for st in json.loads((runs.get(method) / "timing.json").read_text())["steps"]
        ]
        assert n_train == [
            8,
            16,
            24,
        ]  # the buffer (10 per task > 8 images: all) joins each later task


def test_lwf_teacher_copies_the_base_and_shares_the_frozen_model(runs):
    runs.get("decoder_tuning")  # the module's model is built
    s = get_method("sam_adapter+lwf")(runs.ctx.model, runs.cfg("sam_adapter+lwf", "x"))
    teacher = s.plugin("lwf").teacher
    assert teacher.model is s.model and teacher.encoder is not s.base.encoder
    assert not any(p.requires_grad for p in teacher.parameters())
    assert [id(p) for p in s.trainable_parameters()] == [
        id(p) for p in s.base.trainable_parameters()
    ]
    state = s.method_state()["modules"]
    assert (
        any(k.startswith("+lwf.teacher.decoder.") for k in state) and "+lwf.teacher_active" in state
    )
    assert not any(".model." in k or k.startswith("model.") for k in state)


# ---------------------------------------------------------------------------------------------
# Kill-safe resume of a combination (SIGKILL through cosam.faults, then the same command)
# ---------------------------------------------------------------------------------------------


def test_killed_combination_resumes_to_the_uninterrupted_matrix(runs, tmp_path):
    """``cosam run --method decoder_tuning+ewc`` killed in its third task, then resumed (in this
    process, to save a second interpreter start), ends with the uninterrupted run's matrix."""
    method = "decoder_tuning+ewc"
    cmd = [
        sys.executable,
        "-m",
        "cosam",
        "run",
        "--method",
        method,
        "--profile",
        "smoke",
        "--order",
        ORDER,
        "--results-dir",
        str(tmp_path / "runs"),
        "--set",
        f"cache_dir={tmp_path / 'cache'}",
        "--set",
        "method_options.weight=1e6",
    ]
    for s in SETS:
        cmd += ["--set", s]
    # step 5 = the first step of the third task: Fisher and anchor of tasks 1-2 come from the checkpoint
    killed = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COSAM_FAULT": "train:5"},
    )
    assert killed.returncode == -9, f"the fail point was not reached: {killed.stderr[-1500:]}"
    run_dir = tmp_path / "runs" / "smoke" / f"{method}-custom-s0"
    assert (run_dir / "state" / "step_2.pt").exists() and not (run_dir / "DONE").exists()
    cfg = make_config(
        "smoke",
        {
            "method": method,
            "method_options": options_for(method),
            "data": {"order": ORDER.split(",")},  # as the CLI records --order
            "results_dir": str(tmp_path / "runs"),
            "cache_dir": str(tmp_path / "cache"),
        },
        SETS,
    )
    assert runner.run(cfg, ctx=runs.ctx) == run_dir
    assert json.loads((run_dir / "timing.json").read_text())["resumed"] == 1
    got = json.loads((run_dir / "matrix.json").read_text())
    want = runs.matrix(method)
    assert (
        got["iou"] == want["iou"]
        and got["biou"] == want["biou"]
        and got["per_image"] == want["per_image"]
    )
    state = torch.load(run_dir / "state" / "step_3.pt", weights_only=False)["strategy"]
    clean = torch.load(runs.get(method) / "state" / "step_3.pt", weights_only=False)["strategy"]
    assert state["modules"].keys() == clean["modules"].keys()
    assert any(k.startswith("+ewc.fisher.") for k in clean["modules"])
    assert all(torch.equal(state["modules"][k], clean["modules"][k]) for k in clean["modules"])


# ---------------------------------------------------------------------------------------------
# Spelling, options, sweeps and profiles
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, message",
    [
        ("zeroshot+ewc", "trains nothing"),
        ("joint+ewc", "no earlier task"),
        ("l2p+lwf", "prompt methods"),
        ("sequential_moda+ewc", "not supported on MoDA"),
        ("decoder_tuning+ewc+ewc", "appears more than once"),
        ("ewc+lwf", "is a regulariser plugin, not a base"),
        ("decoder_tuning+", "empty part"),
        ("decoder_tuning + ewc", "unknown base"),
        ("decoder_tuning+foo", "unknown regulariser plugin 'foo'"),
        ("decoder_tuning+sam_adapter", "one base, first"),
        ("nope", "valid methods: zeroshot"),
    ],
)
def test_bad_spellings_fail_with_a_clear_message(name, message):
    with pytest.raises(ConfigError, match=message):
        make_config("smoke", {"method": name})


def test_combination_options_are_the_parts_options():
    assert [f.name for f in dataclasses.fields(get_method("decoder_tuning+ewc").Options)] == [
        "weight",
        "fisher",
    ]
    assert [f.name for f in dataclasses.fields(get_method("sam_adapter+replay").Options)] == [
        "adapter_ratio",
        "per_task",
    ]
    # a name two parts share is spelt <part>_<name>
    assert [f.name for f in dataclasses.fields(get_method("sequential+lwf+ewc").Options)] == [
        "hq_attention",
        "lwf_weight",
        "distill",
        "ewc_weight",
        "fisher",
    ]
    cfg = make_config(
        "smoke", {"method": "sequential+lwf+ewc", "method_options": {"ewc_weight": 5.0}}
    )
    assert cfg.method_options == {"ewc_weight": 5.0}
    with pytest.raises(ConfigError, match="method_options.ewc_weight"):
        make_config(
            "smoke", {"method": "sequential+lwf+ewc", "method_options": {"ewc_weight": -1.0}}
        )
    with pytest.raises(ConfigError, match="unknown config key 'method_options.hq_attention'"):
        make_config(
            "smoke", {"method": "decoder_tuning+ewc", "method_options": {"hq_attention": "full"}}
        )
    with pytest.raises(ConfigError, match="fisher"):
        make_config(
            "smoke", {"method": "decoder_tuning+ewc", "method_options": {"fisher": "sometimes"}}
        )
    assert get_method("decoder_tuning+ewc") is get_method("decoder_tuning+ewc")
    assert (
        get_method("sam_adapter+replay").needs_pixels
        and not get_method("decoder_tuning+ewc").needs_pixels
    )


def test_combination_in_run_folders_sweeps_and_profiles(tmp_path):
    n = parse_run_name("decoder_tuning+ewc-shuffled-s3")
    assert n == ("decoder_tuning+ewc", "shuffled", 3, False)
    assert parse_run_name("ewc-paper-s2-val") == ("ewc", "paper", 2, True)
    assert parse_run_name("ewc-custom-s0") is None  # a custom order is not part of a sweep
    for name in (
        "decoder_tuning+ewc-paper-s0",
        "ewc-paper-s1",
        "zeroshot+ewc-paper-s0",
        "ewc-reverse-s7-val",  # a validation run: not part of a sweep's results
    ):
        (tmp_path / "smoke" / name).mkdir(parents=True)
    assert discover(tmp_path, "smoke") == (["ewc", "decoder_tuning+ewc"], [0, 1], ["paper"])
    SweepSpec(
        profile="smoke", methods=["sam_adapter+replay", "ewc"], seeds=[0], orders=["paper"]
    ).validate()
    with pytest.raises(ConfigError, match="joint"):
        SweepSpec(profile="smoke", methods=["joint+ewc"], seeds=[0], orders=["paper"]).validate()
    # the cpu profile's SAM-Adapter budget applies to its combinations too
    assert make_config("cpu", {"method": "sam_adapter+replay"}).data.train_cap == 8
    assert make_config("cpu", {"method": "decoder_tuning+ewc"}).data.train_cap == 32
