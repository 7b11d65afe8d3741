"""The label-to-image synthesis pipeline: deform -> GMM -> bias -> gamma -> resolution -> noise -> normalize.

A :class:`Synthesizer` holds the configuration and the prior hyperparameters as tensors (``priors``), so
any of them can be made learnable (``synth.learnable(["noise.std"])``). ``sample`` draws every random
parameter for a batch, ``apply`` renders deterministically from them, and calling the synthesizer does both.
Each batch item gets its own draw and the whole batch is processed in one vectorized pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch

from ..config import FRACTION, INTERVAL, NON_NEGATIVE
from .bias import apply_bias_field, sample_bias_field
from .deform import apply_deform, sample_deform
from .gamma import apply_gamma, sample_gamma
from .gmm import apply_gmm, sample_gmm
from .noise import apply_noise, sample_noise
from .normalize import normalize, normalize_minmax
from .partial_volume import apply_partial_volume, boundary_source, sample_partial_volume
from .resolution import apply_resolution, sample_resolution
from .strip import apply_strip, sample_strip


@dataclass
class LabelsConfig:
    """How label values drive intensities and targets (SynthSeg's generation/segmentation label lists).

    ``generation_labels`` lists the label values that may occur; ``generation_classes[i]`` is the intensity
    class of ``generation_labels[i]`` (labels in one class share a Gaussian); ``segmentation_labels[i]`` is
    its target class. Left empty, each label value is its own intensity class and its own target.
    """

    generation_labels: list[int] | None = None
    generation_classes: list[int] | None = None
    segmentation_labels: list[int] | None = None


@dataclass
class DeformConfig:
    enabled: bool = True
    rotation: float = 15.0
    scaling: float = 0.2
    shear: float = 0.012
    translation: float = 0.0
    flip: float = 0.0
    elastic_std: float = 4.0
    elastic_points: float = 0.04
    integrate_steps: int = 0


@dataclass
class GMMConfig:
    mean: list = field(default_factory=lambda: [25 / 255, 225 / 255], metadata=INTERVAL)
    std: list = field(default_factory=lambda: [5 / 255, 25 / 255], metadata={**INTERVAL, **NON_NEGATIVE})
    smooth: float = 0.0


@dataclass
class BiasConfig:
    enabled: bool = True
    std: float = 0.7
    scale: float = 0.025


@dataclass
class GammaConfig:
    enabled: bool = True
    std: float = 0.5


@dataclass
class ResolutionConfig:
    enabled: bool = True
    max_res_iso: float = 4.0
    max_res_aniso: float = 8.0
    prob_iso: float = 0.5


@dataclass
class NoiseConfig:
    enabled: bool = False
    std: list = field(default_factory=lambda: [0.0, 0.05], metadata={**INTERVAL, **NON_NEGATIVE})
    kind: Literal["gaussian", "rician", "chi"] = "gaussian"
    dof: int = 2


#: range metadata (checked by learn2synth.config.check_config, item by item in lists, before anything is built)
LABEL_VALUES = {"range": (0, None)}


@dataclass
class StripConfig:
    """Random skull stripping (:mod:`learn2synth.synth.strip`): with probability ``prob`` an item's ``labels``
    (non-brain values) farther than a random ``margin`` (voxels, [lo, hi]) from the brain become 0."""

    enabled: bool = False
    prob: float = 0.5
    labels: list = field(default_factory=list, metadata=LABEL_VALUES)
    margin: list = field(default_factory=lambda: [0, 3], metadata={**INTERVAL, **NON_NEGATIVE})


@dataclass
class PartialVolumeConfig:
    """Partial volume at a boundary (:mod:`learn2synth.synth.partial_volume`): with probability ``prob`` per item,
    voxels of the ``into`` label values within ``width`` voxels of one of the ``sources`` take a fraction (drawn per
    voxel in ``fraction``, times 1 on the first ring falling linearly to ``1 / width`` on the last) of the source's
    intensity."""

    enabled: bool = False
    sources: list = field(default_factory=list, metadata=LABEL_VALUES)
    into: list = field(default_factory=list, metadata=LABEL_VALUES)
    fraction: list = field(default_factory=lambda: [0.0, 0.8], metadata={**INTERVAL, **FRACTION})
    prob: float = field(default=1.0, metadata={"range": (0, 1)})
    width: int = field(default=1, metadata={"range": (1, 8)})


@dataclass
class SynthConfig:
    """Every setting of the pipeline; the defaults are the ``synthseg`` preset."""

    labels: LabelsConfig = field(default_factory=LabelsConfig)
    deform: DeformConfig = field(default_factory=DeformConfig)
    gmm: GMMConfig = field(default_factory=GMMConfig)
    bias: BiasConfig = field(default_factory=BiasConfig)
    gamma: GammaConfig = field(default_factory=GammaConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    strip: StripConfig = field(default_factory=StripConfig)
    partial_volume: PartialVolumeConfig = field(default_factory=PartialVolumeConfig)
    normalize: Literal["minmax", "quantile", "none"] = "minmax"


# Hyperparameters held as tensors (differentiable); everything else in the config is a plain setting.
PRIORS = {
    "deform": ("rotation", "scaling", "shear", "translation", "elastic_std"),
    "gmm": ("mean", "std"),
    "bias": ("std", "scale"),
    "gamma": ("std",),
    "resolution": ("max_res_iso", "max_res_aniso"),
    "noise": ("std",),
}


class SynthResult(NamedTuple):
    image: torch.Tensor  # (B, 1, *spatial) float
    target: torch.Tensor  # (B, 1, *spatial) long
    params: dict  # every draw, for replay with Synthesizer.apply


class Synthesizer:
    """Batched, differentiable label-to-image synthesis (2D and 3D, any device).

    Examples
    --------
    >>> import torch
    >>> from learn2synth.synth import Synthesizer, phantom_labels
    >>> g = torch.Generator().manual_seed(0)
    >>> labels = phantom_labels(2, (64, 64), generator=g)
    >>> image, target, params = Synthesizer()(labels, generator=g)
    >>> tuple(image.shape), image.dtype
    ((2, 1, 64, 64), torch.float32)
    """

    def __init__(self, config: SynthConfig | None = None, device=None, dtype=torch.float32):
        self.config = config or SynthConfig()
        self.dtype = dtype
        self.priors = {
            f"{effect}.{name}": torch.as_tensor(getattr(getattr(self.config, effect), name), dtype=dtype,
                                                device=device).clone()
            for effect, names in PRIORS.items()
            for name in names
        }
        self._class_lut, self._target_lut, self.n_classes = _label_tables(self.config.labels, device)
        self._strip_lut = _label_set(self.config.strip.labels, device)
        pv = self.config.partial_volume
        self._pv_luts = (_label_set(pv.sources, device), _label_set(pv.into, device))

    def learnable(self, names: Iterable[str]) -> list[torch.Tensor]:
        """Turn the named priors into leaf tensors that require grad, and return them."""
        out = []
        for name in names:
            if name not in self.priors:
                raise KeyError(f"unknown prior {name!r}; known: {', '.join(self.priors)}")
            self.priors[name] = self.priors[name].detach().requires_grad_(True)
            out.append(self.priors[name])
        return out

    def to(self, device) -> Synthesizer:
        self.priors = {k: v.to(device) for k, v in self.priors.items()}
        if self._class_lut is not None:
            self._class_lut, self._target_lut = self._class_lut.to(device), self._target_lut.to(device)
        self._strip_lut = self._strip_lut.to(device)
        self._pv_luts = tuple(lut.to(device) for lut in self._pv_luts)
        return self

    def classes_and_target(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Map label values to intensity classes and target classes; also return the class count K."""
        classes, target = self._lookup(labels)
        return classes, target, int(labels.max()) + 1 if self._class_lut is None else self.n_classes

    def _lookup(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(classes, target) of label maps, without counting the classes (a full pass saved when rendering)."""
        if self._class_lut is None:
            return labels, labels
        if int(labels.max()) >= len(self._class_lut) or bool((self._class_lut[labels] < 0).any()):
            known = set(self.config.labels.generation_labels)
            extra = sorted(set(labels.unique().tolist()) - known)
            raise ValueError(f"label values {extra[:10]} are not in labels.generation_labels")
        return self._class_lut[labels], self._target_lut[labels]

    def sample(self, labels: torch.Tensor, generator: torch.Generator, priors: dict | None = None) -> dict:
        """Draw every random parameter for a batch of label maps (B, 1, *spatial).

        ``priors`` overrides some of :attr:`priors` by name for this draw (e.g. learned values). The draw is a
        function of (label maps, priors, generator state): the same generator state gives the same uniforms and
        normals, so the params are replayed, differentiably in the priors, by sampling again from that state.
        """
        _check_labels(labels)
        cfg, batch, shape = self.config, labels.shape[0], tuple(labels.shape[2:])
        ndim, dt = len(shape), self.dtype
        values = {**self.priors, **(priors or {})}

        def p(effect, name):
            return values[f"{effect}.{name}"]

        _, _, n_classes = self.classes_and_target(labels)
        rows = [v.shape[0] for v in (p("gmm", "mean"), p("gmm", "std")) if v.ndim == 2]
        if rows and n_classes <= rows[0]:  # per-class priors (K, 2): K classes, not the batch's count
            n_classes = rows[0]
        params = {}
        if cfg.deform.enabled:
            params["deform"] = sample_deform(
                batch, shape, **{k: p("deform", k) for k in PRIORS["deform"]}, flip=cfg.deform.flip,
                elastic_points=cfg.deform.elastic_points, integrate_steps=cfg.deform.integrate_steps,
                generator=generator, dtype=dt)
        params["gmm"] = sample_gmm(batch, n_classes, shape, mean=p("gmm", "mean"),
                                   std=p("gmm", "std"), smooth=cfg.gmm.smooth, generator=generator, dtype=dt)
        if cfg.partial_volume.enabled:
            params["partial_volume"] = sample_partial_volume(
                batch, shape, fraction=cfg.partial_volume.fraction, prob=cfg.partial_volume.prob,
                generator=generator, dtype=dt)
        if cfg.bias.enabled:
            params["bias"] = sample_bias_field(batch, shape, std=p("bias", "std"),
                                               scale=p("bias", "scale"), generator=generator, dtype=dt)
        if cfg.gamma.enabled:
            params["gamma"] = sample_gamma(batch, std=p("gamma", "std"), generator=generator, dtype=dt)
        if cfg.resolution.enabled:
            params["resolution"] = sample_resolution(
                batch, ndim, max_res_iso=p("resolution", "max_res_iso"),
                max_res_aniso=p("resolution", "max_res_aniso"), prob_iso=cfg.resolution.prob_iso,
                generator=generator, dtype=dt)
        if cfg.noise.enabled:
            params["noise"] = sample_noise(batch, shape, std=p("noise", "std"), kind=cfg.noise.kind,
                                           dof=cfg.noise.dof, generator=generator, dtype=dt)
        if cfg.strip.enabled:
            params["strip"] = sample_strip(batch, prob=cfg.strip.prob, margin=cfg.strip.margin, generator=generator)
        return params

    def apply(self, labels: torch.Tensor, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Render (image, target) from label maps and drawn parameters; deterministic."""
        _check_labels(labels)
        return self._render(labels, params)

    def _render(self, labels: torch.Tensor, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`apply` without checking the label maps (already checked by :meth:`sample`)."""
        if "deform" in params:
            labels = apply_deform(labels, params["deform"])
        classes, target = self._lookup(labels)
        image = apply_gmm(classes, params["gmm"])
        if "partial_volume" in params:
            near, weight = boundary_source(labels, classes, *self._pv_luts, width=self.config.partial_volume.width)
            image = apply_partial_volume(image, classes, near, weight, params["gmm"], params["partial_volume"])
        if "bias" in params:
            image = apply_bias_field(image, params["bias"])
        image = normalize_minmax(image)
        if "gamma" in params:
            image = apply_gamma(image, params["gamma"])
        if "resolution" in params:
            image = apply_resolution(image, params["resolution"])
        if "noise" in params:
            image = apply_noise(image, params["noise"])
        if "strip" in params:
            lut = self._strip_lut
            image = apply_strip(image, labels.clamp(max=len(lut) - 1), params["strip"], lut)
        return normalize(image, self.config.normalize), target.long()

    def __call__(self, labels: torch.Tensor, generator: torch.Generator) -> SynthResult:
        params = self.sample(labels, generator)
        image, target = self._render(labels, params)
        return SynthResult(image, target, params)


def _check_labels(labels: torch.Tensor) -> None:
    if labels.ndim not in (4, 5) or labels.shape[1] != 1:
        raise ValueError(f"label maps must be (B, 1, *spatial) with 2 or 3 spatial dims, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"label maps must have an integer dtype, got {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("label maps must be non-negative")


def _label_set(values, device) -> torch.Tensor:
    """Lookup table label value -> in the set (True: stripped, or a partial-volume source/recipient); one extra
    False entry stands for every larger value."""
    values = [int(v) for v in values]
    if any(v < 0 for v in values):
        raise ValueError(f"label sets (strip.labels, partial_volume) must be non-negative values, got {values}")
    lut = torch.zeros(max(values, default=-1) + 2, dtype=torch.bool, device=device)
    lut[values] = True
    return lut


def label_table(cfg: LabelsConfig) -> list[tuple[int, int, int]] | None:
    """``(label value, intensity class, target)`` per generation label, the defaults filled in (each value its
    own class; its own target); None without label tables."""
    if cfg.generation_labels is None:
        if cfg.generation_classes is not None or cfg.segmentation_labels is not None:
            raise ValueError("labels.generation_classes/segmentation_labels need labels.generation_labels")
        return None
    values = [int(v) for v in cfg.generation_labels]
    classes = list(cfg.generation_classes) if cfg.generation_classes is not None else list(range(len(values)))
    targets = list(cfg.segmentation_labels) if cfg.segmentation_labels is not None else values
    if not (len(classes) == len(targets) == len(values)):
        raise ValueError("labels.generation_labels, generation_classes and segmentation_labels differ in length")
    return [(v, int(c), int(t)) for v, c, t in zip(values, classes, targets, strict=True)]


def _label_tables(cfg: LabelsConfig, device):
    """Lookup tables label value -> intensity class, label value -> target (-1 marks unknown values)."""
    table = label_table(cfg)
    if table is None:
        return None, None, None
    values, classes, targets = (list(column) for column in zip(*table, strict=True))
    if len(set(values)) != len(values) or min(values) < 0:
        raise ValueError("labels.generation_labels must be distinct non-negative integers")
    class_lut = torch.full((max(values) + 1,), -1, dtype=torch.long, device=device)
    target_lut = torch.full_like(class_lut, -1)
    class_lut[values] = torch.as_tensor(classes, device=device)
    target_lut[values] = torch.as_tensor(targets, device=device)
    return class_lut, target_lut, max(classes) + 1
