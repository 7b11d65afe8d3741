"""Simulated acquisition resolution (partial volume).

Each item draws a voxel size (in units of the input voxel, per axis): isotropic in [1, max_iso], or
anisotropic with one random axis in [1, max_aniso] and the others at 1 (thick slices), as SynthSeg does.
The image is blurred with a Gaussian whose FWHM matches the drawn voxel size (deconvolved by the native
voxel: ``sigma = FWHM_TO_SIGMA * sqrt(res**2 - 1)``), sampled on the coarse lattice ``k * res`` and
linearly interpolated back to the input grid.

Why hand-written and not ``F.interpolate`` plus a convolution: every item has its own lattice, which
``F.interpolate`` cannot do in one batched call, and the whole effect is linear and separable. Along each
axis, blur, lattice sampling and linear interpolation back compose into one (n x n) matrix per item
(:func:`resolution_matrix`), applied as a batched matrix product; the result is the same as blurring then
resampling, up to float rounding, and stays differentiable in the voxel size. Measured on 2 CPU threads for
(2, 1, 96^3): ~80 ms, against ~1 s for the previous grouped conv3d blur followed by gather-based resampling.
"""

from __future__ import annotations

import math

import torch

from ._util import FWHM_TO_SIGMA, _float_dtype, apply_along, blur_matrix, draw_uniform


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


def _lattice_taps(res: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input voxels and weights (B, n, 4) that make each output voxel of the lattice resampling.

    ``res`` (B,) is the voxel size along an axis of ``n`` voxels. Output voxel ``i`` sits at ``q = i / res`` on
    the coarse lattice, between lattice points ``k = floor(q)`` and ``k + 1``, whose values are themselves
    read linearly at ``k * res`` and ``(k + 1) * res`` of the input (clamped to the axis): four input taps.
    """
    r = res.unsqueeze(1)
    q = torch.arange(n, device=res.device, dtype=res.dtype).unsqueeze(0) / r
    k = q.detach().floor()
    w = q - k
    index, weight = [], []
    for pos, w_pos in ((k * r, 1 - w), ((k + 1) * r, w)):
        pos = pos.clamp(0, n - 1)
        lo = pos.detach().floor().clamp(max=max(n - 2, 0)).long()
        t = pos - lo
        index += [lo, (lo + 1).clamp(max=n - 1)]
        weight += [w_pos * (1 - t), w_pos * t]
    return torch.stack(index, -1), torch.stack(weight, -1)


def _tap_rows(index: torch.Tensor, weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Matrices (B, n, m) whose row ``i`` is ``sum_q weight[:, i, q] * rows[index[:, i, q]]``.

    ``rows`` is (n, m) shared by the batch or (B, n, m) per item; whole rows are copied with ``index_select``.
    """
    b, n = index.shape[:2]
    if rows.ndim == 3:
        index = index + rows.shape[1] * torch.arange(b, device=index.device).reshape(-1, 1, 1)
        rows = rows.reshape(-1, rows.shape[-1])
    out = 0
    for q in range(index.shape[-1]):
        picked = rows.index_select(0, index[..., q].flatten()).reshape(b, n, -1)
        out = torch.addcmul(out, weight[..., q : q + 1], picked) if q else weight[..., :1] * picked
    return out


def lattice_matrix(res: torch.Tensor, n: int) -> torch.Tensor:
    """Sampling on the lattice ``k * res`` and linear interpolation back, as matrices (B, n, n)."""
    return _tap_rows(*_lattice_taps(res, n), torch.eye(n, device=res.device, dtype=res.dtype))


def downsample_upsample(x: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` on the lattice ``k * res`` (per item and axis) and interpolate back linearly."""
    for axis in range(x.ndim - 2):
        x = apply_along(x, lattice_matrix(res[:, axis], x.shape[axis + 2]), axis)
    return x


def resolution_matrix(res: torch.Tensor, sigma: torch.Tensor, n: int, radius: int) -> torch.Tensor:
    """The whole effect along one axis of ``n`` voxels, (B, n, n): Gaussian blur, then lattice resampling.

    ``res`` and ``sigma`` are (B,); ``radius`` is the kernel half-width (0: no blur). Equal to
    ``lattice_matrix(res, n) @ blur_matrix(sigma, n, radius)``, built without the product: each row mixes the
    four blur rows its lattice taps read. No scatter-add, so bit-reproducible on GPUs too.
    """
    if radius < 1:
        return lattice_matrix(res, n)
    return _tap_rows(*_lattice_taps(res, n), blur_matrix(sigma, n, radius))


def apply_resolution(x: torch.Tensor, params: dict, truncate: float = 3.0) -> torch.Tensor:
    """Blur ``x`` (B, C, *spatial) to the drawn resolution and resample it through the coarse lattice.

    Kernels are truncated at ``truncate`` times the largest sigma of the batch.
    """
    res = params["res"].to(x.dtype)
    sigma = FWHM_TO_SIGMA * torch.sqrt((res.square() - 1).clamp_min(1e-8))
    radius = int(math.ceil(truncate * float(sigma.detach().max()))) if sigma.numel() else 0
    for axis in range(x.ndim - 2):
        x = apply_along(x, resolution_matrix(res[:, axis], sigma[:, axis], x.shape[axis + 2], radius), axis)
    return x
