"""Figures and markdown reports: sample galleries, training curves, learned-parameter trajectories.

matplotlib is imported inside the functions (Agg backend), so importing this module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .io.atomic import atomic_path


def middle_slice(array, axis: int = -1) -> np.ndarray:
    """A 2D view of a 2D or 3D array (the middle slice along ``axis`` for 3D); channel axes of size 1 dropped."""
    a = np.asarray(array.detach().cpu() if hasattr(array, "detach") else array)
    a = a.squeeze()
    if a.ndim == 3:
        a = np.take(a, a.shape[axis] // 2, axis=axis)
    if a.ndim != 2:
        raise ValueError(f"cannot show an array of shape {a.shape} as an image")
    return a


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path, path.suffix) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def save_gallery(
    path: str | os.PathLike,
    rows: Mapping[str, Sequence],
    labels: Sequence | None = None,
    predictions: Mapping[str, Sequence] | None = None,
) -> Path:
    """A grid of images: one row per entry of ``rows`` (title -> list of 2D/3D arrays), one column per sample.

    ``labels`` (one per column) are drawn as coloured contours on every image; ``predictions`` add rows of
    predicted label maps shown as colour overlays.
    """
    plt = _pyplot()
    all_rows = list(rows.items()) + list((predictions or {}).items())
    ncols = max(len(v) for _, v in all_rows)
    fig, axes = plt.subplots(len(all_rows), ncols, figsize=(2.2 * ncols, 2.2 * len(all_rows)), squeeze=False)
    for r, (title, images) in enumerate(all_rows):
        is_prediction = r >= len(rows)
        for c in range(ncols):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(images):
                continue
            if is_prediction:
                ax.imshow(middle_slice(images[c]), cmap="tab10", interpolation="nearest", vmin=0, vmax=9)
            else:
                ax.imshow(middle_slice(images[c]), cmap="gray", interpolation="nearest")
                if labels is not None and c < len(labels):
                    lab = middle_slice(labels[c])
                    levels = np.unique(lab)[:-1] + 0.5
                    if len(levels):
                        ax.contour(lab, levels=levels, linewidths=0.6, cmap="autumn")
            if c == 0:
                ax.set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    return _save(fig, path)


def save_curves(path: str | os.PathLike, series: Mapping[str, Sequence[tuple[float, float]]], title: str = "",
                xlabel: str = "step", truth: Mapping[str, float] | None = None, logy: bool = False) -> Path:
    """Line plot of named series of (x, y) points; ``truth`` draws dashed reference lines in matching colours."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, points in series.items():
        if not len(points):
            continue
        x, y = zip(*points, strict=True)
        (line,) = ax.plot(x, y, label=name, linewidth=1.2)
        if truth and name in truth:
            ax.axhline(truth[name], color=line.get_color(), linestyle="--", linewidth=0.9)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table; floats shown with 4 significant digits."""

    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
