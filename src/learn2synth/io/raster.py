"""PNG and GIF (Pillow) and TIFF (tifffile): 2D images, colour images, and 3D stacks for TIFF.

Arrays keep the file's axis order: ``(rows, cols)``, and ``(slices, rows, cols)`` for TIFF stacks. These
formats carry no voxel size we trust, so volumes read from them have an identity affine (spacing 1.0).

**Colour.** What happens to a colour image (RGB, RGBA, CMYK, ...; alpha is always dropped) is chosen by
``colour`` (see :data:`COLOUR_MODES`): ``"refuse"`` (the default) raises an :class:`InputError` unless its
colour channels are all equal, in which case it is read as grayscale; ``"keep"`` returns the colour channels on
a trailing axis, ``(rows, cols, C)``, with ``Volume.channels == C``; ``"luminance"`` and ``"green"`` convert it
to grayscale (:func:`learn2synth.io.volume.to_grayscale`). Grayscale images have no channel axis
(``Volume.channels is None``) whatever ``colour`` says.

**Palettes** (GIF, palette PNG). A palette whose used entries are all gray (R = G = B) gives those gray
values: this is what a viewer shows, and GIF writers reorder palettes freely, so the indices of a gray GIF
carry no meaning (the DRIVE retinal masks ``*_manual1.gif`` read as 0/255, which
:func:`learn2synth.io.validate.binarize_if_two_valued` turns into 0/1). A palette with colours gives the
indices, which is how label maps are stored with a colour table (e.g. PASCAL VOC). GIFs give their first
frame; GIF is read only (writing one is refused: use PNG).

**Bilevel** images (Pillow mode ``"1"``, 1-bit TIFF) read as 0/1 ``uint8``.

**TIFF compression.** tifffile decodes compressed TIFFs (LZW, Deflate, JPEG, ...) with ``imagecodecs``, a
dependency of learn2synth. Should it be missing, Pillow decodes the common 2D cases (LZW, Deflate,
PackBits); a file neither can decode is refused with a message naming the compression and the missing
package, never called corrupt.
"""

from __future__ import annotations

import contextlib
import logging
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from learn2synth.errors import InputError
from learn2synth.io._util import native_byte_order, reason
from learn2synth.io.atomic import atomic_path
from learn2synth.io.volume import COLOUR_MODES, Volume, to_grayscale

_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    SyntaxError,
    zlib.error,
    struct.error,
    Image.DecompressionBombError,
)

# tifffile's words for a compression it cannot decode: "<COMPRESSION.LZW: 5> requires the 'imagecodecs'
# package", "<COMPRESSION.JPEG2000: 34712> not supported" (the file is fine, the decoder is missing).
_CODEC_PROBLEM = re.compile(r"<COMPRESSION\.(\w+): \d+> (requires the '(\w+)' package|not supported|not implemented)")

_PILLOW_NAMES = {"png": "PNG", "gif": "GIF", "tiff": "TIFF"}


def read_png(path: Path, colour: str = "refuse") -> Volume:
    """Read a PNG: grayscale (8 or 16 bit), bilevel, palette, or colour (see ``colour`` in the module doc).

    Colour PNGs whose channels are all equal read as grayscale; other colour PNGs follow ``colour``.
    """
    return _read_pillow(path, "png", colour)


def read_gif(path: Path, colour: str = "refuse") -> Volume:
    """Read the first frame of a GIF: gray palettes give gray values, colour palettes their indices.

    Examples
    --------
    >>> import tempfile
    >>> mask = np.zeros((4, 5), np.uint8); mask[1:3, 1:4] = 255
    >>> path = Path(tempfile.mkdtemp()) / "21_manual1.gif"
    >>> Image.fromarray(mask).save(path)  # Pillow stores it as palette indices 0/1 with a gray palette
    >>> sorted(np.unique(read_gif(path).array).tolist())
    [0, 255]
    """
    return _read_pillow(path, "gif", colour)


def _read_pillow(path: Path, fmt: str, colour: str) -> Volume:
    check_colour_mode(colour)
    try:
        with Image.open(path) as img:
            if fmt == "gif" and getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()  # Pillow reads lazily: force the decoding here, where errors are caught
            mode, array = img.mode, _pillow_array(img)
    except _READ_ERRORS as e:
        name = _PILLOW_NAMES[fmt]
        raise InputError(path, f"cannot read: corrupted, truncated or not a {name} file ({reason(e)})") from e
    if mode == "I" and array.size and 0 <= array.min() and array.max() <= 65535:
        array = array.astype(np.uint16)  # older Pillow reads 16-bit PNG as 32-bit "I"
    if array.ndim == 2:
        return Volume(array=native_byte_order(array), path=path, format=fmt)
    return _channels(array, path, mode, colour, fmt)


def _pillow_array(img: Image.Image) -> np.ndarray:
    """The decoded pixels: bilevel as 0/1, palettes as gray values or indices, other colour spaces as RGB."""
    mode = img.mode
    if mode == "1":
        return np.array(img).astype(np.uint8)
    if mode in ("P", "PA"):
        indices = np.array(img.getchannel(0) if mode == "PA" else img)
        palette = np.array(img.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
        used = np.unique(indices)
        if palette.size and used.max() < len(palette):
            entries = palette[used]
            if np.all(entries == entries[:, :1]):  # a gray palette: its gray values are the pixel values
                return palette[indices, 0]
        return indices
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.array(img.convert("RGB"))
    return np.array(img)


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


def compression_name(value) -> str:
    """The name of a TIFF compression that tifffile reports as an enum member or, for some files (the ssTEM stacks
    of the shared EM data with tifffile 2026.3), as a bare integer code.

    Examples
    --------
    >>> compression_name(tifffile.COMPRESSION.LZW), compression_name(1), compression_name(99999)
    ('LZW', 'NONE', 'code 99999')
    """
    try:
        return tifffile.COMPRESSION(int(value)).name
    except ValueError:
        return f"code {int(value)}"


def read_tiff(path: Path, colour: str = "refuse") -> Volume:
    """Read a TIFF holding one 2D image or a 3D stack of them; colour samples follow ``colour``.

    Raises
    ------
    InputError
        Corrupted or truncated file; a compression that no installed decoder handles (named, with the
        package to install); more than 3 dimensions.
    """
    check_colour_mode(colour)
    problems: list[str] = []
    compression = "an unknown method"
    try:
        with _tifffile_warnings(problems), tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(path, "TIFF file holds no image")
            compression = compression_name(tif.pages[0].compression)
            series = tif.series[0]
            axes, array = series.axes, series.asarray()
    except ImportError:  # tifffile's own fallback decoder (e.g. for ZSTD) needs a module that is missing
        return _read_tiff_with_pillow(path, colour, compression, "imagecodecs")
    except _READ_ERRORS as e:
        codec = _CODEC_PROBLEM.search(str(e))
        if codec is None:
            raise InputError(path, f"cannot read: corrupted, truncated or not a TIFF file ({reason(e)})") from e
        return _read_tiff_with_pillow(path, colour, codec.group(1), codec.group(3))
    if problems:
        # tifffile only logs a cut chain of pages, and would return fewer slices than the file had
        raise InputError(path, f"cannot read: corrupted or truncated TIFF file ({problems[0]})")
    if array.dtype == bool:
        array = array.astype(np.uint8)  # bilevel
    if "S" in axes:  # samples per pixel: colour channels (and alpha)
        array = np.moveaxis(array, axes.index("S"), -1)
        ndim = array.ndim - 1
        mode = f"{array.shape[-1]} samples per pixel"
    else:
        ndim, mode = array.ndim, None
    if ndim not in (2, 3):
        raise InputError(path, f"expected a 2D image or a 3D stack, got shape {array.shape} (axes {axes})")
    if mode is None:
        return Volume(array=native_byte_order(array), path=path, format="tiff")
    return _channels(array, path, mode, colour, "tiff")


def _read_tiff_with_pillow(path: Path, colour: str, name: str, package: str | None) -> Volume:
    """Decode a TIFF whose compression tifffile cannot (``package`` missing) with Pillow's libtiff."""
    needs = f"which needs the '{package}' package: pip install {package}" if package else "which is not supported"
    try:
        with Image.open(path) as img:
            if getattr(img, "n_frames", 1) > 1:
                raise InputError(path, f"TIFF stack compressed with {name}, {needs}")
            img.load()
            mode, array = img.mode, _pillow_array(img)
    except _READ_ERRORS as e:
        raise InputError(path, f"cannot decode: the TIFF is compressed with {name}, {needs} ({reason(e)})") from e
    if array.ndim == 2:
        return Volume(array=native_byte_order(array), path=path, format="tiff")
    return _channels(array, path, mode, colour, "tiff")


def write_tiff(path: Path, array: np.ndarray) -> None:
    """Write a 2D image or a 3D stack (slices first) as an uncompressed grayscale TIFF."""
    if array.ndim not in (2, 3):
        raise InputError(path, f"TIFF stores 2D images or 3D stacks, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    # photometric is explicit, or tifffile takes a last axis of size 3 or 4 for colour channels
    with atomic_path(path, ".tif") as tmp:
        tifffile.imwrite(tmp, array, photometric="minisblack")


def check_colour_mode(colour: str) -> None:
    """Raise ValueError (a programming error, not a user's) unless ``colour`` is one of :data:`COLOUR_MODES`."""
    if colour not in COLOUR_MODES:
        raise ValueError(f"colour should be one of {', '.join(map(repr, COLOUR_MODES))}, got {colour!r}")


def _channels(array: np.ndarray, path: Path, mode: str, colour: str, fmt: str) -> Volume:
    """A Volume from a decoded channels-last image (colour, maybe alpha), as ``colour`` says."""
    samples = array.shape[-1]
    colour_array = array[..., :3] if samples >= 3 else array[..., :1]  # drop alpha
    equal = all(np.array_equal(colour_array[..., 0], colour_array[..., c]) for c in range(1, colour_array.shape[-1]))
    if colour_array.shape[-1] == 1 or (equal and colour != "keep"):
        return Volume(array=native_byte_order(np.ascontiguousarray(colour_array[..., 0])), path=path, format=fmt)
    if colour == "refuse":
        raise InputError(
            path,
            f"colour image (mode {mode}) where a grayscale one is expected; convert it to grayscale "
            "(for fundus photographs, the green channel) or use it as a multi-channel input",
        )
    volume = Volume(
        array=native_byte_order(np.ascontiguousarray(colour_array)),
        path=path,
        format=fmt,
        channels=colour_array.shape[-1],
    )
    return volume if colour == "keep" else to_grayscale(volume, colour)


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
