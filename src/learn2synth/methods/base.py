"""What every method shares: it builds the segmenter and its optimizer from the config, steps, and saves and
restores its own state; the data helpers (synthetic, real and label batches), the plain update and evaluation."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.func import functional_call

from ..data import RealPool
from ..losses import get_loss
from ..meta.hypergrad import plain_step
from ..meta.optim import get_optimizer
from ..metrics import dice_per_class
from ..nets import build_net, padded_forward, total_stride
from ..rng import derive_seed
from ..sources import TrainingData
from ..synth import deformation_grid, sample_deform, warp


class Method:
    """A training strategy: subclasses build what else they learn in ``__init__`` (calling this one first),
    implement :meth:`step`, and extend :meth:`state_dict`/:meth:`load_state_dict` with what they add.

    The segmenter is ``net`` evaluated functionally at ``params``; ``params``/``opt_state`` are replaced after
    each update. ``generator`` is the run's training stream (every random draw of a step), ``reduce`` averages
    gradients over processes (:mod:`learn2synth.distributed`; None on one process).
    """

    uses_real = True  # needs real labeled data (``data.real``)
    synthesizes = True  # trains on images synthesized from label maps (``data.labels``)

    def __init__(self, config, data: TrainingData, generator: torch.Generator, device: torch.device,
                 reduce: Any = None):
        self.config, self.generator, self.device, self.reduce = config, generator, device, reduce
        self.synth, self.labels, self.real = data.synth, data.labels, data.real
        torch.manual_seed(derive_seed(config.seed, "init"))
        self.net = build_net(config).to(device)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in self.net.named_parameters()}
        self.opt = get_optimizer(config.optim.name, **config.optim.options())
        self.opt_state = self.opt.init(self.params)
        self.loss_fn = get_loss(config.loss)
        self.skipped = 0  # consecutive updates skipped for a non-finite loss or gradient

    def step(self, step: int) -> dict[str, float]:
        """One training step (``step`` counts from 0); returns the values to log."""
        raise NotImplementedError

    def finish(self, out) -> None:
        """Called once when training reaches its last step, with the run folder (reports of what was learned)."""

    def state_dict(self) -> dict:
        """Everything a checkpoint needs to continue exactly; the segmenter's weights are ``params``."""
        return {"params": {k: v.detach() for k, v in self.params.items()}, "opt": self.opt.state_dict(self.opt_state)}

    def load_state_dict(self, state: dict) -> None:
        self.params = {k: v.to(self.device).requires_grad_(True) for k, v in state["params"].items()}
        self.opt_state = self.opt.load_state_dict(state["opt"], self.params)

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
        """One plain optimizer step of the segmenter on (x, y); returns the loss before the step."""
        return self.update_on(lambda p: self.loss(p, x, y))

    def update_on(self, loss) -> float:
        """One plain optimizer step of the segmenter on ``loss(params)`` (any loss of the parameter dict); returns
        the loss before the step. A non-finite loss or update is not applied (see :meth:`accept`)."""
        result = plain_step(self.net, self.params, self.opt, self.opt_state, loss, reduce=self.reduce)
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
