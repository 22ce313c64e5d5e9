"""MoDA's resident adapter pool: every task's trained modules kept as modules, the base pointed at
one of them.

A MoDA base's adapter is the set of its submodules that hold exactly its stored state
(``method_state()["modules"]``), found by :func:`resident_paths`: ``hq`` for HQ-SAM,
``decoder`` for Decoder-Tuning, ``decoder`` and every ``encoder.….adapter`` for SAM-Adapter.
:class:`AdapterPool` keeps those modules themselves, one entry per task, plus a copy of their
initial state. Routing to adapter j sets the base's submodules to entry j's
(:meth:`nn.Module.set_submodule`): no weight is copied. A new task trains a fresh copy of the
initial modules, which become that task's entry when it ends.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from torch import Tensor, nn

from ..errors import CheckpointError
from ..models.decoder import scatter_groups


def resident_paths(base: nn.Module, stored: Iterable[str]) -> List[str]:
    """Dotted paths of the fewest submodules of ``base`` whose state is exactly ``stored``.

    Arguments:
      base (nn.Module): the strategy that owns the trainable modules.
      stored (Iterable[str]): the keys of its stored state (``method_state()["modules"]``).

    Returns:
      (List[str]): submodule paths in registration order; together they hold every stored key
        and nothing else.
    """
    want = set(stored)
    paths: List[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = prefix + name
            keys = {f"{path}.{k}" for k in child.state_dict()}
            if not keys & want:
                continue
            if keys <= want:
                paths.append(path)
            else:
                visit(child, path + ".")

    visit(base, "")
    covered = {f"{p}.{k}" for p in paths for k in base.get_submodule(p).state_dict()}
    if covered != want:
        raise ValueError(
            f"{type(base).__name__}'s stored state is not made of whole submodules: "
            f"{sorted(want - covered)[:3]} lie outside them"
        )
    return paths


class AdapterPool(nn.Module):
    """One adapter per task, resident: ``entries[j]`` holds task j's trained modules.

    Arguments:
      base (nn.Module): the base strategy whose adapter modules the pool holds and swaps; it is
        referenced, not registered (the MoDA strategy holds it).
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_base", base)
        self.paths = resident_paths(base, base.method_state()["modules"])
        #: the adapter's initial state (what every task starts from), never trained
        self.initial = nn.ModuleList(copy.deepcopy(self._current()))
        self.entries = nn.ModuleList()
        #: the entry the base points at (None: its own modules, initial or being trained)
        self.loaded: Optional[int] = None

    def __len__(self) -> int:
        return len(self.entries)

    def _current(self) -> List[nn.Module]:
        return [self._base.get_submodule(p) for p in self.paths]

    def _point(self, modules: Iterable[nn.Module]) -> None:
        for path, module in zip(self.paths, modules):
            self._base.set_submodule(path, module)

    def reset(self) -> None:
        """Point the base at a fresh copy of the initial modules (the next task trains them)."""
        self._point(copy.deepcopy(self.initial))
        self.loaded = None

    def add(self) -> None:
        """Keep the base's current modules, as trained, as a new entry (their gradients dropped);
        the base goes on pointing at them."""
        modules = self._current()
        for p in (p for m in modules for p in m.parameters()):
            p.grad = None
        self.entries.append(nn.ModuleList(modules))
        self.loaded = len(self.entries) - 1

    def use(self, j: int) -> None:
        """Point the base at entry ``j`` (no copy).

        Arguments:
          j (int): the pool index.
        """
        if j != self.loaded:
            self._point(self.entries[j])
            self.loaded = j

    def run_routed(self, route: Tensor, run: Callable[[Tensor], Tensor]) -> Tensor:
        """``run`` once per group of images routed to one adapter, the base pointed at it.

        Arguments:
          route (Tensor): (B,) pool index of each image.
          run (Callable[[Tensor], Tensor]): image indices (G,) -> their outputs (G,...).

        Returns:
          (Tensor): the outputs (B,...) in batch order.
        """
        groups = [(route == j).nonzero().flatten() for j in route.unique().tolist()]

        def run_adapter(ix: Tensor) -> Tensor:
            self.use(int(route[ix[0]]))  # the group's adapter, pointed at before its images run
            return run(ix)

        return scatter_groups(len(route), groups, run_adapter)

    def state(self, j: int) -> Dict[str, Tensor]:
        """Entry ``j``'s state under the base's keys (the format of ``method_state()["modules"]``).

        Arguments:
          j (int): the pool index.

        Returns:
          (Dict[str, Tensor]): the entry's tensors (detached, not copied).
        """
        return {
            f"{path}.{k}": v
            for path, module in zip(self.paths, self.entries[j])
            for k, v in module.state_dict().items()
        }

    def load(self, states: Sequence[Dict[str, Tensor]]) -> None:
        """Replace the entries by copies of the initial modules holding ``states``.

        Arguments:
          states (Sequence[Dict[str, Tensor]]): one stored state per entry (keys as
            :meth:`state` gives them).
        """
        entries = nn.ModuleList()
        for state in states:
            stray = [k for k in state if not k.startswith(tuple(p + "." for p in self.paths))]
            if stray:
                raise CheckpointError(
                    f"a stored MoDA adapter holds {stray[:3]}, outside {self.paths}; restart the "
                    "run with --force"
                )
            modules = copy.deepcopy(self.initial)
            for path, module in zip(self.paths, modules):
                prefix = path + "."
                part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                missing, unexpected = module.load_state_dict(part, strict=False)
                if missing or unexpected:
                    raise CheckpointError(
                        f"a stored MoDA adapter does not match {path}: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}; restart the run with --force"
                    )
            entries.append(modules)
        self.entries = entries
        self.loaded = None

    def numel(self) -> int:
        """Values stored per entry (parameters and buffers)."""
        return sum(v.numel() for m in self.initial for v in m.state_dict().values())
