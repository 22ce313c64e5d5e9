"""Tests of cosam.data.check (``python -m cosam check-data``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cosam.cli import main
from cosam.data import LAYOUTS, make_synthetic_benchmark
from cosam.data.check import check_data
from cosam.errors import ConfigError

N_TRAIN, N_TEST, N_PROBE = 3, 2, 2


@pytest.fixture()
def synth(tmp_path: Path) -> Path:
    """A tiny synthetic benchmark private to one test (tests break it)."""
    return make_synthetic_benchmark(
        tmp_path / "bench", n_train=N_TRAIN, n_test=N_TEST, n_probe=N_PROBE, size=48
    )


def test_synthetic_benchmark_is_ok(synth: Path) -> None:
    """A generated benchmark passes, every split is listed with its counts, and it is flagged SYNTHETIC."""
    report = check_data(synth)
    assert report.ok, report.problems
    assert report.problems == []
    assert report.n_pairs == 8 * (N_TRAIN + N_TEST) + N_PROBE
    assert len(report.rows) == 8 * 2 + 1
    by_key = {(r["slot"], r["split"]): r for r in report.rows}
    assert by_key[("BSData", "train")]["n"] == N_TRAIN
    assert by_key[("BSData", "train")]["domain"] == "bsdata"
    assert by_key[("COCO", "test")]["n"] == N_PROBE
    assert ("COCO", "train") not in by_key
    for r in report.rows:
        assert r["n_ok"] == r["n"] and r["problems"] == 0
        assert 0.0 < r["fg_mean"] < 1.0
        (w0, h0), (w1, h1) = (map(int, r[k].split("x")) for k in ("min_size", "max_size"))
        assert 0 < w0 <= w1 and 0 < h0 <= h1 and w1 <= 60 and h1 <= 60  # sizes within 1.25 x 48
    text = report.text()
    assert text.splitlines()[0].find("SYNTHETIC") >= 0
    assert "OK" in text.splitlines()[-1] and "NOT OK" not in text


def test_broken_benchmark_reports_every_problem(synth: Path) -> None:
    """A missing mask, an unreadable image and a missing domain folder are each reported with the file."""
    spec = LAYOUTS["cosam-mini"]
    mask = sorted((synth / spec["RSDD_I"].train.mask_dir).glob("*.png"))[0]
    mask.unlink()
    garbage = sorted((synth / spec["CAMO"].test.image_dir).glob("*.jpg"))[1]
    garbage.write_bytes(b"this is not a jpeg" * 10)
    shutil.rmtree(synth / spec["Polyp"].folder)

    report = check_data(synth)
    assert not report.ok
    assert len(report.problems) == 3, report.problems
    text = "\n".join(report.problems)
    assert (
        mask.stem in text and "no mask" in text
    )  # the image whose mask is gone, and the mask path
    assert str(garbage) in text and "cannot read image" in text
    assert str(synth / "polyp") in text
    assert all("\n" not in p for p in report.problems)
    # The other splits were still checked: the broken ones do not stop the check.
    by_key = {(r["slot"], r["split"]): r for r in report.rows}
    assert (
        by_key[("CAMO", "test")]["n"] == N_TEST and by_key[("CAMO", "test")]["n_ok"] == N_TEST - 1
    )
    assert by_key[("RSDD_I", "train")]["problems"] == 1
    assert by_key[("Polyp", "train")]["n"] == 0 and by_key[("Polyp", "test")]["problems"] == 1
    assert (
        by_key[("COCO", "test")]["n_ok"] == N_PROBE and by_key[("BSData", "train")]["problems"] == 0
    )
    assert report.n_pairs == 8 * (N_TRAIN + N_TEST) + N_PROBE - N_TRAIN - 1 - (N_TRAIN + N_TEST)
    assert "NOT OK" in report.text() and str(garbage) in report.text()


def test_nonbinary_mask_needs_allow_nonbinary(synth: Path) -> None:
    """A grey-level mask is a problem by default and accepted with allow_nonbinary=True."""
    mask = sorted((synth / LAYOUTS["cosam-mini"]["BSData"].test.mask_dir).glob("*.png"))[0]
    arr = np.asarray(Image.open(mask)).copy()
    arr[arr == 0] = 7  # a third value: no longer binary
    arr[0, 0] = 0
    Image.fromarray(arr).save(mask)
    strict = check_data(synth)
    assert not strict.ok and len(strict.problems) == 1 and str(mask) in strict.problems[0]
    assert check_data(synth, allow_nonbinary=True).ok


def test_missing_root_and_unknown_layout(tmp_path: Path) -> None:
    """A missing root is a reported problem; an unknown layout is a ConfigError listing the layouts."""
    report = check_data(tmp_path / "nowhere")
    assert not report.ok and str(tmp_path / "nowhere") in report.problems[0]
    with pytest.raises(ConfigError, match="cosam-mini"):
        check_data(tmp_path, layout="nope")


def test_cli_exit_codes(synth: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``check-data`` prints the report and returns 0 on a good folder, 1 on a broken one."""
    assert main(["check-data", str(synth)]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "BSData" in out
    broken = sorted((synth / "ecssd" / "train" / "images").glob("*.jpg"))[0]
    broken.write_bytes(b"\x00" * 50)
    assert main(["check-data", str(synth)]) == 1
    assert str(broken) in capsys.readouterr().out


def test_real_data_is_ok(shared_data: Path) -> None:
    """The shipped cosam-mini data passes and holds 1311 pairs; it is not flagged synthetic."""
    report = check_data(shared_data)
    assert report.ok, report.problems[:5]
    assert report.n_pairs == 1311
    assert sum(r["n"] for r in report.rows) == 1311
    assert not report.synthetic and "SYNTHETIC" not in report.text().splitlines()[0]
