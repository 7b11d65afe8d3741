"""Synthetic batches with real examples mixed in (``mixed_fraction`` of each batch, at least one)."""

import torch


def step(run, step: int) -> dict:
    x, y = run.synth_batch()
    n_real = max(1, round(run.config.mixed_fraction * x.shape[0]))
    xr, yr = run.real_batch(n_real, augment=True)
    x, y = torch.cat([xr, x[n_real:]]), torch.cat([yr, y[n_real:]])
    return {"loss_mixed": run.update(x, y)}
