"""Read and write images and label maps, choosing the format from the file extension.

| extension | library | kept on read |
|---|---|---|
| ``.nii``, ``.nii.gz`` | nibabel | array, affine, header |
| ``.mgz``, ``.mgh`` | nibabel | array, affine, header |
| ``.png`` | Pillow | 2D grayscale array (8 or 16 bit) |
| ``.tif``, ``.tiff`` | tifffile | 2D array or 3D stack |
| ``.npz`` | NumPy | array ``image``, else ``label``, else the only one; ``affine`` if present |

Every write is atomic: the file is written under a temporary name in the same folder and moved into place.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from learn2synth.errors import InputError
from learn2synth.io._util import reason
from learn2synth.io.nifti import read_nibabel, write_nibabel
from learn2synth.io.npz import read_npz_volume, write_npz
from learn2synth.io.raster import read_png, read_tiff, write_png, write_tiff
from learn2synth.io.volume import Volume

SUPPORTED = (".nii", ".nii.gz", ".mgz", ".mgh", ".png", ".tif", ".tiff", ".npz")


def supported_extension(path: str | os.PathLike) -> str | None:
    """The supported extension ``path`` ends with, lower case, or None.

    Examples
    --------
    >>> supported_extension("sub-01/T1w.NII.GZ")
    '.nii.gz'
    >>> supported_extension("notes.txt") is None
    True
    """
    name = Path(path).name.lower()
    # longest first, so that ".nii.gz" wins over a shorter ending
    return next((ext for ext in sorted(SUPPORTED, key=len, reverse=True) if name.endswith(ext)), None)


def read_image(path: str | os.PathLike) -> Volume:
    """Read an image or label map from any supported format.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    Volume
        The array as stored (data type and axis order of the file), with affine and header when the
        format has them.

    Raises
    ------
    InputError
        If the file is missing, has an unsupported extension, or cannot be decoded; the message names the
        file and the problem.
    """
    path = Path(path)
    extension = _extension(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a file")
    if extension in (".nii", ".nii.gz"):
        return read_nibabel(path, "nifti")
    if extension in (".mgz", ".mgh"):
        return read_nibabel(path, "mgh")
    if extension == ".png":
        return read_png(path)
    if extension in (".tif", ".tiff"):
        return read_tiff(path)
    return read_npz_volume(path)


def write_image(path: str | os.PathLike, array, like: Volume | None = None) -> Path:
    """Write an array to any supported format, atomically.

    Parameters
    ----------
    path : str or PathLike
        Output file; its extension chooses the format. The folder must exist.
    array : array-like
        NumPy array or CPU torch tensor.
    like : Volume, optional
        Volume whose geometry the output shares (typically the input the array was computed from). For
        NIfTI/MGZ its affine and header are reused, with the data type set from ``array``; for NPZ its affine
        is stored as ``affine``; PNG and TIFF keep no geometry.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InputError
        Unsupported extension, missing folder, values the format cannot store (e.g. 2.5 in a PNG), or an
        operating system error (disk full, no permission). The existing file, if any, is then left unchanged.
    """
    path = Path(path)
    extension = _extension(path)
    if hasattr(array, "detach"):  # torch tensor, without importing torch here
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if like is not None:
        _check_like(path, array, like)
    if not path.parent.is_dir():
        raise InputError(path, f"folder {path.parent} does not exist")
    try:
        if extension in (".nii", ".nii.gz", ".mgz", ".mgh"):
            write_nibabel(path, array, like, extension)
        elif extension == ".png":
            write_png(path, array)
        elif extension in (".tif", ".tiff"):
            write_tiff(path, array)
        else:
            write_npz(path, {"image": array} if like is None else {"image": array, "affine": like.affine})
    except OSError as e:  # disk full, permission denied: the user can fix these
        raise InputError(path, f"cannot write ({reason(e)})") from e
    return path


def _extension(path: Path) -> str:
    extension = supported_extension(path)
    if extension is None:
        raise InputError(path, f"unsupported file type; supported: {', '.join(SUPPORTED)}")
    return extension


def _check_like(path: Path, array: np.ndarray, like: Volume) -> None:
    """The first three axes must match those of ``like`` (a missing trailing axis counts as size 1)."""

    def spatial(shape):
        return tuple(shape[:3]) + (1,) * (3 - len(shape[:3]))

    if spatial(array.shape) != spatial(like.array.shape):
        raise ValueError(
            f"{path}: array of shape {array.shape} cannot be written like {like.path or 'a volume'} "
            f"of shape {like.array.shape}: the geometry would not match"
        )
