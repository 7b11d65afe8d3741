"""Training strategies, one small module each, all with the step signature ``step(run, step) -> dict``.

The trainer looks the method up by name in :data:`METHODS` and never branches on it.
"""

from . import finetune, learn2synth, mixed, real, synthseg
from .base import Run

METHODS = {
    "synthseg": synthseg.step,
    "real": real.step,
    "mixed": mixed.step,
    "finetune": finetune.step,
    "learn2synth": learn2synth.step,
}

__all__ = ["METHODS", "Run"]
