"""What a training step works with: the segmenter's parameters and optimizer, the data, the augmenter."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ..data import LabelPool, RealPool
from ..meta.hypergrad import plain_step
from ..meta.optim import FunctionalOptimizer
from ..metrics import dice_per_class
from ..nets import padded_forward, total_stride
from ..synth import Synthesizer, deformation_grid, sample_deform, warp


@dataclass
class Run:
    """The state a method's step reads and advances. ``params``/``opt_state`` are replaced after each update."""

    config: Any  # TrainConfig
    net: nn.Module
    params: dict[str, torch.Tensor]
    opt: FunctionalOptimizer
    opt_state: dict
    loss_fn: Any
    synth: Synthesizer
    labels: LabelPool
    real: RealPool | None
    generator: torch.Generator
    device: torch.device
    augmenter: nn.Module | None = None
    aug_opt: torch.optim.Optimizer | None = None
    skipped: int = 0  # consecutive updates skipped for a non-finite loss or gradient
    reduce: Any = None  # averages gradients over processes (learn2synth.distributed); None on one process
    guard: Any = None  # reverts the augmenter when the real validation score falls (learn2synth.methods.guard)

    def logits(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, params, (x,))

    def loss(self, params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.logits(params, x), y)

    def label_batch(self, n: int | None = None) -> torch.Tensor:
        """Random crops of the label pool."""
        cfg = self.config
        return self.labels.batch(n or cfg.batch_size, cfg.data.shape, self.generator).to(self.device)

    def synth_batch(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch synthesized from random crops of the label pool."""
        image, target, _ = self.synth(self.label_batch(n), self.generator)
        return image, target

    @torch.no_grad()
    def evaluate(self, pool: RealPool) -> dict[str, float]:
        """Dice per class (and its mean) of the current segmenter on whole examples of ``pool`` (each zero-padded
        to a multiple of the network's stride, as ``predict`` does, and cropped back)."""
        stride = total_stride(self.config.net.channels, self.config.net.strides)
        dices = []
        for i in range(len(pool)):
            x, y = pool.images[i][None].to(self.device), pool.labels[i][None].to(self.device)
            pred = padded_forward(lambda z: self.logits(self.params, z), x, stride).argmax(1, keepdim=True)
            dices.append(dice_per_class(pred, y, self.config.data.n_classes))
        per_class = torch.cat(dices).nanmean(0)
        out = {f"dice_{c + 1}": float(v) for c, v in enumerate(per_class)}
        out["dice_mean"] = float(per_class.nanmean())
        return out

    def real_batch(self, n: int | None = None, augment: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Random crops of real examples; ``augment`` adds a mild random deformation (same for image and label)."""
        x, y = self.real.batch(n or self.config.real_batch_size, self.config.data.shape, self.generator)
        x, y = x.to(self.device), y.to(self.device)
        if augment:
            params = sample_deform(x.shape[0], x.shape[2:], rotation=10.0, scaling=0.1, shear=0.01, elastic_std=2.0,
                                   generator=self.generator)
            grid = deformation_grid(params, x.shape[2:])
            x, y = warp(x, grid), warp(y, grid)
        return x, y

    def update(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One plain optimizer step of the segmenter on (x, y); returns the loss before the step.

        A non-finite loss or update is not applied (see :meth:`accept`).
        """
        result = plain_step(self.net, self.params, self.opt, self.opt_state, lambda p: self.loss(p, x, y),
                            reduce=self.reduce)
        if self.accept([result.loss], result.new_params.values()):
            self.params, self.opt_state = result.new_params, result.new_opt_state
        return result.loss

    def accept(self, losses, tensors) -> bool:
        """True if every loss and tensor is finite; else count a skipped update (the caller must not apply it)."""
        finite = all(math.isfinite(v) for v in losses)
        tensors = [t for t in tensors if t is not None]
        if finite and tensors:
            finite = bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())
        self.skipped = 0 if finite else self.skipped + 1
        return finite
