"""Domain registry: the eight CoSAM task slots, the COCO probe, folder layouts and task orders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cosam.data.reader import SplitSpec
from cosam.errors import ConfigError

# The eight task slots in the paper's order (figures/datasets_demo.png, dataset_info.py:314-316).
PAPER_ORDER: tuple[str, ...] = (
    "BSData",
    "RSDD_I",
    "RSDD_II",
    "MVTec_I",
    "MVTec_II",
    "MVTec_III",
    "CAMO",
    "Polyp",
)
PROBE: str = "COCO"

# A task's id is its domain's identity (its paper position), never its position in a permuted
# order, so a router or a per-task head keyed by id means the same domain under every order.
TASK_IDS: dict[str, int] = {name: i for i, name in enumerate(PAPER_ORDER)}
# The reference gives the COCO probe id 8, right after the tasks (utils/dataloader.py).
PROBE_TASK_ID: int = len(PAPER_ORDER)

# The reference's "reverse" order (dataset_info.py:318-329). It is NOT a strict reverse of
# PAPER_ORDER: the three MVTec groups and the two RSDD types keep their internal order.
REVERSE_ORDER: tuple[str, ...] = (
    "Polyp",
    "CAMO",
    "MVTec_I",
    "MVTec_II",
    "MVTec_III",
    "RSDD_I",
    "RSDD_II",
    "BSData",
)

NAMED_ORDERS: tuple[str, ...] = ("paper", "reverse", "shuffled")


@dataclass(frozen=True)
class DomainSpec:
    """One domain (task slot or probe) of a layout.

    Arguments:
      name (str): the slot name, one of PAPER_ORDER or PROBE.
      train (SplitSpec or None): the training split; None for a test-only domain (the probe).
      test (SplitSpec): the test split.
      source (str): one line saying which dataset fills the slot and whether it substitutes
        for the paper's dataset.
      folder (str): the folder, relative to the data root, that holds all of this domain's
        splits; checked first so that a missing domain gets one clear error. Empty when the
        splits share no folder (the original Polyp train and test sets).
    """

    name: str
    train: SplitSpec | None
    test: SplitSpec
    source: str
    folder: str = ""


def _mini(name: str, folder: str, source: str, has_train: bool = True) -> DomainSpec:
    def split(which: str) -> SplitSpec:
        return SplitSpec(f"{folder}/{which}/images", f"{folder}/{which}/masks", (".jpg",), ".png")

    return DomainSpec(name, split("train") if has_train else None, split("test"), source, folder)


def _side_by_side(name: str, folder: str, train: str, test: str, source: str) -> DomainSpec:
    def split(which: str) -> SplitSpec:
        return SplitSpec(f"{folder}/{which}", f"{folder}/{which}", (".jpg",), ".png")

    return DomainSpec(name, split(train), split(test), source, folder)


_COSAM_MINI: dict[str, DomainSpec] = {
    d.name: d
    for d in (
        _mini(
            "BSData", "bsdata", "BSData ball-screw-drive pitting (the paper's dataset, real subset)"
        ),
        _mini("RSDD_I", "crackforest", "CrackForest road cracks (substitute for RSDDs Type-I)"),
        _mini("RSDD_II", "neu_seg", "NEU-Seg steel-strip defects (substitute for RSDDs Type-II)"),
        _mini(
            "MVTec_I",
            "piped",
            "PIPED paper impurities, a texture, CC BY 4.0 (substitute for MVTec group 1)",
        ),
        _mini(
            "MVTec_II",
            "mvtec_loco_juice_bottle",
            "MVTec LOCO AD juice_bottle logical anomalies (MVTec-family stand-in for MVTec group 2)",
        ),
        _mini(
            "MVTec_III",
            "mtd_b",
            "magnetic-tile defects Break/Uneven (substitute for MVTec group 3)",
        ),
        _mini(
            "CAMO", "ecssd", "ECSSD salient objects (substitute for CAMO: salient, not camouflaged)"
        ),
        _mini(
            "Polyp", "polyp", "CVC-ClinicDB + 5 Kvasir-SEG test pairs (the paper used Kvasir-SEG)"
        ),
        _mini(
            PROBE,
            "natural_coco",
            "COCO 2017 coco128-seg, largest instance per image (probe, test only)",
            has_train=False,
        ),
    )
}

# The first cosam-mini mapping: MVTec_I filled by magnetic-tile defects (mtd_a), which look like
# MVTec_III's mtd_b (same material, light and camera), so no router can tell the two apart. Kept
# selectable (data.layout="cosam-mini-mtd") so that runs made before 2026-12-02 can be reproduced.
_COSAM_MINI_MTD: dict[str, DomainSpec] = {
    **_COSAM_MINI,
    "MVTec_I": _mini(
        "MVTec_I",
        "mtd_a",
        "magnetic-tile defects Blowhole/Crack/Fray (substitute for MVTec group 1)",
    ),
}

_COSAM_ORIGINAL: dict[str, DomainSpec] = {
    d.name: d
    for d in (
        _side_by_side("BSData", "BSData-main", "my_train", "my_test", "BSData (authors' archive)"),
        _side_by_side(
            "RSDD_I",
            "RSDDs/Type-I RSDDs dataset",
            "my_train",
            "my_test",
            "RSDDs Type-I express rail (authors' archive)",
        ),
        _side_by_side(
            "RSDD_II",
            "RSDDs/Type-II RSDDs dataset",
            "my_train",
            "my_test",
            "RSDDs Type-II common/heavy rail (authors' archive)",
        ),
        _side_by_side(
            "MVTec_I",
            "mvtec_groups/group1",
            "new_train",
            "new_test",
            "MVTec AD group 1 (authors' archive)",
        ),
        _side_by_side(
            "MVTec_II",
            "mvtec_groups/group2",
            "new_train",
            "new_test",
            "MVTec AD group 2 (authors' archive)",
        ),
        _side_by_side(
            "MVTec_III",
            "mvtec_groups/group3",
            "new_train",
            "new_test",
            "MVTec AD group 3 (authors' archive)",
        ),
        DomainSpec(
            "CAMO",
            SplitSpec("Camouflage/Images/Train", "Camouflage/GT", (".jpg",), ".png"),
            SplitSpec("Camouflage/Images/Test", "Camouflage/GT", (".jpg",), ".png"),
            "CAMO-COCO v1.0 Camouflage part, one shared GT folder (authors' archive)",
            "Camouflage",
        ),
        DomainSpec(
            "Polyp",
            SplitSpec("kvasir_polyp/train/images", "kvasir_polyp/train/masks", (".jpg",), ".jpg"),
            SplitSpec(
                "sessile-main-Kvasir-SEG/images", "sessile-main-Kvasir-SEG/masks", (".jpg",), ".jpg"
            ),
            "Kvasir-SEG train / Kvasir-Sessile test, JPEG masks (authors' archive)",
        ),
        DomainSpec(
            PROBE,
            None,
            SplitSpec("coco/evaluateSAM_COCO", "coco/evaluateSAM_COCO", (".jpg",), ".png"),
            "COCO evaluateSAM_COCO probe, test only (authors' archive)",
            "coco/evaluateSAM_COCO",
        ),
    )
}

LAYOUTS: dict[str, dict[str, DomainSpec]] = {
    # Real substitute data shipped as shared/data/cosam-mini: <folder>/<split>/{images,masks}.
    "cosam-mini": _COSAM_MINI,
    # The same with MVTec_I = mtd_a (magnetic tiles), the mapping of every run before 2026-12-02.
    "cosam-mini-mtd": _COSAM_MINI_MTD,
    # The authors' Google-Drive archive (protocol §1.1, §1.4). Its Polyp masks are JPEG, so
    # reading it needs data.allow_nonbinary_masks=true (load_mask(..., allow_nonbinary=True)).
    "cosam-original": _COSAM_ORIGINAL,
}
"""Folder layouts by name, each mapping a slot name (PAPER_ORDER and PROBE) to its DomainSpec.

"cosam-mini" is the real substitute benchmark in shared/data/cosam-mini (and the synthetic one),
with MVTec_I = piped (paper impurities); "cosam-mini-mtd" maps MVTec_I to mtd_a (magnetic-tile
defects) instead, as every run before 2026-12-02 did.
"cosam-original" is the authors' archive; its JPEG polyp masks need allow_nonbinary=True.
"""


def _valid_names_text(universe: Sequence[str] = PAPER_ORDER) -> str:
    return (
        f"valid orders: {', '.join(NAMED_ORDERS)}, or a list / comma-separated string of task names "
        f"from {', '.join(universe)}"
    )


def resolve_order(
    order: str | Sequence[str],
    seed: int,
    universe: Sequence[str] = PAPER_ORDER,
    reverse: Sequence[str] | None = None,
    probe: str | None = PROBE,
) -> list[str]:
    """Turn an order setting into the list of task names to train in sequence.

    Arguments:
      order (str or Sequence(str)): "paper", "reverse" (the reference's, see REVERSE_ORDER),
        "shuffled" (a permutation of PAPER_ORDER drawn from numpy.random.default_rng(seed)),
        a comma-separated string of task names, or a sequence of task names. Names match
        case-insensitively. An explicit list may hold a subset of the tasks (short runs).
      seed (int): seeds the "shuffled" order; ignored otherwise.
      universe, reverse, probe: the task names in "paper" order, the "reverse" order and the
        probe's name; the CoSAM slots by default, a user layout's otherwise (reverse defaults
        to REVERSE_ORDER for the CoSAM slots and to the reversed universe for others).

    Returns:
      (list(str)): canonical task names, no duplicates, at least one.

    Raises:
      ConfigError: unknown order or task name, a duplicate, the probe, or an empty list.
    """
    if isinstance(order, str):
        key = order.strip().lower()
        if key == "paper":
            return list(universe)
        if key == "reverse":
            if reverse is not None:
                return list(reverse)
            return list(REVERSE_ORDER) if tuple(universe) == PAPER_ORDER else list(universe)[::-1]
        if key == "shuffled":
            perm = np.random.default_rng(seed).permutation(len(universe))
            return [universe[int(i)] for i in perm]
        names = [part.strip() for part in order.split(",") if part.strip()]
    else:
        names = [str(part).strip() for part in order]

    if not names:
        raise ConfigError(f"task order {order!r} is empty; {_valid_names_text(universe)}")
    canonical = {n.lower(): n for n in universe}
    resolved: list[str] = []
    for name in names:
        if probe is not None and name.lower() == probe.lower():
            raise ConfigError(
                f"{name!r} in task order {order!r} is the zero-shot probe, evaluated after every task, "
                f"not a task to train; {_valid_names_text(universe)}"
            )
        if name.lower() not in canonical:
            raise ConfigError(
                f"unknown task order or task name {name!r} in order {order!r}; {_valid_names_text(universe)}"
            )
        resolved.append(canonical[name.lower()])
    duplicates = sorted({n for n in resolved if resolved.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"task order {order!r} names {', '.join(duplicates)} more than once; each task may appear "
            f"once; {_valid_names_text(universe)}"
        )
    return resolved
