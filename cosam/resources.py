"""What a run reads: its data root, its benchmark's file lists and its frozen SAM model.

    bench = load_benchmark(cfg)     # data.root -> layout root -> $COSAM_DATA -> ../shared -> generated
    model = build_model(cfg)        # cfg.model, or its fallback backbone when the weights are absent

The folder a run writes is :meth:`cosam.rundir.RunDir.for_config`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

from .config import Config
from .data.benchmark import Benchmark, build_benchmark
from .data.custom import data_root_for, is_layout_file, load_custom_layout
from .data.synthetic import make_synthetic_benchmark
from .errors import CosamError
from .features import default_cache_dir
from .io import REPO_ROOT
from .models.registry import build_sam, find_checkpoint
from .models.sam import SamModel

log = logging.getLogger(__name__)

#: training pairs per domain the generated benchmark keeps after the validation carve
SYNTHETIC_TRAIN = 12


def _synthetic_root(cfg: Config) -> Path:
    """The generated benchmark for ``cfg``: SYNTHETIC_TRAIN training pairs per domain plus the
    ``data.val_cap`` that the validation split carves out of them (the ``cpu`` profile holds out
    16, more than the 12 a fixed size would give), in ``<cache>/synthetic-data``."""
    return make_synthetic_benchmark(
        default_cache_dir(cfg) / "synthetic-data", n_train=SYNTHETIC_TRAIN + cfg.data.val_cap
    )


def resolve_data_root(cfg: Config) -> Path:
    """The folder holding ``cfg``'s benchmark data.

    The first that applies: ``data.root`` -> the ``root`` of a custom layout file ->
    ``$COSAM_DATA`` -> ``../shared/data/cosam-mini`` -> generated synthetic data.

    Arguments:
      cfg (Config): the run's config (``data.root``, ``data.layout``, ``data.synthetic_if_missing``).

    Returns:
      (Path): the data root.
    """
    root = cfg.data.root
    if is_layout_file(cfg.data.layout):
        # a layout file's own root wins over the generated data of a profile (smoke)
        given = Path(root).expanduser() if root and root != "synthetic" else None
        own = data_root_for(load_custom_layout(Path(cfg.data.layout)), given)
        if own is not None:
            return own
    if root == "synthetic":
        return _synthetic_root(cfg)
    if root:
        return Path(root).expanduser()
    env = os.environ.get("COSAM_DATA")
    if env:
        return Path(env).expanduser()
    shared = REPO_ROOT.parent / "shared" / "data" / "cosam-mini"
    if shared.is_dir():
        return shared
    if cfg.data.synthetic_if_missing:
        log.warning(
            "no data found (data.root, $COSAM_DATA, %s): using a generated SYNTHETIC benchmark",
            shared,
        )
        return _synthetic_root(cfg)
    raise CosamError(
        f"no benchmark data: set data.root or COSAM_DATA, or place cosam-mini at {shared}"
    )


def load_benchmark(
    cfg: Config, root: Optional[Path] = None, order: Optional[Sequence[str]] = None
) -> Benchmark:
    """The file lists of ``cfg``'s run: train and validation only when ``eval.split`` is ``val``.

    Arguments:
      cfg (Config): the run's config.
      root (Path or None): the data root; default :func:`resolve_data_root` of ``cfg`` (a finished
        run passes the root it recorded).
      order (Sequence[str] or None): the task order; default ``cfg.data.order`` (a finished run
        passes the order it resolved).

    Returns:
      (Benchmark): the tasks in training order, with the probe when the config includes it.
    """
    return build_benchmark(
        resolve_data_root(cfg) if root is None else root,
        cfg.data.layout,
        cfg.data.order if order is None else list(order),
        cfg.seed,
        cfg.data.train_cap,
        cfg.data.test_cap,
        cfg.data.probe_cap,
        cfg.data.include_probe,
        val_cap=cfg.data.val_cap,
        eval_split=cfg.eval.split,
        domains=cfg.data.tasks,
    )


def build_model(cfg: Config) -> SamModel:
    """The frozen SAM model of ``cfg.model``, falling back to ``fallback_backbone`` if its weights
    are absent.

    Arguments:
      cfg (Config): the run's config (``model.*``).

    Returns:
      (SamModel): the frozen model.
    """
    m = cfg.model
    wdir = Path(m.weights_dir) if m.weights_dir else None
    if (
        m.pretrained
        and not m.checkpoint
        and find_checkpoint(m.backbone, wdir) is None
        and m.fallback_backbone
    ):
        if find_checkpoint(m.fallback_backbone, wdir) is not None:
            log.warning(
                "no %s checkpoint found; falling back to %s at %s px",
                m.backbone,
                m.fallback_backbone,
                m.fallback_image_size,
            )
            return build_sam(m.fallback_backbone, None, m.fallback_image_size, wdir)
    return build_sam(
        m.backbone, Path(m.checkpoint) if m.checkpoint else None, m.image_size, wdir, m.pretrained
    )
