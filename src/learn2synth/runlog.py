"""Reading a run's ``metrics.csv``: logged series and the augmenter's learned values.

The hypergradient moves the learned values every step with noise, so a single final value is a noisy
estimate; :func:`learned_estimate` averages the last part of the run (the same convention wherever a learned
value is reported: demo, paper-recovery benchmark, experiments).
"""

from __future__ import annotations

import csv
from pathlib import Path

LEARNED_PREFIXES = ("noise.", "bias.", "gamma.", "blur.", "gmm.", "resolution.")

#: Why a learned value is not identified by the hypergradient (the training still moves it; it is not a result).
NOT_IDENTIFIED = {
    "bias_2_points": (
        "the exponent of a 2-control-point bias field is not identified: such a field is close to a global "
        "intensity scale, which the segmenter's instance norm removes, so the real loss barely depends on it and "
        "a finer field (4 points) takes its place; its learned value is where the run left it, not an estimate"
    ),
}


def bias_key(points: int, bias_points) -> str:
    """The logged name of the bias exponent with ``points`` control points (``ParametricAugmenter``'s naming)."""
    bias_points = list(bias_points)
    k = bias_points.index(points)
    return f"bias.{('low', 'middle', 'high')[k]}" if len(bias_points) == 3 else f"bias.{points}"


def not_identified(bias_points=(2, 4, 8), norm: str = "instance") -> dict[str, str]:
    """``{learned key: reason}`` for the learned values the hypergradient does not identify in this setting.

    Today: the 2-control-point bias exponent when the segmenter uses instance norm (``net.norm``, the default).
    Reports mark these keys instead of presenting their value as learned (see :func:`mark_learned`).
    """
    if norm == "instance" and 2 in list(bias_points):
        return {bias_key(2, bias_points): NOT_IDENTIFIED["bias_2_points"]}
    return {}


def mark_learned(key: str, value: float | None, unidentified: dict[str, str], spec: str = ".3g") -> str:
    """A learned value as reported: the number, or the number marked ``(not identified)``."""
    if value is None:
        return "-"
    text = format(value, spec)
    return f"{text} (not identified)" if key in unidentified else text


def read_rows(metrics_csv: str | Path) -> list[dict[str, str]]:
    with open(metrics_csv, newline="") as f:
        return list(csv.DictReader(f))


def series(metrics_csv: str | Path, keys) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(step, value), ...]}`` for every key, skipping rows where it was not logged."""
    rows = read_rows(metrics_csv)
    return {k: [(int(r["step"]), float(r[k])) for r in rows if r.get(k)] for k in keys}


def learned_estimate(metrics_csv: str | Path, tail: float = 0.2) -> dict[str, float]:
    """Each learned augmentation value averaged over the last ``tail`` of its logged steps ({} if none).

    ``tail=0`` gives the last logged value.
    """
    path = Path(metrics_csv)
    if not path.exists():
        return {}
    rows = [r for r in read_rows(path) if any(r.get(k) for k in r if k.startswith(LEARNED_PREFIXES))]
    if not rows:
        return {}
    keys = [k for k in rows[-1] if k.startswith(LEARNED_PREFIXES) and rows[-1][k]]
    picked = rows[min(len(rows) - 1, int(len(rows) * (1 - tail))):]
    return {k: sum(float(r[k]) for r in picked) / len(picked) for k in keys}
