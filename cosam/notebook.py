"""Notebook parameters go through the package config; a misspelt ``-p`` name fails at once.

papermill only warns about a parameter the notebook does not declare, and injects it as a new
variable. The notebooks therefore bracket their ``parameters`` cell::

    import cosam.notebook as nb
    nb.begin(globals())                 # cell before "parameters"
    # --- parameters cell (papermill injects its overrides right after it) ---
    profile = "cpu"; order = "paper"; seeds = [0]
    # --- next cell ---
    params = nb.end(globals(), declared=["profile", "order", "seeds"])

``end`` raises :class:`~cosam.errors.ConfigError` naming any variable that appeared after
``begin`` but is not declared, with the list of valid names, and returns the declared values.
:func:`config_for` turns them into a validated :class:`~cosam.config.Config`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from .config import Config, make_config
from .errors import ConfigError

_MARK = "__cosam_names_before_parameters__"


def begin(namespace: Dict[str, Any]) -> None:
    """Record the names that exist before the parameters cell."""
    namespace[_MARK] = set(namespace) | {_MARK}


def end(namespace: Dict[str, Any], declared: Sequence[str]) -> Dict[str, Any]:
    """The declared parameters' values; unknown new names raise ConfigError listing valid ones."""
    before = namespace.get(_MARK)
    if before is None:
        raise ConfigError(
            "call cosam.notebook.begin(globals()) in the cell before the parameters cell"
        )
    new = [k for k in namespace if k not in before and not k.startswith("_")]
    unknown = sorted(k for k in new if k not in declared)
    if unknown:
        raise ConfigError(
            f"unknown notebook parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"valid parameters: {', '.join(declared)}"
        )
    missing = [k for k in declared if k not in namespace]
    if missing:
        raise ConfigError(f"the parameters cell does not define {', '.join(missing)}")
    return {k: namespace[k] for k in declared}


def config_for(
    params: Mapping[str, Any], method: str, seed: int = 0, extra: Optional[Mapping[str, Any]] = None
) -> Config:
    """A validated Config from common notebook parameters.

    Recognised keys: ``profile``, ``order``, ``backbone``, ``data_root``, ``results_dir``,
    ``cache_dir``, ``overrides`` (a dict merged last). Unknown keys in ``overrides`` are rejected
    by the config itself.
    """
    o: Dict[str, Any] = {"method": method, "seed": int(seed), "progress": False}
    if params.get("order") is not None:
        o.setdefault("data", {})["order"] = params["order"]
    if params.get("data_root"):
        o.setdefault("data", {})["root"] = params["data_root"]
    if params.get("backbone"):
        o.setdefault("model", {})["backbone"] = params["backbone"]
    if params.get("results_dir"):
        o["results_dir"] = params["results_dir"]
    if params.get("cache_dir"):
        o["cache_dir"] = params["cache_dir"]
    from .config import merge

    if params.get("overrides"):
        o = merge(o, params["overrides"])
    if extra:
        o = merge(o, extra)
    return make_config(params.get("profile", "cpu"), o)


def as_list(x: Any) -> List[Any]:
    """Parameters given on the command line may be a scalar or a list."""
    if x is None:
        return []
    if isinstance(x, str):
        return [p.strip() for p in x.split(",") if p.strip()]
    return list(x) if isinstance(x, (list, tuple)) else [x]
