"""Intensity normalization per batch item: min-max to [0, 1], or robust quantile scaling."""

from __future__ import annotations

import torch


def _per_item_view(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.reshape(-1, *[1] * (ndim - 1))


def normalize_minmax(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each item of ``x`` (B, ...) linearly to [0, 1]; a constant item becomes 0."""
    lo, hi = torch.aminmax(x.flatten(1), dim=1)
    return (x - _per_item_view(lo, x.ndim)) / _per_item_view((hi - lo).clamp_min(eps), x.ndim)


def _kth_quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile by rank (kthvalue: no size limit, unlike torch.quantile's 16M elements)."""
    k = min(flat.shape[1], max(1, round(q * (flat.shape[1] - 1)) + 1))
    return flat.kthvalue(k, dim=1).values


def normalize_quantile(x: torch.Tensor, lo: float = 0.01, hi: float = 0.99, clip: bool = True) -> torch.Tensor:
    """Map the ``lo`` and ``hi`` quantiles of each item to 0 and 1 (then clip to [0, 1] if ``clip``)."""
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"quantiles must satisfy 0 <= lo < hi <= 1, got {lo}, {hi}")
    flat = x.flatten(1)
    qlo, qhi = _kth_quantile(flat, lo), _kth_quantile(flat, hi)
    y = (x - _per_item_view(qlo, x.ndim)) / _per_item_view((qhi - qlo).clamp_min(1e-8), x.ndim)
    return y.clamp(0, 1) if clip else y


def normalize(x: torch.Tensor, kind: str = "minmax", quantiles=(0.01, 0.99)) -> torch.Tensor:
    """Dispatch on ``kind``: ``"minmax"``, ``"quantile"`` or ``"none"``."""
    if kind == "minmax":
        return normalize_minmax(x)
    if kind == "quantile":
        return normalize_quantile(x, *quantiles)
    if kind == "none":
        return x
    raise ValueError(f"normalization must be 'minmax', 'quantile' or 'none', not {kind!r}")
