"""Learned priors: the synthesis's own prior hyperparameters are theta, learned by the hypergradient.

Instead of corrupting synthesized images, this augmenter IS the synthesis with some of its priors replaced by
learned values: per intensity class GMM mean and std ranges (``gmm.mean``, ``gmm.std`` as (K, 2)), the bias
field strength (``bias.std``), the gamma spread (``gamma.std``), the resolution range (``resolution.max_res_iso``,
``resolution.max_res_aniso``) and the noise range (``noise.std``, (2,)). The label/image pairing stays exact by
construction: images are rendered from the (deformed) label maps that also give the target.

**Replay by generator state.** The synthesis draws its parameters with reparameterized draws
(``lo + (hi - lo) * u``, ``std * z``), so a draw is a differentiable function of the priors given the uniforms
and normals. :meth:`sample` records the generator's state and advances it by one draw; :meth:`apply` makes a
fresh generator at that state and samples again with the learned priors, inside the caller's graph. Since
``Synthesizer.sample`` is a pure function of (label maps, priors, generator state) and the amount it draws
depends only on shapes, every replay sees the same uniforms and normals: the finite-difference meta-step's three
evaluations render the same batch, and d loss / d prior flows through the draws. No sampler needs to expose its
uniforms, at the cost of drawing twice per batch (small next to rendering).

**Valid ranges by projection.** The parameters are the prior values themselves, projected back into their
valid set after every optimizer step (:meth:`bound_`): a range with lo > hi becomes the point at their mean,
stds and noise levels are clamped at >= 0, resolution maxima at >= 1 voxel, and ``augmenter.max_values`` caps
a prior (a range's hi and lo). A softplus parameterization was not used: the synthesis presets start several
priors at exactly 0 (``none``: GMM std [0, 0]; noise [0, hi]), where a softplus has no gradient; the clamp
lets the hypergradient move them off the boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..synth import Synthesizer
from ..synth.pipeline import label_table

# prior name -> (is a [lo, hi] range, smallest valid value)
KINDS = {"gmm.mean": (True, None), "gmm.std": (True, 0.0), "noise.std": (True, 0.0), "bias.std": (False, 0.0),
         "gamma.std": (False, 0.0), "resolution.max_res_iso": (False, 1.0), "resolution.max_res_aniso": (False, 1.0)}
DEFAULT_PRIORS = ("gmm.mean", "gmm.std", "noise.std", "bias.std", "gamma.std")


def _key(name: str) -> str:
    return name.replace(".", "__")  # parameter names cannot hold dots


class LearnedPriorsAugmenter(nn.Module):
    """The synthesis of ``synth`` with the priors ``names`` learned (None: those of ``DEFAULT_PRIORS`` whose
    effect is enabled); ``n_classes`` intensity classes K get their own GMM ranges."""

    renders_synthesis = True  # takes label maps and returns (image, target), not a corrupted image

    def __init__(self, synth: Synthesizer, n_classes: int, names: Sequence[str] | None = None):
        super().__init__()
        self.synth, self.n_classes = synth, int(n_classes)
        enabled = {k: getattr(synth.config, k.split(".")[0], None) for k in KINDS}
        if names is None:
            names = [k for k in DEFAULT_PRIORS if k.startswith("gmm.") or enabled[k].enabled]
        for name in names:
            if name not in KINDS:
                raise ConfigError("augmenter.priors", f"cannot learn {name!r}; one of {', '.join(KINDS)}")
            if not name.startswith("gmm.") and not enabled[name].enabled:
                raise ConfigError("augmenter.priors", f"{name} is learned but synth.{name.split('.')[0]}.enabled "
                                                      "is false; enable it or drop it from augmenter.priors")
        self.names = list(names)
        for name in self.names:
            self._init(name, synth.priors[name].detach().float())

    def _init(self, name: str, value: torch.Tensor) -> None:
        is_range, low = KINDS[name]
        if name.startswith("gmm.") and value.ndim == 1:
            value = value.expand(self.n_classes, 2)
        if name.startswith("gmm.") and value.shape != (self.n_classes, 2):
            raise ConfigError(f"synth.{name}", f"needs [lo, hi] or one [lo, hi] per intensity class "
                                               f"({self.n_classes}), got shape {tuple(value.shape)}")
        valid = (not is_range or bool((value[..., 0] <= value[..., 1]).all())) and (low is None or value.min() >= low)
        if not valid:
            raise ConfigError(f"synth.{name}", f"is not a valid starting value for a learned prior: {value.tolist()}")
        self.register_parameter(_key(name), nn.Parameter(value.clone()))

    @torch.no_grad()
    def fit_to_real(self, images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], margin: float = 0.05,
                    min_voxels: int = 20) -> list[int]:
        """Start the learned GMM ranges from real labeled examples (``augmenter.fit_real``); returns the
        intensity classes set.

        Every intensity class whose label values have one target class t > 0 (besides background: SynthSeg's
        CSF class holds the ventricles, target CSF, and the extra-cerebral CSF, target 0) gets, if ``gmm.mean`` is
        learned, the range of the per-example mean intensity of t in the (normalized) real images, widened by
        ``margin`` on each side, and, if ``gmm.std`` is learned, the range of its per-example standard deviation.
        Examples with fewer than ``min_voxels`` voxels of t do not count. Other classes (background and non-brain
        labels, targets the real examples lack) keep their starting ranges. The real images' units (after their
        normalization) stand in for the synthesis's GMM units, which its min-max and final normalization map to
        about the same [0, 1]: a starting point for the hypergradient, not an exact fit.
        """
        stats: dict[int, list[tuple[float, float]]] = {}
        for image, label in zip(images, labels, strict=True):
            for t in label.unique().tolist():
                values = image[label == t]
                if t > 0 and values.numel() >= min_voxels:
                    stats.setdefault(int(t), []).append((float(values.mean()), float(values.std())))
        fitted = []
        for k, targets in enumerate(self._class_targets()):
            tissue = [t for t in targets if t > 0]
            if len(tissue) != 1 or tissue[0] not in stats:
                continue
            means, stds = (torch.tensor(v) for v in zip(*stats[tissue[0]], strict=True))
            if "gmm.mean" in self.names:
                self.prior("gmm.mean")[k] = torch.stack([means.min() - margin, means.max() + margin])
            if "gmm.std" in self.names:
                self.prior("gmm.std")[k] = torch.stack([stds.min(), stds.max()])
            fitted.append(k)
        return fitted

    def _class_targets(self) -> list[list[int]]:
        """The target classes rendered by each intensity class (label tables; without them a label value is its
        own intensity class and target)."""
        table = label_table(self.synth.config.labels)
        if table is None:
            return [[k] for k in range(self.n_classes)]
        out: list[set] = [set() for _ in range(self.n_classes)]
        for _, c, t in table:
            out[c].add(t)
        return [sorted(t) for t in out]

    # -- the learned values, in their valid ranges ------------------------------------------------------
    def prior(self, name: str) -> torch.Tensor:
        """The current value of one learned prior (a leaf parameter)."""
        return getattr(self, _key(name))

    def priors(self) -> dict[str, torch.Tensor]:
        return {name: self.prior(name) for name in self.names}

    def learned_values(self) -> dict[str, float]:
        """Every learned value by name, as plain floats: ``gmm.mean.<class>.lo``, ``noise.std.hi``, ``bias.std``."""
        out = {}
        with torch.no_grad():
            for name, value in self.priors().items():
                if value.ndim == 2:
                    for k, (lo, hi) in enumerate(value.tolist()):
                        out[f"{name}.{k}.lo"], out[f"{name}.{k}.hi"] = lo, hi
                elif value.ndim == 1:
                    out[f"{name}.lo"], out[f"{name}.hi"] = value.tolist()
                else:
                    out[name] = float(value)
        return out

    def check_bounds(self, max_values: Mapping[str, float]) -> None:
        unknown = sorted(set(max_values) - set(self.names))
        if unknown:
            raise ConfigError("augmenter.max_values", f"{', '.join(unknown)} not learned; one of "
                                                      f"{', '.join(self.names)}")

    @torch.no_grad()
    def bound_(self, max_values: Mapping[str, float]) -> None:
        """Project every learned prior into its valid set, and at most its ``max_values`` entry (after a step)."""
        self.check_bounds(max_values)
        for name in self.names:
            value, (is_range, low) = self.prior(name), KINDS[name]
            if low is not None or name in max_values:
                value.clamp_(min=low, max=max_values.get(name))
            if is_range:
                crossed = value[..., 0] > value[..., 1]
                middle = value.mean(-1)
                value[..., 0] = torch.where(crossed, middle, value[..., 0])
                value[..., 1] = torch.where(crossed, middle, value[..., 1])

    # -- sampling and rendering --------------------------------------------------------------------------
    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> dict:
        """Record the generator's state and advance it past one draw for ``labels`` (B, 1, *spatial)."""
        draw = {"state": generator.get_state(), "device": generator.device}
        with torch.no_grad():
            self.synth.sample(labels, generator, priors=self.priors())
        return draw

    def apply(self, labels: torch.Tensor, draw: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(image, target) of the recorded draw with the current priors; differentiable in them."""
        generator = torch.Generator(device=draw["device"])
        generator.set_state(draw["state"])
        return self.synth.apply(labels, self.synth.sample(labels, generator, priors=self.priors()))

    def forward(self, labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(labels, self.sample(labels, generator))
