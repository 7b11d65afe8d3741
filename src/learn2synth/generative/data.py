"""Training examples for the generators, at the one fixed shape the networks are built for.

Label maps come from a :class:`~learn2synth.data.LabelPool` (files, read and sliced by
:func:`learn2synth.data.load_label_pool`) or procedural phantoms; (image, label) volumes for SPADE from a
:class:`~learn2synth.data.RealPool` (its subjects say which slices belong to one volume) or phantom volumes
rendered with one intensity draw per volume (:func:`learn2synth.synth.sample_gmm`). Every draw uses the explicit
generator passed in, so a resumed run draws the same batches.

Whole slices are wanted (a label generator that only ever sees crops makes crops), so by default each example is
cropped to the bounding box of its non-zero classes (the brain, once non-brain labels map to background; for
(image, label) pairs, of the label map), zero-padded to a square (cube) around its centre and resized to
``shape``: label maps by averaging their one-hot maps over each output voxel (``area``) and taking the most
frequent class, images by ``area`` averaging.
``fit="crop"`` takes random crops instead, like the segmentation methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..data import LabelPool, RealPool, crop_or_pad, random_crop_params
from ..losses import one_hot
from ..synth import apply_gmm, draw_normal, normalize_minmax, phantom_labels, sample_gmm


def _square(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad (C, *spatial) to a square/cube, centred."""
    side = max(x.shape[1:])
    return crop_or_pad(x, [0] * (x.ndim - 1), [side] * (x.ndim - 1))


def crop_to(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` (C, *spatial) cropped to the bounding box of ``mask`` (*spatial) (unchanged if the mask is empty)."""
    nonzero = mask.nonzero()
    if not len(nonzero):
        return x
    lo, hi = nonzero.min(0).values.tolist(), (nonzero.max(0).values + 1).tolist()
    return x[(slice(None), *(slice(a, b) for a, b in zip(lo, hi, strict=True)))]


def resize_label(label: torch.Tensor, shape: Sequence[int], n_classes: int) -> torch.Tensor:
    """One label map (1, *spatial) of classes -> (1, *shape), each output voxel the most frequent class of the
    input voxels it covers (one-hot maps area-averaged; ties go to the lower class)."""
    return F.interpolate(one_hot(label[None], n_classes), size=tuple(shape), mode="area").argmax(1)


def fit_label(label: torch.Tensor, shape: Sequence[int], n_classes: int) -> torch.Tensor:
    """One label map (1, *spatial) of classes -> (1, *shape): padded to a square, resized by majority per voxel."""
    return resize_label(_square(label), shape, n_classes)


def fit_image(image: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """One image (1, *spatial) -> (1, *shape): padded to a square with zeros, area-resized."""
    return F.interpolate(_square(image)[None], size=tuple(shape), mode="area")[0]


class LabelSource:
    """Batches of label maps (B, 1, *shape) holding classes 0..n_classes-1.

    ``pool`` None means phantoms (drawn fresh each batch); otherwise ``mapping`` (a
    :class:`~learn2synth.io.LabelMapping`, or None when the pool already holds classes) maps stored values to
    classes, and ``fit`` is ``"resize"`` (whole slices) or ``"crop"``. Whole slices are drawn only from maps
    with a non-background class after the mapping: slices through the head above or below the brain would
    otherwise be empty training maps (a third of the coronal slices of a SynthSeg map). ValueError names a
    class >= n_classes, or a pool without any foreground.
    """

    def __init__(self, pool: LabelPool | None, shape: Sequence[int], n_classes: int, mapping=None,
                 fit: str = "resize"):
        self.pool, self.shape, self.n_classes, self.mapping, self.fit = pool, list(shape), n_classes, mapping, fit
        if pool is not None:
            self.usable = [i for i, m in enumerate(pool.maps) if bool(self.classes(m.long()).any())]
            if not self.usable:
                raise ValueError("no label map holds a class other than background (0) after the mapping")

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.pool is None:
            return phantom_labels(n, self.shape, self.n_classes, generator=generator)
        if self.fit == "crop":
            out = self.pool.batch(n, self.shape, generator)
            return self.classes(out)
        picks = torch.randint(len(self.usable), (n,), generator=generator).tolist()
        maps = [self.classes(self.pool.maps[self.usable[i]].long()) for i in picks]
        return torch.stack([fit_label(crop_to(m, m[0] > 0), self.shape, self.n_classes) for m in maps])

    def classes(self, labels: torch.Tensor) -> torch.Tensor:
        """Stored label values -> classes (through the mapping); ValueError names a class >= n_classes."""
        labels = self.mapping(labels) if self.mapping is not None else labels
        if int(labels.max()) >= self.n_classes:
            raise ValueError(f"label maps hold class {int(labels.max())} but n_classes is {self.n_classes}; "
                             "give a label mapping or raise n_classes")
        return labels


class PairSource:
    """Batches of (image, label, style image) for SPADE: the style image is another slice of the content's volume.

    ``pool`` None means phantom volumes: each item draws one phantom label map pair and one Gaussian mixture
    contrast (:func:`~learn2synth.synth.sample_gmm`), rendered on both maps with independent noise, so style and
    content share a contrast and nothing else. With a :class:`~learn2synth.data.RealPool`, the style slice is a
    different example of the same subject (the same one if the subject has a single example).
    """

    def __init__(self, pool: RealPool | None, shape: Sequence[int], n_classes: int, fit: str = "resize"):
        self.pool, self.shape, self.n_classes, self.fit = pool, list(shape), n_classes, fit
        if pool is not None:
            self.by_subject: dict[str, list[int]] = {}
            for i, s in enumerate(pool.subjects):
                self.by_subject.setdefault(s, []).append(i)

    def batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.pool is None:
            return self._phantoms(n, generator)
        images, labels, styles = [], [], []
        for i in torch.randint(len(self.pool), (n,), generator=generator).tolist():
            siblings = [j for j in self.by_subject[self.pool.subjects[i]] if j != i] or [i]
            j = siblings[int(torch.randint(len(siblings), (1,), generator=generator))]
            x, y = self._fit(self.pool.images[i], self.pool.labels[i], generator)
            s, _ = self._fit(self.pool.images[j], self.pool.labels[j], generator)
            images.append(x), labels.append(y), styles.append(s)
        return torch.stack(images), torch.stack(labels), torch.stack(styles)

    def _fit(self, image, label, generator):
        if self.fit == "crop":
            corner = random_crop_params(image.shape[1:], self.shape, generator)
            return crop_or_pad(image, corner, self.shape), crop_or_pad(label, corner, self.shape)
        image, label = crop_to(image, label[0] > 0), crop_to(label, label[0] > 0)
        return fit_image(image, self.shape), fit_label(label, self.shape, self.n_classes)

    def _phantoms(self, n, generator):
        labels = phantom_labels(2 * n, self.shape, self.n_classes, generator=generator)
        gmm = sample_gmm(n, self.n_classes, self.shape, mean=(0.1, 1.0), std=(0.01, 0.05), smooth=1.0,
                         generator=generator)
        gmm["means"][:, 0] = 0.0  # background stays black, as in skull-stripped scans
        gmm["stds"][:, 0] = 0.0
        other = {**gmm, "noise": draw_normal(gmm["noise"].shape, generator)}
        content = normalize_minmax(apply_gmm(labels[:n], gmm).clamp_min(0))
        style = normalize_minmax(apply_gmm(labels[n:], other).clamp_min(0))
        return content, labels[:n], style


def read_style_image(path, config) -> torch.Tensor:
    """One style image file as (1, 1, *config.shape), normalized as the SPADE run's training images
    (``config.normalize``); a 3D volume gives its middle slice along ``config.slice_axis`` for a 2D model. With
    ``fit: resize`` the image is first cropped to its non-zero support, as training crops style slices to their
    labels' support (a skull-stripped scan's support is its brain; a whole-head scan keeps the head)."""
    import numpy as np

    from ..errors import InputError
    from ..io import check_image, read_image, squeeze_2d
    from ..synth import normalize

    array = read_image(path).array
    if array.ndim == 3 and 1 in array.shape:
        array = squeeze_2d(array)
    array = check_image(array, path)
    if array.ndim == 3 and config.spatial_dims == 2:
        array = np.take(array, array.shape[config.slice_axis] // 2, axis=config.slice_axis)
    if array.ndim != config.spatial_dims:
        raise InputError(path, f"has shape {array.shape}, the model renders {config.spatial_dims}D images")
    x = normalize(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None], config.normalize)[0]
    if config.fit == "resize":  # training crops style slices to their labels' support: the nearest is the image's
        x = crop_to(x, torch.from_numpy(array != 0))
    return fit_image(x, config.shape)[None]
