"""Tests of cosam.data: reader errors, layouts, orders, caps, transforms, prompts, synthetic data."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cosam.data import (
    LAYOUTS,
    PAPER_ORDER,
    PROBE,
    PROBE_TASK_ID,
    REVERSE_ORDER,
    TASK_IDS,
    SamplePath,
    SplitSpec,
    box_from_label,
    build_benchmark,
    draw_prompt_types,
    large_scale_jitter,
    list_samples,
    load_image,
    load_mask,
    load_pair,
    make_prompt,
    make_synthetic_benchmark,
    noisy_mask,
    resize_eval,
    resolve_order,
    sample_points,
)
from cosam.errors import ConfigError, DataError

MINI_SPEC = SplitSpec("dom/train/images", "dom/train/masks", (".jpg",), ".png")

# Pair counts of shared/data/cosam-mini (its README): slot -> (train, test).
MINI_COUNTS = {
    "BSData": (120, 40),
    "RSDD_I": (93, 25),
    "RSDD_II": (120, 40),
    "MVTec_I": (120, 39),
    "MVTec_II": (109, 33),
    "MVTec_III": (120, 32),
    "CAMO": (120, 40),
    "Polyp": (120, 40),
}
MINI_PROBE_COUNT = 100


def _rect_mask(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : h // 2, w // 4 : w // 2] = 255
    return mask


def _write_pair(
    image_dir: Path,
    mask_dir: Path,
    stem: str,
    hw: tuple[int, int] = (20, 30),
    mask: np.ndarray | None = None,
    mask_ext: str = ".png",
) -> tuple[Path, Path]:
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    image = rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    img_path, mask_path = image_dir / f"{stem}.jpg", mask_dir / f"{stem}{mask_ext}"
    Image.fromarray(image).save(img_path, quality=95)
    Image.fromarray(_rect_mask(*hw) if mask is None else mask).save(mask_path)
    return img_path, mask_path


def _mini_root(tmp_path: Path, stems: list[str]) -> Path:
    for stem in stems:
        _write_pair(tmp_path / "dom/train/images", tmp_path / "dom/train/masks", stem)
    return tmp_path


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_benchmark(tmp_path_factory.mktemp("synthetic") / "bench")


@pytest.fixture()
def synthetic_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """A writable copy, for tests that break the folder."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "bench"))


# --------------------------------------------------------------------------- reader


def test_list_samples_sorted_and_paired(tmp_path: Path) -> None:
    root = _mini_root(tmp_path, ["c", "a", "b10", "b2"])
    samples = list_samples(root, MINI_SPEC, "Dom", "train")
    assert [s.name for s in samples] == ["a", "b10", "b2", "c"]
    assert all(s.mask == root / "dom/train/masks" / f"{s.name}.png" for s in samples)
    assert all(s.domain == "Dom" and s.split == "train" for s in samples)
    assert list_samples(root, MINI_SPEC, "Dom", "train") == samples


def test_list_samples_side_by_side(tmp_path: Path) -> None:
    folder = tmp_path / "my_train"
    for stem in ("x", "y"):
        _write_pair(folder, folder, stem)
    spec = SplitSpec("my_train", "my_train", (".jpg",), ".png")
    samples = list_samples(tmp_path, spec, "BSData", "train")
    assert [(s.image.suffix, s.mask.suffix) for s in samples] == [(".jpg", ".png")] * 2


def test_missing_mask_names_image_and_expected_mask(tmp_path: Path) -> None:
    root = _mini_root(tmp_path, ["a", "lonely"])
    (root / "dom/train/masks/lonely.png").unlink()
    with pytest.raises(DataError, match=r"lonely\.jpg.*has no mask.*lonely\.png"):
        list_samples(root, MINI_SPEC, "Dom", "train")


def test_orphan_mask_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _mini_root(tmp_path, ["a", "orphan"])
    (root / "dom/train/images/orphan.jpg").unlink()
    with caplog.at_level(logging.WARNING, logger="cosam.data.reader"):
        samples = list_samples(root, MINI_SPEC, "Dom", "train")
    assert [s.name for s in samples] == ["a"]
    assert "orphan.png" in caplog.text


def test_no_images_and_missing_root(tmp_path: Path) -> None:
    (tmp_path / "dom/train/images").mkdir(parents=True)
    (tmp_path / "dom/train/masks").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no images .*dom/train/images"):
        list_samples(tmp_path, MINI_SPEC, "Dom", "train")
    with pytest.raises(DataError, match=r"nowhere.*COSAM_DATA or data\.root"):
        list_samples(tmp_path / "nowhere", MINI_SPEC, "Dom", "train")


def test_missing_split_folder_names_path_domain_split(synthetic_copy: Path) -> None:
    shutil.rmtree(synthetic_copy / "crackforest/test/masks")
    with pytest.raises(DataError, match=r"crackforest/test/masks.*'RSDD_I'.*'test'"):
        build_benchmark(synthetic_copy)


def test_missing_domain_folder_names_folder_and_domain(synthetic_copy: Path) -> None:
    shutil.rmtree(synthetic_copy / "neu_seg")
    with pytest.raises(DataError, match=r"neu_seg of domain 'RSDD_II'"):
        build_benchmark(synthetic_copy)


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    img, _ = _write_pair(
        tmp_path / "i", tmp_path / "m", "pair", hw=(20, 30), mask=_rect_mask(21, 30)
    )
    sample = SamplePath(img, tmp_path / "m/pair.png", "Dom", "train", "pair")
    with pytest.raises(
        DataError, match=r"m/pair\.png is 30x21 .*i/pair\.jpg is 30x20.*re-save the mask"
    ):
        load_pair(sample)


def test_empty_mask(tmp_path: Path) -> None:
    img, mask = _write_pair(
        tmp_path / "i", tmp_path / "m", "blank", mask=np.zeros((20, 30), np.uint8)
    )
    with pytest.raises(DataError, match=r"blank\.png is empty.*remove this image / mask pair"):
        load_pair(SamplePath(img, mask, "Dom", "train", "blank"))


def test_nonbinary_mask_needs_opt_in(tmp_path: Path) -> None:
    grad = np.tile(np.linspace(0, 255, 30).astype(np.uint8), (20, 1))
    img, mask = _write_pair(tmp_path / "i", tmp_path / "m", "grad", mask=grad)
    sample = SamplePath(img, mask, "Dom", "train", "grad")
    with pytest.raises(
        DataError, match=r"grad\.png is not binary.*data\.allow_nonbinary_masks=true.*> 127"
    ):
        load_pair(sample)
    _, binary = load_pair(sample, allow_nonbinary=True)
    assert binary.dtype == bool and binary.shape == (20, 30)
    assert np.array_equal(binary, grad > 127)


def test_truncated_and_garbage_images(tmp_path: Path) -> None:
    img, _ = _write_pair(tmp_path / "i", tmp_path / "m", "cut", hw=(64, 64))
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read image .*cut\.jpg"):
        load_image(img)
    bad = tmp_path / "garbage.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"cannot read mask .*garbage\.png"):
        load_mask(bad)


def test_image_modes(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = load_image(tmp_path / "grey.png")
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8 and np.array_equal(out[:, :, 2], grey)

    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    out = load_image(tmp_path / "rgba.png")
    assert out.shape == (3, 4, 3) and (out[..., 0] == 200).all()

    Image.fromarray(np.full((3, 4), 65535, np.uint16)).save(tmp_path / "wide.png")
    assert (load_image(tmp_path / "wide.png") == 255).all()

    rgb_mask = np.zeros((5, 5, 3), np.uint8)
    rgb_mask[1:3, 1:3, 0] = 255  # channel 0 is the mask; the others are ignored
    rgb_mask[:, :, 1] = 255
    Image.fromarray(rgb_mask).save(tmp_path / "rgbmask.png")
    assert load_mask(tmp_path / "rgbmask.png").sum() == 4


# --------------------------------------------------------------------------- layouts, orders, caps


def test_layouts_cover_every_slot() -> None:
    for layout in LAYOUTS.values():
        assert set(layout) == {*PAPER_ORDER, PROBE}
        assert layout[PROBE].train is None
        assert all(layout[name].train is not None for name in PAPER_ORDER)
    assert TASK_IDS == {name: i for i, name in enumerate(PAPER_ORDER)}


def test_original_layout_reads_the_archive_tree(tmp_path: Path) -> None:
    for name in PAPER_ORDER:
        spec = LAYOUTS["cosam-original"][name]
        for split in (spec.train, spec.test):
            assert split is not None
            _write_pair(
                tmp_path / split.image_dir,
                tmp_path / split.mask_dir,
                f"{name}_{split.image_dir[-4:]}",
                mask_ext=split.mask_ext,
            )
    coco = LAYOUTS["cosam-original"][PROBE].test
    _write_pair(tmp_path / coco.image_dir, tmp_path / coco.mask_dir, "000000000009")
    bench = build_benchmark(tmp_path, layout="cosam-original")
    assert [t.name for t in bench.tasks] == list(PAPER_ORDER)
    assert all(len(t.train) == 1 and len(t.test) == 1 for t in bench.tasks)
    assert bench.probe is not None and bench.probe.test[0].mask.suffix == ".png"
    camo = bench.tasks[TASK_IDS["CAMO"]]
    assert camo.train[0].mask.parent == camo.test[0].mask.parent == tmp_path / "Camouflage/GT"
    polyp = bench.tasks[TASK_IDS["Polyp"]]
    load_pair(polyp.test[0], allow_nonbinary=True)  # JPEG masks need the opt-in


def test_unknown_layout() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown data layout 'nope'.*cosam-mini, cosam-mini-mtd, cosam-original"
    ):
        build_benchmark(Path("."), layout="nope")


def test_resolve_order_named_and_explicit() -> None:
    assert resolve_order("paper", 0) == list(PAPER_ORDER)
    assert resolve_order("reverse", 0) == [
        "Polyp",
        "CAMO",
        "MVTec_I",
        "MVTec_II",
        "MVTec_III",
        "RSDD_I",
        "RSDD_II",
        "BSData",
    ]
    assert tuple(resolve_order("reverse", 0)) == REVERSE_ORDER
    assert resolve_order(["CAMO", "BSData"], 0) == ["CAMO", "BSData"]
    assert resolve_order(" polyp , rsdd_i ", 0) == ["Polyp", "RSDD_I"]


def test_resolve_order_shuffled() -> None:
    orders = {tuple(resolve_order("shuffled", seed)) for seed in range(5)}
    assert all(sorted(o) == sorted(PAPER_ORDER) for o in orders)
    assert len(orders) > 1
    assert resolve_order("shuffled", 3) == resolve_order("shuffled", 3)


@pytest.mark.parametrize("order", ["backwards", ["BSData", "Kvasir"], "BSData,BSData", [], "COCO"])
def test_resolve_order_errors_list_valid_names(order: object) -> None:
    with pytest.raises(
        ConfigError, match=r"valid orders: paper, reverse, shuffled.*BSData, RSDD_I"
    ):
        resolve_order(order, 0)  # type: ignore[arg-type]


def test_task_ids_follow_identity_not_position(synthetic_root: Path) -> None:
    bench = build_benchmark(synthetic_root, order="reverse", include_probe=False)
    assert [t.task_id for t in bench.tasks] == [TASK_IDS[n] for n in REVERSE_ORDER]
    assert bench.probe is None


def test_caps_are_stable_subsets(synthetic_root: Path) -> None:
    full = build_benchmark(synthetic_root)
    small = build_benchmark(synthetic_root, train_cap=4, test_cap=3, probe_cap=2)
    smaller = build_benchmark(synthetic_root, train_cap=2)
    assert small == build_benchmark(synthetic_root, train_cap=4, test_cap=3, probe_cap=2)
    for f, s, ss in zip(full.tasks, small.tasks, smaller.tasks):
        assert len(s.train) == 4 and len(s.test) == 3 and len(ss.train) == 2
        assert set(s.train) <= set(f.train) and set(ss.train) <= set(s.train)
        assert [x.name for x in s.train] == sorted(x.name for x in s.train)
    assert small.probe is not None and len(small.probe.test) == 2
    with pytest.raises(ConfigError, match="train_cap=0"):
        build_benchmark(synthetic_root, train_cap=0)


# --------------------------------------------------------------------------- transforms


def _blob(h: int = 40, w: int = 60) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    mask[10:20, 30:45] = True
    return image, mask


def test_resize_eval() -> None:
    image, mask = _blob()
    img, lab = resize_eval(image, mask, 32)
    assert img.shape == (3, 32, 32) and lab.shape == (1, 32, 32)
    assert img.dtype == lab.dtype == torch.float32
    assert 0 <= img.min() and img.max() <= 255 and 0 <= lab.min() and lab.max() <= 1
    same_img, same_lab = resize_eval(image, mask, 40)
    assert same_img.shape == (3, 40, 40)
    # Stretched, not letterboxed: the blob spans rows 10..20 of 40 -> 8..16 of 32.
    rows = torch.nonzero(lab[0] > 0.5)[:, 0]
    assert rows.min() == 8 and rows.max() == 15
    flat_img, _ = resize_eval(np.full((5, 7, 3), 77, np.uint8), np.ones((5, 7), bool), 9)
    assert torch.allclose(flat_img, torch.full((3, 9, 9), 77.0))


def test_lsj_shape_padding_foreground_and_determinism() -> None:
    image, mask = _blob()
    for seed in range(20):
        img, lab = large_scale_jitter(image, mask, 64, torch.Generator().manual_seed(seed))
        assert img.shape == (3, 64, 64) and lab.shape == (1, 64, 64)
        assert (lab > 0.5).any()
        again = large_scale_jitter(image, mask, 64, torch.Generator().manual_seed(seed))
        assert torch.equal(img, again[0]) and torch.equal(lab, again[1])

    # scale 0.5 on a 40x60 image: the long side becomes 32, so the picture is 21x32 (HxW).
    img, lab = large_scale_jitter(
        image, mask, 64, torch.Generator().manual_seed(0), scale_range=(0.5, 0.5)
    )
    assert (img[:, 21:, :] == 128).all() and (img[:, :, 32:] == 128).all()
    assert (lab[:, 21:, :] == 0).all() and (lab[:, :, 32:] == 0).all()
    assert not (img[:, :21, :32] == 128).all()


def test_lsj_keeps_a_tiny_foreground_when_cropping() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    mask = np.zeros((100, 100), bool)
    mask[2:6, 90:94] = True  # a tiny corner defect that most random crops miss
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        _, lab = large_scale_jitter(image, mask, 32, g, scale_range=(2.0, 2.0))
        assert (lab > 0.5).any()


def test_lsj_keeps_a_thin_line_that_downscaling_erases() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    mask = np.zeros((200, 200), bool)
    mask[50:150, 120] = True  # 1 px wide: gone at scale 0.1 (200 -> 3 px)
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        img, lab = large_scale_jitter(image, mask, 32, g, scale_range=(0.1, 0.1))
        assert img.shape == (3, 32, 32) and (lab > 0.5).any()


def test_lsj_uses_only_the_generator() -> None:
    image, mask = _blob()
    torch.manual_seed(1)
    a = large_scale_jitter(image, mask, 48, torch.Generator().manual_seed(5))
    torch.manual_seed(2)
    b = large_scale_jitter(image, mask, 48, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# --------------------------------------------------------------------------- prompts


def test_box_from_label() -> None:
    label = torch.zeros(1, 16, 16)
    label[0, 3:7, 5:12] = 1.0
    label[0, 10, 2] = 0.4  # below 0.5: background
    assert torch.equal(box_from_label(label), torch.tensor([5.0, 3.0, 11.0, 6.0]))
    assert box_from_label(label[0]).dtype == torch.float32
    with pytest.raises(ValueError, match="no pixel > 0.5"):
        box_from_label(torch.zeros(1, 8, 8))


def test_sample_points_inside_foreground() -> None:
    label = torch.zeros(1, 16, 16)
    label[0, 3:7, 5:12] = 1.0
    points, labels = sample_points(label, 10, torch.Generator().manual_seed(0))
    assert points.shape == (10, 2) and points.dtype == torch.float32
    assert labels.dtype == torch.int64 and (labels == 1).all()
    xs, ys = points[:, 0].long(), points[:, 1].long()
    assert (label[0, ys, xs] > 0.5).all()
    assert len({(int(x), int(y)) for x, y in zip(xs, ys)}) == 10  # without replacement

    tiny = torch.zeros(1, 16, 16)
    tiny[0, 4, 4] = tiny[0, 9, 9] = 1.0
    points, _ = sample_points(tiny, 10, torch.Generator().manual_seed(0))
    assert points.shape == (10, 2) and {tuple(p.tolist()) for p in points} <= {
        (4.0, 4.0),
        (9.0, 9.0),
    }


def test_noisy_mask_only_changes_edges() -> None:
    label = torch.zeros(1, 128, 128)
    label[0, 32:96, 40:100] = 1.0
    noisy = noisy_mask(label, 64, torch.Generator().manual_seed(0))
    assert noisy.shape == (1, 64, 64) and noisy.dtype == torch.float32
    assert set(noisy.unique().tolist()) <= {0.0, 255.0}
    clean = (
        torch.nn.functional.interpolate(label[None], size=(64, 64), mode="bilinear")[0] > 0.5
    ) * 255.0
    changed = torch.nonzero(noisy != clean)
    assert len(changed) > 0
    # Rect edges at 64^2: rows 16 / 48, cols 20 / 50; the band is at most 8 px from them.
    dist_row = torch.minimum((changed[:, 1] - 16).abs(), (changed[:, 1] - 48).abs())
    dist_col = torch.minimum((changed[:, 2] - 20).abs(), (changed[:, 2] - 50).abs())
    assert (torch.minimum(dist_row, dist_col) <= 8).all()
    assert torch.equal(noisy, noisy_mask(label, 64, torch.Generator().manual_seed(0)))


def test_prompt_types_and_make_prompt() -> None:
    kinds = draw_prompt_types(300, torch.Generator().manual_seed(0))
    assert {k: kinds.count(k) for k in ("box", "points", "mask")}.keys() == set(kinds)
    assert all(kinds.count(k) > 60 for k in ("box", "points", "mask"))
    assert draw_prompt_types(5, torch.Generator(), types=("box",)) == ["box"] * 5
    with pytest.raises(ConfigError, match="noise_mask"):
        draw_prompt_types(2, torch.Generator(), types=("noise_mask",))

    label = torch.zeros(1, 64, 64)
    label[0, 10:30, 20:40] = 1.0
    g = torch.Generator().manual_seed(0)
    assert make_prompt(label, "box", g).box is not None
    pts = make_prompt(label, "points", g, n_points=4)
    assert pts.points is not None and pts.points.shape == (4, 2) and pts.box is None
    mask = make_prompt(label, "mask", g)
    assert mask.mask is not None and mask.mask.shape == (1, 16, 16)


# --------------------------------------------------------------------------- synthetic data


def test_synthetic_benchmark(synthetic_root: Path, tmp_path: Path) -> None:
    bench = build_benchmark(synthetic_root)
    assert bench.synthetic
    assert [t.name for t in bench.tasks] == list(PAPER_ORDER)
    assert [(len(t.train), len(t.test)) for t in bench.tasks] == [(12, 6)] * 8
    assert (
        bench.probe is not None
        and bench.probe.task_id == PROBE_TASK_ID
        and len(bench.probe.test) == 6
    )
    assert "generated" in (synthetic_root / "SYNTHETIC.md").read_text()
    means = []
    for task in (*bench.tasks, bench.probe):
        image, mask = load_pair(task.test[0])
        assert mask.any() and 72 <= image.shape[0] <= 120 and 72 <= image.shape[1] <= 120
        means.append(tuple(np.round(image.reshape(-1, 3).mean(0) / 8)))
    assert len(set(means)) >= 7  # domains look different

    # Same parameters: nothing is rewritten. Same seed elsewhere: identical bytes.
    marker = synthetic_root / "SYNTHETIC.md"
    stamp = marker.stat().st_mtime_ns
    make_synthetic_benchmark(synthetic_root)
    assert marker.stat().st_mtime_ns == stamp
    other = make_synthetic_benchmark(tmp_path / "again", n_train=12, n_test=6, n_probe=6)
    name = "bsdata/train/images/bsdata_train_0003.jpg"
    assert (other / name).read_bytes() == (synthetic_root / name).read_bytes()


def test_synthetic_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("real data")
    with pytest.raises(
        DataError, match=re.escape(str(tmp_path)) + r" is not empty and has no SYNTHETIC\.md"
    ):
        make_synthetic_benchmark(tmp_path)


def test_synthetic_regenerates_on_new_parameters(tmp_path: Path) -> None:
    root = make_synthetic_benchmark(tmp_path / "b", n_train=3, n_test=2, n_probe=2, size=48)
    root = make_synthetic_benchmark(root, n_train=2, n_test=1, n_probe=1, size=48)
    bench = build_benchmark(root)
    assert [(len(t.train), len(t.test)) for t in bench.tasks] == [(2, 1)] * 8


# --------------------------------------------------------------------------- real data


def test_real_cosam_mini(shared_data: Path) -> None:
    bench = build_benchmark(shared_data)
    assert not bench.synthetic
    assert bench.order == PAPER_ORDER
    assert [t.name for t in bench.tasks] == list(PAPER_ORDER)
    assert {t.name: (len(t.train), len(t.test)) for t in bench.tasks} == MINI_COUNTS
    assert bench.probe is not None and len(bench.probe.test) == MINI_PROBE_COUNT
    for task in (*bench.tasks, bench.probe):
        for split in (task.train, task.test):
            for sample in (split[:1] + split[-1:]) if split else ():
                image, mask = load_pair(sample)
                assert image.dtype == np.uint8 and image.shape[2] == 3
                assert mask.shape == image.shape[:2] and mask.sum() >= 16
    # A cap is a hashed subset, not the alphabetically first files.
    capped = build_benchmark(shared_data, train_cap=10, include_probe=False)
    bsdata = capped.tasks[0].train
    assert len(bsdata) == 10 and set(bsdata) <= set(bench.tasks[0].train)
    assert [s.name for s in bsdata] != [s.name for s in bench.tasks[0].train[:10]]


def test_cosam_mini_maps_mvtec_i_to_piped_and_cosam_mini_mtd_keeps_mtd_a(tmp_path: Path) -> None:
    """MVTec_I is piped (paper impurities) by default; cosam-mini-mtd reproduces the earlier mtd_a mapping."""
    assert LAYOUTS["cosam-mini"]["MVTec_I"].folder == "piped"
    assert LAYOUTS["cosam-mini-mtd"]["MVTec_I"].folder == "mtd_a"
    for slot in (*PAPER_ORDER, PROBE):  # every other slot is the same in both
        if slot != "MVTec_I":
            assert LAYOUTS["cosam-mini-mtd"][slot] == LAYOUTS["cosam-mini"][slot]
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "cosam-mini"
    if not (shared / "piped").is_dir() or not (shared / "mtd_a").is_dir():
        pytest.skip(f"real cosam-mini with piped and mtd_a not at {shared}")
    for layout, folder in (("cosam-mini", "piped"), ("cosam-mini-mtd", "mtd_a")):
        (task,) = build_benchmark(shared, layout, ["MVTec_I"], include_probe=False).tasks
        assert (
            task.train
            and task.test
            and {s.image.parts[-4] for s in task.train + task.test} == {folder}
        )
