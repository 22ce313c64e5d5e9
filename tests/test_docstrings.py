"""One docstring format, segment-anything's: ``Arguments:`` / ``Returns:`` / ``Raises:`` sections.

A docstring that explains arguments does so in an ``Arguments:`` section, one
``name (type): meaning`` entry per parameter (``a, b (type): ...`` for a group). The check reads
every module of ``cosam/`` as text (nothing is imported) and fails on:

* another format: Google's ``Args:``, numpy's ``Parameters`` with a dashed underline, Sphinx's
  ``:param x:``;
* an ``Arguments:`` entry that names no parameter of its function (a stale name after a rename),
  or, for a class, no parameter of ``__init__`` (no field of a dataclass);
* a function whose ``Arguments:`` section leaves out one of its parameters.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path
from typing import List, Sequence

PACKAGE = Path(__file__).resolve().parents[1] / "cosam"
SECTIONS = {
    "Arguments:",
    "Returns:",
    "Raises:",
    "Yields:",
    "Example:",
    "Examples:",
    "Attributes:",
    "Note:",
}
_NAMES = r"\*{0,2}[A-Za-z_]\w*(?:,\s*\*{0,2}[A-Za-z_]\w*)*"
ENTRY = re.compile(rf"^\s*({_NAMES})\s*(\(.*\))?\s*:")
OTHER_FORMAT = re.compile(r"^\s*(Args|Parameters|Params):?\s*$|:param\s|^\s*-{4,}\s*$", re.M)


def _params(fn: ast.AST) -> List[str]:
    a = fn.args  # type: ignore[attr-defined]
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return [n for n in names if n not in ("self", "cls")]


def documented(doc: str) -> List[str]:
    """The names an ``Arguments:`` section lists (``"?<text>"`` for an entry that does not parse)."""
    lines = doc.splitlines()
    out: List[str] = []
    for i, line in enumerate(lines):
        if line.strip() != "Arguments:":
            continue
        indent = None
        for entry in lines[i + 1 :]:
            if not entry.strip():
                continue
            if entry.strip() in SECTIONS:
                break
            here = len(entry) - len(entry.lstrip())
            indent = here if indent is None else indent
            if here < indent:
                break
            if here == indent:
                m = ENTRY.match(entry)
                if m:
                    out += [n.strip().lstrip("*") for n in m.group(1).split(",")]
                else:
                    out.append("?" + entry.strip()[:40])
    return out


def problems(source: str, where: str = "<source>") -> List[str]:
    """Every docstring problem of one module's source (see the module docstring)."""
    tree = ast.parse(source)
    out: List[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node) or ""
        name = getattr(node, "name", "module")
        line = getattr(node, "lineno", 1)
        if OTHER_FORMAT.search(doc):
            out.append(f"{where}:{line} {name}: use Arguments:/Returns: sections")
        listed = documented(doc)
        if isinstance(node, ast.ClassDef):
            init = next(
                (b for b in node.body if isinstance(b, ast.FunctionDef) and b.name == "__init__"),
                None,
            )
            fields = [
                b.target.id
                for b in node.body
                if isinstance(b, ast.AnnAssign) and isinstance(b.target, ast.Name)
            ]
            allowed: Sequence[str] = _params(init) if init is not None else fields
            out += [f"{where}:{line} class {name}: {n} is not a parameter" for n in listed]
            out = [
                p for p in out if not any(p.endswith(f" {n} is not a parameter") for n in allowed)
            ]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = _params(node)
            out += [
                f"{where}:{line} {name}: {n} is not a parameter" for n in listed if n not in params
            ]
            if listed:
                out += [
                    f"{where}:{line} {name}: {p} is not documented"
                    for p in params
                    if p not in listed
                ]
    return out


def test_one_docstring_format_with_real_parameter_names() -> None:
    found: List[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += problems(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    assert not found, "\n".join(found)


def test_the_check_finds_each_kind_of_problem() -> None:
    src = textwrap.dedent(
        '''
        def renamed(images, boxes):
            """Stale name after a rename.

            Arguments:
              imgs (Tensor): (B,3,H,W).
              boxes (Tensor): (B,4).
            """

        def google(x):
            """Other format.

            Args:
              x: a number.
            """

        class Box:
            """A box.

            Arguments:
              size (int): side.
              colour (str): not a parameter.
            """

            def __init__(self, size):
                self.size = size

        def fine(a, b, *rest, **extra):
            """Every parameter, grouped or not.

            Arguments:
              a, b (int): numbers.
              *rest (int): more.
              **extra (Any): options.

            Returns:
              (int): a sum.
            """
        '''
    )
    found = problems(src)
    assert any("renamed: imgs is not a parameter" in p for p in found)
    assert any("renamed: images is not documented" in p for p in found)
    assert any("google: use Arguments:" in p for p in found)
    assert any("class Box: colour is not a parameter" in p for p in found)
    assert not any("size" in p for p in found)
    assert not any(" fine:" in p for p in found), found
