"""Parametric augmenter: a few learnable, interpretable corruptions applied after the fixed synthesis.

Following Learn2Synth's parametric variant, in this order:

- multiplicative bias field ``prod_k exp(F_k) ** e_k = exp(sum_k e_k F_k)``, ``F_k`` a smooth standard normal
  field with ``points[k]`` control points per axis (2, 4, 8: low, middle, high frequency) and a learnable
  exponent ``e_k >= 0`` per scale;
- gamma ``x ** exp(s * z)`` with learnable spread ``s >= 0`` (off by default);
- Gaussian blur of learnable width ``b * u``, ``u ~ U(0, 1)`` per item (off by default);
- additive Gaussian noise with a learnable ``sigma`` (``noise="sigma"``) or a learnable range
  ``[lo, hi]`` from which each item draws its sigma (``noise="range"``).

The effects are the synthesis's own (``apply_bias_field``, ``apply_gamma``, ``apply_noise``, ``blur`` of
:mod:`learn2synth.synth`) at the learned values.

Each learned value is kept positive by a softplus and is readable by name (:meth:`learned_values`). Random
draws happen only in :meth:`sample` (explicit generator); :meth:`apply` is deterministic, so the same draw can
be replayed, as the finite-difference meta-step needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..synth import apply_bias_field, apply_gamma, apply_noise, blur, draw_normal
from ._bounds import cap_range_, cap_softplus_
from ._bounds import inverse_softplus_float as _inverse_softplus


class ParametricAugmenter(nn.Module):
    """Learnable noise / bias field / gamma / blur for (B, 1, *spatial) images, 2D or 3D.

    Parameters
    ----------
    noise : ``"sigma"``, ``"range"`` or ``None``.
    noise_init : initial sigma, or initial (lo, hi) for a range.
    bias_points : control points per axis of each bias scale; empty disables the bias field.
    bias_init : initial exponent(s), one per scale or one for all.
    gamma_init : initial log-gamma spread, or None to disable gamma.
    blur_init : initial maximum blur sigma (voxels), or None to disable blur.
    """

    renders_synthesis = False  # corrupts synthesized images (the learned-priors augmenter renders them itself)

    def __init__(
        self,
        noise: str | None = "sigma",
        noise_init: float | Sequence[float] = 0.01,
        bias_points: Sequence[int] = (2, 4, 8),
        bias_init: float | Sequence[float] = 0.05,
        gamma_init: float | None = None,
        blur_init: float | None = None,
    ):
        super().__init__()
        if noise not in ("sigma", "range", None):
            raise ValueError(f"noise must be 'sigma', 'range' or None, not {noise!r}")
        self.noise = noise
        if noise == "sigma":
            self.raw_sigma = nn.Parameter(torch.tensor(_inverse_softplus(float(noise_init))))
        elif noise == "range":
            lo, hi = noise_init
            if not 0 < lo < hi:
                raise ValueError(f"noise range must satisfy 0 < lo < hi, got {noise_init}")
            self.raw_sigma_lo = nn.Parameter(torch.tensor(_inverse_softplus(lo)))
            self.raw_sigma_width = nn.Parameter(torch.tensor(_inverse_softplus(hi - lo)))
        self.bias_points = tuple(int(p) for p in bias_points)
        if self.bias_points:
            init = [bias_init] * len(self.bias_points) if isinstance(bias_init, int | float) else list(bias_init)
            if len(init) != len(self.bias_points):
                raise ValueError(f"bias_init needs {len(self.bias_points)} values, got {len(init)}")
            self.raw_bias = nn.Parameter(torch.tensor([_inverse_softplus(v) for v in init]))
        self.raw_gamma = None if gamma_init is None else nn.Parameter(torch.tensor(_inverse_softplus(gamma_init)))
        self.raw_blur = None if blur_init is None else nn.Parameter(torch.tensor(_inverse_softplus(blur_init)))

    # -- the learned values, in their valid ranges ------------------------------------------------------
    def sigma_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.noise == "sigma":
            s = F.softplus(self.raw_sigma)
            return s, s
        lo = F.softplus(self.raw_sigma_lo)
        return lo, lo + F.softplus(self.raw_sigma_width)

    def bias_exponents(self) -> torch.Tensor:
        return F.softplus(self.raw_bias)

    def learned_values(self) -> dict[str, float]:
        """Every learned value by name, as plain floats (for logs and reports)."""
        out = {}
        with torch.no_grad():
            if self.noise == "sigma":
                out["noise.sigma"] = float(self.sigma_range()[0])
            elif self.noise == "range":
                lo, hi = self.sigma_range()
                out["noise.sigma_lo"], out["noise.sigma_hi"] = float(lo), float(hi)
            if self.bias_points:
                names = {0: "low", 1: "middle", 2: "high"} if len(self.bias_points) == 3 else {}
                for k, e in enumerate(self.bias_exponents().tolist()):
                    out[f"bias.{names.get(k, self.bias_points[k])}"] = e
            if self.raw_gamma is not None:
                out["gamma.std"] = float(F.softplus(self.raw_gamma))
            if self.raw_blur is not None:
                out["blur.max_sigma"] = float(F.softplus(self.raw_blur))
        return out

    def _bounded(self) -> dict:
        """Learned value name -> (raw parameter, index or None): the values :meth:`bound_` can cap."""
        out = {"noise.sigma": (self.raw_sigma, None)} if self.noise == "sigma" else {}
        names = [k for k in self.learned_values() if k.startswith("bias.")]
        out.update({name: (self.raw_bias, k) for k, name in enumerate(names)})
        if self.raw_gamma is not None:
            out["gamma.std"] = (self.raw_gamma, None)
        if self.raw_blur is not None:
            out["blur.max_sigma"] = (self.raw_blur, None)
        return out

    def check_bounds(self, max_values: Mapping[str, float]) -> None:
        """Refuse names of ``max_values`` that are not learned values of this augmenter."""
        known = [*self._bounded(), *(["noise.sigma_hi"] if self.noise == "range" else [])]
        unknown = sorted(set(max_values) - set(known))
        if unknown:
            raise ConfigError("augmenter.max_values", f"{', '.join(unknown)} not learned; one of {', '.join(known)}")

    def bound_(self, max_values: Mapping[str, float]) -> None:
        """Lower the learned values above their ``max_values`` to them (after an optimizer step); the softplus
        keeps the others valid."""
        if not max_values:
            return
        self.check_bounds(max_values)
        bounded = self._bounded()
        for name, limit in max_values.items():
            if name == "noise.sigma_hi":
                cap_range_(self.raw_sigma_lo.data, self.raw_sigma_width.data, limit, positive=True)
                continue
            raw, k = bounded[name]
            cap_softplus_(raw.data if k is None else raw.data[k], limit)

    # -- sampling and applying ---------------------------------------------------------------------------
    def sample(self, x: torch.Tensor, generator: torch.Generator) -> dict:
        """Draw the random parts (no learned values inside) for a batch like ``x``."""
        b, shape, dtype = x.shape[0], tuple(x.shape[2:]), x.dtype
        draws = {}
        if self.noise is not None:
            draws["noise"] = draw_normal((b, 1, *shape), generator, dtype)
            draws["noise_u"] = torch.rand(b, generator=generator, device=generator.device, dtype=dtype)
        if self.bias_points:
            draws["bias"] = [draw_normal((b, 1, *[p] * len(shape)), generator, dtype) for p in self.bias_points]
        if self.raw_gamma is not None:
            draws["gamma"] = draw_normal((b,), generator, dtype)
        if self.raw_blur is not None:
            draws["blur"] = torch.rand(b, generator=generator, device=generator.device, dtype=dtype)
        return draws

    def apply(self, x: torch.Tensor, draws: dict) -> torch.Tensor:
        """Deterministic and differentiable in the learnable parameters."""
        b, ndim = x.shape[0], x.ndim - 2
        if self.bias_points:  # one field per scale, its control grid spanning the image, strength e_k
            e = self.bias_exponents()
            x = apply_bias_field(x, [{"strength": e[k].expand(b), "coeffs": z, "zoom": None}
                                     for k, z in enumerate(draws["bias"])])
        if self.raw_gamma is not None:
            x = apply_gamma(x, {"log_gamma": F.softplus(self.raw_gamma) * draws["gamma"]})
        if self.raw_blur is not None:
            x = blur(x, (F.softplus(self.raw_blur) * draws["blur"]).unsqueeze(1).expand(-1, ndim))
        if self.noise is not None:
            lo, hi = self.sigma_range()
            x = apply_noise(x, {"sigma": lo + (hi - lo) * draws["noise_u"], "z": draws["noise"], "kind": "gaussian"})
        return x

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.sample(x, generator))
