"""SynthSeg-style training: synthetic images only, fixed (random but not learned) synthesis."""

from .base import Method


class SynthSeg(Method):
    uses_real = False  # real examples, when given, only validate

    def step(self, step: int) -> dict:
        x, y = self.synth_batch()
        return {"loss_synth": self.update(x, y)}
