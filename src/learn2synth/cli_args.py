"""Options several commands share, defined once (the command line is :mod:`learn2synth.cli`)."""

from __future__ import annotations

import argparse


def add_common(p: argparse.ArgumentParser) -> None:
    """``--debug``, on every command."""
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def add_run_arguments(p: argparse.ArgumentParser, config_help: str, set_example: str) -> None:
    """``--config``, ``--set``, ``--out``, ``--resume`` and ``--quiet`` of the commands that train into a run
    folder (train, adapt, gan train, labelgen/spade train); ``set_example`` is shown in ``--set``'s help."""
    p.add_argument("--config", help=config_help)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override one setting, e.g. --set {set_example} (repeatable)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N`` of train and adapt: the config key ``threads`` (see :func:`threads_set`)."""
    p.add_argument("--threads", type=int, help="torch threads (the config key 'threads'; default: torch's)")


def threads_set(args) -> list[str]:
    """``--set`` overrides with ``--threads`` appended as ``threads=N`` (the command line wins over configs)."""
    return [*args.set, *([f"threads={args.threads}"] if getattr(args, "threads", None) is not None else [])]
