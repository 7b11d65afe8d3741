"""Checks that an image or label map read from a user's file can be used, with messages naming the file."""

from __future__ import annotations

import os

import numpy as np

from learn2synth.errors import InputError


def check_image(array: np.ndarray, path: str | os.PathLike | None, ndim: int | None = None) -> np.ndarray:
    """Check that an image is numeric, finite and has ``ndim`` dimensions.

    Parameters
    ----------
    array : np.ndarray
    path : str, PathLike or None
        File the image came from, for the message.
    ndim : int, optional
        Expected number of dimensions.

    Returns
    -------
    np.ndarray
        The same array.

    Raises
    ------
    InputError
        ``"a.nii.gz: image has NaN values (3 voxels)"`` and the like.

    Examples
    --------
    >>> check_image(np.array([0.0, np.inf]), "a.nii.gz")
    Traceback (most recent call last):
    ...
    learn2synth.errors.InputError: a.nii.gz: image has infinite values (1 voxel)
    """
    array = np.asarray(array)
    _check_ndim(array, path, ndim, "image")
    if array.dtype.kind not in "biuf":
        raise InputError(path, f"image has {array.dtype} values, expected numbers")
    _check_finite(array, path, "image")
    return array


def check_label_map(array: np.ndarray, path: str | os.PathLike | None, ndim: int | None = None) -> np.ndarray:
    """Check that a label map holds non-negative integers (floats with integer values are fine), as int64.

    Parameters
    ----------
    array : np.ndarray
    path : str, PathLike or None
        File the label map came from, for the message.
    ndim : int, optional
        Expected number of dimensions.

    Returns
    -------
    np.ndarray
        The labels as int64.

    Raises
    ------
    InputError
        ``"labels/a.nii.gz: label map has non-integer values (e.g. 2.5)"`` and the like.

    Examples
    --------
    >>> check_label_map(np.array([0.0, 2.0, 41.0]), "a.nii.gz")
    array([ 0,  2, 41])
    >>> check_label_map(np.array([0, -1]), "a.nii.gz")
    Traceback (most recent call last):
    ...
    learn2synth.errors.InputError: a.nii.gz: label map has negative values (e.g. -1)
    """
    array = np.asarray(array)
    _check_ndim(array, path, ndim, "label map")
    if array.dtype.kind not in "biuf":
        raise InputError(path, f"label map has {array.dtype} values, expected integers")
    if array.dtype.kind == "f":
        _check_finite(array, path, "label map")
        fractional = array != np.round(array)
        if fractional.any():
            raise InputError(path, f"label map has non-integer values (e.g. {_example(array[fractional])})")
        if array.size and array.max() > np.iinfo(np.int64).max:
            raise InputError(path, f"label map has values too large for int64 (e.g. {array.max():g})")
    elif array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        raise InputError(path, f"label map has values too large for int64 (e.g. {array.max()})")
    negative = array < 0
    if negative.any():
        raise InputError(path, f"label map has negative values (e.g. {_example(array[negative])})")
    return array.astype(np.int64)


def binarize_if_two_valued(labels, path: str | os.PathLike | None = None):
    """A binary mask as 0/1: a label map whose values are ``{0, v}`` for a single ``v > 0`` (0/255 as binary
    PNG, GIF and TIFF masks are usually saved, 0/1, or bilevel images) gets 1 wherever it is ``v``.

    Meant for two-class tasks (``n_classes == 2``), where a mask's foreground is class 1 whatever value it was
    saved with. A label map with more distinct values (or a negative one) is returned unchanged, for
    :func:`check_classes` to refuse with the values named; an all-zero map stays all zero.

    Parameters
    ----------
    labels : np.ndarray or torch.Tensor
        Integer (or boolean) label map, any shape.
    path : str, PathLike or None
        File the labels came from (kept for symmetry with the other checks; nothing is raised here).

    Returns
    -------
    np.ndarray or torch.Tensor
        0/1 with the input's data type (``uint8`` for a boolean input), or the input itself.

    Examples
    --------
    >>> binarize_if_two_valued(np.array([0, 255, 255, 0], np.uint8))
    array([0, 1, 1, 0], dtype=uint8)
    >>> binarize_if_two_valued(np.array([0, 1, 2]))  # not a mask: left for check_classes
    array([0, 1, 2])
    """
    if hasattr(labels, "detach"):  # torch tensor, without importing torch here
        if not _mask_values(labels.unique().tolist()):
            return labels
        mask = labels != 0
        return mask if str(labels.dtype) == "torch.bool" else mask.to(labels.dtype)
    labels = np.asarray(labels)
    if not _mask_values(np.unique(labels).tolist()):
        return labels
    return (labels != 0).astype(np.uint8 if labels.dtype == bool else labels.dtype)


def _mask_values(values: list) -> bool:
    """Whether sorted distinct values are those of a mask: ``[]``, ``[v]`` or ``[0, v]`` with ``v >= 0``."""
    return len(values) <= 2 and all(v >= 0 for v in values) and (len(values) < 2 or values[0] == 0)


def check_classes(labels, n_classes: int, path: str | os.PathLike | None = None):
    """Check that every label value is a class of the task, ``0 .. n_classes - 1``, naming those that are not.

    Call it on real labeled data before training (after any label mapping), so that a label set that does not
    fit ``data.n_classes`` stops the run with the offending values, not with an index error mid-training.

    Parameters
    ----------
    labels : np.ndarray or torch.Tensor
        Integer label map (after :func:`check_label_map` and any mapping).
    n_classes : int
        Number of classes of the network.
    path : str, PathLike or None
        File the labels came from, for the message.

    Returns
    -------
    The same labels.

    Raises
    ------
    InputError
        ``"seg.png: label values [3, 255] are outside the 2 classes 0..1 ..."`` with a hint.

    Examples
    --------
    >>> check_classes(np.array([0, 1, 3, 255]), 2, "seg.png")
    Traceback (most recent call last):
    ...
    learn2synth.errors.InputError: seg.png: label values [3, 255] are outside the 2 classes 0..1; set data...
    """
    if hasattr(labels, "detach"):
        values = labels.unique().detach().cpu().numpy()
    else:
        values = np.unique(np.asarray(labels))
    bad = values[(values < 0) | (values >= n_classes)]
    if bad.size:
        shown = ", ".join(_example(bad[i : i + 1]) for i in range(min(bad.size, 10)))
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        hint = (
            "set data.n_classes to cover them, or map them to classes with data.real_label_mapping"
            if bad.min() >= 0
            else "labels must be non-negative"
        )
        raise InputError(
            path, f"label values [{shown}{more}] are outside the {n_classes} classes 0..{n_classes - 1}; {hint}"
        )
    return labels


def check_pair(
    image, label, image_path: str | os.PathLike | None, label_path: str | os.PathLike | None
) -> None:
    """Check that an image and its label map have the same shape.

    Raises
    ------
    InputError
        Naming the label map, and the image in the message.

    Examples
    --------
    >>> check_pair(np.zeros((4, 5)), np.zeros((4, 6)), "img/a.png", "b.png")
    Traceback (most recent call last):
    ...
    learn2synth.errors.InputError: b.png: label map has shape (4, 6) but its image img/a.png has shape (4, 5)
    """
    if tuple(np.shape(image)) != tuple(np.shape(label)):
        raise InputError(
            label_path,
            f"label map has shape {tuple(np.shape(label))} but its image {os.fspath(image_path or 'image')} "
            f"has shape {tuple(np.shape(image))}",
        )


def _check_ndim(array: np.ndarray, path, ndim: int | None, what: str) -> None:
    if ndim is not None and array.ndim != ndim:
        raise InputError(path, f"expected a {ndim}D {what}, got shape {array.shape} ({array.ndim}D)")


def _check_finite(array: np.ndarray, path, what: str) -> None:
    if array.dtype.kind != "f":
        return
    nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    if nan:
        raise InputError(path, f"{what} has NaN values ({_voxels(nan)})")
    if inf:
        raise InputError(path, f"{what} has infinite values ({_voxels(inf)})")


def _voxels(count: int) -> str:
    return f"{count} voxel" if count == 1 else f"{count} voxels"


def _example(values: np.ndarray) -> str:
    value = values.flat[0]
    return f"{value:g}" if isinstance(value, np.floating) else str(value)
