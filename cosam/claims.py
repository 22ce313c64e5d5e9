"""The paper's claims, each defined once with its target, and judged over seeds.

A claim is a statement about one number per seed (in percentage points), for example "MoDA's
Last-IoU minus its base's Last-IoU on the same seed". Over the seeds we take the mean, the sample
standard deviation and the 95 % t-interval of the mean (paired where the claim compares two
methods: the difference is taken seed by seed, on the same images). The verdict:

* **holds**: the whole interval lies on the claim's side of the target, by at least
  :data:`RESOLUTION` / 2;
* **fails**: the whole interval lies on the other side, by at least :data:`RESOLUTION` / 2;
* **undecided**: otherwise, that is when the interval contains the target (or comes within
  :data:`RESOLUTION` / 2 of it), or fewer than :data:`MIN_SEEDS` seeds finished.

So a verdict never turns on a difference smaller than the noise across seeds, nor on one below
the tables' printed precision. A method whose own-task IoU did not rise during training gets a
note ("did not learn") on its forgetting claim: small forgetting of a method that learned nothing
is not retention.

The claims (:data:`CLAIMS`), per base (HQ-SAM = ``sequential``, ``decoder_tuning``,
``sam_adapter``):

* ``moda_raises_last``: MoDA raises Last-IoU over its base (paired difference > 0);
* ``moda_ff_at_most_1``: MoDA's FF-IoU ≤ 1 point;
* ``moda_beats_best_continual``: MoDA beats the best non-MoDA continual method on Last-IoU
  (paired difference > 0; the best is the one with the highest mean Last-IoU, scored on MoDA's
  own test images, so a capped base is compared on its subset only). While a continual method
  of :data:`CONTINUAL` has no run on MoDA's seeds it is ``undecided`` at best (the note names
  the methods not run): beating the others says nothing of it, though losing to one fails;
* ``probe_moda_within_1``: MoDA keeps the natural-image probe within 1 point of zero-shot
  (probe drop ≤ 1);
* ``probe_base_drops_3``: the base without MoDA loses ≥ 3 points on the probe;
* ``router_accuracy_at_least_95``: the router's task-id accuracy after the last task ≥ 95 %;
* ``gft_separates_domains``: the GFT query separates domains better than pooled encoder
  features (silhouette difference > 0; values come from :mod:`cosam.analysis`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .report import RunRecord, load_router, n_test_images, restrict_to_subset
from .stats import fmt_mean_std, mean_std

#: Points: the tables print one decimal, so no verdict turns on less than this.
RESOLUTION: float = 0.1
#: Fewer finished seeds than this leave every claim undecided.
MIN_SEEDS: int = 3
#: The interval's confidence level.
LEVEL: float = 0.95
STATUSES: Tuple[str, ...] = ("holds", "fails", "undecided")

#: MoDA's bases and their MoDA methods.
BASES: Dict[str, str] = {
    "sequential": "sequential_moda",
    "decoder_tuning": "decoder_tuning_moda",
    "sam_adapter": "sam_adapter_moda",
}
#: The continual methods MoDA is compared with (not the bounds, not zero-shot, not MoDA).
CONTINUAL: Tuple[str, ...] = (
    "sequential",
    "lwf",
    "ewc",
    "replay",
    "l2p",
    "dualprompt",
    "coda",
    "decoder_tuning",
    "sam_adapter",
)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper.

    Arguments:
      key (str): short name (the ``claim`` column of claims.csv).
      text (str): the claim in words.
      sense (str): ``">"`` (the value must exceed the target), ``">="`` or ``"<="``.
      target (float): the target, in percentage points.
    """

    key: str
    text: str
    sense: str
    target: float


CLAIMS: Dict[str, Claim] = {
    c.key: c
    for c in (
        Claim(
            "moda_raises_last",
            "MoDA raises Last-IoU over its base (MoDA − base, paired over seeds)",
            ">",
            0.0,
        ),
        Claim("moda_ff_at_most_1", "MoDA's FF-IoU is at most 1 point", "<=", 1.0),
        Claim(
            "moda_beats_best_continual",
            "MoDA beats the best non-MoDA continual method on Last-IoU (MoDA − best, on MoDA's images)",
            ">",
            0.0,
        ),
        Claim(
            "probe_moda_within_1",
            "MoDA keeps the natural-image probe within 1 point of zero-shot (probe drop)",
            "<=",
            1.0,
        ),
        Claim(
            "probe_base_drops_3",
            "the base without MoDA loses at least 3 points on the probe (probe drop)",
            ">=",
            3.0,
        ),
        Claim(
            "router_accuracy_at_least_95",
            "the router's task-id accuracy after the last task is at least 95 %",
            ">=",
            95.0,
        ),
        Claim(
            "gft_separates_domains",
            "GFT queries separate domains better than pooled encoder features (silhouette difference × 100)",
            ">",
            0.0,
        ),
    )
}


@dataclass
class Verdict:
    """A claim judged on one base over seeds (numbers in percentage points)."""

    claim: str
    base: str
    target: float
    mean: float
    std: float
    ci_low: float
    ci_high: float
    n_seeds: int
    status: str
    note: str = ""
    values: Dict[int, float] = field(default_factory=dict)

    def row(self) -> Dict[str, object]:
        """The claims.csv row."""
        return {
            "claim": self.claim,
            "base": self.base,
            "target": self.target,
            "mean": self.mean,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n_seeds": self.n_seeds,
            "status": self.status,
            "note": self.note,
        }


def t_quantile(level: float, df: int) -> float:
    """The two-sided Student-t quantile: P(|T| ≤ q) = level with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, df))


def interval(values: Sequence[float], level: float = LEVEL) -> Tuple[float, float, float, float]:
    """Mean, sample std (ddof=1) and the t-interval of the mean of ``values``.

    Returns:
      (mean, std, low, high); std, low and high are NaN for fewer than two values.
    """
    mean, std, n = mean_std([v for v in values if v is not None and math.isfinite(v)], ddof=1)
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    half = t_quantile(level, n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def decide(claim: Claim, low: float, high: float, n: int) -> str:
    """holds / fails / undecided for an interval [low, high] over ``n`` seeds (see the module doc)."""
    if n < MIN_SEEDS or not (math.isfinite(low) and math.isfinite(high)):
        return "undecided"
    tol = RESOLUTION / 2.0
    if claim.sense in (">", ">="):
        if low >= claim.target + tol:
            return "holds"
        if high <= claim.target - tol:
            return "fails"
    elif claim.sense == "<=":
        if high <= claim.target - tol:
            return "holds"
        if low >= claim.target + tol:
            return "fails"
    else:
        raise ValueError(f"claim {claim.key}: unknown sense {claim.sense!r}")
    return "undecided"


def judge(key: str, base: str, values: Mapping[int, float], note: str = "") -> Verdict:
    """Judge claim ``key`` for ``base`` from its per-seed values (points)."""
    claim = CLAIMS[key]
    finite = {s: float(v) for s, v in values.items() if v is not None and math.isfinite(v)}
    mean, std, low, high = interval(list(finite.values()))
    status = decide(claim, low, high, len(finite))
    if len(finite) < MIN_SEEDS:
        note = "; ".join(x for x in (note, f"{len(finite)} seed(s), {MIN_SEEDS} needed") if x)
    return Verdict(key, base, claim.target, mean, std, low, high, len(finite), status, note, finite)


# ---------------------------------------------------------------------------------------------
# Per-seed values from finished runs
# ---------------------------------------------------------------------------------------------

Runs = Mapping[str, Mapping[int, RunRecord]]  # method -> seed -> finished run (one task order)


def on_images_of(rec: RunRecord, reference: RunRecord) -> RunRecord:
    """``rec`` scored on ``reference``'s test images: itself when both saw the same number of
    test images, else its matrix recomputed on ``reference``'s subset
    (:func:`cosam.report.restrict_to_subset`)."""
    if n_test_images(rec) == n_test_images(reference) and rec.meta["config"]["data"].get(
        "probe_cap"
    ) == reference.meta["config"]["data"].get("probe_cap"):
        return rec
    return restrict_to_subset(rec, reference)


def _pts(x: float) -> float:
    return 100.0 * x


def own_task_gain(rec: RunRecord) -> float:
    """Points: the mean over tasks of (IoU on task j right after training it) − (its row 0)."""
    if not rec.matrix.is_full_sequence:
        return math.nan
    return _pts(float(np.mean(list(rec.matrix.own_task_rise("iou").values()))))


def _summary(rec: RunRecord, key: str) -> float:
    return _pts(rec.matrix.summary("iou")[key])


def best_continual(
    runs: Runs, reference: Mapping[int, RunRecord]
) -> Tuple[Optional[str], List[str]]:
    """The non-MoDA continual method with the highest mean Last-IoU over the seeds it shares with
    ``reference``, scored on ``reference``'s images.

    A method scored on fewer images than ``reference`` (a capped SAM-Adapter run against a MoDA
    run on every test image) cannot be scored on them: it is left out, never compared on other
    images.

    Returns:
      (tuple(Optional[str], List[str])): the best method (None if there is none), and the
        methods left out because their runs do not hold ``reference``'s images.
    """
    best, best_mean, left_out = None, -math.inf, []
    for m in CONTINUAL:
        seeds = [s for s in reference if s in runs.get(m, {})]
        if not seeds:
            continue
        if any(
            (n_test_images(runs[m][s]) or 0) < (n_test_images(reference[s]) or 0) for s in seeds
        ):
            left_out.append(m)
            continue
        mean, _, _ = mean_std(
            [_summary(on_images_of(runs[m][s], reference[s]), "last") for s in seeds]
        )
        if mean > best_mean:
            best, best_mean = m, mean
    return best, left_out


def judge_runs(
    runs: Runs, silhouettes: Optional[Mapping[str, Mapping[int, float]]] = None
) -> List[Verdict]:
    """Every claim for every base whose MoDA runs finished.

    Arguments:
      runs: method -> seed -> finished run, all of one task order.
      silhouettes: base -> seed -> (GFT silhouette − pooled-feature silhouette) as a fraction;
        the GFT claim is judged only for the bases given here.

    Returns:
      One :class:`Verdict` per (claim, base), bases in :data:`BASES` order.
    """
    out: List[Verdict] = []
    for base, moda in BASES.items():
        mruns = runs.get(moda, {})
        if not mruns:
            continue
        bruns = runs.get(base, {})
        paired = [s for s in mruns if s in bruns]
        out.append(
            judge(
                "moda_raises_last",
                base,
                {
                    s: _summary(mruns[s], "last")
                    - _summary(on_images_of(bruns[s], mruns[s]), "last")
                    for s in paired
                },
            )
        )
        gains = [own_task_gain(mruns[s]) for s in mruns]
        learned = bool(gains) and float(np.nanmean(gains)) > RESOLUTION
        out.append(
            judge(
                "moda_ff_at_most_1",
                base,
                {s: _summary(mruns[s], "ff") for s in mruns},
                note="" if learned else "did not learn: own-task IoU did not rise over row 0",
            )
        )
        best, left_out = best_continual(runs, mruns)
        if best is not None:
            seeds = [s for s in mruns if s in runs[best]]
            # A continual method with no run on MoDA's seeds may be the best: beating the ones run
            # proves nothing about it (the claim stays undecided), though losing to one fails it.
            not_run = [m for m in CONTINUAL if not any(s in runs.get(m, {}) for s in mruns)]
            verdict = judge(
                "moda_beats_best_continual",
                base,
                {
                    s: _summary(mruns[s], "last")
                    - _summary(on_images_of(runs[best][s], mruns[s]), "last")
                    for s in seeds
                },
                note=f"best: {best}"
                + (
                    f" (not comparable, scored on fewer images: {', '.join(left_out)})"
                    if left_out
                    else ""
                )
                + (f"; not run: {', '.join(not_run)}" if not_run else ""),
            )
            if not_run and verdict.status == "holds":
                verdict.status = "undecided"
            out.append(verdict)
        out.append(
            judge("probe_moda_within_1", base, {s: _summary(mruns[s], "probe_drop") for s in mruns})
        )
        if bruns:
            out.append(
                judge(
                    "probe_base_drops_3", base, {s: _summary(bruns[s], "probe_drop") for s in bruns}
                )
            )
        acc = {}
        for s, rec in mruns.items():
            router = load_router(rec)
            if router and router.get("final") and router["final"].get("accuracy") is not None:
                acc[s] = _pts(router["final"]["accuracy"])
        out.append(judge("router_accuracy_at_least_95", base, acc))
        if silhouettes and base in silhouettes:
            out.append(
                judge(
                    "gft_separates_domains",
                    base,
                    {s: _pts(v) for s, v in silhouettes[base].items()},
                )
            )
    return out


def claims_markdown(verdicts: Sequence[Verdict]) -> str:
    """A table of the verdicts, with the claims in words."""

    def f(x: float) -> str:
        return "–" if not math.isfinite(x) else f"{x:.1f}"

    lines = [
        "| claim | base | target | mean ± std | 95 % interval | seeds | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        c = CLAIMS[v.claim]
        status = f"**{v.status}**" + (f" ({v.note})" if v.note else "")
        lines.append(
            f"| {c.text} | {v.base} | {c.sense} {v.target:g} | "
            f"{fmt_mean_std(v.mean, v.std, v.n_seeds, scale=1.0)} | "
            f"[{f(v.ci_low)}, {f(v.ci_high)}] | {v.n_seeds} | {status} |"
        )
    lines.append("")
    lines.append(
        f"Holds / fails: the whole {LEVEL:.0%} t-interval over seeds lies on the claim's side of the "
        f"target / on the other side, by at least {RESOLUTION / 2:g} points; otherwise undecided "
        f"(also with fewer than {MIN_SEEDS} seeds)."
    )
    return "\n".join(lines) + "\n"
