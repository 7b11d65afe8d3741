"""NumPy ``.npz`` archives of named arrays (``image``, ``label``, optionally a 4x4 ``affine``)."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from learn2synth.errors import InputError
from learn2synth.io._util import native_byte_order, reason
from learn2synth.io.atomic import atomic_path
from learn2synth.io.volume import Volume

_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` archive, by name.

    Pickled (object) arrays are refused: loading them could run code from the file.

    Raises
    ------
    InputError
        If the file is missing, corrupted, truncated or holds object arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist" if not path.exists() else "is a folder, expected a file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except _READ_ERRORS as e:
        raise InputError(path, f"cannot read: corrupted, truncated or not an NPZ file ({reason(e)})") from e


def read_npz_volume(path: Path) -> Volume:
    """The ``image`` array, else the ``label`` array, else the only array of the archive, as a Volume.

    An ``affine`` array (4x4) in the archive becomes the volume's affine.
    """
    arrays = read_npz(path)
    affine = arrays.pop("affine", None)
    if affine is not None and np.shape(affine) != (4, 4):
        raise InputError(path, f"array 'affine' should be 4x4, got shape {np.shape(affine)}")
    if "image" in arrays:
        array = arrays["image"]
    elif "label" in arrays:
        array = arrays["label"]
    elif len(arrays) == 1:
        (array,) = arrays.values()
    elif not arrays:
        raise InputError(path, "NPZ file holds no array")
    else:
        raise InputError(
            path,
            f"NPZ file holds arrays {sorted(arrays)}; expected one named 'image' or 'label', or only one",
        )
    return Volume(
        array=native_byte_order(array),
        affine=np.eye(4) if affine is None else affine.astype(float),
        path=path,
        format="npz",
    )


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write named arrays to a compressed ``.npz`` archive, atomically.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "pair.npz"
    >>> write_npz(out, {"image": np.zeros((2, 2)), "label": np.ones((2, 2), np.uint8)})
    >>> sorted(read_npz(out))
    ['image', 'label']
    """
    path = Path(path)
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
