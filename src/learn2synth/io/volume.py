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
        ``"nifti"``, ``"mgh"``, ``"png"``, ``"gif"``, ``"tiff"`` or ``"npz"``.
    channels : int or None
        Number of channels on the **last** axis of ``array`` (a colour image read with ``colour="keep"``:
        ``(rows, cols, C)``, or ``(slices, rows, cols, C)`` for a TIFF stack), or None when the array has no
        channel axis (every grayscale image and label map). See :func:`to_channels_first` and
        :func:`to_grayscale`.
    """

    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    header: Any = None
    path: Path | None = None
    format: str | None = None
    channels: int | None = None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The shape without the channel axis.

        Examples
        --------
        >>> Volume(np.zeros((4, 5, 3)), channels=3).spatial_shape, Volume(np.zeros((4, 5, 3))).spatial_shape
        ((4, 5), (4, 5, 3))
        """
        return tuple(self.array.shape[:-1] if self.channels else self.array.shape)

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
        n = min(len(self.spatial_shape), 3)
        sizes = np.sqrt((np.asarray(self.affine, dtype=float)[:3, :n] ** 2).sum(axis=0))
        return tuple(float(s) for s in sizes)


#: What the readers do with a colour image (PNG, GIF, TIFF): see :mod:`learn2synth.io.raster`.
COLOUR_MODES = ("refuse", "keep", "luminance", "green")

#: ITU-R BT.601 luma weights, as Pillow's ``convert("L")`` uses.
LUMINANCE = (0.299, 0.587, 0.114)


def to_channels_first(image: Volume | np.ndarray, channels: int | None = None) -> np.ndarray:
    """The array with its channels first, ``(C, *spatial)``, as a network takes it; ``(1, *spatial)`` when it
    has no channel axis.

    Parameters
    ----------
    image : Volume or np.ndarray
        A Volume (its ``channels`` tells whether the last axis holds channels), or an array.
    channels : int, optional
        For an array: the number of channels on its last axis, or None when it has none.

    Examples
    --------
    >>> to_channels_first(Volume(np.zeros((4, 5, 3)), channels=3)).shape
    (3, 4, 5)
    >>> to_channels_first(np.zeros((4, 5))).shape
    (1, 4, 5)
    """
    if isinstance(image, Volume):
        array, channels = image.array, image.channels
    else:
        array = np.asarray(image)
    if not channels:
        return array[None]
    if array.shape[-1] != channels:
        raise ValueError(f"expected {channels} channels on the last axis, got shape {array.shape}")
    return np.moveaxis(array, -1, 0)


def to_grayscale(image: Volume, method: str = "luminance") -> Volume:
    """A single-channel copy of a colour Volume (a grayscale one is returned as is).

    Parameters
    ----------
    image : Volume
        Read with ``colour="keep"``: RGB channels on the last axis.
    method : str
        ``"luminance"``: 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601, as Pillow and most viewers), as float32.
        ``"green"``: the green channel, in the stored data type; the usual choice for retinal fundus
        photographs, where vessels have the most contrast in green.

    Examples
    --------
    >>> rgb = Volume(np.array([[[10, 200, 40]]], np.uint8), channels=3)
    >>> to_grayscale(rgb, "green").array, to_grayscale(rgb).array.round(2)
    (array([[200]], dtype=uint8), array([[124.95]], dtype=float32))
    """
    if not image.channels:
        return image
    if method not in ("luminance", "green"):
        raise ValueError(f"method should be 'luminance' or 'green', got {method!r}")
    if image.channels < 3:
        raise InputError(image.path, f"expected RGB channels to convert to grayscale, got {image.channels}")
    rgb = image.array[..., :3]
    if method == "green":
        gray = np.ascontiguousarray(rgb[..., 1])
    else:
        gray = (rgb.astype(np.float32) * np.asarray(LUMINANCE, np.float32)).sum(axis=-1, dtype=np.float32)
    return replace(image, array=gray, channels=None)


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
    if array.ndim == 2 or (is_volume and image.channels and array.ndim == 3):
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
