"""Named synthesis presets, loadable and overridable from YAML.

- ``synthseg``: SynthSeg's published training defaults (Billot et al. 2023), intensities rescaled from
  0-255 to [0, 1]: GMM means U(25, 225)/255 and stds U(5, 25)/255; rotation 15 deg, scaling 0.2,
  shear 0.012, elastic std 4 voxels on a 0.04-per-voxel control grid; bias std 0.7 at scale 0.025;
  log-gamma std 0.5; voxel sizes up to 4 (isotropic) or 8 (one axis); no added noise (the GMM std is
  SynthSeg's only noise).
- ``mild``: the same effects at about half strength plus a little Gaussian noise: a gentle default for
  small 2D problems.
- ``none``: piecewise-constant random contrast only (GMM std 0, no deformation or corruption); the base
  synthesis that Learn2Synth's augmenter learns to corrupt.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from ..config import apply_overrides, from_dict, load_yaml, to_dict
from .pipeline import SynthConfig

PRESETS: dict[str, dict] = {
    "synthseg": {},
    "mild": {
        "deform": {"rotation": 10.0, "scaling": 0.1, "shear": 0.01, "elastic_std": 2.0},
        "bias": {"std": 0.3},
        "gamma": {"std": 0.2},
        "resolution": {"max_res_iso": 2.0, "max_res_aniso": 3.0},
        "noise": {"enabled": True, "std": [0.0, 0.02]},
    },
    "none": {
        "deform": {"enabled": False},
        "gmm": {"std": [0.0, 0.0]},
        "bias": {"enabled": False},
        "gamma": {"enabled": False},
        "resolution": {"enabled": False},
        "noise": {"enabled": False},
    },
}


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def synth_config(
    preset: str = "synthseg",
    yaml_path=None,
    overrides: dict | None = None,
    sets: Sequence[str] = (),
) -> SynthConfig:
    """Build a :class:`SynthConfig`: preset < YAML file < ``overrides`` dict < ``sets`` ("a.b=value").

    Unknown keys and wrong types raise ``ConfigError`` naming the dotted key.
    """
    if preset not in PRESETS:
        from ..errors import ConfigError

        raise ConfigError("preset", f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    data = _merge(to_dict(SynthConfig()), PRESETS[preset])
    if yaml_path is not None:
        data = _merge(data, load_yaml(yaml_path) or {})
    if overrides:
        data = _merge(data, overrides)
    data = apply_overrides(data, list(sets))
    return from_dict(SynthConfig, data)
