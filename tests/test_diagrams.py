"""Teaching figures: MoDA's diagram and the boundary band of Boundary IoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from cosam.diagrams import boundary_band_figure, moda_diagram  # noqa: E402
from cosam.metrics import boundary_iou, iou  # noqa: E402


def _texts(fig) -> list:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_moda_diagram_draws_the_pool_tokens_and_router() -> None:
    fig = moda_diagram(n_gat=4, n_tasks=5, routed=2)
    texts = _texts(fig)
    assert [t for t in texts if t.startswith("adapter ") and "pool" not in t] == [
        "adapter 1",
        "adapter 2 ✓",
        "adapter 3",
        "adapter 4",
        "adapter 5",
    ]
    assert "GFT + 4 GAT tokens (trained)" in texts and "picks adapter 2" in texts
    assert any("never read the tokens" in t for t in texts)


def test_boundary_band_figure_reports_the_package_metrics() -> None:
    yy, xx = np.mgrid[:60, :80]
    gt = ((yy - 30) / 18.0) ** 2 + ((xx - 40) / 25.0) ** 2 <= 1
    pred = np.roll(gt, 3, axis=1)
    fig = boundary_band_figure(gt, pred)
    titles = [ax.get_title() for ax in fig.axes]
    g, p = torch.as_tensor(gt), torch.as_tensor(pred)
    assert f"IoU = {100 * iou(p, g):.1f}%" in titles[0]
    assert f"Boundary IoU = {100 * boundary_iou(p, g):.1f}%" in titles[2]
    assert 100 * boundary_iou(p, g) < 100 * iou(p, g)  # the point the figure makes
