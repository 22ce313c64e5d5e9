"""The continual-learning result matrix and its summaries (protocol §6.2).

A :class:`TaskMatrix` holds a[t][j], the dataset score on column j after training step t, with a
"before training" row 0 and an optional natural-image probe column, and the standard
continual-learning summaries over it: Last, Avg, FF, BWT, plasticity and the probe's drop.
Per-image scores come from :mod:`cosam.metrics`.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from cosam.errors import DataError
from cosam.metrics import METRICS

SUMMARY_KEYS = (
    "last",
    "avg",
    "ff",
    "bwt",
    "plasticity",
    "zero_shot",
    "probe_zero_shot",
    "probe_last",
    "probe_drop",
)

# --------------------------------------------------------------------------------------------
# Continual-learning result matrix
# --------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    # NaN propagates on purpose: a missing evaluation must not silently shrink an average.
    return float(np.mean(values)) if len(values) else float("nan")


def _none_to_nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _nan_to_none(x: float) -> Optional[float]:
    return None if math.isnan(x) else float(x)


class TaskMatrix:
    """
    Continual-learning result matrix a[t][j] for IoU and Boundary IoU.

    Rows are evaluation points: row 0 is "before training" (zero-shot), then one row after each
    training step. In a full sequential run with tasks 1..T in training order there are T + 1
    rows and row t is "after training task t". Columns are the task names in training order,
    then the probe column (e.g. "COCO") if any. Values are dataset scores in [0, 1] (mean over
    images), NaN where not evaluated.

    With a = one metric's matrix, T = number of tasks, task j in column j (1-based):

      last            = (1/T) Σ_j a[T][j]
      avg             = (1/T) Σ_{t=1..T} (1/t) Σ_{j≤t} a[t][j]
      ff              = 1/(T−1) Σ_{j<T} ( max_{l∈[j, T−1]} a[l][j] − a[T][j] )
      bwt             = 1/(T−1) Σ_{j<T} ( a[T][j] − a[j][j] )
      plasticity      = (1/T) Σ_j a[j][j]
      zero_shot       = (1/T) Σ_j a[0][j]
      probe_zero_shot = a[0][probe];  probe_last = a[T][probe];  probe_drop = probe_zero_shot − probe_last

    When the matrix is not a full sequence (fewer than T + 1 rows, e.g. a joint run with rows
    ["before", "joint"] or a zero-shot run with row 0 only), ``last`` and ``probe_last`` use the
    last row, and avg, ff, bwt and plasticity are NaN. ff and bwt are NaN for T = 1. Probe
    entries are NaN without a probe. NaN entries propagate into every summary that reads them.

    Arguments:
      tasks (list(str)): task names in training order.
      probe (str or None): the natural-image probe column name, or None.
    """

    def __init__(self, tasks: Sequence[str], probe: Optional[str] = None) -> None:
        tasks = [str(t) for t in tasks]
        if not tasks:
            raise ValueError("TaskMatrix needs at least one task")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"task names must be unique, got {tasks}")
        if probe is not None and probe in tasks:
            raise ValueError(
                f"probe {probe!r} is also a task; pass it only as probe or only as a task"
            )
        self._tasks: List[str] = tasks
        self._probe: Optional[str] = probe
        self._columns: List[str] = tasks + ([probe] if probe is not None else [])
        self._index: Dict[str, int] = {c: i for i, c in enumerate(self._columns)}
        self._labels: List[str] = []
        self._values: Dict[str, np.ndarray] = {
            m: np.empty((0, len(self._columns)), dtype=np.float64) for m in METRICS
        }
        self._per_image: List[Optional[Dict[str, List[Tuple[float, float]]]]] = []

    # -- construction ------------------------------------------------------------------------

    def add_row(
        self,
        label: str,
        iou: Mapping[str, float],
        biou: Mapping[str, float],
        per_image: Optional[Mapping[str, Sequence[Tuple[float, float]]]] = None,
    ) -> None:
        """
        Append one evaluation point.

        Arguments:
          label (str): the row label, e.g. "before" or the name of the task just trained.
          iou (dict(str, float)): dataset IoU per column, in [0, 1]; missing columns are NaN.
          biou (dict(str, float)): dataset Boundary IoU per column, same convention.
          per_image (dict(str, list(tuple(float, float))) or None): optional per-image
            (IoU, BIoU) lists per column, kept for spreads and significance tests.
        """
        if self.n_rows >= len(self._tasks) + 1:
            raise ValueError(
                f"TaskMatrix already has {self.n_rows} rows, the most for {len(self._tasks)} tasks "
                "(row 0 before training + one per task)"
            )
        row = {}
        for metric, scores in (("iou", iou), ("biou", biou)):
            unknown = sorted(set(scores) - set(self._columns))
            if unknown:
                raise ValueError(
                    f"{metric} has unknown columns {unknown}; columns are {self._columns}"
                )
            values = np.full(len(self._columns), np.nan)
            for name, v in scores.items():
                v = _none_to_nan(v)
                if not math.isnan(v) and not 0.0 <= v <= 1.0:
                    # Catches percentages (×100) passed where fractions are expected.
                    raise ValueError(
                        f"{metric}[{name!r}] = {v} is outside [0, 1]; pass fractions, not percent"
                    )
                values[self._index[name]] = v
            row[metric] = values
        if per_image is not None:
            unknown = sorted(set(per_image) - set(self._columns))
            if unknown:
                raise ValueError(
                    f"per_image has unknown columns {unknown}; columns are {self._columns}"
                )
        for metric in METRICS:
            self._values[metric] = np.vstack([self._values[metric], row[metric][None]])
        self._labels.append(str(label))
        self._per_image.append(
            None
            if per_image is None
            else {k: [(float(a), float(b)) for a, b in v] for k, v in per_image.items()}
        )

    # -- access ------------------------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        """Number of evaluation points (rows) so far."""
        return len(self._labels)

    @property
    def rows(self) -> List[str]:
        """Row labels, row 0 first."""
        return list(self._labels)

    @property
    def columns(self) -> List[str]:
        """Column names: the tasks in training order, then the probe if any."""
        return list(self._columns)

    @property
    def tasks(self) -> List[str]:
        """Task names in training order."""
        return list(self._tasks)

    @property
    def probe(self) -> Optional[str]:
        """The probe column name, or None."""
        return self._probe

    @property
    def is_full_sequence(self) -> bool:
        """True when there is a row 0 plus one row after every task (T + 1 rows)."""
        return self.n_rows == len(self._tasks) + 1

    def array(self, metric: str) -> np.ndarray:
        """
        A copy of one metric's matrix.

        Arguments:
          metric (str): "iou" or "biou".

        Returns:
          (np.ndarray): float64, shape (n_rows, len(columns)), NaN where not evaluated.
        """
        return self._values[self._check_metric(metric)].copy()

    def per_image(self, row: int) -> Optional[Dict[str, List[Tuple[float, float]]]]:
        """The per-image (IoU, BIoU) lists stored with a row, or None if none were given."""
        return self._per_image[row]

    def value(self, metric: str, row: int, col: str) -> float:
        """
        One entry a[row][col].

        Arguments:
          metric (str): "iou" or "biou".
          row (int): row index (0 = before training; negative indices count from the end).
          col (str): column name.

        Returns:
          (float): the score in [0, 1], or NaN if not evaluated.
        """
        if col not in self._index:
            raise KeyError(f"unknown column {col!r}; columns are {self._columns}")
        return float(self._values[self._check_metric(metric)][row, self._index[col]])

    @staticmethod
    def _check_metric(metric: str) -> str:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        return metric

    # -- summaries ---------------------------------------------------------------------------

    def summary(self, metric: str) -> Dict[str, float]:
        """
        Continual-learning summaries of one metric (formulas in the class docstring).

        Arguments:
          metric (str): "iou" or "biou".

        Returns:
          (dict(str, float)): keys last, avg, ff, bwt, plasticity, zero_shot, probe_zero_shot,
            probe_last, probe_drop; fractions in [0, 1] (ff, bwt and probe_drop in [−1, 1]),
            NaN where undefined.
        """
        out = {k: float("nan") for k in SUMMARY_KEYS}
        if self.n_rows == 0:
            return out
        a = self._values[self._check_metric(metric)]
        n_tasks = len(self._tasks)
        # Task j (1-based) lives in column j − 1; rows are already 1-based "after task t".
        out["last"] = _mean(a[-1, :n_tasks])
        out["zero_shot"] = _mean(a[0, :n_tasks])
        if self._probe is not None:
            p = self._index[self._probe]
            out["probe_zero_shot"] = float(a[0, p])
            out["probe_last"] = float(a[-1, p])
            out["probe_drop"] = out["probe_zero_shot"] - out["probe_last"]
        if not self.is_full_sequence:
            return out
        T = n_tasks
        out["avg"] = _mean([_mean(a[t, :t]) for t in range(1, T + 1)])
        out["plasticity"] = _mean([a[j, j - 1] for j in range(1, T + 1)])
        out["ff"] = _mean([float(np.max(a[j:T, j - 1])) - a[T, j - 1] for j in range(1, T)])
        out["bwt"] = _mean([a[T, j - 1] - a[j, j - 1] for j in range(1, T)])
        return out

    def own_task_rise(self, metric: str) -> Dict[str, float]:
        """How far training moved each task on itself: a[j][j] − a[0][j] for a full sequence
        (task j scored right after training it), a[last][j] − a[0][j] otherwise (a joint run's
        one trained row); NaN without a trained row. A method that did not learn shows ≈ 0.

        Arguments:
          metric (str): "iou" or "biou".

        Returns:
          (dict(str, float)): task name -> rise (fraction, may be negative), in training order.
        """
        a = self._values[self._check_metric(metric)]
        if self.n_rows < 2:
            return {t: float("nan") for t in self._tasks}
        seq = self.is_full_sequence
        return {t: float(a[j + 1 if seq else -1, j] - a[0, j]) for j, t in enumerate(self._tasks)}

    # -- serialisation -----------------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        """
        A JSON-safe dict (NaN written as None) that :meth:`from_dict` reads back.

        Returns:
          (dict): keys tasks, probe, rows, iou, biou (lists of row lists), and per_image
            (a list with one entry per row, None or {column: [[iou, biou], ...]}) when any row has it.
        """
        d: Dict[str, Any] = {
            "tasks": list(self._tasks),
            "probe": self._probe,
            "rows": list(self._labels),
        }
        for metric in METRICS:
            d[metric] = [[_nan_to_none(float(v)) for v in r] for r in self._values[metric]]
        if any(p is not None for p in self._per_image):
            d["per_image"] = [
                None
                if p is None
                else {k: [[_nan_to_none(a), _nan_to_none(b)] for a, b in v] for k, v in p.items()}
                for p in self._per_image
            ]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TaskMatrix":
        """
        Rebuild a matrix written by :meth:`to_dict`.

        Arguments:
          d (dict): the dict, e.g. loaded from a results JSON file.

        Returns:
          (TaskMatrix): the matrix.

        Raises:
          DataError: if a key is missing or a row does not match the columns.
        """
        missing = [k for k in ("tasks", "probe", "rows", "iou", "biou") if k not in d]
        if missing:
            raise DataError(
                f"TaskMatrix dict lacks keys {missing}; expected tasks, probe, rows, iou, biou "
                "as written by TaskMatrix.to_dict()"
            )
        m = cls(d["tasks"], d["probe"])
        n = len(d["rows"])
        per_image = d.get("per_image") or [None] * n
        if len(d["iou"]) != n or len(d["biou"]) != n or len(per_image) != n:
            raise DataError(
                f"TaskMatrix dict has {n} row labels but {len(d['iou'])} iou rows, "
                f"{len(d['biou'])} biou rows and {len(per_image)} per_image rows; they must match"
            )
        for label, ri, rb, pi in zip(d["rows"], d["iou"], d["biou"], per_image):
            if len(ri) != len(m._columns) or len(rb) != len(m._columns):
                raise DataError(
                    f"TaskMatrix row {label!r} has {len(ri)} iou / {len(rb)} biou values "
                    f"for {len(m._columns)} columns {m._columns}"
                )
            pim = None
            if pi is not None:
                pim = {k: [(_none_to_nan(a), _none_to_nan(b)) for a, b in v] for k, v in pi.items()}
            m.add_row(
                label,
                {c: _none_to_nan(v) for c, v in zip(m._columns, ri)},
                {c: _none_to_nan(v) for c, v in zip(m._columns, rb)},
                per_image=pim,
            )
        return m

    def to_long_rows(self) -> List[Dict[str, Any]]:
        """
        The matrix in long form, one record per (row, column), for CSV writers.

        Returns:
          (list(dict)): records with keys row (int), row_label (str), column (str), iou and biou
            (float, or None where not evaluated so that CSV cells are empty).
        """
        records = []
        for r, label in enumerate(self._labels):
            for c, name in enumerate(self._columns):
                records.append(
                    {
                        "row": r,
                        "row_label": label,
                        "column": name,
                        "iou": _nan_to_none(float(self._values["iou"][r, c])),
                        "biou": _nan_to_none(float(self._values["biou"][r, c])),
                    }
                )
        return records

    def __repr__(self) -> str:
        return f"TaskMatrix(tasks={self._tasks}, probe={self._probe!r}, rows={self._labels})"


def fmt1(x: float) -> str:
    """A finite number with one decimal, never "-0.0": -0.02 → "0.0", -0.06 → "-0.1"."""
    return f"{round(float(x), 1) + 0.0:.1f}"  # + 0.0 turns the -0.0 that round() may give into 0.0


def fmt_pct(x: Optional[float]) -> str:
    """
    Format a fraction as a percentage with one decimal, e.g. 0.7161 → "71.6".

    Arguments:
      x (float or None): the value; None and NaN give "–".

    Returns:
      (str): the formatted value.
    """
    if x is None or math.isnan(float(x)):
        return "–"
    return fmt1(100.0 * float(x))
