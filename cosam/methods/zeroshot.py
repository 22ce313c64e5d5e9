"""SAM zero-shot: the frozen model with a box prompt; nothing trains (Table 2's "SAM" row)."""

from __future__ import annotations

from .base import Strategy


class ZeroShot(Strategy):
    """SAM's own decoder output (single mask), protocol §4 ``--CLmethod sam``."""

    name = "zeroshot"
    trains = False
