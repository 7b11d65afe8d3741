"""SynthSeg training for the first ``finetune_from`` share of the steps, then fine-tuning on real examples."""

from .base import Method
from .real import Real
from .synthseg import SynthSeg


class Finetune(Method):
    def step(self, step: int) -> dict:
        if step < int(self.config.finetune_from * self.config.steps):
            return SynthSeg.step(self, step)
        return Real.step(self, step)
