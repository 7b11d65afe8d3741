"""Small tensor helpers shared by the synthesis effects (one code path for 2D and 3D).

Everything here is deterministic except ``draw_*``, which take an explicit generator. Tensors are
(B, C, *spatial); the number of spatial dimensions is ``x.ndim - 2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _float_dtype(*values, default=torch.float32) -> torch.dtype:
    """The floating dtype of the first tensor among ``values`` (the priors), else ``default``."""
    for v in values:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v.dtype
    return default


def draw_uniform(lo, hi, size: Sequence[int], generator: torch.Generator, dtype=None) -> torch.Tensor:
    """Reparameterized uniform draw ``lo + (hi - lo) * u`` with ``u ~ U(0, 1)``.

    ``lo`` and ``hi`` may be floats or tensors with ``requires_grad``: the result is differentiable in both.
    """
    dtype = dtype or _float_dtype(lo, hi)
    u = torch.rand(tuple(size), generator=generator, device=generator.device, dtype=dtype)
    return lo + (hi - lo) * u


def draw_normal(size: Sequence[int], generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """Standard normal draw on the generator's device."""
    return torch.randn(tuple(size), generator=generator, device=generator.device, dtype=dtype)


def interp_mode(ndim: int) -> str:
    """The linear interpolation mode name torch uses for ``ndim`` spatial dimensions."""
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[ndim]


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Linear up/down-sampling with corners aligned (control points sit on the image border)."""
    return F.interpolate(x, size=tuple(size), mode=interp_mode(x.ndim - 2), align_corners=True)


def spatial_grid(shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalized coordinates in [-1, 1], shape (D, *shape), in index order (axis 0 first)."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def linear_rows(pos: torch.Tensor, n: int) -> torch.Tensor:
    """Rows of linear interpolation at positions ``pos`` (..., L) on an axis of ``n`` samples: (..., L, n).

    Positions are clamped to [0, n - 1] (border padding). Row ``l`` holds ``1 - t`` at ``floor(pos)`` and ``t``
    at the next sample, so ``rows @ values`` interpolates; differentiable in ``pos``.
    """
    pos = pos.clamp(0, n - 1)
    lo = pos.detach().floor().clamp(max=max(n - 2, 0)).long().unsqueeze(-1)
    t = pos.unsqueeze(-1) - lo
    cols = torch.arange(n, device=pos.device)
    return torch.where(cols == lo, 1 - t, 0.0) + torch.where(cols == (lo + 1).clamp(max=n - 1), t, 0.0)


def apply_along(x: torch.Tensor, matrix: torch.Tensor, axis: int) -> torch.Tensor:
    """Apply a linear map along spatial ``axis`` of ``x`` (B, C, *spatial) as one batched matrix product.

    ``matrix`` is (n_out, n) shared by the batch, or (B, n_out, n) per item; the axis length becomes ``n_out``.
    """
    b, n = x.shape[0], x.shape[axis + 2]
    pre, post = math.prod(x.shape[1 : axis + 2]), math.prod(x.shape[axis + 3 :])
    out_shape = (*x.shape[: axis + 2], matrix.shape[-2], *x.shape[axis + 3 :])
    if matrix.ndim == 2:
        if post == 1:
            return (x.reshape(-1, n) @ matrix.T).reshape(out_shape)
        return torch.matmul(matrix, x.reshape(b * pre, n, post)).reshape(out_shape)
    if post == 1:
        return torch.bmm(x.reshape(b, pre, n), matrix.transpose(1, 2)).reshape(out_shape)
    return torch.matmul(matrix.unsqueeze(1), x.reshape(b, pre, n, post)).reshape(out_shape)


def sample_field(coarse: torch.Tensor, shape: Sequence[int], zoom: torch.Tensor | None = None) -> torch.Tensor:
    """Linearly interpolate a coarse control grid (B, C, *grid) onto a full image grid ``shape``.

    ``zoom`` (D,) in (0, 1] samples only the central fraction of the control grid along each axis, so the
    number of control points spanning the image varies continuously (and differentiably) with it. Without
    ``zoom`` this equals :func:`resize` (corners aligned).

    Why not ``F.interpolate`` / ``F.grid_sample``: linear interpolation is separable, so one small
    (n, grid) matrix per axis does it in a few matrix products. Measured on 2 CPU threads for a (2, 3, 4, 4, 4)
    grid to 96^3: ~5x faster than ``F.interpolate`` (trilinear), and ~7x faster than ``grid_sample`` for the
    zoomed bias field; same values up to float rounding.
    """
    for axis, n in enumerate(shape):
        g = coarse.shape[axis + 2]
        if zoom is None:
            pos = torch.linspace(0.0, g - 1.0, n, device=coarse.device, dtype=coarse.dtype)
        else:
            # grid_sample's align_corners convention: normalized -1..1 maps to control points 0..g-1
            pos = (torch.linspace(-1.0, 1.0, n, device=coarse.device, dtype=coarse.dtype) * zoom[axis] + 1) / 2
            pos = pos * (g - 1)
        coarse = apply_along(coarse, linear_rows(pos, g), axis)
    return coarse


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalized 1D Gaussian kernels, one per entry of ``sigma`` (N,), shape (N, 2 * radius + 1).

    Differentiable in ``sigma``; a sigma of (about) zero gives a delta kernel.
    """
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    s = sigma.clamp_min(1e-3).unsqueeze(-1)
    k = torch.exp(-0.5 * (t / s) ** 2)
    return k / k.sum(-1, keepdim=True)


def blur_matrix(sigma: torch.Tensor, n: int, radius: int) -> torch.Tensor:
    """Gaussian blur along one axis of ``n`` voxels as matrices (N, n, n), one per entry of ``sigma`` (N,).

    Kernels of half-width ``radius`` (see :func:`gaussian_kernels`), with replicate padding: taps that fall
    outside the axis add to its first or last voxel. Differentiable in ``sigma``. Built by indexing (no
    scatter-add), so it is bit-reproducible on GPUs too.
    """
    kernels = gaussian_kernels(sigma, radius)  # (N, 2R + 1)
    if n == 1:
        return kernels.sum(-1).reshape(-1, 1, 1)
    last = 2 * radius

    def taps(values, index):  # values[:, index] (index_select: advanced indexing is ~100x slower on CPU here)
        return values.index_select(1, index.clamp(0, last).flatten()).reshape(-1, *index.shape)

    rows = torch.arange(n, device=sigma.device)
    tap = rows.unsqueeze(0) - rows.unsqueeze(1) + radius  # tap of row m that lands on column j
    m = torch.where((tap >= 0) & (tap <= last), taps(kernels, tap), 0.0)
    # replicate padding: row m's taps up to R - m land on column 0, those from n - 1 - m + R on column n - 1
    first_taps = kernels.cumsum(-1)
    last_taps = kernels.flip(-1).cumsum(-1).flip(-1)
    to_first, to_last = radius - rows, n - 1 - rows + radius
    m[:, :, 0] = torch.where(to_first >= 0, taps(first_taps, to_first), 0.0)
    m[:, :, -1] = torch.where(to_last <= last, taps(last_taps, to_last), 0.0)
    return m


def blur(x: torch.Tensor, sigma: torch.Tensor, truncate: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur with its own width per batch item and axis, in one vectorized pass.

    Edges are replicate-padded; kernels are truncated at ``truncate`` times the largest sigma of the batch.

    Why a matrix per axis and not a grouped convolution: on CPU, PyTorch's depthwise conv with a 1D kernel
    runs at a small fraction of matmul speed. Measured on 2 threads, blurring (2, 1, 96^3) with 11-tap
    kernels took ~320 ms as three grouped conv3d and ~80 ms as three (96 x 96) matrix products per item,
    and the matrix cost does not grow with the kernel width. Same values up to float rounding.

    Parameters
    ----------
    x : (B, C, *spatial) tensor.
    sigma : (B, D) standard deviations in voxels (or (B,) / scalar for isotropic blur).
    """
    ndim = x.ndim - 2
    b = x.shape[0]
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    sigma = sigma.reshape(-1, sigma.shape[-1] if sigma.ndim == 2 else 1).expand(b, ndim)
    radius = int(math.ceil(truncate * float(sigma.detach().max()))) if sigma.numel() else 0
    if radius < 1:
        return x
    for axis in range(ndim):
        x = apply_along(x, blur_matrix(sigma[:, axis], x.shape[axis + 2], radius), axis)
    return x


def per_item(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a per-item vector (B,) to broadcast against (B, C, *spatial)."""
    return v.reshape(-1, *[1] * (ndim + 1))


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow a float 0/1 mask (B, C, *spatial) by ``radius`` voxels, chessboard distance (face and diagonal steps).

    A chessboard dilation is separable: one max-pool per axis, each of width ``2 * radius + 1``, gives the same
    result as one pool of that width on every axis, about 10x faster in 3D (radius 3 on 160x192x224).
    """
    if radius <= 0:
        return mask
    pool = F.max_pool2d if mask.ndim == 4 else F.max_pool3d
    for axis in range(mask.ndim - 2):
        size = [1] * (mask.ndim - 2)
        size[axis] = 2 * radius + 1
        mask = pool(mask, kernel_size=size, stride=1, padding=[k // 2 for k in size])
    return mask
