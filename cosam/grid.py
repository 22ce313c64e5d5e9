"""The grid of a sweep: methods x seeds x task orders, and the options every run shares.

Every combination (:class:`Combo`) is an ordinary run folder (:meth:`cosam.rundir.RunDir.for_config`:
``<results_dir>/<profile>/<method>-<order>-s<seed>``) whose config is exactly what
``python -m cosam run`` builds from :meth:`SweepSpec.command`. :mod:`cosam.sweep` runs a grid,
:mod:`cosam.aggregate` reads its finished runs into tables; ``sweep.json`` (:data:`MANIFEST`, the
spec's :meth:`SweepSpec.to_dict`) records the grid beside the aggregate.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from .config import Config, dotted_to_dict, location_overrides, make_config
from .data.domains import NAMED_ORDERS
from .errors import ConfigError
from .rundir import RunDir, run_name

#: ``--set`` keys a sweep sets itself (one value per run); overriding them would merge runs.
AXIS_KEYS = ("method", "seed", "data.order", "run_name")
#: The grid and options of the last sweep or launch, beside its aggregate.
MANIFEST = "sweep.json"


@dataclass(frozen=True)
class Combo:
    """One run of a sweep."""

    method: str
    order: str
    seed: int

    @property
    def name(self) -> str:
        return run_name(self.method, self.order, self.seed)


@dataclass
class SweepSpec:
    """A sweep: the grid and the options shared by every run, as given on the command line.

    Arguments:
      profile (str): config profile of every run.
      methods (List[str]): the grid's methods.
      seeds (List[int]): the grid's seeds.
      orders (List[str]): the grid's task orders: named orders (paper, reverse, shuffled), since
        run folders are named after them (``shuffled`` draws each seed's own permutation).
      data (str): as ``--data`` (None: default).
      backbone (str): as ``--backbone`` (None: default).
      results_dir (str): as ``--results-dir`` (None: default).
      dotted (List[str]): ``--set KEY=VALUE`` overrides, applied to every run; the axis keys
        (method, seed, data.order, run_name) are refused.
    """

    profile: str = "cpu"
    methods: List[str] = field(default_factory=list)
    seeds: List[int] = field(default_factory=lambda: [0])
    orders: List[str] = field(default_factory=lambda: ["paper"])
    data: Optional[str] = None
    backbone: Optional[str] = None
    results_dir: Optional[str] = None
    dotted: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.methods = list(dict.fromkeys(self.methods))
        self.seeds = [int(s) for s in dict.fromkeys(self.seeds)]
        self.orders = [str(o).strip().lower() for o in dict.fromkeys(self.orders)]
        self.dotted = list(self.dotted)

    def validate(self) -> None:
        """Refuse an empty grid, unknown methods or orders, and ``--set`` on an axis."""
        from .methods import get_method

        if not self.methods or not self.seeds or not self.orders:
            raise ConfigError("a sweep needs at least one method, one seed and one order")
        for (
            m
        ) in self.methods:  # a named method or a BASE+PLUGIN combination; the error says why not
            get_method(m)
        bad = [o for o in self.orders if o not in NAMED_ORDERS]
        if bad:
            raise ConfigError(
                f"sweep order {', '.join(bad)} is not a named order; valid: {', '.join(NAMED_ORDERS)} "
                f"(run folders are named after the order; run a custom order with `cosam run --order`)"
            )
        flat = _flatten(dotted_to_dict(self.dotted))
        clash = [k for k in flat if k in AXIS_KEYS]
        if clash:
            raise ConfigError(
                f"--set {', '.join(clash)} conflicts with the sweep's own axes; use --methods/--seeds/--orders"
            )
        self.config(self.combos()[0])  # unknown keys and bad values fail here, before any run

    def combos(self) -> List[Combo]:
        """Every combination, seed-major.

        All methods and orders of seed 0 finish before seed 1, so an interrupted sweep already has
        complete single-seed tables.
        """
        return [Combo(m, o, s) for s in self.seeds for o in self.orders for m in self.methods]

    def overrides(self) -> Dict[str, Any]:
        return location_overrides(self.data, self.results_dir, self.backbone)

    def config(self, combo: Combo) -> Config:
        """The config of one run: exactly what ``python -m cosam run`` builds from :meth:`command`.

        Arguments:
          combo (Combo): the run.

        Returns:
          (Config): its config.
        """
        o = self.overrides()
        o["method"] = combo.method
        o["seed"] = combo.seed
        o.setdefault("data", {})["order"] = combo.order
        return make_config(self.profile, o, self.dotted)

    def run_dir(self, combo: Combo) -> Path:
        return RunDir.for_config(self.config(combo)).path

    def default_out(self) -> Path:
        """``<results_dir>/<profile>/sweep``."""
        cfg = make_config(self.profile, self.overrides(), self.dotted)
        return Path(cfg.results_dir) / self.profile / "sweep"

    def common_args(self) -> List[str]:
        """The shared command-line options (``--profile`` ... ``--set``), as a list of arguments."""
        args = ["--profile", self.profile]
        if self.data:
            args += ["--data", self.data]
        if self.backbone:
            args += ["--backbone", self.backbone]
        if self.results_dir:
            args += ["--results-dir", self.results_dir]
        for d in self.dotted:
            args += ["--set", d]
        return args

    def command(self, combo: Combo, force: bool = False, python: str = "python") -> str:
        """One independent shell command that runs ``combo`` (and writes only its run folder).

        Arguments:
          combo (Combo): the run.
          force (bool): add ``--force`` (rerun a finished run).
          python (str): the interpreter the command starts.

        Returns:
          (str): the command, quoted for a POSIX shell.
        """
        args = (
            [
                python,
                "-m",
                "cosam",
                "run",
                "--method",
                combo.method,
                "--order",
                combo.order,
                "--seed",
                str(combo.seed),
            ]
            + self.common_args()
            + (["--force"] if force else [])
        )
        return " ".join(shlex.quote(a) for a in args)

    def aggregate_command(self, out: Optional[Path] = None, python: str = "python") -> str:
        args = (
            [
                python,
                "-m",
                "cosam",
                "aggregate",
                "--methods",
                *self.methods,
                "--seeds",
                *map(str, self.seeds),
                "--orders",
                *self.orders,
            ]
            + self.common_args()
            + (["--out", str(out)] if out else [])
        )
        return " ".join(shlex.quote(a) for a in args)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SweepSpec":
        names = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
        return cls(**{k: v for k, v in d.items() if k in names})


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and k != "method_options":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
