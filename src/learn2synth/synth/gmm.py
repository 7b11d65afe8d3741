"""Gaussian mixture intensities: every intensity class gets its own mean and std per batch item.

``image = mean[class] + std[class] * noise`` with a standard normal ``noise`` field, optionally smoothed
(``smooth`` voxels) so the within-class texture is not white noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._util import _float_dtype, blur, draw_normal, draw_uniform


def _bounds(prior, n_classes: int):
    """Split a prior range into (lo, hi), each scalar or per class (K,). Accepts (2,) or (K, 2)."""
    prior = prior if isinstance(prior, torch.Tensor) else torch.as_tensor(prior, dtype=torch.float64)
    if prior.ndim == 2 and prior.shape[0] != n_classes:
        raise ValueError(f"per-class prior has {prior.shape[0]} rows but there are {n_classes} classes")
    return prior[..., 0], prior[..., 1]


def sample_gmm(
    batch: int,
    n_classes: int,
    shape: Sequence[int],
    *,
    mean=(0.1, 0.9),
    std=(0.02, 0.1),
    smooth: float = 0.0,
    generator: torch.Generator,
    dtype=None,
) -> dict:
    """Draw class means and stds uniformly in their prior ranges, and the noise field.

    Parameters
    ----------
    mean, std : ranges (lo, hi), shared by all classes, or (K, 2) per class; tensors may require grad.
    smooth : Gaussian smoothing (voxels) of the noise field before scaling (0: none).

    Returns
    -------
    dict with ``means`` (B, K), ``stds`` (B, K), ``noise`` (B, 1, *shape), ``smooth`` (float).
    """
    dtype = dtype or _float_dtype(mean, std)
    mean_lo, mean_hi = _bounds(mean, n_classes)
    std_lo, std_hi = _bounds(std, n_classes)
    means = draw_uniform(mean_lo.to(dtype), mean_hi.to(dtype), (batch, n_classes), generator, dtype)
    stds = draw_uniform(std_lo.to(dtype), std_hi.to(dtype), (batch, n_classes), generator, dtype)
    noise = draw_normal((batch, 1, *shape), generator, dtype)
    return {"means": means, "stds": stds, "noise": noise, "smooth": float(smooth)}


def apply_gmm(classes: torch.Tensor, params: dict) -> torch.Tensor:
    """Render intensity-class maps (B, 1, *spatial), integers in [0, K), into a float image (B, 1, *spatial)."""
    means, stds, noise = params["means"], params["stds"], params["noise"]
    index = classes.reshape(classes.shape[0], -1).long()
    mu = means.gather(1, index).reshape(classes.shape)
    sd = stds.gather(1, index).reshape(classes.shape)
    if params.get("smooth", 0.0) > 0:
        noise = blur(noise, torch.full((1,), params["smooth"], dtype=noise.dtype, device=noise.device))
        noise = noise / noise.flatten(1).std(1).reshape(-1, *[1] * (noise.ndim - 1)).clamp_min(1e-6)
    return torch.addcmul(mu, sd, noise)  # mu + sd * noise without the temporary product
