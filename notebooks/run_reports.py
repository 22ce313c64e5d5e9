"""Execute the report notebooks with papermill and export each to HTML (results first, code hidden).

Each notebook's source is its paired ``py:percent`` file (``notebooks/NN_name.py``, jupytext);
edit that, then ``jupytext --sync notebooks/NN_name.py`` (``make notebooks`` syncs them all).
A run refuses notebooks that are out of sync with their source.

    python notebooks/run_reports.py                       # every notebooks/NN_*.ipynb, cpu profile
    python notebooks/run_reports.py --profile smoke --only 01_baselines
    python notebooks/run_reports.py --profile cpu --results-dir results/runs --out results
    python notebooks/run_reports.py --param 'seeds=[0, 1, 2]'   # 01, 02 and 05 over three seeds

Writes ``<out>/<name>.ipynb`` (executed) and ``<out>/<name>.html`` and prints the wall time of each.
Jupyter and matplotlib state (IPYTHONDIR, JUPYTER_CONFIG_DIR, JUPYTER_DATA_DIR,
JUPYTER_RUNTIME_DIR, MPLCONFIGDIR) goes to a temporary folder, where a ``python3`` kernelspec
pointing at this interpreter is written, so the reports never depend on ~/.jupyter or on which
``python`` is first on PATH. Runs are reused: a finished run folder is not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KERNEL = "python3"
ENV_DIRS = {
    "IPYTHONDIR": "ipython",
    "JUPYTER_CONFIG_DIR": "config",
    "JUPYTER_DATA_DIR": "data",
    "JUPYTER_RUNTIME_DIR": "runtime",
    "MPLCONFIGDIR": "matplotlib",
}


def jupyter_env(root: Path) -> Dict[str, str]:
    """Environment variables that keep Jupyter/matplotlib state under ``root``, with a ``python3``
    kernelspec in ``root/data/kernels`` that runs ``sys.executable`` (the venv's python)."""
    env = {var: str(Path(root) / sub) for var, sub in ENV_DIRS.items()}
    for d in env.values():
        Path(d).mkdir(parents=True, exist_ok=True)
    spec = Path(env["JUPYTER_DATA_DIR"]) / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"Python 3 ({sys.executable})",
                "language": "python",
            }
        )
    )
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # silences a debugger warning in every kernel start
    return env


def execute(src: Path, out: Path, parameters: Mapping[str, Any], cwd: Path = REPO) -> float:
    """Run one notebook with papermill (in this process's environment); returns its wall time."""
    import papermill as pm

    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pm.execute_notebook(
        str(src),
        str(out),
        parameters=dict(parameters),
        kernel_name=KERNEL,
        cwd=str(cwd),
        progress_bar=False,
        log_output=False,
    )
    wall = time.perf_counter() - t0
    make_portable(out)
    return wall


def make_portable(executed: Path) -> None:
    """Papermill records the absolute input and output paths of the machine that ran the report;
    keep them relative to the repository (or by file name) so that a reader elsewhere sees paths
    that mean something (:func:`cosam.io.portable`)."""
    import nbformat

    from cosam.io import portable

    nb = nbformat.read(executed, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path", "cwd"):
        if meta.get(key):
            meta[key] = portable(meta[key], REPO)
    nbformat.write(nb, executed)


#: A code cell with this tag keeps its code in the HTML report (every other cell shows results only).
SHOW_TAG = "show"
#: wide tables scroll sideways inside the page instead of being cut at its right edge
WIDE_TABLES = (
    "<style>.jp-RenderedHTMLCommon table, .jp-RenderedMarkdown table "
    "{display: block; max-width: 100%; overflow-x: auto;}</style>\n"
)


def to_html(executed: Path) -> Path:
    """``<name>.html`` beside the executed notebook: results first, code hidden except in cells
    tagged :data:`SHOW_TAG` (the executed ``.ipynb`` keeps all the code)."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code" and SHOW_TAG not in tags:
            cell.metadata["tags"] = list(tags) + ["hide-input"]
    exporter = HTMLExporter()
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_input_tags={"hide-input"}, enabled=True), enabled=True
    )
    body, _ = exporter.from_notebook_node(nb)
    body = body.replace("</head>", WIDE_TABLES + "</head>", 1)
    html = executed.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html


def portable_path(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def cells(notebook: Any) -> List[tuple]:
    """What a notebook says, for comparing a pair: (cell type, source, tags) per cell."""
    return [
        (c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in notebook.cells
    ]


def out_of_sync(folder: Path = HERE) -> List[str]:
    """The report notebooks whose ``.ipynb`` says something else than its paired ``py:percent``
    source (or lacks one); each entry names the file and the command that fixes it.

    The ``.py`` file is the source to edit (it is linted and reviewed as code); ``jupytext --sync``
    writes the change into the ``.ipynb`` that papermill runs.
    """
    import jupytext
    import nbformat

    problems = []
    for ipynb in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb")):
        py = ipynb.with_suffix(".py")
        if not py.is_file():
            problems.append(
                f"{ipynb.name} has no paired {py.name}; run: jupytext --set-formats ipynb,py:percent "
                f"notebooks/{ipynb.name}"
            )
        elif cells(jupytext.read(py)) != cells(nbformat.read(ipynb, as_version=4)):
            problems.append(
                f"{ipynb.name} is out of sync with {py.name}; run: jupytext --sync notebooks/{py.name}"
            )
    for py in sorted(Path(folder).glob("[0-9][0-9]_*.py")):
        if not py.with_suffix(".ipynb").is_file():
            problems.append(
                f"{py.name} has no paired .ipynb; run: jupytext --sync notebooks/{py.name}"
            )
    return problems


def parse_param(text: str) -> tuple:
    """``NAME=VALUE`` (VALUE as JSON, else the plain string) -> (NAME, value)."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(
            f"--param wants NAME=VALUE, e.g. 'seeds=[0, 1, 2]'; got {text!r}"
        )
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def declared_parameters(src: Path) -> List[str]:
    """The names a notebook's ``parameters`` cell declares (papermill's inspection)."""
    import papermill as pm

    return list(pm.inspect_notebook(str(src)))


def notebooks(only: Optional[List[str]] = None) -> List[Path]:
    """The report notebooks (``NN_name.ipynb``), or those named in ``only`` (with or without .ipynb)."""
    found = sorted(p for p in HERE.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return found
    names = {p.stem: p for p in found}
    wanted = [n[:-6] if n.endswith(".ipynb") else n for n in only]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise SystemExit(f"unknown notebook {', '.join(unknown)}; valid: {', '.join(names)}")
    return [names[n] for n in wanted]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--profile", default="cpu", help="config profile: smoke | cpu | paper (default cpu)"
    )
    ap.add_argument(
        "--only", action="append", metavar="NAME", help="run only this notebook (repeatable)"
    )
    ap.add_argument(
        "--results-dir",
        default="results/runs",
        help="where run folders live (default results/runs)",
    )
    ap.add_argument(
        "--cache-dir", default=None, help="feature cache / generated data (default .cache/cosam)"
    )
    ap.add_argument(
        "--out", default="results", help="where executed notebooks and HTML go (default results)"
    )
    ap.add_argument(
        "--param",
        action="append",
        type=parse_param,
        default=[],
        metavar="NAME=VALUE",
        help="a notebook parameter (VALUE as JSON), given to every notebook that declares NAME "
        "(repeatable); e.g. 'seeds=[0, 1, 2]' reaches 01, 02 and 05",
    )
    args = ap.parse_args(argv)

    out = (REPO / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    params: Dict[str, Any] = {"profile": args.profile, "results_dir": args.results_dir}
    if args.cache_dir:
        params["cache_dir"] = args.cache_dir
    stale = out_of_sync()
    if stale:
        print(
            "error: the notebooks are not in sync with their .py sources:\n  " + "\n  ".join(stale),
            file=sys.stderr,
        )
        return 2
    todo = notebooks(args.only)
    with tempfile.TemporaryDirectory(prefix="cosam-jupyter-") as tmp:
        os.environ.update(jupyter_env(Path(tmp)))
        total = time.perf_counter()
        for src in todo:
            executed = out / src.name
            print(f"{src.stem}: running on profile {args.profile} ...", flush=True)
            declared = declared_parameters(src)
            extra = {k: v for k, v in args.param if k in declared}
            try:
                wall = execute(src, executed, {**params, **extra})
            except Exception as exc:  # papermill has saved the partly executed notebook
                print(
                    f"{src.stem}: FAILED after its last good cell; see {executed}\n{exc}",
                    file=sys.stderr,
                )
                return 1
            html = to_html(executed)
            size = (executed.stat().st_size + html.stat().st_size) / 1e6
            print(
                f"{src.stem}: {wall:.0f} s -> {portable_path(executed)}, "
                f"{html.name} ({size:.1f} MB)",
                flush=True,
            )
        print(f"all {len(todo)} notebook(s): {time.perf_counter() - total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
