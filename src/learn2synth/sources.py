"""Where a run's data come from: the label maps, the real examples and the synthesizer, built from the config.

``load_data(config)`` gives a :class:`TrainingData`. Each source is read on its own (a function per source),
and the synthesizer is built once, after the label mapping is settled.
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


def load_data(config, info: DistInfo | None = None, device: torch.device | str = "cpu") -> TrainingData:
    """Every source of ``config.data``; under torch.distributed (``info``) each rank keeps its own shard of the
    label maps and of the real training examples."""
    d = config.data
    info = info or DistInfo()
    synth = Synthesizer(config.synth, device=device)
    if d.labels == "phantom" or d.real == "phantom":
        labels, real, val = phantom_data(config, synth)
    if d.labels is None:
        labels = LabelPool([])
    elif d.labels != "phantom":
        labels = load_label_pool(d.labels, d.spatial_dims, d.slice_axis, progress=info.is_main)
        if d.label_mapping and config.synth.labels.generation_labels is None:
            from .io import load_label_mapping

            synth = Synthesizer(_with_mapping(config, labels, load_label_mapping(d.label_mapping)), device=device)
    if d.real not in (None, "phantom"):
        pool = load_real_pool(d.real, d.spatial_dims, d.slice_axis, config.synth.normalize, real_mapping(config),
                              n_classes=d.n_classes, colour=d.colour)
        real, val = pool.split_by_subject(d.val_fraction, config.seed)
    elif d.real is None:
        real, val = None, None
    if info.active:
        labels = LabelPool(_shard(labels.maps, info))
        if real is not None and len(real) >= info.world_size:
            real = real.subset(_shard(list(range(len(real))), info))
    return TrainingData(synth, labels, real, val)


def _shard(items: list, info: DistInfo) -> list:
    return items[info.rank :: info.world_size] if len(items) >= info.world_size else items


def phantom_data(config, synth: Synthesizer) -> tuple[LabelPool, RealPool, RealPool]:
    """Label maps, and 'real' train/test images made from held-out phantoms with the hidden corruption."""
    from .augment.parametric import ParametricAugmenter

    d, pr = config.data, config.data.phantom_real
    g = torch.Generator().manual_seed(derive_seed(config.seed, "phantoms"))
    maps = phantom_labels(d.phantom_count, d.shape, d.n_classes, generator=g)
    held_out = phantom_labels(pr.train_count + pr.test_count, d.shape, d.n_classes, generator=g)
    noise = "range" if pr.sigma_range else "sigma" if pr.sigma > 0 else None
    hidden = ParametricAugmenter(noise=noise, noise_init=pr.sigma_range or max(pr.sigma, 1e-6),
                                 bias_points=(2, 4, 8)[: len(pr.bias)], bias_init=tuple(pr.bias) or 0.0)
    with torch.no_grad():
        clean = synth(held_out, g).image if pr.contrast is None else torch.tensor(pr.contrast)[held_out.long()]
        images = hidden(clean, g)
    pool = RealPool(list(images), list(held_out), [f"phantom{i}" for i in range(len(images))])
    n = pr.train_count
    return LabelPool(list(maps)), pool.subset(range(n)), pool.subset(range(n, n + pr.test_count))


def _with_mapping(config, labels: LabelPool, mapping):
    """Synthesis config whose targets follow ``mapping`` and whose intensity classes follow its groups (each
    label value not in a group draws its own intensity)."""
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
