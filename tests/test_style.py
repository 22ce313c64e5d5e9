"""Style: ruff's linter and formatter (configured in pyproject.toml) pass on the whole tree."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> str:
    exe = shutil.which("ruff") or str(Path(__import__("sys").executable).with_name("ruff"))
    if not Path(exe).exists():
        pytest.skip("ruff is not installed (pip install -r requirements.txt installs it)")
    return exe


def test_ruff_lint() -> None:
    out = subprocess.run(
        [_ruff(), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_ruff_format() -> None:
    out = subprocess.run(
        [_ruff(), "format", "--check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, "run `ruff format .`:\n" + out.stdout[-4000:] + out.stderr[-2000:]


def test_protocol_citations_resolve() -> None:
    """Every 'protocol §N' cited in the package is a section of docs/protocol.md."""
    import re

    doc = (REPO / "docs" / "protocol.md").read_text()
    sections = set(re.findall(r"^#+\s+(\d+(?:\.\d+)?)[.\s]", doc, flags=re.M))
    cited = set()
    for path in (REPO / "cosam").rglob("*.py"):
        for ref in re.findall(r"protocol §([\d.]+(?:-\d+)?)", path.read_text()):
            cited.add((path.name, ref.rstrip(".")))
    assert cited, "no citations found: the check would prove nothing"
    missing = [(f, r) for f, r in cited if r.split("-")[0] not in sections]
    assert not missing, f"citations without a section in docs/protocol.md: {sorted(missing)}"
