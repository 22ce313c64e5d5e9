"""Imports point one way (cosam.layers): no cycles, no upward imports, no private names across
modules, in the real package; and the check finds each kind of problem in a made-up one."""

from __future__ import annotations

from pathlib import Path

from cosam import layers


def test_the_package_imports_one_way() -> None:
    assert layers.problems() == []
    # the check looked at the real graph (including imports inside functions)
    found = layers.imports()
    assert len(found) > 300 and any(i.in_function for i in found)
    assert not any(
        i.source.startswith("cosam.methods") and i.target == "cosam.config" for i in found
    )


def _package(root: Path, files: dict) -> Path:
    pkg = root / "cosam"
    for name, text in files.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_the_check_finds_cycles_upward_and_private_imports(tmp_path: Path) -> None:
    pkg = _package(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "config.py": "def check():\n    from .methods import get_method  # late\n",
            "methods/__init__.py": "from ..config import Config\nfrom .base import _helper\n",
            "methods/base.py": "def _helper():\n    pass\n",
            "engine.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .cli import x\n",
            "plots.py": "from .sweep import y\n",
            "sweep.py": "",
            "stray.py": "",
            "cli.py": "",
            # from . import submodule runs the package's __init__, which imports this module
            "models/__init__.py": "from .decoder import decode\n",
            "models/decoder.py": "from . import fastpath\n",
            "models/fastpath.py": "",
        },
    )
    got = layers.problems(pkg)
    assert "import cycle: cosam.config <-> cosam.methods" in got
    assert "import cycle: cosam.models <-> cosam.models.decoder" in got
    assert any("cosam.methods:1 imports cosam.config from a higher layer" in g for g in got)
    assert any("imports the private name cosam.methods.base._helper" in g for g in got)
    assert any("cosam.plots:1 imports cosam.sweep from a higher layer" in g for g in got)
    assert "cosam.stray is in no layer: add it to cosam.layers.LAYERS" in got
    # a type imported from a higher layer is a dependency too, even under TYPE_CHECKING
    assert any("cosam.engine:3 imports cosam.cli from a higher layer" in g for g in got)


def test_the_check_finds_a_module_doing_too_many_jobs(tmp_path: Path) -> None:
    at_limit = "x = 1\n" * layers.MAX_LINES
    pkg = _package(
        tmp_path,
        {"__init__.py": "", "errors.py": at_limit, "io.py": at_limit + "y = 2\n"},
    )
    got = layers.problems(pkg)
    assert got == [f"cosam.io has {layers.MAX_LINES + 1} lines (more than 400): split it by job"]
