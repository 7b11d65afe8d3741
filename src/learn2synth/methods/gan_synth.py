"""GAN-synthesized pairs with a progressive realism-weighted loss (after Girardot et al.).

Phase 1 (``gan.pretrain_steps`` steps): a pix2pix label-to-image GAN (:mod:`learn2synth.generative.pix2pix`)
learns from the real labeled pairs; the segmenter is not updated. Phase 2: each step the segmenter trains on a
real batch plus a batch of GAN-synthetic pairs, whose label maps are composed from real ones (flips, deformation,
pasted structures: :mod:`learn2synth.generative.compose`) and rendered by the generator. Item ``i`` of the
synthetic batch adds ``alpha * log(t + 1) * realism_i`` times its loss, ``t`` the phase-2 epoch
(``gan.epoch_steps`` steps each) and ``realism_i`` the discriminator's score of the image in [0, 1]; so the
first epoch trains on real pairs alone and the synthetic share grows as the segmenter matures.
``gan.realism_weight: false`` drops the realism factor (an ablation: are the GAN's images useful at all?).

The GAN is frozen in phase 2 by default (``gan.keep_training: false``): the realism weight is then a fixed
function of the image rather than a moving target (a discriminator still training against the generator keeps
re-ranking the same images), and a phase-2 step costs one generator and one discriminator forward pass instead
of a full GAN step, which on a CPU roughly doubles the segmenter's share of the budget. ``keep_training: true``
takes one GAN step per segmenter step. ``learn2synth gan train`` runs phase 1 alone; its run folder continues
into phase 2 with ``learn2synth train --resume``.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..generative.compose import compose_masks
from ..generative.pix2pix import Pix2Pix, Pix2PixTrainer, schedule_factor
from ..rng import derive_seed
from .base import Method


class GanSynth(Method):
    synthesizes = False  # images come from the GAN, label maps from the real labels

    def __init__(self, config, data, generator, device, reduce=None):
        super().__init__(config, data, generator, device, reduce)
        if reduce is not None:
            raise ConfigError("method", "gan_synth runs in one process: its GAN's gradients are not averaged over "
                                        "processes (torchrun)")
        g = config.gan
        torch.manual_seed(derive_seed(config.seed, "gan_init"))
        self.gan = Pix2Pix.from_config(config).to(device)
        self.trainer = Pix2PixTrainer(self.gan, lr=g.lr, betas=g.betas, l1_weight=g.l1_weight)

    def step(self, step: int) -> dict:
        g = self.config.gan
        values = {}
        if step < g.pretrain_steps or g.keep_training:
            xr, yr = self.real_batch(augment=True)
            values = self.trainer.step(yr, xr, self.generator)
        if step < g.pretrain_steps:
            return values
        factor = schedule_factor(step - g.pretrain_steps, g.epoch_steps, g.alpha)
        xr, yr = self.real_batch(augment=True)
        if factor == 0:  # first epoch: the synthetic loss has weight 0, so no synthetic batch is made
            return {**values, "loss_seg": self.update(xr, yr), "synth_weight": 0.0}
        xs, ys = self.gan_batch()
        with torch.no_grad():
            realism = self.gan.realism(ys, xs)
        weights = factor * realism if g.realism_weight else torch.full_like(realism, factor)
        n = xr.shape[0]

        def loss(params):
            logits = self.logits(params, torch.cat([xr, xs]))
            synth = torch.stack([self.loss_fn(logits[n + i: n + i + 1], ys[i: i + 1]) for i in range(len(ys))])
            return self.loss_fn(logits[:n], yr) + (weights * synth).mean()

        return {**values, "loss_seg": self.update_on(loss), "synth_weight": float(weights.mean()),
                "realism": float(realism.mean())}

    @torch.no_grad()
    def gan_batch(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Synthetic pairs (image, label map): real label maps, composed, rendered by the generator."""
        g = self.config.gan
        _, labels = self.real.batch(n or self.config.batch_size, self.config.data.shape, self.generator)
        labels, _ = compose_masks(labels.to(self.device), self.generator, flip=g.flip, rotation=g.rotation,
                                  scaling=g.scaling, elastic_std=g.elastic_std, paste=g.paste)
        return self.gan.generate(labels, self.generator), labels

    @torch.no_grad()
    def evaluate(self, pool) -> dict[str, float]:
        """The segmenter's Dice, and the GAN on whole held-out pairs: L1 of its image to the real one and the mean
        realism of both. Its noise comes from a fixed stream, not the run's (validation changes no state)."""
        out = super().evaluate(pool)
        noise = torch.Generator(device=self.device).manual_seed(derive_seed(self.config.seed, "gan_eval"))
        l1, fake, real = [], [], []
        for x, y in zip(pool.images, pool.labels, strict=True):
            x, y = x[None].to(self.device), y[None].to(self.device)
            image = self.gan.generate(y, noise)
            l1.append(float((image - x).abs().mean()))
            fake.append(float(self.gan.realism(y, image)))
            real.append(float(self.gan.realism(y, x)))
        return {**out, "gan_l1": sum(l1) / len(l1), "gan_realism_fake": sum(fake) / len(fake),
                "gan_realism_real": sum(real) / len(real)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), **{f"gan_{k}": v for k, v in self.trainer.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.trainer.load_state_dict({k: state[f"gan_{k}"] for k in ("gan", "opt_g", "opt_d")})
