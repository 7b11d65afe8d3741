"""Named synthesis presets: plain data over :class:`~learn2synth.synth.pipeline.SynthConfig`'s defaults.

They are loaded (preset < YAML < ``--set``) by :func:`learn2synth.config.load_config` with
``base=preset(PRESETS, name)``; the synthesis itself knows nothing of YAML.

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
