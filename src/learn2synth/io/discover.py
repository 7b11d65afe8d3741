"""Finding input files, and cutting 3D volumes into the 2D slices a 2D network trains on."""

from __future__ import annotations

import glob
import os
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
