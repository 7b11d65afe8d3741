"""The in-memory image: an array with the geometry and metadata it was read with."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from learn2synth.errors import InputError


@dataclass(eq=False)
class Volume:
    """An image or label map and where it sits in space.

    Parameters
    ----------
    array : np.ndarray
        Voxel values, in the axis order of the file: ``(X, Y, Z[, ...])`` for NIfTI/MGZ,
        ``(rows, cols)`` for PNG, ``(rows, cols)`` or ``(slices, rows, cols)`` for TIFF.
    affine : np.ndarray
        4x4 voxel-to-world matrix. Identity when the format stores none (PNG, TIFF, NPZ without ``affine``).
    header : object or None
        The nibabel header (NIfTI, MGZ), kept so that outputs can be written ``like`` their input.
    path : Path or None
        File the volume was read from.
    format : str or None
        ``"nifti"``, ``"mgh"``, ``"png"``, ``"tiff"`` or ``"npz"``.
    """

    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    header: Any = None
    path: Path | None = None
    format: str | None = None

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size along each spatial axis (at most 3), from the columns of the affine.

        Examples
        --------
        >>> Volume(np.zeros((4, 5, 6)), affine=np.diag([0.5, 1.0, 2.0, 1.0])).spacing
        (0.5, 1.0, 2.0)
        >>> Volume(np.zeros((4, 5))).spacing
        (1.0, 1.0)
        """
        n = min(self.array.ndim, 3)
        sizes = np.sqrt((np.asarray(self.affine, dtype=float)[:3, :n] ** 2).sum(axis=0))
        return tuple(float(s) for s in sizes)


def squeeze_2d(image: Volume | np.ndarray) -> Volume | np.ndarray:
    """Return a 2D view of a slice stored as a 3D volume with one singleton axis, e.g. ``(X, Y, 1)``.

    A 2D input is returned unchanged. When the singleton axis is not the last one, the affine columns are
    reordered so that the 2D axes come first and ``spacing`` stays right.

    Parameters
    ----------
    image : Volume or np.ndarray

    Returns
    -------
    Volume or np.ndarray
        Same kind as the input.

    Raises
    ------
    InputError
        If the image is not 2D and has no singleton spatial axis.

    Examples
    --------
    >>> squeeze_2d(np.zeros((4, 5, 1))).shape
    (4, 5)
    >>> squeeze_2d(Volume(np.zeros((4, 1, 6)), affine=np.diag([1.0, 2.0, 3.0, 1.0]))).spacing
    (1.0, 3.0)
    """
    is_volume = isinstance(image, Volume)
    array = image.array if is_volume else np.asarray(image)
    if array.ndim == 2:
        return image
    singletons = [a for a in range(3) if array.ndim == 3 and array.shape[a] == 1]
    if not singletons:
        path = image.path if is_volume else None
        raise InputError(
            path, f"expected a 2D image (or a 3D one with a single slice), got shape {array.shape}"
        )
    axis = 2 if 2 in singletons else singletons[0]
    squeezed = np.take(array, 0, axis=axis)
    if not is_volume:
        return squeezed
    kept = [a for a in range(3) if a != axis]
    affine = np.asarray(image.affine)[:, [*kept, axis, 3]]
    return replace(image, array=squeezed, affine=affine)
