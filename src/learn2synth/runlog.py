"""Reading a run's ``metrics.csv``: logged series and the augmenter's learned values.

The hypergradient moves the learned values every step with noise, so a single final value is a noisy
estimate; :func:`learned_estimate` averages the last part of the run (the same convention wherever a learned
value is reported: demo, paper-recovery benchmark, experiments).
"""

from __future__ import annotations

import csv
from pathlib import Path

LEARNED_PREFIXES = ("noise.", "bias.", "gamma.", "blur.", "gmm.", "resolution.")


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
