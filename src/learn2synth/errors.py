"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import os


class Learn2SynthError(Exception):
    """Base class of every user-facing error (bad file, bad config, bad argument)."""


class InputError(Learn2SynthError, ValueError):
    """A file or folder given by the user cannot be used.

    The message always names the path and the problem: ``"labels/a.nii.gz: label map has NaN values"``.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{self.path}: {problem}")


class ConfigError(Learn2SynthError, ValueError):
    """A configuration key or value is unknown, mistyped or out of range; the message names the key."""

    def __init__(self, key: str | None, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(problem if key is None else f"{key}: {problem}")
