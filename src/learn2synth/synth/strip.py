"""Random skull stripping: zero the intensities of non-brain labels beyond a random margin around the brain.

Skull-stripped scans (OASIS, most research pipelines) keep the brain, some extra-cerebral CSF and a rim of dura
and vessels, and set everything else to exactly 0. A model trained on full-head synthesis never sees that, and
one trained on fully stripped synthesis calls every bright non-brain voxel left by a real stripping tool cortex.
So, as SynthSeg does, each batch item is stripped with probability ``prob``: the voxels whose label is in the
strip set (background, extra-cerebral CSF, skull, scalp, eyes...) and that lie farther than a random margin
(voxels, drawn per item in ``margin``) from the brain (every other label) become 0. The targets do not change:
stripped labels already have target 0.

The mask depends on the labels only, so it is not differentiable (nothing to learn in it) and is applied last,
after noise, because stripping tools write exact zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._util import dilate


def sample_strip(batch: int, *, prob: float = 0.5, margin: Sequence[int] = (0, 3),
                 generator: torch.Generator) -> dict:
    """Draw which items are stripped (``strip``, (B,) bool) and each item's margin in voxels (``margin``, (B,))."""
    lo, hi = int(margin[0]), int(margin[1])
    if not (0 <= lo <= hi):
        raise ValueError(f"strip margin must be [lo, hi] with 0 <= lo <= hi, got {list(margin)}")
    device = generator.device
    strip = torch.rand(batch, generator=generator, device=device) < prob
    radius = torch.randint(lo, hi + 1, (batch,), generator=generator, device=device)
    return {"strip": strip, "margin": radius}


def brain_mask(labels: torch.Tensor, strip_lut: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Voxels (B, 1, *spatial) kept: not a strip label, or within ``margin[b]`` voxels (chessboard) of one.

    ``strip_lut[v]`` is True for the label values that are stripped.
    """
    brain = ~strip_lut[labels]
    keep = brain.clone()
    for radius in margin.unique().tolist():
        if radius == 0:
            continue
        items = (margin == radius).nonzero().flatten()
        keep[items] = dilate(brain[items].float(), radius) > 0
    return keep


def apply_strip(image: torch.Tensor, labels: torch.Tensor, params: dict, strip_lut: torch.Tensor) -> torch.Tensor:
    """Zero the stripped voxels of the items drawn for stripping; other items are returned unchanged."""
    chosen = params["strip"]
    if not bool(chosen.any()):
        return image
    keep = brain_mask(labels, strip_lut, params["margin"])
    keep = keep | ~chosen.reshape(-1, *[1] * (labels.ndim - 1))
    return image * keep.to(image.dtype)
