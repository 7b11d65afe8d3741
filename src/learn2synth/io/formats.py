"""Read and write images and label maps, choosing the format from the file extension.

| extension | library | kept on read |
|---|---|---|
| ``.nii``, ``.nii.gz`` | nibabel | array, affine, header |
| ``.mgz``, ``.mgh`` | nibabel | array, affine, header |
| ``.png`` | Pillow | 2D grayscale array (8 or 16 bit); colour as ``colour`` says |
| ``.gif`` | Pillow (read only) | first frame, 2D; gray palette -> gray values, colour palette -> indices |
| ``.tif``, ``.tiff`` | tifffile + imagecodecs (Pillow fallback) | 2D array or 3D stack, any compression |
| ``.npz`` | NumPy | array ``image``, else ``label``, else the only one; ``affine`` if present |

Colour images (PNG, GIF, TIFF) are refused by default, or read as grayscale when their channels are equal;
``read_image(path, colour="keep")`` returns their channels on a trailing axis (``Volume.channels``), and
``"luminance"``/``"green"`` convert them (:mod:`learn2synth.io.raster`). Label maps are read with
:func:`read_label_map`, which refuses colour and can turn 0/255 masks into 0/1.

Every write is atomic: the file is written under a temporary name in the same folder and moved into place.
GIF is not written (a label map is written as PNG instead).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from learn2synth.errors import InputError
from learn2synth.io._util import reason
from learn2synth.io.nifti import read_nibabel, write_nibabel
from learn2synth.io.npz import read_npz_volume, write_npz
from learn2synth.io.raster import check_colour_mode, read_gif, read_png, read_tiff, write_png, write_tiff
from learn2synth.io.validate import binarize_if_two_valued, check_classes, check_label_map
from learn2synth.io.volume import Volume

#: Formats read and written.
SUPPORTED = (".nii", ".nii.gz", ".mgz", ".mgh", ".png", ".tif", ".tiff", ".npz")
#: Formats read but never written.
READ_ONLY = (".gif",)
#: Every format read: what :func:`supported_extension` recognizes and folders are listed for.
READABLE = SUPPORTED + READ_ONLY


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
    return next((ext for ext in sorted(READABLE, key=len, reverse=True) if name.endswith(ext)), None)


def read_image(path: str | os.PathLike, colour: str = "refuse") -> Volume:
    """Read an image or label map from any supported format.

    Parameters
    ----------
    path : str or PathLike
    colour : str
        What to do with a colour PNG, GIF or TIFF whose channels differ: ``"refuse"`` (InputError),
        ``"keep"`` (channels on a trailing axis, ``Volume.channels`` set), ``"luminance"`` or ``"green"``
        (converted to grayscale). Colour images with equal channels are grayscale unless ``"keep"``.
        NIfTI, MGZ and NPZ have no channel axis: their arrays are returned as stored.

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
    check_colour_mode(colour)
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
        return read_png(path, colour)
    if extension == ".gif":
        return read_gif(path, colour)
    if extension in (".tif", ".tiff"):
        return read_tiff(path, colour)
    return read_npz_volume(path)


def read_label_map(path: str | os.PathLike, binary: bool = False) -> Volume:
    """Read a label map and check it (:func:`check_label_map`): its array is int64, non-negative.

    Colour label maps are refused unless their three channels are equal (then read as gray): a label map
    holds one class value per pixel.

    Parameters
    ----------
    path : str or PathLike
    binary : bool
        For a two-class task (``n_classes == 2``): a mask whose values are ``{0, v}`` for one ``v`` (0/255
        as binary PNG, GIF and TIFF masks are usually saved, 0/1, bilevel) is returned as 0/1
        (:func:`binarize_if_two_valued`); any other set of values is refused, naming them.

    Returns
    -------
    Volume
        With an int64 array.

    Raises
    ------
    InputError
        Unreadable file, colour label map, non-integer/negative/NaN values, or (``binary``) more than one
        non-zero value.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> path = Path(tempfile.mkdtemp()) / "mask.png"
    >>> Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).save(path)
    >>> read_label_map(path, binary=True).array
    array([[0, 1],
           [1, 0]])
    """
    volume = read_image(path, colour="keep")
    array = volume.array
    if volume.channels:
        first = array[..., 0]
        if not all(np.array_equal(first, array[..., c]) for c in range(1, volume.channels)):
            raise InputError(
                volume.path,
                f"colour label map ({volume.channels} channels that differ); a label map holds one class "
                "value per pixel: save it as grayscale or palette indices",
            )
        array = first
    labels = check_label_map(array, volume.path)
    if binary:
        labels = check_classes(binarize_if_two_valued(labels, volume.path), 2, volume.path)
    return Volume(labels, affine=volume.affine, header=volume.header, path=volume.path, format=volume.format)


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
        Unsupported or read-only extension (``.gif``), missing folder, values the format cannot store (e.g.
        2.5 in a PNG), or an operating system error (disk full, no permission). The existing file, if any, is
        then left unchanged.
    """
    path = Path(path)
    extension = _extension(path)
    if extension in READ_ONLY:
        raise InputError(path, f"writing {extension} files is not supported; write .png instead")
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
        raise InputError(path, f"unsupported file type; supported: {', '.join(READABLE)}")
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
