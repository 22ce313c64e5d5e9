"""The report notebooks execute on the smoke profile and write their run folders and CSV files.

Four notebook executions in all (each costs a kernel start, ~4 s): 00, 01 (three methods, tiny
caps), 05 (reusing 01's runs) and one with a misspelt parameter through the papermill CLI.
Jupyter and matplotlib state goes to a temporary folder, where a ``python3`` kernelspec runs this
interpreter (notebooks/run_reports.py: jupyter_env).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("papermill")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
METHODS = ["zeroshot", "sequential", "lwf"]
SMALL: Dict[str, Any] = {
    "data": {"train_cap": 4, "test_cap": 2, "probe_cap": 2},
    "train": {"epochs": 1},
}


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, NOTEBOOKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_reports = _script("run_reports")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A work folder; Jupyter/matplotlib env vars point into it for the module's duration."""
    root = tmp_path_factory.mktemp("notebooks")
    mp = pytest.MonkeyPatch()
    for key, value in run_reports.jupyter_env(root / "jupyter").items():
        mp.setenv(key, value)
    yield root
    mp.undo()


def common(work: Path) -> Dict[str, Any]:
    return {"profile": "smoke", "results_dir": str(work / "runs"), "cache_dir": str(work / "cache")}


def execute(work: Path, name: str, **parameters: Any) -> Any:
    out = work / "out" / f"{name}.ipynb"
    run_reports.execute(NOTEBOOKS / f"{name}.ipynb", out, {**common(work), **parameters})
    return nbformat.read(out, as_version=4)


def errors(nb: Any) -> List[str]:
    return [
        f"{o.ename}: {o.evalue}"
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]


def markdown_text(nb: Any) -> str:
    return "\n".join(
        o["data"]["text/markdown"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "text/markdown" in o.get("data", {})
    )


def n_images(nb: Any) -> int:
    """Figures shown; a figure also returned as a cell's value (shown twice) fails the count."""
    twice = [
        c.source.splitlines()[0]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "execute_result"
        and {"image/png", "image/jpeg"} & set(o.get("data", {}))
    ]
    assert not twice, f"a figure is the value of a cell and is shown twice: {twice}"
    reprs = [
        o["data"]["text/plain"][:60]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "execute_result"
        and o.get("data", {})
        .get("text/plain", "")
        .startswith(("<matplotlib", "<Axes", "<Figure", "Text("))
    ]
    assert not reprs, f"a plotting call's return value is printed in the report: {reprs}"
    return sum(
        1
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if {"image/png", "image/jpeg"} & set(o.get("data", {}))
    )


def test_notebooks_are_in_sync_with_their_py_percent_sources(tmp_path: Path) -> None:
    """Each notebooks/NN_*.ipynb is paired with a py:percent source that says the same, cell by
    cell; an edit on one side only is caught (and run_reports refuses to run)."""
    import shutil

    pytest.importorskip("jupytext")
    assert run_reports.out_of_sync() == []
    pairs = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    assert [p.stem for p in pairs] == [p.stem for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))]
    assert len(pairs) == 6
    for py in pairs:
        nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
        assert [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])], py.name
        assert not [c for c in nb.cells if c.cell_type == "code" and c.get("outputs")], (
            f"{py.stem}.ipynb carries outputs; the executed copies belong in results/"
        )
    # an edit made in the .py only is caught
    for p in NOTEBOOKS.glob("0[12]_*.*"):
        shutil.copy(p, tmp_path / p.name)
    py = tmp_path / "01_baselines.py"
    py.write_text(py.read_text().replace("# # 01", "# # 01 (edited)", 1))
    stale = run_reports.out_of_sync(tmp_path)
    assert (
        len(stale) == 1
        and "01_baselines.ipynb is out of sync" in stale[0]
        and "jupytext --sync" in stale[0]
    )
    (tmp_path / "02_moda.py").unlink()
    assert any(
        "02_moda.ipynb has no paired 02_moda.py" in m for m in run_reports.out_of_sync(tmp_path)
    )


def test_benchmark_notebook(work: Path) -> None:
    nb = execute(work, "00_benchmark", n_per_domain=2)
    assert errors(nb) == []
    rows = (
        (work / "runs" / "smoke" / "reports" / "00_benchmark_domains.csv").read_text().splitlines()
    )
    assert len(rows) == 1 + 9  # header + 8 tasks + probe
    text = markdown_text(nb)
    assert "SYNTHETIC" in text and "The sequence has 8 tasks" in text  # a computed conclusion
    assert n_images(nb) == 3  # counts, sample grid, prompts
    # portable: no absolute folder of this machine in what a reader sees or in papermill's record
    assert str(work) not in text and "/tmp" not in text
    assert nb.metadata["papermill"]["input_path"] == "notebooks/00_benchmark.ipynb"
    assert not Path(nb.metadata["papermill"]["output_path"]).is_absolute()


@pytest.fixture(scope="module")
def baselines(work: Path) -> Any:
    return execute(work, "01_baselines", methods=METHODS, overrides=SMALL)


def test_baselines_notebook(work: Path, baselines: Any) -> None:
    assert errors(baselines) == []
    for m in METHODS:
        assert (work / "runs" / "smoke" / f"{m}-paper-s0" / "DONE").is_file()
    reports = work / "runs" / "smoke" / "reports"
    for name in (
        "01_baselines_summary.csv",
        "01_baselines_runs.csv",
        "01_baselines_per_domain.csv",
    ):
        assert (reports / name).is_file(), name
    summary = (reports / "01_baselines_summary.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in summary[1:]] == METHODS
    text = markdown_text(baselines)
    assert (
        "Sequential fine-tuning forgets" in text and "HQ-SAM" in text
    )  # a conclusion and the published table
    assert n_images(baselines) == 4  # boundary-band figure, bars, heat maps, task curves


def test_zero_shot_notebook_reuses_runs(work: Path, baselines: Any) -> None:
    done = {
        m: (work / "runs" / "smoke" / f"{m}-paper-s0" / "matrix.json").stat().st_mtime_ns
        for m in METHODS
    }
    nb = execute(work, "05_zero_shot", methods=METHODS, overrides=SMALL, n_examples=2)
    assert errors(nb) == []
    assert done == {
        m: (work / "runs" / "smoke" / f"{m}-paper-s0" / "matrix.json").stat().st_mtime_ns
        for m in METHODS
    }
    probe = (
        (work / "runs" / "smoke" / "reports" / "05_zero_shot_probe.csv").read_text().splitlines()
    )
    assert [r.split(",")[0] for r in probe[1:]] == METHODS
    text = markdown_text(nb)
    assert "reproduce the run's stored per-image scores (largest difference 0" in text
    assert n_images(nb) == 2  # probe curves, example masks


def test_inspect_refuses_a_deleted_step(work: Path, baselines: Any) -> None:
    from cosam.errors import CosamError
    from cosam.inspect import load_strategy

    with pytest.raises(CosamError, match="keeps the state of step 8 only"):
        load_strategy(work / "runs" / "smoke" / "sequential-paper-s0", step=3)


def test_misspelt_parameter_fails_with_valid_names(work: Path) -> None:
    out = work / "out" / "misspelt.ipynb"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(NOTEBOOKS / "01_baselines.ipynb"),
            str(out),
            "-p",
            "ordr",
            "paper",
            "-k",
            run_reports.KERNEL,
            "--cwd",
            str(REPO),
            "--no-progress-bar",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert proc.returncode != 0
    assert "valid parameters" in proc.stdout + proc.stderr
    assert "unknown notebook parameter ordr" in proc.stdout + proc.stderr


MODA_SMALL: Dict[str, Any] = (
    SMALL  # the same runs' configs as 01's, so zeroshot is reused, not refused
)


@pytest.fixture(scope="module")
def moda(work: Path) -> Any:
    """02 on one base (Decoder-Tuning, the cheapest); 03 and 04 reuse its MoDA run."""
    return execute(
        work,
        "02_moda",
        bases=["decoder_tuning"],
        moda_options={"router_epochs": 2},
        overrides=MODA_SMALL,
    )


def test_moda_notebook(work: Path, moda: Any) -> None:
    assert errors(moda) == []
    for m in ("zeroshot", "decoder_tuning", "decoder_tuning_moda"):
        assert (work / "runs" / "smoke" / f"{m}-paper-s0" / "DONE").is_file()
    table = (work / "runs" / "smoke" / "reports" / "02_moda_table.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in table[1:]] == [
        "zeroshot",
        "decoder_tuning",
        "decoder_tuning_moda",
    ]
    assert (
        work / "runs" / "smoke" / "reports" / "02_moda_router_decoder_tuning_moda.csv"
    ).is_file()
    text = markdown_text(moda)
    assert "decoder_tuning (seed 0): Last-IoU" in text and "the router is least accurate on" in text
    # verdicts come from cosam.claims: one seed decides nothing
    assert (
        "MoDA raises Last-IoU over its base" in text
        and "**undecided** (1 seed(s), 3 needed)" in text
    )
    assert "**holds**" not in text and "**fails**" not in text and "meets the target" not in text
    assert "buffer images stored per task" in text  # what MoDA costs
    assert n_images(moda) == 4  # diagram, matrices, confusion, storage


def test_ablation_and_tsne_notebooks_reuse_the_moda_run(work: Path, moda: Any) -> None:
    run = work / "runs" / "smoke" / "decoder_tuning_moda-paper-s0"
    before = (run / "matrix.json").stat().st_mtime_ns
    common_p = {
        "method": "decoder_tuning_moda",
        "overrides": {**MODA_SMALL, "method_options": {"router_epochs": 2}},
    }
    nb = execute(
        work,
        "03_ablations",
        variants={
            "default": {},
            "random tokens": {"train_tokens": False},
            "buffer 1": {"buffer_size": 1},
        },
        **common_p,
    )
    assert errors(nb) == []
    rows = (work / "runs" / "smoke" / "reports" / "03_ablations.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["default", "random tokens", "buffer 1"]
    assert "Most accurate router" in markdown_text(nb)
    assert "so its accuracy is what the ablations move" not in markdown_text(nb)  # no fixed finding
    nb = execute(work, "04_tsne", per_domain=2, perplexity=5.0, **common_p)
    assert errors(nb) == []
    sil = (work / "runs" / "smoke" / "reports" / "04_tsne_silhouette.csv").read_text().splitlines()
    assert len(sil) == 1 + 3
    assert "Silhouette on the true domains" in markdown_text(nb)
    assert (run / "matrix.json").stat().st_mtime_ns == before  # reused, not retrained


def test_html_reports_show_results_and_hide_code_unless_tagged(tmp_path: Path) -> None:
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    hidden = new_code_cell(
        "secret_variable_name = 41 + 1\nsecret_variable_name",
        outputs=[
            new_output("execute_result", {"text/plain": "RESULT_VALUE_42"}, execution_count=1)
        ],
    )
    shown = new_code_cell("visible_code_line = 'kept'", metadata={"tags": [run_reports.SHOW_TAG]})
    nb = new_notebook(cells=[new_markdown_cell("# Report heading"), hidden, shown])
    path = tmp_path / "r.ipynb"
    nbformat.write(nb, path)
    html = run_reports.to_html(path).read_text()
    assert "Report heading" in html and "RESULT_VALUE_42" in html
    assert "secret_variable_name" not in html
    assert "visible_code_line" in html
    assert "secret_variable_name" in path.read_text()  # the .ipynb keeps all code


def test_readme_lists_every_notebook_parameter() -> None:
    """The README's parameter tables name every declared parameter of every notebook."""
    import re

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Notebook parameters") :]
    section = section[: section.index("\nProfiles (")]
    for py in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")):
        declared = re.search(r"declared=\[([^\]]*)\]", py.read_text())
        assert declared, py.name
        for name in re.findall(r"'([a-z_]+)'", declared.group(1)):
            assert f"| `{name}` |" in section, (
                f"{py.stem}'s parameter {name} is missing from the README's table"
            )


def test_run_reports_param_reaches_only_the_notebooks_that_declare_it() -> None:
    """``--param 'seeds=[0, 1, 2]'`` is JSON-decoded and given to 01, 02 and 05 (which declare
    ``seeds``), never to 03 and 04 (which take one ``seed``); a malformed one is refused."""
    import argparse

    assert run_reports.parse_param("seeds=[0, 1, 2]") == ("seeds", [0, 1, 2])
    assert run_reports.parse_param("order=paper") == ("order", "paper")
    for bad in ("seeds", "=3", "two words=1"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
            run_reports.parse_param(bad)
    takes = {
        name: "seeds" in run_reports.declared_parameters(NOTEBOOKS / f"{name}.ipynb")
        for name in ("01_baselines", "02_moda", "03_ablations", "04_tsne", "05_zero_shot")
    }
    assert takes == {
        "01_baselines": True,
        "02_moda": True,
        "03_ablations": False,
        "04_tsne": False,
        "05_zero_shot": True,
    }
