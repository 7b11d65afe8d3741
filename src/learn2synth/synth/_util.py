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


def sample_field(coarse: torch.Tensor, shape: Sequence[int], zoom: torch.Tensor | None = None) -> torch.Tensor:
    """Linearly interpolate a coarse control grid (B, C, *grid) onto a full image grid ``shape``.

    ``zoom`` (D,) in (0, 1] samples only the central fraction of the control grid along each axis, so the
    number of control points spanning the image varies continuously (and differentiably) with it.
    """
    if zoom is None:
        return resize(coarse, shape)
    ndim = coarse.ndim - 2
    pos = spatial_grid(shape, coarse.device, coarse.dtype) * zoom.reshape(ndim, *[1] * ndim)
    grid = pos.flip(0).movedim(0, -1).unsqueeze(0).expand(coarse.shape[0], *shape, ndim)
    return F.grid_sample(coarse, grid, mode="bilinear", padding_mode="border", align_corners=True)


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalized 1D Gaussian kernels, one per entry of ``sigma`` (N,), shape (N, 2 * radius + 1).

    Differentiable in ``sigma``; a sigma of (about) zero gives a delta kernel.
    """
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    s = sigma.clamp_min(1e-3).unsqueeze(-1)
    k = torch.exp(-0.5 * (t / s) ** 2)
    return k / k.sum(-1, keepdim=True)


def blur(x: torch.Tensor, sigma: torch.Tensor, truncate: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur with its own width per batch item and axis, in one vectorized pass.

    Parameters
    ----------
    x : (B, C, *spatial) tensor.
    sigma : (B, D) standard deviations in voxels (or (B,) / scalar for isotropic blur).
    """
    ndim = x.ndim - 2
    b, c = x.shape[:2]
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    sigma = sigma.reshape(-1, sigma.shape[-1] if sigma.ndim == 2 else 1).expand(b, ndim)
    radius = int(math.ceil(truncate * float(sigma.detach().max()))) if sigma.numel() else 0
    if radius < 1:
        return x
    conv = getattr(F, f"conv{ndim}d")
    y = x.reshape(1, b * c, *x.shape[2:])
    for axis in range(ndim):
        k = gaussian_kernels(sigma[:, axis], radius).repeat_interleave(c, dim=0)
        shape = [b * c, 1] + [1] * ndim
        shape[2 + axis] = 2 * radius + 1
        pad = [0, 0] * ndim
        pad[2 * (ndim - 1 - axis)] = pad[2 * (ndim - 1 - axis) + 1] = radius
        y = conv(F.pad(y, pad, mode="replicate"), k.reshape(shape), groups=b * c)
    return y.reshape(x.shape)


def per_item(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a per-item vector (B,) to broadcast against (B, C, *spatial)."""
    return v.reshape(-1, *[1] * (ndim + 1))
