"""Gamma (contrast) augmentation: ``x ** exp(g)`` with ``g ~ N(0, std)`` per item, on images in [0, 1]."""

from __future__ import annotations

import torch

from ._util import _float_dtype, draw_normal, per_item


def sample_gamma(batch: int, *, std=0.5, generator: torch.Generator, dtype=None) -> dict:
    """Draw ``log_gamma = std * z`` (reparameterized, so ``std`` may require grad). Returns ``{"log_gamma": (B,)}``."""
    dtype = dtype or _float_dtype(std)
    return {"log_gamma": std * draw_normal((batch,), generator, dtype)}


def apply_gamma(x: torch.Tensor, params: dict, eps: float = 1e-6) -> torch.Tensor:
    """Raise ``x`` (B, C, *spatial), expected in [0, 1], to the drawn power (clamped at ``eps`` for gradients)."""
    return x.clamp_min(eps) ** torch.exp(per_item(params["log_gamma"], x.ndim - 2))
