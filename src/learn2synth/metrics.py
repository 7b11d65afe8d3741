"""Segmentation metrics.

Dice is computed here directly (a few tensor ops) because the trainer needs it per class on batched torch
tensors every validation; empty structures are handled on purpose: a class absent from both prediction and
reference gives NaN (undefined, excluded from means), absent from one side only gives 0.
"""

from __future__ import annotations

import torch


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Dice of each foreground class (1..n_classes-1) for each item: (B, n_classes - 1), NaN where undefined.

    Parameters
    ----------
    pred, target : (B, 1, *spatial) integer label maps.

    Examples
    --------
    >>> p = torch.tensor([[[[1, 1], [0, 2]]]])
    >>> t = torch.tensor([[[[1, 0], [0, 2]]]])
    >>> dice_per_class(p, t, 4)
    tensor([[0.6667, 1.0000,    nan]])
    """
    dims = tuple(range(1, pred.ndim))
    out = []
    for c in range(1, n_classes):
        p, t = pred == c, target == c
        inter = (p & t).sum(dims).double()
        total = (p.sum(dims) + t.sum(dims)).double()
        out.append(torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.full_like(total, float("nan"))))
    return torch.stack(out, 1).float()


def nanmean(x: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean ignoring NaN (undefined Dice)."""
    return x.nanmean() if dim is None else x.nanmean(dim)
