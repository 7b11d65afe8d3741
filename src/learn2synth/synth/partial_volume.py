"""Partial volume at a labelled boundary: voxels of one set of labels next to another take part of its intensity.

A label map paints every voxel with one tissue, so a sulcus one voxel wide is rendered as pure CSF. In a real
scan that voxel holds CSF and the grey matter of both banks; FreeSurfer-style segmentations (the OASIS
references, SynthSeg's own label maps) still label it background. Measured on the shipped brain model and OASIS
subject 0001 (T1): 182k voxels labelled background were called cortex, with a median intensity of 0.35 on a scale
where CSF is 0.06 and cortex 0.56, i.e. about half grey matter; the label maps have as many such voxels as OASIS
(non-brain voxels adjacent to cortex: 0.26-0.37 of the cortex volume in SynthSeg's maps, 0.26-0.31 in OASIS),
but the synthesis never showed them mixed.

So the voxels of the ``into`` labels that touch (face and diagonal neighbours) a voxel of the ``sources`` labels
become ``(1 - f) * own + f * source`` intensity, with ``f`` drawn per voxel in ``fraction`` and the source
intensity that of the neighbouring source class (same Gaussian draw as the source voxels, same texture field). With
``width`` > 1 the next rings of ``into`` voxels (reached through ``into`` voxels only) mix too, by a fraction
falling linearly with the ring: on 0001, 34% of those false positives lie two voxels from the cortex label. The
targets do not change. Applied after the Gaussian mixture, before the bias field and the resolution, as partial
volume is part of the acquired signal.

Off by default: two fine-tunes of the shipped coronal model with it (width 1 and fraction 0-0.8; width 2 and
0.3-0.9) left those false positives and the cortex Dice where they were (``benchmarks/results/segment.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._util import draw_uniform
from .gmm import apply_gmm


def sample_partial_volume(batch: int, shape: Sequence[int], *, fraction: Sequence[float] = (0.0, 0.8),
                          prob: float = 1.0, generator: torch.Generator, dtype=torch.float32) -> dict:
    """Draw the mixing fraction of every voxel (``fraction``, (B, 1, *shape)); items not drawn (probability
    ``1 - prob``) get 0 everywhere."""
    lo, hi = float(fraction[0]), float(fraction[1])
    if not (0.0 <= lo <= hi <= 1.0):
        raise ValueError(f"partial_volume fraction must be [lo, hi] within [0, 1], got {list(fraction)}")
    on = torch.rand(batch, generator=generator, device=generator.device) < prob
    f = draw_uniform(lo, hi, (batch, 1, *shape), generator, dtype)
    return {"fraction": f * on.to(dtype).reshape(-1, *[1] * (len(shape) + 1))}


def boundary_source(labels: torch.Tensor, classes: torch.Tensor, sources: torch.Tensor, into: torch.Tensor,
                    width: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """For every ``into`` voxel within ``width`` voxels (face and diagonal steps through ``into`` voxels) of a
    ``sources`` voxel: the intensity class of the nearest source (-1 elsewhere) and a weight of the mixing
    fraction, 1 on the first ring and falling linearly, ``(width - k + 1) / width`` on ring ``k`` (0 elsewhere).

    ``sources``/``into`` are boolean lookup tables over label values (one extra False entry stands for larger
    values); where several source classes reach a voxel on the same ring, the largest class index wins.
    """
    if int(width) < 1:
        raise ValueError(f"partial_volume width must be a positive number of voxels, got {width}")
    is_source = sources[labels.clamp(max=len(sources) - 1)]
    is_into = into[labels.clamp(max=len(into) - 1)]
    pool = F.max_pool2d if labels.ndim == 4 else F.max_pool3d
    front = torch.where(is_source, classes, -1)
    near = torch.full_like(classes, -1)
    weight = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    for ring in range(1, int(width) + 1):
        reached = pool(front.float(), kernel_size=3, stride=1, padding=1).long()
        new = is_into & (near < 0) & (reached >= 0)
        near = torch.where(new, reached, near)
        weight = torch.where(new, (width - ring + 1) / width, weight)
        front = torch.where(new, reached, -1)
    return near, weight


def apply_partial_volume(image: torch.Tensor, classes: torch.Tensor, near: torch.Tensor, weight: torch.Tensor,
                         gmm: dict, params: dict) -> torch.Tensor:
    """Mix the source intensity into the boundary voxels ``near``, by the drawn fraction times ``weight``
    (both from :func:`boundary_source`); differentiable in ``image`` and in the Gaussian mixture's draws ``gmm``."""
    border = near >= 0
    if not bool(border.any()):
        return image
    source = apply_gmm(torch.where(border, near, classes), gmm)
    f = params["fraction"] * weight.to(image.dtype)
    return image + f * (source - image)
