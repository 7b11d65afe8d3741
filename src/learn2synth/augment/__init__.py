"""Learnable augmenters applied after the fixed synthesis; their parameters are the ``theta`` of the meta-step.

``parametric`` holds a few interpretable learned corruptions; ``residual`` a small U-Net that adds a learned
residual; ``learned_priors`` renders the synthesis itself with learned priors. All draw their randomness in
``sample`` (explicit generator) and apply it deterministically in ``apply``, so a draw can be replayed.
:func:`build_augmenter` makes the one a training config describes.
"""

from __future__ import annotations

from ..errors import ConfigError


def build_augmenter(config, synth=None, labels=None):
    """The augmenter of ``config.augmenter``; the learned-priors one needs the synthesizer and the label pool
    (its intensity class count)."""
    from .learned_priors import LearnedPriorsAugmenter
    from .parametric import ParametricAugmenter
    from .residual import ResidualAugmenter

    a = config.augmenter
    if a.kind == "residual":
        if a.max_values:
            raise ConfigError("augmenter.max_values", "the residual augmenter has no named values to bound")
        return ResidualAugmenter(config.data.spatial_dims, channels=tuple(a.channels))
    if a.kind == "learned_priors":
        augmenter = LearnedPriorsAugmenter(synth, intensity_classes(config, synth, labels), a.priors)
        augmenter.check_bounds(a.max_values)
        return augmenter
    noise = None if a.noise == "none" else a.noise
    noise_init = a.noise_init[0] if noise == "sigma" else tuple(a.noise_init)
    bias_init = a.bias_init[0] if len(a.bias_init) == 1 else tuple(a.bias_init)
    augmenter = ParametricAugmenter(noise=noise, noise_init=noise_init, bias_points=tuple(a.bias_points),
                                    bias_init=bias_init, gamma_init=a.gamma_init, blur_init=a.blur_init)
    augmenter.check_bounds(a.max_values)
    return augmenter


def intensity_classes(config, synth, labels) -> int:
    """K, the number of intensity classes the synthesis draws: from its label tables, else one per label value
    (phantoms: ``data.n_classes``)."""
    if synth.n_classes is not None:
        return synth.n_classes
    if config.data.labels == "phantom":
        return config.data.n_classes
    return max(labels.values()) + 1


__all__ = ["build_augmenter", "intensity_classes"]
