"""Feature analyses of finished MoDA runs: GFT queries vs plain encoder features (t-SNE).

The question of the paper's Fig. "feature separation": do MoDA's Global Feature Token queries
separate the task domains better than the plain SAM encoder's features? For each test image we
take (a) the GFT query of the run's final tokens and (b) the mean-pooled image embedding of the
frozen encoder (what a router without tokens could read), embed both with t-SNE
(scikit-learn), and score each with the silhouette coefficient on the true domains (in the
original feature space, cosine distance, and in the 2-D embedding).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np


@dataclass
class DomainFeatures:
    """Per-image features of the test sets: queries (N,Dq) from the run's final tokens,
    queries_random (N,Dq) from the same tokens at their seeded random initialisation (the
    released, untrained tokens), pooled (N,256) mean image embedding, domains (N,) names."""

    queries: np.ndarray
    queries_random: np.ndarray
    pooled: np.ndarray
    domains: List[str]
    synthetic: bool


def gft_features(
    run_dir: Path,
    per_domain: Optional[int] = None,
    include_probe: bool = False,
    ctx: Optional[Any] = None,
) -> DomainFeatures:
    """GFT queries (final tokens of a finished ``*_moda`` run) and pooled encoder features of
    every test image (``per_domain`` caps the images per domain, in the benchmark's order)."""
    from .config import Config, from_dict
    from .inspect import rebuild_strategy
    from .io import read_json
    from .runner import Context

    run_dir = Path(run_dir)
    meta = read_json(run_dir / "config.json")
    cfg = from_dict(Config, {**meta["config"], "progress": False})
    if not cfg.method.endswith("_moda"):
        raise ValueError(f"{run_dir} is a {cfg.method} run; the GFT analysis needs a MoDA run")
    ctx = ctx or Context()
    strategy, bench, state = rebuild_strategy(run_dir, cfg, ctx)
    random_reader = strategy.new_reader()
    trained_reader = strategy.new_reader()
    trained_reader.load_state_dict(state["reader"])
    tasks = list(bench.tasks) + ([bench.probe] if include_probe and bench.probe is not None else [])
    qs, qr, pooled, names = [], [], [], []
    assert ctx.cache is not None and ctx.store is not None
    for task in tasks:
        samples = list(task.test)[:per_domain] if per_domain else list(task.test)
        for i in range(0, len(samples), 16):
            chunk = samples[i : i + 16]
            strategy.reader = trained_reader
            qs.append(strategy.queries(chunk).numpy())
            strategy.reader = random_reader
            qr.append(strategy.queries(chunk).numpy())
            emb, _ = ctx.cache.get(chunk, ctx.store)
            pooled.append(emb.mean(dim=(2, 3)).numpy())
            names += [task.name] * len(chunk)
    return DomainFeatures(
        np.concatenate(qs), np.concatenate(qr), np.concatenate(pooled), names, bench.synthetic
    )


def separation(
    features: np.ndarray, domains: List[str], seed: int = 0, perplexity: float = 30.0
) -> Dict[str, Any]:
    """t-SNE embedding (N,2) and silhouette scores (feature space, cosine; and 2-D)."""
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(features.astype(np.float64))
    labels = np.array(domains)
    perp = min(perplexity, max(2.0, (len(x) - 1) / 3.0))
    emb = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(x)
    return {
        "embedding": emb,
        "silhouette_features": float(silhouette_score(x, labels, metric="cosine")),
        "silhouette_tsne": float(silhouette_score(emb, labels)),
    }


def feature_silhouette(features: np.ndarray, domains: List[str]) -> float:
    """The silhouette of ``features`` (N,D) on the true ``domains`` in feature space: cosine, on
    standardised features, as :func:`separation`'s ``silhouette_features`` (no t-SNE)."""
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(features.astype(np.float64))
    return float(silhouette_score(x, np.array(domains), metric="cosine"))


def silhouette_gain(run_dir: Path, ctx: Optional[Any] = None) -> float:
    """How much better a MoDA run's GFT queries separate the test domains than pooled encoder
    features: silhouette(GFT) − silhouette(pooled), both by :func:`feature_silhouette`, over every
    test image of the run's tasks (the value the ``gft_separates_domains`` claim judges).

    Arguments:
      run_dir (Path): a finished ``*_moda`` run.
      ctx (Optional[Any]): a :class:`cosam.runner.Context` to share model and caches.

    Returns:
      (float): the difference, in silhouette units (−2 .. 2).
    """
    f = gft_features(run_dir, ctx=ctx)
    return feature_silhouette(f.queries, f.domains) - feature_silhouette(f.pooled, f.domains)
