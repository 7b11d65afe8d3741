"""Bring a scan into a model's training space (axis orientation and voxel size) and its outputs back.

A 2D brain model learned coronal slices of 1 mm LIA volumes; a user's scan may be RAS, sagittally acquired,
0.8 x 0.8 x 3 mm. :func:`to_model_space` permutes and flips the axes to the closest match of the model's
orientation (exact, no interpolation: oblique scans are taken at their closest axis orientation, as
``mri_synthseg`` does for its crop) and resamples linearly to the model's voxel size; :func:`from_model_space`
resamples per-class posteriors (linear) back to the reoriented grid and undoes the permutation, so labels are
the argmax in the input's own grid, and the input's affine and header stay valid.

nibabel's orientation tools do the axis bookkeeping; ``scipy.ndimage.zoom`` does the resampling (grid-aligned
corners, so a round trip at the same voxel size is exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Placement:
    """How an input array maps to the model's grid: an orientation transform and a zoom."""

    transform: np.ndarray  # nibabel ornt (3, 2): for each input axis, the output axis and a flip
    reoriented_shape: tuple[int, ...]  # shape after reorientation, before resampling
    model_shape: tuple[int, ...]  # shape in the model's voxel size


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))


def to_model_space(array: np.ndarray, affine: np.ndarray, orientation: str | None, voxel_size,
                   order: int = 1) -> tuple[np.ndarray, Placement]:
    """``array`` (X, Y, Z) reoriented to ``orientation`` (e.g. ``"LIA"``; None keeps it) and resampled to
    ``voxel_size`` (mm, scalar or 3 values; None keeps it) with spline ``order``; returns it and its placement.

    Examples
    --------
    >>> a = np.arange(24, dtype=float).reshape(2, 3, 4)
    >>> b, p = to_model_space(a, np.diag([-1.0, 1.0, 1.0, 1.0]), "RAS", 1.0)
    >>> b.shape, bool((b == a[::-1]).all())
    ((2, 3, 4), True)
    """
    import nibabel.orientations as nio

    if orientation is None:
        transform = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    else:
        transform = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(tuple(orientation)))
    moved = nio.apply_orientation(array, transform)
    spacing = _spacing(affine)[transform[:, 0].argsort()]  # spacing of the reoriented axes
    target = spacing if voxel_size is None else np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))
    shape = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(moved.shape, spacing, target, strict=True))
    resampled = resize(moved, shape, order)
    return resampled, Placement(transform, tuple(moved.shape), shape)


def from_model_space(channels: np.ndarray, placement: Placement) -> np.ndarray:
    """Per-channel maps (C, *model_shape) back to the input grid (C, X, Y, Z): linear resampling, then the
    inverse axis permutation and flips."""
    import nibabel.orientations as nio

    transform = placement.transform
    inverse = np.empty_like(transform)  # input axis i went to axis transform[i, 0]: send it back, same flip
    inverse[transform[:, 0].astype(int)] = np.stack([np.arange(3), transform[:, 1]], axis=1)
    out = [nio.apply_orientation(resize(c, placement.reoriented_shape, 1), inverse) for c in channels]
    return np.stack(out)


def resize(array: np.ndarray, shape, order: int = 1) -> np.ndarray:
    """``array`` resampled to ``shape`` with corners aligned (unchanged, not copied, when the shape matches)."""
    if tuple(array.shape) == tuple(shape):
        return array
    from scipy.ndimage import zoom

    # zoom makes round(n * factor) voxels and, with grid_mode=False, aligns the first and last voxel centres
    factors = [t / n for n, t in zip(array.shape, shape, strict=True)]
    out = zoom(array.astype(np.float32, copy=False), factors, order=order, grid_mode=False, mode="nearest")
    assert out.shape == tuple(shape), (out.shape, shape)
    return out
