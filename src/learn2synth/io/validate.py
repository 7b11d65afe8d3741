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
