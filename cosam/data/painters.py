"""The synthetic benchmark's drawing: one procedural painter per domain, and the drawing of one
image/mask pair at a random size around a nominal side.

Each domain has its own background texture, colours and foreground shape (thin cracks and lines
for the defect domains, blobs and ellipses for the others), so that domain identity is learnable.
Every drawing is a deterministic function of the numpy generator it is given; a change here
changes the generated data, so bump ``_GENERATOR_VERSION`` in :mod:`cosam.data.synthetic`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from cosam.data.domains import PROBE
from cosam.errors import DataError

#: Foreground pixels a drawn mask needs at least (else the pair is drawn again).
MIN_FOREGROUND = 16

Painter = Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]]


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    return yy.astype(np.float32), xx.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Noise in [-1, 1] with features about cell pixels wide (bilinear upsampling of a coarse grid)."""
    coarse = rng.uniform(-1.0, 1.0, size=(max(2, h // cell + 2), max(2, w // cell + 2))).astype(
        np.float32
    )
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.float32)


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float
) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _polyline(yy: np.ndarray, xx: np.ndarray, pts: np.ndarray, half_width: float) -> np.ndarray:
    """Pixels within half_width of a polyline given as (K, 2) (x, y) vertices."""
    dist = np.full(yy.shape, np.inf, dtype=np.float32)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = ((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-6)
        t = np.clip(t, 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy)))
    return dist <= half_width


def _random_walk(rng: np.random.Generator, h: int, w: int, steps: int) -> np.ndarray:
    heading = rng.uniform(0, 2 * np.pi)
    pts = [np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])]
    step = 0.6 * min(h, w) / steps
    for _ in range(steps):
        heading += rng.normal(0.0, 0.5)
        pts.append(pts[-1] + step * np.array([np.cos(heading), np.sin(heading)]))
    return np.stack(pts)


def _compose(
    base: np.ndarray, mask: np.ndarray, colour: np.ndarray, alpha: float = 1.0
) -> np.ndarray:
    out = base.copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * colour
    return out


def _grey(value: np.ndarray, tint: tuple[float, float, float]) -> np.ndarray:
    return value[:, :, None] * np.asarray(tint, dtype=np.float32)[None, None]


def _bsdata(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # Ball-screw surface: horizontal thread stripes on bluish metal; dark pits.
    yy, xx = _grid(h, w)
    period = rng.uniform(6, 10)
    value = 150 + 35 * np.sin(2 * np.pi * yy / period) + 10 * _smooth_noise(rng, h, w, 12)
    img = _grey(value, (0.95, 1.0, 1.08))
    mask = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 4)):
        mask |= _ellipse(
            yy,
            xx,
            rng.uniform(0.2, 0.8) * h,
            rng.uniform(0.2, 0.8) * w,
            rng.uniform(3, 6),
            rng.uniform(4, 9),
            rng.uniform(0, np.pi),
        )
    return _compose(img, mask, np.array([45, 40, 38], np.float32), 0.85), mask


def _crackforest(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # Asphalt: speckled grey; one thin, dark, wandering crack.
    yy, xx = _grid(h, w)
    value = (
        115
        + 25 * rng.standard_normal((h, w)).astype(np.float32)
        + 15 * _smooth_noise(rng, h, w, 20)
    )
    img = _grey(value, (1.0, 1.0, 0.97))
    mask = _polyline(
        yy, xx, _random_walk(rng, h, w, int(rng.integers(5, 9))), rng.uniform(1.2, 2.0)
    )
    return _compose(img, mask, np.array([35, 35, 35], np.float32), 0.9), mask


def _neu_seg(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # Hot-rolled steel: vertical streaks; irregular bright patches.
    yy, xx = _grid(h, w)
    columns = rng.normal(0, 12, size=w).astype(np.float32)
    value = 100 + columns[None, :] + 6 * rng.standard_normal((h, w)).astype(np.float32)
    img = _grey(value, (1.0, 1.0, 1.0))
    mask = np.zeros((h, w), bool)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    for _ in range(rng.integers(2, 5)):
        mask |= _ellipse(
            yy,
            xx,
            cy + rng.normal(0, 0.1 * h),
            cx + rng.normal(0, 0.1 * w),
            rng.uniform(0.06, 0.15) * h,
            rng.uniform(0.06, 0.15) * w,
            rng.uniform(0, np.pi),
        )
    return _compose(img, mask, np.array([185, 185, 185], np.float32), 0.7), mask


def _mtd_a(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # Magnetic tile: dark brown with a vignette; small round black blowholes.
    yy, xx = _grid(h, w)
    r = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)
    value = 85 - 50 * r + 8 * _smooth_noise(rng, h, w, 6)
    img = _grey(value, (1.1, 0.95, 0.8))
    mask = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 4)):
        rad = rng.uniform(3, 6)
        mask |= _ellipse(
            yy, xx, rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, rad, rad, 0.0
        )
    return _compose(img, mask, np.array([12, 10, 8], np.float32), 0.9), mask


def _juice_bottle(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # Juice bottle on black: orange body; the anomaly is a misplaced, off-colour label rectangle.
    yy, xx = _grid(h, w)
    img = np.full((h, w, 3), 15, np.float32) + 4 * _smooth_noise(rng, h, w, 8)[:, :, None]
    bw, top = rng.uniform(0.28, 0.38) * w, rng.uniform(0.08, 0.15) * h
    body = (np.abs(xx - w / 2) <= bw) & (yy >= top) & (yy <= h - 0.05 * h)
    img = _compose(img, body, np.array([230, 140, 30], np.float32), 0.9)
    lh, lw = rng.uniform(0.12, 0.22) * h, rng.uniform(0.4, 0.8) * bw
    ly, lx = rng.uniform(top + lh, h - 0.1 * h - lh), w / 2 + rng.uniform(-0.3, 0.3) * bw
    mask = (np.abs(yy - ly) <= lh / 2) & (np.abs(xx - lx) <= lw) & body
    colour = (
        np.array([40, 90, 220], np.float32)
        if rng.uniform() < 0.5
        else np.array([235, 235, 225], np.float32)
    )
    return _compose(img, mask, colour, 0.95), mask


def _mtd_b(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # Light tile with a fine diagonal texture; a straight break entering from an edge.
    yy, xx = _grid(h, w)
    value = 165 + 12 * np.sin(2 * np.pi * (xx + yy) / 5.0) + 6 * _smooth_noise(rng, h, w, 10)
    img = _grey(value, (1.0, 0.97, 0.9))
    start = (
        np.array([0.0, rng.uniform(0.2, 0.8) * h])
        if rng.uniform() < 0.5
        else np.array([rng.uniform(0.2, 0.8) * w, 0.0])
    )
    end = np.array([rng.uniform(0.4, 0.9) * w, rng.uniform(0.4, 0.9) * h])
    mask = _polyline(yy, xx, np.stack([start, end]), rng.uniform(1.5, 2.5))
    return _compose(img, mask, np.array([60, 55, 50], np.float32), 0.9), mask


def _ecssd(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # Natural-looking scene: smooth two-colour gradient; one large, saturated salient object.
    yy, xx = _grid(h, w)
    c0, c1 = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
    t = ((yy / h) * 0.7 + (xx / w) * 0.3)[:, :, None]
    img = ((1 - t) * c0 + t * c1).astype(np.float32) + 10 * _smooth_noise(rng, h, w, 16)[:, :, None]
    mask = _ellipse(
        yy,
        xx,
        rng.uniform(0.4, 0.6) * h,
        rng.uniform(0.4, 0.6) * w,
        rng.uniform(0.2, 0.35) * h,
        rng.uniform(0.2, 0.35) * w,
        rng.uniform(0, np.pi),
    )
    colour = np.array([rng.uniform(150, 255), rng.uniform(0, 60), rng.uniform(0, 255)], np.float32)[
        rng.permutation(3)
    ]
    return _compose(img, mask, colour, 0.9), mask


def _polyp(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # Colonoscopy: pink-red tissue, dark vignette, specular dots; a shaded, raised polyp blob.
    yy, xx = _grid(h, w)
    r = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)
    shade = np.clip(1.1 - 1.3 * r, 0.1, 1.0) + 0.08 * _smooth_noise(rng, h, w, 10)
    img = shade[:, :, None] * np.array([210, 95, 85], np.float32)[None, None]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = rng.uniform(0.1, 0.22) * h, rng.uniform(0.1, 0.22) * w
    mask = _ellipse(yy, xx, cy, cx, ry, rx, rng.uniform(0, np.pi))
    bump = np.clip(1 - np.hypot((yy - cy) / ry, (xx - cx) / rx), 0, 1)
    img[mask] = (
        img[mask] * 0.6
        + (np.array([235, 150, 110], np.float32) * (0.7 + 0.3 * bump[mask, None])) * 0.4
    )
    for _ in range(rng.integers(2, 6)):
        img[_ellipse(yy, xx, rng.uniform(0, h), rng.uniform(0, w), 1.5, 1.5, 0.0)] = 250
    return img, mask


def _natural_coco(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # Cluttered scene of coloured rectangles; the object is a random star-shaped polygon.
    yy, xx = _grid(h, w)
    img = np.empty((h, w, 3), np.float32)
    img[:] = rng.uniform(40, 220, 3)
    for _ in range(rng.integers(3, 7)):
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        box = (
            (yy >= y0)
            & (yy < y0 + rng.uniform(0.1, 0.5) * h)
            & (xx >= x0)
            & (xx < x0 + rng.uniform(0.1, 0.5) * w)
        )
        img[box] = rng.uniform(0, 255, 3)
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    n_vertices = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n_vertices))
    radii = rng.uniform(0.12, 0.35, n_vertices) * min(h, w)
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).polygon(
        [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a, r in zip(angles, radii)],
        fill=255,
    )
    mask = np.asarray(canvas) > 0
    return _compose(img, mask, rng.uniform(0, 255, 3).astype(np.float32), 1.0), mask


#: The painter of each domain (the 8 task domains and the probe).
PAINTERS: dict[str, Painter] = {
    "BSData": _bsdata,
    "RSDD_I": _crackforest,
    "RSDD_II": _neu_seg,
    "MVTec_I": _mtd_a,
    "MVTec_II": _juice_bottle,
    "MVTec_III": _mtd_b,
    "CAMO": _ecssd,
    "Polyp": _polyp,
    PROBE: _natural_coco,
}


def paint(
    painter: Painter, rng: np.random.Generator, size: int, domain: str
) -> tuple[np.ndarray, np.ndarray]:
    """One image/mask pair of ``domain``, each side drawn in [0.75, 1.25] x ``size``.

    Arguments:
      painter (Painter): the domain's painter, (rng, h, w) -> (image (h,w,3) float, mask (h,w)).
      rng (np.random.Generator): the generator the sizes and the drawing consume.
      size (int): nominal image side in pixels.
      domain (str): the domain's name (for the error message).

    Returns:
      (tuple[np.ndarray, np.ndarray]): the image (h,w,3) uint8 and the mask (h,w) bool, with at
        least MIN_FOREGROUND foreground pixels and some background (up to 20 draws).

    Raises:
      DataError: 20 draws in a row gave no usable foreground.
    """
    lo, hi = max(8, int(round(size * 0.75))), max(8, int(round(size * 1.25)))
    for _ in range(20):
        w, h = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
        img, mask = painter(rng, h, w)
        if int(mask.sum()) >= MIN_FOREGROUND and not mask.all():
            return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask
    raise DataError(
        f"synthetic painter for domain {domain!r} drew no usable foreground at size {size}; "
        f"expected at least {MIN_FOREGROUND} foreground pixels; fix: use a larger size (>= 32)"
    )
