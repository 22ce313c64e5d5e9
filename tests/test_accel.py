"""cosam.accel on the CPU: every GPU setting is a no-op here, so CPU results stay bit-identical.

The CUDA side (bf16 autocast, TF32, features kept on the GPU, torch.compile) cannot run on the
CI machine; what is checked here is that the CPU path does not change, that explicit CPU bf16
(the same autocast code path) runs, and the pure resolution rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch
from torch import nn

import cosam.runner as runner
from cosam.accel import (
    CPU,
    Accel,
    keep_on_device,
    maybe_compile,
    resolve_device,
    resolve_precision,
    set_tf32,
    setup,
)
from cosam.config import make_config, merge
from cosam.data.prompts import Prompt
from cosam.errors import ConfigError, CosamError
from cosam.models.decoder import embed_prompts
from cosam.models.registry import build_sam
from cosam.runner import Context, run

SMALL: Dict[str, Any] = {
    "data": {"train_cap": 4, "test_cap": 2, "probe_cap": 2, "order": ["BSData", "CAMO"]}
}


def _tf32_flags() -> tuple:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _autocast_on_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def test_precision_and_device_resolution() -> None:
    """ "auto" is fp32 on the CPU and bf16 on CUDA; explicit values are kept; bad values are refused."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("auto", cuda) == "bf16"
    assert resolve_precision("fp32", cuda) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ConfigError, match="valid: auto, fp32, bf16"):
        resolve_precision("fp16", cpu)
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="valid: auto, cpu, cuda"):
        resolve_device("tpu")
    # the paper profile asks for bf16 on CUDA through "auto"
    assert make_config("paper").train.precision == "auto"


def test_config_rejects_bad_accel_values() -> None:
    for bad in (
        {"train": {"precision": "half"}},
        {"train": {"cache_on_device": "yes"}},
        {"device": "gpu"},
    ):
        with pytest.raises(ConfigError):
            make_config("smoke", bad)
    with pytest.raises(ConfigError, match="valid keys in train"):
        make_config("smoke", {"train": {"amp": True}})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_setup_on_the_cpu_changes_nothing() -> None:
    """Default config on the CPU: cpu device, fp32, no autocast, TF32 flags untouched, no device cache."""
    before = _tf32_flags()
    accel = setup(make_config("smoke"))
    assert accel == Accel(torch.device("cpu"), "fp32", False) == CPU
    assert _tf32_flags() == before
    assert set_tf32(True, torch.device("cpu")) is False and _tf32_flags() == before
    with accel.autocast():
        assert not _autocast_on_cpu()
    x = torch.randn(3)
    assert accel.move(x) is x
    assert accel.cache_tag == ""
    assert keep_on_device(1, accel, "always") is False and keep_on_device(1, accel, "auto") is False
    with pytest.raises(ConfigError):
        keep_on_device(1, accel, "sometimes")
    bf16 = setup(make_config("smoke", {"train": {"precision": "bf16"}}))
    with bf16.autocast():
        assert _autocast_on_cpu()
    assert bf16.cache_tag == "-bf16"


def test_maybe_compile_compiles_once_and_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(
        nn.Module, "compile", lambda self, *a, **k: calls.append(type(self).__name__)
    )
    m = nn.Linear(2, 2)
    assert maybe_compile(m, False) is False and calls == []
    assert maybe_compile(m, True) is True and calls == ["Linear"]
    assert maybe_compile(m, True) is False and calls == ["Linear"]
    assert list(m.state_dict()) == ["weight", "bias"]  # in place: keys unchanged


def test_prompt_and_image_encodings_stay_fp32_under_autocast() -> None:
    """Positional encodings are computed in fp32 even inside a bf16 autocast region."""
    model = build_sam("vit_t", None, 64, pretrained=False)
    box = Prompt(
        kind="box",
        box=torch.tensor([3.0, 5.0, 40.0, 50.0]),
        points=None,
        point_labels=None,
        mask=None,
    )
    ref_sparse, ref_dense = embed_prompts(model.prompt_encoder, [box], torch.device("cpu"))
    ref_pe = model.image_pe()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sparse, dense = embed_prompts(model.prompt_encoder, [box], torch.device("cpu"))
        pe = model.image_pe()
    assert sparse.dtype == dense.dtype == pe.dtype == torch.float32
    assert (
        torch.equal(sparse, ref_sparse)
        and torch.equal(dense, ref_dense)
        and torch.equal(pe, ref_pe)
    )


def _smoke(method: str, results: Path, cache: Path, **over: Any):
    return make_config(
        "smoke",
        merge(
            SMALL, {"method": method, "results_dir": str(results), "cache_dir": str(cache), **over}
        ),
    )


def _matrix(d: Path) -> Dict[str, Any]:
    return json.loads((d / "matrix.json").read_text())


def test_explicit_cpu_settings_equal_the_defaults(tmp_path: Path) -> None:
    """device=cpu, precision=fp32, tf32 off, no device cache: the same run as the defaults, bit for bit."""
    a = run(_smoke("sequential", tmp_path / "a", tmp_path / "c"), ctx=Context())
    b = run(
        _smoke(
            "sequential",
            tmp_path / "b",
            tmp_path / "c",
            device="cpu",
            train={"precision": "fp32", "tf32": False, "cache_on_device": "never"},
        ),
        ctx=Context(),
    )
    assert _matrix(a) == _matrix(b)
    ta, tb = (json.loads((d / "timing.json").read_text()) for d in (a, b))
    assert [s["loss"] for s in ta["steps"]] == [s["loss"] for s in tb["steps"]]
    meta = json.loads((a / "config.json").read_text())
    assert meta["resolved"]["accel"] == {
        "device": "cpu",
        "device_name": "cpu",
        "precision": "fp32",
        "tf32": False,
        "flush_denormal": False,
        "world_size": 1,
    }


def test_bf16_autocast_runs_on_the_cpu(tmp_path: Path) -> None:
    """Explicit bf16 (CPU autocast, the code path CUDA takes) trains and scores close to fp32,
    with its features cached apart from the fp32 ones."""
    fp32 = run(_smoke("sequential", tmp_path / "fp32", tmp_path / "c"), ctx=Context())
    bf16 = run(
        _smoke("sequential", tmp_path / "bf16", tmp_path / "c", train={"precision": "bf16"}),
        ctx=Context(),
    )
    a, b = np.array(_matrix(fp32)["iou"], dtype=float), np.array(_matrix(bf16)["iou"], dtype=float)
    # the same cells scored (the second task is not scored before it is trained: NaN in both)
    assert a.shape == b.shape and (np.isfinite(b) == np.isfinite(a)).all()
    assert np.isfinite(b).sum() == a.size - 1
    np.testing.assert_allclose(b[0], a[0], atol=0.05)  # zero-shot row: bf16 rounding only
    assert (
        json.loads((bf16 / "config.json").read_text())["resolved"]["accel"]["precision"] == "bf16"
    )
    # apart per precision and, on the CPU, per thread count (the smoke profile's 1)
    assert list((tmp_path / "c" / "features-bf16-t1").rglob("*.pt")) and list(
        (tmp_path / "c" / "features-t1").rglob("*.pt")
    )


def test_run_recorded_before_the_accel_keys_is_still_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished run whose config.json predates device/precision/... is reused, not refused."""
    cfg = _smoke("zeroshot", tmp_path / "r", tmp_path / "c")
    d = run(cfg, ctx=Context())
    meta = json.loads((d / "config.json").read_text())
    del meta["config"]["device"]
    for k in ("precision", "tf32", "compile", "cache_on_device"):
        del meta["config"]["train"][k]
    (d / "config.json").write_text(json.dumps(meta))
    monkeypatch.setattr(
        runner, "_run_locked", lambda *a, **k: pytest.fail("a finished run must be reused")
    )
    assert run(cfg, ctx=Context()) == d


def test_keep_freed_memory_stops_the_page_faults_of_reallocation() -> None:
    """A freed large tensor's memory is reused, not unmapped and faulted in again: in a fresh
    process, re-allocating a 64 MB tensor (above glibc's largest dynamic mmap threshold, 32 MB)
    20 times faults its pages in fewer than half as often as glibc's default, which unmaps
    every such block on free and faults it in anew (glibc only; elsewhere the function says
    False and the test skips)."""
    import subprocess
    import sys

    code = (
        "import resource, sys, torch\n"
        "from cosam.accel import keep_freed_memory\n"
        "on = sys.argv[1] == '1' and keep_freed_memory()\n"
        "torch.ones(16 << 20)\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(20):\n"
        "    torch.ones(16 << 20)\n"
        "print(int(on), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n"
    )

    def faults(flag: str) -> tuple:
        out = subprocess.run(
            [sys.executable, "-c", code, flag], capture_output=True, text=True, check=True
        ).stdout.split()
        return bool(int(out[0])), int(out[1])

    on, kept = faults("1")
    _, default = faults("0")
    if not on:
        pytest.skip("not glibc: keep_freed_memory() is a no-op here")
    pages = (64 << 20) // 4096  # one 64 MB tensor's pages
    assert default > 15 * pages  # glibc's default: every allocation faults its pages in anew
    assert kept < default / 2


def test_flush_denormal_is_set_per_run_recorded_and_cached_apart(tmp_path: Path) -> None:
    """train.flush_denormal flushes denormal floats in the run's process and a run without it
    turns the mode off again (a notebook runs several configs in one process). It is recorded,
    keeps its features apart (``-ftz``), and a finished run is not reused across it. The cpu
    profile turns it on. (A smoke sequential run writes the same matrix either way.)"""

    def denormal_survives() -> bool:
        return (torch.tensor([1e-39]) * torch.tensor([1.0])).item() != 0.0

    ftz = {"train": {"flush_denormal": True}}
    on = run(_smoke("sequential", tmp_path / "r", tmp_path / "c", **ftz), ctx=Context())
    assert not denormal_survives()
    assert json.loads((on / "config.json").read_text())["resolved"]["accel"]["flush_denormal"]
    with pytest.raises(CosamError, match="flush_denormal"):
        run(_smoke("sequential", tmp_path / "r", tmp_path / "c"), ctx=Context())
    off = run(_smoke("sequential", tmp_path / "off", tmp_path / "c"), ctx=Context())
    assert denormal_survives()
    assert _matrix(on) == _matrix(off)
    assert list((tmp_path / "c" / "features-ftz-t1").rglob("*.pt"))
    assert list((tmp_path / "c" / "features-t1").rglob("*.pt"))
    assert make_config("cpu").train.flush_denormal and not make_config("smoke").train.flush_denormal
