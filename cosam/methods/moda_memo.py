"""Trained MoDA routers kept on disk beside the feature cache, so that a router trained once is
loaded, not trained again, by any run that would train the very same one.

The router after task t (and the GFT/GAT tokens trained with it) is a function of the buffers of
the tasks seen so far, the seed, the router options and the frozen encoder alone
(:meth:`cosam.methods.moda.MoDA.retrain_router`: tokens and router restart from seeded initial
values at every retraining, and training draws only from its own seeded generator). The base
plays no part, so ``sequential_moda`` and ``decoder_tuning_moda`` of one seed and order, whose
buffers are the same images, train identical routers; notebook 02 and the sweeps run both.

An entry is keyed by the sha1 of everything that decides it (:func:`router_key`): the memo's
version, seed, step, each buffer image's label and the sha1 of its file, the router and token
options, the resolved token cache and its storage dtype, weights id, input size, device, torch
version and thread count. It lives under the feature cache's folder, which is already one per
precision and (on the CPU) per thread count: ``<features>/<weights_id>/<S>/routers/<key>.pt``,
holding the token reader's and the router's state and the seconds the training took (what a
loaded router reports as its cost). ``train.cache_features=false`` turns it off with the other
caches. A loaded router is the same bytes as a trained one (``tests/test_moda.py``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import nn

from .. import distributed
from ..accel import Accel
from ..features import feature_cache_dir, file_key
from ..io import torch_save
from ..models.sam import SamModel
from ..schema import Config
from .moda_router import MoDAOptions

#: Bump with any change to how a router or its tokens are trained or read (the memo's entries of
#: earlier versions are then never loaded).
ROUTER_MEMO_VERSION = 1

#: The options that decide the router and tokens, beside the buffer (``buffer_size`` is in the
#: buffer itself; ``token_cache`` enters resolved).
_ROUTER_OPTIONS = (
    "n_gat",
    "attention",
    "train_tokens",
    "router",
    "router_epochs",
    "router_lr",
    "router_batch",
)


def router_key(
    cfg: Config,
    model: SamModel,
    opts: MoDAOptions,
    token_cache: str,
    step: int,
    samples: Sequence[Any],
    labels: Sequence[int],
) -> str:
    """The memo key of the router trained at pool size ``step`` on ``samples``.

    Arguments:
      cfg (Config): the run's config (seed, cache dtype).
      model (SamModel): the frozen SAM model (weights id, input size, device).
      opts (MoDAOptions): the run's MoDA options.
      token_cache (str): the resolved token cache, "disk" or "none".
      step (int): the pool size (2 or more).
      samples (Sequence[Any]): the buffer images, in training order (each has ``.image``).
      labels (Sequence[int]): the adapter index of each sample.

    Returns:
      (str): a sha1 hex digest.
    """
    spec = {
        "version": ROUTER_MEMO_VERSION,
        "seed": int(cfg.seed),
        "step": int(step),
        "buffer": [[int(y), file_key(s.image)] for s, y in zip(samples, labels)],
        "options": {k: getattr(opts, k) for k in _ROUTER_OPTIONS},
        "token_cache": token_cache,
        "cache_dtype": cfg.train.cache_dtype,
        "weights_id": model.weights_id,
        "image_size": int(model.image_size),
        "device": next(model.parameters()).device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class RouterMemo:
    """Trained routers on disk (see the module docstring).

    Arguments:
      cfg (Config): the run's config (``cache_dir``, ``train.cache_features``, seed).
      model (SamModel): the frozen SAM model.
      opts (MoDAOptions): the run's MoDA options.
      token_cache (str): the resolved token cache, "disk" or "none".
    """

    def __init__(self, cfg: Config, model: SamModel, opts: MoDAOptions, token_cache: str) -> None:
        self.enabled = bool(cfg.train.cache_features)
        self._cfg = cfg
        self._model = model
        self._opts = opts
        self._token_cache = token_cache

    @property
    def root(self) -> Path:
        """``<features>/<weights_id>/<S>/routers`` for the model's device and this thread count."""
        device = next(self._model.parameters()).device
        base = feature_cache_dir(self._cfg, Accel(torch.device(device)))
        return base / self._model.weights_id / str(self._model.image_size) / "routers"

    def load(self, key: str) -> Optional[Dict[str, Any]]:
        """The stored entry (``reader``, ``router`` state dicts and ``seconds``), or None.

        Arguments:
          key (str): :func:`router_key`.

        Returns:
          (dict or None): None when off, absent or unreadable (then it is trained again).
        """
        if not self.enabled:
            return None
        path = self.root / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a torn or foreign file: train again and overwrite it
            return None
        return entry

    def save(
        self,
        key: str,
        reader: Dict[str, torch.Tensor],
        router: Dict[str, torch.Tensor],
        seconds: float,
    ) -> None:
        """Store a trained router (atomically; a no-op when off).

        Arguments:
          key (str): :func:`router_key`.
          reader (dict): the token reader's state dict.
          router (dict): the router's state dict.
          seconds (float): how long its training took.
        """
        if not self.enabled:
            return
        torch_save(
            self.root / f"{key}.pt",
            {
                "reader": {k: v.detach().cpu() for k, v in reader.items()},
                "router": {k: v.detach().cpu() for k, v in router.items()},
                "seconds": float(seconds),
            },
        )

    def train_or_load(
        self,
        step: int,
        samples: Sequence[Any],
        labels: Sequence[int],
        reader: nn.Module,
        router: nn.Module,
        train: Callable[[], None],
    ) -> Optional[float]:
        """Load the router of ``step`` trained on ``samples`` into ``reader`` and ``router`` (both
        at their initial values), or run ``train()`` and store the result (the main process
        writes).

        Arguments:
          step (int): the pool size (2 or more).
          samples (Sequence[Any]): the buffer images, in training order.
          labels (Sequence[int]): the adapter index of each sample.
          reader (nn.Module): the token reader.
          router (nn.Module): the router.
          train (Callable[[], None]): trains both in place and leaves them frozen.

        Returns:
          (float or None): the stored training seconds of a loaded router; None when trained.
        """
        key = router_key(
            self._cfg, self._model, self._opts, self._token_cache, step, samples, labels
        )
        entry = self.load(key)
        if entry is not None:
            reader.load_state_dict(entry["reader"])
            router.load_state_dict(entry["router"])
            reader.requires_grad_(False)
            router.requires_grad_(False)
            return float(entry["seconds"])
        t0 = time.perf_counter()
        train()
        if distributed.info().is_main:
            self.save(key, reader.state_dict(), router.state_dict(), time.perf_counter() - t0)
        return None
