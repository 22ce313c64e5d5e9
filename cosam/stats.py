"""Statistics over seeds, shared by the sweep's aggregate, the tables, the claims and the notebooks.

A number reported over seeds is a :data:`Stat`: (mean, sample std, number of seeds). The std is
the **sample** standard deviation (``ddof=1``, :data:`STD_DDOF`); with one seed it is undefined
(NaN in the CSVs, "–" in the tables). Every table prints such a number with
:func:`fmt_mean_std` (or :func:`fmt_stat`, the same for a :data:`Stat`): one decimal in percent
for the mean and for the std, "73.3 ± 0.7".
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

from .matrix import fmt1

#: Standard deviation over seeds: sample (n - 1 in the denominator).
STD_DDOF = 1
STD_NOTE = (
    "± is the sample standard deviation over seeds (ddof=1, n−1 in the denominator); "
    '"± –" where only one seed has finished'
)

Stat = Tuple[float, float, int]  # mean, sample std (NaN for one seed), number of seeds


def mean_std(values: Sequence[Optional[float]], ddof: int = STD_DDOF) -> Stat:
    """(mean, std, n) of ``values``, std with ``ddof`` (sample std by default).

    A NaN or None value (a metric a method does not define, e.g. FF of joint) makes the mean NaN.

    Arguments:
      values (Sequence[float]): one value per seed; None counts as NaN.
      ddof (int): delta degrees of freedom of the std.

    Returns:
      (Stat): (mean, std, n); the mean is NaN for no values, the std NaN for n <= ddof.
    """
    a = np.asarray([math.nan if v is None else float(v) for v in values], dtype=float)
    n = len(a)
    mean = float(a.mean()) if n else math.nan
    std = float(a.std(ddof=ddof)) if n > ddof else math.nan
    return mean, std, n


def fmt_mean_std(mean: float, std: float, n: int, scale: float = 100.0, spread: bool = True) -> str:
    """A mean over seeds and its std as text, one decimal each: "73.3 ± 0.7".

    Arguments:
      mean (float): the mean (a fraction, shown times ``scale``).
      std (float): the std over seeds; NaN (one seed) prints "73.3 ± –".
      n (int): the number of seeds; 0 prints "–".
      scale (float): factor to the printed unit (100: fractions to percent).
      spread (bool): False prints the mean alone (a table where every row has one seed).

    Returns:
      (str): "mean ± std", "mean ± –" for one seed, "–" when the metric is undefined.
    """
    if not n or not math.isfinite(mean):
        return "–"
    text = fmt1(scale * mean)
    if not spread:
        return text
    return f"{text} ± {scale * std:.1f}" if math.isfinite(std) else f"{text} ± –"


def fmt_stat(s: Stat, scale: float = 100.0, spread: bool = True) -> str:
    """A :data:`Stat` as text: :func:`fmt_mean_std` of its mean, std and n.

    Arguments:
      s (Stat): (mean, std, n_seeds).
      scale (float): factor to the printed unit (100: fractions to percent).
      spread (bool): False prints the mean alone.

    Returns:
      (str): "mean ± std", "mean ± –" for one seed, "–" when undefined.
    """
    mean, std, n = s
    return fmt_mean_std(mean, std, n, scale=scale, spread=spread)
