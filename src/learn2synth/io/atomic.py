"""Atomic file writes: a crash or an error never leaves a half-written output."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the folder of ``path``; move it onto ``path`` when the block succeeds.

    The temporary file is hidden (leading dot) and ends with ``suffix`` so that libraries that choose the
    format from the file name (nibabel: ``.nii.gz`` means compressed) write the right thing. On any
    exception the temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : str or PathLike
        Final destination.
    suffix : str
        Ending of the temporary file name, e.g. ``".nii.gz"``.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(out, ".txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> out.read_text(), sorted(p.name for p in out.parent.iterdir())
    ('hello', ['a.txt'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}{suffix}")
    # Created through os.open (not mkstemp) so the final file gets the usual umask permissions, not 0600.
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
