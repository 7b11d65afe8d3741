"""Unseen MRI contrasts made from a T1 scan and its tissue labels, for testing contrast-agnostic models.

The recipe (deterministic for a seed), applied to a skull-stripped T1 volume whose tissue medians are measured
in its 4-class labels (CSF c, cortex g, white matter w; in T1 c < g < w):

1. **Intensity remap.** A piecewise-linear transfer function of the T1 intensity with knots at 0, c, g, w and
   the maximum, sending them to the target contrast's values (below). Because it acts on intensities, not on
   labels, every voxel gets a value, partial-volume voxels fall between their tissues, and tissue the labels
   call background (sulcal CSF, dura left by skull stripping) is remapped like the tissue it looks like.

   | contrast | 0 | CSF | cortex | WM | max | like |
   |---|---|---|---|---|---|---|
   | ``t2`` | 0 | 1.00 | 0.60 | 0.35 | 0.30 | T2-weighted: CSF bright, GM > WM |
   | ``flair`` | 0 | 0.15 | 0.80 | 0.55 | 0.50 | FLAIR: CSF suppressed, GM > WM |
   | ``pd`` | 0 | 0.85 | 0.80 | 0.60 | 0.55 | proton density: low contrast |

2. **Bias field**: ``exp(0.25 * F)``, ``F`` a smooth standard field (a 4^3 random grid upsampled, cubic).
3. **Blur**: Gaussian, sigma 0.7 voxel (a slightly lower effective resolution).
4. **Rician noise**: sigma 3% of the 99th percentile, inside the scan's support only (a skull-stripped scan
   keeps its exact zeros).
"""

from __future__ import annotations

import numpy as np

TARGETS = {
    "t2": (0.0, 1.00, 0.60, 0.35, 0.30),
    "flair": (0.0, 0.15, 0.80, 0.55, 0.50),
    "pd": (0.0, 0.85, 0.80, 0.60, 0.55),
}
CSF, CORTEX, WM = 4, 1, 3  # OASIS seg4 values


def remap(t1: np.ndarray, seg4: np.ndarray, contrast: str) -> np.ndarray:
    """Step 1 only: the transfer function of the recipe applied to ``t1``."""
    medians = [float(np.median(t1[seg4 == k])) for k in (CSF, CORTEX, WM)]
    knots = [0.0, *medians, float(t1.max())]
    if not all(a < b for a, b in zip(knots, knots[1:], strict=False)):
        raise ValueError(f"T1 tissue medians are not ordered 0 < CSF < cortex < WM < max: {knots}")
    return np.interp(t1, knots, TARGETS[contrast]).astype(np.float32)


def make_contrast(t1: np.ndarray, seg4: np.ndarray, contrast: str, seed: int = 0) -> np.ndarray:
    """The whole recipe (module docstring): remap, bias, blur, Rician noise inside the support."""
    from scipy import ndimage

    if contrast == "t1":
        return t1.astype(np.float32)
    rng = np.random.default_rng(seed)
    image = remap(t1, seg4, contrast)
    coarse = rng.standard_normal((4, 4, 4))
    field = ndimage.zoom(coarse, [n / 4 for n in t1.shape], order=3, mode="nearest")[
        tuple(slice(0, n) for n in t1.shape)]
    image = ndimage.gaussian_filter(image * np.exp(0.25 * field), 0.7)
    sigma = 0.03 * float(np.percentile(image[t1 > 0], 99))
    noisy = np.hypot(image + sigma * rng.standard_normal(image.shape), sigma * rng.standard_normal(image.shape))
    return np.where(t1 > 0, noisy, 0.0).astype(np.float32)
