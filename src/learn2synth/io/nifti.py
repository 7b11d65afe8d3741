"""NIfTI (``.nii``, ``.nii.gz``) and FreeSurfer MGH (``.mgz``, ``.mgh``) files through nibabel.

The affine and the whole header are kept, so an output written ``like`` its input has the same geometry,
voxel sizes, qform/sform codes and description; only the data type follows the new array.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.freesurfer.mghformat import MGHError, MGHHeader, MGHImage
from nibabel.spatialimages import HeaderDataError

from learn2synth.errors import InputError
from learn2synth.io._util import native_byte_order, reason
from learn2synth.io.atomic import atomic_path
from learn2synth.io.volume import Volume

# What nibabel, gzip and numpy raise on a corrupted or truncated file.
_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    struct.error,
    ImageFileError,
    HeaderDataError,
    MGHError,
)

_NAMES = {"nifti": "NIfTI", "mgh": "MGH/MGZ"}


def read_nibabel(path: Path, fmt: str) -> Volume:
    """Read a NIfTI or MGH/MGZ file; ``fmt`` is ``"nifti"`` or ``"mgh"``.

    The array keeps its stored data type, unless the header asks for scaling (``scl_slope``), in which
    case nibabel returns the scaled floating-point values.
    """
    try:
        if fmt == "mgh":
            img = MGHImage.from_filename(path)
        else:
            img = nib.load(
                path, mmap=False
            )  # no memory map: the file may be replaced while we hold the array
            if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
                raise InputError(path, f"not a NIfTI file (nibabel reads it as {type(img).__name__})")
        array = np.asarray(img.dataobj)
    except _READ_ERRORS as e:
        raise InputError(
            path, f"cannot read: corrupted, truncated or not a {_NAMES[fmt]} file ({reason(e)})"
        ) from e
    return Volume(
        array=native_byte_order(array), affine=np.array(img.affine), header=img.header, path=path, format=fmt
    )


def write_nibabel(path: Path, array: np.ndarray, like: Volume | None, extension: str) -> None:
    """Write ``array`` to ``path`` atomically; ``extension`` is ``.nii``, ``.nii.gz``, ``.mgz`` or ``.mgh``.

    With ``like``, its affine is used and, when it comes from the same format family, a copy of its header.
    The data type is chosen from the array (see :func:`nifti_dtype`, :func:`mgh_dtype`).
    """
    fmt = "mgh" if extension in (".mgz", ".mgh") else "nifti"
    affine = np.eye(4) if like is None else np.asarray(like.affine, dtype=float)
    header = None if like is None else like.header
    if fmt == "mgh":
        if array.ndim < 3:  # MGH stores at least 3 dimensions
            array = array.reshape(array.shape + (1,) * (3 - array.ndim))
        dtype = mgh_dtype(array, path)
        img = MGHImage(
            array.astype(dtype, copy=False), affine, header if isinstance(header, MGHHeader) else None
        )
    else:
        dtype = nifti_dtype(array)
        cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        if not isinstance(header, nib.Nifti1Header):  # Nifti2Header is a subclass
            header = None
        img = cls(array.astype(dtype, copy=False), affine, header, dtype=dtype)
    img.set_data_dtype(dtype)
    with atomic_path(path, extension) as tmp:  # nibabel picks format and compression from the name
        img.to_filename(tmp)


def nifti_dtype(array: np.ndarray) -> np.dtype:
    """Data type to store ``array`` as in NIfTI: its own, except bool -> uint8, float16 -> float32, and
    64-bit integers -> the smallest of uint8/int16/int32/int64/uint64 holding the values (other tools read
    64-bit integer NIfTI poorly).

    Examples
    --------
    >>> nifti_dtype(np.array([0, 41, 300]))
    dtype('int16')
    >>> nifti_dtype(np.zeros(3, np.float32))
    dtype('float32')
    """
    dtype = array.dtype
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "iu" and dtype.itemsize == 8:
        return _smallest_int(array, (np.uint8, np.int16, np.int32, np.int64, np.uint64))
    return dtype


def mgh_dtype(array: np.ndarray, path: Path | None = None) -> np.dtype:
    """Data type to store ``array`` as in MGH, which knows uint8, int16, uint16, int32 and float32 only.

    Other integer types get the smallest of uint8/int16/int32 holding the values; floats become float32.

    Raises
    ------
    InputError
        If the array holds integers beyond int32, or complex values.

    Examples
    --------
    >>> mgh_dtype(np.array([0, 41, 300]))
    dtype('int16')
    >>> mgh_dtype(np.zeros(3))
    dtype('float32')
    """
    dtype = array.dtype
    if dtype in (np.uint8, np.int16, np.uint16, np.int32, np.float32):
        return dtype
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype.kind == "f":
        return np.dtype(np.float32)
    if dtype.kind in "iu":
        found = _smallest_int(array, (np.uint8, np.int16, np.int32))
        if found is not None:
            return found
        raise InputError(
            path, "values exceed the int32 range, the largest integers MGZ can store; use .nii.gz"
        )
    raise InputError(path, f"MGZ cannot store {dtype} data")


def _smallest_int(array: np.ndarray, candidates) -> np.dtype | None:
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for candidate in candidates:
        info = np.iinfo(candidate)
        if info.min <= lo and hi <= info.max:
            return np.dtype(candidate)
    return None
