"""Options several commands share, defined once (the command line is :mod:`learn2synth.cli`)."""

from __future__ import annotations

import argparse
import time


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


def run_summary(metrics: dict, started: float) -> str:
    """A finished run's last line: its validation values, then the wall time of the whole command since
    ``started`` (``time.perf_counter()``) and of the training loop alone (``metrics["seconds"]``), which leaves out
    reading label maps and real scans and building the run: a new user read "seconds 12.68" after 133 s.

    >>> run_summary({"dice_mean": 0.8123, "seconds": 12.4}, time.perf_counter() - 133)
    'dice_mean 0.8123; 133 s in all, 12 s of them training steps'
    """
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "seconds")
    times = f"{time.perf_counter() - started:.0f} s in all"
    if "seconds" in metrics:
        times += f", {metrics['seconds']:.0f} s of them training steps"
    return f"{shown}; {times}" if shown else times
