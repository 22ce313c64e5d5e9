"""``python -m cosam check-data ROOT [--layout NAME_OR_YAML]``: read every pair of a benchmark folder
(built-in layout or a user's YAML domain list) and report problems.

Unlike :func:`cosam.data.build_benchmark`, which stops at the first problem, the check visits every
domain, split and file, and lists each problem on one line that names the file or folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cosam.data.benchmark import SYNTHETIC_MARKER
from cosam.data.custom import data_root_for, is_layout_file, load_custom_layout
from cosam.data.domains import LAYOUTS
from cosam.data.reader import folder_problem, list_samples, load_pair
from cosam.errors import ConfigError, DataError


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@dataclass
class CheckReport:
    """What :func:`check_data` found.

    Attributes:
      root: the folder checked; layout: the layout name; synthetic: SYNTHETIC.md is present.
      rows: one dict per (domain, split): domain (folder), slot, split, n (pairs listed), n_ok (pairs
        read), min_size / max_size ("WxH", smallest and largest width and height), fg_mean (mean
        foreground fraction of the readable pairs, None if none) and problems (count).
      problems: one line per problem, naming the file or folder.
    """

    root: Path
    layout: str
    synthetic: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def n_pairs(self) -> int:
        """Pairs that were read without a problem."""
        return sum(r["n_ok"] for r in self.rows)

    def text(self) -> str:
        """A readable report: a SYNTHETIC / real line, a table, then the problems."""
        kind = (
            "SYNTHETIC benchmark (generated data, SYNTHETIC.md present): results on it are not real"
            if self.synthetic
            else "real data (not generated)"
        )
        lines = [f"{self.root}: {kind}; layout {self.layout}"]
        head = ("slot", "domain", "split", "n", "read", "min WxH", "max WxH", "fg mean", "problems")
        table = [head] + [
            (
                r["slot"],
                r["domain"],
                r["split"],
                str(r["n"]),
                str(r["n_ok"]),
                r["min_size"] or "-",
                r["max_size"] or "-",
                "-" if r["fg_mean"] is None else f"{r['fg_mean']:.4f}",
                str(r["problems"]),
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
        lines.append(f"{self.n_pairs} pairs read, {len(self.problems)} problem(s)")
        if self.problems:
            lines += ["", "Problems:"] + [f"- {p}" for p in self.problems]
        lines.append("OK" if self.ok else "NOT OK")
        return "\n".join(lines)


def _check_split(
    root: Path,
    spec: Any,
    slot: str,
    domain: str,
    split: str,
    allow_nonbinary: bool,
    problems: list[str],
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "domain": domain,
        "slot": slot,
        "split": split,
        "n": 0,
        "n_ok": 0,
        "min_size": None,
        "max_size": None,
        "fg_mean": None,
        "problems": 0,
    }
    start = len(problems)
    try:
        samples = list_samples(root, spec, slot, split)
    except (DataError, OSError) as exc:
        problems.append(f"{slot}/{split}: {_one_line(exc)}")
        row["problems"] = 1
        return row
    row["n"] = len(samples)
    ws, hs, fg = [], [], []
    for sample in samples:
        try:
            image, mask = load_pair(sample, allow_nonbinary=allow_nonbinary)
        except (DataError, OSError) as exc:
            problems.append(f"{slot}/{split}: {_one_line(exc)}")
            continue
        hs.append(image.shape[0])
        ws.append(image.shape[1])
        fg.append(float(mask.mean()))
    row["n_ok"] = len(fg)
    if fg:
        row["min_size"] = f"{min(ws)}x{min(hs)}"
        row["max_size"] = f"{max(ws)}x{max(hs)}"
        row["fg_mean"] = sum(fg) / len(fg)
    row["problems"] = len(problems) - start
    return row


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def check_data(
    root: Optional[Path], layout: str = "cosam-mini", allow_nonbinary: bool = False
) -> CheckReport:
    """Check every domain and split of ``layout`` under ``root``; never stops at the first problem.

    Arguments:
      root: the data root; None only for a layout file that sets its own ``root``.
      layout: a built-in layout name or the path of a YAML/JSON domain list (cosam.data.custom),
        whose folders are absolute or relative to the data root.
      allow_nonbinary: accept (and binarise) masks with more than two values.

    Raises:
      ConfigError: unknown layout, an unreadable or invalid layout file, or no data root (the only
        errors not turned into reported problems).
    """
    if is_layout_file(layout):
        custom = load_custom_layout(Path(layout))
        root = data_root_for(custom, Path(root) if root is not None else None)
        names = list(custom.tasks) + ([custom.probe] if custom.probe is not None else [])
        specs: dict[str, Any] = {n: custom.specs[n] for n in names}
    elif layout in LAYOUTS:
        specs = LAYOUTS[layout]
    else:
        raise ConfigError(
            f"unknown data layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}, "
            f"or the path of a .yaml/.yml/.json domain list"
        )
    if root is None:
        raise ConfigError(
            "no data root to check: give the data folder (check-data ROOT)"
            + (f" or a 'root' entry in {layout}" if is_layout_file(layout) else "")
        )
    root = Path(root)
    report = CheckReport(root, layout, _is_file(root / SYNTHETIC_MARKER))
    problem = folder_problem(root)
    if problem is not None:
        report.problems.append(f"data root {root} {problem}")
        return report
    for slot, spec in specs.items():
        domain = spec.folder or slot
        splits: list[tuple[str, Optional[Any]]] = [("train", spec.train), ("test", spec.test)]
        problem = folder_problem(root / spec.folder) if spec.folder else None
        if problem is not None:
            report.problems.append(
                f"{slot}: domain folder {root / spec.folder} {problem} ({spec.source})"
            )
            for split, s in splits:
                if s is not None:
                    report.rows.append(
                        {
                            "domain": domain,
                            "slot": slot,
                            "split": split,
                            "n": 0,
                            "n_ok": 0,
                            "min_size": None,
                            "max_size": None,
                            "fg_mean": None,
                            "problems": 1,
                        }
                    )
            continue
        for split, s in splits:
            if s is not None:
                report.rows.append(
                    _check_split(root, s, slot, domain, split, allow_nonbinary, report.problems)
                )
    return report
