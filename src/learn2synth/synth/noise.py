"""Acquisition noise: additive Gaussian, or magnitude (Rician / noncentral chi) noise.

Gaussian: ``x + sigma * z``. Magnitude noise with ``dof`` real components:
``sqrt((x + sigma z_1)^2 + sum_{i=2..dof} (sigma z_i)^2)``; ``dof=2`` is Rician.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._util import _float_dtype, draw_normal, draw_uniform, per_item

KINDS = ("gaussian", "rician", "chi")


def sample_noise(
    batch: int,
    shape: Sequence[int],
    *,
    std=(0.0, 0.1),
    kind: str = "gaussian",
    dof: int = 2,
    generator: torch.Generator,
    dtype=None,
) -> dict:
    """Draw a noise level in the range ``std`` = (lo, hi) per item, and the standard normal fields.

    Returns ``{"sigma": (B,), "z": (B, n, *shape), "kind": str}`` with ``n`` = 1 (gaussian), 2 (rician) or
    ``dof`` (chi).
    """
    if kind not in KINDS:
        raise ValueError(f"noise kind must be one of {KINDS}, not {kind!r}")
    lo, hi = std[0], std[1]
    dtype = dtype or _float_dtype(lo, hi, std)
    n = {"gaussian": 1, "rician": 2, "chi": int(dof)}[kind]
    sigma = draw_uniform(lo, hi, (batch,), generator, dtype)
    return {"sigma": sigma, "z": draw_normal((batch, n, *shape), generator, dtype), "kind": kind}


def apply_noise(x: torch.Tensor, params: dict) -> torch.Tensor:
    """Add the drawn noise to ``x`` (B, 1, *spatial)."""
    sigma = per_item(params["sigma"], x.ndim - 2)
    z = params["z"]
    noisy = x + sigma * z[:, :1]
    if params["kind"] == "gaussian":
        return noisy
    rest = sigma.square() * z[:, 1:].square().sum(1, keepdim=True)  # sigma^2 once, not per component
    return torch.sqrt(noisy.square() + rest + 1e-12)
