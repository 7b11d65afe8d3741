"""Positive values as ``softplus(raw)`` and ranges as ``lo + softplus(raw_width)``, and upper bounds on them.

Shared by the augmenters: a learned value stays in its valid range by construction (std >= 0, lo <= hi), and an
optional upper bound (``augmenter.max_values``) is kept by projecting the raw parameters after each step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def inverse_softplus(y: torch.Tensor | float) -> torch.Tensor:
    """softplus^-1(y), elementwise; values <= 0 (no effect) map to softplus^-1(1e-8), the closest a softplus gets."""
    y = torch.as_tensor(y, dtype=torch.get_default_dtype()).clamp_min(1e-8)
    return torch.where(y < 20, y + torch.log(-torch.expm1(-y)), y)


def inverse_softplus_float(y: float) -> float:
    y = max(float(y), 1e-8)
    return y + math.log(-math.expm1(-y)) if y < 20 else y


@torch.no_grad()
def cap_softplus_(raw: torch.Tensor, limit: torch.Tensor | float, offset: torch.Tensor | float = 0.0) -> None:
    """Keep ``offset + softplus(raw) <= limit`` by lowering ``raw`` where needed (in place)."""
    top = inverse_softplus(torch.as_tensor(limit) - offset).to(raw)
    raw.copy_(torch.minimum(raw, top))


@torch.no_grad()
def cap_range_(lo_raw: torch.Tensor, width_raw: torch.Tensor, limit: float, positive: bool) -> None:
    """Keep ``hi = lo + softplus(width_raw) <= limit``, ``lo = softplus(lo_raw)`` if ``positive`` else ``lo_raw``."""
    if positive:
        cap_softplus_(lo_raw, limit)
        lo = F.softplus(lo_raw)
    else:
        lo_raw.clamp_(max=limit)
        lo = lo_raw
    cap_softplus_(width_raw, limit, lo)
