"""Where a run's data come from: the label maps, the real examples and the synthesizer, built from the config.

``load_data(config)`` gives a :class:`TrainingData`. Each source is read on its own, by one function that returns
its pool (:func:`label_pool`, :func:`real_pools`; phantoms of each draw from their own random stream), and the
synthesizer is built once, after the label mapping is settled (:func:`synthesis_config`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .data import LabelPool, RealPool, load_label_pool, load_real_pool
from .distributed import DistInfo
from .errors import ConfigError, InputError
from .rng import derive_seed
from .synth import Synthesizer, phantom_labels


@dataclass
class TrainingData:
    """What a method trains on: label maps and the synthesis that renders them, real training examples (None
    without real data) and the held-out real examples (None without)."""

    synth: Synthesizer
    labels: LabelPool
    real: RealPool | None
    val: RealPool | None


def load_data(config, info: DistInfo | None = None, device: torch.device | str = "cpu",
              progress: bool = True) -> TrainingData:
    """Every source of ``config.data``; under torch.distributed (``info``) each rank keeps its own shard of the
    label maps and of the real training examples. ``progress``: a bar while label map files are read."""
    info = info or DistInfo()
    labels = label_pool(config, progress=progress and info.is_main)
    synth = Synthesizer(synthesis_config(config, labels), device=device)
    real, val = real_pools(config, synth, progress=progress and info.is_main)
    if info.active:
        labels = LabelPool(_shard(labels.maps, info))
        if real is not None and len(real) >= info.world_size:
            real = real.subset(_shard(list(range(len(real))), info))
    return TrainingData(synth, labels, real, val)


def _shard(items: list, info: DistInfo) -> list:
    return items[info.rank :: info.world_size] if len(items) >= info.world_size else items


def label_pool(config, progress: bool = False) -> LabelPool:
    """The label maps of ``data.labels``: procedural phantoms (their own random stream), files, maps sampled from
    a trained label generator (``labelgen:RUN``, :func:`generated_labels`), or none."""
    d = config.data
    if d.labels is None:
        return LabelPool([])
    if d.labels == "phantom":
        g = torch.Generator().manual_seed(derive_seed(config.seed, "phantoms"))
        return LabelPool(list(phantom_labels(d.phantom_count, d.shape, d.n_classes, generator=g)))
    if d.labels.startswith(GENERATED):
        return generated_labels(config)
    return load_label_pool(d.labels, d.spatial_dims, d.slice_axis, progress=progress)


GENERATED = "labelgen:"


def generated_labels(config, chunk: int = 16) -> LabelPool:
    """``data.phantom_count`` label maps sampled (own random stream) from the label generator run named by
    ``data.labels: labelgen:RUN``; they hold classes 0..n_classes-1 already (no ``data.label_mapping``)."""
    from .generative.checkpoints import load_generator

    d = config.data
    path = d.labels[len(GENERATED):]
    model = load_generator(path, "labelgen")
    c = model.config
    if (c.n_classes, c.spatial_dims) != (d.n_classes, d.spatial_dims):
        raise InputError(path, f"generates {c.spatial_dims}D maps of {c.n_classes} classes, the config trains "
                               f"{d.spatial_dims}D with data.n_classes {d.n_classes}")
    if d.label_mapping:
        raise ConfigError("data.label_mapping", "generated label maps hold classes already: leave it unset")
    g = torch.Generator().manual_seed(derive_seed(config.seed, "generated_labels"))
    maps = [m for k in range(0, d.phantom_count, chunk)
            for m in model.sample(min(chunk, d.phantom_count - k), g)]
    return LabelPool(maps)


def real_pools(config, synth: Synthesizer, progress: bool = False) -> tuple[RealPool | None, RealPool | None]:
    """(training, held-out) real examples of ``data.real``: phantoms (:func:`phantom_real`), a manifest or folder
    split by subject (``progress``: a bar while they are read), or (None, None)."""
    d = config.data
    if d.real is None:
        return None, None
    if d.real == "phantom":
        return phantom_real(config, synth)
    pool = load_real_pool(d.real, d.spatial_dims, d.slice_axis, config.synth.normalize, real_mapping(config),
                          n_classes=d.n_classes, colour=d.colour, orientation=d.orientation, voxel_size=d.voxel_size,
                          progress=progress)
    return pool.split_by_subject(d.val_fraction, config.seed)


def phantom_real(config, synth: Synthesizer) -> tuple[RealPool, RealPool]:
    """'Real' train/test images: phantoms of their own random stream (so never the training label maps),
    rendered by ``synth`` or in a fixed contrast, with the hidden corruption (``data.phantom_real``)."""
    from .augment.parametric import ParametricAugmenter

    d, pr = config.data, config.data.phantom_real
    g = torch.Generator().manual_seed(derive_seed(config.seed, "phantom_real"))
    held_out = phantom_labels(pr.train_count + pr.test_count, d.shape, d.n_classes, generator=g)
    noise = "range" if pr.sigma_range else "sigma" if pr.sigma > 0 else None
    hidden = ParametricAugmenter(noise=noise, noise_init=pr.sigma_range or max(pr.sigma, 1e-6),
                                 bias_points=(2, 4, 8)[: len(pr.bias)], bias_init=tuple(pr.bias) or 0.0)
    with torch.no_grad():
        clean = synth(held_out, g).image if pr.contrast is None else torch.tensor(pr.contrast)[held_out.long()]
        images = hidden(clean, g)
    pool = RealPool(list(images), list(held_out), [f"phantom{i}" for i in range(len(images))])
    n = pr.train_count
    return pool.subset(range(n)), pool.subset(range(n, n + pr.test_count))


def synthesis_config(config, labels: LabelPool):
    """``config.synth``, with label tables from ``data.label_mapping`` when label maps are files, a mapping is
    given and the synthesis has no tables of its own: targets follow the mapping, intensity classes its groups
    (each label value not in a group draws its own intensity)."""
    d = config.data
    if d.labels in (None, "phantom") or not d.label_mapping or config.synth.labels.generation_labels is not None:
        return config.synth
    from .io import load_label_mapping

    mapping = load_label_mapping(d.label_mapping)
    synth_cfg = copy.deepcopy(config.synth)
    for key, value in mapping.synthesis_labels(labels.values()).items():
        setattr(synth_cfg.labels, key, value)
    too_big = sorted({t for t in synth_cfg.labels.segmentation_labels if t >= config.data.n_classes})
    if too_big:
        raise ConfigError("data.label_mapping", f"maps label values to classes {too_big}, but data.n_classes is "
                                                f"{config.data.n_classes}")
    return synth_cfg


def real_mapping(config):
    """The mapping of the real labels' values to classes (``data.real_label_mapping``), or None."""
    from .io import load_label_mapping

    path = config.data.real_label_mapping
    return load_label_mapping(path) if path else None


def label_values(config) -> list[int]:
    """The label value a prediction writes for each class: the real labels' values (through
    ``data.real_label_mapping``, first value listed per class) or the class indices themselves."""
    mapping = real_mapping(config)
    classes = list(range(config.data.n_classes))
    if mapping is None:
        return classes
    back = mapping.inverse()
    missing = [c for c in classes if c not in back.mapping]
    if missing:
        raise InputError(config.data.real_label_mapping, f"maps no label value to classes {missing}")
    return [int(v) for v in back(torch.tensor(classes))]
