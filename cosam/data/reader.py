"""Folder reader: pair images with masks and decode them into numpy arrays.

A split is one folder of images and one folder of masks (possibly the same folder). An image and
its mask share a file stem. Every problem with the files raises :class:`cosam.errors.DataError`
with a message that names the file or folder, what was expected and how to fix it.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cosam.errors import DataError

LOGGER = logging.getLogger(__name__)

# How many offending files an error message lists before it says "and N more".
_MAX_LISTED = 3


@dataclass(frozen=True)
class SplitSpec:
    """Where one split of one domain lives, relative to the data root.

    Arguments:
      image_dir (str): folder of the images, relative to the data root.
      mask_dir (str): folder of the masks, relative to the data root. It may equal image_dir;
        then the files with mask_ext in that folder are masks, not images.
      image_exts (tuple(str)): image file extensions with the dot, e.g. (".jpg",). Matched
        case-insensitively.
      mask_ext (str): mask file extension with the dot, e.g. ".png". Matched case-insensitively.
    """

    image_dir: str
    mask_dir: str
    image_exts: tuple[str, ...]
    mask_ext: str


@dataclass(frozen=True)
class SamplePath:
    """One image / mask pair on disk.

    Arguments:
      image (Path): the image file.
      mask (Path): the mask file, same stem as the image.
      domain (str): the domain (task slot) name, e.g. "BSData".
      split (str): "train" or "test".
      name (str): the shared file stem.
    """

    image: Path
    mask: Path
    domain: str
    split: str
    name: str


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be used as a folder, as a phrase that follows its name, or None.

    Tells apart a missing folder, a broken or looping symbolic link, a file, and a folder (or a
    parent) that cannot be read for lack of permission.
    """
    folder = Path(folder)
    try:
        st = folder.stat()  # follows symbolic links
    except FileNotFoundError:
        if folder.is_symlink():
            return f"is a broken symbolic link (its target {os.readlink(folder)} does not exist)"
        return "does not exist"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link that loops (it points, directly or through other links, to itself)"
        if exc.errno == errno.EACCES:
            return "cannot be reached: permission denied on a parent folder"
        if exc.errno == errno.ENOTDIR:
            return "does not exist (a parent in its path is a file)"
        return f"cannot be read ({exc.strerror or exc})"
    if not stat.S_ISDIR(st.st_mode):
        return "is a file, not a folder"
    try:
        with os.scandir(folder):
            pass
    except PermissionError:
        return "is not readable (permission denied); fix its permissions, e.g. chmod u+rx"
    except OSError as exc:
        return f"cannot be listed ({exc.strerror or exc})"
    return None


def check_root(root: Path) -> Path:
    """Return root as a Path, or raise DataError when the data root is not a readable folder."""
    root = Path(root)
    problem = folder_problem(root)
    if problem is not None:
        raise DataError(
            f"data root {root} {problem}; expected the benchmark folder "
            f"(e.g. cosam-mini with one sub-folder per domain); fix: set COSAM_DATA or data.root "
            f"to the folder that holds the data"
        )
    return root


def _list_dir(folder: Path, kind: str, domain: str, split: str) -> list[Path]:
    """The entries of ``folder``, sorted; an unreadable folder is a DataError that says so."""
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(
            f"{kind} folder {folder} of domain {domain!r}, split {split!r} cannot be listed: "
            f"{exc.strerror or exc}; fix: make it readable (e.g. chmod u+rx {folder})"
        ) from None


def _listed(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:_MAX_LISTED])
    extra = len(paths) - _MAX_LISTED
    return shown + (f" and {extra} more" if extra > 0 else "")


def list_samples(root: Path, spec: SplitSpec, domain: str, split: str) -> list[SamplePath]:
    """List the image / mask pairs of one split, sorted by file stem.

    The order never depends on the file system (unlike the reference's unsorted glob), so the
    same folder always gives the same list. Files whose name starts with "." (editor and macOS
    metadata files) are ignored. Masks without an image are logged as a warning and skipped.

    Arguments:
      root (Path): the data root.
      spec (SplitSpec): the folders and extensions of this split.
      domain (str): the domain name, copied into each SamplePath and used in messages.
      split (str): the split name, copied into each SamplePath and used in messages.

    Returns:
      (list(SamplePath)): the pairs, sorted by stem; never empty.

    Raises:
      DataError: the root or a folder is missing, an image has no mask, two images share a stem,
        or the split holds no image.
    """
    root = check_root(root)
    image_dir = root / spec.image_dir
    mask_dir = root / spec.mask_dir
    for folder, kind in ((image_dir, "image"), (mask_dir, "mask")):
        problem = folder_problem(folder)
        if problem is not None and problem.startswith("is not readable"):
            raise DataError(
                f"{kind} folder {folder} of domain {domain!r}, split {split!r} {problem} {folder}"
            )
        if problem is not None:
            raise DataError(
                f"{kind} folder {folder} of domain {domain!r}, split {split!r} {problem}; "
                f"expected it under the data root {root}; fix: put the {split} {kind}s there or "
                f"point data.root / COSAM_DATA at a folder with this layout"
            )

    image_exts = {e.lower() for e in spec.image_exts}
    mask_ext = spec.mask_ext.lower()
    same_folder = image_dir.resolve() == mask_dir.resolve()

    images: dict[str, Path] = {}
    for path in _list_dir(image_dir, "image", domain, split):
        suffix = path.suffix.lower()
        if path.name.startswith(".") or not path.is_file() or suffix not in image_exts:
            continue
        if same_folder and suffix == mask_ext:
            continue
        if path.stem in images:
            raise DataError(
                f"two images of domain {domain!r}, split {split!r} share the stem {path.stem!r}: "
                f"{images[path.stem]} and {path}; expected one image per stem so that each has one "
                f"mask; fix: remove or rename one of them"
            )
        images[path.stem] = path

    mask_files = [
        p
        for p in _list_dir(mask_dir, "mask", domain, split)
        if not p.name.startswith(".") and p.is_file()
    ]
    masks: dict[str, Path] = {p.stem: p for p in mask_files if p.suffix.lower() == mask_ext}

    if not images:
        raise DataError(
            f"no images with extension {'/'.join(sorted(image_exts))} in {image_dir} "
            f"(domain {domain!r}, split {split!r}); fix: put the images there or check the "
            f"layout (data.layout) and data.root"
        )

    missing = [images[s] for s in sorted(images) if s not in masks]
    if missing:
        first = missing[0]
        # a mask saved with another extension (e.g. .jpg) is named, not reported as absent
        other = {
            p.stem: p
            for p in mask_files
            if p.suffix.lower() != mask_ext and p != images.get(p.stem)
        }
        found = [other[p.stem] for p in missing if p.stem in other]
        if found:
            raise DataError(
                f"the mask of image {images[found[0].stem]} (domain {domain!r}, split {split!r}) is {found[0]}, with "
                f"the extension {found[0].suffix} instead of {spec.mask_ext}: expected "
                f"{mask_dir / (found[0].stem + spec.mask_ext)}; "
                f"{len(found)} mask(s) have another extension ({_listed(found)}); masks must be {spec.mask_ext} "
                f"files (JPEG compression also makes a mask non-binary); fix: re-save them as {spec.mask_ext} with "
                f"values 0 and 255"
            )
        raise DataError(
            f"image {first} (domain {domain!r}, split {split!r}) has no mask: expected "
            f"{mask_dir / (first.stem + spec.mask_ext)}; {len(missing)} image(s) lack a mask "
            f"({_listed(missing)}); fix: add the masks or remove those images"
        )

    orphans = [masks[s] for s in sorted(masks) if s not in images]
    if orphans:
        LOGGER.warning(
            "%d mask(s) in %s have no image and are ignored (domain %r, split %r): %s",
            len(orphans),
            mask_dir,
            domain,
            split,
            _listed(orphans),
        )

    return [
        SamplePath(image=images[s], mask=masks[s], domain=domain, split=split, name=s)
        for s in sorted(images)
    ]


def _open_as_uint8(path: Path, kind: str) -> np.ndarray:
    """Decode an image file to uint8, (H, W) or (H, W, C); 16-bit data is scaled to 0..255."""
    try:
        with Image.open(path) as img:
            # load() decodes every byte, so a truncated file fails here and not later. PIL's
            # ImageFile.LOAD_TRUNCATED_IMAGES is deliberately left False for the same reason.
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
                wide = np.asarray(img, dtype=np.float64)
                # 16-bit sources span 0..65535; a 32-bit "I" image whose values fit in a byte is
                # already 8-bit data stored wide, so it is kept as is.
                if mode.startswith("I;16") or wide.max(initial=0.0) > 255.0:
                    wide = wide * (255.0 / 65535.0)
                return np.clip(np.rint(wide), 0, 255).astype(np.uint8)
            if mode == "1":
                img = img.convert("L")
            elif mode == "P":
                # Same as skimage.io.imread (the reference reader): palettes become RGB(A).
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif mode not in ("L", "LA", "RGB", "RGBA"):
                img = img.convert("RGB")
            return np.asarray(img, dtype=np.uint8).copy()
    except PermissionError:
        raise DataError(
            f"cannot read {kind} {path}: permission denied; fix: make the file readable (e.g. chmod a+r "
            f"{path}) or remove this image / mask pair"
        ) from None
    except FileNotFoundError:
        raise DataError(
            f"{kind} {path} disappeared while the data was read; fix: do not change the data "
            f"folder during a run"
        ) from None
    except Exception as exc:  # PIL decoders raise OSError, SyntaxError, ValueError, EOFError ...
        raise DataError(
            f"cannot read {kind} {path}: {type(exc).__name__}: {exc}; expected a complete, readable "
            f"image file; fix: re-export the file or remove this image / mask pair"
        ) from exc


def load_image(path: Path) -> np.ndarray:
    """Read an image as RGB.

    Greyscale is replicated to 3 channels, alpha is dropped, 16-bit data is scaled to 0..255.
    EXIF orientation is not applied, like the reference reader, so images stay aligned with
    their masks.

    Arguments:
      path (Path): the image file.

    Returns:
      (np.ndarray): uint8 array of shape HxWx3.

    Raises:
      DataError: the file is missing, corrupt or truncated.
    """
    arr = _open_as_uint8(Path(path), "image")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 2:  # grey + alpha
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif arr.shape[2] >= 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def load_mask(
    path: Path,
    expected_hw: tuple[int, int] | None = None,
    threshold: int = 127,
    allow_nonbinary: bool = False,
    *,
    image_path: Path | None = None,
) -> np.ndarray:
    """Read a binary mask.

    A multi-channel mask keeps channel 0 (as the reference does). Foreground is value > threshold
    on the 0..255 scale (16-bit masks are scaled to 0..255 first).

    Arguments:
      path (Path): the mask file.
      expected_hw (tuple(int, int) or None): the (H, W) of the image; a mask of another size
        raises DataError.
      threshold (int): foreground is value > threshold.
      allow_nonbinary (bool): accept masks with more than two distinct values (e.g. JPEG masks)
        and binarise them with the threshold.
      image_path (Path or None): the image of this mask, named in the size-mismatch message.

    Returns:
      (np.ndarray): bool array of shape HxW.

    Raises:
      DataError: the file is corrupt, its size differs from expected_hw, it is not binary
        (unless allow_nonbinary) or it has no foreground pixel.
    """
    path = Path(path)
    arr = _open_as_uint8(path, "mask")
    if arr.ndim == 3:
        arr = arr[:, :, 0]
    height, width = arr.shape

    if expected_hw is not None and (height, width) != tuple(expected_hw):
        exp_h, exp_w = expected_hw
        image_txt = f"image {image_path}" if image_path is not None else "its image"
        raise DataError(
            f"mask {path} is {width}x{height} (WxH) but {image_txt} is {exp_w}x{exp_h}; expected "
            f"the mask to have the image's size; fix: re-save the mask at the image size"
        )

    counts = np.bincount(arr.ravel(), minlength=256)
    n_values = int(np.count_nonzero(counts))
    if n_values > 2 and not allow_nonbinary:
        raise DataError(
            f"mask {path} is not binary: it has {n_values} distinct values (JPEG-compressed masks "
            f"look like this); expected two values such as 0 and 255; fix: re-save it as a PNG "
            f"with values 0 and 255, or set data.allow_nonbinary_masks=true to binarise it as "
            f"value > {threshold}"
        )

    mask = arr > threshold
    if not mask.any():
        largest = int(np.flatnonzero(counts)[-1])
        raise DataError(
            f"mask {path} is empty: no pixel is > {threshold} (its largest value is {largest}); "
            f"expected at least one foreground pixel with value 255; fix: remove this image / mask "
            f"pair or fix the mask"
        )
    return mask


def load_pair(sample: SamplePath, allow_nonbinary: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read one image and its mask and check that their sizes agree.

    Arguments:
      sample (SamplePath): the pair.
      allow_nonbinary (bool): passed to load_mask.

    Returns:
      image (np.ndarray): uint8 array of shape HxWx3.
      mask (np.ndarray): bool array of shape HxW.

    Raises:
      DataError: see load_image and load_mask.
    """
    image = load_image(sample.image)
    mask = load_mask(
        sample.mask,
        expected_hw=(image.shape[0], image.shape[1]),
        allow_nonbinary=allow_nonbinary,
        image_path=sample.image,
    )
    return image, mask
