"""Simulated acquisition resolution (partial volume).

Each item draws a voxel size (in units of the input voxel, per axis): isotropic in [1, max_iso], or
anisotropic with one random axis in [1, max_aniso] and the others at 1 (thick slices), as SynthSeg does.
The image is blurred with a Gaussian whose FWHM matches the drawn voxel size (deconvolved by the native
voxel: ``sigma = FWHM_TO_SIGMA * sqrt(res**2 - 1)``), sampled on the coarse lattice ``k * res`` and
linearly interpolated back to the input grid.

Why hand-written and not ``F.interpolate``: every item has its own lattice, which ``F.interpolate`` cannot do
in one batched call; a per-axis gather-based linear resampler keeps the whole batch in one pass and stays
differentiable in the voxel size.
"""

from __future__ import annotations

import torch

from ._util import FWHM_TO_SIGMA, _float_dtype, blur, draw_uniform


def sample_resolution(
    batch: int,
    ndim: int,
    *,
    max_res_iso=4.0,
    max_res_aniso=8.0,
    prob_iso: float = 0.5,
    generator: torch.Generator,
    dtype=None,
) -> dict:
    """Draw a voxel size (B, D) per item. Returns ``{"res": (B, D)}``; the ranges may require grad."""
    dtype = dtype or _float_dtype(max_res_iso, max_res_aniso)
    device = generator.device
    iso = draw_uniform(1.0, max_res_iso, (batch, 1), generator, dtype).expand(batch, ndim)
    aniso_value = draw_uniform(1.0, max_res_aniso, (batch, 1), generator, dtype)
    axis = torch.randint(ndim, (batch, 1), generator=generator, device=device)
    on_axis = torch.arange(ndim, device=device).unsqueeze(0) == axis
    aniso = torch.where(on_axis, aniso_value, torch.ones_like(aniso_value))
    use_iso = (torch.rand(batch, 1, generator=generator, device=device) < prob_iso).expand(batch, ndim)
    return {"res": torch.where(use_iso, iso, aniso)}


def _linear_along(x: torch.Tensor, pos: torch.Tensor, axis: int) -> torch.Tensor:
    """Sample ``x`` linearly at fractional positions ``pos`` (B, L) along spatial ``axis`` (clamped)."""
    xm = x.movedim(axis + 2, -1)
    n = xm.shape[-1]
    pos = pos.clamp(0, n - 1)
    lo = pos.detach().floor().clamp(max=n - 2).long() if n > 1 else torch.zeros_like(pos).long()
    t = (pos - lo).reshape(pos.shape[0], *[1] * (xm.ndim - 2), pos.shape[1])
    index = lo.reshape(t.shape).expand(*xm.shape[:-1], -1)
    left = xm.gather(-1, index)
    right = xm.gather(-1, (index + 1).clamp(max=n - 1))
    return (left + t * (right - left)).movedim(-1, axis + 2)


def downsample_upsample(x: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` on the lattice ``k * res`` (per item and axis) and interpolate back linearly."""
    for axis in range(x.ndim - 2):
        n = x.shape[axis + 2]
        r = res[:, axis : axis + 1]
        q = torch.arange(n, device=x.device, dtype=x.dtype).unsqueeze(0) / r
        k = q.detach().floor()
        w = q - k
        left = _linear_along(x, k * r, axis)
        right = _linear_along(x, (k + 1) * r, axis)
        w = w.reshape(w.shape[0], *[1] * (x.ndim - 2), n).movedim(-1, axis + 2)
        x = left + w * (right - left)
    return x


def apply_resolution(x: torch.Tensor, params: dict) -> torch.Tensor:
    """Blur ``x`` (B, C, *spatial) to the drawn resolution and resample it through the coarse lattice."""
    res = params["res"].to(x.dtype)
    sigma = FWHM_TO_SIGMA * torch.sqrt((res.square() - 1).clamp_min(1e-8))
    return downsample_upsample(blur(x, sigma), res)
