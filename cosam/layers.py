"""The package's layers and its import graph: imports point one way, down the layers.

``python -m cosam.layers`` prints every module's imports (module level, inside functions and under
``if TYPE_CHECKING:``; ``from pkg import submodule`` counts as importing ``pkg`` too, since it runs
``pkg/__init__``), then the problems: import cycles, imports that point up a layer, and
``_private`` names imported from another module, and modules longer than 400 lines (one that
long does several jobs). It exits 1 if there is any;
tests/test_layers.py runs the same check.

The layers, lowest first (a module may import from its own layer or any lower one)::

    base      errors io schema (the Config dataclasses) faults published accel distributed metrics
              matrix losses stats (mean ± std over seeds)
              profiles (the values each profile sets)
    data      cosam.data.*
    models    cosam.models.*
    features  the frozen-encoder caches (data + models)
    methods   cosam.methods.*
    config    the typed config (it checks method names and options, so it sits above them)
    runs      rundir (a run folder: name, lock, saved steps, DONE), resources (data root, benchmark,
              model), provenance (whether a recorded run may be reused)
    engine    engine (the training loop), evaluation (scoring a row of the task matrix)
    runner    runner (run: resume, checkpoints, results), inspect (finished runs)
    analyses  ablation, analysis (re-evaluate finished runs through the runner)
    results   report, report_tables (the reports' tables), claims, diagrams
    plots     plots, gallery (images, masks, prompts), sweep_plots (order sensitivity)
    sweeps    grid (a sweep's spec), sweep_markdown, aggregate, sweep_result (read back), sweep
              (running), tables, archive (finished runs kept small enough to commit), tune, launch
    entry     notebook, commands, cli, __main__

Imports inside functions remain where a module is costly to import (torch, the methods: 2.6 s)
and only some commands need it (``cosam.config`` imports in 0.03 s, so the CLI answers ``--help``
and notebooks check their parameters without torch); the check above proves none of them hides
a cycle.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

PACKAGE = Path(__file__).resolve().parent

LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    (
        "base",
        (
            "cosam",
            "cosam.errors",
            "cosam.io",
            "cosam.schema",
            "cosam.faults",
            "cosam.published",
            "cosam.accel",
            "cosam.distributed",
            "cosam.metrics",
            "cosam.matrix",
            "cosam.stats",
            "cosam.profiles",
            "cosam.losses",
            "cosam.layers",
        ),
    ),
    ("data", ("cosam.data",)),
    ("models", ("cosam.models",)),
    ("features", ("cosam.features",)),
    ("methods", ("cosam.methods",)),
    ("config", ("cosam.config",)),
    ("runs", ("cosam.rundir", "cosam.resources", "cosam.provenance")),
    ("engine", ("cosam.engine", "cosam.evaluation")),
    ("runner", ("cosam.runner", "cosam.inspect")),
    ("analyses", ("cosam.ablation", "cosam.analysis")),
    ("results", ("cosam.report", "cosam.report_tables", "cosam.claims", "cosam.diagrams")),
    ("plots", ("cosam.plots", "cosam.gallery", "cosam.sweep_plots")),
    (
        "sweeps",
        (
            "cosam.archive",
            "cosam.grid",
            "cosam.sweep_markdown",
            "cosam.aggregate",
            "cosam.sweep_result",
            "cosam.sweep",
            "cosam.tables",
            "cosam.tune",
            "cosam.launch",
        ),
    ),
    ("entry", ("cosam.notebook", "cosam.commands", "cosam.cli", "cosam.__main__")),
]


@dataclass
class Import:
    """One import of a cosam module by another."""

    source: str
    target: str
    line: int
    in_function: bool
    names: List[str] = field(default_factory=list)


def modules(package: Path = PACKAGE) -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package``."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _targets(
    node: ast.AST, module: str, path: Path, known: Dict[str, Path]
) -> List[Tuple[str, str]]:
    """(module, imported name or '') pairs that ``node`` imports."""
    if isinstance(node, ast.Import):
        return [(a.name, "") for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - (node.level - 1)])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        # ``from pkg import submodule`` runs pkg/__init__ first: an import of the package too
        out += [(target, ""), (sub, "")] if sub in known else [(target, alias.name)]
    return out


def imports(package: Path = PACKAGE) -> List[Import]:
    """Every import of one cosam module by another, ``if TYPE_CHECKING:`` ones included (they never
    run, but a type that must be imported from a higher layer is a dependency all the same)."""
    known = modules(package)
    found: List[Import] = []

    def visit(node: ast.AST, module: str, path: Path, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target, name in _targets(child, module, path, known):
                    while target not in known and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target in known and target != module:
                        found.append(
                            Import(
                                module, target, child.lineno, in_function, [name] if name else []
                            )
                        )
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            visit(child, module, path, nested)

    for module, path in known.items():
        visit(ast.parse(path.read_text(), str(path)), module, path, False)
    return found


def layer_of(module: str) -> Optional[int]:
    """The rank of ``module``'s layer (longest matching prefix), or None if it is in none."""
    best: Optional[Tuple[int, int]] = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # "cosam" names the package's own __init__ only; other prefixes take their submodules
            if module == prefix or (prefix != "cosam" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    return None if best is None else best[0]


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(edges):
            if v not in index:
                connect(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


#: A module longer than this does more than one job: split it (issue "split modules by job").
MAX_LINES = 400


def problems(package: Path = PACKAGE) -> List[str]:
    """Cycles, upward imports, modules in no layer, cross-module private imports and modules over
    :data:`MAX_LINES` lines, one line each."""
    found = imports(package)
    edges: Dict[str, Set[str]] = {}
    for imp in found:
        edges.setdefault(imp.source, set()).add(imp.target)
    out = [f"import cycle: {' <-> '.join(c)}" for c in cycles(edges)]
    for module, path in modules(package).items():
        if layer_of(module) is None:
            out.append(f"{module} is in no layer: add it to cosam.layers.LAYERS")
        n_lines = len(path.read_text().splitlines())
        if n_lines > MAX_LINES:
            out.append(f"{module} has {n_lines} lines (more than {MAX_LINES}): split it by job")
    for imp in found:
        a, b = layer_of(imp.source), layer_of(imp.target)
        if a is not None and b is not None and b > a:
            out.append(
                f"{imp.source}:{imp.line} imports {imp.target} from a higher layer "
                f"({LAYERS[a][0]} -> {LAYERS[b][0]})"
            )
        for name in imp.names:
            if name.startswith("_") and not name.startswith("__"):
                out.append(f"{imp.source}:{imp.line} imports the private name {imp.target}.{name}")
    return out


def main() -> int:
    found = imports()
    by_source: Dict[str, List[Import]] = {}
    for imp in found:
        by_source.setdefault(imp.source, []).append(imp)
    for rank, (layer, _) in enumerate(LAYERS):
        print(f"[{layer}]")
        for module in sorted(m for m in modules() if layer_of(m) == rank):
            targets = sorted(
                {
                    i.target + (" (in a function)" if i.in_function else "")
                    for i in by_source.get(module, [])
                }
            )
            print(f"  {module} -> {', '.join(targets) if targets else '(nothing in cosam)'}")
    bad = problems()
    n_lazy = sum(i.in_function for i in found)
    print(
        f"\n{len(modules())} modules, {len(found)} imports ({n_lazy} inside functions), "
        f"{len(bad)} problem(s)"
    )
    for line in bad:
        print("  " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
