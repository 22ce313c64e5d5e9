"""The bad-input and fault cases of issue 18 as a table, each run as a user would run it.

Every case runs ``python -m cosam ...`` in a subprocess (cwd = the repository) and asserts the exit
code, a fragment of the one-line error (or of the report), that no traceback reaches the user and
that nothing is left half-written: after a refused command no run folder exists, and a run folder
is either finished (DONE) or absent.

Permission cases need chmod 000 to bite: as root they drop CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH
with ``setpriv`` (skipped where that is impossible).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from cosam.data import make_synthetic_benchmark

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = (
    Path(os.environ.get("COSAM_SHARED", REPO.parent / "shared")) / "weights" / "minisam_vit_t.pth"
)
NOCAP = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]
TWO = ["--order", "BSData,CAMO"]  # two tasks keep the training runs to seconds


@dataclass
class Env:
    """One case's folders: results, cache, the tiny shared data set and a scratch folder."""

    tmp: Path
    data: Path
    cwd: Path = REPO
    code: Path = REPO  # the checkout whose cosam runs (benchmarks/attack_table.py passes another)
    env: Dict[str, str] = field(default_factory=dict)
    prefix: List[str] = field(default_factory=list)
    before: List[List[str]] = field(
        default_factory=list
    )  # commands run first (their outcome is not asserted)

    @property
    def res(self) -> Path:
        return self.tmp / "res"

    def smoke(self, *extra: str, method: str = "zeroshot") -> List[str]:
        return [
            "run",
            "--method",
            method,
            "--profile",
            "smoke",
            "--results-dir",
            str(self.res),
            "--set",
            f"cache_dir={self.tmp / 'cache'}",
            *extra,
        ]

    def copy_data(self) -> Path:
        dest = self.tmp / "data"
        shutil.copytree(self.data, dest)
        return dest


@dataclass
class Case:
    name: str
    setup: Callable[[Env], List[str]]
    rc: int
    fragment: str
    # "none": no run folder may exist; "done": every run folder is finished; "kept": a run folder
    # left by the setup may stay as it was (an interrupted run is not half-written by the command)
    runs: str = "none"
    check: Optional[Callable[[Env, str], None]] = None
    needs: str = ""


@functools.lru_cache(maxsize=None)
def _no_caps_prefix() -> Optional[List[str]]:
    """The command prefix that makes chmod 000 bite (probed once; None where impossible)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    probe = subprocess.run(NOCAP + ["true"], capture_output=True)
    return NOCAP if probe.returncode == 0 else None


# ------------------------------------------------------------------------------------------ setups


def _ckpt(kind: str) -> Callable[[Env], List[str]]:
    def setup(e: Env) -> List[str]:
        path = e.tmp / f"{kind}.pth"
        if kind == "missing":
            path = Path("/nonexistent.pth")
        elif kind == "wrong":
            import torch

            torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, path)
        elif kind == "truncated":
            path.write_bytes(WEIGHTS.read_bytes()[:4096])
        elif kind == "text":
            path.write_text("this is not a checkpoint\n")
        elif kind == "real":
            path = WEIGHTS
        return e.smoke("--data", str(e.data), *TWO, "--set", f"model.checkpoint={path}")

    return setup


def _explicit_weights_used(e: Env, out: str) -> None:
    (cfg,) = e.res.rglob("config.json")
    meta = json.loads(cfg.read_text())
    assert meta["config"]["model"]["pretrained"] is False
    assert meta["resolved"]["checkpoint"] == str(WEIGHTS)
    assert (
        meta["resolved"]["weights_id"].startswith("vit_t-")
        and meta["resolved"]["weights_id"] != "vit_t-random"
    )


def _synthetic_killed(e: Env) -> List[str]:
    args = e.smoke(
        "--set", "data.train_cap=2", "--set", "data.test_cap=1", "--set", "data.probe_cap=1", *TWO
    )
    e.before.append(args)
    e.env["COSAM_FAULT_BEFORE"] = "synthetic:3"  # the first command is killed while generating
    return args


def _synthetic_leftover(e: Env) -> List[str]:
    # what a kill left behind before generation was atomic: generated files, no SYNTHETIC.md
    part = e.tmp / "cache" / "synthetic-data" / "bsdata" / "train" / "images"
    part.mkdir(parents=True)
    shutil.copy(
        next((e.data / "bsdata" / "train" / "images").iterdir()), part / "bsdata_train_0000.jpg"
    )
    return e.smoke(
        "--set", "data.train_cap=2", "--set", "data.test_cap=1", "--set", "data.probe_cap=1", *TWO
    )


def _synthetic_concurrent_check(e: Env, out: str) -> None:
    assert sorted(p.name for p in (e.res / "smoke").iterdir()) == ["a", "b"]
    assert (e.tmp / "cache" / "synthetic-data" / "SYNTHETIC.md").is_file()
    assert not list((e.tmp / "cache").glob(".synthetic-data.tmp-*"))


def _bad_value(*extra: str, method: str = "sequential") -> Callable[[Env], List[str]]:
    return lambda e: e.smoke("--data", str(e.data), *TWO, *extra, method=method)


def _corrected_after_bad_lr(e: Env) -> List[str]:
    good = e.smoke("--data", str(e.data), *TWO, "--set", "train.epochs=1", method="sequential")
    e.before.append(good + ["--set", "train.lr=-1"])
    return good


def _layout_files(e: Env) -> Path:
    """mine/{bsdata,crackforest} with mine/domains.yaml (root: .) and abs.yaml (absolute paths)."""
    mine = e.tmp / "mine"
    for d in ("bsdata", "crackforest"):
        shutil.copytree(e.data / d, mine / d)
    pairs = (("Defects", "bsdata"), ("Cracks", "crackforest"))
    (mine / "domains.yaml").write_text(
        "root: .\ntasks:\n"
        + "".join(
            f"  - name: {n}\n    train: {{images: {d}/train/images, masks: {d}/train/masks}}\n"
            f"    test: {{images: {d}/test/images, masks: {d}/test/masks}}\n"
            for n, d in pairs
        )
    )
    (e.tmp / "abs.yaml").write_text(
        "tasks:\n"
        + "".join(
            f"  - name: {n}\n    train: {{images: {mine / d}/train/images, masks: {mine / d}/train/masks}}\n"
            f"    test: {{images: {mine / d}/test/images, masks: {mine / d}/test/masks}}\n"
            for n, d in pairs
        )
    )
    (e.tmp / "link").mkdir()
    os.symlink(mine, e.tmp / "link" / "mine")
    return mine


def _check_yaml_relative(e: Env) -> List[str]:
    _layout_files(e)
    e.cwd = (
        e.tmp
    )  # the layout file given relative to the working folder; its root relative to itself
    return ["check-data", "--layout", "mine/domains.yaml"]


def _check_yaml_absolute_symlinked_root(e: Env) -> List[str]:
    _layout_files(e)
    return ["check-data", str(e.tmp / "link" / "mine"), "--layout", str(e.tmp / "abs.yaml")]


def _check_yaml_through_symlink(e: Env) -> List[str]:
    _layout_files(e)
    return [
        "check-data",
        str(e.tmp / "link" / "mine"),
        "--layout",
        str(e.tmp / "link" / "mine" / "domains.yaml"),
    ]


def _check_yaml_conflicting_root(e: Env) -> List[str]:
    _layout_files(e)
    return ["check-data", str(e.data), "--layout", str(e.tmp / "mine" / "domains.yaml")]


def _run_yaml(e: Env) -> List[str]:
    mine = _layout_files(e)
    return e.smoke("--set", f"data.layout={mine / 'domains.yaml'}")


def _chmod_masks(cmd: str) -> Callable[[Env], List[str]]:
    def setup(e: Env) -> List[str]:
        data = e.copy_data()
        os.chmod(data / "bsdata" / "train" / "masks", 0)
        return e.smoke("--data", str(data), *TWO) if cmd == "run" else ["check-data", str(data)]

    return setup


def _corrupt_config(e: Env) -> List[str]:
    args = e.smoke("--data", str(e.data), *TWO)
    e.before.append(args)
    e.env["CORRUPT_CONFIG_AFTER_BEFORE"] = "1"
    return args


def _symlink_loop(cmd: str) -> Callable[[Env], List[str]]:
    def setup(e: Env) -> List[str]:
        data = e.copy_data()
        shutil.rmtree(data / "crackforest")
        os.symlink("crackforest", data / "crackforest")
        return e.smoke("--data", str(data)) if cmd == "run" else ["check-data", str(data)]

    return setup


def _chmod_image(e: Env) -> List[str]:
    data = e.copy_data()
    os.chmod(sorted((data / "bsdata" / "train" / "images").iterdir())[0], 0)
    return e.smoke("--data", str(data), *TWO)


def _mask_as_jpg(cmd: str) -> Callable[[Env], List[str]]:
    def setup(e: Env) -> List[str]:
        from PIL import Image

        data = e.copy_data()
        mask = sorted((data / "bsdata" / "train" / "masks").iterdir())[0]
        Image.open(mask).save(mask.with_suffix(".jpg"))
        mask.unlink()
        return e.smoke("--data", str(data), *TWO) if cmd == "run" else ["check-data", str(data)]

    return setup


def _truncated_state(e: Env) -> List[str]:
    args = e.smoke("--data", str(e.data), *TWO, "--set", "train.epochs=1", method="sequential")
    e.before.append(args)
    e.env["COSAM_FAULT_BEFORE"] = "train:1"
    e.env["TRUNCATE_STATE_AFTER_BEFORE"] = "1"
    return args


def _concurrent(e: Env) -> List[str]:
    return []  # run by the test itself (two processes at once)


CASES = [
    # 1. explicit checkpoints with model.pretrained=false (the smoke profile): loaded strictly
    Case(
        "ckpt-missing",
        _ckpt("missing"),
        2,
        "checkpoint /nonexistent.pth not found: the path does not exist",
    ),
    Case("ckpt-wrong-arch", _ckpt("wrong"), 2, "does not match backbone 'vit_t'", needs="weights"),
    Case(
        "ckpt-truncated", _ckpt("truncated"), 2, "the file is truncated or corrupt", needs="weights"
    ),
    Case("ckpt-plain-text", _ckpt("text"), 2, "the file is not a PyTorch checkpoint"),
    Case(
        "ckpt-explicit-is-used",
        _ckpt("real"),
        0,
        "run folder:",
        runs="done",
        check=_explicit_weights_used,
        needs="weights",
    ),
    # 2. generated data under kills and concurrency
    Case("synthetic-killed-then-run", _synthetic_killed, 0, "run folder:", runs="done"),
    Case("synthetic-old-leftover", _synthetic_leftover, 0, "run folder:", runs="done"),
    Case(
        "synthetic-concurrent",
        _concurrent,
        0,
        "run folder:",
        runs="done",
        check=_synthetic_concurrent_check,
    ),
    # 3. numbers, seeds and switches are checked before anything is written
    Case(
        "lr-abc",
        _bad_value("--set", "train.lr=abc"),
        2,
        'invalid config value train.lr="abc"; expected a number',
    ),
    Case("lr-negative", _bad_value("--set", "train.lr=-1"), 2, "invalid config value train.lr=-1"),
    Case("corrected-after-bad-lr", _corrected_after_bad_lr, 0, "run folder:", runs="done"),
    Case(
        "lr_gamma-abc",
        _bad_value("--set", "train.lr_gamma=abc"),
        2,
        "invalid config value train.lr_gamma",
    ),
    Case(
        "eval-batch-0",
        _bad_value("--set", "eval.batch_size=0"),
        2,
        "invalid config value eval.batch_size=0; expected a positive integer",
    ),
    Case(
        "seed-negative",
        _bad_value("--seed", "-1"),
        2,
        "invalid config value seed=-1; expected an integer >= 0",
    ),
    Case(
        "seed-abc",
        _bad_value("--set", "seed=abc"),
        2,
        'invalid config value seed="abc"; expected an integer',
    ),
    Case(
        "image_size-abc",
        _bad_value("--set", "model.image_size=abc"),
        2,
        "invalid config value model.image_size",
    ),
    Case(
        "include_probe-maybe",
        _bad_value("--set", "data.include_probe=maybe"),
        2,
        'invalid config value data.include_probe="maybe"; expected true or false',
    ),
    # 4. custom layouts in check-data and run: relative, absolute, symlinked
    Case("check-data-yaml-relative", _check_yaml_relative, 0, "0 problem(s)"),
    Case("check-data-yaml-absolute", _check_yaml_absolute_symlinked_root, 0, "0 problem(s)"),
    Case("check-data-yaml-symlink", _check_yaml_through_symlink, 0, "0 problem(s)"),
    Case("check-data-yaml-two-roots", _check_yaml_conflicting_root, 2, "expected one data root"),
    Case("run-yaml-layout", _run_yaml, 0, "run folder:", runs="done"),
    # 5. unreadable folders
    Case(
        "chmod000-masks-run",
        _chmod_masks("run"),
        2,
        "is not readable (permission denied)",
        needs="nocap",
    ),
    Case(
        "chmod000-masks-check",
        _chmod_masks("check"),
        1,
        "is not readable (permission denied)",
        needs="nocap",
    ),
    # 6. a corrupt config.json in a finished run
    Case("corrupt-config-json", _corrupt_config, 2, "cannot be read", runs="kept"),
    # 7. messages that say what is wrong
    Case("symlink-loop-run", _symlink_loop("run"), 2, "is a symbolic link that loops"),
    Case("symlink-loop-check", _symlink_loop("check"), 1, "is a symbolic link that loops"),
    Case(
        "chmod000-image-run",
        _chmod_image,
        2,
        "permission denied; fix: make the file readable",
        needs="nocap",
    ),
    Case("mask-as-jpg-run", _mask_as_jpg("run"), 2, "with the extension .jpg instead of .png"),
    Case("mask-as-jpg-check", _mask_as_jpg("check"), 1, "with the extension .jpg instead of .png"),
    Case(
        "truncated-resume-state",
        _truncated_state,
        2,
        "it is the only saved step of this run, so pass --force",
        runs="kept",
    ),
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A small generated benchmark: 2 train, 1 test pair per domain at about 64 px."""
    return make_synthetic_benchmark(
        tmp_path_factory.mktemp("tiny") / "data", n_train=2, n_test=1, n_probe=1, size=64
    )


def _cosam(args: List[str], e: Env, extra_env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """``python -m cosam args`` with the code of ``e.code`` (this checkout unless told otherwise)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COSAM_FAULT", "COSAM_DATA")}
    env.update({"PYTHONPATH": str(e.code), "OMP_NUM_THREADS": "1", **(extra_env or {})})
    return subprocess.Popen(
        [*e.prefix, sys.executable, "-m", "cosam", *args],
        cwd=e.cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _half_written(res: Path) -> List[str]:
    """Run folders under res that hold a config.json or a state but no DONE."""
    if not res.exists():
        return []
    out = []
    for d in {p.parent for p in res.rglob("config.json")} | {
        p.parent.parent for p in res.rglob("step_*.pt")
    }:
        if not (d / "DONE").exists():
            out.append(str(d))
    return out


@dataclass
class Outcome:
    """What one case did: exit code(s), the user's output, and the folder listing it left."""

    rc: int
    out: str
    err: str
    left_before: List[str]


def execute(case: Case, e: Env) -> Outcome:
    """Run a case's setup commands, then its command, and return what the user saw.

    Shared with benchmarks/attack_table.py, which runs the same table against another checkout.
    """
    if case.name == "synthetic-concurrent":
        procs = [
            _cosam(
                e.smoke(
                    "--set",
                    f"run_name={n}",
                    "--set",
                    "data.train_cap=2",
                    "--set",
                    "data.test_cap=1",
                    "--set",
                    "data.probe_cap=1",
                    *TWO,
                ),
                e,
            )
            for n in ("a", "b")
        ]
        results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
        rcs = [r[2] for r in results]
        rc = next((r for r in rcs if r != 0), 0)
        return Outcome(rc, "".join(r[0] for r in results), "".join(r[1] for r in results), [])
    args = case.setup(e)
    for before in e.before:
        env = {"COSAM_FAULT": e.env["COSAM_FAULT_BEFORE"]} if "COSAM_FAULT_BEFORE" in e.env else {}
        p = _cosam(before, e, env)
        p.communicate(timeout=300)
    if "CORRUPT_CONFIG_AFTER_BEFORE" in e.env:
        (cfg,) = e.res.rglob("config.json")
        cfg.write_text(cfg.read_text()[:100])
    if "TRUNCATE_STATE_AFTER_BEFORE" in e.env:
        (state,) = e.res.rglob("step_*.pt")
        state.write_bytes(state.read_bytes()[:200])
    left_before = sorted(str(p) for p in e.res.rglob("*")) if e.res.exists() else []
    p = _cosam(args, e)
    out, err = p.communicate(timeout=300)
    return Outcome(p.returncode, out, err, left_before)


def prepare(case: Case, data: Path, tmp: Path) -> Optional[Env]:
    """The case's Env, or None when this machine cannot run it (see ``skip_reason``)."""
    e = Env(tmp, data)
    if case.needs == "nocap":
        prefix = _no_caps_prefix()
        if prefix is None:
            return None
        e.prefix = prefix
    return e


def skip_reason(case: Case) -> Optional[str]:
    if case.needs == "weights" and not WEIGHTS.is_file():
        return f"needs {WEIGHTS}"
    if case.needs == "nocap" and _no_caps_prefix() is None:
        return "running as root without setpriv: chmod 000 cannot be enforced"
    return None


def unlock(tmp: Path) -> None:
    """Give chmod-000 folders back their permissions so they can be removed."""
    for d in tmp.rglob("*"):
        if d.is_dir() and not d.is_symlink():
            os.chmod(d, 0o755)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_attack(case: Case, tiny_data: Path, tmp_path: Path) -> None:
    reason = skip_reason(case)
    if reason:
        pytest.skip(reason)
    e = prepare(case, tiny_data, tmp_path)
    assert e is not None
    o = execute(case, e)
    out, err = o.out, o.err
    if case.name == "synthetic-concurrent":
        assert o.rc == 0, err[-3000:]
    else:
        assert o.rc == case.rc, f"exit {o.rc}, expected {case.rc}\n{out[-2000:]}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert case.fragment in (err if case.rc == 2 else out), (
        f"{case.fragment!r} not in\n{out[-2000:]}\n{err[-2000:]}"
    )
    if case.rc == 2:  # a refused command says so in one line
        assert err.strip().splitlines()[-1].startswith("error: ")
    if case.runs == "none":
        assert not e.res.exists() or not any(e.res.rglob("*")), (
            f"left behind: {list(e.res.rglob('*'))}"
        )
    elif case.runs == "done":
        assert not _half_written(e.res) and list(e.res.rglob("DONE"))
    else:  # the interrupted/finished run of the setup is left exactly as it was
        assert sorted(str(p) for p in e.res.rglob("*")) == o.left_before
    if case.check is not None:
        case.check(e, out)
    if e.prefix:  # let pytest remove the folders
        unlock(tmp_path)
