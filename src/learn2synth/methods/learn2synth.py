"""Learn2Synth: the augmenter is trained by the hypergradient of the real loss after a synthetic update.

On a meta step the segmenter takes its usual synthetic update (φ' from the augmented synthetic batch only)
and the augmenter takes one step along d loss_real(φ'(θ)) / dθ; real images never produce a gradient for φ.
Between meta steps (``meta.meta_every``) and during ``meta.warmup`` the segmenter trains on augmented
synthetic images with the augmenter frozen. The augmenter either corrupts synthesized images (parametric,
residual) or renders them itself from label maps with learned synthesis priors (learned_priors); either way a
batch is one fixed draw, rendered inside the synthetic loss so that the loss is differentiable in θ. After the
step, ``augmenter.max_values`` caps learned values and the guard (``augmenter.check_every``) may revert θ.

With ``meta.debias_reference: next`` a meta-step's debiased hypergradient waits for the next step's synthetic
gradient (its reference; see :class:`learn2synth.meta.hypergrad.DeferredHypergrad`): that step finishes it, with
θ set back to the values the meta-step's batch was rendered with, then updates θ. The pending meta-step is
checkpointed; the last one of a run is dropped, and one computed before a guard revert is discarded.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from ..augment import build_augmenter
from ..errors import ConfigError
from ..meta.hypergrad import DeferredHypergrad, finish_deferred, meta_step, plain_step
from .base import Method
from .guard import AugmenterGuard


class AugmentedBatch:
    """One fixed random draw of an augmented synthetic batch: :meth:`render` gives (image, target) and rendering
    again replays the same draw with the augmenter's current parameters (differentiably). ``inputs`` (tensors
    only) rebuild it, e.g. from a checkpoint."""

    def __init__(self, augmenter, inputs: dict):
        self.augmenter, self.inputs = augmenter, inputs

    @classmethod
    def draw(cls, run) -> AugmentedBatch:
        aug = run.augmenter
        if aug.renders_synthesis:
            labels = run.label_batch()
            draw = aug.sample(labels, run.generator)
            return cls(aug, {"labels": labels, "state": draw["state"], "device": str(draw["device"])})
        x, y = run.synth_batch()
        return cls(aug, {"x": x, "y": y, "draws": aug.sample(x, run.generator)})

    def render(self):
        i = self.inputs
        if "labels" in i:
            return self.augmenter.apply(i["labels"], {"state": i["state"], "device": torch.device(i["device"])})
        return self.augmenter.apply(i["x"], i["draws"]), i["y"]


class Learn2Synth(Method):
    """The segmenter, and an augmenter (``augmenter.kind``) with its Adam optimizer and, with
    ``augmenter.check_every``, the guard that reverts it."""

    def __init__(self, config, data, generator, device, reduce=None):
        super().__init__(config, data, generator, device, reduce)
        a = config.augmenter
        self.augmenter = build_augmenter(config, data.synth, data.labels).to(device)
        self.aug_opt = torch.optim.Adam(self.augmenter.parameters(), lr=a.lr, betas=tuple(a.betas))
        for group in self.aug_opt.param_groups:  # the rate augmenter.lr_final's decay scales (the guard halves it)
            group["base_lr"] = a.lr
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
        self.pending = None  # a meta-step waiting for its reference gradient (meta.debias_reference: next)
        self.guard = None
        if a.check_every:
            if data.val is None:
                raise ConfigError("augmenter.check_every", "needs held-out real examples (data.val_fraction > 0 and "
                                                           "at least 2 real subjects), or set it to 0")
            self.guard = AugmenterGuard(data.val, a.check_every, a.check_tolerance)

    def step(self, step: int) -> dict:
        cfg = self.config.meta
        batch = AugmentedBatch.draw(self)
        theta = [p for p in self.augmenter.parameters() if p.requires_grad]
        if step < cfg.warmup or step % cfg.meta_every:
            with torch.no_grad():
                xa, y = batch.render()
            result = plain_step(self.net, self.params, self.opt, self.opt_state, lambda p: self.loss(p, xa, y),
                                reduce=self.reduce)
            hypergrads = self._deferred_hypergrads(result.grads, theta)
            if self.accept([result.loss], [*result.new_params.values(), *hypergrads]):
                self.params, self.opt_state = result.new_params, result.new_opt_state
                self._update_augmenter(theta, hypergrads, step)
            guard = self._guard(step)  # before logging the learned values: a revert changes them
            return {"loss_synth": result.loss, **self.augmenter.learned_values(), **guard}
        used = [t.detach().clone() for t in theta] if self.deferring else None  # theta this batch renders with
        xr, yr = self.real_batch()
        reference_loss = None
        if cfg.debias and not self.deferring:  # an independent synthetic batch, augmented with the current theta
            with torch.no_grad():
                xa2, y2 = AugmentedBatch.draw(self).render()
            reference_loss = lambda p: self.loss(p, xa2, y2)  # noqa: E731
        result = meta_step(
            self.net, self.params, self.opt, self.opt_state,
            synth_loss=lambda p: self.loss(p, *batch.render()),
            real_loss=lambda p: self.loss(p, xr, yr),
            theta=theta, mode=cfg.mode, alpha=cfg.alpha, fd_eps=cfg.fd_eps, reduce=self.reduce,
            reference_loss=reference_loss, defer=self.deferring,
        )
        # the previous meta-step's deferred hypergradient: its reference is this step's synthetic gradient
        hypergrads = self._deferred_hypergrads(result.synth_grads, theta) if self.deferring else result.hypergrads
        # a non-finite loss or hypergradient skips both updates: segmenter and augmenter stay as they were
        if self.accept([result.loss_synth, result.loss_real], [*result.new_params.values(), *hypergrads]):
            self.params, self.opt_state = result.new_params, result.new_opt_state
            self._update_augmenter(theta, hypergrads, step)
            if self.deferring:
                self.pending = {"meta": result.deferred, "batch": batch, "theta": used}
        guard = self._guard(step)
        return {"loss_synth": result.loss_synth, "loss_real": result.loss_real, **self.augmenter.learned_values(),
                **guard}

    @property
    def deferring(self) -> bool:
        return self.config.meta.deferred_reference

    def _deferred_hypergrads(self, reference_grads, theta) -> list:
        """The pending meta-step's hypergradient (``meta.debias_reference: next``), or [] when none is pending;
        its perturbed passes replay its batch with theta at the values its synthetic pass used."""
        pending, self.pending = self.pending, None
        if pending is None:
            return []
        batch = pending["batch"]
        with self._theta_at(theta, pending["theta"]):
            return finish_deferred(pending["meta"], reference_grads, lambda p: self.loss(p, *batch.render()), theta,
                                   self.opt, self.reduce)

    @staticmethod
    @contextmanager
    def _theta_at(theta, values):
        now = [t.detach().clone() for t in theta]
        with torch.no_grad():
            for t, v in zip(theta, values, strict=True):
                t.copy_(v)
        try:
            yield
        finally:
            with torch.no_grad():
                for t, v in zip(theta, now, strict=True):
                    t.copy_(v)

    def lr_factor(self, step: int) -> float:
        """``augmenter.lr_final``'s cosine decay at ``step``: 1 until the end of ``meta.warmup``, then down to
        ``lr_final`` at the last step."""
        final, start, end = self.config.augmenter.lr_final, self.config.meta.warmup, self.config.steps - 1
        t = min(max((step - start) / max(end - start, 1), 0.0), 1.0)
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))

    def _update_augmenter(self, theta, hypergrads, step: int) -> None:
        if not hypergrads:
            return
        for group in self.aug_opt.param_groups:
            group["lr"] = group.get("base_lr", group["lr"]) * self.lr_factor(step)
        self.aug_opt.zero_grad(set_to_none=True)
        for p, g in zip(theta, hypergrads, strict=True):
            p.grad = g
        self.aug_opt.step()
        self.augmenter.bound_(self.config.augmenter.max_values)  # valid ranges and augmenter.max_values

    def _guard(self, step: int) -> dict:
        if self.guard is None:
            return {}
        reverted = self.guard.reverted
        out = self.guard.after_step(self, step)
        if self.guard.reverted != reverted:
            self.pending = None  # computed for the augmenter that was just undone
        return out

    def state_dict(self) -> dict:
        state = {**super().state_dict(), "augmenter": self.augmenter.state_dict(), "aug_opt": self.aug_opt.state_dict()}
        if self.guard is not None:
            state["guard"] = self.guard.state_dict()
        if self.pending is not None:
            p = self.pending
            state["pending"] = {"meta": p["meta"].state_dict(self.opt), "batch": p["batch"].inputs, "theta": p["theta"]}
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.augmenter.load_state_dict(state["augmenter"])
        self.aug_opt.load_state_dict(state["aug_opt"])
        if self.guard is not None and "guard" in state:
            self.guard.load_state_dict(state["guard"])
        self.pending = None
        if "pending" in state:
            p = state["pending"]
            self.pending = {"meta": DeferredHypergrad.from_state_dict(p["meta"], self.opt, self.device),
                            "batch": AugmentedBatch(self.augmenter, p["batch"]), "theta": p["theta"]}

    def finish(self, out) -> None:
        if self.config.augmenter.kind == "learned_priors":
            from ..report_priors import write_priors_report

            write_priors_report(self, out)  # learned_priors.md and .png
