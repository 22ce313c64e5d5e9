"""Fail points for the fault-injection tests (SIGKILL at a named place).

``COSAM_FAULT="train:5"`` makes the process kill itself with SIGKILL the 5th time it passes the
``train`` point. Unset (always, outside the resume tests) this is one dictionary lookup. Points:
``encode`` (after each encoder-cache entry: features or MoDA block inputs), ``train`` (after each
optimiser step), ``eval``
(after each scored test set), ``checkpoint`` (after each resume state is written), ``write``
(between result files) and ``synthetic`` (after each generated synthetic image/mask pair).
"""

from __future__ import annotations

import os
import signal
from typing import Dict

_counts: Dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("COSAM_FAULT")
    if not spec:
        return
    where, _, nth = spec.partition(":")
    if where != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
