"""Supervised training on the real labeled examples only, with a mild random deformation as augmentation."""

from .base import Method


class Real(Method):
    synthesizes = False

    def step(self, step: int) -> dict:
        x, y = self.real_batch(augment=True)
        return {"loss_real": self.update(x, y)}
