"""Synthetic batches with real examples mixed in (``mixed_fraction`` of each batch, at least one)."""

import torch

from .base import Method


class Mixed(Method):
    def step(self, step: int) -> dict:
        x, y = self.synth_batch()
        n_real = max(1, round(self.config.mixed_fraction * x.shape[0]))
        xr, yr = self.real_batch(n_real, augment=True)
        x, y = torch.cat([xr, x[n_real:]]), torch.cat([yr, y[n_real:]])
        return {"loss_mixed": self.update(x, y)}
