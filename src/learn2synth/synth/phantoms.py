"""Procedural brain-like label maps, so the demo and the tests need no downloaded data.

Labels: 0 background, 1 outer CSF, 2 cortex (grey matter), 3 white matter, 4 ventricles, 5.. deep grey
matter nuclei. Every structure is a level set of a smooth random field, so the shapes are nested, smooth
and irregular, and each batch item is a different "subject". One vectorized pass for the batch, 2D or 3D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._util import blur, draw_normal, draw_uniform, resize, spatial_grid


def _smooth_noise(batch: int, shape, points: int, generator, dtype) -> torch.Tensor:
    """Smooth random field (B, 1, *shape) with roughly unit amplitude and ``points`` control points per axis."""
    coarse = draw_normal((batch, 1, *[points] * len(shape)), generator, dtype)
    field = resize(coarse, shape)
    sigma = torch.full((1,), max(shape) / (2.5 * points), dtype=dtype, device=field.device)
    field = blur(field, sigma)
    return field / field.flatten(1).std(1).reshape(-1, *[1] * (len(shape) + 1)).clamp_min(1e-6)


def _radius(grid, center, axes, ndim):
    """Ellipsoidal radius (B, 1, *shape) of the normalized grid around per-item centres/semi-axes (B, D)."""
    view = (-1, ndim, *[1] * ndim)
    return (((grid.unsqueeze(0) - center.reshape(view)) / axes.reshape(view)) ** 2).sum(1, keepdim=True).sqrt()


def phantom_labels(
    batch: int,
    shape: Sequence[int],
    n_labels: int = 8,
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """Random brain-like label maps (B, 1, *shape), int64, values in [0, n_labels).

    Parameters
    ----------
    n_labels : number of labels including background (>= 4: background, CSF, cortex, white matter;
        5 adds ventricles; each further label is a deep nucleus).
    """
    if n_labels < 4:
        raise ValueError(f"phantoms need at least 4 labels (background, CSF, cortex, white matter), got {n_labels}")
    shape, ndim, dtype = tuple(shape), len(shape), torch.float32
    device = generator.device
    grid = spatial_grid(shape, device, dtype)
    zeros = torch.zeros(batch, ndim, device=device, dtype=dtype)
    head_axes = draw_uniform(0.75, 0.92, (batch, ndim), generator, dtype)
    outer = _radius(grid, zeros, head_axes, ndim) * (1 + 0.06 * _smooth_noise(batch, shape, 4, generator, dtype))
    # cortical folds move the grey matter surface, capped so a CSF shell always separates it from background
    folds = (0.05 * _smooth_noise(batch, shape, 10, generator, dtype)).clamp(max=0.02)
    labels = torch.zeros(batch, 1, *shape, dtype=torch.long, device=device)
    labels[outer < 1.0] = 1
    labels[outer < 0.90 + folds] = 2
    labels[(outer < 0.77 + folds) & (labels == 2)] = 3
    if n_labels >= 5:
        vent_axes = head_axes * draw_uniform(0.18, 0.3, (batch, ndim), generator, dtype)
        vent = _radius(grid, zeros, vent_axes, ndim) * (1 + 0.25 * _smooth_noise(batch, shape, 3, generator, dtype))
        labels[(vent < 1.0) & (labels == 3)] = 4
    for label in range(5, n_labels):
        direction = draw_normal((batch, ndim), generator, dtype)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-6)
        center = direction * draw_uniform(0.3, 0.5, (batch, 1), generator, dtype) * head_axes
        axes = draw_uniform(0.08, 0.16, (batch, ndim), generator, dtype)
        blob = _radius(grid, center, axes, ndim) * (1 + 0.2 * _smooth_noise(batch, shape, 3, generator, dtype))
        labels[(blob < 1.0) & (labels >= 3)] = label
    return labels
