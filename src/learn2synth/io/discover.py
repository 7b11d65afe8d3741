"""Finding input files, and cutting 3D volumes into the 2D slices a 2D network trains on."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from learn2synth.errors import InputError
from learn2synth.io.formats import READABLE, supported_extension

_GLOB_CHARS = "*?["


def list_files(source: str | os.PathLike) -> list[Path]:
    """Files of a supported format given by a file, a folder or a glob pattern, sorted by path.

    A folder is listed without recursion; hidden files (such as the temporary files of an interrupted write)
    and other formats are skipped. A pattern may use ``**`` to descend into sub-folders.

    Parameters
    ----------
    source : str or PathLike
        ``"scan.nii.gz"``, ``"data/labels"`` or ``"data/*/seg.mgz"``.

    Raises
    ------
    InputError
        If the path does not exist, a file has an unsupported extension, or nothing usable is found.
    """
    text = os.fspath(source)
    path = Path(text)
    if path.is_file():
        if supported_extension(path) is None:
            raise InputError(path, f"unsupported file type; supported: {', '.join(READABLE)}")
        return [path]
    if path.is_dir():
        files = _usable(path.iterdir())
        if not files:
            raise InputError(path, f"folder has no image files (supported: {', '.join(READABLE)})")
        return files
    if any(c in text for c in _GLOB_CHARS):
        files = _usable(Path(p) for p in glob.glob(text, recursive=True))
        if not files:
            raise InputError(text, "no file of a supported format matches this pattern")
        return files
    raise InputError(path, "no such file or folder")


def _usable(paths) -> list[Path]:
    return sorted(
        p for p in paths if not p.name.startswith(".") and p.is_file() and supported_extension(p) is not None
    )


def mirrored_names(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Each path relative to the deepest folder holding them all, so that outputs can mirror the input tree.

    Examples
    --------
    >>> [str(p) for p in mirrored_names(["OASIS/OAS1_0001/image.nii.gz", "OASIS/OAS1_0002/image.nii.gz"])]
    ['OAS1_0001/image.nii.gz', 'OAS1_0002/image.nii.gz']
    >>> [str(p) for p in mirrored_names(["scans/a.png"])]
    ['a.png']
    """
    absolute = [Path(os.path.abspath(p)) for p in paths]
    if not absolute:
        return []
    root = Path(os.path.commonpath([p.parent for p in absolute]))
    return [p.relative_to(root) for p in absolute]


def file_stem(path: str | os.PathLike) -> str:
    """The file name without its supported extension (``"21_training.tif"`` -> ``"21_training"``).

    Examples
    --------
    >>> file_stem("data/sub-01_T1w.nii.gz"), file_stem("21_manual1.GIF")
    ('sub-01_T1w', '21_manual1')
    """
    name = Path(path).name
    return name[: len(name) - len(supported_extension(name) or "")]


# Tokens of a stem: runs of characters between the separators "_", "-" and ".".
_TOKEN = re.compile(r"[^_.\-]+")
_DIGITS = re.compile(r"\d+")


def _prefix(k: int) -> Callable[[str], str | None]:
    def key(stem: str) -> str | None:
        tokens = list(_TOKEN.finditer(stem))
        return stem[: tokens[min(k, len(tokens)) - 1].end()] if tokens else None

    return key


def _suffix(k: int) -> Callable[[str], str | None]:
    def key(stem: str) -> str | None:
        tokens = list(_TOKEN.finditer(stem))
        return stem[tokens[-min(k, len(tokens))].start() :] if tokens else None

    return key


def _numbers(stem: str) -> str | None:
    digits = _DIGITS.findall(stem)
    return "-".join(str(int(d)) for d in digits) if digits else None


def pair_by_name(
    images: Sequence[Path], labels: Sequence[Path], where: str | os.PathLike | None = None
) -> list[tuple[Path, Path, str]]:
    """Pair image files with label files by name; returns ``(image, label, subject)`` sorted by image.

    The first of these rules that pairs **every** image with exactly one label and every label with exactly
    one image wins (names compared without extension and case):

    1. the same stem: ``sub-01.nii.gz`` with ``sub-01.png``; subject ``sub-01``;
    2. the same leading tokens (stems split on ``_``, ``-``, ``.``), as few as make each name unique on its
       side: ``21_training.tif`` with ``21_manual1.gif`` (subject ``21``), ``sub-01_T1w`` with ``sub-01_seg``
       (subject ``sub-01``);
    3. the same trailing tokens: ``img_007.png`` with ``seg_007.png`` (subject ``007``);
    4. the same numbers, ignoring zero padding: ``image1.png`` with ``mask001.png`` (subject ``1``).

    A single image and a single label are paired whatever their names. Nothing is ever paired by sorted
    order alone: a folder whose files cannot all be paired is refused.

    Parameters
    ----------
    images, labels : sequence of Path
    where : str or PathLike, optional
        What the error names (the folder holding ``images/`` and ``labels/``).

    Raises
    ------
    InputError
        One line naming up to 5 unpaired files on each side, with a hint.

    Examples
    --------
    >>> pairs = pair_by_name([Path("21_training.tif"), Path("22_training.tif")],
    ...                      [Path("22_manual1.gif"), Path("21_manual1.gif")])
    >>> [(i.name, lab.name, subject) for i, lab, subject in pairs]
    [('21_training.tif', '21_manual1.gif', '21'), ('22_training.tif', '22_manual1.gif', '22')]
    """
    images, labels = sorted(images), sorted(labels)
    image_stems, label_stems = [file_stem(p) for p in images], [file_stem(p) for p in labels]
    longest = max(len(_TOKEN.findall(s)) for s in [*image_stems, *label_stems, ""])
    rules = [lambda s: s]
    rules += [_prefix(k) for k in range(1, longest + 1)] + [_suffix(k) for k in range(1, longest + 1)]
    rules.append(_numbers)
    best: tuple[int, list, list] | None = None
    for rule in rules:
        image_keys, label_keys = [rule(s) for s in image_stems], [rule(s) for s in label_stems]
        folded_images = [k.casefold() if k else None for k in image_keys]
        folded_labels = {k.casefold(): i for i, k in enumerate(label_keys) if k}
        unique = (
            None not in folded_images
            and len(set(folded_images)) == len(images)
            and len(folded_labels) == len(labels)
        )
        if not unique:
            continue
        matched = [k for k in folded_images if k in folded_labels]
        if len(matched) == len(images) == len(labels):
            return [
                (image, labels[folded_labels[key]], subject)
                for image, key, subject in zip(images, folded_images, image_keys, strict=True)
            ]
        if best is None or len(matched) > best[0]:
            lonely_images = [p for p, k in zip(images, folded_images, strict=True) if k not in folded_labels]
            lonely_labels = [labels[i] for k, i in folded_labels.items() if k not in set(matched)]
            best = (len(matched), lonely_images, lonely_labels)
    if len(images) == len(labels) == 1:
        return [(images[0], labels[0], image_stems[0])]
    if best is None:  # no rule gives unique names: two files of one side share a stem
        for side, stems, paths in (("images", image_stems, images), ("labels", label_stems, labels)):
            folded = [s.casefold() for s in stems]
            twins = [p.name for p, f in zip(paths, folded, strict=True) if folded.count(f) > 1]
            if twins:
                raise InputError(where, f"{side} {', '.join(twins[:5])} share a name; cannot pair them by name")
    _, lonely_images, lonely_labels = best if best is not None else (0, images, labels)
    raise InputError(
        where,
        f"cannot pair images with labels by file name: {_few(lonely_images, 'image')} without a label, "
        f"{_few(lonely_labels, 'label')} without an image; give each pair the same ID "
        "(e.g. 21_training.tif and 21_manual1.gif) or list the pairs in a manifest (YAML or CSV)",
    )


def _few(paths: Sequence[Path], what: str) -> str:
    if not paths:
        return f"no {what}"
    names = ", ".join(p.name for p in paths[:5]) + (", ..." if len(paths) > 5 else "")
    return f"{len(paths)} {what}{'s' if len(paths) > 1 else ''} ({names})"


def nonempty_slices(mask, axis: int) -> list[int]:
    """Indices of the slices along ``axis`` where ``mask`` has a non-zero value.

    Examples
    --------
    >>> mask = np.zeros((2, 3, 4)); mask[:, 1, 2] = 1
    >>> nonempty_slices(mask, axis=1), nonempty_slices(mask, axis=2)
    ([1], [2])
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    other = tuple(a for a in range(3) if a != _axis(axis))
    return [int(i) for i in np.flatnonzero(mask.any(axis=other))]


def slices_3d_to_2d(array, axis: int, keep=None) -> list:
    """The 2D slices of a 3D array along ``axis`` (views), optionally only those where ``keep`` is non-empty.

    Parameters
    ----------
    array : np.ndarray or torch.Tensor
        3D array.
    axis : int
        Axis to slice along (negative counts from the end).
    keep : array-like, optional
        3D mask of the same shape (e.g. the label map): only slices where it is non-zero somewhere are kept.

    Returns
    -------
    list
        2D slices, in order along the axis.

    Examples
    --------
    >>> volume = np.arange(24).reshape(2, 3, 4)
    >>> [s.shape for s in slices_3d_to_2d(volume, axis=0)]
    [(3, 4), (3, 4)]
    >>> len(slices_3d_to_2d(volume, axis=2, keep=volume > 20))
    3
    """
    if len(array.shape) != 3:
        raise ValueError(f"expected a 3D array, got shape {tuple(array.shape)}")
    axis = _axis(axis)
    if keep is not None and tuple(np.shape(keep)) != tuple(array.shape):
        raise ValueError(
            f"keep has shape {tuple(np.shape(keep))}, expected {tuple(array.shape)} like the array"
        )
    indices = range(array.shape[axis]) if keep is None else nonempty_slices(_numpy(keep), axis)
    before = (slice(None),) * axis
    return [array[(*before, i)] for i in indices]


def _axis(axis: int) -> int:
    if not -3 <= axis < 3:
        raise ValueError(f"axis should be -3 to 2 for a 3D array, got {axis}")
    return axis % 3


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
