"""Self-describing checkpoints: atomic writes, ``weights_only`` loads, and a folder of numbered snapshots.

A checkpoint is one ``torch.save`` file holding::

    {"format": "learn2synth-checkpoint", "version": 1, "learn2synth_version": "0.1.0",
     "config": {...}, "step": 1000, "state": {"net": ..., "optimizer": ...}, "rng": {...}, "extra": {...}}

It is written to a temporary file in the same folder, flushed to disk and renamed over the final name, so a
crash at any moment leaves either the previous file or the new one, never a partial one. It is always read
with ``weights_only=True``: a file that would run code when unpickled is refused, never executed.

A run folder holds numbered snapshots ``step_000100.pt`` (see ``checkpoint_path``; ``prune_checkpoints`` keeps
the newest few) and optionally ``last.pt``, overwritten at every save; ``latest_checkpoint`` finds the newest.
"""

from __future__ import annotations

import os
import pickle
import re
import uuid
import zipfile
from pathlib import Path

import torch

from learn2synth import __version__
from learn2synth.errors import InputError

__all__ = ["FORMAT", "VERSION", "save_checkpoint", "load_checkpoint", "checkpoint_path", "latest_checkpoint",
           "prune_checkpoints", "resolve_checkpoint"]

FORMAT = "learn2synth-checkpoint"
VERSION = 1
LAST = "last.pt"
_STEP_FILE = re.compile(r"step_(\d+)\.pt")


def save_checkpoint(path: str | os.PathLike, *, config: dict, step: int, state: dict[str, dict], rng: dict,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; its folder is created if needed. An existing file is replaced only once the new one
        is completely on disk.
    config : dict
        The run configuration as plain types (``config.to_dict``).
    step : int
        Number of completed training steps.
    state : dict of str to dict
        State dicts by name: networks, optimizers, schedulers, augmenter, ...
    rng : dict
        Output of ``learn2synth.rng.capture_rng_state``.
    extra : dict, optional
        Anything else worth keeping (best validation score, ...), as plain types.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    TypeError
        If the payload holds objects that ``torch.load(weights_only=True)`` would refuse (e.g. an instance of
        a custom class); nothing is written in that case.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "learn2synth_version": __version__, "config": config,
               "step": int(step), "state": state, "rng": rng, "extra": {} if extra is None else extra}
    # a unique name opened with "x" rather than mkstemp, whose files are private (0600) whatever the umask
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        unsafe = _unsafe_globals(tmp)
        if unsafe:
            raise TypeError(f"cannot save {path}: it would not load with weights_only=True because it holds "
                            f"{', '.join(unsafe)}; store plain types (tensors, numbers, str, lists, dicts)")
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temporary file behind
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by ``save_checkpoint``, always with ``weights_only=True``.

    Parameters
    ----------
    path : str or os.PathLike
        Checkpoint file.
    map_location : str or torch.device
        Where tensors are loaded (``torch.load``'s argument).

    Returns
    -------
    dict
        The checkpoint: ``format``, ``version``, ``learn2synth_version``, ``config``, ``step``, ``state``,
        ``rng``, ``extra``.

    Raises
    ------
    InputError
        If the file is missing, is not a PyTorch file, is corrupt or truncated, holds Python objects that are
        not plain data, is not a learn2synth checkpoint, or was written by a newer checkpoint format.
    """
    checkpoint = _read(Path(path), map_location)
    _check_header(Path(path), checkpoint)
    return checkpoint


def checkpoint_path(folder: str | os.PathLike, step: int) -> Path:
    """Return the path of the numbered snapshot for ``step``: ``folder/step_000100.pt``."""
    return Path(folder) / f"step_{step:06d}.pt"


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """Return the newest checkpoint of a run folder, or ``None`` if there is none.

    Candidates are the numbered snapshots ``step_*.pt`` and ``last.pt``. Snapshots are ordered by the step in
    their name; ``last.pt`` is chosen when its recorded step is at least the highest snapshot's (reading the
    step maps the file into memory without reading the tensors). Temporary files of interrupted saves are
    ignored. A missing folder has no checkpoint.
    """
    steps = _snapshots(folder)
    newest = max(steps, key=steps.get, default=None)
    last = Path(folder) / LAST
    if last.is_file() and (newest is None or _recorded_step(last) >= steps[newest]):
        return last
    return newest


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file as it is, or a run folder's newest checkpoint; a folder without one is refused."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise InputError(path, "folder holds no checkpoint (step_*.pt or last.pt)")
        return found
    return path


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest numbered snapshots of a run folder; ``last.pt`` is never deleted.

    Parameters
    ----------
    folder : str or os.PathLike
        Run folder.
    keep : int
        Number of snapshots ``step_*.pt`` to keep, ``>= 0``.

    Returns
    -------
    list of Path
        The files deleted, oldest first.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    steps = _snapshots(folder)
    by_step = sorted(steps, key=steps.get)
    doomed = by_step[: max(len(by_step) - keep, 0)]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def _check_header(path: Path, checkpoint: object) -> None:
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise InputError(path, "a PyTorch file but not a learn2synth checkpoint (no format marker)")
    version = checkpoint.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(path, f"unknown checkpoint format version {version!r}")
    if version > VERSION:
        raise InputError(path, f"checkpoint format version {version} is newer than this learn2synth "
                               f"({__version__}) can read (version {VERSION}); upgrade learn2synth")
    missing = [key for key in ("config", "step", "state", "rng", "extra") if key not in checkpoint]
    if missing:
        raise InputError(path, f"incomplete checkpoint: missing {', '.join(missing)}")


def _unsafe_globals(path: str | os.PathLike) -> list[str]:
    """Python objects in a torch zip file that weights_only=True would refuse, found without unpickling."""
    find = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch >= 2.5
    return [] if find is None else find(path)


def _read(path: Path, map_location: str | torch.device, mmap: bool = False) -> object:
    if not path.is_file():
        raise InputError(path, "is a folder, not a checkpoint file" if path.is_dir() else "no such file")
    if not zipfile.is_zipfile(path):
        raise InputError(path, "not a PyTorch checkpoint (another kind of file, or corrupt or truncated)")
    try:
        # look for code-running objects first: their names make a clearer message than torch.load's refusal
        unsafe = _unsafe_globals(path)
        if not unsafe:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        unsafe = [_last_line(error)]
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as error:
        raise InputError(path, f"cannot be read as a PyTorch checkpoint, corrupt or truncated? "
                               f"({_last_line(error)})") from error
    raise InputError(path, f"refused: it holds Python objects that could run code when loaded "
                           f"({', '.join(unsafe)}); learn2synth loads only tensors and plain types")


def _recorded_step(path: Path) -> int:
    """The step of a checkpoint, memory-mapping the file so the tensors are not read."""
    checkpoint = _read(path, "cpu", mmap=True)
    _check_header(path, checkpoint)
    return checkpoint["step"]


def _snapshots(folder: str | os.PathLike) -> dict[Path, int]:
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    matches = ((path, _STEP_FILE.fullmatch(path.name)) for path in folder.iterdir())
    return {path: int(match[1]) for path, match in matches if match and path.is_file()}


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); not possible, and not needed, on Windows."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    meaningful = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (meaningful or lines or [type(error).__name__])[-1][:200]
