"""Reports name data, weights and caches by what they are, never by this machine's folders."""

from __future__ import annotations

from pathlib import Path

from cosam.io import REPO_ROOT, portable, portable_text


def test_portable_paths() -> None:
    assert portable(REPO_ROOT / "results" / "runs" / "cpu") == "results/runs/cpu"
    assert portable(REPO_ROOT) == "."
    assert portable("/work/shared/data/cosam-mini") == "cosam-mini"
    assert portable("/work/shared/data/cosam-mini/") == "cosam-mini"
    assert portable(Path("/opt/weights/minisam_vit_t.pth")) == "minisam_vit_t.pth"
    assert portable("/x/y", root=Path("/x")) == "y"
    for kept in ("synthetic", "results/runs", "../shared/data/cosam-mini"):
        assert portable(kept) == kept
    assert portable(None) == ""


def test_portable_text_rewrites_overrides_and_words() -> None:
    text = (
        "cache_dir=/work/main/.cache/cosam data.train_cap=4 /home/me/data/cosam-mini train.lr=0.001"
    )
    out = portable_text(text, root=Path("/work/main"))
    assert out == "cache_dir=.cache/cosam data.train_cap=4 cosam-mini train.lr=0.001"
    assert "/work" not in out and "/home" not in out
