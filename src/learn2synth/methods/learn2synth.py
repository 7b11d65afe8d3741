"""Learn2Synth: the augmenter is trained by the hypergradient of the real loss after a synthetic update.

On a meta step the segmenter takes its usual synthetic update (φ' from the augmented synthetic batch only)
and the augmenter takes one step along d loss_real(φ'(θ)) / dθ; real images never produce a gradient for φ.
Between meta steps (``meta.meta_every``) and during ``meta.warmup`` the segmenter trains on augmented
synthetic images with the augmenter frozen. The augmenter either corrupts synthesized images (parametric,
residual) or renders them itself from label maps with learned synthesis priors (learned_priors); either way a
batch is one fixed draw, rendered inside the synthetic loss so that the loss is differentiable in θ. After the
step, ``augmenter.max_values`` caps learned values and the guard (``augmenter.check_every``) may revert θ.
"""

import torch

from ..augment import build_augmenter
from ..errors import ConfigError
from ..meta.hypergrad import meta_step
from .base import Method
from .guard import AugmenterGuard


def augmented_batch(run):
    """One fixed random draw of an augmented synthetic batch, as ``render() -> (image, target)``: rendering again
    replays the same draw with the augmenter's current parameters (differentiably)."""
    aug = run.augmenter
    if aug.renders_synthesis:
        labels = run.label_batch()
        draw = aug.sample(labels, run.generator)
        return lambda: aug.apply(labels, draw)
    x, y = run.synth_batch()
    draws = aug.sample(x, run.generator)
    return lambda: (aug.apply(x, draws), y)


class Learn2Synth(Method):
    """The segmenter, and an augmenter (``augmenter.kind``) with its Adam optimizer and, with
    ``augmenter.check_every``, the guard that reverts it."""

    def __init__(self, config, data, generator, device, reduce=None):
        super().__init__(config, data, generator, device, reduce)
        a = config.augmenter
        self.augmenter = build_augmenter(config, data.synth, data.labels).to(device)
        self.aug_opt = torch.optim.Adam(self.augmenter.parameters(), lr=a.lr, betas=tuple(a.betas))
        if a.fit_real:
            if a.kind != "learned_priors" or data.real is None:
                raise ConfigError("augmenter.fit_real", "needs augmenter.kind learned_priors and real examples "
                                                        "(data.real)")
            self.augmenter.fit_to_real(data.real.images, data.real.labels)
            if self.reduce is not None:  # each process fitted its own shard of the real examples: average them
                with torch.no_grad():
                    learned = list(self.augmenter.parameters())
                    for p, mean in zip(learned, self.reduce([p.detach().clone() for p in learned]), strict=True):
                        p.copy_(mean)
        self.guard = None
        if a.check_every:
            if data.val is None:
                raise ConfigError("augmenter.check_every", "needs held-out real examples (data.val_fraction > 0 and "
                                                           "at least 2 real subjects), or set it to 0")
            self.guard = AugmenterGuard(data.val, a.check_every, a.check_tolerance)

    def step(self, step: int) -> dict:
        cfg = self.config.meta
        render = augmented_batch(self)
        if step < cfg.warmup or step % cfg.meta_every:
            with torch.no_grad():
                xa, y = render()
            loss = self.update(xa, y)
            guard = self._guard(step)
            return {"loss_synth": loss, **self.augmenter.learned_values(), **guard}
        xr, yr = self.real_batch()
        reference_loss = None
        if cfg.debias:  # an independent synthetic batch, augmented with the current (fixed) theta
            with torch.no_grad():
                xa2, y2 = augmented_batch(self)()
            reference_loss = lambda p: self.loss(p, xa2, y2)  # noqa: E731
        theta = [p for p in self.augmenter.parameters() if p.requires_grad]
        result = meta_step(
            self.net, self.params, self.opt, self.opt_state,
            synth_loss=lambda p: self.loss(p, *render()),
            real_loss=lambda p: self.loss(p, xr, yr),
            theta=theta, mode=cfg.mode, alpha=cfg.alpha, fd_eps=cfg.fd_eps, reduce=self.reduce,
            reference_loss=reference_loss,
        )
        # a non-finite loss or hypergradient skips both updates: segmenter and augmenter stay as they were
        if self.accept([result.loss_synth, result.loss_real], [*result.new_params.values(), *result.hypergrads]):
            self.params, self.opt_state = result.new_params, result.new_opt_state
            self.aug_opt.zero_grad(set_to_none=True)
            for p, g in zip(theta, result.hypergrads, strict=True):
                p.grad = g
            self.aug_opt.step()
            self.augmenter.bound_(self.config.augmenter.max_values)  # valid ranges and augmenter.max_values
        guard = self._guard(step)
        return {"loss_synth": result.loss_synth, "loss_real": result.loss_real, **self.augmenter.learned_values(),
                **guard}

    def _guard(self, step: int) -> dict:
        return {} if self.guard is None else self.guard.after_step(self, step)

    def state_dict(self) -> dict:
        state = {**super().state_dict(), "augmenter": self.augmenter.state_dict(), "aug_opt": self.aug_opt.state_dict()}
        if self.guard is not None:
            state["guard"] = self.guard.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.augmenter.load_state_dict(state["augmenter"])
        self.aug_opt.load_state_dict(state["aug_opt"])
        if self.guard is not None and "guard" in state:
            self.guard.load_state_dict(state["guard"])

    def finish(self, out) -> None:
        if self.config.augmenter.kind == "learned_priors":
            from ..report_priors import write_priors_report

            write_priors_report(self, out)  # learned_priors.md and .png
