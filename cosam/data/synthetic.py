"""A small generated benchmark in the cosam-mini layout, for tests and smoke runs without real data.

Each domain has its own background texture, colours and foreground shape (thin cracks and lines
for the defect domains, blobs and ellipses for the others), so that domain identity is learnable.
The output is a deterministic function of the parameters.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cosam import faults
from cosam.data.benchmark import SYNTHETIC_MARKER
from cosam.data.domains import LAYOUTS, PAPER_ORDER, PROBE
from cosam.errors import DataError

LOGGER = logging.getLogger(__name__)

# Bump when the painters change, so old folders are regenerated instead of reused.
_GENERATOR_VERSION = 2  # 2: MVTec_I is written to piped/ (the cosam-mini mapping since 2026-12-02)
_MIN_FOREGROUND = 16
_JPEG_QUALITY = 95

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


_PAINTERS: dict[str, Painter] = {
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

_NOTE = """# Synthetic data: generated, NOT real

This folder was written by `cosam.data.synthetic.make_synthetic_benchmark`. Every image and mask
is drawn by a small procedural painter (one per domain: textures, colours and foreground shapes
that differ between domains). Nothing here is a photograph or a real annotation. Use it only for
tests and smoke runs; results on it say nothing about CoSAM or the real benchmark.

The layout is that of cosam-mini: `<folder>/<split>/images/<name>.jpg` (JPEG quality 95) and
`<folder>/<split>/masks/<name>.png` (8-bit, values 0 and 255).
"""


def _parameters_line(params: dict[str, int]) -> str:
    return "parameters: " + json.dumps(params, sort_keys=True)


def _paint(
    painter: Painter, rng: np.random.Generator, size: int, domain: str
) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = max(8, int(round(size * 0.75))), max(8, int(round(size * 1.25)))
    for _ in range(20):
        w, h = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
        img, mask = painter(rng, h, w)
        if int(mask.sum()) >= _MIN_FOREGROUND and not mask.all():
            return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask
    raise DataError(
        f"synthetic painter for domain {domain!r} drew no usable foreground at size {size}; "
        f"expected at least {_MIN_FOREGROUND} foreground pixels; fix: use a larger size (>= 32)"
    )


def _is_current(root: Path, line: str) -> bool:
    """root holds a complete generated benchmark with these parameters."""
    try:
        return line in (root / SYNTHETIC_MARKER).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False


_GENERATED_NAME = re.compile(r"^[a-z_]+_(train|test)_\d{4}\.(jpg|png)$")


def _is_interrupted_generation(root: Path) -> bool:
    """root holds nothing but what this generator writes, without its marker: the leftover of a
    generation that was killed (the code before the atomic rename wrote in place)."""
    dirs = {
        Path(d)
        for spec in LAYOUTS["cosam-mini"].values()
        for sp in (spec.train, spec.test)
        if sp is not None
        for d in (sp.image_dir, sp.mask_dir)
    }
    parents = {q for d in dirs for q in d.parents if str(q) != "."} | dirs
    try:
        for p in root.rglob("*"):
            rel = p.relative_to(root)
            if p.is_symlink():
                return False
            if p.is_dir():
                if rel not in parents:
                    return False
            elif rel.parent not in dirs or not _GENERATED_NAME.match(p.name):
                return False
    except OSError:
        return False
    return True


@contextmanager
def _generation_lock(root: Path) -> Iterator[None]:
    """An exclusive lock (fcntl) beside root, so concurrent generators wait for one another."""
    lock = root.parent / f".{root.name}.lock"
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as exc:
        raise DataError(
            f"cannot create the synthetic benchmark beside {root}: {exc.strerror or exc}; "
            f"fix: choose a writable cache_dir"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_benchmark(root: Path, params: dict[str, int], line: str) -> None:
    n_train, n_test, n_probe, size, seed = (
        params[k] for k in ("n_train", "n_test", "n_probe", "size", "seed")
    )
    for index, name in enumerate((*PAPER_ORDER, PROBE)):
        spec = LAYOUTS["cosam-mini"][name]
        rng = np.random.default_rng([seed, index])
        splits = [("test", spec.test, n_probe)]
        if spec.train is not None:
            splits = [("train", spec.train, n_train), ("test", spec.test, n_test)]
        for split, split_spec, count in splits:
            image_dir, mask_dir = root / split_spec.image_dir, root / split_spec.mask_dir
            image_dir.mkdir(parents=True, exist_ok=True)
            mask_dir.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img, mask = _paint(_PAINTERS[name], rng, size, name)
                stem = f"{name.lower()}_{split}_{i:04d}"
                Image.fromarray(img).save(image_dir / f"{stem}.jpg", quality=_JPEG_QUALITY)
                Image.fromarray(mask.astype(np.uint8) * 255).save(mask_dir / f"{stem}.png")
                faults.point("synthetic")
    (root / SYNTHETIC_MARKER).write_text(_NOTE + "\n" + line + "\n", encoding="utf-8")


def make_synthetic_benchmark(
    root: Path,
    n_train: int = 12,
    n_test: int = 6,
    n_probe: int = 6,
    size: int = 96,
    seed: int = 0,
) -> Path:
    """Write a small generated benchmark in the cosam-mini layout, safely under kills and concurrency.

    Writes the 8 task domains (n_train + n_test pairs each) and the natural_coco probe (n_probe
    test pairs), with the folder names of LAYOUTS["cosam-mini"], and a SYNTHETIC.md file that
    says the data is generated. Image sides vary per image within [0.75, 1.25] x size. If
    root/SYNTHETIC.md already records the same parameters nothing is rewritten; a synthetic folder
    with other parameters is regenerated.

    The benchmark is written into a temporary sibling folder and renamed to root when complete,
    under an exclusive lock beside root: a killed generation leaves no partial root (its temporary
    folder is removed by the next generation), and concurrent callers wait for the first and then
    reuse its folder. A leftover of an interrupted generation by older code (generated files
    only, no SYNTHETIC.md) is regenerated; any other non-empty folder is never touched.

    Arguments:
      root (Path): the folder to write (its parent is created if needed).
      n_train (int): training pairs per task domain.
      n_test (int): test pairs per task domain.
      n_probe (int): probe pairs.
      size (int): nominal image side in pixels.
      seed (int): seeds numpy.random.default_rng; the output depends only on the parameters.

    Returns:
      (Path): root.

    Raises:
      DataError: root is a non-empty folder that is not a synthetic benchmark, or cannot be written.
    """
    given = Path(root)
    root = Path(
        os.path.realpath(given)
    )  # a symbolic link to the cache folder is kept, its target written
    params = {
        "n_train": n_train,
        "n_test": n_test,
        "n_probe": n_probe,
        "size": size,
        "seed": seed,
        "version": _GENERATOR_VERSION,
    }
    line = _parameters_line(params)
    if _is_current(root, line):
        return given
    with _generation_lock(root):
        if _is_current(root, line):  # another process generated it while this one waited
            return given
        for stale in root.parent.glob(
            f".{root.name}.tmp-*"
        ):  # killed generations (the lock is ours)
            shutil.rmtree(stale, ignore_errors=True)
        if root.exists():
            if (root / SYNTHETIC_MARKER).is_file():
                LOGGER.info("regenerating synthetic benchmark in %s with %s", root, line)
            elif root.is_dir() and _is_interrupted_generation(root):
                LOGGER.warning(
                    "%s holds an interrupted synthetic generation (no %s); regenerating it",
                    root,
                    SYNTHETIC_MARKER,
                )
            elif not root.is_dir() or any(root.iterdir()):
                raise DataError(
                    f"{root} is not empty and has no {SYNTHETIC_MARKER}; expected a new or empty folder for "
                    f"the synthetic benchmark (existing data is never overwritten); fix: choose another folder"
                )
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        try:
            _write_benchmark(tmp, params, line)
            if root.exists():
                old = root.parent / f".{root.name}.tmp-{os.getpid()}-old"
                os.rename(root, old)
                os.rename(tmp, root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, root)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(
                f"cannot write the synthetic benchmark {root}: {exc.strerror or exc}; "
                f"fix: free disk space or choose a writable cache_dir"
            ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return given
