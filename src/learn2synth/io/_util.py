"""Small helpers shared by the readers."""

from __future__ import annotations

import numpy as np


def reason(error: BaseException, limit: int = 200) -> str:
    """Short one-line description of ``error`` for a user message, e.g. ``"image file is truncated"``."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def native_byte_order(array: np.ndarray) -> np.ndarray:
    """The array in the machine's byte order (MGZ and some TIFFs are big-endian; torch refuses those).

    Examples
    --------
    >>> native_byte_order(np.array([1, 2], dtype=">i2")).dtype.isnative
    True
    """
    if array.dtype.isnative:
        return array
    return array.astype(array.dtype.newbyteorder("="))
