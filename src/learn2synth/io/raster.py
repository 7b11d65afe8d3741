"""Grayscale PNG (Pillow) and TIFF (tifffile): 2D images, and 3D stacks for TIFF.

Arrays keep the file's axis order: ``(rows, cols)``, and ``(slices, rows, cols)`` for TIFF stacks. These
formats carry no voxel size we trust, so volumes read from them have an identity affine (spacing 1.0).
"""

from __future__ import annotations

import contextlib
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from learn2synth.errors import InputError
from learn2synth.io._util import native_byte_order, reason
from learn2synth.io.atomic import atomic_path
from learn2synth.io.volume import Volume

_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    SyntaxError,
    zlib.error,
    struct.error,
    Image.DecompressionBombError,
)


def read_png(path: Path) -> Volume:
    """Read a grayscale PNG (8 or 16 bit, or palette indices) as a 2D array.

    Colour PNGs whose channels are all equal are read as grayscale; other colour PNGs are refused rather
    than silently converted. Palette (``P``) images give their indices, which is how label PNGs are stored.
    """
    try:
        with Image.open(path) as img:
            img.load()  # Pillow reads lazily: force the decoding here, where errors are caught
            mode, array = img.mode, np.array(img)
    except _READ_ERRORS as e:
        raise InputError(path, f"cannot read: corrupted, truncated or not a PNG file ({reason(e)})") from e
    if mode == "1":
        array = array.astype(np.uint8)
    elif mode == "I" and array.size and 0 <= array.min() and array.max() <= 65535:
        array = array.astype(np.uint16)  # older Pillow reads 16-bit PNG as 32-bit "I"
    elif array.ndim == 3:
        array = _gray_from_channels(array, path, mode)
    return Volume(array=native_byte_order(array), path=path, format="png")


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a 2D array as an 8-bit PNG (values 0-255) or a 16-bit PNG (values 0-65535).

    Raises
    ------
    InputError
        If the array is not 2D or holds values PNG cannot store exactly (negative, above 65535,
        non-integer); the message suggests a format that can.
    """
    if array.ndim != 2:
        raise InputError(path, f"PNG stores 2D images, got shape {array.shape}; use .tif or .nii.gz")
    img = Image.fromarray(_png_array(array, path))
    with atomic_path(path, ".png") as tmp:
        img.save(tmp, format="PNG")


def _png_array(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype in (np.uint8, np.uint16):
        return array
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind not in "iuf":
        raise InputError(path, f"PNG cannot store {array.dtype} data")
    if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
        raise InputError(
            path, "PNG stores integers only, and this array has non-integer values; use .tif or .nii.gz"
        )
    lo, hi = (array.min(), array.max()) if array.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise InputError(path, f"PNG stores values 0 to 65535, got {lo} to {hi}; use .tif or .nii.gz")
    return array.astype(np.uint8 if hi <= 255 else np.uint16)


def read_tiff(path: Path) -> Volume:
    """Read a TIFF holding one 2D grayscale image or a 3D stack of them."""
    problems: list[str] = []
    try:
        with _tifffile_warnings(problems), tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(path, "TIFF file holds no image")
            series = tif.series[0]
            axes, array = series.axes, series.asarray()
    except _READ_ERRORS as e:
        raise InputError(path, f"cannot read: corrupted, truncated or not a TIFF file ({reason(e)})") from e
    if problems:
        # tifffile only logs a cut chain of pages, and would return fewer slices than the file had
        raise InputError(path, f"cannot read: corrupted or truncated TIFF file ({problems[0]})")
    if "S" in axes:  # samples per pixel: colour channels
        array = _gray_from_channels(np.moveaxis(array, axes.index("S"), -1), path, "RGB")
    if array.ndim not in (2, 3):
        raise InputError(path, f"expected a 2D image or a 3D stack, got shape {array.shape} (axes {axes})")
    return Volume(array=native_byte_order(array), path=path, format="tiff")


def write_tiff(path: Path, array: np.ndarray) -> None:
    """Write a 2D image or a 3D stack (slices first) as an uncompressed grayscale TIFF."""
    if array.ndim not in (2, 3):
        raise InputError(path, f"TIFF stores 2D images or 3D stacks, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    # photometric is explicit, or tifffile takes a last axis of size 3 or 4 for colour channels
    with atomic_path(path, ".tif") as tmp:
        tifffile.imwrite(tmp, array, photometric="minisblack")


def _gray_from_channels(array: np.ndarray, path: Path, mode: str) -> np.ndarray:
    """Grayscale from a channels-last colour image, if its colour channels are all equal."""
    colour = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]
    if not all(np.array_equal(colour[..., 0], colour[..., c]) for c in range(1, colour.shape[-1])):
        raise InputError(path, f"colour image (mode {mode}); expected grayscale, convert it first")
    return np.ascontiguousarray(colour[..., 0])


class _CollectProblems(logging.Filter):
    """Take tifffile's warnings about a damaged file out of the log and into a list."""

    def __init__(self, problems: list[str]):
        super().__init__()
        self.problems = problems

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno >= logging.WARNING and any(
            word in message.lower() for word in ("invalid", "corrupt", "truncat", "failed")
        ):
            self.problems.append(message)
            return False
        return True


@contextlib.contextmanager
def _tifffile_warnings(problems: list[str]):
    """Collect tifffile's logged warnings about a damaged file into ``problems``; others stay in the log."""
    logger, log_filter = logging.getLogger("tifffile"), _CollectProblems(problems)
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)
