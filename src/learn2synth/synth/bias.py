"""Multiplicative bias field: ``image * exp(field)``, with ``field`` a smooth random Gaussian field.

The field is a coarse grid of standard normal control points, scaled by a strength drawn in
``[0, std]`` per item and linearly interpolated to the image. ``scale`` sets the number of control points
per voxel (0.025 on 256 voxels gives 6.4); it is continuous and differentiable, because the image samples
the central fraction of a fixed-size control grid (see :func:`._util.sample_field`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ._util import _float_dtype, draw_normal, draw_uniform, per_item, sample_field


def sample_bias_field(
    batch: int,
    shape: Sequence[int],
    *,
    std=0.7,
    scale=0.025,
    generator: torch.Generator,
    dtype=None,
) -> dict:
    """Draw a bias field per item.

    Parameters
    ----------
    std : maximum strength (std of the log-field); each item draws its strength in [0, std].
    scale : control points per voxel along each axis (at least 2 control points span the image).

    Returns
    -------
    dict with ``strength`` (B,), ``coeffs`` (B, 1, *grid) standard normal control points and ``zoom``
    (D,), the fraction of the control grid that spans the image.
    """
    dtype = dtype or _float_dtype(std, scale)
    scale = torch.as_tensor(scale, dtype=dtype, device=generator.device)
    sizes = torch.tensor([float(n) for n in shape], dtype=dtype, device=generator.device)
    points = (scale * sizes).clamp_min(2.0)
    grid = [max(2, math.ceil(float(p))) for p in points.detach()]
    zoom = (points - 1) / torch.tensor([g - 1.0 for g in grid], dtype=dtype, device=generator.device)
    strength = draw_uniform(0.0, std, (batch,), generator, dtype)
    coeffs = draw_normal((batch, 1, *grid), generator, dtype)
    return {"strength": strength, "coeffs": coeffs, "zoom": zoom}


def bias_log_field(params: dict, shape: Sequence[int]) -> torch.Tensor:
    """The log of the bias field (B, 1, *shape).

    The strength scales the control points before interpolation (both are linear): the same field up to
    float rounding, without a full-size multiplication.
    """
    coeffs = params["coeffs"]
    return sample_field(per_item(params["strength"], coeffs.ndim - 2) * coeffs, shape, params["zoom"])


def apply_bias_field(x: torch.Tensor, params: dict | Sequence[dict]) -> torch.Tensor:
    """Multiply ``x`` (B, C, *spatial) by the drawn bias field, or by the product of several (a sequence of
    draws, e.g. fields at several scales: one ``exp`` of their summed log-fields).

    A draw's ``zoom`` may be None: its control grid then spans the image exactly.
    """
    fields = [params] if isinstance(params, Mapping) else params
    return x * torch.exp(sum(bias_log_field(p, x.shape[2:]) for p in fields))
