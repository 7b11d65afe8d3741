"""Batched, differentiable label-to-image synthesis (2D and 3D).

One module per effect, each a ``sample_<effect>`` (draws parameters with an explicit generator: the only
randomness) and a deterministic, differentiable ``apply_<effect>``; :class:`Synthesizer` composes them.
"""

from ._util import blur, draw_normal
from .bias import apply_bias_field, bias_log_field, sample_bias_field
from .deform import apply_deform, deformation_grid, sample_deform, warp
from .gamma import apply_gamma, sample_gamma
from .gmm import apply_gmm, sample_gmm
from .noise import apply_noise, sample_noise
from .normalize import normalize, normalize_minmax, normalize_quantile
from .phantoms import phantom_labels
from .pipeline import SynthConfig, Synthesizer, SynthResult
from .resolution import apply_resolution, sample_resolution

__all__ = [
    "SynthConfig", "SynthResult", "Synthesizer", "apply_bias_field", "apply_deform", "apply_gamma", "apply_gmm",
    "apply_noise", "apply_resolution", "bias_log_field", "blur", "deformation_grid", "draw_normal", "normalize",
    "normalize_minmax", "normalize_quantile", "phantom_labels", "sample_bias_field", "sample_deform", "sample_gamma",
    "sample_gmm", "sample_noise", "sample_resolution", "warp",
]
