"""New label maps from real ones, for a label-to-image generator to render: a random flip, affine and elastic
deformation (:mod:`learn2synth.synth.deform`, the synthesis's own), then a structure of another map of the batch
pasted in.

Only spatial moves and copies of existing voxels: a composed map holds no label value its batch did not hold.
Images given alongside (``images``) go through the same moves (nearest-neighbour warp, the donor's voxels
pasted), so a pair stays a pair.
"""

from __future__ import annotations

import torch

from ..synth import deformation_grid, sample_deform, warp


def compose_masks(labels: torch.Tensor, generator: torch.Generator, *, flip: float = 0.5, rotation: float = 10.0,
                  scaling: float = 0.1, elastic_std: float = 3.0, paste: float = 0.5,
                  images: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Composed label maps (B, 1, *spatial) from ``labels`` (B, 1, *spatial, integer), and ``images`` moved alike.

    Each map is deformed (first axis flipped with probability ``flip``, rotation up to ``rotation`` degrees,
    scaling by up to ``scaling``, elastic displacement of std up to ``elastic_std`` voxels); then, with
    probability ``paste``, one non-background class of another deformed map of the batch (the donor, drawn
    among the others) is pasted over it at the same place.
    """
    b, shape = labels.shape[0], labels.shape[2:]
    params = sample_deform(b, shape, rotation=rotation, scaling=scaling, shear=0.0, flip=flip,
                           elastic_std=elastic_std, generator=generator)
    grid = deformation_grid(params, shape)
    moved = warp(labels, grid)
    moved_images = None if images is None else warp(images, grid, mode="nearest")
    if b < 2:
        return moved, moved_images
    draws = torch.rand(b, generator=generator, device=generator.device).tolist()
    shifts = torch.randint(1, b, (b,), generator=generator, device=generator.device).tolist()
    picks = torch.rand(b, generator=generator, device=generator.device).tolist()
    out = moved.clone()
    out_images = None if images is None else moved_images.clone()
    for i in range(b):
        donor = (i + shifts[i]) % b
        classes = moved[donor].unique()
        classes = classes[classes != 0]
        if draws[i] >= paste or not len(classes):
            continue
        c = classes[min(int(picks[i] * len(classes)), len(classes) - 1)]
        region = moved[donor] == c
        out[i][region] = c
        if out_images is not None:
            out_images[i][region] = moved_images[donor][region]
    return out, out_images
