"""Tables over finished runs: read run folders, never recompute results.

Every table carries a ``data`` column/caption that says "SYNTHETIC" when the run used the
generated benchmark, so a synthetic number is never mistaken for a real one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .io import portable, read_json
from .matrix import TaskMatrix, fmt1, fmt_pct
from .metrics import dataset_scores
from .rundir import RunDir


@dataclass
class RunRecord:
    """A finished run folder, loaded."""

    path: Path
    meta: Dict[str, Any]
    matrix: TaskMatrix
    costs: Dict[str, Any]

    @property
    def method(self) -> str:
        return self.meta["config"]["method"]

    @property
    def synthetic(self) -> bool:
        return bool(self.meta["resolved"]["synthetic"])

    @property
    def timing(self) -> Dict[str, Any]:
        return self.costs.get("timing", {})

    @property
    def compute_s(self) -> float:
        """The run's measured seconds: training + evaluation + encoding, summed over the
        invocations that produced it (a resumed run's earlier ones included; start-up and work a
        kill threw away are not). Wall-clock: a paused or crowded process counts its waits. NaN when
        the run recorded none of them."""
        parts = [self.timing.get(k) for k in ("train_s", "eval_s", "encode_s")]
        if all(p is None for p in parts):
            return float("nan")
        return float(sum(p for p in parts if p is not None))


def matrix_file(path: Path) -> Path:
    """A finished run's ``matrix.json``, or the ``matrix.json.gz`` of an archived run
    (:mod:`cosam.archive`)."""
    plain = Path(path) / "matrix.json"
    return (
        plain
        if plain.is_file() or not (Path(path) / "matrix.json.gz").is_file()
        else plain.with_suffix(".json.gz")
    )


def load_run(path: Path) -> RunRecord:
    path = Path(path)
    if not RunDir(path).is_done():
        raise FileNotFoundError(f"{path} is not a finished run (no DONE file); run it first")
    return RunRecord(
        path,
        read_json(path / "config.json"),
        TaskMatrix.from_dict(read_json(matrix_file(path))),
        read_json(path / "costs.json"),
    )


def data_label(runs: Sequence[RunRecord]) -> str:
    if any(r.synthetic for r in runs):
        return "SYNTHETIC generated data (not a real benchmark result)"
    roots = sorted({portable(r.meta["resolved"]["data_root"]) for r in runs})
    layouts = sorted(
        {
            layout_text(r.meta.get("config", {}).get("data", {}).get("layout", "cosam-mini"))
            for r in runs
        }
    )
    return f"real data: {', '.join(roots)}; layout {', '.join(layouts)}"


def layout_text(layout: str) -> str:
    """A layout's name, with what fills MVTec_I for the two cosam-mini mappings (piped or mtd_a)."""
    from .data.domains import LAYOUTS

    if layout in ("cosam-mini", "cosam-mini-mtd"):
        return f"{layout} (MVTec_I = {LAYOUTS[layout]['MVTec_I'].folder})"
    return str(layout)


def summary_rows(runs: Sequence[RunRecord]) -> List[Dict[str, Any]]:
    """One row per run: Last/Avg/FF/BWT for IoU and BIoU, probe retention, cost (Table 2 layout)."""
    rows = []
    for r in runs:
        row: Dict[str, Any] = {"method": r.method, "data": "synthetic" if r.synthetic else "real"}
        for metric in ("iou", "biou"):
            s = r.matrix.summary(metric)
            for k in ("last", "avg", "ff", "bwt"):
                row[f"{k}_{metric}"] = s[k]
        s = r.matrix.summary("iou")
        row["probe_zero_shot"] = s["probe_zero_shot"]
        row["probe_last"] = s["probe_last"]
        row["trainable_params"] = r.costs.get("trainable_params")
        row["train_s"] = r.timing.get("train_s")
        row["test_images"] = n_test_images(r)
        rows.append(row)
    return rows


def n_test_images(r: RunRecord) -> Optional[int]:
    """Test images scored per evaluation over the tasks (not the probe); None if unknown."""
    per = r.matrix.per_image(r.matrix.n_rows - 1)
    if per is None:
        return None
    return sum(len(per[t]) for t in r.matrix.tasks if t in per)


def per_domain_rows(
    zeroshot: Optional[RunRecord], sequential: Optional[RunRecord], joint: Optional[RunRecord]
) -> List[Dict[str, Any]]:
    """Per task: zero-shot IoU, sequential just before and right after its own task and after the
    last, joint.

    Columns are in training order of the sequential run; "own" is a[t][t] (the diagonal) and
    "before_own" is a[t-1][t], the same task just before it is trained (what training on it adds).
    "before_own" is a column only when the run scored its tasks before training them
    (``eval.unseen_tasks``); otherwise "zero_shot" is the score before any training.
    """
    ref = sequential or joint or zeroshot
    if ref is None:
        return []
    m = ref.matrix
    sm = sequential.matrix if sequential is not None else None
    # a[t-1][t] exists only where the run scored tasks before training them (eval.unseen_tasks)
    before_own = sm is not None and (
        sm.n_rows < 3 or math.isfinite(sm.value("iou", 1, sm.tasks[1]))
    )
    rows = []
    for j, name in enumerate(m.tasks + ([m.probe] if m.probe else [])):
        row: Dict[str, Any] = {"task": name}
        row["zero_shot"] = zeroshot.matrix.value("iou", 0, name) if zeroshot else math.nan
        if sm is not None:
            own = (
                sm.value("iou", j + 1, name) if name in sm.tasks and j + 1 < sm.n_rows else math.nan
            )
            if before_own:
                row["sequential_before_own"] = (
                    sm.value("iou", j, name) if name in sm.tasks and j < sm.n_rows else math.nan
                )
            row["sequential_own"] = own
            row["sequential_last"] = sm.value("iou", sm.n_rows - 1, name)
            row["forgetting"] = own - row["sequential_last"] if name in sm.tasks else math.nan
        row["joint"] = (
            joint.matrix.value("iou", joint.matrix.n_rows - 1, name) if joint else math.nan
        )
        rows.append(row)
    return rows


def markdown_table(
    rows: Sequence[Dict[str, Any]], columns: Optional[Sequence[str]] = None, pct: Sequence[str] = ()
) -> str:
    """Rows as a markdown table; columns in ``pct`` are shown as percentages with one decimal."""
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())

    def cell(c: str, v: Any) -> str:
        if c in pct:
            return fmt_pct(v)
        if isinstance(v, float):
            return "–" if not math.isfinite(v) else fmt1(v)
        return "–" if v is None else str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(out) + "\n"


def matrix_markdown(m: TaskMatrix, metric: str = "iou") -> str:
    """The task matrix (rows: evaluation points; columns: tasks + probe) in percent."""
    arr = m.array(metric)
    rows = []
    for i, label in enumerate(m.rows):
        rows.append({"after": f"{i} {label}", **{c: arr[i, j] for j, c in enumerate(m.columns)}})
    return markdown_table(rows, ["after"] + m.columns, pct=m.columns)


# ----------------------------------------------------------------------------------------------
# MoDA
# ----------------------------------------------------------------------------------------------


def load_router(rec: RunRecord) -> Optional[Dict[str, Any]]:
    """A MoDA run's ``router.json`` (None for other methods)."""
    path = rec.path / "router.json"
    return read_json(path) if path.exists() else None


def moda_rows(runs: Dict[str, RunRecord]) -> List[Dict[str, Any]]:
    """Each base beside base+MoDA: Last/Avg/FF (IoU, BIoU), router accuracy after the last task,
    parameters stored per task and in all, buffer images, seconds of training (the training
    loop's) and of router training (``router_s``: the seconds each router's training took, also
    for a router loaded from the memo, :mod:`cosam.methods.moda_memo`).

    ``runs`` maps method name -> record (bases ``sequential``, ``decoder_tuning``,
    ``sam_adapter`` and their ``*_moda``; ``zeroshot`` first if present).
    """
    order = ["zeroshot"] + [
        m for b in ("sequential", "decoder_tuning", "sam_adapter") for m in (b, f"{b}_moda")
    ]
    rows = []
    for m in [m for m in order if m in runs] + [m for m in runs if m not in order]:
        r = runs[m]
        base = summary_rows([r])[0]
        row: Dict[str, Any] = {"method": m}
        row.update(
            {
                f"{k}_{metric}": base[f"{k}_{metric}"]
                for metric in ("iou", "biou")
                for k in ("last", "avg", "ff")
            }
        )
        router = load_router(r)
        row["router_acc"] = router["final"]["accuracy"] if router and router.get("final") else None
        row["stored_params_per_task"] = r.costs.get("stored_params_per_task")
        row["stored_params_total"] = r.costs.get("stored_params_total")
        row["buffer_images"] = (
            (r.costs.get("buffer_images_per_task") or 0) * len(r.matrix.tasks) if router else 0
        )
        row["train_s"] = base["train_s"]
        row["router_s"] = sum(router.get("router_seconds") or []) if router else 0.0
        row["test_images"] = base["test_images"]
        rows.append(row)
    return rows


def router_accuracy_rows(router: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Task-id accuracy per seen task after each evaluation step (rows: steps)."""
    out = []
    for entry in router["log"]:
        row: Dict[str, Any] = {"step": entry["step"], "overall": entry["accuracy"]}
        row.update(entry["per_task"])
        out.append(row)
    return out


def restrict_to_subset(full: RunRecord, subset: RunRecord) -> RunRecord:
    """``full``'s task matrix recomputed on the test images of ``subset`` (a run with smaller
    ``test_cap``/``probe_cap``, e.g. SAM-Adapter in the cpu profile), from its per-image scores.

    Capped test sets are the first images of one sha1 ranking, so ``subset``'s images are a
    subset of ``full``'s; the result compares both on the same images. Raises ValueError when
    they are not (different data or order) or when ``full`` stored no per-image scores.
    """
    from .inspect import benchmark_of

    def names(rec: RunRecord) -> Dict[str, List[str]]:
        b = benchmark_of(rec.path)
        sets = b.with_probe()
        return {t.name: [s.name for s in t.test] for t in sets}

    fn, sn = names(full), names(subset)
    m = full.matrix
    out = TaskMatrix(m.tasks, m.probe)
    for r in range(m.n_rows):
        per = m.per_image(r)
        if per is None:
            raise ValueError(f"{full.path} has no per-image scores for row {r}")
        iou: Dict[str, float] = {}
        biou: Dict[str, float] = {}
        sub_per: Dict[str, List[Tuple[float, float]]] = {}
        for col in (c for c in m.columns if c in per):  # unscored (unseen) cells stay NaN
            pos = {n: i for i, n in enumerate(fn[col])}
            missing = [n for n in sn.get(col, []) if n not in pos]
            if missing or col not in sn:
                raise ValueError(
                    f"{subset.path}'s {col} images are not all in {full.path} ({missing[:3]})"
                )
            scores = [tuple(per[col][pos[n]]) for n in sn[col]]
            sub_per[col] = scores  # type: ignore[assignment]
            iou[col], biou[col] = dataset_scores(scores)
        out.add_row(m.rows[r], iou, biou, sub_per)
    return RunRecord(full.path, full.meta, out, full.costs)
