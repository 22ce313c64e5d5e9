"""Look inside a finished run: rebuild its trained model and predict masks for chosen images.

    examples = predict_examples(run_dir, probe_samples)          # the final model
    examples[0].pred, examples[0].iou

The method is rebuilt from the run's ``config.json`` (the model it really used, fallback
included: ``resolved.backbone/checkpoint/image_size``) and its trained modules are loaded from
``state/step_<n>.pt``. The runner keeps only the LAST step's state file (older ones are deleted
after each checkpoint), so only the final model can be inspected; asking for another step raises
an error that says so. Prediction is exactly the evaluation's: one tight GT box per image, the
cached encoder features when the method's encoder is frozen, logits scored at the original size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .accel import CPU, flush_denormals
from .config import Config, config_from_file
from .data.benchmark import Benchmark
from .data.prompts import Prompt
from .data.reader import SamplePath
from .errors import CheckpointError, CosamError
from .features import FeatureCache, SampleStore, feature_cache_dir
from .io import read_json
from .methods import get_method
from .methods.base import Strategy
from .metrics import score_logits
from .models.registry import build_sam
from .models.sam import SamModel
from .resources import load_benchmark
from .rundir import RunDir
from .runner import Context, prepare


@dataclass
class Example:
    """One image's prediction by one run's model.

    Attributes:
      sample: the image / mask pair.
      logits: (1, h, w) low-resolution mask logits (the decoder's output).
      pred: (H, W) bool, logits upsampled to the original size and thresholded at 0.
      gt: (H, W) bool ground truth.
      iou, biou: the evaluation's scores of this image.
    """

    sample: SamplePath
    logits: Tensor
    pred: Tensor
    gt: Tensor
    iou: float
    biou: float


def run_config(run_dir: Path) -> Tuple[Config, Dict]:
    """The run's Config and its ``resolved`` record (data root, order, model really used)."""
    meta = read_json(Path(run_dir) / "config.json")
    return config_from_file(str(Path(run_dir) / "config.json")), meta["resolved"]


def benchmark_of(run_dir: Path) -> Benchmark:
    """The run's benchmark: its resolved data root and order, with the run's caps."""
    cfg, res = run_config(run_dir)
    return load_benchmark(cfg, Path(res["data_root"]), res["order"])


def saved_steps(run_dir: Path) -> List[int]:
    """Steps whose state file exists (normally only the last: the runner deletes older ones)."""
    return RunDir(run_dir).steps()


def load_state(run_dir: Path, step: Union[str, int] = "last") -> Tuple[Dict[str, Any], int]:
    """The saved resume state of ``step`` ("last" or a number): the dict the runner wrote to
    ``state/step_<n>.pt`` (``strategy``, ``matrix``, ...), and the step it holds.

    Raises CosamError when no such state file is kept, CheckpointError when it cannot be read.
    """
    run_dir = Path(run_dir)
    steps = saved_steps(run_dir)
    if not steps:
        raise CosamError(f"{run_dir} has no state/step_<n>.pt file; run it first")
    want = steps[-1] if step == "last" else int(step)
    if want not in steps:
        raise CosamError(
            f"{run_dir} keeps the state of step {', '.join(map(str, steps))} only (the runner deletes "
            f"older steps' state after each checkpoint), so step {want} cannot be inspected"
        )
    path = RunDir(run_dir).step_path(want)
    try:
        return torch.load(path, map_location="cpu", weights_only=False), want
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None


def _model_of(cfg: Config, res: Dict, model: Optional[SamModel]) -> SamModel:
    if (
        model is not None
        and model.weights_id == res["weights_id"]
        and model.image_size == res["image_size"]
    ):
        return model
    ckpt = res.get("checkpoint")
    wdir = Path(cfg.model.weights_dir) if cfg.model.weights_dir else None
    built = build_sam(
        res["backbone"],
        Path(ckpt) if ckpt else None,
        res["image_size"],
        wdir,
        pretrained=ckpt is not None,
    )
    if built.weights_id != res["weights_id"]:
        raise CheckpointError(
            f"the run used weights {res['weights_id']} but {ckpt or 'random init'} gives "
            f"{built.weights_id}; restore the checkpoint the run was trained with"
        )
    return built


def load_strategy(
    run_dir: Path, step: Union[str, int] = "last", model: Optional[SamModel] = None
) -> Tuple[Strategy, Benchmark, int]:
    """The run's method with the trained modules of ``step`` loaded, in eval mode.

    Arguments:
      run_dir: a finished (or partly finished) run folder.
      step: "last" or a step number; only steps with a state file can be loaded.
      model: a SamModel to reuse when it carries the run's weights (saves a rebuild).

    Returns:
      (strategy, benchmark, step loaded).
    """
    run_dir = Path(run_dir)
    state, want = load_state(run_dir, step)
    cfg, res = run_config(run_dir)
    sam = _model_of(cfg, res, model)
    bench = benchmark_of(run_dir)
    torch.manual_seed(cfg.seed)
    strategy = _planned(cfg, sam, bench)
    strategy.load_method_state(state["strategy"])
    strategy.eval()
    return strategy, bench, want


def rebuild_strategy(
    run_dir: Path, cfg: Config, ctx: Context
) -> Tuple[Strategy, Benchmark, Dict[str, Any]]:
    """A finished run's method rebuilt untrained for re-evaluation, with the run's last saved state.

    Data and model are ``cfg``'s, prepared in ``ctx`` (:func:`cosam.runner.prepare`), whose cache
    and store then serve the evaluation. The state is returned, not loaded: ``cfg`` may change
    options (MoDA's router, say) that the saved modules were not trained with.

    Arguments:
      run_dir (Path): the finished run folder.
      cfg (Config): the run's config, possibly with other method options.
      ctx (Context): filled with ``cfg``'s model, sample store and feature cache.

    Returns:
      (tuple(Strategy, Benchmark, dict)): the strategy planned over the benchmark's tasks, the
        benchmark, and the method state of the last saved step (``state/step_<n>.pt``'s
        ``strategy``).
    """
    state = load_state(run_dir)[0]["strategy"]
    flush_denormals(cfg.train.flush_denormal, CPU.device)  # the run's CPU arithmetic
    bench = prepare(cfg, ctx)
    assert ctx.model is not None
    return _planned(cfg, ctx.model, bench), bench, state


def _planned(cfg: Config, model: SamModel, bench: Benchmark) -> Strategy:
    """``cfg``'s method on ``model``, untrained, planned over ``bench``'s tasks."""
    strategy = get_method(cfg.method)(model, cfg)
    strategy.plan(bench.tasks)
    return strategy


@torch.no_grad()
def predict_examples(
    run_dir: Path,
    samples: Sequence[SamplePath],
    step: Union[str, int] = "last",
    model: Optional[SamModel] = None,
) -> List[Example]:
    """Masks the run's model predicts for ``samples`` with one GT-box prompt each.

    Arguments:
      run_dir: the run folder.
      samples: pairs of the run's benchmark (their ``domain`` names the task id to use).
      step: "last" (the only state the runner keeps) or that step's number.
      model: optional SamModel to reuse.

    Returns:
      One :class:`Example` per sample, in order.
    """
    strategy, bench, _ = load_strategy(run_dir, step, model)
    cfg = strategy.cfg
    ids = {t.name: t.task_id for t in bench.with_probe()}
    unknown = sorted({s.domain for s in samples} - set(ids))
    if unknown:
        raise CosamError(
            f"samples of {', '.join(unknown)} are not in the run's benchmark ({', '.join(ids)})"
        )
    sam = strategy.model
    store = SampleStore(sam.image_size, cfg.data.allow_nonbinary_masks)
    items = [store.get(s, keep_image=True) for s in samples]
    prompts = [Prompt(kind="box", box=i.box) for i in items]
    tids = torch.tensor([ids[s.domain] for s in samples], dtype=torch.long)
    strategy.eval()
    if strategy.needs_pixels:
        logits = strategy.predict_images(
            torch.stack([i.image for i in items]), prompts, tids, samples=list(samples)
        )
    else:
        cache = FeatureCache(
            feature_cache_dir(cfg, CPU),
            sam,
            cfg.train.cache_dtype,
            progress=False,
            enabled=cfg.train.cache_features,
        )
        emb, interm = cache.get(list(samples), store)
        logits = strategy.predict(emb, interm, prompts, tids, samples=list(samples))
    scores = score_logits(logits, [i.gt for i in items])
    out = []
    for s, item, lg, (a, b) in zip(samples, items, logits, scores):
        up = F.interpolate(
            lg[None].float(), size=tuple(item.gt.shape), mode="bilinear", align_corners=False
        )
        out.append(Example(s, lg, up[0, 0] > 0, item.gt, a, b))
    return out
